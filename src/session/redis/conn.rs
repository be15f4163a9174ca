//! The connection behind the store: a `ConnectionManager` (standalone), a cluster async
//! connection, or a [`SentinelConn`] (Sentinel: the current master, re-resolved after
//! connection errors), made lazily, plus the few ways the store talks through it (one command, a
//! single-slot pipeline, a batch of single-key commands split per slot, per-master SCAN).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use ::redis::{Client, Cmd, FromRedisValue, Pipeline, RedisResult, Script, Value};

use super::sentinel::{needs_new_master, SentinelConn, SentinelResolver};
use super::{client_for, is_tls_url, tls_certificates, unavailable};
use crate::session::store::StoreError;

/// What to connect to, checked at construction (no I/O).
pub(super) enum Target {
    Standalone(Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
    /// Built without I/O; it resolves the master on first use and after connection errors.
    Sentinel(Arc<SentinelConn>),
}

/// A live connection; cheap to clone per call (both are multiplexed handles).
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// A node to run a node-local command (SCAN) on; `None` = the only server.
pub(super) type Node = Option<(String, u16)>;

impl Target {
    /// `ca`: PEM CA certificates verifying a `rediss://` server instead of the system roots.
    pub(super) fn standalone(url: &str, timeout: Duration, ca: Option<&[u8]>) -> Result<Self, StoreError> {
        let client: Client = client_for(url, ca).map_err(|e| unavailable(format!("invalid url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        Ok(Target::Standalone(client, config))
    }

    pub(super) fn cluster(nodes: &[String], timeout: Duration, ca: Option<&[u8]>) -> Result<Self, StoreError> {
        if nodes.is_empty() {
            return Err(unavailable("cluster mode needs at least one seed node"));
        }
        let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout);
        // `certs` makes every node connection TLS: only for a cluster reached over rediss://.
        if let Some(ca) = ca.filter(|_| nodes.iter().any(|n| is_tls_url(n))) {
            builder = builder.certs(tls_certificates(ca));
        }
        let client = builder.build().map_err(|e| unavailable(format!("invalid cluster nodes: {e}")))?;
        Ok(Target::Cluster(client))
    }

    pub(super) fn sentinel(
        master: &str,
        sentinels: &[String],
        timeout: Duration,
        ca: Option<&[u8]>,
    ) -> Result<Self, StoreError> {
        let resolver =
            SentinelResolver::new(master, sentinels, ca).map_err(|e| unavailable(format!("invalid sentinels: {e}")))?;
        Ok(Target::Sentinel(Arc::new(SentinelConn::new(resolver, timeout))))
    }

    pub(super) async fn connect(&self) -> Result<Conn, StoreError> {
        match self {
            // Reach the master now, so a first use fails (and is retried) like the other modes.
            Target::Sentinel(conn) => conn.get().await.map(|_| Conn::Sentinel(conn.clone())).map_err(unavailable),
            Target::Standalone(client, config) => ConnectionManager::new_with_config(client.clone(), config.clone())
                .await
                .map(Conn::Single)
                .map_err(unavailable),
            Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster).map_err(unavailable),
        }
    }
}

impl Conn {
    pub(super) async fn cmd<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => once_more_if_dropped(|| async { cmd.query_async(&mut c.clone()).await }).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Sentinel(s) => s.run(|mut c| async move { cmd.query_async(&mut c).await }).await,
        }
    }

    /// A pipeline whose commands all touch one key (or no key), so one slot.
    pub(super) async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        match self {
            Conn::Single(c) => once_more_if_dropped(|| async { pipe.query_async(&mut c.clone()).await }).await,
            Conn::Cluster(c) => cluster_pipe(c, pipe).await,
            Conn::Sentinel(s) => s.run(|mut c| async move { pipe.query_async(&mut c).await }).await,
        }
    }

    /// Single-key commands sent in one pipeline (standalone) or one pipeline per slot, all at
    /// once (cluster). Per-command errors come back in place; a connection error fails all.
    pub(super) async fn batch(&self, cmds: Vec<(String, Cmd)>) -> RedisResult<Vec<RedisResult<Value>>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Conn::Single(c) => {
                let mut pipe = ::redis::pipe();
                for (_, cmd) in cmds {
                    pipe.add_command(cmd);
                }
                pipe.ignore_errors();
                let pipe = &pipe;
                once_more_if_dropped(|| async { pipe.query_async(&mut c.clone()).await }).await
            }
            Conn::Sentinel(s) => {
                let mut pipe = ::redis::pipe();
                for (_, cmd) in cmds {
                    pipe.add_command(cmd);
                }
                pipe.ignore_errors();
                let pipe = &pipe;
                s.run(|mut c| async move {
                    let replies: Vec<RedisResult<Value>> = pipe.query_async(&mut c).await?;
                    // A demoted master answers each write READONLY: fail the whole batch so
                    // the connection is replaced and the batch retried on the new master.
                    if let Some(Err(e)) = replies.iter().find(|r| matches!(r, Err(e) if needs_new_master(e))) {
                        return Err(e.clone());
                    }
                    Ok(replies)
                })
                .await
            }
            Conn::Cluster(c) => {
                let total = cmds.len();
                let mut groups: HashMap<Slot, (Vec<usize>, Pipeline)> = HashMap::new();
                for (i, (key, cmd)) in cmds.into_iter().enumerate() {
                    let (idx, pipe) = groups.entry(Slot::for_key(key.as_bytes())).or_insert_with(|| {
                        let mut p = ::redis::pipe();
                        p.ignore_errors();
                        (Vec::new(), p)
                    });
                    idx.push(i);
                    pipe.add_command(cmd);
                }
                let mut tasks = tokio::task::JoinSet::new();
                for (_, (idx, pipe)) in groups {
                    let mut conn = c.clone();
                    tasks.spawn(async move {
                        let r: RedisResult<Vec<RedisResult<Value>>> = pipe.query_async(&mut conn).await;
                        (idx, r)
                    });
                }
                let mut out: Vec<Option<RedisResult<Value>>> = (0..total).map(|_| None).collect();
                while let Some(joined) = tasks.join_next().await {
                    let (idx, results) = joined.map_err(|e| io_error(format!("batch task failed: {e}")))?;
                    for (i, r) in idx.into_iter().zip(results?) {
                        out[i] = Some(r);
                    }
                }
                Ok(out.into_iter().map(|r| r.unwrap_or_else(|| Err(io_error("missing reply")))).collect())
            }
        }
    }

    /// Loads a script on every node (cluster: SCRIPT LOAD is routed to all nodes).
    pub(super) async fn load_script(&self, script: &Script) -> RedisResult<()> {
        match self {
            Conn::Single(c) => script.load_async(&mut c.clone()).await.map(drop),
            Conn::Cluster(c) => script.load_async(&mut c.clone()).await.map(drop),
            Conn::Sentinel(s) => s.run(|mut c| async move { script.load_async(&mut c).await.map(drop) }).await,
        }
    }

    /// The nodes holding data: the server itself, or every cluster master.
    pub(super) async fn data_nodes(&self) -> RedisResult<Vec<Node>> {
        let Conn::Cluster(c) = self else { return Ok(vec![None]) };
        let slots: Vec<Vec<Value>> = ::redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c.clone()).await?;
        let mut masters: Vec<Node> = Vec::new();
        for range in slots {
            let Some(Value::Array(master)) = range.into_iter().nth(2) else { continue };
            let mut it = master.into_iter();
            let (Some(host), Some(port)) = (it.next(), it.next()) else { continue };
            let host: String = ::redis::from_redis_value(host)?;
            let port: u16 = ::redis::from_redis_value(port)?;
            let node = Some((host, port));
            if !masters.contains(&node) {
                masters.push(node);
            }
        }
        Ok(masters)
    }

    /// A command on one specific node (node-local commands such as SCAN).
    pub(super) async fn on_node<T: FromRedisValue>(&self, node: &Node, cmd: Cmd) -> RedisResult<T> {
        match (self, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                let route =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                let v = c.clone().route_command(cmd, route).await?;
                Ok(::redis::from_redis_value(v)?)
            }
            _ => self.cmd(&cmd).await,
        }
    }
}

/// A standalone connection only notices it was dropped (Redis restarted, an idle connection
/// cut) when it is next used; the manager reconnects then, so one more try on the fresh
/// connection answers instead of a needless 503. Every store operation is safe to repeat.
async fn once_more_if_dropped<T, F, Fut>(mut call: F) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    match call().await {
        Err(e) if e.is_connection_dropped() || e.is_io_error() => call().await,
        other => other,
    }
}

/// Whether Redis Cluster answered "this slot is served elsewhere" (MOVED, or ASK while the
/// slot migrates), for a command or for any command of a transaction; such a command was not
/// run, and a transaction holding one was aborted whole.
fn is_redirect(e: &::redis::RedisError) -> bool {
    use ::redis::{ErrorKind, ServerErrorKind};
    let redirect = |k: Option<ServerErrorKind>| matches!(k, Some(ServerErrorKind::Moved | ServerErrorKind::Ask));
    matches!(e.kind(), ErrorKind::Server(k) if redirect(Some(k)))
        || e.clone().into_server_errors().is_some_and(|errs| errs.iter().any(|(_, se)| redirect(se.kind())))
}

/// A single-slot pipeline on the cluster. redis-rs 1.8 follows MOVED/ASK for single commands
/// and plain pipelines, but not for a MULTI/EXEC transaction: a redirect there aborts it
/// (EXECABORT, nothing ran) and comes back as a "Transaction aborted" error, with the slot map
/// left stale, so `insert` and `remove` would fail for every key whose slot moved until some
/// other call refreshed the map. Try again instead: first a harmless `EXISTS` on the
/// pipeline's key, which redis-rs routes by following the redirect (refreshing its slot map on
/// MOVED), then the pipeline.
/// While the slot is still migrating (ASK) this repeats, briefly pausing, until it has moved;
/// the caller's timeout bounds the whole.
async fn cluster_pipe<T: FromRedisValue>(c: &ClusterConnection, pipe: &Pipeline) -> RedisResult<T> {
    let mut conn = c.clone();
    let key = pipe.cmd_iter().find_map(|cmd| cmd.args_iter().nth(1)).and_then(|arg| match arg {
        ::redis::Arg::Simple(k) => Some(k.to_vec()),
        _ => None,
    });
    let mut pause = Duration::from_millis(2);
    loop {
        let result: RedisResult<Value> = pipe.query_async(&mut conn).await;
        match result {
            Err(e) if is_redirect(&e) => {
                let Some(key) = &key else { return Err(e) };
                let _: RedisResult<Value> = ::redis::cmd("EXISTS").arg(key).query_async(&mut conn).await;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return ::redis::from_redis_value(other?).map_err(Into::into),
        }
    }
}

fn io_error(msg: impl Into<String>) -> ::redis::RedisError {
    ::redis::RedisError::from(std::io::Error::other(msg.into()))
}
