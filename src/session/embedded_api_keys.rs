//! [`ApiKeyStore`] for the embedded store: API keys in the same redb file as the sessions, in
//! tables of their own (no session operation touches them, and no key operation a session).
//!
//! Tables (created by [`create_tables`] when the store opens):
//! - `api_keys`: key hash (32 bytes) → `[version byte] ++ JSON` of the [`ApiKey`]
//! - `user_api_keys`: (user id, key id) → key hash (the per-person index); the tuple key keeps
//!   one person's keys together whatever characters the id holds
//!
//! Every change runs in one write transaction, so the record and its index entry change
//! together, and use-recording cannot resurrect a key removed meanwhile.

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::embedded::{unavailable, EmbeddedStore};
use super::embedded_account::{decode, encode};
use super::store::{Activity, StoreError};
use super::TokenHash;
use crate::api_keys::{ApiKey, ApiKeyStore};

const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
const USER_API_KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("user_api_keys");

/// Creates the API key tables, so readers never see "table does not exist".
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(API_KEYS).map_err(unavailable)?;
    txn.open_table(USER_API_KEYS).map_err(unavailable)?;
    Ok(())
}

fn insert_sync(db: &Database, key: &ApiKey, record: &[u8]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut keys = txn.open_table(API_KEYS).map_err(unavailable)?;
        keys.insert(key.key_hash.0.as_slice(), record).map_err(unavailable)?;
        let mut index = txn.open_table(USER_API_KEYS).map_err(unavailable)?;
        index.insert((key.user_id.as_str(), key.id.as_str()), key.key_hash.0.as_slice()).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

fn get_sync(db: &Database, hash: &TokenHash) -> Result<Option<ApiKey>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let keys = txn.open_table(API_KEYS).map_err(unavailable)?;
    let value = keys.get(hash.0.as_slice()).map_err(unavailable)?;
    value.map(|v| decode(v.value())).transpose()
}

fn list_sync(db: &Database, user: &str) -> Result<Vec<ApiKey>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let index = txn.open_table(USER_API_KEYS).map_err(unavailable)?;
    let keys = txn.open_table(API_KEYS).map_err(unavailable)?;
    let mut out = Vec::new();
    // Tuples order by user id first: this person's entries are one run starting at (user, "").
    for entry in index.range((user, "")..).map_err(unavailable)? {
        let (key, hash) = entry.map_err(unavailable)?;
        if key.value().0 != user {
            break;
        }
        if let Some(record) = keys.get(hash.value()).map_err(unavailable)? {
            out.push(decode(record.value())?);
        }
    }
    Ok(out)
}

/// Removes the index entry and the record it names. A record that cannot be read is removed
/// all the same (it counts as no key).
fn remove_sync(db: &Database, user: &str, id: &str) -> Result<Option<ApiKey>, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let removed = {
        let mut index = txn.open_table(USER_API_KEYS).map_err(unavailable)?;
        let hash = index.remove((user, id)).map_err(unavailable)?.map(|h| h.value().to_vec());
        match hash {
            None => None,
            Some(hash) => {
                let mut keys = txn.open_table(API_KEYS).map_err(unavailable)?;
                let record = keys.remove(hash.as_slice()).map_err(unavailable)?;
                record.and_then(|r| decode::<ApiKey>(r.value()).ok())
            }
        }
    };
    txn.commit().map_err(unavailable)?;
    Ok(removed)
}

/// Moves last-used forward (and sets the IP when one is given) for keys that still exist.
fn record_use_sync(db: &Database, batch: &[Activity]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut keys = txn.open_table(API_KEYS).map_err(unavailable)?;
        for a in batch {
            let current = keys.get(a.token_hash.0.as_slice()).map_err(unavailable)?;
            // Removed meanwhile (never resurrect it), or unreadable (left alone rather than
            // failing everyone else's uses).
            let Some(Ok(mut key)) = current.map(|r| decode::<ApiKey>(r.value())) else { continue };
            if key.last_used_at.is_some_and(|used| a.at <= used) {
                continue;
            }
            key.last_used_at = Some(a.at);
            if a.ip.is_some() {
                key.last_ip = a.ip;
            }
            keys.insert(a.token_hash.0.as_slice(), encode(&key)?.as_slice()).map_err(unavailable)?;
        }
    }
    txn.commit().map_err(unavailable)
}

#[async_trait]
impl ApiKeyStore for EmbeddedStore {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let record = encode(key)?;
        let key = key.clone();
        self.blocking(move |db| insert_sync(db, &key, &record)).await
    }

    async fn key_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiKey>, StoreError> {
        let hash = *hash;
        self.blocking(move |db| get_sync(db, &hash)).await
    }

    async fn keys_for_user(&self, user_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| list_sync(db, &user)).await
    }

    /// Single node: nothing to tell; the caller drops the key from this process's memory.
    async fn remove_key(&self, user_id: &str, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let (user, id) = (user_id.to_string(), id.to_string());
        self.blocking(move |db| remove_sync(db, &user, &id)).await
    }

    async fn record_key_use(&self, batch: &[Activity]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        self.blocking(move |db| record_use_sync(db, &batch)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::contract::{api_key, keys_and_sessions_are_independent, run_all};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded_store_fulfils_the_api_key_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        run_all(&store).await;
    }

    #[tokio::test]
    async fn embedded_api_keys_and_sessions_are_independent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        keys_and_sessions_are_independent(&store).await;
    }

    #[tokio::test]
    async fn embedded_api_keys_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = api_key("ora", 1);
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store.insert_key(&key).await.expect("insert");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.key_by_hash(&key.key_hash).await.expect("get"), Some(key.clone()));
        assert_eq!(store.keys_for_user("ora").await.expect("list"), [key]);
    }

    #[tokio::test]
    async fn embedded_api_key_records_are_versioned_and_unreadable_ones_are_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let key = api_key("pat", 1);
        store.insert_key(&key).await.expect("insert");
        let raw = {
            let txn = store.db.begin_read().expect("read");
            let table = txn.open_table(API_KEYS).expect("table");
            table.get(key.key_hash.0.as_slice()).expect("get").map(|v| v.value().to_vec()).expect("stored")
        };
        assert_eq!(raw.first(), Some(&1), "record version 1");
        {
            let txn = store.db.begin_write().expect("write");
            let mut table = txn.open_table(API_KEYS).expect("table");
            table.insert(key.key_hash.0.as_slice(), b"\x09garbage".as_slice()).expect("insert");
            drop(table);
            txn.commit().expect("commit");
        }
        assert!(matches!(store.key_by_hash(&key.key_hash).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.keys_for_user("pat").await, Err(StoreError::Corrupt(_))));
        let used = Activity { token_hash: key.key_hash, at: key.created_at + 1, ip: None };
        store.record_key_use(&[used]).await.expect("an unreadable key is skipped, not fatal");
        assert_eq!(store.remove_key("pat", &key.id).await.expect("an unreadable key can still be removed"), None);
        assert_eq!(store.key_by_hash(&key.key_hash).await.expect("get"), None);
        assert!(store.keys_for_user("pat").await.expect("list").is_empty());
    }
}
