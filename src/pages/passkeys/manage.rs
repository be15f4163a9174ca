//! The Passkeys tab and its JSON: the list, renaming, and removing (sensitive: it takes away the
//! elevation of every session resting on the passkey).

use super::*;

/// One passkey as the list shows it (never the key).
#[derive(Debug, Serialize)]
pub(super) struct PasskeyView {
    id: String,
    name: String,
    created_at: String,
    last_used_at: Option<String>,
    #[serde(skip)]
    created_ago: String,
    #[serde(skip)]
    last_used_ago: Option<String>,
}

pub(super) fn view(state: &AppState, r: &PasskeyRecord) -> PasskeyView {
    let now = state.sessions.now();
    PasskeyView {
        id: r.id.clone(),
        name: r.name.clone(),
        created_at: rfc3339(r.created_at),
        last_used_at: r.last_used_at.map(rfc3339),
        created_ago: ago(r.created_at, now),
        last_used_ago: r.last_used_at.map(|t| ago(t, now)),
    }
}

/// A row of the page: the view with its display-only fields.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    view: &'a PasskeyView,
    created_ago: &'a str,
    last_used_ago: Option<&'a str>,
}

#[derive(Serialize)]
struct PasskeysPage<'a> {
    user: UserView<'a>,
    csrf_token: &'a str,
    tab: &'static str,
    tab_label: &'static str,
    enabled: bool,
    /// The origin passkeys work at (the script says so on any other address).
    origin: &'a str,
    passkeys: Vec<Row<'a>>,
    may_add: bool,
    may_remove: bool,
    full: bool,
    elevate_url: String,
    done_url: String,
    notice: Option<&'static str>,
    error: Option<String>,
    max_passkeys: usize,
    max_name_chars: usize,
    max_age_minutes: u64,
}

async fn render(
    state: &AppState,
    session: &Session,
    identity: &Identity,
    status: u16,
    error: Option<String>,
) -> Result<Reply, GatewayError> {
    let records = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let views: Vec<PasskeyView> = records.iter().map(|r| view(state, r)).collect();
    let notice = match query_param(session, "done").as_deref() {
        Some("added") => Some("Your passkey was added. You can now sign in with it and use it to confirm it's you."),
        Some("renamed") => Some("The passkey was renamed."),
        Some("removed") => Some("The passkey was removed. It no longer signs in or confirms anything, anywhere."),
        Some("gone") => Some("That passkey had already been removed."),
        _ => None,
    };
    let page = PasskeysPage {
        user: UserView::of(&identity.user),
        csrf_token: identity.session.session.csrf.expose(),
        tab: "passkeys",
        tab_label: "Passkeys",
        enabled: state.passkeys.is_some(),
        origin: state.config.passkeys.as_ref().map_or("", |p| p.origin.as_str()),
        passkeys: views
            .iter()
            .map(|v| Row { view: v, created_ago: &v.created_ago, last_used_ago: v.last_used_ago.as_deref() })
            .collect(),
        may_add: guard::may_add_second_factor(state, identity).await.is_ok(),
        may_remove: guard::elevated_by_second_factor(state, identity).is_ok(),
        full: records.len() >= MAX_PASSKEYS_PER_PERSON,
        elevate_url: elevate_url(PASSKEYS_PATH),
        done_url: format!("{PASSKEYS_PATH}?done=added"),
        notice,
        error,
        max_passkeys: MAX_PASSKEYS_PER_PERSON,
        max_name_chars: MAX_NAME_CHARS,
        max_age_minutes: state.config.elevation.max_age.as_secs().div_ceil(60),
    };
    let reply = Reply::html(status, state.templates.render("passkeys.html", &page));
    Ok(if page.enabled { reply.with_script() } else { reply })
}

/// GET /.dalea/settings/security/passkeys
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    render(state, session, &identity, 200, None).await
}

/// GET /.dalea/api/passkeys → `{"passkeys":[{"id","name","created_at","last_used_at"}]}`
pub async fn list_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let records = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let views: Vec<PasskeyView> = records.iter().map(|r| view(state, r)).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "passkeys": views })).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body))
}

/// Whether `id` could be a credential id at all (else the caller answers 404 without asking the store).
fn plausible_id(id: &str) -> bool {
    crate::passkeys::check_credential_id(id).is_ok()
}

/// Renames one of the caller's passkeys; audited. `false`: no such passkey of theirs.
async fn rename(
    state: &AppState,
    identity: &Identity,
    ctx: &RequestCtx,
    id: &str,
    name: &str,
) -> Result<bool, GatewayError> {
    let name = check_name(name)?;
    let user = &identity.user;
    if !plausible_id(id) {
        return Ok(false);
    }
    let Some(old) = state.passkey_store.passkeys_of(&user.id).await?.into_iter().find(|r| r.id == id) else {
        return Ok(false);
    };
    if !state.passkey_store.rename_passkey(&user.id, id, &name).await? {
        return Ok(false);
    }
    tracing::info!(user.id = %user.id, passkey.id = %short(id), "passkey renamed");
    if old.name != name {
        let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
        audit_log::record(state, &user.id, actor, AuditEvent::PasskeyRenamed { old_name: old.name, name }).await;
    }
    Ok(true)
}

/// Removes one of the caller's passkeys (needs a recent confirmation with a second factor);
/// sessions elevated by it lose that elevation on every replica; audited. `false`: no such
/// passkey of theirs.
async fn remove(state: &AppState, identity: &Identity, ctx: &RequestCtx, id: &str) -> Result<bool, GatewayError> {
    guard::elevated_by_second_factor(state, identity)?;
    let user = &identity.user;
    if !plausible_id(id) {
        return Ok(false);
    }
    let Some(old) = state.passkey_store.passkeys_of(&user.id).await?.into_iter().find(|r| r.id == id) else {
        return Ok(false);
    };
    if !state.passkey_store.remove_passkey(&user.id, id).await? {
        return Ok(false);
    }
    drop_elevations(state, &user.id, id).await?;
    tracing::info!(user.id = %user.id, passkey.id = %short(id), "passkey removed");
    let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
    audit_log::record(state, &user.id, actor, AuditEvent::PasskeyRemoved { name: old.name }).await;
    Ok(true)
}

/// Every session of the person whose elevation rests on passkey `id` loses it (rewritten in the
/// store, dropped from every replica's cache).
async fn drop_elevations(state: &AppState, user_id: &str, id: &str) -> Result<(), GatewayError> {
    use crate::session::ElevationMethod;
    state
        .sessions
        .update_all(user_id, |s| {
            if s.passkey_id.as_deref() != Some(id) {
                return false;
            }
            s.passkey_id = None;
            if s.elevation.is_some_and(|e| e.method == ElevationMethod::Passkey) {
                s.elevation = None;
                s.ever_elevated = false;
            }
            true
        })
        .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRename {
    name: String,
}

/// PATCH /.dalea/api/passkeys/{id} `{"name"}` → 200 with the passkey; 404 when the caller has
/// no such passkey.
pub async fn rename_json(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let (identity, req): (_, JsonRename) = guard::json_post(state, session, ctx).await?;
    if !rename(state, &identity, ctx, id, &req.name).await? {
        return Err(GatewayError::NotFound);
    }
    let records = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let record = records.iter().find(|r| r.id == id).ok_or(GatewayError::NotFound)?;
    let body = serde_json::to_vec(&view(state, record)).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body))
}

/// DELETE /.dalea/api/passkeys/{id} → 204 (sensitive); 404 when the caller has no such passkey.
pub async fn remove_json(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let identity = guard::api_call(state, session, ctx).await?;
    Reply::deleted(remove(state, &identity, ctx, id).await?)
}

/// POST /.dalea/settings/security/passkeys/{id}/rename (form: csrf_token, name)
pub async fn rename_form(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let (identity, fields): (_, HashMap<String, String>) = guard::form_post(state, session, ctx).await?;
    let name = fields.get("name").map(String::as_str).unwrap_or_default();
    match rename(state, &identity, ctx, id, name).await {
        Ok(true) => Ok(Reply::see_other(&format!("{PASSKEYS_PATH}?done=renamed"))),
        Ok(false) => Ok(Reply::see_other(&format!("{PASSKEYS_PATH}?done=gone"))),
        Err(err @ GatewayError::BadRequest(_)) => {
            render(state, session, &identity, err.status(), Some(err.to_string())).await
        }
        Err(err) => Err(err),
    }
}

/// POST /.dalea/settings/security/passkeys/{id}/remove (form: csrf_token)
pub async fn remove_form(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let (identity, _) = guard::form_post(state, session, ctx).await?;
    let done = if remove(state, &identity, ctx, id).await? { "removed" } else { "gone" };
    Ok(Reply::see_other(&format!("{PASSKEYS_PATH}?done={done}")))
}
