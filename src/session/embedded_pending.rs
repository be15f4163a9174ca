//! [`PendingStore`] for the embedded store: sign-in ceremony records in the same redb file as
//! the sessions. A take is one write transaction (redb runs one at a time), so a record is
//! taken at most once even under concurrent calls.
//!
//! Tables (created by the first `put_pending`; readers treat a missing table as empty):
//! - `pending`: (kind, id) → (expires at, value)
//! - `pending_expiry`: (expires at, kind, id) → () — the same records ordered by expiry, so
//!   each `put_pending` purges up to [`PURGE_BATCH`] expired ones without scanning the rest
//!
//! Expired records are purged by the wall clock (the embedded store has no other), taken ones
//! at once. At most [`MAX_RECORDS`] are kept: past that (after purging) a new record is
//! refused with `Unavailable(`[`TOO_MANY`]`)`; replacing an existing one is always allowed.

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::embedded::{unavailable, EmbeddedStore};
use super::store::StoreError;
use crate::clock::{Clock, Millis, SystemClock};
use crate::pending::{check_key, check_put, PendingStore, MAX_RECORDS, TOO_MANY};

const PENDING: TableDefinition<(&str, &str), (Millis, &[u8])> = TableDefinition::new("pending");
const PENDING_EXPIRY: TableDefinition<(Millis, &str, &str), ()> = TableDefinition::new("pending_expiry");
/// How many expired records one `put_pending` deletes at most: more than it adds, so expired
/// records never pile up while sign-ins keep starting.
const PURGE_BATCH: usize = 64;

/// Deletes up to [`PURGE_BATCH`] records expired at `now`. Returns how many.
fn purge(txn: &WriteTransaction, now: Millis) -> Result<usize, StoreError> {
    let mut expiry = txn.open_table(PENDING_EXPIRY).map_err(unavailable)?;
    let mut expired: Vec<(Millis, String, String)> = Vec::new();
    // Keys order by expiry first: everything below (now + 1, "", "") expired at or before `now`.
    for entry in expiry.range(..(now.saturating_add(1), "", "")).map_err(unavailable)?.take(PURGE_BATCH) {
        let (key, _) = entry.map_err(unavailable)?;
        let (at, kind, id) = key.value();
        expired.push((at, kind.to_string(), id.to_string()));
    }
    let mut pending = txn.open_table(PENDING).map_err(unavailable)?;
    for (at, kind, id) in &expired {
        expiry.remove((*at, kind.as_str(), id.as_str())).map_err(unavailable)?;
        // Only the record that expiry entry was written for (a later put may have replaced it).
        let current = pending.get((kind.as_str(), id.as_str())).map_err(unavailable)?.map(|v| v.value().0);
        if current == Some(*at) {
            pending.remove((kind.as_str(), id.as_str())).map_err(unavailable)?;
        }
    }
    Ok(expired.len())
}

/// Removes (kind, id) and its expiry entry. Returns the removed record.
fn remove(txn: &WriteTransaction, kind: &str, id: &str) -> Result<Option<(Millis, Vec<u8>)>, StoreError> {
    let mut pending = txn.open_table(PENDING).map_err(unavailable)?;
    let Some(old) = pending.remove((kind, id)).map_err(unavailable)? else { return Ok(None) };
    let (at, value) = old.value();
    let old = (at, value.to_vec());
    txn.open_table(PENDING_EXPIRY).map_err(unavailable)?.remove((at, kind, id)).map_err(unavailable)?;
    Ok(Some(old))
}

/// Purges, then replaces the record (or only removes the old one when `expires_at` is past).
fn put_sync(
    db: &Database,
    kind: &str,
    id: &str,
    value: &[u8],
    expires_at: Millis,
    now: Millis,
    cap: u64,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    purge(&txn, now)?;
    let replaced = remove(&txn, kind, id)?.is_some();
    if expires_at > now {
        let mut pending = txn.open_table(PENDING).map_err(unavailable)?;
        if !replaced && pending.len().map_err(unavailable)? >= cap {
            drop(pending);
            // Keep the purge's work; refuse the new record.
            txn.commit().map_err(unavailable)?;
            return Err(StoreError::Unavailable(TOO_MANY.into()));
        }
        pending.insert((kind, id), (expires_at, value)).map_err(unavailable)?;
        txn.open_table(PENDING_EXPIRY).map_err(unavailable)?.insert((expires_at, kind, id), ()).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

fn take_sync(db: &Database, kind: &str, id: &str, now: Millis) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let Some((expires_at, value)) = remove(&txn, kind, id)? else {
        txn.abort().map_err(unavailable)?;
        return Ok(None);
    };
    txn.commit().map_err(unavailable)?;
    Ok((now < expires_at).then_some(value))
}

impl EmbeddedStore {
    /// `put_pending` with the purge clock and the cap given (tests use small caps).
    async fn put_pending_capped(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        expires_at: Millis,
        now: Millis,
        cap: u64,
    ) -> Result<(), StoreError> {
        check_put(kind, id, value)?;
        let (kind, id, value) = (kind.to_string(), id.to_string(), value.to_vec());
        self.blocking(move |db| put_sync(db, &kind, &id, &value, expires_at, now, cap)).await
    }
}

#[async_trait]
impl PendingStore for EmbeddedStore {
    async fn put_pending(&self, kind: &str, id: &str, value: &[u8], expires_at: Millis) -> Result<(), StoreError> {
        self.put_pending_capped(kind, id, value, expires_at, SystemClock.now(), MAX_RECORDS).await
    }

    async fn take_pending(&self, kind: &str, id: &str, now: Millis) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(kind, id)?;
        let (kind, id) = (kind.to_string(), id.to_string());
        self.blocking(move |db| take_sync(db, &kind, &id, now)).await
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;
    use crate::pending::contract::{run_all, TTL};

    fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        (dir, store)
    }

    fn counts(store: &EmbeddedStore) -> (u64, u64) {
        let txn = store.db.begin_read().expect("read");
        let pending = txn.open_table(PENDING).expect("table").len().expect("len");
        let expiry = txn.open_table(PENDING_EXPIRY).expect("table").len().expect("len");
        (pending, expiry)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded_store_fulfils_the_pending_contract() {
        let (_dir, store) = open();
        run_all(&store, SystemClock.now()).await;
        assert_eq!(counts(&store), (0, 0), "every record was taken, expired or refused: nothing left");
    }

    #[tokio::test]
    async fn a_take_before_any_put_finds_nothing() {
        let (_dir, store) = open();
        assert_eq!(store.take_pending("oauth", "abc", 0).await.expect("take"), None);
    }

    #[tokio::test]
    async fn expired_records_are_purged_by_later_puts_a_batch_at_a_time() {
        let (_dir, store) = open();
        let now = 1_000_000;
        for i in 0..150 {
            store.put_pending_capped("oauth", &format!("old{i}"), b"v", now + 10, now, MAX_RECORDS).await.expect("put");
        }
        store.put_pending_capped("oauth", "live", b"v", now + TTL, now, MAX_RECORDS).await.expect("put");
        assert_eq!(counts(&store), (151, 151));
        // Later, each put deletes up to a batch of expired records.
        let later = now + 100;
        store.put_pending_capped("oauth", "n1", b"v", later + TTL, later, MAX_RECORDS).await.expect("put");
        assert_eq!(counts(&store), (152 - PURGE_BATCH as u64, 152 - PURGE_BATCH as u64));
        store.put_pending_capped("oauth", "n2", b"v", later + TTL, later, MAX_RECORDS).await.expect("put");
        store.put_pending_capped("oauth", "n3", b"v", later + TTL, later, MAX_RECORDS).await.expect("put");
        assert_eq!(counts(&store), (4, 4), "only the live records are left");
        assert_eq!(store.take_pending("oauth", "live", later).await.expect("take"), Some(b"v".to_vec()));
    }

    #[tokio::test]
    async fn a_replaced_records_old_expiry_does_not_purge_the_new_one() {
        let (_dir, store) = open();
        let now = 1_000_000;
        store.put_pending_capped("oauth", "r", b"old", now + 10, now, MAX_RECORDS).await.expect("put");
        store.put_pending_capped("oauth", "r", b"new", now + TTL, now, MAX_RECORDS).await.expect("put");
        assert_eq!(counts(&store), (1, 1), "the old expiry entry went with the old record");
        store.put_pending_capped("oauth", "other", b"v", now + TTL, now + 20, MAX_RECORDS).await.expect("put");
        assert_eq!(store.take_pending("oauth", "r", now + 20).await.expect("take"), Some(b"new".to_vec()));
    }

    #[tokio::test]
    async fn past_the_cap_new_records_are_refused_until_some_expire() {
        let (_dir, store) = open();
        let now = 1_000_000;
        for i in 0..5 {
            store.put_pending_capped("oauth", &format!("c{i}"), b"v", now + 10 * (i + 1), now, 5).await.expect("put");
        }
        let full = store.put_pending_capped("oauth", "c5", b"v", now + TTL, now, 5).await;
        assert!(matches!(&full, Err(StoreError::Unavailable(m)) if m == TOO_MANY), "{full:?}");
        // Replacing a record is not a new one.
        store.put_pending_capped("oauth", "c0", b"w", now + 10, now, 5).await.expect("replace at the cap");
        // Once one has expired, the purge makes room.
        store.put_pending_capped("oauth", "c5", b"v", now + TTL, now + 20, 5).await.expect("room after the purge");
        assert_eq!(counts(&store), (4, 4), "c0 and c1 (expired by now + 20) purged, c5 added");
        // A take frees a place too.
        assert!(store.take_pending("oauth", "c2", now).await.expect("take").is_some());
        store.put_pending_capped("oauth", "c6", b"v", now + TTL, now + 20, 5).await.expect("room after a take");
        store.put_pending_capped("oauth", "c7", b"v", now + TTL, now + 20, 5).await.expect("up to the cap");
        assert!(store.put_pending_capped("oauth", "c8", b"v", now + TTL, now + 20, 5).await.is_err(), "full again");
    }

    #[tokio::test]
    async fn pending_records_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expires = SystemClock.now() + TTL;
        EmbeddedStore::open(dir.path()).expect("open").put_pending("oauth", "kept", b"v", expires).await.expect("put");
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.take_pending("oauth", "kept", expires - 1).await.expect("take"), Some(b"v".to_vec()));
    }
}
