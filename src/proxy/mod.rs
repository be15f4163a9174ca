//! The request flow, top to bottom. Each pingora phase is a few calls into the modules beside
//! this one:
//!
//! ```text
//! request_filter           1. client info: peer + trusted X-Forwarded-For → client IP
//!                          2. /.dalea/*  → built-in pages and JSON API, answered here
//!                          3. route lookup → access level (unknown → 404, dot segments → 400)
//!                          4. authenticate → Decision (API key, else cookie → token hash →
//!                             cache → store; elevated routes check the re-authentication age)
//!                          5. Allow → record activity (memory only) and continue;
//!                             otherwise redirect to sign-in or elevation / 401 / 503
//! upstream_peer            the route's upstream (resolved at start-up)
//! upstream_request_filter  strip client X-Dalea-* and our cookies; add identity + X-Forwarded-*
//! response_filter          drop an upstream Set-Cookie for our cookie; clear a dead cookie
//! logging                  upstream metrics; one decision log line per request
//! ```
//!
//! Metrics: the decision per route and the auth-check time are recorded in `request_filter`,
//! upstream status class and latency in `logging` (see `crate::metrics`).

pub mod authenticate;
pub mod ctx;
pub mod decision_log;
pub mod respond;
pub mod routes;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::error::GatewayError;
use crate::metrics::DecisionKind;
use crate::pages;
use crate::state::AppState;
use authenticate::Decision;
use ctx::RequestCtx;
use respond::Reply;

/// How long an idle keep-alive client connection is kept open.
const KEEPALIVE_SECS: u64 = 75;

/// The gateway's [`ProxyHttp`] implementation.
pub struct Gateway {
    pub state: Arc<AppState>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        // Bound idle keep-alive (pingora's default is forever), but never turn it back on where
        // pingora turned it off (HTTP/1.0 without keep-alive, Content-Length + Transfer-Encoding).
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(KEEPALIVE_SECS));
        }
        self.resolve_client(session, ctx);

        if pages::is_builtin(session.req_header().uri.path()) {
            if routes::normalise(session.req_header().uri.path()).is_err() {
                self.unrouted(ctx);
                return self.refuse(session, &bad_path()).await;
            }
            // Boxed: the pages' state machines are large, and every proxied request's future
            // would otherwise carry (and move) their size.
            return Box::pin(pages::handle(&self.state, session, ctx)).await;
        }

        let req = session.req_header();
        let host = routes::request_host(req);
        if host.is_none() && req.version == http::Version::HTTP_11 {
            self.unrouted(ctx);
            let err = GatewayError::BadRequest("HTTP/1.1 requests need a Host header.".into());
            return self.refuse(session, &err).await;
        }
        // Route on the target exactly as received (and as the upstream will receive it), not on
        // the parser's idea of it: "GET private/x" has no path of its own.
        let target = String::from_utf8_lossy(req.raw_path());
        let path = target.split('?').next().unwrap_or_default();
        let route = match self.state.routes.lookup(host.as_deref(), &req.method, path) {
            Ok(Some(route)) => route,
            Ok(None) => {
                self.unrouted(ctx);
                return self.refuse(session, &GatewayError::NotFound).await;
            }
            Err(routes::BadPath) => {
                self.unrouted(ctx);
                return self.refuse(session, &bad_path()).await;
            }
        };

        let started = Instant::now();
        let decision = authenticate::decide(&self.state, session.req_header(), ctx.client_ip, route).await;
        self.state.metrics.auth_check.observe(started.elapsed().as_secs_f64());
        let kind = decision.kind();
        if let Some(m) = self.state.metrics.route(route.index) {
            m.decided(kind);
        }
        (ctx.route, ctx.decision) = (Some(route.index), Some(kind));

        match decision {
            Decision::Allow { identity, clear_cookie } => {
                ctx.identity = identity;
                ctx.clear_cookie = clear_cookie;
                ctx.upstream = Some(route.upstream);
                Ok(false)
            }
            Decision::AllowKey(key) => {
                ctx.api_key = Some(key);
                ctx.upstream = Some(route.upstream);
                Ok(false)
            }
            Decision::SignInRequired { clear_cookie } => self.sign_in_required(session, clear_cookie).await,
            Decision::ElevationRequired => self.elevation_required(session).await,
            Decision::Deny(err) => self.refuse(session, &err).await,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Box<HttpPeer>> {
        ctx.upstream_started = Some(Instant::now());
        let upstream = ctx
            .upstream
            .and_then(|i| self.state.routes.upstreams.get(i))
            .ok_or_else(|| pingora::Error::new_str("request reached upstream_peer without a route"))?;
        let mut peer = HttpPeer::new(upstream.addr, false, String::new());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.read_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        upstream::rewrite_request(req, ctx, &self.state.cookies)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &pingora::Error, _ctx: &mut RequestCtx) -> FailToProxy {
        self.answer_failure(session, e).await
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        if let (Some(m), Some(at)) = (ctx.route.and_then(|i| self.state.metrics.route(i)), ctx.upstream_started) {
            m.upstream_answered(resp.status.as_u16(), at.elapsed());
        }
        upstream::rewrite_response(resp, ctx, &self.state.cookies)
    }

    async fn logging(&self, session: &mut Session, error: Option<&pingora::Error>, ctx: &mut RequestCtx) {
        let route = ctx.route.and_then(|i| self.state.metrics.route(i));
        if let (Some(m), Some(_), None) = (route, ctx.upstream_started, ctx.upstream_status) {
            m.upstream_failed();
        }
        decision_log::log(&self.state, session, ctx, error);
    }
}

impl Gateway {
    /// A request no route takes (404, 400): counted and logged as refused.
    fn unrouted(&self, ctx: &mut RequestCtx) {
        self.state.metrics.unrouted();
        ctx.decision = Some(DecisionKind::Denied);
    }

    /// A failed proxy attempt, answered like every other gateway error (JSON or a page).
    async fn answer_failure(&self, session: &mut Session, e: &pingora::Error) -> FailToProxy {
        let Some(err) = GatewayError::from_proxy_failure(e) else {
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        };
        tracing::warn!(error = %e, status = err.status(), "proxying failed");
        if session.response_written().is_none() {
            session.set_keepalive(None);
            if let Err(write) = self.refuse(session, &err).await {
                tracing::debug!(error = %write, "could not send the error response");
            }
        }
        FailToProxy { error_code: err.status(), can_reuse_downstream: false }
    }

    fn resolve_client(&self, session: &Session, ctx: &mut RequestCtx) {
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let xff = session.req_header().headers.get_all("x-forwarded-for");
        ctx.peer_ip = peer;
        ctx.peer_trusted = peer.is_some_and(|p| self.state.client_info.is_trusted(p));
        ctx.client_ip = self.state.client_info.client_ip(peer, xff.iter().map(|v| v.as_bytes()));
    }

    /// No live session: browsers are sent to sign in and come back; everyone else gets 401.
    async fn sign_in_required(&self, session: &mut Session, clear_cookie: bool) -> pingora::Result<bool> {
        let req = session.req_header();
        let target = pages::signin_url(req.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/"));
        let reply = if authenticate::is_browser_navigation(req) {
            Reply::see_other(&target)
        } else {
            Reply::error(&GatewayError::SignInRequired, None, Some(("signin_url", &target)))
        };
        let reply = if clear_cookie { reply.header("set-cookie", self.state.cookies.clear_session()) } else { reply };
        reply.send(session).await
    }

    /// A sensitive route without a recent re-authentication: browsers navigating go to the
    /// elevation page and come back; everything else (a POST body included) gets the 401
    /// step-up challenge and is never redirected, so nothing is silently lost.
    async fn elevation_required(&self, session: &mut Session) -> pingora::Result<bool> {
        let req = session.req_header();
        let target = pages::elevate_url(req.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/"));
        let reply = if authenticate::is_browser_navigation(req) {
            Reply::see_other(&target)
        } else {
            let err = GatewayError::ElevationRequired { max_age: self.state.config.elevation.max_age.as_secs() };
            Reply::error(&err, None, Some(("elevate_url", &target)))
        };
        reply.send(session).await
    }

    async fn refuse(&self, session: &mut Session, err: &GatewayError) -> pingora::Result<bool> {
        let page = authenticate::accepts_html(session.req_header()).then(|| self.state.templates.error_page(err));
        Reply::error(err, page, None).send(session).await
    }
}

/// A path refused instead of interpreted ([`routes::normalise`], [`routes::RouteTable::lookup`]).
fn bad_path() -> GatewayError {
    GatewayError::BadRequest(
        "The path is not allowed: it has '.' or '..' segments, encoded slashes or control characters, \
         or spells the gateway's own /.dalea/ addresses another way."
            .into(),
    )
}
