//! Confirm it's you: the elevation page (`/.dalea/elevate?rd=`) and `POST /.dalea/api/elevate`.
//! A TOTP code or a passkey for people who have them (the passkey ceremony's endpoints are in
//! `passkeys.rs`), the password for people who have no second factor. Success rotates the
//! session token (a new cookie) and goes back to `rd`.

use pingora::proxy::Session;
use serde::{Deserialize, Serialize};

use super::signin::set_cookie_for;
use super::{guard, passkeys, query_param, redirect, UserView};
use crate::account::audit_log::{self, Actor};
use crate::account::password as account_password;
use crate::account::totp::{self as account_totp, CodeCheck};
use crate::audit::AuditEvent;
use crate::clock::{millis, rfc3339};
use crate::elevation;
use crate::error::GatewayError;
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::session::manager::Proof;
use crate::state::AppState;

#[derive(Serialize)]
struct ElevatePage<'a> {
    user: UserView<'a>,
    csrf_token: &'a str,
    rd: &'a str,
    /// "totp", "passkey" or "password": what this person's form confirms with.
    method: &'static str,
    /// They may also (or only) confirm with a passkey: the origin passkeys work at.
    passkey: Option<&'a str>,
    error: Option<String>,
    /// Minutes the current confirmation still lasts, when it does.
    minutes_left: Option<u64>,
    max_age_minutes: u64,
}

/// The second factors a person has: (TOTP, usable passkeys).
async fn factors(state: &AppState, user_id: &str) -> Result<(bool, bool), GatewayError> {
    Ok((account_totp::is_enrolled(state, user_id).await?, passkeys::has_passkeys(state, user_id).await?))
}

/// What the page's form confirms with: a TOTP code, else only a passkey, else the password.
fn method_for((totp, passkey): (bool, bool)) -> &'static str {
    match (totp, passkey) {
        (true, _) => "totp",
        (false, true) => "passkey",
        (false, false) => "password",
    }
}

async fn render(
    state: &AppState,
    identity: &Identity,
    status: u16,
    rd: &str,
    error: Option<String>,
) -> Result<Reply, GatewayError> {
    let now = state.sessions.now();
    let max_age = millis(state.config.elevation.max_age);
    let s = &identity.session.session;
    let minutes_left =
        elevation::passes(s, now, max_age).then(|| elevation::seconds_left(s, now, max_age).div_ceil(60));
    let factors = factors(state, &identity.user.id).await?;
    let page = ElevatePage {
        user: UserView::of(&identity.user),
        csrf_token: s.csrf.expose(),
        rd,
        method: method_for(factors),
        passkey: state.config.passkeys.as_ref().filter(|_| factors.1).map(|p| p.origin.as_str()),
        error,
        minutes_left,
        max_age_minutes: state.config.elevation.max_age.as_secs().div_ceil(60),
    };
    let reply = Reply::html(status, state.templates.render("elevate.html", &page));
    Ok(if page.passkey.is_some() { reply.with_script() } else { reply })
}

/// GET /.dalea/elevate?rd=
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let rd = redirect::safe_redirect(query_param(session, "rd").as_deref());
    render(state, &identity, 200, &rd, None).await
}

/// Checks what the person submitted and says what it proves. Failures are audited.
async fn prove(
    state: &AppState,
    identity: &Identity,
    ctx: &RequestCtx,
    method: &str,
    secret: Option<&str>,
) -> Result<Proof, GatewayError> {
    let user = &identity.user;
    let (has_totp, has_passkeys) = factors(state, &user.id).await?;
    if method == "passkey" {
        return Err(GatewayError::BadRequest(
            "Confirm with a passkey through POST /.dalea/api/elevate/passkey/begin, then …/finish.".into(),
        ));
    }
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        let what = if method == "password" { "password" } else { "code" };
        return Err(GatewayError::BadRequest(format!("Send the {what} to confirm with.")));
    };
    let outcome = match method {
        "totp" if !has_totp && has_passkeys => {
            return Err(GatewayError::Conflict(
                "You have no authenticator app set up: confirm with one of your passkeys instead.".into(),
            ))
        }
        "totp" if !has_totp => {
            return Err(GatewayError::Conflict(
                "You have no authenticator app set up: confirm with your password instead.".into(),
            ))
        }
        "password" if has_passkeys && !has_totp => {
            return Err(GatewayError::Conflict("You have a passkey: confirm with it instead of your password.".into()))
        }
        "password" if has_totp => {
            return Err(GatewayError::Conflict(
                "You have an authenticator app set up: confirm with a code from it instead.".into(),
            ))
        }
        "totp" => match account_totp::check(state, &user.id, secret, ctx.client_ip).await {
            Ok(CodeCheck::Accepted) => Ok(Proof::Totp),
            Ok(CodeCheck::Refused) => Err(GatewayError::BadCode),
            Err(e) => Err(e),
        },
        "password" => match account_password::verify(state, user, secret, ctx.client_ip).await {
            // A second factor may have been set up while the password was being checked: then
            // the password no longer proves enough.
            Ok(()) if factors(state, &user.id).await? != (false, false) => {
                return Err(GatewayError::Conflict(
                    "You have a second factor set up (an authenticator app or a passkey): confirm with it instead."
                        .into(),
                ))
            }
            other => other.map(|()| Proof::Password),
        },
        _ => return Err(GatewayError::BadRequest("method must be \"totp\" or \"password\".".into())),
    };
    if let Err(e) = &outcome {
        let (reason, counted) = match e {
            GatewayError::TooManyCodes(_) | GatewayError::TooManyAttempts(_) => ("throttled", "throttled"),
            GatewayError::BadCode => ("wrong or reused code", "failure"),
            GatewayError::BadCredentials => ("wrong password", "failure"),
            _ => return outcome,
        };
        state.metrics.auth.elevation(method, counted);
        let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
        let event = AuditEvent::ElevationFailed { method: method.to_string(), reason: reason.into() };
        audit_log::record(state, &user.id, actor, event).await;
    }
    outcome
}

/// Records the proof on the session with a new token. Returns the updated session and its
/// new cookie.
pub(super) async fn elevate(
    state: &AppState,
    identity: &Identity,
    ctx: &RequestCtx,
    proof: Proof,
) -> Result<(crate::session::Session, String), GatewayError> {
    let method = proof.method();
    let Some((s, token)) = state.sessions.elevate(&identity.session, proof).await? else {
        return Err(GatewayError::SignInRequired);
    };
    tracing::info!(user.id = %identity.user.id, session.id = %s.id, method, "session elevated; token rotated");
    state.metrics.auth.elevation(method, "success");
    let actor = Actor::session(state, &s, ctx.client_ip);
    audit_log::record(state, &identity.user.id, actor, AuditEvent::Elevation { method: method.into() }).await;
    let cookie = set_cookie_for(state, &s, &token);
    Ok((s, cookie))
}

/// POST /.dalea/elevate (form: csrf_token, code or password, rd)
pub async fn form(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, fields) = guard::form_post(state, session, ctx).await?;
    let rd = redirect::safe_redirect(fields.get("rd").map(String::as_str));
    let (method, secret) = match (fields.get("code"), fields.get("password")) {
        (Some(code), _) => ("totp", code),
        (None, Some(password)) => ("password", password),
        (None, None) => return render(state, &identity, 400, &rd, Some("Enter a code.".into())).await,
    };
    match prove(state, &identity, ctx, method, Some(secret)).await {
        Ok(proof) => {
            let (_, cookie) = elevate(state, &identity, ctx, proof).await?;
            Ok(Reply::see_other(&rd).header("set-cookie", cookie))
        }
        Err(err) if matches!(err.status(), 400 | 401 | 409 | 429) => {
            let page = render(state, &identity, err.status(), &rd, Some(err.to_string())).await?;
            // Retry-After for throttling; no step-up challenge header on the page itself.
            let retry = err.headers().into_iter().filter(|(k, _)| *k == "retry-after");
            Ok(retry.fold(page, |r, (k, v)| r.header(k, v)))
        }
        Err(err) => Err(err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonElevate {
    method: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// POST /.dalea/api/elevate `{"method":"totp","code":"123456"}` or
/// `{"method":"password","password":"…"}` → 200 + a new session cookie.
pub async fn json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, req): (_, JsonElevate) = guard::json_post(state, session, ctx).await?;
    let secret = if req.method == "password" { req.password.as_deref() } else { req.code.as_deref() };
    let proof = prove(state, &identity, ctx, &req.method, secret).await?;
    let elevated = !matches!(proof, Proof::Password);
    let method = proof.method();
    let (s, cookie) = elevate(state, &identity, ctx, proof).await?;
    let max_age = millis(state.config.elevation.max_age);
    let at = s.elevation.map(|e| e.at).into_iter().chain(s.reauthenticated_at).max().unwrap_or_default();
    let body = serde_json::json!({
        "method": method,
        "elevated": elevated,
        "elevated_at": rfc3339(at),
        "expires_at": rfc3339(at + max_age),
    });
    Ok(Reply::json(200, body.to_string().into_bytes()).header("set-cookie", cookie))
}
