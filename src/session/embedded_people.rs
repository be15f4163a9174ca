//! [`PeopleStore`] for the embedded store: created people in the same redb file as the
//! sessions. A creation is one write transaction (redb runs one at a time), so "create unless
//! the id or the email is taken" and the email index change together or not at all.
//!
//! Tables (created by the first `create_person`; readers treat a missing table as empty):
//! - `people`: id → `[version byte] ++ JSON` of the [`Person`] (the truth)
//! - `people_emails`: lower-case email → id

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::embedded::{open_read, unavailable, EmbeddedStore};
use super::embedded_account::{decode, encode};
use super::store::StoreError;
use crate::account::people::{check_id, email_key, normalized, PeopleStore, Person};

const PEOPLE: TableDefinition<&str, &[u8]> = TableDefinition::new("people");
const PEOPLE_EMAILS: TableDefinition<&str, &str> = TableDefinition::new("people_emails");

/// An email index entry whose person is missing: the two are only ever written together.
fn dangling() -> StoreError {
    StoreError::Corrupt("an email names a person who is not stored".into())
}

fn create_sync(db: &Database, person: &Person, record: &[u8]) -> Result<Person, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let existing = {
        let mut people = txn.open_table(PEOPLE).map_err(unavailable)?;
        let mut emails = txn.open_table(PEOPLE_EMAILS).map_err(unavailable)?;
        // The id decides first, then the email.
        let by_id = people.get(person.id.as_str()).map_err(unavailable)?.map(|v| decode::<Person>(v.value()));
        let owner = emails.get(person.email.as_str()).map_err(unavailable)?.map(|v| v.value().to_string());
        match (by_id, owner) {
            (Some(existing), _) => Some(existing?),
            (None, Some(owner)) => {
                let value = people.get(owner.as_str()).map_err(unavailable)?.ok_or_else(dangling)?;
                Some(decode::<Person>(value.value())?)
            }
            (None, None) => {
                people.insert(person.id.as_str(), record).map_err(unavailable)?;
                emails.insert(person.email.as_str(), person.id.as_str()).map_err(unavailable)?;
                None
            }
        }
    };
    match existing {
        Some(existing) => {
            txn.abort().map_err(unavailable)?;
            Ok(existing)
        }
        None => {
            txn.commit().map_err(unavailable)?;
            Ok(person.clone())
        }
    }
}

fn person_sync(db: &Database, id: &str) -> Result<Option<Person>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let Some(people) = open_read(&txn, PEOPLE)? else { return Ok(None) };
    let value = people.get(id).map_err(unavailable)?;
    value.map(|v| decode(v.value())).transpose()
}

fn person_by_email_sync(db: &Database, email: &str) -> Result<Option<Person>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let (Some(emails), Some(people)) = (open_read(&txn, PEOPLE_EMAILS)?, open_read(&txn, PEOPLE)?) else {
        return Ok(None);
    };
    let Some(owner) = emails.get(email).map_err(unavailable)? else { return Ok(None) };
    let value = people.get(owner.value()).map_err(unavailable)?.ok_or_else(dangling)?;
    Ok(Some(decode(value.value())?))
}

#[async_trait]
impl PeopleStore for EmbeddedStore {
    async fn create_person(&self, person: &Person) -> Result<Person, StoreError> {
        let person = normalized(person)?;
        let record = encode(&person)?;
        self.blocking(move |db| create_sync(db, &person, &record)).await
    }

    async fn person(&self, id: &str) -> Result<Option<Person>, StoreError> {
        check_id(id)?;
        let id = id.to_string();
        self.blocking(move |db| person_sync(db, &id)).await
    }

    async fn person_by_email(&self, email: &str) -> Result<Option<Person>, StoreError> {
        let email = email_key(email)?;
        self.blocking(move |db| person_by_email_sync(db, &email)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::people::created_person_id;
    use crate::account::people_contract::run_all;

    fn amy() -> Person {
        Person {
            id: created_person_id("google", "108"),
            email: "amy@example.com".into(),
            display_name: "Amy".into(),
            created_at: 5,
            created_via: "oauth:google".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded_store_fulfils_the_people_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        run_all(&EmbeddedStore::open(dir.path()).expect("open")).await;
    }

    #[tokio::test]
    async fn people_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            assert_eq!(store.person(&amy().id).await.expect("before anyone"), None);
            assert_eq!(store.person_by_email("amy@example.com").await.expect("before anyone"), None);
            assert_eq!(store.create_person(&amy()).await.expect("create"), amy());
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.person(&amy().id).await.expect("person"), Some(amy()));
        assert_eq!(store.person_by_email("AMY@example.com").await.expect("by email"), Some(amy()));
        let other = Person { id: "p-other".into(), ..amy() };
        assert_eq!(store.create_person(&other).await.expect("create"), amy(), "the email is still taken");
    }

    #[tokio::test]
    async fn unreadable_people_are_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        {
            let txn = store.db.begin_write().expect("write");
            txn.open_table(PEOPLE).expect("table").insert("bad", b"\x09garbage".as_slice()).expect("insert");
            let mut emails = txn.open_table(PEOPLE_EMAILS).expect("table");
            emails.insert("bad@example.com", "bad").expect("insert");
            emails.insert("gone@example.com", "gone").expect("insert");
            drop(emails);
            txn.commit().expect("commit");
        }
        assert!(matches!(store.person("bad").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.person_by_email("bad@example.com").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.person_by_email("gone@example.com").await, Err(StoreError::Corrupt(_))));
        let again = Person { id: "bad".into(), ..amy() };
        assert!(matches!(store.create_person(&again).await, Err(StoreError::Corrupt(_))), "never overwritten");
        let taken = Person { email: "gone@example.com".into(), ..amy() };
        assert!(matches!(store.create_person(&taken).await, Err(StoreError::Corrupt(_))));
        assert_eq!(store.person(&amy().id).await.expect("person"), None);
    }
}
