//! The expiry sweep (`remove_expired`): a backstop to key TTLs. SCANs `P:s:*` on every data
//! node page by page (each page its own bounded round trips, so a large keyspace does not trip
//! the per-call timeout), judges each session with `Session::liveness`, and deletes the dead
//! ones with a script that re-checks `la`, so activity that arrived meanwhile wins.

use ::redis::{Cmd, Value};

use super::conn::{Conn, Node};
use super::fields::{decode_record, LA, REC};
use super::scripts::{evalsha, DELETE_IF_IDLE};
use super::store_impl::run_scripts;
use super::{unavailable, RedisStore};
use crate::clock::Millis;
use crate::session::store::StoreError;
use crate::session::Liveness;

const PAGE: usize = 500;

/// A session judged expired: its key, the `la` seen, and its index entry.
struct Dead {
    key: String,
    la: String,
    index_key: String,
    public_id: String,
}

impl RedisStore {
    pub(super) async fn sweep(&self, now: Millis, idle_timeout: Millis) -> Result<usize, StoreError> {
        let conn = self.bounded("sweep", self.conn()).await?;
        let nodes = self.bounded("sweep", async { conn.data_nodes().await.map_err(unavailable) }).await?;
        let pattern = format!("{}:s:*", escape_glob(&self.prefix));
        let mut removed = 0;
        for node in &nodes {
            let mut cursor = String::from("0");
            loop {
                let page = self.bounded("sweep", self.sweep_page(conn, node, &cursor, &pattern, now, idle_timeout));
                let (next, n) = page.await?;
                removed += n;
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    async fn sweep_page(
        &self,
        conn: &Conn,
        node: &Node,
        cursor: &str,
        pattern: &str,
        now: Millis,
        idle_timeout: Millis,
    ) -> Result<(String, usize), StoreError> {
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(PAGE);
        let (next, keys): (String, Vec<String>) = conn.on_node(node, scan).await.map_err(unavailable)?;
        let reads: Vec<(String, Cmd)> =
            keys.iter().map(|k| (k.clone(), ::redis::cmd("HMGET").arg(k).arg(REC).arg(LA).to_owned())).collect();
        let replies = conn.batch(reads).await.map_err(unavailable)?;
        let mut dead = Vec::new();
        for (key, reply) in keys.into_iter().zip(replies) {
            let (rec, la): (Option<Vec<u8>>, Option<String>) =
                reply.and_then(|v: Value| Ok(::redis::from_redis_value(v)?)).map_err(unavailable)?;
            // A record we cannot read is left alone (its TTL still ends it), as in embedded.
            let Some(Ok(s)) = rec.as_deref().map(decode_record) else { continue };
            let last = la.as_deref().and_then(|v| v.parse::<Millis>().ok()).unwrap_or(0).max(s.last_active_at);
            if s.liveness(last, now, idle_timeout) != Liveness::Alive {
                let index_key = self.index_key(&s.user_id);
                dead.push(Dead { key, la: la.unwrap_or_default(), index_key, public_id: s.id.as_str().to_string() });
            }
        }
        if dead.is_empty() {
            return Ok((next, 0));
        }
        let deletes = dead.iter().map(|d| (d.key.clone(), evalsha(&DELETE_IF_IDLE, &d.key, &[&d.la]))).collect();
        let results = run_scripts(conn, &DELETE_IF_IDLE, deletes).await?;
        let mut unindex = Vec::new();
        for (d, r) in dead.into_iter().zip(results) {
            let n: i64 = r.and_then(|v| Ok(::redis::from_redis_value(v)?)).map_err(unavailable)?;
            if n > 0 {
                unindex
                    .push((d.index_key.clone(), ::redis::cmd("HDEL").arg(&d.index_key).arg(&d.public_id).to_owned()));
            }
        }
        let count = unindex.len();
        for r in conn.batch(unindex).await.map_err(unavailable)? {
            r.map_err(unavailable)?;
        }
        Ok((next, count))
    }
}

/// Escapes glob metacharacters so the prefix matches literally in SCAN MATCH.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
