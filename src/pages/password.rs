//! Settings → Security → Password: change the password (a sensitive action that also needs the
//! current password). Other sessions are not signed out automatically: afterwards the person
//! is shown their sessions list to sign out any they do not recognise.

use pingora::proxy::Session;
use serde::{Deserialize, Serialize};

use super::{elevate_url, guard, UserView, PASSWORD_PATH, SESSIONS_PATH};
use crate::account::audit_log::{self, Actor};
use crate::account::password::{self as account_password, SetError, MIN_LEN};
use crate::audit::AuditEvent;
use crate::error::GatewayError;
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::state::AppState;

#[derive(Serialize)]
struct PasswordPage<'a> {
    user: UserView<'a>,
    csrf_token: &'a str,
    tab: &'static str,
    tab_label: &'static str,
    min_len: usize,
    error: Option<String>,
    /// The confirmation lapsed: link to confirm again and come back here.
    elevate_url: Option<String>,
}

fn render(state: &AppState, identity: &Identity, status: u16, error: Option<&GatewayError>) -> Reply {
    let lapsed = matches!(error, Some(GatewayError::ElevationRequired { .. }));
    let page = PasswordPage {
        user: UserView::of(&identity.user),
        csrf_token: identity.session.session.csrf.expose(),
        tab: "password",
        tab_label: "Password",
        min_len: MIN_LEN,
        error: error.map(ToString::to_string),
        elevate_url: lapsed.then(|| elevate_url(PASSWORD_PATH)),
    };
    Reply::html(status, state.templates.render("password.html", &page))
}

/// GET /.dalea/settings/security/password (sensitive: browsers confirm it's you first)
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    guard::elevated(state, &identity)?;
    Ok(render(state, &identity, 200, None))
}

/// Checks and stores the new password; audited.
async fn change(
    state: &AppState,
    identity: &Identity,
    ctx: &RequestCtx,
    current: &str,
    new: &str,
    confirm: Option<&str>,
) -> Result<(), GatewayError> {
    guard::elevated(state, identity)?;
    account_password::check_new(current, new, confirm).map_err(GatewayError::BadRequest)?;
    let _one_at_a_time = crate::account::person_lock("password", &identity.user.id).await;
    account_password::verify(state, &identity.user, current, ctx.client_ip).await.map_err(|e| match e {
        GatewayError::BadCredentials => GatewayError::BadRequest("The current password is not right.".into()),
        other => other,
    })?;
    account_password::set(state, &identity.user, new.to_string()).await.map_err(|e| match e {
        SetError::Store(e) => GatewayError::from(e),
        SetError::Hashing => GatewayError::Internal,
    })?;
    tracing::info!(user.id = %identity.user.id, session.id = %identity.session.session.id, "password changed");
    let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
    audit_log::record(state, &identity.user.id, actor, AuditEvent::PasswordChanged).await;
    Ok(())
}

/// POST /.dalea/settings/security/password (form: csrf_token, current_password,
/// new_password, confirm_password) → the sessions list with a note.
pub async fn form(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, fields) = guard::form_post(state, session, ctx).await?;
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let confirm = Some(field("confirm_password"));
    match change(state, &identity, ctx, field("current_password"), field("new_password"), confirm).await {
        Ok(()) => Ok(Reply::see_other(&format!("{SESSIONS_PATH}?done=password"))),
        // Shown on the form again (nothing typed is echoed back); the step-up and throttling
        // errors keep their status and headers.
        Err(err) if matches!(err.status(), 400 | 401 | 429) => {
            let page = render(state, &identity, err.status(), Some(&err));
            Ok(err.headers().into_iter().fold(page, |r, (k, v)| r.header(k, v)))
        }
        Err(err) => Err(err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonChange {
    current_password: String,
    new_password: String,
}

/// POST /.dalea/api/password `{"current_password","new_password"}` → 204
pub async fn json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, req): (_, JsonChange) = guard::json_post(state, session, ctx).await?;
    change(state, &identity, ctx, &req.current_password, &req.new_password, None).await.map_err(|e| match e {
        // For scripts, a wrong current password is the usual 401.
        GatewayError::BadRequest(m) if m.starts_with("The current password") => GatewayError::BadCredentials,
        other => other,
    })?;
    Ok(Reply::empty(204))
}
