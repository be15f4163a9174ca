//! [`ApiKeyStore`] for `RedisStore`: one HASH per key, tagged with its hash, and one index HASH
//! per person, tagged with their escaped id (see the key layout in the module header). No
//! session key is touched by a key operation, nor a key by a session operation.
//!
//! - The record (`rec`) is written once, at insert; last use lives in its own fields (`lu`,
//!   `ip`), like sessions' `la`/`ip`, written by a small Lua script per key (pipelined, one
//!   round trip per node) that does nothing when the key is gone and never moves `lu` back.
//!   [`key_by_hash`](ApiKeyStore::key_by_hash) overlays them on the record.
//! - A key without `expires_at` has no TTL. A key with one gets a TTL ending 30 days after it
//!   expires, so it still shows (as expired) for a while and then goes away on its own; a key
//!   already 30 days past expiry is not written at all. Index entries whose key has gone are
//!   dropped by `keys_for_user`.
//! - `remove_key` finds the hash in the person's index, deletes the key hash, then (one round
//!   trip) deletes the index entry and publishes `k:<hex of key hash>` on the revocation
//!   channel, so every replica drops the key from its cache. Session notices are the bare hex,
//!   so the prefix keeps the two apart.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use ::redis::{Cmd, Script};
use async_trait::async_trait;

use super::account::{corrupt, number, tag};
use super::fields::{IP, REC};
use super::scripts::evalsha;
use super::store_impl::{first_ok, run_scripts};
use super::{hex, unavailable, RedisStore};
use crate::api_keys::{ApiKey, ApiKeyStore};
use crate::clock::Millis;
use crate::session::embedded_account::{decode, encode};
use crate::session::store::{Activity, StoreError};
use crate::session::TokenHash;

/// Last-used millis (only ever moves forward).
const LU: &str = "lu";
/// How long a key's hash outlives its expiry, so lists still show it as expired: 30 days.
const EXPIRED_KEPT_MS: Millis = 30 * 86_400_000;
/// Longer TTLs (about a century) are not set, which also keeps them within what PEXPIRE takes.
const LONGEST_TTL_MS: Millis = 100 * 365 * 86_400_000;

/// Records one use. KEYS[1] = key hash; ARGV = at, ip ("" = keep). Does nothing when the key
/// is gone (never resurrects) or `at` is not newer than `lu`. Returns 1 when it wrote.
static KEY_USE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local lu = tonumber(redis.call('HGET', KEYS[1], 'lu') or '0') or 0
if tonumber(ARGV[1]) <= lu then return 0 end
redis.call('HSET', KEYS[1], 'lu', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'ip', ARGV[2]) end
return 1
"#,
    )
});

/// How long a key's hash is kept.
#[derive(Debug, PartialEq, Eq)]
enum Lifetime {
    /// No TTL.
    Forever,
    /// A TTL of this many milliseconds.
    For(Millis),
    /// Expired more than 30 days ago: not worth writing.
    Over,
}

fn lifetime(expires_at: Option<Millis>, now: Millis) -> Lifetime {
    let Some(expires_at) = expires_at else { return Lifetime::Forever };
    match expires_at.saturating_sub(now).saturating_add(EXPIRED_KEPT_MS) {
        ttl if ttl <= 0 => Lifetime::Over,
        ttl if ttl > LONGEST_TTL_MS => Lifetime::Forever,
        ttl => Lifetime::For(ttl),
    }
}

/// The payload announcing a removed key on the revocation channel.
fn notice(hash: &TokenHash) -> String {
    format!("k:{}", hex(hash))
}

/// A key from its HGETALL reply: `None` for an empty reply (no such key). The record's last use
/// is overlaid with the newer one from `lu`/`ip`.
fn decode_key(fields: &HashMap<String, Vec<u8>>) -> Result<Option<ApiKey>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let rec = fields.get(REC).ok_or_else(|| corrupt("API key hash without a record"))?;
    let mut key: ApiKey = decode(rec)?;
    if let Some(at) = number::<Millis>(fields, LU)? {
        key.last_used_at = key.last_used_at.max(Some(at));
    }
    if let Some(raw) = fields.get(IP) {
        let ip: Option<IpAddr> = std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok());
        key.last_ip = Some(ip.ok_or_else(|| corrupt("field ip is not an IP address"))?);
    }
    Ok(Some(key))
}

impl RedisStore {
    fn api_key_key(&self, hash: &TokenHash) -> String {
        format!("{}:k:{{{}}}", self.prefix, hex(hash))
    }

    fn api_key_index_key(&self, user_id: &str) -> String {
        format!("{}:ku:{{{}}}", self.prefix, tag(user_id))
    }

    /// Writes the key hash (record, last-use fields, TTL), replacing any earlier one, not the
    /// index. `false` when the key is not worth writing (see [`Lifetime::Over`]).
    async fn write_key_hash(&self, key: &ApiKey) -> Result<bool, StoreError> {
        let ttl = match lifetime(key.expires_at, self.clock.now()) {
            Lifetime::Over => return Ok(false),
            Lifetime::Forever => None,
            Lifetime::For(ttl) => Some(ttl),
        };
        let kkey = self.api_key_key(&key.key_hash);
        let mut pipe = ::redis::pipe();
        pipe.atomic().cmd("DEL").arg(&kkey).ignore();
        pipe.cmd("HSET").arg(&kkey).arg(REC).arg(encode(key)?);
        if let Some(at) = key.last_used_at {
            pipe.arg(LU).arg(at);
        }
        if let Some(ip) = key.last_ip {
            pipe.arg(IP).arg(ip.to_string());
        }
        pipe.ignore();
        if let Some(ttl) = ttl {
            pipe.cmd("PEXPIRE").arg(&kkey).arg(ttl).ignore();
        }
        self.bounded("insert_key", async {
            let conn = self.conn().await?;
            conn.pipe::<()>(&pipe).await.map_err(unavailable)?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl ApiKeyStore for RedisStore {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        if !self.write_key_hash(key).await? {
            return Ok(());
        }
        let (kkey, ikey) = (self.api_key_key(&key.key_hash), self.api_key_index_key(&key.user_id));
        let mut add = ::redis::cmd("HSET");
        add.arg(&ikey).arg(&key.id).arg(hex(&key.key_hash));
        self.bounded("insert_key", async {
            let conn = self.conn().await?;
            if let Err(e) = conn.cmd::<()>(&add).await {
                // Without its index entry the key could be neither listed nor removed.
                let _ = conn.cmd::<()>(::redis::cmd("DEL").arg(&kkey)).await;
                return Err(unavailable(e));
            }
            Ok(())
        })
        .await
    }

    async fn key_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiKey>, StoreError> {
        decode_key(&self.hash_fields("key_by_hash", &self.api_key_key(hash)).await?)
    }

    async fn keys_for_user(&self, user_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let ikey = self.api_key_index_key(user_id);
        self.bounded("keys_for_user", async {
            let conn = self.conn().await?;
            let index: HashMap<String, String> =
                conn.cmd(::redis::cmd("HGETALL").arg(&ikey)).await.map_err(unavailable)?;
            let mut stale = Vec::new();
            let mut entries = Vec::with_capacity(index.len());
            for (id, h) in index {
                match RedisStore::parse_revocation(h.as_bytes()) {
                    Some(hash) => entries.push((id, self.api_key_key(&hash))),
                    None => stale.push(id),
                }
            }
            let cmds = entries.iter().map(|(_, k)| (k.clone(), ::redis::cmd("HGETALL").arg(k).to_owned())).collect();
            let replies = conn.batch(cmds).await.map_err(unavailable)?;
            let mut out = Vec::with_capacity(entries.len());
            for ((id, _), reply) in entries.into_iter().zip(replies) {
                let fields: HashMap<String, Vec<u8>> =
                    reply.and_then(|v| Ok(::redis::from_redis_value(v)?)).map_err(unavailable)?;
                match decode_key(&fields)? {
                    Some(k) if k.user_id == user_id && k.id == id => out.push(k),
                    // The key hash expired (or never belonged here): clean, don't show.
                    _ => stale.push(id),
                }
            }
            if !stale.is_empty() {
                conn.cmd::<()>(::redis::cmd("HDEL").arg(&ikey).arg(&stale)).await.map_err(unavailable)?;
            }
            Ok(out)
        })
        .await
    }

    /// Looks the hash up in the index, deletes the key hash, then deletes the index entry and
    /// publishes the notice (one round trip). The notice goes out whenever the index named a
    /// hash, even one already gone, so no replica keeps serving it from memory.
    async fn remove_key(&self, user_id: &str, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let ikey = self.api_key_index_key(user_id);
        let channel = self.revocation_channel();
        self.bounded("remove_key", async {
            let conn = self.conn().await?;
            let entry: Option<String> = conn.cmd(::redis::cmd("HGET").arg(&ikey).arg(id)).await.map_err(unavailable)?;
            let Some(entry) = entry else { return Ok(None) };
            let mut then: Vec<(String, Cmd)> = vec![(ikey.clone(), ::redis::cmd("HDEL").arg(&ikey).arg(id).to_owned())];
            let Some(hash) = RedisStore::parse_revocation(entry.as_bytes()) else {
                // Not a key hash: drop the broken entry; there is no key to delete or announce.
                first_ok(conn.batch(then).await.map_err(unavailable)?)?;
                return Ok(None);
            };
            let kkey = self.api_key_key(&hash);
            let mut take = ::redis::pipe();
            take.atomic().cmd("HGETALL").arg(&kkey).cmd("DEL").arg(&kkey).ignore();
            let (fields,): (HashMap<String, Vec<u8>>,) = conn.pipe(&take).await.map_err(unavailable)?;
            // Deleted whatever it held; one that cannot be read counts as no key.
            let removed = decode_key(&fields).ok().flatten().filter(|k| k.user_id == user_id && k.id == id);
            let notice = notice(&hash);
            self.notices.publishing(notice.as_bytes());
            then.push((channel.clone(), ::redis::cmd("PUBLISH").arg(&channel).arg(&notice).to_owned()));
            first_ok(conn.batch(then).await.map_err(unavailable)?)?;
            Ok(removed)
        })
        .await
    }

    async fn record_key_use(&self, batch: &[Activity]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let cmds: Vec<(String, Cmd)> = batch
            .iter()
            .map(|a| {
                let key = self.api_key_key(&a.token_hash);
                let ip = a.ip.map(|ip| ip.to_string()).unwrap_or_default();
                let cmd = evalsha(&KEY_USE, &key, &[&a.at, &ip]);
                (key, cmd)
            })
            .collect();
        self.bounded("record_key_use", async {
            let conn = self.conn().await?;
            first_ok(run_scripts(conn, &KEY_USE, cmds).await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ::redis::Commands;

    use super::super::redis_server::{RedisCluster, RedisServer};
    use super::super::tests::{await_notice, config, raw, subscribe};
    use super::*;
    use crate::api_keys::contract::{api_key, keys_and_sessions_are_independent, run_all, NOW};
    use crate::clock::ManualClock;
    use crate::config::RedisMode;

    const DAY: Millis = 86_400_000;

    /// A standalone store whose clock reads the contract's `NOW` (its keys expire around then).
    fn standalone(server: &RedisServer) -> RedisStore {
        let cfg = config(RedisMode::Standalone { url: server.url() }, Duration::from_secs(2));
        RedisStore::with_clock(cfg, Duration::from_secs(600), Arc::new(ManualClock::new(NOW))).expect("store")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_store_fulfils_the_api_key_contract() {
        let server = RedisServer::start();
        run_all(&standalone(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_store_fulfils_the_api_key_contract_and_publishes_removals() {
        let cluster = RedisCluster::start(3);
        let cfg = config(RedisMode::Cluster { nodes: cluster.nodes() }, Duration::from_secs(5));
        let store =
            RedisStore::with_clock(cfg, Duration::from_secs(600), Arc::new(ManualClock::new(NOW))).expect("store");
        run_all(&store).await;
        keys_and_sessions_are_independent(&store).await;

        // Keys spread over the masters; a removal's notice reaches a subscriber on any node.
        let keys: Vec<ApiKey> = (0..20).map(|n| api_key("zoe", n)).collect();
        for k in &keys {
            store.insert_key(k).await.expect("insert");
        }
        let uses: Vec<Activity> =
            keys.iter().map(|k| Activity { token_hash: k.key_hash, at: NOW + 5, ip: None }).collect();
        store.record_key_use(&uses).await.expect("uses across slots");
        let listed = store.keys_for_user("zoe").await.expect("list");
        assert_eq!(listed.len(), 20);
        assert!(listed.iter().all(|k| k.last_used_at == Some(NOW + 5)));
        let rx = subscribe(format!("redis://127.0.0.1:{}/", cluster.ports[2]), store.revocation_channel());
        assert!(store.remove_key("zoe", &keys[0].id).await.expect("remove").is_some());
        let expected = format!("k:{}", hex(&keys[0].key_hash)).into_bytes();
        let payload = await_notice(&rx, &expected);
        assert_eq!(payload, expected);
        assert_eq!(store.keys_for_user("zoe").await.expect("list").len(), 19);
    }

    #[tokio::test]
    async fn standalone_api_keys_and_sessions_are_independent() {
        let server = RedisServer::start();
        keys_and_sessions_are_independent(&standalone(&server)).await;
    }

    #[tokio::test]
    async fn remove_key_publishes_the_prefixed_hash() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let key = api_key("amy", 1);
        store.insert_key(&key).await.expect("insert");
        let rx = subscribe(server.url(), store.revocation_channel());
        assert_eq!(store.remove_key("amy", &key.id).await.expect("remove"), Some(key.clone()));
        let payload = rx.recv_timeout(Duration::from_secs(5)).expect("notice");
        assert_eq!(payload, format!("k:{}", hex(&key.key_hash)).into_bytes());
        assert_eq!(payload.len(), 66);
        assert_eq!(RedisStore::parse_revocation(&payload), None, "never mistaken for a session notice");
        assert_eq!(RedisStore::parse_revocation(&payload[2..]), Some(key.key_hash));
    }

    #[test]
    fn key_lifetimes_end_thirty_days_after_expiry() {
        assert_eq!(lifetime(None, NOW), Lifetime::Forever);
        assert_eq!(lifetime(Some(NOW + DAY), NOW), Lifetime::For(31 * DAY));
        assert_eq!(lifetime(Some(NOW - DAY), NOW), Lifetime::For(29 * DAY));
        assert_eq!(lifetime(Some(NOW - 30 * DAY + 1), NOW), Lifetime::For(1));
        assert_eq!(lifetime(Some(NOW - 30 * DAY), NOW), Lifetime::Over);
        assert_eq!(lifetime(Some(Millis::MIN), NOW), Lifetime::Over);
        assert_eq!(lifetime(Some(Millis::MAX), NOW), Lifetime::Forever, "no TTL beyond a century");
    }

    #[tokio::test]
    async fn api_key_keys_are_laid_out_as_documented() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let forever = ApiKey { user_id: "a}b".into(), ..api_key("", 1) };
        let expiring = ApiKey { user_id: "a}b".into(), expires_at: Some(NOW + DAY), ..api_key("", 2) };
        let long_gone = ApiKey { expires_at: Some(NOW - 31 * DAY), ..api_key("a}b", 3) };
        for k in [&forever, &expiring, &long_gone] {
            store.insert_key(k).await.expect("insert");
        }

        let mut con = raw(&server);
        let mut keys: Vec<String> = con.keys("*").expect("keys");
        keys.sort();
        let forever_key = format!("dalea:k:{{{}}}", hex(&forever.key_hash));
        let expiring_key = format!("dalea:k:{{{}}}", hex(&expiring.key_hash));
        let mut expected = vec![forever_key.clone(), expiring_key.clone(), "dalea:ku:{a%7Db}".to_string()];
        expected.sort();
        assert_eq!(keys, expected, "a key long past its expiry is not written");

        let index: HashMap<String, String> = con.hgetall("dalea:ku:{a%7Db}").expect("hgetall");
        let expected_index = HashMap::from([
            (forever.id.clone(), hex(&forever.key_hash)),
            (expiring.id.clone(), hex(&expiring.key_hash)),
        ]);
        assert_eq!(index, expected_index);
        let fields: HashMap<String, Vec<u8>> = con.hgetall(&forever_key).expect("hgetall");
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["rec"]);
        assert_eq!(fields[REC].first(), Some(&1), "record version 1");
        assert_eq!(decode::<ApiKey>(&fields[REC]).expect("record"), forever);

        // No TTL without expiry; otherwise until 30 days after it; the index never expires.
        assert_eq!(con.pttl::<_, i64>(&forever_key).expect("pttl"), -1);
        assert_eq!(con.pttl::<_, i64>("dalea:ku:{a%7Db}").expect("pttl"), -1);
        let ttl: i64 = con.pttl(&expiring_key).expect("pttl");
        assert!(ttl > 31 * DAY - 60_000 && ttl <= 31 * DAY, "{ttl}");

        // Use-recording writes its own fields and leaves the record and the TTL alone.
        let ip: IpAddr = "2001:db8::7".parse().expect("ip");
        let used = Activity { token_hash: expiring.key_hash, at: NOW + 9, ip: Some(ip) };
        store.record_key_use(&[used]).await.expect("use");
        let fields: HashMap<String, Vec<u8>> = con.hgetall(&expiring_key).expect("hgetall");
        assert_eq!(decode::<ApiKey>(&fields[REC]).expect("record"), expiring, "the record is not rewritten");
        assert_eq!(fields[LU], (NOW + 9).to_string().into_bytes());
        assert_eq!(fields[IP], b"2001:db8::7".to_vec());
        let ttl: i64 = con.pttl(&expiring_key).expect("pttl");
        assert!(ttl > 31 * DAY - 60_000, "{ttl}");
        let got = store.key_by_hash(&expiring.key_hash).await.expect("get").expect("present");
        assert_eq!((got.last_used_at, got.last_ip), (Some(NOW + 9), Some(ip)), "overlaid on the record");
    }

    #[tokio::test]
    async fn use_recording_survives_a_flushed_script_cache_and_never_resurrects() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let key = api_key("bob", 1);
        store.insert_key(&key).await.expect("insert");
        let _: () = ::redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).expect("flush scripts");
        let used = Activity { token_hash: key.key_hash, at: NOW + 3, ip: None };
        store.record_key_use(&[used]).await.expect("NOSCRIPT → load → retry");
        assert_eq!(store.key_by_hash(&key.key_hash).await.expect("get").and_then(|k| k.last_used_at), Some(NOW + 3));

        assert!(store.remove_key("bob", &key.id).await.expect("remove").is_some());
        store.record_key_use(&[Activity { at: NOW + 4, ..used }]).await.expect("use after removal");
        let exists: bool = con.exists(format!("dalea:k:{{{}}}", hex(&key.key_hash))).expect("exists");
        assert!(!exists, "use after removal must not recreate the key");
    }

    #[tokio::test]
    async fn index_entries_whose_key_expired_are_dropped() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let (keep, gone) = (api_key("cat", 1), api_key("cat", 2));
        store.insert_key(&keep).await.expect("insert");
        store.insert_key(&gone).await.expect("insert");
        let _: () = con.del(format!("dalea:k:{{{}}}", hex(&gone.key_hash))).expect("del");
        let _: () = con.hset("dalea:ku:{cat}", "broken", "not-a-hash").expect("hset");
        assert_eq!(store.keys_for_user("cat").await.expect("list"), vec![keep.clone()]);
        let index: HashMap<String, String> = con.hgetall("dalea:ku:{cat}").expect("hgetall");
        assert_eq!(index, HashMap::from([(keep.id.clone(), hex(&keep.key_hash))]), "stale entries removed");

        // Removing an entry whose key is already gone finds nothing but still cleans up.
        store.insert_key(&gone).await.expect("insert again");
        let _: () = con.del(format!("dalea:k:{{{}}}", hex(&gone.key_hash))).expect("del");
        assert_eq!(store.remove_key("cat", &gone.id).await.expect("remove"), None);
        let _: () = con.hset("dalea:ku:{cat}", "broken", "not-a-hash").expect("hset");
        assert_eq!(store.remove_key("cat", "broken").await.expect("remove"), None);
        let len: usize = con.hlen("dalea:ku:{cat}").expect("hlen");
        assert_eq!(len, 1);
    }

    #[tokio::test]
    async fn unreadable_api_keys_are_corrupt_and_an_outage_is_unavailable() {
        let mut server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let key = api_key("una", 1);
        store.insert_key(&key).await.expect("insert");
        let kkey = format!("dalea:k:{{{}}}", hex(&key.key_hash));
        let _: () = con.hset(&kkey, LU, "soon").expect("hset");
        assert!(matches!(store.key_by_hash(&key.key_hash).await, Err(StoreError::Corrupt(_))));
        let _: () = con.hset(&kkey, LU, "1").expect("hset");
        let _: () = con.hset(&kkey, IP, "nowhere").expect("hset");
        assert!(matches!(store.key_by_hash(&key.key_hash).await, Err(StoreError::Corrupt(_))));
        let _: () = con.hdel(&kkey, IP).expect("hdel");
        let _: () = con.hset(&kkey, REC, "\x09garbage").expect("hset");
        assert!(matches!(store.key_by_hash(&key.key_hash).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.keys_for_user("una").await, Err(StoreError::Corrupt(_))));
        let _: () = con.hdel(&kkey, REC).expect("hdel");
        assert!(matches!(store.key_by_hash(&key.key_hash).await, Err(StoreError::Corrupt(_))), "no record");
        assert_eq!(store.remove_key("una", &key.id).await.expect("an unreadable key can still be removed"), None);
        assert!(store.keys_for_user("una").await.expect("list").is_empty());
        server.kill();
        assert!(matches!(store.insert_key(&key).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.key_by_hash(&key.key_hash).await, Err(StoreError::Unavailable(_))));
        let used = Activity { token_hash: key.key_hash, at: NOW, ip: None };
        assert!(matches!(store.record_key_use(&[used]).await, Err(StoreError::Unavailable(_))));
    }
}
