//! [`HistoryStore`] for the embedded store: each person's sign-in history (vigilance) in the
//! same redb file as the sessions. A sign-in is merged in one write transaction (redb runs one at
//! a time), so concurrent sign-ins are all counted.
//!
//! Table (created by the first sign-in recorded; readers treat a missing table as empty):
//! - `sign_in_history`: user id → `[version byte] ++ JSON` of the [`History`]

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::embedded::{open_read, unavailable, EmbeddedStore};
use super::embedded_account::{decode, encode};
use super::store::StoreError;
use crate::vigilance::history::{check_sign_in, History, HistoryStore, Keep, SignIn};

const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("sign_in_history");

fn record_sync(db: &Database, user: &str, sign_in: &SignIn, keep: Keep) -> Result<History, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let before = {
        let mut table = txn.open_table(HISTORY).map_err(unavailable)?;
        // An unreadable record is an error, never overwritten.
        let before: History =
            table.get(user).map_err(unavailable)?.map(|v| decode(v.value())).transpose()?.unwrap_or_default();
        let mut after = before.clone();
        after.record(sign_in, keep);
        if after != before {
            table.insert(user, encode(&after)?.as_slice()).map_err(unavailable)?;
        }
        before
    };
    txn.commit().map_err(unavailable)?;
    Ok(before)
}

fn history_sync(db: &Database, user: &str) -> Result<History, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let Some(table) = open_read(&txn, HISTORY)? else { return Ok(History::default()) };
    let value = table.get(user).map_err(unavailable)?;
    Ok(value.map(|v| decode(v.value())).transpose()?.unwrap_or_default())
}

fn forget_sync(db: &Database, user: &str) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let removed = txn.open_table(HISTORY).map_err(unavailable)?.remove(user).map_err(unavailable)?.is_some();
    txn.commit().map_err(unavailable)?;
    Ok(removed)
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn record_sign_in(&self, user_id: &str, sign_in: &SignIn, keep: Keep) -> Result<History, StoreError> {
        check_sign_in(sign_in, keep)?;
        let (user, sign_in) = (user_id.to_string(), sign_in.clone());
        self.blocking(move |db| record_sync(db, &user, &sign_in, keep)).await
    }

    async fn history(&self, user_id: &str) -> Result<History, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| history_sync(db, &user)).await
    }

    async fn forget_history(&self, user_id: &str) -> Result<bool, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| forget_sync(db, &user)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vigilance::history_contract::{run_all, sign_in};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded_store_fulfils_the_history_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        run_all(&EmbeddedStore::open(dir.path()).expect("open")).await;
    }

    #[tokio::test]
    async fn histories_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sign_in("amy-1", 1_700_000_000_000, 1, Some("GB"));
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store.record_sign_in("amy", &s, Keep::default()).await.expect("record");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let h = store.history("amy").await.expect("history");
        assert_eq!(h.sign_ins.len(), 1);
        assert_eq!(h.devices[0].first_session, "amy-1");
    }

    #[tokio::test]
    async fn an_unreadable_history_is_corrupt_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        {
            let txn = store.db.begin_write().expect("write");
            txn.open_table(HISTORY).expect("table").insert("amy", b"\x09garbage".as_slice()).expect("insert");
            txn.commit().expect("commit");
        }
        assert!(matches!(store.history("amy").await, Err(StoreError::Corrupt(_))));
        let s = sign_in("amy-1", 1, 1, None);
        assert!(matches!(store.record_sign_in("amy", &s, Keep::default()).await, Err(StoreError::Corrupt(_))));
        let txn = store.db.begin_read().expect("read");
        let kept = txn.open_table(HISTORY).expect("table").get("amy").expect("get").map(|v| v.value().to_vec());
        assert_eq!(kept.as_deref(), Some(b"\x09garbage".as_slice()));
    }
}
