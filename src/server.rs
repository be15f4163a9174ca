//! Assembles the pingora server from a [`Config`]: the proxy listener, the admin listener
//! (`/healthz`, `/readyz`), the whoami demo upstream and the background services (activity
//! flusher, expiry sweeper, sign-in notice webhook). `main` and the integration tests both
//! start the gateway here.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::auth::reload::UsersReloader;
use crate::clock::Clock;
use crate::config::{Config, RedisMode, UpstreamTarget};
use crate::proxy::Gateway;
use crate::session::activity::ActivityFlusher;
use crate::session::revocation::{RevocationListener, SubscribeVia};
use crate::session::sweeper::ExpirySweeper;
use crate::session::Token;
use crate::state::{AppState, Stores};
use crate::whoami::Whoami;

/// How often the users file's modification time is checked.
const USERS_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// A built, not yet running gateway.
pub struct Built {
    pub server: Server,
    pub state: Arc<AppState>,
}

/// Builds every service. Fails (with a message naming the problem) if the store, users file,
/// GeoIP database or templates cannot be loaded.
pub fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Built> {
    let stores = crate::state::open_store(&config)?;
    build_with_store(config, clock, stores)
}

/// [`build`] with the session store given.
pub fn build_with_store(config: Config, clock: Arc<dyn Clock>, stores: Stores) -> anyhow::Result<Built> {
    let whoami =
        if config.upstreams.iter().any(|u| u.target == UpstreamTarget::Whoami) { Some(Whoami::bind()?) } else { None };
    let state = AppState::with_store(config, clock.clone(), whoami.as_ref().map(|w| w.addr), stores)?;
    let cfg = &state.config;
    // pingora retries a busy port forever while reporting nothing; fail at start-up instead.
    for (key, addr) in [("server.listen", cfg.server.listen), ("server.admin_listen", cfg.server.admin_listen)] {
        std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("{key}: cannot listen on {addr}: {e}"))?;
    }

    let conf = ServerConf {
        threads: cfg.server.threads,
        grace_period_seconds: Some(cfg.server.shutdown_grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = http_proxy_service(&server.configuration, Gateway { state: state.clone() });
    proxy.add_tcp(&cfg.server.listen.to_string());
    server.add_service(proxy);

    let mut admin = Service::new("admin".to_string(), AdminApp { state: state.clone() });
    admin.add_tcp(&cfg.server.admin_listen.to_string());
    server.add_service(admin);

    if let Some(redis) = &cfg.store.redis {
        // Until the first subscription, revocations from other replicas could be missed.
        state.sessions.cache.set_trusted(false);
        let via = match &redis.mode {
            RedisMode::Standalone { url } => SubscribeVia::Servers(vec![url.clone()]),
            RedisMode::Cluster { nodes } => SubscribeVia::Servers(nodes.clone()),
            // The current master, asked of the sentinels on every (re)subscription.
            RedisMode::Sentinel { master, sentinels } => {
                SubscribeVia::Sentinel { master: master.clone(), sentinels: sentinels.clone() }
            }
        };
        server.add_service(background_service(
            "revocations",
            RevocationListener {
                cache: state.sessions.cache.clone(),
                activity: state.sessions.activity.clone(),
                key_cache: state.api_keys.cache.clone(),
                key_activity: state.api_keys.activity.clone(),
                via,
                channel: format!("{}:revocations", redis.key_prefix),
                timeout: redis.timeout,
                ca: crate::session::redis::read_ca(redis)?,
                notices: state.notices.clone().unwrap_or_default(),
                metrics: state.metrics.clone(),
            },
        ));
    }
    if let Some(whoami) = whoami {
        server.add_service(background_service("whoami", whoami));
    }
    // The sign-in notice webhook: sign-ins only queue notices, this delivers them.
    if let Some(notifier) = state.vigilance.notifier() {
        server.add_service(background_service("notify", notifier.clone()));
    }
    server.add_service(background_service(
        "activity",
        ActivityFlusher {
            lanes: state.activity_lanes(),
            interval: cfg.session.activity_flush_interval,
            grace_period: cfg.server.shutdown_grace_period,
        },
    ));
    server.add_service(background_service(
        "users",
        UsersReloader {
            users: state.users.clone(),
            path: cfg.users.file.clone(),
            interval: USERS_CHECK_INTERVAL,
            on_removed: state.clone(),
        },
    ));
    // With Redis, key TTLs expire sessions; sweeping would mean scanning every key.
    if cfg.store.redis.is_none() {
        let sweeper = ExpirySweeper {
            store: state.sessions.store.clone(),
            cache: state.sessions.cache.clone(),
            clock,
            idle_timeout: state.sessions.idle_timeout,
            interval: cfg.session.sweep_interval,
        };
        server.add_service(background_service("sweeper", sweeper));
    }
    Ok(Built { server, state })
}

/// Writes activity still in memory once the server has stopped (all requests are finished by
/// then, so nothing recorded during the grace period is lost).
pub fn final_flush(state: &AppState) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::warn!(error = %e, "final activity flush impossible"),
    };
    for lane in state.activity_lanes() {
        match runtime.block_on(lane.flush()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(what = lane.sink.what(), written = n, "final activity flush"),
            Err(e) => tracing::warn!(error = %e, what = lane.sink.what(), "final activity flush failed"),
        }
    }
}

/// The admin listener: `/healthz` (the process answers), `/readyz` (the store answers and the
/// proxy listener accepts connections) and `/metrics` (Prometheus).
struct AdminApp {
    state: Arc<AppState>,
}

/// How long `/readyz` waits for each of its checks.
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    respond(status, "text/plain; charset=utf-8", body.as_bytes().to_vec())
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => text(200, "ok\n"),
            "/readyz" => self.readiness().await,
            "/metrics" => {
                let body = self.state.render_metrics().into_bytes();
                respond(200, "text/plain; version=0.0.4; charset=utf-8", body)
            }
            _ => text(404, "not found\n"),
        }
    }
}

impl AdminApp {
    /// Ready when a lookup of a random token goes through the store end to end and the proxy
    /// listener accepts a connection. The body names each check, so a 503 says which failed.
    async fn readiness(&self) -> Response<Vec<u8>> {
        let store = within_check_timeout(self.state.sessions.store.get(&Token::generate().hash())).await;
        let listen = loopback_for(self.state.config.server.listen);
        let listener = within_check_timeout(tokio::net::TcpStream::connect(listen)).await;
        let line = |name: &str, r: &Result<(), String>| match r {
            Ok(()) => format!("{name}: ok\n"),
            Err(e) => format!("{name}: unavailable ({e})\n"),
        };
        let body = line("store", &store) + &line("proxy listener", &listener);
        if store.is_ok() && listener.is_ok() {
            text(200, &format!("ready\n{body}"))
        } else {
            tracing::warn!(store = ?store.err(), listener = ?listener.err(), "readiness check failed");
            text(503, &format!("not ready\n{body}"))
        }
    }
}

/// A readiness check's outcome, failed if it takes longer than [`READY_CHECK_TIMEOUT`].
async fn within_check_timeout<T, E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(), String> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

/// Where to reach a listener bound to `addr` from this host (a wildcard address → loopback).
fn loopback_for(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port())
}
