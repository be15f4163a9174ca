//! [`HistoryStore`] for `RedisStore`: one STRING per person, `P:hist:{<user id>}` =
//! `[version byte] ++ JSON` of the [`History`] (see the key layout in the module header).
//!
//! A sign-in is merged on the gateway ([`History::record`], the same code as the embedded
//! store) and written back with a one-key compare-and-set script, which writes only if the key
//! still holds what was read; when another replica wrote meanwhile, the merge starts over from
//! its version. So concurrent sign-ins on several replicas are all counted, and the merge rules
//! (first seen only earlier, last seen only later) hold whatever the replicas' clocks say.
//!
//! The key has a 400-day TTL, refreshed by each sign-in: an abandoned account's history goes
//! away. The user id is escaped inside the hash tag like account ids (`tag`).

use std::sync::LazyLock;

use ::redis::{Script, Value};
use async_trait::async_trait;

use super::account::tag;
use super::scripts::evalsha;
use super::store_impl::run_scripts;
use super::{unavailable, RedisStore};
use crate::session::embedded_account::{decode, encode};
use crate::session::store::StoreError;
use crate::vigilance::history::{check_sign_in, History, HistoryStore, Keep, SignIn};

/// How often a sign-in starts over when the history changes under it (each round means another
/// replica's sign-in for the same person landed in between).
const ATTEMPTS: usize = 16;
/// How long a history outlives the person's latest sign-in.
pub(super) const HISTORY_TTL_MS: i64 = 400 * 86_400_000;

/// Sets KEYS[1] to ARGV[2] with a TTL of ARGV[3] ms if it holds exactly ARGV[1] ("" = absent).
/// Returns 1 when it did.
static SET_IF_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#,
    )
});

impl RedisStore {
    fn history_key(&self, user_id: &str) -> String {
        format!("{}:hist:{{{}}}", self.prefix, tag(user_id))
    }
}

#[async_trait]
impl HistoryStore for RedisStore {
    async fn record_sign_in(&self, user_id: &str, sign_in: &SignIn, keep: Keep) -> Result<History, StoreError> {
        check_sign_in(sign_in, keep)?;
        let key = self.history_key(user_id);
        self.bounded("record_sign_in", async {
            let conn = self.conn().await?;
            for _ in 0..ATTEMPTS {
                let raw: Option<Vec<u8>> = conn.cmd(::redis::cmd("GET").arg(&key)).await.map_err(unavailable)?;
                // An unreadable record is an error, never overwritten.
                let before: History = raw.as_deref().map(decode).transpose()?.unwrap_or_default();
                let mut after = before.clone();
                after.record(sign_in, keep);
                if after == before {
                    return Ok(before);
                }
                let expected = raw.unwrap_or_default();
                let cmd = evalsha(&SET_IF_UNCHANGED, &key, &[&expected, &encode(&after)?, &HISTORY_TTL_MS]);
                let replies = run_scripts(conn, &SET_IF_UNCHANGED, vec![(key.clone(), cmd)]).await?;
                match replies.into_iter().next() {
                    Some(Ok(Value::Int(1))) => return Ok(before),
                    Some(Ok(Value::Int(_))) => continue, // another replica wrote first: merge again
                    Some(Ok(other)) => return Err(unavailable(format!("unexpected history script reply {other:?}"))),
                    Some(Err(e)) => return Err(unavailable(e)),
                    None => return Err(unavailable("no reply to the history script")),
                }
            }
            Err(StoreError::Unavailable("the sign-in history kept changing while being recorded".into()))
        })
        .await
    }

    async fn history(&self, user_id: &str) -> Result<History, StoreError> {
        let key = self.history_key(user_id);
        self.bounded("history", async {
            let conn = self.conn().await?;
            let raw: Option<Vec<u8>> = conn.cmd(::redis::cmd("GET").arg(&key)).await.map_err(unavailable)?;
            Ok(raw.as_deref().map(decode).transpose()?.unwrap_or_default())
        })
        .await
    }

    async fn forget_history(&self, user_id: &str) -> Result<bool, StoreError> {
        let key = self.history_key(user_id);
        self.bounded("forget_history", async {
            let removed: i64 = self.conn().await?.cmd(::redis::cmd("DEL").arg(&key)).await.map_err(unavailable)?;
            Ok(removed > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {

    use ::redis::cluster_routing::Slot;
    use ::redis::Commands;

    use super::super::redis_server::{RedisCluster, RedisServer};
    use super::super::tests::{clustered, raw, standalone, unconnected};
    use super::*;

    use crate::vigilance::history_contract::{run_all, sign_in};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_store_fulfils_the_history_contract() {
        let server = RedisServer::start();
        run_all(&standalone(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_store_fulfils_the_history_contract() {
        let cluster = RedisCluster::start(3);
        run_all(&clustered(&cluster)).await;
    }

    #[test]
    fn the_key_is_tagged_with_the_whole_escaped_id() {
        let store = unconnected();
        assert_eq!(store.history_key("a}b{c%"), "dalea:hist:{a%7Db%7Bc%25}");
        assert_eq!(store.history_key(""), "dalea:hist:{%}");
        // A person's history shares a slot with their account keys.
        for user in ["alice", "}x", "{y}", "a:b", ""] {
            let account = format!("dalea:totp:{{{}}}", tag(user));
            assert_eq!(Slot::for_key(store.history_key(user).as_bytes()), Slot::for_key(account.as_bytes()));
        }
    }

    #[tokio::test]
    async fn the_history_key_is_laid_out_as_documented() {
        let server = RedisServer::start();
        let store = standalone(&server);
        store.record_sign_in("a}b", &sign_in("s1", 7, 1, Some("GB")), Keep::default()).await.expect("record");
        let mut con = raw(&server);
        let keys: Vec<String> = con.keys("*").expect("keys");
        assert_eq!(keys, ["dalea:hist:{a%7Db}"]);
        let stored: Vec<u8> = con.get(&keys[0]).expect("get");
        assert_eq!(stored.first(), Some(&1), "record version 1");
        let h: History = decode(&stored).expect("record");
        assert_eq!(h.sign_ins[0].session_id, "s1");
        let ttl: i64 = con.pttl(&keys[0]).expect("pttl");
        assert!(ttl > HISTORY_TTL_MS - 60_000 && ttl <= HISTORY_TTL_MS, "{ttl}");
    }

    #[tokio::test]
    async fn an_unreadable_history_is_corrupt_and_an_outage_is_unavailable() {
        let mut server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let _: () = con.set("dalea:hist:{una}", "\x09garbage").expect("set");
        assert!(matches!(store.history("una").await, Err(StoreError::Corrupt(_))));
        let s = sign_in("una-1", 1, 1, None);
        assert!(matches!(store.record_sign_in("una", &s, Keep::default()).await, Err(StoreError::Corrupt(_))));
        let still: Vec<u8> = con.get("dalea:hist:{una}").expect("get");
        assert_eq!(still, b"\x09garbage", "never overwritten");
        server.kill();
        assert!(matches!(store.record_sign_in("una", &s, Keep::default()).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.history("una").await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.forget_history("una").await, Err(StoreError::Unavailable(_))));
    }
}
