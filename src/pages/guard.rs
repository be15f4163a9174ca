//! What a built-in page or API call needs before it runs: a signed-in person, and for
//! sensitive actions a recent re-authentication (see `crate::elevation`).

use std::collections::HashMap;

use pingora::proxy::Session;
use serde::de::DeserializeOwned;

use super::{body, csrf, trusted_forwarded_host};

use crate::account::totp as account_totp;
use crate::clock::millis;
use crate::elevation;
use crate::error::GatewayError;
use crate::proxy::authenticate;
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::state::AppState;

/// The caller's identity, or `SignInRequired` (a browser navigating is then sent to sign in
/// and back by `pages::handle`).
pub async fn identity(state: &AppState, session: &Session, ctx: &RequestCtx) -> Result<Identity, GatewayError> {
    match authenticate::identify(state, session.req_header(), ctx.client_ip).await? {
        (Some(identity), _) => Ok(identity),
        (None, _) => Err(GatewayError::SignInRequired),
    }
}

/// A state-changing JSON or DELETE call: same origin, then the caller's identity.
pub async fn api_call(state: &AppState, session: &Session, ctx: &RequestCtx) -> Result<Identity, GatewayError> {
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    identity(state, session, ctx).await
}

/// A JSON call with a body: same origin, `application/json`, the caller's identity and the
/// parsed body.
pub async fn json_post<T: DeserializeOwned>(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
) -> Result<(Identity, T), GatewayError> {
    body::require_content_type(session, body::JSON)?;
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    // The body first, then the session: a session revoked while a slow body arrives must not
    // act afterwards on the copy looked up before.
    let raw = body::read(session, state.config.server.max_form_bytes).await?;
    let identity = identity(state, session, ctx).await?;
    Ok((identity, body::json(&raw)?))
}

/// An HTML form post: same origin, form encoding, the caller's identity, and the session's
/// CSRF token in the fields. Returns the identity and the fields.
pub async fn form_post(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
) -> Result<(Identity, HashMap<String, String>), GatewayError> {
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    body::require_content_type(session, body::FORM)?;
    // The body first, then the session (see `json_post`).
    let fields = body::form(&body::read(session, state.config.server.max_form_bytes).await?);
    let identity = identity(state, session, ctx).await?;
    csrf::check_token(&identity.session.session.csrf, fields.get("csrf_token"))?;
    Ok((identity, fields))
}

fn challenge(state: &AppState) -> GatewayError {
    GatewayError::ElevationRequired { max_age: state.config.elevation.max_age.as_secs() }
}

/// A sensitive action: the session must have re-authenticated within `elevation.max_age`.
pub fn elevated(state: &AppState, identity: &Identity) -> Result<(), GatewayError> {
    check(state, identity, elevation::passes)
}

/// Changing or removing a second factor: an elevation *with a second factor* within
/// `elevation.max_age` (a password proof never suffices once a second factor exists).
pub fn elevated_by_second_factor(state: &AppState, identity: &Identity) -> Result<(), GatewayError> {
    check(state, identity, elevation::passes_with_second_factor)
}

/// Applies one of `crate::elevation`'s rules to the caller's session now; the step-up
/// challenge when it does not pass.
fn check(
    state: &AppState,
    identity: &Identity,
    rule: fn(&crate::session::Session, crate::clock::Millis, crate::clock::Millis) -> bool,
) -> Result<(), GatewayError> {
    let max_age = millis(state.config.elevation.max_age);
    if rule(&identity.session.session, state.sessions.now(), max_age) {
        Ok(())
    } else {
        Err(challenge(state))
    }
}

/// Creating a credential: a sign-in or a re-authentication within `elevation.max_age`.
pub fn recently_authenticated(state: &AppState, identity: &Identity) -> Result<(), GatewayError> {
    check(state, identity, elevation::recently_authenticated)
}

/// Whether the person has a second factor they can confirm with: TOTP, or a passkey (with
/// passkeys on).
pub async fn has_second_factor(state: &AppState, user_id: &str) -> Result<bool, GatewayError> {
    Ok(account_totp::is_enrolled(state, user_id).await? || super::passkeys::has_passkeys(state, user_id).await?)
}

/// Adding a second factor (TOTP, a passkey). For someone with none yet: a sign-in or
/// re-authentication within `elevation.max_age`. For someone who has one, it is as sensitive as
/// changing it — only a confirmation *with a second factor* will do; otherwise a stolen password
/// could add its own factor and then remove the person's.
pub async fn may_add_second_factor(state: &AppState, identity: &Identity) -> Result<(), GatewayError> {
    if has_second_factor(state, &identity.user.id).await? {
        elevated_by_second_factor(state, identity)
    } else {
        recently_authenticated(state, identity)
    }
}
