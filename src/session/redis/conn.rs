//! The connection behind the store: a `ConnectionManager` (standalone) or a cluster async
//! connection, made lazily, plus the few ways the store talks through it (one command, a
//! single-slot pipeline, a batch of single-key commands split per slot, per-master SCAN).

use std::collections::HashMap;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use ::redis::{Client, Cmd, FromRedisValue, Pipeline, RedisResult, Script, Value};

use super::unavailable;
use crate::session::store::StoreError;

/// What to connect to, checked at construction (no I/O).
pub(super) enum Target {
    Standalone(Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

/// A live connection; cheap to clone per call (both are multiplexed handles).
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A node to run a node-local command (SCAN) on; `None` = the only server.
pub(super) type Node = Option<(String, u16)>;

impl Target {
    pub(super) fn standalone(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| unavailable(format!("invalid url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        Ok(Target::Standalone(client, config))
    }

    pub(super) fn cluster(nodes: &[String], timeout: Duration) -> Result<Self, StoreError> {
        if nodes.is_empty() {
            return Err(unavailable("cluster mode needs at least one seed node"));
        }
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(|e| unavailable(format!("invalid cluster nodes: {e}")))?;
        Ok(Target::Cluster(client))
    }

    pub(super) async fn connect(&self) -> Result<Conn, StoreError> {
        match self {
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
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// A pipeline whose commands all touch one key (or no key), so one slot.
    pub(super) async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
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
                pipe.query_async(&mut c.clone()).await
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

fn io_error(msg: impl Into<String>) -> ::redis::RedisError {
    ::redis::RedisError::from(std::io::Error::other(msg.into()))
}
