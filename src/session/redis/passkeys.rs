//! [`PasskeyStore`] for `RedisStore`: one STRING per credential, the truth, and one index HASH
//! per person, a hint that repairs itself (see the key layout in the module header).
//!
//! - `P:pk:{<credential id>}` = the [`PasskeyRecord`] (`[version byte] ++ JSON`). Adding is
//!   `SET … NX`, so of two replicas adding one credential id exactly one creates it. Renames
//!   and uses rewrite it only if it still holds the value read a moment before, removals delete
//!   it only then (one-key compare-and-set scripts), starting over when it changed meanwhile.
//!   Credential ids are base64url (`check_credential_id`), so they need no escaping in the tag.
//! - `P:pku:{<user id>}`: field `<credential id>` → `created_at` of that passkey. It lives in
//!   another slot than the credential keys, so it is written after them and may lag:
//!   `passkeys_of` shows only entries whose credential key still names the person, and drops the
//!   others (only if unchanged since read); adding a credential the person already has re-adds
//!   its entry. The user id is escaped inside the hash tag like account ids (`tag`).
//! - The per-person cap is checked before `SET … NX` (`HLEN`, and when that reaches the cap the
//!   verified count), without a lock: replicas adding at the same moment may pass it by a few.

use std::collections::HashMap;

use ::redis::Value;
use async_trait::async_trait;

use super::account::tag;
use super::conn::Conn;
use super::records::{delete_if_equal, drop_index_entries, read_record, read_records, set_if_equal};
use super::{unavailable, RedisStore};
use crate::clock::Millis;
use crate::passkeys::{
    check_credential_id, check_name, check_passkey, check_record, oldest_first, too_many_passkeys, Passkey,
    PasskeyRecord, PasskeyStore, MAX_PASSKEYS_PER_PERSON,
};
use crate::session::embedded_account::encode;
use crate::session::store::StoreError;

/// How often a change starts over when the credential's record changes under it.
const ATTEMPTS: usize = 8;

impl RedisStore {
    fn passkey_key(&self, credential_id: &str) -> String {
        format!("{}:pk:{{{credential_id}}}", self.prefix)
    }

    fn passkey_index_key(&self, user_id: &str) -> String {
        format!("{}:pku:{{{}}}", self.prefix, tag(user_id))
    }

    /// Writes `record`'s entry in its person's index.
    async fn index_passkey(&self, conn: &Conn, record: &PasskeyRecord) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(self.passkey_index_key(&record.user_id)).arg(&record.id).arg(record.created_at);
        conn.cmd::<()>(&cmd).await.map_err(unavailable)
    }

    /// The person's passkeys, verified against the credential keys; stale index entries dropped.
    async fn verified_passkeys(&self, conn: &Conn, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
        let ikey = self.passkey_index_key(user_id);
        let index: HashMap<String, String> = conn.cmd(::redis::cmd("HGETALL").arg(&ikey)).await.map_err(unavailable)?;
        let mut stale = Vec::new();
        let mut entries = Vec::with_capacity(index.len());
        for (id, v) in index {
            match check_credential_id(&id) {
                Ok(()) => {
                    let key = self.passkey_key(&id);
                    entries.push((id, v, key));
                }
                Err(_) => stale.push((id, v)),
            }
        }
        let keys: Vec<String> = entries.iter().map(|(_, _, k)| k.clone()).collect();
        let records = read_records::<PasskeyRecord>(conn, &keys).await?;
        let mut out = Vec::with_capacity(entries.len());
        for ((id, v, _), record) in entries.into_iter().zip(records) {
            match record {
                Some(r) if r.user_id == user_id && r.id == id => out.push(r),
                // Removed (or never this person's): clean, don't show.
                _ => stale.push((id, v)),
            }
        }
        drop_index_entries(conn, &self.passkey_index_key(user_id), &stale).await?;
        oldest_first(&mut out);
        Ok(out)
    }

    /// Refuses when the person already has the most passkeys allowed. The index may hold stale
    /// entries, so a full-looking index is verified before refusing.
    async fn check_passkey_cap(&self, conn: &Conn, user_id: &str) -> Result<(), StoreError> {
        let ikey = self.passkey_index_key(user_id);
        let indexed: usize = conn.cmd(::redis::cmd("HLEN").arg(&ikey)).await.map_err(unavailable)?;
        if indexed >= MAX_PASSKEYS_PER_PERSON
            && self.verified_passkeys(conn, user_id).await?.len() >= MAX_PASSKEYS_PER_PERSON
        {
            return Err(too_many_passkeys());
        }
        Ok(())
    }

    /// Rewrites the person's passkey `id` with `change` applied, compare-and-set, starting over
    /// when it changed meanwhile. Whether it was theirs.
    async fn update_passkey(
        &self,
        what: &str,
        user_id: &str,
        id: &str,
        change: impl Fn(PasskeyRecord) -> PasskeyRecord,
    ) -> Result<bool, StoreError> {
        let key = self.passkey_key(id);
        self.bounded(what, async {
            let conn = self.conn().await?;
            for _ in 0..ATTEMPTS {
                let Some((raw, record)) =
                    read_record::<PasskeyRecord>(conn, &key).await?.filter(|(_, r)| r.user_id == user_id)
                else {
                    return Ok(false);
                };
                let updated = encode(&change(record))?;
                if set_if_equal(conn, &key, &raw, &updated).await? {
                    return Ok(true);
                }
            }
            Err(StoreError::Unavailable("the passkey kept changing while being updated".into()))
        })
        .await
    }
}

#[async_trait]
impl PasskeyStore for RedisStore {
    async fn add_passkey(&self, record: &PasskeyRecord) -> Result<bool, StoreError> {
        check_record(record)?;
        let bytes = encode(record)?;
        let key = self.passkey_key(&record.id);
        self.bounded("add_passkey", async {
            let conn = self.conn().await?;
            if let Some((_, existing)) = read_record::<PasskeyRecord>(conn, &key).await? {
                if existing.user_id == record.user_id {
                    // Re-adding the entry repairs an index that lost it.
                    self.index_passkey(conn, &existing).await?;
                }
                return Ok(false);
            }
            self.check_passkey_cap(conn, &record.user_id).await?;
            let set: Value =
                conn.cmd(::redis::cmd("SET").arg(&key).arg(&bytes).arg("NX")).await.map_err(unavailable)?;
            if set == Value::Nil {
                return Ok(false); // registered meanwhile
            }
            if let Err(e) = self.index_passkey(conn, record).await {
                // Unlisted, the person could not see or remove it: undo, and let them retry.
                let _ = delete_if_equal(conn, &key, &bytes).await;
                return Err(e);
            }
            Ok(true)
        })
        .await
    }

    async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
        self.bounded("passkeys_of", async { self.verified_passkeys(self.conn().await?, user_id).await }).await
    }

    async fn passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>, StoreError> {
        check_credential_id(credential_id)?;
        let key = self.passkey_key(credential_id);
        self.bounded("passkey", async {
            let conn = self.conn().await?;
            Ok(read_record::<PasskeyRecord>(conn, &key).await?.map(|(_, record)| record))
        })
        .await
    }

    async fn rename_passkey(&self, user_id: &str, credential_id: &str, name: &str) -> Result<bool, StoreError> {
        check_credential_id(credential_id)?;
        check_name(name)?;
        self.update_passkey("rename_passkey", user_id, credential_id, |r| PasskeyRecord { name: name.to_string(), ..r })
            .await
    }

    async fn remove_passkey(&self, user_id: &str, credential_id: &str) -> Result<bool, StoreError> {
        check_credential_id(credential_id)?;
        let key = self.passkey_key(credential_id);
        self.bounded("remove_passkey", async {
            let conn = self.conn().await?;
            for _ in 0..ATTEMPTS {
                // Absent or someone else's: nothing of this person's to remove (a stale index
                // entry is left to `passkeys_of`, which checks it is unchanged before dropping it).
                let Some((raw, record)) =
                    read_record::<PasskeyRecord>(conn, &key).await?.filter(|(_, r)| r.user_id == user_id)
                else {
                    return Ok(false);
                };
                if delete_if_equal(conn, &key, &raw).await? {
                    let entry = (record.id, record.created_at.to_string());
                    drop_index_entries(conn, &self.passkey_index_key(user_id), &[entry]).await?;
                    return Ok(true);
                }
            }
            Err(StoreError::Unavailable("the passkey kept changing while being removed".into()))
        })
        .await
    }

    async fn passkey_used(
        &self,
        user_id: &str,
        credential_id: &str,
        passkey: &Passkey,
        at: Millis,
    ) -> Result<bool, StoreError> {
        check_passkey(credential_id, passkey)?;
        self.update_passkey("passkey_used", user_id, credential_id, |r| PasskeyRecord {
            passkey: passkey.clone(),
            last_used_at: Some(r.last_used_at.map_or(at, |last| last.max(at))),
            ..r
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
    use crate::session::embedded_account::decode;

    use crate::passkeys::contract::{run_all, sample_passkey};

    fn record(user: &str, n: u32) -> PasskeyRecord {
        PasskeyRecord::new(user, &format!("key {n}"), sample_passkey(n), 7)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_store_fulfils_the_passkey_contract() {
        let server = RedisServer::start();
        run_all(&standalone(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_store_fulfils_the_passkey_contract() {
        let cluster = RedisCluster::start(3);
        run_all(&clustered(&cluster)).await;
    }

    #[test]
    fn hash_tags_hold_the_whole_escaped_id() {
        let store = unconnected();
        assert_eq!(store.passkey_key("AbC-_9"), "dalea:pk:{AbC-_9}");
        assert_eq!(store.passkey_index_key("a}b"), "dalea:pku:{a%7Db}");
        assert_eq!(store.passkey_index_key(""), "dalea:pku:{%}");
        // A person's index shares a slot with their account keys.
        for user in ["alice", "}x", "{y}", "a:b", ""] {
            let account = format!("dalea:totp:{{{}}}", tag(user));
            assert_eq!(Slot::for_key(store.passkey_index_key(user).as_bytes()), Slot::for_key(account.as_bytes()));
        }
    }

    #[tokio::test]
    async fn passkey_keys_are_laid_out_as_documented() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let r = record("a}b", 1);
        assert!(store.add_passkey(&r).await.expect("add"));
        let mut con = raw(&server);
        let mut keys: Vec<String> = con.keys("*").expect("keys");
        keys.sort();
        assert_eq!(keys, [format!("dalea:pk:{{{}}}", r.id), "dalea:pku:{a%7Db}".to_string()]);
        let stored: Vec<u8> = con.get(&keys[0]).expect("get");
        assert_eq!(stored.first(), Some(&1), "record version 1");
        let decoded: PasskeyRecord = decode(&stored).expect("record");
        assert_eq!(serde_json::to_value(&decoded).expect("json"), serde_json::to_value(&r).expect("json"));
        let index: HashMap<String, String> = con.hgetall(&keys[1]).expect("hgetall");
        assert_eq!(index, HashMap::from([(r.id.clone(), "7".to_string())]));
        for key in &keys {
            assert_eq!(con.pttl::<_, i64>(key).expect("pttl"), -1, "{key}: passkeys never expire");
        }
    }

    #[tokio::test]
    async fn the_index_heals_from_the_credential_keys() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let (kept, lost) = (record("amy", 1), record("amy", 2));
        store.add_passkey(&kept).await.expect("add");
        store.add_passkey(&lost).await.expect("add");
        // Entries for credentials gone, someone else's, or unreadable fields are dropped by a listing.
        let _: () = con.del(format!("dalea:pk:{{{}}}", lost.id)).expect("del");
        let bens = record("ben", 3);
        store.add_passkey(&bens).await.expect("add");
        for f in [bens.id.as_str(), "not base64url!", ""] {
            let _: () = con.hset("dalea:pku:{amy}", f, "1").expect("hset");
        }
        let ids = |list: Vec<PasskeyRecord>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.passkeys_of("amy").await.expect("passkeys_of")), std::slice::from_ref(&kept.id));
        let index: HashMap<String, String> = con.hgetall("dalea:pku:{amy}").expect("hgetall");
        assert_eq!(index, HashMap::from([(kept.id.clone(), "7".to_string())]));
        // A lost entry comes back when the person adds the credential again.
        let _: () = con.del("dalea:pku:{amy}").expect("del");
        assert!(store.passkeys_of("amy").await.expect("passkeys_of").is_empty());
        assert!(!store.add_passkey(&kept).await.expect("add again"), "still registered");
        assert_eq!(ids(store.passkeys_of("amy").await.expect("passkeys_of")), [kept.id]);
    }

    #[tokio::test]
    async fn a_full_looking_index_with_stale_entries_does_not_block_adding() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        for i in 0..MAX_PASSKEYS_PER_PERSON + 5 {
            let _: () = con.hset("dalea:pku:{cat}", format!("gone-{i}"), "1").expect("hset");
        }
        assert!(store.add_passkey(&record("cat", 1)).await.expect("add"));
        let len: usize = con.hlen("dalea:pku:{cat}").expect("hlen");
        assert_eq!(len, 1, "the stale entries were dropped on the way");
    }

    #[tokio::test]
    async fn unreadable_passkeys_are_corrupt_and_an_outage_is_unavailable() {
        let mut server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let r = record("una", 1);
        let key = format!("dalea:pk:{{{}}}", r.id);
        let _: () = con.set(&key, "\x09garbage").expect("set");
        let _: () = con.hset("dalea:pku:{una}", &r.id, "1").expect("hset");
        assert!(matches!(store.passkey(&r.id).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.passkeys_of("una").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.add_passkey(&r).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.rename_passkey("una", &r.id, "x").await, Err(StoreError::Corrupt(_))));
        let still: Vec<u8> = con.get(&key).expect("get");
        assert_eq!(still, b"\x09garbage", "never overwritten");
        server.kill();
        let other = record("una", 2);
        assert!(matches!(store.add_passkey(&other).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.passkey(&other.id).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.remove_passkey("una", &other.id).await, Err(StoreError::Unavailable(_))));
        let used = store.passkey_used("una", &other.id, &other.passkey, 1).await;
        assert!(matches!(used, Err(StoreError::Unavailable(_))));
    }
}
