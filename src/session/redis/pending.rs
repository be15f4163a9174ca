//! [`PendingStore`] for `RedisStore`: one STRING per record, `P:pend:{<kind>:<id>}` (kind and
//! id are checked to be `[A-Za-z0-9_-]`, so they need no escaping), so every command touches one
//! key and runs unchanged on Redis Cluster.
//!
//! - The value is `[version byte 1] ++ expires_at (8 bytes, big-endian) ++ value`: the stored
//!   expiry lets `take_pending` answer "expired at `now`" exactly, whatever the key's TTL.
//! - `put_pending` is one `SET … PX <ttl>`, the TTL computed from `expires_at` with the store's
//!   clock and capped at [`LONGEST_TTL_MS`]; a record whose TTL would be ≤ 0 is not written and
//!   the earlier one is deleted instead (`DEL`).
//! - `take_pending` is one `GETDEL` (Redis ≥ 6.2): of concurrent takes, exactly one gets it.

use async_trait::async_trait;

use super::{unavailable, RedisStore};
use crate::clock::Millis;
use crate::pending::{check_key, check_put, PendingStore};
use crate::session::store::StoreError;

const VERSION: u8 = 1;
/// The longest TTL a record gets, whatever its expiry: a day. Ceremonies last minutes; this only
/// keeps a wrong `expires_at` (or a test clock far ahead) from leaving keys behind for good.
const LONGEST_TTL_MS: Millis = 86_400_000;

fn encode(value: &[u8], expires_at: Millis) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + value.len());
    out.push(VERSION);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The expiry and the value.
fn decode(stored: &[u8]) -> Result<(Millis, &[u8]), StoreError> {
    match stored.split_first() {
        Some((&VERSION, rest)) if rest.len() >= 8 => {
            let (at, value) = rest.split_at(8);
            let at: [u8; 8] = at.try_into().map_err(|_| StoreError::Corrupt("redis: short pending record".into()))?;
            Ok((Millis::from_be_bytes(at), value))
        }
        _ => Err(StoreError::Corrupt("redis: unknown pending record version".into())),
    }
}

impl RedisStore {
    fn pending_key(&self, kind: &str, id: &str) -> String {
        format!("{}:pend:{{{kind}:{id}}}", self.prefix)
    }
}

#[async_trait]
impl PendingStore for RedisStore {
    async fn put_pending(&self, kind: &str, id: &str, value: &[u8], expires_at: Millis) -> Result<(), StoreError> {
        check_put(kind, id, value)?;
        let key = self.pending_key(kind, id);
        let ttl = expires_at.saturating_sub(self.clock.now());
        let mut cmd = ::redis::cmd(if ttl > 0 { "SET" } else { "DEL" });
        cmd.arg(&key);
        if ttl > 0 {
            cmd.arg(encode(value, expires_at)).arg("PX").arg(ttl.min(LONGEST_TTL_MS));
        }
        self.bounded("put_pending", async {
            let conn = self.conn().await?;
            conn.cmd::<()>(&cmd).await.map_err(unavailable)
        })
        .await
    }

    async fn take_pending(&self, kind: &str, id: &str, now: Millis) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(kind, id)?;
        let key = self.pending_key(kind, id);
        let stored: Option<Vec<u8>> = self
            .bounded("take_pending", async {
                let conn = self.conn().await?;
                conn.cmd(::redis::cmd("GETDEL").arg(&key)).await.map_err(unavailable)
            })
            .await?;
        let Some(stored) = stored else { return Ok(None) };
        let (expires_at, value) = decode(&stored)?;
        Ok((now < expires_at).then(|| value.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ::redis::cluster_routing::Slot;
    use ::redis::Commands;

    use super::super::redis_server::{RedisCluster, RedisServer};
    use super::super::tests::{config, raw};
    use super::*;
    use crate::clock::{Clock, ManualClock, SystemClock};
    use crate::config::RedisMode;
    use crate::pending::contract::{run_all, TTL};

    fn standalone(server: &RedisServer, clock: ManualClock) -> RedisStore {
        let cfg = config(RedisMode::Standalone { url: server.url() }, Duration::from_secs(2));
        RedisStore::with_clock(cfg, Duration::from_secs(600), Arc::new(clock)).expect("store")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_store_fulfils_the_pending_contract() {
        let server = RedisServer::start();
        let now = SystemClock.now();
        run_all(&standalone(&server, ManualClock::new(now)), now).await;
        let left: Vec<String> = raw(&server).keys("*").expect("keys");
        assert!(left.is_empty(), "every record was taken, expired or refused: {left:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_store_fulfils_the_pending_contract() {
        let cluster = RedisCluster::start(3);
        let now = SystemClock.now();
        let cfg = config(RedisMode::Cluster { nodes: cluster.nodes() }, Duration::from_secs(5));
        let store =
            RedisStore::with_clock(cfg, Duration::from_secs(600), Arc::new(ManualClock::new(now))).expect("store");
        run_all(&store, now).await;
        // Records spread over the masters, each op on its own slot.
        let ids: Vec<String> = (0..30).map(|i| format!("spread-{i}")).collect();
        let slots: std::collections::HashSet<Slot> =
            ids.iter().map(|id| Slot::for_key(store.pending_key("oauth", id).as_bytes())).collect();
        assert!(slots.len() > 10, "keys spread over slots");
        for id in &ids {
            store.put_pending("oauth", id, id.as_bytes(), now + TTL).await.expect("put");
        }
        for id in &ids {
            assert_eq!(store.take_pending("oauth", id, now).await.expect("take"), Some(id.as_bytes().to_vec()));
        }
    }

    #[tokio::test]
    async fn pending_keys_are_laid_out_as_documented() {
        let server = RedisServer::start();
        let now = SystemClock.now();
        let store = standalone(&server, ManualClock::new(now));
        store.put_pending("passkey", "Ab-_9", b"challenge", now + TTL).await.expect("put");
        let mut con = raw(&server);
        let keys: Vec<String> = con.keys("*").expect("keys");
        assert_eq!(keys, ["dalea:pend:{passkey:Ab-_9}"]);
        let stored: Vec<u8> = con.get(&keys[0]).expect("get");
        assert_eq!(stored, [&[1u8][..], &(now + TTL).to_be_bytes()[..], &b"challenge"[..]].concat());
        let ttl: i64 = con.pttl(&keys[0]).expect("pttl");
        assert!(ttl > TTL - 60_000 && ttl <= TTL, "{ttl}");
        // A far expiry gets at most a day; the record still answers by its own expiry.
        store.put_pending("passkey", "far", b"x", now + 30 * LONGEST_TTL_MS).await.expect("put");
        let ttl: i64 = con.pttl("dalea:pend:{passkey:far}").expect("pttl");
        assert!(ttl > LONGEST_TTL_MS - 60_000 && ttl <= LONGEST_TTL_MS, "{ttl}");
    }

    #[tokio::test]
    async fn the_ttl_follows_the_stores_clock_and_redis_expires_the_key() {
        let server = RedisServer::start();
        let clock = ManualClock::new(SystemClock.now());
        let store = standalone(&server, clock.clone());
        let expires = clock.now() + TTL;
        store.put_pending("oauth", "live", b"v", expires).await.expect("put");
        // The store's clock has moved past the expiry: a put is then a delete.
        clock.advance(Duration::from_millis(TTL as u64));
        store.put_pending("oauth", "live", b"w", expires).await.expect("put");
        let exists: bool = raw(&server).exists("dalea:pend:{oauth:live}").expect("exists");
        assert!(!exists, "expired by the store's clock: not written, earlier record deleted");
        // A short TTL really expires in Redis, whatever `now` the taker passes.
        let short = clock.now() + 50;
        store.put_pending("oauth", "short", b"v", short).await.expect("put");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(store.take_pending("oauth", "short", short - 40).await.expect("take"), None);
    }

    #[tokio::test]
    async fn unreadable_records_are_corrupt_and_an_outage_is_unavailable() {
        let mut server = RedisServer::start();
        let store = standalone(&server, ManualClock::new(SystemClock.now()));
        let mut con = raw(&server);
        for garbage in [&b""[..], b"\x01short", b"\x02\0\0\0\0\0\0\0\0v"] {
            let _: () = con.set("dalea:pend:{oauth:bad}", garbage).expect("set");
            let took = store.take_pending("oauth", "bad", 0).await;
            assert!(matches!(took, Err(StoreError::Corrupt(_))), "{garbage:?}: {took:?}");
            let exists: bool = con.exists("dalea:pend:{oauth:bad}").expect("exists");
            assert!(!exists, "taken all the same: it cannot be taken twice");
        }
        server.kill();
        let now = SystemClock.now();
        assert!(matches!(store.put_pending("oauth", "x", b"v", now + TTL).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.take_pending("oauth", "x", now).await, Err(StoreError::Unavailable(_))));
    }
}
