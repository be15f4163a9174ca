//! [`LinkStore`] for the embedded store: external identity links in the same redb file as the
//! sessions. Each change is one write transaction (redb runs one at a time), so "link unless
//! linked", the per-person cap and the index change together or not at all.
//!
//! Tables (created by the first `link`; readers treat a missing table as empty):
//! - `links`: (provider, subject) → `[version byte] ++ JSON` of the [`Link`] (the truth)
//! - `user_links`: (user id, provider, subject) → () — the per-person index; the tuple key
//!   keeps one person's links together whatever characters the ids hold

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::embedded::{open_read, unavailable, EmbeddedStore};
use super::embedded_account::{decode, encode};
use super::store::StoreError;
use crate::account::links::{check_identity, check_link, too_many_links, Link, LinkStore, MAX_LINKS_PER_PERSON};

const LINKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("links");
const USER_LINKS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("user_links");

fn link_sync(db: &Database, link: &Link, record: &[u8]) -> Result<String, StoreError> {
    let (user, provider, subject) = (link.user_id.as_str(), link.provider.as_str(), link.subject.as_str());
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut links = txn.open_table(LINKS).map_err(unavailable)?;
        let existing = links.get((provider, subject)).map_err(unavailable)?.map(|v| decode::<Link>(v.value()));
        if let Some(existing) = existing {
            drop(links);
            txn.abort().map_err(unavailable)?;
            return Ok(existing?.user_id);
        }
        let mut index = txn.open_table(USER_LINKS).map_err(unavailable)?;
        let mut count = 0;
        for entry in index.range((user, "", "")..).map_err(unavailable)?.take(MAX_LINKS_PER_PERSON) {
            if entry.map_err(unavailable)?.0.value().0 != user {
                break;
            }
            count += 1;
        }
        if count >= MAX_LINKS_PER_PERSON {
            drop((links, index));
            txn.abort().map_err(unavailable)?;
            return Err(too_many_links());
        }
        links.insert((provider, subject), record).map_err(unavailable)?;
        index.insert((user, provider, subject), ()).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)?;
    Ok(link.user_id.clone())
}

fn linked_user_sync(db: &Database, provider: &str, subject: &str) -> Result<Option<String>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let Some(links) = open_read(&txn, LINKS)? else { return Ok(None) };
    let value = links.get((provider, subject)).map_err(unavailable)?;
    Ok(value.map(|v| decode::<Link>(v.value())).transpose()?.map(|l| l.user_id))
}

fn links_of_sync(db: &Database, user: &str) -> Result<Vec<Link>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let (Some(index), Some(links)) = (open_read(&txn, USER_LINKS)?, open_read(&txn, LINKS)?) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    // Tuples order by user id first: this person's entries are one run starting at (user, "", "").
    for entry in index.range((user, "", "")..).map_err(unavailable)? {
        let (key, _) = entry.map_err(unavailable)?;
        let (owner, provider, subject) = key.value();
        if owner != user {
            break;
        }
        if let Some(record) = links.get((provider, subject)).map_err(unavailable)? {
            let link: Link = decode(record.value())?;
            if link.user_id == user {
                out.push(link);
            }
        }
    }
    Ok(out)
}

fn unlink_sync(db: &Database, user: &str, provider: &str, subject: &str) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let removed = {
        let mut links = txn.open_table(LINKS).map_err(unavailable)?;
        let existing = links.get((provider, subject)).map_err(unavailable)?.map(|v| decode::<Link>(v.value()));
        let theirs = existing.transpose()?.is_some_and(|l| l.user_id == user);
        if theirs {
            links.remove((provider, subject)).map_err(unavailable)?;
            txn.open_table(USER_LINKS).map_err(unavailable)?.remove((user, provider, subject)).map_err(unavailable)?;
        }
        theirs
    };
    if removed {
        txn.commit().map_err(unavailable)?;
    } else {
        txn.abort().map_err(unavailable)?;
    }
    Ok(removed)
}

#[async_trait]
impl LinkStore for EmbeddedStore {
    async fn link(&self, link: &Link) -> Result<String, StoreError> {
        check_link(link)?;
        let record = encode(link)?;
        let link = link.clone();
        self.blocking(move |db| link_sync(db, &link, &record)).await
    }

    async fn linked_user(&self, provider: &str, subject: &str) -> Result<Option<String>, StoreError> {
        check_identity(provider, subject)?;
        let (provider, subject) = (provider.to_string(), subject.to_string());
        self.blocking(move |db| linked_user_sync(db, &provider, &subject)).await
    }

    async fn links_of(&self, user_id: &str) -> Result<Vec<Link>, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| links_of_sync(db, &user)).await
    }

    async fn unlink(&self, user_id: &str, provider: &str, subject: &str) -> Result<bool, StoreError> {
        check_identity(provider, subject)?;
        let (user, provider, subject) = (user_id.to_string(), provider.to_string(), subject.to_string());
        self.blocking(move |db| unlink_sync(db, &user, &provider, &subject)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::links_contract::run_all;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded_store_fulfils_the_link_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        run_all(&EmbeddedStore::open(dir.path()).expect("open")).await;
    }

    #[tokio::test]
    async fn links_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = Link {
            provider: "google".into(),
            subject: "108".into(),
            user_id: "amy".into(),
            linked_at: 5,
            email: Some("amy@example.com".into()),
        };
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            assert_eq!(store.links_of("amy").await.expect("before any link"), vec![]);
            assert_eq!(store.link(&link).await.expect("link"), "amy");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.linked_user("google", "108").await.expect("linked_user").as_deref(), Some("amy"));
        assert_eq!(store.links_of("amy").await.expect("links_of"), vec![link]);
    }

    #[tokio::test]
    async fn unreadable_links_are_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        {
            let txn = store.db.begin_write().expect("write");
            txn.open_table(LINKS).expect("table").insert(("google", "x"), b"\x09garbage".as_slice()).expect("insert");
            txn.open_table(USER_LINKS).expect("table").insert(("amy", "google", "x"), ()).expect("insert");
            txn.commit().expect("commit");
        }
        assert!(matches!(store.linked_user("google", "x").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.links_of("amy").await, Err(StoreError::Corrupt(_))));
        let relink =
            Link { provider: "google".into(), subject: "x".into(), user_id: "ben".into(), linked_at: 1, email: None };
        assert!(matches!(store.link(&relink).await, Err(StoreError::Corrupt(_))), "never overwritten");
    }
}
