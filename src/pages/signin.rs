//! Sign-in (HTML form and JSON) and sign-out.

use std::time::Duration;

use pingora::proxy::Session;
use serde::{Deserialize, Serialize};

use super::sessions::SessionView;
use super::{body, csrf, query_param, redirect, trusted_forwarded_host, SIGNIN_PATH};
use crate::account::audit_log::{self, Actor};
use crate::account::{password as account_password, totp as account_totp};
use crate::audit::AuditEvent;
use crate::auth::throttle::Rule;
use crate::auth::User;
use crate::client_info::{ClientHints, ACCEPT_CH, CRITICAL_CH};
use crate::error::GatewayError;
use crate::proxy::authenticate;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::respond::Reply;
use crate::session::token::random_string;
use crate::session::{NewSession, Session as GwSession, SignInMethod, Token};
use crate::state::AppState;

#[derive(Serialize)]
struct SigninPage<'a> {
    csrf_token: &'a str,
    rd: &'a str,
    destination: &'a str,
    email: &'a str,
    error: Option<&'a str>,
    /// One button per provider: (name, label).
    providers: Vec<(&'a str, &'a str)>,
    /// Offer "Sign in with a passkey": the origin passkeys work at (`[passkeys]` is configured).
    passkeys: Option<&'a str>,
}

/// `?notice=` of the sign-in page after a provider's callback found its sign-in gone.
pub(super) const RESTART_NOTICE: &str = "restart";
/// The sign-in page's note after a provider's callback found its sign-in gone.
const RESTART_MESSAGE: &str = "That sign-in is over: it was already finished or cancelled, took too long, or was \
     started in another tab or browser. Please choose how to sign in again.";

/// Renders the sign-in form with a CSRF cookie (double-submit) and a request for the client
/// hints that let the sessions page say "macOS 14" instead of a frozen UA version. Its buttons
/// for providers post the same form to their start endpoint, which sends the browser on to the
/// provider: the page's `form-action` lets exactly those origins through.
pub(super) fn render_form(
    state: &AppState,
    session: &Session,
    status: u16,
    rd: &str,
    email: &str,
    error: Option<&str>,
) -> Reply {
    let cookies = session.req_header().headers.get_all(http::header::COOKIE);
    let csrf_token = state.cookies.csrf_value(cookies.iter().map(|v| v.as_bytes())).unwrap_or_else(random_string::<32>);
    let destination = if rd == "/" { "the app" } else { rd };
    let providers = state.config.oauth.providers.iter().map(|p| (p.name.as_str(), p.display_name.as_str())).collect();
    let passkeys = state.config.passkeys.as_ref().filter(|_| state.passkeys.is_some()).map(|p| p.origin.as_str());
    let page = SigninPage { csrf_token: &csrf_token, rd, destination, email, error, providers, passkeys };
    let reply = Reply::html_with_form_targets(
        status,
        state.templates.render("signin.html", &page),
        &state.config.oauth.form_targets(),
    );
    // The passkey button's script; without passkeys the page stays script-free.
    let reply = if passkeys.is_some() { reply.with_script() } else { reply };
    reply
        .header("set-cookie", state.cookies.set_csrf(&csrf_token))
        .header("accept-ch", ACCEPT_CH)
        .header("critical-ch", CRITICAL_CH)
        .header("vary", "Sec-CH-UA-Platform-Version")
}

/// GET /.dalea/signin
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let rd = redirect::safe_redirect(query_param(session, "rd").as_deref());
    // Already signed in: go straight on. A store outage just shows the form.
    if let Ok((Some(_), _)) = authenticate::identify(state, session.req_header(), ctx.client_ip).await {
        return Ok(Reply::see_other(&rd));
    }
    let notice = query_param(session, "notice").filter(|n| n == RESTART_NOTICE).map(|_| RESTART_MESSAGE);
    Ok(render_form(state, session, 200, &rd, "", notice))
}

/// Checks the credentials and starts a session (the form and JSON sign-in share this); every
/// attempt is counted in `dalea_signins_total` by its outcome.
async fn sign_in_with_password(
    state: &AppState,
    session: &Session,
    ctx: &RequestCtx,
    email: &str,
    password: &str,
    remember_me: bool,
) -> Result<(GwSession, String), GatewayError> {
    let result = match check_credentials(state, session, ctx, email, password).await {
        Ok(user) => start_session(state, session, ctx, &user, SignInMethod::Password, remember_me).await,
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(_) => "success",
        Err(GatewayError::BadCredentials) => "failure",
        Err(GatewayError::TooManyAttempts(_)) => "throttled",
        Err(_) => "error",
    };
    state.metrics.auth.signin("password", outcome);
    result
}

/// Checks email + password. Unknown email and wrong password look exactly the same; too many
/// failures for the account or the client's network are refused before any password check.
async fn check_credentials(
    state: &AppState,
    session: &Session,
    ctx: &RequestCtx,
    email: &str,
    password: &str,
) -> Result<std::sync::Arc<User>, GatewayError> {
    let now = state.sessions.now();
    let user = state.users.current().by_email(email);
    let rule = Rule::sign_in(&state.config.rate_limit);
    if let Err(retry) = state.throttle.reserve(&rule, email, user.is_some(), ctx.client_ip, now).await? {
        tracing::info!(outcome = "throttled", user.email = ?log_email(email), client.ip = %ip_field(ctx), "sign-in refused: too many failures");
        if let Some(user) = &user {
            audit_failure(state, session, ctx, user, "throttled").await;
        }
        return Err(GatewayError::TooManyAttempts(retry.as_secs()));
    }
    let hash = match &user {
        Some(u) => Some(account_password::current_hash(state, u).await?),
        None => None,
    };
    if state.passwords.verify(password.to_string(), hash).await {
        if let Some(user) = user {
            state.throttle.succeeded(&rule, email, ctx.client_ip).await;
            return Ok(user);
        }
    }
    tracing::info!(outcome = "failure", user.email = ?log_email(email), client.ip = %ip_field(ctx), "sign-in failed");
    if let Some(user) = &user {
        audit_failure(state, session, ctx, user, "password").await;
    }
    Err(GatewayError::BadCredentials)
}

/// A failed sign-in goes into the account's audit log (unknown emails have none).
pub(super) async fn audit_failure(state: &AppState, session: &Session, ctx: &RequestCtx, user: &User, reason: &str) {
    let headers = &session.req_header().headers;
    let actor = Actor::anonymous(state, ctx.client_ip, &user_agent(session), &ClientHints::from_headers(headers));
    audit_log::record(state, &user.id, actor, AuditEvent::SignInFailed { reason: reason.into() }).await;
}

/// The request's User-Agent, at most 512 characters.
fn user_agent(session: &Session) -> String {
    session
        .req_header()
        .headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(512).collect())
        .unwrap_or_default()
}

/// An attempted email as logged: quoted and escaped (`?` formatting), at most 100 characters,
/// so a crafted value cannot forge log lines.
fn log_email(email: &str) -> String {
    email.chars().take(100).collect()
}

/// The client IP for log lines ("-" when unknown).
fn ip_field(ctx: &RequestCtx) -> String {
    ctx.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

/// Starts the session and returns it with the `Set-Cookie` value. Always a fresh token, never
/// one the browser brought.
pub(super) async fn start_session(
    state: &AppState,
    session: &Session,
    ctx: &RequestCtx,
    user: &User,
    method: SignInMethod,
    remember_me: bool,
) -> Result<(GwSession, String), GatewayError> {
    // Someone with no second factor just signed in (password, or a provider's fresh sign-in):
    // that passes sensitive actions for a while. (If the store cannot say, the sign-in gives no such pass.)
    let no_second_factor = matches!(
        (account_totp::is_enrolled(state, &user.id).await, super::passkeys::has_passkeys(state, &user.id).await),
        (Ok(false), Ok(false))
    );
    begin_session(state, session, ctx, user, method, remember_me, no_second_factor, None).await
}

/// Starts a session signed in with the passkey `passkey_id` (already verified): elevated by that
/// passkey from the start; remembered only if the person asked.
pub(super) async fn start_passkey_session(
    state: &AppState,
    session: &Session,
    ctx: &RequestCtx,
    user: &User,
    passkey_id: String,
    remember_me: bool,
) -> Result<(GwSession, String), GatewayError> {
    begin_session(state, session, ctx, user, SignInMethod::Passkey, remember_me, false, Some(passkey_id)).await
}

#[allow(clippy::too_many_arguments)]
async fn begin_session(
    state: &AppState,
    session: &Session,
    ctx: &RequestCtx,
    user: &User,
    method: SignInMethod,
    remember_me: bool,
    reauthenticated: bool,
    passkey: Option<String>,
) -> Result<(GwSession, String), GatewayError> {
    let headers = &session.req_header().headers;
    let new = NewSession {
        user_id: user.id.clone(),
        method,
        remember_me,
        ip: ctx.client_ip,
        user_agent: user_agent(session),
        client_hints: ClientHints::from_headers(headers),
        reauthenticated,
        passkey,
    };
    let (s, token) = state.sessions.sign_in(new).await?;
    tracing::info!(user.id = %user.id, session.id = %s.id, client.ip = %ip_field(ctx), method = %s.sign_in_method.as_string(), outcome = "success", "signed in");
    let event = AuditEvent::SignIn { method: s.sign_in_method.as_string() };
    audit_log::record(state, &user.id, Actor::session(state, &s, ctx.client_ip), event).await;
    super::sessions::after_sign_in(state, ctx, user, &s).await;
    // The new cookie replaces whatever session this browser had: end that one rather than
    // leave an unreachable session in someone's list until it expires.
    if let Ok((Some(old), _)) = authenticate::identify(state, session.req_header(), None).await {
        if old.session.session.token_hash != s.token_hash {
            state.sessions.sign_out(&old.session.session.token_hash).await?;
        }
    }
    let cookie = set_cookie_for(state, &s, &token);
    Ok((s, cookie))
}

/// Remembered sessions get a cookie lasting until the session's absolute expiry; others a
/// browser-session cookie.
pub(super) fn set_cookie_for(state: &AppState, s: &GwSession, token: &Token) -> String {
    let max_age = s.remember_me.then(|| {
        let left = (s.expires_at - state.sessions.now()).max(0);
        Duration::from_millis(left as u64)
    });
    state.cookies.set_session(token, max_age)
}

/// POST /.dalea/signin (form: email, password, remember_me, rd, csrf_token)
pub async fn form(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    body::require_content_type(session, body::FORM)?;
    let fields = body::form(&body::read(session, state.config.server.max_form_bytes).await?);
    let rd = redirect::safe_redirect(fields.get("rd").map(String::as_str));
    let email = fields.get("email").map(|e| e.trim()).unwrap_or_default().to_string();

    let cookies = session.req_header().headers.get_all(http::header::COOKIE);
    let expected = state.cookies.csrf_value(cookies.iter().map(|v| v.as_bytes()));
    let csrf_ok =
        expected.is_some_and(|e| csrf::check_token(&crate::session::Secret::from(e), fields.get("csrf_token")).is_ok());
    if !csrf_ok {
        let msg = "This sign-in form had expired. Please sign in again.";
        return Ok(render_form(state, session, 403, &rd, &email, Some(msg)));
    }

    let password = fields.get("password").cloned().unwrap_or_default();
    let remember_me = fields.get("remember_me").is_some_and(|v| matches!(v.as_str(), "on" | "true" | "1"));
    let cookie = match sign_in_with_password(state, session, ctx, &email, &password, remember_me).await {
        Ok((_, cookie)) => cookie,
        Err(err) => {
            let page = render_form(state, session, err.status(), &rd, &email, Some(&err.to_string()));
            return Ok(err.headers().into_iter().fold(page, |r, (k, v)| r.header(k, v)));
        }
    };
    Ok(Reply::see_other(&rd).header("set-cookie", cookie).header("set-cookie", state.cookies.clear_csrf()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSignin {
    email: String,
    password: String,
    #[serde(default)]
    remember_me: bool,
}

/// POST /.dalea/api/signin (JSON). 200 + Set-Cookie + `{"session":{…}}`; the token is only in
/// the cookie, never in the body.
pub async fn json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    body::require_content_type(session, body::JSON)?;
    let req: JsonSignin = body::json(&body::read(session, state.config.server.max_form_bytes).await?)?;
    let (s, cookie) = sign_in_with_password(state, session, ctx, &req.email, &req.password, req.remember_me).await?;
    let view = SessionView::new(state, &s, s.last_active_at, s.last_ip, true);
    let body = serde_json::to_vec(&serde_json::json!({ "session": view })).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body).header("set-cookie", cookie))
}

/// POST /.dalea/signout: ends this session, clears the cookie, back to the sign-in page.
pub async fn sign_out(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    let (identity, _) = authenticate::identify(state, session.req_header(), ctx.client_ip).await?;
    let clear = state.cookies.clear_session();
    let Some(identity) = identity else {
        return Ok(Reply::see_other(SIGNIN_PATH).header("set-cookie", clear));
    };
    let fields = if body::require_content_type(session, body::FORM).is_ok() {
        body::form(&body::read(session, state.config.server.max_form_bytes).await?)
    } else {
        Default::default()
    };
    csrf::check_token(&identity.session.session.csrf, fields.get("csrf_token"))?;
    state.sessions.sign_out(&identity.session.session.token_hash).await?;
    tracing::info!(user.id = %identity.user.id, session.id = %identity.session.session.id, "signed out");
    let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
    audit_log::record(state, &identity.user.id, actor, AuditEvent::SignOut).await;
    Ok(Reply::see_other(SIGNIN_PATH).header("set-cookie", clear))
}
