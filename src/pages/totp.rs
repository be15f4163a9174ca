//! Settings → Security → Authenticator app: set up TOTP (QR code + manual key, confirmed by a
//! first code), see its status, remove it (a sensitive action). Pages and JSON.

use pingora::proxy::Session;
use serde::{Deserialize, Serialize};

use super::{body, elevate_url, guard, query_param, UserView, TOTP_PATH};
use crate::account::audit_log::{self, Actor};
use crate::account::totp::{self as account_totp, CodeCheck};
use crate::audit::AuditEvent;
use crate::auth::totp::{otpauth_uri, qr_svg, TotpSecret};
use crate::clock::rfc3339;
use crate::error::GatewayError;
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::state::AppState;

/// The issuer authenticator apps show next to the account: the site's host name when it is
/// a plain one, else the product name.
fn issuer(session: &Session) -> String {
    let host = crate::proxy::routes::request_host(session.req_header()).unwrap_or_default();
    let plain = !host.is_empty()
        && host.len() <= 100
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if plain {
        host
    } else {
        "Dalea Gateway".to_string()
    }
}

#[derive(Serialize)]
struct Enrolment {
    qr_svg: String,
    manual_key: String,
}

#[derive(Serialize)]
struct TotpPage<'a> {
    user: UserView<'a>,
    csrf_token: &'a str,
    tab: &'static str,
    tab_label: &'static str,
    available: bool,
    enabled: bool,
    enrolled_at: Option<String>,
    enrolment: Option<Enrolment>,
    /// May set up now (a recent sign-in or confirmation), else a link to confirm first.
    may_enrol: bool,
    /// May remove now (a recent confirmation), else a link to confirm first.
    may_remove: bool,
    elevate_url: String,
    notice: Option<&'static str>,
    error: Option<String>,
}

/// Setting up is adding a second factor ([`guard::may_add_second_factor`]: with a passkey
/// already, only a confirmation with a second factor will do); replacing an active one needs a
/// confirmation with a second factor too (it is removing the old one).
async fn may_enrol(state: &AppState, identity: &Identity, enabled: bool) -> Result<(), GatewayError> {
    if enabled {
        guard::elevated_by_second_factor(state, identity)
    } else {
        guard::may_add_second_factor(state, identity).await
    }
}

async fn render(
    state: &AppState,
    session: &Session,
    identity: &Identity,
    status: u16,
    error: Option<String>,
) -> Result<Reply, GatewayError> {
    let user = &identity.user;
    let stored = state.accounts.totp(&user.id).await?;
    let enabled = stored.active.is_some();
    // A set-up in progress is shown only to a session that may set one up: never to a stale
    // session, which could otherwise learn the new secret and confirm it first.
    let enrolment = match may_enrol(state, identity, enabled).await {
        Err(_) => None,
        Ok(()) => match account_totp::pending(state, &user.id).await {
            Ok(Some(secret)) => Some(enrolment_view(session, &user.email, &secret)),
            Ok(None) | Err(GatewayError::Conflict(_)) => None,
            Err(e) => return Err(e),
        },
    };
    let notice = match query_param(session, "done").as_deref() {
        Some("enrolled") => Some("Your authenticator app is set up. Sensitive actions now ask for a code from it."),
        Some("removed") => Some("The authenticator app was removed."),
        _ => None,
    };
    let page = TotpPage {
        user: UserView::of(user),
        csrf_token: identity.session.session.csrf.expose(),
        tab: "totp",
        tab_label: "Authenticator app",
        available: state.secret_key.is_some(),
        enabled,
        enrolled_at: stored.active.map(|a| rfc3339(a.enrolled_at)),
        enrolment,
        may_enrol: may_enrol(state, identity, enabled).await.is_ok(),
        may_remove: guard::elevated_by_second_factor(state, identity).is_ok(),
        elevate_url: elevate_url(TOTP_PATH),
        notice,
        error,
    };
    Ok(Reply::html(status, state.templates.render("totp.html", &page)))
}

fn enrolment_view(session: &Session, email: &str, secret: &TotpSecret) -> Enrolment {
    Enrolment { qr_svg: qr_svg(&otpauth_uri(secret, &issuer(session), email)), manual_key: secret.base32_grouped() }
}

/// GET /.dalea/settings/security/totp
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    render(state, session, &identity, 200, None).await
}

async fn enrol(state: &AppState, identity: &Identity) -> Result<TotpSecret, GatewayError> {
    let enabled = account_totp::is_enrolled(state, &identity.user.id).await?;
    may_enrol(state, identity, enabled).await?;
    account_totp::start_enrolment(state, &identity.user.id).await
}

/// POST …/totp/enroll: starts a set-up, then shows its QR code on the page.
pub async fn enroll_form(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, _) = guard::form_post(state, session, ctx).await?;
    enrol(state, &identity).await?;
    Ok(Reply::see_other(TOTP_PATH))
}

/// Confirms the set-up with a code (with the same recency as starting one); audited.
async fn confirm(state: &AppState, identity: &Identity, ctx: &RequestCtx, code: &str) -> Result<(), GatewayError> {
    let enabled = account_totp::is_enrolled(state, &identity.user.id).await?;
    may_enrol(state, identity, enabled).await?;
    match account_totp::confirm(state, &identity.user.id, code, ctx.client_ip).await? {
        CodeCheck::Accepted => {
            let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
            audit_log::record(state, &identity.user.id, actor, AuditEvent::TotpEnrolled).await;
            Ok(())
        }
        CodeCheck::Refused => Err(GatewayError::BadCode),
    }
}

/// POST …/totp/confirm (form: csrf_token, code)
pub async fn confirm_form(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, fields) = guard::form_post(state, session, ctx).await?;
    let code = fields.get("code").map(String::as_str).unwrap_or_default();
    match confirm(state, &identity, ctx, code).await {
        Ok(()) => Ok(Reply::see_other(&format!("{TOTP_PATH}?done=enrolled"))),
        Err(err) if matches!(err.status(), 401 | 409 | 429) => {
            let page = render(state, session, &identity, err.status(), Some(err.to_string())).await?;
            Ok(err.headers().into_iter().fold(page, |r, (k, v)| r.header(k, v)))
        }
        Err(err) => Err(err),
    }
}

/// Removes TOTP (sensitive); audited.
async fn disable(state: &AppState, identity: &Identity, ctx: &RequestCtx) -> Result<(), GatewayError> {
    guard::elevated_by_second_factor(state, identity)?;
    if account_totp::disable(state, &identity.user.id).await? {
        let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
        audit_log::record(state, &identity.user.id, actor, AuditEvent::TotpDisabled).await;
    }
    Ok(())
}

/// POST …/totp/disable (form: csrf_token)
pub async fn disable_form(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, _) = guard::form_post(state, session, ctx).await?;
    disable(state, &identity, ctx).await?;
    Ok(Reply::see_other(&format!("{TOTP_PATH}?done=removed")))
}

/// GET /.dalea/api/totp → `{"enabled", "enrolled_at"}`
pub async fn status_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let active = state.accounts.totp(&identity.user.id).await?.active;
    let body = serde_json::json!({
        "enabled": active.is_some(),
        "enrolled_at": active.map(|a| rfc3339(a.enrolled_at)),
    });
    Ok(Reply::json(200, body.to_string().into_bytes()))
}

/// POST /.dalea/api/totp/enroll → `{"secret", "otpauth_uri"}` (shown this once).
pub async fn enroll_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::api_call(state, session, ctx).await?;
    // Always JSON (`{}`), even though nothing in it is needed: no HTML form can send that, so a
    // page elsewhere cannot start a set-up here.
    body::require_content_type(session, body::JSON)?;
    if super::has_body(session) {
        let _: serde_json::Map<String, serde_json::Value> =
            body::json(&body::read(session, state.config.server.max_form_bytes).await?)?;
    }
    let secret = enrol(state, &identity).await?;
    let body = serde_json::json!({
        "secret": secret.base32(),
        "otpauth_uri": otpauth_uri(&secret, &issuer(session), &identity.user.email),
    });
    Ok(Reply::json(200, body.to_string().into_bytes()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCode {
    code: String,
}

/// POST /.dalea/api/totp/confirm `{"code"}` → 204
pub async fn confirm_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, req): (_, JsonCode) = guard::json_post(state, session, ctx).await?;
    confirm(state, &identity, ctx, &req.code).await?;
    Ok(Reply::empty(204))
}

/// DELETE /.dalea/api/totp → 204 (sensitive)
pub async fn disable_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::api_call(state, session, ctx).await?;
    disable(state, &identity, ctx).await?;
    Ok(Reply::empty(204))
}
