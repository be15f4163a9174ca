//! Per-request state carried from one proxy phase to the next.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::api_keys::ApiKey;
use crate::auth::User;
use crate::metrics::DecisionKind;
use crate::session::cache::CachedSession;

/// Who a proxied request is from, as the upstream will be told.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The person, as the users file has them now (shared, not copied per request).
    pub user: Arc<User>,
    pub session: Arc<CachedSession>,
}

impl Identity {
    /// `X-Dalea-Auth-Strength`: `elevated:<method>` once a session was elevated, else `basic`.
    pub fn auth_strength(&self) -> String {
        crate::elevation::auth_strength(&self.session.session)
    }
}

/// Who a request made with an API key is from.
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    pub user: Arc<User>,
    pub key: Arc<ApiKey>,
}

#[derive(Debug)]
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// The TCP peer.
    pub peer_ip: Option<IpAddr>,
    /// The client as far as trusted proxies let us see (`None` only for non-IP transports).
    pub client_ip: Option<IpAddr>,
    /// Whether the TCP peer is a trusted proxy (its `X-Forwarded-*` headers are kept).
    pub peer_trusted: bool,
    /// Index of the chosen upstream, once routed.
    pub upstream: Option<usize>,
    /// Identity for the upstream headers; None on public routes without a session.
    pub identity: Option<Identity>,
    /// Set instead of `identity` when the request was made with an API key.
    pub api_key: Option<KeyIdentity>,
    /// The request carried a dead session cookie: clear it on the way back.
    pub clear_cookie: bool,
    /// The matched route (its config index) and what was decided for it.
    pub route: Option<usize>,
    pub decision: Option<DecisionKind>,
    /// When the upstream was chosen, and the status of its response once the header arrived.
    pub upstream_started: Option<Instant>,
    pub upstream_status: Option<u16>,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            peer_ip: None,
            client_ip: None,
            peer_trusted: false,
            upstream: None,
            identity: None,
            api_key: None,
            clear_cookie: false,
            route: None,
            decision: None,
            upstream_started: None,
            upstream_status: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
