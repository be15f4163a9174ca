//! [`PeopleStore`] for `RedisStore`: one STRING per created person and one per email, the
//! email's being the arbiter (see the key layout in the module header).
//!
//! - `P:person:{<id>}` = the [`Person`] (`[version byte] ++ JSON`), created with `SET … NX`.
//! - `P:pmail:{<email>}` = the id of the person with that (lower-case) email, created with
//!   `SET … NX` after the person's record. A person exists only when both agree: the record,
//!   and the claim of the record's email naming its id. They live in different slots, so a
//!   creation writes the record first and then claims the email:
//!   - claim won (or already ours): done;
//!   - claim lost to another id: our record is withdrawn (deleted only if unchanged) and the
//!     winner returned (its record was written before its claim, so it is there);
//!   - the id's record already exists: its email is claimed for it if unclaimed (finishing a
//!     creation that stopped half-way) and it is returned; if that email belongs to someone
//!     else, the record never was anyone (a creation that lost and did not withdraw), so it is
//!     deleted and the creation starts over.
//! - Records and claims are never changed or deleted otherwise, and never expire, so a person
//!   once complete stays exactly as created.
//! - The id and the email are escaped inside the hash tags like account ids (`tag`); the
//!   person's record shares its slot with their account keys.

use ::redis::Value;
use async_trait::async_trait;

use super::account::tag;
use super::conn::Conn;
use super::records::{delete_if_equal, read_record};
use super::{unavailable, RedisStore};
use crate::account::people::{check_id, email_key, normalized, PeopleStore, Person};
use crate::session::embedded_account::encode;
use crate::session::store::StoreError;

/// How often `create_person` starts over when the person or the email changes under it.
const ATTEMPTS: usize = 3;

impl RedisStore {
    fn person_key(&self, id: &str) -> String {
        format!("{}:person:{{{}}}", self.prefix, tag(id))
    }

    /// `email` in stored form (`email_key`).
    fn email_claim_key(&self, email: &str) -> String {
        format!("{}:pmail:{{{}}}", self.prefix, tag(email))
    }

    /// Who holds the email's claim.
    async fn email_owner(&self, conn: &Conn, email: &str) -> Result<Option<String>, StoreError> {
        conn.cmd(::redis::cmd("GET").arg(self.email_claim_key(email))).await.map_err(unavailable)
    }

    /// Claims `email` for `id` unless it is claimed already; returns who holds it afterwards.
    async fn claim_email(&self, conn: &Conn, email: &str, id: &str) -> Result<String, StoreError> {
        let key = self.email_claim_key(email);
        for _ in 0..ATTEMPTS {
            let set: Value = conn.cmd(::redis::cmd("SET").arg(&key).arg(id).arg("NX")).await.map_err(unavailable)?;
            if set != Value::Nil {
                return Ok(id.to_string());
            }
            if let Some(owner) = self.email_owner(conn, email).await? {
                return Ok(owner);
            }
        }
        Err(StoreError::Unavailable("the email kept changing while being claimed".into()))
    }

    /// The person with this id if complete: the record exists and its email names it.
    async fn complete_person(&self, conn: &Conn, id: &str) -> Result<Option<Person>, StoreError> {
        let Some((_, person)) = read_record::<Person>(conn, &self.person_key(id)).await? else { return Ok(None) };
        let owner = self.email_owner(conn, &person.email).await?;
        Ok((owner.as_deref() == Some(id) && person.id == id).then_some(person))
    }
}

#[async_trait]
impl PeopleStore for RedisStore {
    async fn create_person(&self, person: &Person) -> Result<Person, StoreError> {
        let person = normalized(person)?;
        let record = encode(&person)?;
        let key = self.person_key(&person.id);
        self.bounded("create_person", async {
            let conn = self.conn().await?;
            for _ in 0..ATTEMPTS {
                let set: Value =
                    conn.cmd(::redis::cmd("SET").arg(&key).arg(&record).arg("NX")).await.map_err(unavailable)?;
                if set != Value::Nil {
                    let owner = self.claim_email(conn, &person.email, &person.id).await?;
                    if owner == person.id {
                        return Ok(person);
                    }
                    // Lost the email: withdraw, and answer with the winner (whose record was
                    // written before its claim).
                    delete_if_equal(conn, &key, &record).await?;
                    if let Some(winner) = self.complete_person(conn, &owner).await? {
                        return Ok(winner);
                    }
                    continue;
                }
                let Some((raw, existing)) = read_record::<Person>(conn, &key).await? else {
                    continue; // withdrawn meanwhile
                };
                if self.claim_email(conn, &existing.email, &existing.id).await? == existing.id {
                    return Ok(existing);
                }
                // Its email is someone else's: it never was a person. Clear it and start over.
                delete_if_equal(conn, &key, &raw).await?;
            }
            Err(StoreError::Unavailable("the person kept changing while being created".into()))
        })
        .await
    }

    async fn person(&self, id: &str) -> Result<Option<Person>, StoreError> {
        check_id(id)?;
        self.bounded("person", async { self.complete_person(self.conn().await?, id).await }).await
    }

    async fn person_by_email(&self, email: &str) -> Result<Option<Person>, StoreError> {
        let email = email_key(email)?;
        self.bounded("person_by_email", async {
            let conn = self.conn().await?;
            let Some(owner) = self.email_owner(conn, &email).await? else { return Ok(None) };
            let record = read_record::<Person>(conn, &self.person_key(&owner)).await?;
            // A claim whose record is missing or names another email: a creation under way.
            Ok(record.map(|(_, p)| p).filter(|p| p.id == owner && p.email == email))
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
    use crate::account::people::created_person_id;
    use crate::account::people_contract::run_all;
    use crate::session::embedded_account::decode;

    fn person(id: &str, email: &str) -> Person {
        Person {
            id: id.into(),
            email: email.into(),
            display_name: "Amy".into(),
            created_at: 7,
            created_via: "oauth:google".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_store_fulfils_the_people_contract() {
        let server = RedisServer::start();
        run_all(&standalone(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_store_fulfils_the_people_contract() {
        let cluster = RedisCluster::start(3);
        run_all(&clustered(&cluster)).await;
    }

    #[test]
    fn hash_tags_hold_the_whole_escaped_id_and_email() {
        let store = unconnected();
        assert_eq!(store.person_key("p-1a"), "dalea:person:{p-1a}");
        assert_eq!(store.email_claim_key("a}b{c%@x"), "dalea:pmail:{a%7Db%7Bc%25@x}");
        // A person's record shares a slot with their account keys.
        let id = created_person_id("google", "108");
        let account = format!("dalea:totp:{{{id}}}");
        assert_eq!(Slot::for_key(store.person_key(&id).as_bytes()), Slot::for_key(account.as_bytes()));
    }

    #[tokio::test]
    async fn people_keys_are_laid_out_as_documented() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let amy = person("p-0123456789abcdef01234567", "A{m}y@Example.com");
        let stored = store.create_person(&amy).await.expect("create");
        assert_eq!(stored.email, "a{m}y@example.com");
        let mut con = raw(&server);
        let mut keys: Vec<String> = con.keys("*").expect("keys");
        keys.sort();
        assert_eq!(keys, ["dalea:person:{p-0123456789abcdef01234567}", "dalea:pmail:{a%7Bm%7Dy@example.com}"]);
        let record: Vec<u8> = con.get(&keys[0]).expect("get");
        assert_eq!(record.first(), Some(&1), "record version 1");
        assert_eq!(decode::<Person>(&record).expect("record"), stored);
        let owner: String = con.get(&keys[1]).expect("get");
        assert_eq!(owner, amy.id);
        for key in &keys {
            assert_eq!(con.pttl::<_, i64>(key).expect("pttl"), -1, "{key}: people never expire");
        }
    }

    #[tokio::test]
    async fn half_made_people_are_finished_or_cleared() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let amy = person("amy-1", "amy@example.com");
        // A creation that stopped after the record: nobody yet, until the same id comes back.
        let _: () = con.set("dalea:person:{amy-1}", encode(&amy).expect("encode")).expect("set");
        assert_eq!(store.person("amy-1").await.expect("person"), None);
        assert_eq!(store.person_by_email("amy@example.com").await.expect("by email"), None);
        let again = Person { display_name: "Amy Again".into(), ..amy.clone() };
        assert_eq!(store.create_person(&again).await.expect("create"), amy, "finished as first written");
        assert_eq!(store.person("amy-1").await.expect("person"), Some(amy.clone()));
        // A record whose email went to someone else is cleared when its id is created again.
        let ben = person("ben-1", "ben@example.com");
        let _: () = con.set("dalea:person:{ben-1}", encode(&ben).expect("encode")).expect("set");
        let _: () = con.set("dalea:pmail:{ben@example.com}", "ben-2").expect("set");
        let ben2 = person("ben-2", "ben@example.com");
        let _: () = con.set("dalea:person:{ben-2}", encode(&ben2).expect("encode")).expect("set");
        assert_eq!(store.person("ben-1").await.expect("person"), None, "the email is not ben-1's");
        let ben_new = person("ben-1", "ben.new@example.com");
        assert_eq!(store.create_person(&ben_new).await.expect("create"), ben_new, "created afresh");
        assert_eq!(store.person("ben-1").await.expect("person"), Some(ben_new));
        assert_eq!(store.person_by_email("ben@example.com").await.expect("by email"), Some(ben2));
        // A claim without its record (a creation under way) is nobody's yet.
        let _: () = con.set("dalea:pmail:{cat@example.com}", "cat-1").expect("set");
        assert_eq!(store.person_by_email("cat@example.com").await.expect("by email"), None);
    }

    #[tokio::test]
    async fn unreadable_people_are_corrupt_and_an_outage_is_unavailable() {
        let mut server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let _: () = con.set("dalea:person:{bad}", "\x09garbage").expect("set");
        let _: () = con.set("dalea:pmail:{bad@example.com}", "bad").expect("set");
        assert!(matches!(store.person("bad").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.person_by_email("bad@example.com").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.create_person(&person("bad", "x@example.com")).await, Err(StoreError::Corrupt(_))));
        let still: Vec<u8> = con.get("dalea:person:{bad}").expect("get");
        assert_eq!(still, b"\x09garbage", "never overwritten");
        server.kill();
        assert!(matches!(store.create_person(&person("una", "u@example.com")).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.person("una").await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.person_by_email("u@example.com").await, Err(StoreError::Unavailable(_))));
    }
}
