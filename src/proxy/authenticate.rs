//! Request → [`Decision`]: which credentials the request carries, whether they are alive, and
//! whether they satisfy the route's access level. No I/O for a cached session.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use super::ctx::{Identity, KeyIdentity};
use super::routes::Route;
use crate::api_keys::keyring::KeyLookup;
use crate::api_keys::request::{presented, Presented};
use crate::api_keys::KeySecret;
use crate::clock::millis;
use crate::config::Access;
use crate::elevation;
use crate::error::GatewayError;
use crate::metrics::DecisionKind;
use crate::session::manager::Lookup;
use crate::state::AppState;

/// What happens to a request. Exhaustive, so nothing passes by accident.
#[derive(Debug)]
pub enum Decision {
    /// Proxy it; with an identity when a session is present. `clear_cookie` when a dead
    /// session cookie came along (public routes let such requests through).
    Allow { identity: Option<Identity>, clear_cookie: bool },
    /// Proxy it as a request made with this API key (the session cookie, if any, is ignored).
    AllowKey(KeyIdentity),
    /// No live session: sign-in redirect (browsers) or 401. `clear_cookie` when a dead
    /// session cookie came with the request.
    SignInRequired { clear_cookie: bool },
    /// A sensitive route and no re-authentication within `elevation.max_age`: the elevation
    /// page (browsers) or a 401 step-up challenge.
    ElevationRequired,
    /// Refused with this error (e.g. 503 when the store is down).
    Deny(GatewayError),
}

impl Decision {
    /// The `decision` label of `dalea_requests_total`.
    pub fn kind(&self) -> DecisionKind {
        match self {
            Decision::Allow { .. } => DecisionKind::Allowed,
            Decision::AllowKey(_) => DecisionKind::ApiKey,
            Decision::SignInRequired { .. } => DecisionKind::SigninRequired,
            Decision::ElevationRequired => DecisionKind::ElevationRequired,
            Decision::Deny(_) => DecisionKind::Denied,
        }
    }
}

/// Resolves the session cookie(s) of `req` to an identity, if any, and records the request as
/// that session's activity (from `client_ip`): every request a session makes counts, built-in
/// pages included. The flag says a dead session cookie came along.
pub async fn identify(
    state: &AppState,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
) -> Result<(Option<Identity>, bool), GatewayError> {
    let tokens = state.cookies.session_tokens(req.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()));
    if tokens.is_empty() {
        return Ok((None, false));
    }
    match state.sessions.lookup(&tokens).await? {
        Lookup::Found(cached) => {
            // A session ends with the person it rests on: removed from the users file → gone.
            // A store that cannot say is `StoreUnavailable` (503), never a sign-out.
            let Some(user) = state.person(&cached.session.user_id).await? else {
                state.sessions.sign_out(&cached.session.token_hash).await?;
                return Ok((None, true));
            };
            state.sessions.touch(&cached, client_ip);
            Ok((Some(Identity { user, session: cached }), false))
        }
        Lookup::Missing { stale_cookie } => Ok((None, stale_cookie)),
    }
}

/// The decision for a request to `route`. An API key, when the request carries one, decides
/// alone: a session cookie sent with it is ignored.
pub async fn decide(state: &AppState, req: &RequestHeader, client_ip: Option<IpAddr>, route: &Route) -> Decision {
    match presented(req) {
        Presented::Misplaced(keys) if any_real(state, &keys).await => Decision::Deny(GatewayError::ApiKeyMisplaced),
        Presented::None | Presented::Misplaced(_) => decide_session(state, req, client_ip, route.access).await,
        Presented::Malformed => Decision::Deny(GatewayError::BadApiKey("The API key is malformed.")),
        Presented::Key(_) if !route.api_keys => Decision::Deny(GatewayError::ApiKeyNotAccepted(
            "This route does not accept API keys. Use a signed-in session, or ask the operator to set api_keys = true on the route.",
        )),
        Presented::Key(secret) => match identify_key(state, &secret, client_ip).await {
            Ok(key) => Decision::AllowKey(key),
            Err(e) => Decision::Deny(e),
        },
    }
}

/// Whether any of these well-formed keys (found where keys do not belong) really exists. A
/// made-up one is ignored; if the store cannot say, so is this one.
pub async fn any_real(state: &AppState, keys: &[KeySecret]) -> bool {
    for key in keys {
        if matches!(state.api_keys.lookup(key, true).await, Ok(KeyLookup::Found(_) | KeyLookup::Expired)) {
            return true;
        }
    }
    false
}

/// Resolves a presented API key to its person and records its use.
pub async fn identify_key(
    state: &AppState,
    secret: &KeySecret,
    client_ip: Option<IpAddr>,
) -> Result<KeyIdentity, GatewayError> {
    let trusted = state.sessions.cache.is_trusted();
    let key = match state.api_keys.lookup(secret, trusted).await? {
        KeyLookup::Found(key) => key,
        KeyLookup::Unknown => return Err(GatewayError::BadApiKey("The API key is unknown or was revoked.")),
        KeyLookup::Expired => return Err(GatewayError::BadApiKey("The API key has expired.")),
    };
    // A key ends with the person it belongs to.
    let Some(user) = state.person(&key.user_id).await? else {
        state.api_keys.revoke(&key.user_id, &key.id).await?;
        return Err(GatewayError::BadApiKey("The API key is unknown or was revoked."));
    };
    state.api_keys.touch(&key, client_ip);
    Ok(KeyIdentity { user, key })
}

async fn decide_session(state: &AppState, req: &RequestHeader, client_ip: Option<IpAddr>, access: Access) -> Decision {
    let identified = identify(state, req, client_ip).await;
    match (access, identified) {
        // Public routes never fail because of the session store; they just go anonymous.
        (Access::Public, Ok((identity, stale))) => Decision::Allow { identity, clear_cookie: stale },
        (Access::Public, Err(_)) => Decision::Allow { identity: None, clear_cookie: false },
        (_, Err(e)) => Decision::Deny(e),
        (_, Ok((None, stale))) => Decision::SignInRequired { clear_cookie: stale },
        (Access::Session, Ok((Some(identity), _))) => Decision::Allow { identity: Some(identity), clear_cookie: false },
        (Access::Elevated, Ok((Some(identity), _))) => {
            let max_age = millis(state.config.elevation.max_age);
            if elevation::passes(&identity.session.session, state.sessions.now(), max_age) {
                Decision::Allow { identity: Some(identity), clear_cookie: false }
            } else {
                Decision::ElevationRequired
            }
        }
    }
}

/// Whether the client is a browser navigating (GET/HEAD asking for HTML): those get redirects
/// and pages, everything else gets JSON.
pub fn is_browser_navigation(req: &RequestHeader) -> bool {
    let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
    method_ok && accepts_html(req)
}

pub fn accepts_html(req: &RequestHeader) -> bool {
    req.headers
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}
