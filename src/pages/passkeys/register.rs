//! Adding a passkey: `begin` (needs a recent sign-in or confirmation) and `finish`, bound to the
//! session that began them.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBegin {
    name: String,
}

fn too_many() -> GatewayError {
    GatewayError::Conflict(format!(
        "You already have {MAX_PASSKEYS_PER_PERSON} passkeys. Remove one you no longer use first."
    ))
}

/// POST /.dalea/api/passkeys/register/begin `{"name"}` → `{"ceremony","publicKey"}`. Adding a
/// second factor: a sign-in or confirmation within `elevation.max_age` for someone with none,
/// a confirmation with a second factor for someone with one (else 401 `elevation_required`).
pub async fn register_begin(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let (identity, req): (_, RegisterBegin) = guard::json_post(state, session, ctx).await?;
    guard::may_add_second_factor(state, &identity).await?;
    let name = check_name(&req.name)?;
    let user = &identity.user;
    let existing = state.passkey_store.passkeys_of(&user.id).await?;
    if existing.len() >= MAX_PASSKEYS_PER_PERSON {
        return Err(too_many());
    }
    let (ccr, reg) =
        service.start_registration(&user.id, &user.email, &user.display_name, &existing).map_err(refused)?;
    let s = &identity.session.session;
    let ceremony = Ceremony::Register { state: reg, session: s.id.to_string(), user_id: user.id.clone(), name };
    begun(&keep(state, &ceremony).await?, ccr.public_key)
}

/// POST /.dalea/api/passkeys/register/finish `{"ceremony","credential"}` → 201 with the new
/// passkey (as the list shows it); audited.
pub async fn register_finish(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let (identity, req): (_, Finish) = guard::json_post(state, session, ctx).await?;
    let credential: RegisterPublicKeyCredential = parse(req.credential)?;
    let user = &identity.user;
    let s = &identity.session.session;
    let Some(Ceremony::Register { state: reg, session: began_in, name, .. }) = take(state, &req.ceremony).await? else {
        return Err(over());
    };
    if began_in != s.id.as_str() {
        tracing::warn!(user.id = %user.id, "passkey registration finished from another session: refused");
        return Err(over());
    }
    let passkey = service.finish_registration(&credential, &reg).map_err(|e| {
        tracing::info!(user.id = %user.id, reason = %e, "passkey registration refused");
        refused(e)
    })?;
    let record = PasskeyRecord::new(&user.id, &name, passkey, state.sessions.now());
    match state.passkey_store.add_passkey(&record).await {
        Ok(true) => {}
        Ok(false) => return Err(GatewayError::Conflict("That passkey is already registered here.".into())),
        Err(StoreError::Unavailable(m)) if m == TOO_MANY_PASSKEYS => return Err(too_many()),
        Err(e) => return Err(e.into()),
    }
    // A second factor now exists: re-entering the password no longer passes sensitive actions.
    state
        .sessions
        .update_all(&user.id, |s| {
            let had = s.reauthenticated_at.is_some();
            s.reauthenticated_at = None;
            had
        })
        .await?;
    tracing::info!(user.id = %user.id, passkey.id = %short(&record.id), "passkey added");
    let actor = Actor::session(state, s, ctx.client_ip);
    audit_log::record(state, &user.id, actor, AuditEvent::PasskeyAdded { name: record.name.clone() }).await;
    let body = serde_json::to_vec(&super::manage::view(state, &record)).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(201, body))
}
