//! Sentinel mode: finding the current master through the sentinels, and a connection to it
//! that follows failovers.
//!
//! redis-rs 1.8 resolves a master through sentinels (`SentinelClient::async_get_client`, which
//! also checks that the node it names answers `ROLE` as a master) but has no auto-reconnecting
//! connection for it: `SentinelClient::get_async_connection` returns a plain
//! `MultiplexedConnection` that stays bound to the old master's address forever. So
//! [`SentinelConn`] keeps one multiplexed connection to the master it last resolved and drops it
//! on the first connection-level error (I/O, dropped connection, `READONLY` from a demoted
//! master, `MASTERDOWN`); the next call asks the sentinels again. A call that met such an error
//! is retried once on the freshly resolved master (every store operation is idempotent).
//!
//! TLS: with `rediss://` sentinel URLs, the sentinels and the master are reached over TLS
//! (verified against the system roots, or the given CA certificates).
//!
//! Credentials: the sentinel URLs' username/password/db are used for the master. Sentinels are
//! asked with the URL's credentials first; if a sentinel refuses them because it has no
//! password set, they are asked again without (sentinels commonly run without a password while
//! the data nodes require one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
    RedisResult, ServerErrorKind, TlsCertificates, TlsMode,
};
use tokio::sync::Mutex;

/// Resolves the current master of `master` through the sentinels (no I/O until asked).
pub struct SentinelResolver {
    /// Sentinels asked with the URL's credentials.
    with_auth: SentinelClient,
    /// The same sentinels without credentials (only when the URLs carry some).
    without_auth: Option<SentinelClient>,
    /// Set once a sentinel refused the credentials: ask without them first from then on.
    prefer_without: bool,
}

impl SentinelResolver {
    /// Checks the URLs (`redis://[user:pass@]host:port`); at least one is required. `ca`: PEM CA
    /// certificates that verify `rediss://` sentinels and the master instead of the system roots.
    pub fn new(master: &str, sentinels: &[String], ca: Option<&[u8]>) -> RedisResult<SentinelResolver> {
        let infos: Vec<ConnectionInfo> =
            sentinels.iter().map(|u| u.as_str().into_connection_info()).collect::<RedisResult<_>>()?;
        let Some(first) = infos.first() else {
            return Err((ErrorKind::EmptySentinelList, "at least one sentinel is required").into());
        };
        // The data nodes get the URL's credentials and db; sentinels only know db 0.
        let node_redis = first.redis_settings().clone();
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(node_redis.clone());
        let mut node_tls = None;
        if let ConnectionAddr::TcpTls { insecure, .. } = first.addr() {
            let mode = if *insecure { TlsMode::Insecure } else { TlsMode::Secure };
            node = node.set_tls_mode(mode);
            node_tls = Some(mode);
        }
        let certs = ca.map(super::tls_certificates);
        let at_db0 = |i: &ConnectionInfo| i.clone().set_redis_settings(i.redis_settings().clone().set_db(0));
        let with: Vec<ConnectionInfo> = infos.iter().map(at_db0).collect();
        let has_auth = infos.iter().any(|i| i.redis_settings().password().is_some());
        let build = |list: Vec<ConnectionInfo>| match &certs {
            None => SentinelClient::build(list, master, Some(node.clone()), SentinelServerType::Master),
            Some(certs) => build_with_ca(list, master, &node_redis, node_tls, certs),
        };
        let without_auth = if has_auth {
            let bare: Vec<ConnectionInfo> = infos
                .iter()
                .map(|i| {
                    let r = i.redis_settings();
                    i.clone().set_redis_settings(RedisConnectionInfo::default().set_protocol(r.protocol()))
                })
                .collect();
            Some(build(bare)?)
        } else {
            None
        };
        Ok(SentinelResolver { with_auth: build(with)?, without_auth, prefer_without: false })
    }

    /// A client for the current master, asking the sentinels now (never a cached address).
    pub async fn master(&mut self) -> RedisResult<Client> {
        let Some(without) = self.without_auth.as_mut() else {
            return self.with_auth.async_get_client().await;
        };
        let (first, second) =
            if self.prefer_without { (without, &mut self.with_auth) } else { (&mut self.with_auth, without) };
        match first.async_get_client().await {
            Err(e) if e.kind() == ErrorKind::AuthenticationFailed => {
                let r = second.async_get_client().await;
                if r.is_ok() {
                    self.prefer_without = !self.prefer_without;
                }
                r
            }
            r => r,
        }
    }
}

/// A sentinel client whose TLS connections (to the sentinels and to the master they name) are
/// verified by `certs` instead of the system roots. redis-rs takes certificates for the data
/// nodes only through its builder; the sentinels' own addresses carry them ready-made.
fn build_with_ca(
    list: Vec<ConnectionInfo>,
    master: &str,
    node_redis: &RedisConnectionInfo,
    node_tls: Option<TlsMode>,
    certs: &TlsCertificates,
) -> RedisResult<SentinelClient> {
    let sentinel_redis = list.first().map(|i| i.redis_settings().clone()).unwrap_or_default();
    let addrs = list
        .into_iter()
        .map(|info| match info.addr() {
            ConnectionAddr::TcpTls { .. } => {
                Ok(Client::build_with_tls(info, certs.clone())?.get_connection_info().addr().clone())
            }
            _ => Ok(info.addr().clone()),
        })
        .collect::<RedisResult<Vec<ConnectionAddr>>>()?;
    let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_db(node_redis.db())
        .set_client_to_redis_protocol(node_redis.protocol())
        .set_client_to_sentinel_protocol(sentinel_redis.protocol());
    if let Some(mode) = node_tls {
        b = b.set_client_to_redis_tls_mode(mode).set_client_to_redis_certificates(certs.clone());
    }
    if let Some(user) = node_redis.username() {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(pass) = node_redis.password() {
        b = b.set_client_to_redis_password(pass);
    }
    if let Some(user) = sentinel_redis.username() {
        b = b.set_client_to_sentinel_username(user);
    }
    if let Some(pass) = sentinel_redis.password() {
        b = b.set_client_to_sentinel_password(pass);
    }
    b.build()
}

/// A multiplexed connection to the current master that re-resolves it after connection errors.
pub(super) struct SentinelConn {
    resolver: Mutex<SentinelResolver>,
    /// The connection in use and its generation (so a stale failure cannot drop a newer one).
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generations: AtomicU64,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    pub(super) fn new(resolver: SentinelResolver, timeout: Duration) -> SentinelConn {
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        SentinelConn {
            resolver: Mutex::new(resolver),
            current: std::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
            config,
        }
    }

    /// The current connection, resolving the master and connecting when there is none. One
    /// resolution at a time; callers that waited for it reuse its result.
    pub(super) async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut resolver = self.resolver.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let client = resolver.master().await?;
        let conn = client.get_multiplexed_async_connection_with_config(&self.config).await?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets connection `generation` (if still current): the next call asks the sentinels.
    fn invalidate(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(&*current, Some((g, _)) if *g == generation) {
            *current = None;
        }
    }

    /// Runs `f` on the current master; after a connection-level error, drops the connection
    /// and runs it once more on a freshly resolved master.
    pub(super) async fn run<T, F, Fut>(&self, f: F) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.get().await?;
        match f(conn).await {
            Err(e) if needs_new_master(&e) => {
                tracing::warn!(error = %e, "redis master connection failed; asking the sentinels again");
                self.invalidate(generation);
                let (generation, conn) = self.get().await?;
                let r = f(conn).await;
                if matches!(&r, Err(e) if needs_new_master(e)) {
                    self.invalidate(generation);
                }
                r
            }
            r => r,
        }
    }
}

/// Errors after which the connection cannot be trusted to reach the master any more.
pub(super) fn needs_new_master(e: &::redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown))
}
