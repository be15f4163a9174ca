//! Confirming it's you with one of your passkeys (elevation): `begin` and `finish`, bound to the
//! session that began them.

use super::*;

/// POST /.dalea/api/elevate/passkey/begin (`{}`) → `{"ceremony","publicKey"}` for one of the
/// caller's passkeys.
pub async fn elevate_begin(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    // Always JSON, even though nothing in it is needed: no HTML form elsewhere can send that.
    let (identity, _): (_, serde_json::Map<String, serde_json::Value>) =
        json_post_or_empty(state, session, ctx).await?;
    let theirs = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let (rcr, auth) = service.start_elevation(&theirs).map_err(refused)?;
    let s = &identity.session.session;
    let id =
        keep(state, &Ceremony::Elevate { state: auth, session: s.id.to_string(), user_id: s.user_id.clone() }).await?;
    begun(&id, rcr.public_key)
}

/// [`guard::json_post`], with an empty body read as `{}`.
async fn json_post_or_empty<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
) -> Result<(Identity, T), GatewayError> {
    if crate::pages::has_body(session) {
        return guard::json_post(state, session, ctx).await;
    }
    body::require_content_type(session, body::JSON)?;
    Ok((guard::api_call(state, session, ctx).await?, T::default()))
}

/// POST /.dalea/api/elevate/passkey/finish `{"ceremony","credential","rd"?}` → 200 like
/// `/.dalea/api/elevate` (plus `redirect`), with the rotated session cookie.
pub async fn elevate_finish(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let (identity, req): (_, Finish) = guard::json_post(state, session, ctx).await?;
    let credential: PublicKeyCredential = parse(req.credential)?;
    let user = &identity.user;
    let s = &identity.session.session;
    let Some(Ceremony::Elevate { state: auth, session: began_in, .. }) = take(state, &req.ceremony).await? else {
        return Err(over());
    };
    if began_in != s.id.as_str() {
        tracing::warn!(user.id = %user.id, "passkey confirmation finished from another session: refused");
        return Err(over());
    }
    let id = match prove(state, service, &identity, ctx, &credential, &auth).await {
        Ok(id) => id,
        Err(e) => {
            let (reason, counted) = match &e {
                GatewayError::TooManyAttempts(_) => ("throttled", "throttled"),
                GatewayError::PasskeyRefused(why) => (why.as_str(), "failure"),
                _ => return Err(e),
            };
            state.metrics.auth.elevation("passkey", counted);
            let actor = Actor::session(state, s, ctx.client_ip);
            let event =
                AuditEvent::ElevationFailed { method: "passkey".into(), reason: reason.chars().take(120).collect() };
            audit_log::record(state, &user.id, actor, event).await;
            return Err(e);
        }
    };
    let (s, cookie) = elevate::elevate(state, &identity, ctx, Proof::Passkey(id)).await?;
    let rd = redirect::safe_redirect(req.rd.as_deref());
    let at = s.elevation.map(|e| e.at).unwrap_or_default();
    let body = serde_json::json!({
        "method": "passkey",
        "elevated": true,
        "elevated_at": rfc3339(at),
        "expires_at": rfc3339(at + millis(state.config.elevation.max_age)),
        "redirect": rd,
    });
    Ok(Reply::json(200, body.to_string().into_bytes()).header("set-cookie", cookie))
}

/// Checks a confirmation answer: one of the caller's passkeys as stored now (someone else's is
/// named as such), within the attempt budget for confirming, then signature, user verification
/// and counter; records the use. Returns the passkey's credential id.
async fn prove(
    state: &AppState,
    service: &PasskeyService,
    identity: &Identity,
    ctx: &RequestCtx,
    credential: &PublicKeyCredential,
    auth: &PasskeyAuthentication,
) -> Result<String, GatewayError> {
    let user = &identity.user;
    let now = state.sessions.now();
    let rule = Rule::totp(&state.config.rate_limit);
    if let Err(retry) = state.throttle.reserve(&rule, &user.id, true, ctx.client_ip, now).await? {
        return Err(GatewayError::TooManyAttempts(retry.as_secs()));
    }
    let theirs = state.passkey_store.passkeys_of(&user.id).await?;
    let id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
    if !theirs.iter().any(|r| r.id == id) {
        let someone_else = match crate::passkeys::check_credential_id(&id) {
            Ok(()) => state.passkey_store.passkey(&id).await?.is_some_and(|r| r.user_id != user.id),
            Err(_) => false,
        };
        tracing::info!(user.id = %user.id, someone_else, "passkey confirmation with a passkey not theirs: refused");
        let why = if someone_else { ANOTHER_ACCOUNT } else { NOT_REGISTERED };
        return Err(GatewayError::PasskeyRefused(why.into()));
    }
    let (id, passkey) = service.finish_elevation(credential, auth, &theirs).map_err(|e| {
        tracing::info!(user.id = %user.id, reason = %e, "passkey confirmation refused");
        refused(e)
    })?;
    if !state.passkey_store.passkey_used(&user.id, &id, &passkey, now).await? {
        return Err(GatewayError::PasskeyRefused(NOT_REGISTERED.into()));
    }
    state.throttle.succeeded(&rule, &user.id, ctx.client_ip).await;
    Ok(id)
}
