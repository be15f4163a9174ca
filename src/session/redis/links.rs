//! [`LinkStore`] for `RedisStore`: one STRING per external identity, the truth, and one index
//! HASH per person, a hint that repairs itself (see the key layout in the module header).
//!
//! - `P:ext:{<provider>:<subject>}` = the [`Link`] (`[version byte] ++ JSON`). Linking is
//!   `SET … NX`, so of two replicas linking one identity to two people exactly one creates it;
//!   the other reads the winner back. Unlinking deletes it only if it still holds the value read
//!   a moment before (a one-key compare-and-delete script).
//! - `P:exu:{<user id>}`: field `<provider>:<subject>` → `linked_at` of that link. It lives in
//!   another slot than the identity keys, so it is written after them and may lag: `links_of`
//!   shows only entries whose identity key still names the person, and drops the others (only
//!   if unchanged since read, so a link made meanwhile keeps its entry); `link` of an identity
//!   already linked re-adds the entry to its person's index.
//! - The subject and the user id are escaped inside the hash tags like account ids (`tag`);
//!   provider names cannot hold braces or `:` (`check_identity`), so the first `:` of an index
//!   field ends the provider.
//! - The per-person cap is checked before `SET … NX` (`HLEN`, and when that reaches the cap the
//!   verified count), without a lock: replicas linking at the same moment may pass it by a few.

use std::collections::HashMap;

use ::redis::Value;
use async_trait::async_trait;

use super::account::tag;
use super::conn::Conn;
use super::records::{delete_if_equal, drop_index_entries, read_record, read_records};
use super::{unavailable, RedisStore};
use crate::account::links::{check_identity, check_link, too_many_links, Link, LinkStore, MAX_LINKS_PER_PERSON};
use crate::session::embedded_account::encode;
use crate::session::store::StoreError;

/// How often `link`/`unlink` start over when the identity changes under them.
const ATTEMPTS: usize = 3;

/// The index field naming an identity.
fn field(provider: &str, subject: &str) -> String {
    format!("{provider}:{subject}")
}

impl RedisStore {
    fn identity_key(&self, provider: &str, subject: &str) -> String {
        format!("{}:ext:{{{provider}:{}}}", self.prefix, tag(subject))
    }

    fn link_index_key(&self, user_id: &str) -> String {
        format!("{}:exu:{{{}}}", self.prefix, tag(user_id))
    }

    /// Writes `link`'s entry in its person's index.
    async fn index_link(&self, conn: &Conn, link: &Link) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(self.link_index_key(&link.user_id)).arg(field(&link.provider, &link.subject)).arg(link.linked_at);
        conn.cmd::<()>(&cmd).await.map_err(unavailable)
    }

    /// The person's links, verified against the identity keys; stale index entries dropped.
    async fn verified_links(&self, conn: &Conn, user_id: &str) -> Result<Vec<Link>, StoreError> {
        let ikey = self.link_index_key(user_id);
        let index: HashMap<String, String> = conn.cmd(::redis::cmd("HGETALL").arg(&ikey)).await.map_err(unavailable)?;
        let mut stale = Vec::new();
        let mut entries = Vec::with_capacity(index.len());
        for (f, v) in index {
            match f.split_once(':').filter(|(p, s)| check_identity(p, s).is_ok()) {
                Some((p, s)) => {
                    let key = self.identity_key(p, s);
                    entries.push((f, v, key));
                }
                None => stale.push((f, v)),
            }
        }
        let keys: Vec<String> = entries.iter().map(|(_, _, k)| k.clone()).collect();
        let links = read_records::<Link>(conn, &keys).await?;
        let mut out = Vec::with_capacity(entries.len());
        for ((f, v, _), link) in entries.into_iter().zip(links) {
            match link {
                Some(l) if l.user_id == user_id && field(&l.provider, &l.subject) == f => out.push(l),
                // Unlinked (or never linked to this person): clean, don't show.
                _ => stale.push((f, v)),
            }
        }
        drop_index_entries(conn, &self.link_index_key(user_id), &stale).await?;
        Ok(out)
    }

    /// Refuses when the person already has the most links allowed. The index may hold stale
    /// entries, so a full-looking index is verified before refusing.
    async fn check_link_cap(&self, conn: &Conn, user_id: &str) -> Result<(), StoreError> {
        let ikey = self.link_index_key(user_id);
        let indexed: usize = conn.cmd(::redis::cmd("HLEN").arg(&ikey)).await.map_err(unavailable)?;
        if indexed >= MAX_LINKS_PER_PERSON && self.verified_links(conn, user_id).await?.len() >= MAX_LINKS_PER_PERSON {
            return Err(too_many_links());
        }
        Ok(())
    }
}

#[async_trait]
impl LinkStore for RedisStore {
    async fn link(&self, link: &Link) -> Result<String, StoreError> {
        check_link(link)?;
        let record = encode(link)?;
        let key = self.identity_key(&link.provider, &link.subject);
        self.bounded("link", async {
            let conn = self.conn().await?;
            for attempt in 0..ATTEMPTS {
                if let Some((_, existing)) = read_record::<Link>(conn, &key).await? {
                    // Re-adding the entry repairs an index that lost it.
                    self.index_link(conn, &existing).await?;
                    return Ok(existing.user_id);
                }
                if attempt == 0 {
                    self.check_link_cap(conn, &link.user_id).await?;
                }
                let set: Value =
                    conn.cmd(::redis::cmd("SET").arg(&key).arg(&record).arg("NX")).await.map_err(unavailable)?;
                if set == Value::Nil {
                    continue; // linked meanwhile: read the winner
                }
                if let Err(e) = self.index_link(conn, link).await {
                    // Unlisted, the person could not see or remove it: undo, and let them retry.
                    let _ = delete_if_equal(conn, &key, &record).await;
                    return Err(e);
                }
                return Ok(link.user_id.clone());
            }
            Err(StoreError::Unavailable("the identity kept changing while being linked".into()))
        })
        .await
    }

    async fn linked_user(&self, provider: &str, subject: &str) -> Result<Option<String>, StoreError> {
        check_identity(provider, subject)?;
        let key = self.identity_key(provider, subject);
        self.bounded("linked_user", async {
            let conn = self.conn().await?;
            Ok(read_record::<Link>(conn, &key).await?.map(|(_, link)| link.user_id))
        })
        .await
    }

    async fn links_of(&self, user_id: &str) -> Result<Vec<Link>, StoreError> {
        self.bounded("links_of", async { self.verified_links(self.conn().await?, user_id).await }).await
    }

    async fn unlink(&self, user_id: &str, provider: &str, subject: &str) -> Result<bool, StoreError> {
        check_identity(provider, subject)?;
        let key = self.identity_key(provider, subject);
        self.bounded("unlink", async {
            let conn = self.conn().await?;
            for _ in 0..ATTEMPTS {
                // Absent or someone else's: nothing of this person's to remove (a stale index
                // entry is left to `links_of`, which checks it is unchanged before dropping it).
                let Some((raw, link)) = read_record::<Link>(conn, &key).await?.filter(|(_, l)| l.user_id == user_id)
                else {
                    return Ok(false);
                };
                if delete_if_equal(conn, &key, &raw).await? {
                    let entry = (field(provider, subject), link.linked_at.to_string());
                    drop_index_entries(conn, &self.link_index_key(user_id), &[entry]).await?;
                    return Ok(true);
                }
            }
            Err(StoreError::Unavailable("the identity kept changing while being unlinked".into()))
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
    use crate::account::links_contract::run_all;
    use crate::session::embedded_account::decode;

    fn link(provider: &str, subject: &str, user: &str) -> Link {
        Link { provider: provider.into(), subject: subject.into(), user_id: user.into(), linked_at: 7, email: None }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_store_fulfils_the_link_contract() {
        let server = RedisServer::start();
        run_all(&standalone(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_store_fulfils_the_link_contract() {
        let cluster = RedisCluster::start(3);
        run_all(&clustered(&cluster)).await;
    }

    #[test]
    fn hash_tags_hold_the_whole_escaped_id() {
        let store = unconnected();
        assert_eq!(store.identity_key("google", "a}b{c%"), "dalea:ext:{google:a%7Db%7Bc%25}");
        assert_eq!(store.link_index_key("a}b"), "dalea:exu:{a%7Db}");
        assert_eq!(store.link_index_key(""), "dalea:exu:{%}");
        // A person's index shares a slot with their account keys.
        for user in ["alice", "}x", "{y}", "a:b", ""] {
            let account = format!("dalea:totp:{{{}}}", tag(user));
            assert_eq!(Slot::for_key(store.link_index_key(user).as_bytes()), Slot::for_key(account.as_bytes()));
        }
    }

    #[tokio::test]
    async fn link_keys_are_laid_out_as_documented() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let l = Link { email: Some("amy@example.com".into()), ..link("google", "1{0}8", "a}b") };
        assert_eq!(store.link(&l).await.expect("link"), "a}b");
        let mut con = raw(&server);
        let mut keys: Vec<String> = con.keys("*").expect("keys");
        keys.sort();
        assert_eq!(keys, ["dalea:ext:{google:1%7B0%7D8}", "dalea:exu:{a%7Db}"]);
        let stored: Vec<u8> = con.get(&keys[0]).expect("get");
        assert_eq!(stored.first(), Some(&1), "record version 1");
        assert_eq!(decode::<Link>(&stored).expect("record"), l);
        let index: HashMap<String, String> = con.hgetall(&keys[1]).expect("hgetall");
        assert_eq!(index, HashMap::from([("google:1{0}8".to_string(), "7".to_string())]));
        for key in &keys {
            assert_eq!(con.pttl::<_, i64>(key).expect("pttl"), -1, "{key}: links never expire");
        }
    }

    #[tokio::test]
    async fn the_index_heals_from_the_identity_keys() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let (kept, lost) = (link("google", "kept", "amy"), link("github", "lost", "amy"));
        store.link(&kept).await.expect("link");
        store.link(&lost).await.expect("link");
        // Entries for identities gone, someone else's, or unreadable fields are dropped by a listing.
        let _: () = con.del("dalea:ext:{github:lost}").expect("del");
        store.link(&link("oidc", "bens", "ben")).await.expect("link");
        for f in ["oidc:bens", "no-colon", "bad provider:x", "google:"] {
            let _: () = con.hset("dalea:exu:{amy}", f, "1").expect("hset");
        }
        assert_eq!(store.links_of("amy").await.expect("links_of"), vec![kept.clone()]);
        let index: HashMap<String, String> = con.hgetall("dalea:exu:{amy}").expect("hgetall");
        assert_eq!(index, HashMap::from([("google:kept".to_string(), "7".to_string())]));
        // A lost entry comes back when the identity is linked again (a sign-in through it).
        let _: () = con.del("dalea:exu:{amy}").expect("del");
        assert!(store.links_of("amy").await.expect("links_of").is_empty());
        assert_eq!(store.link(&link("google", "kept", "amy")).await.expect("link"), "amy");
        assert_eq!(store.links_of("amy").await.expect("links_of"), vec![kept]);
    }

    #[tokio::test]
    async fn a_full_looking_index_with_stale_entries_does_not_block_linking() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        for i in 0..MAX_LINKS_PER_PERSON + 5 {
            let _: () = con.hset("dalea:exu:{cat}", format!("google:gone-{i}"), "1").expect("hset");
        }
        assert_eq!(store.link(&link("google", "real", "cat")).await.expect("link"), "cat");
        let len: usize = con.hlen("dalea:exu:{cat}").expect("hlen");
        assert_eq!(len, 1, "the stale entries were dropped on the way");
    }

    #[tokio::test]
    async fn unreadable_links_are_corrupt_and_an_outage_is_unavailable() {
        let mut server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let _: () = con.set("dalea:ext:{google:x}", "\x09garbage").expect("set");
        let _: () = con.hset("dalea:exu:{una}", "google:x", "1").expect("hset");
        assert!(matches!(store.linked_user("google", "x").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.links_of("una").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.link(&link("google", "x", "ben")).await, Err(StoreError::Corrupt(_))));
        let still: Vec<u8> = con.get("dalea:ext:{google:x}").expect("get");
        assert_eq!(still, b"\x09garbage", "never overwritten");
        server.kill();
        assert!(matches!(store.link(&link("google", "y", "una")).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.linked_user("google", "y").await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.unlink("una", "google", "y").await, Err(StoreError::Unavailable(_))));
    }
}
