//! [`PasskeyStore`] for the embedded store: passkeys in the same redb file as the sessions.
//! Each change is one write transaction (redb runs one at a time), so "add unless registered",
//! the per-person cap and the index change together or not at all.
//!
//! Tables (created by the first `add_passkey`; readers treat a missing table as empty):
//! - `passkeys`: credential id → `[version byte] ++ JSON` of the [`PasskeyRecord`] (the truth)
//! - `user_passkeys`: (user id, credential id) → () — the per-person index; the tuple key keeps
//!   one person's passkeys together whatever characters the ids hold

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::embedded::{open_read, unavailable, EmbeddedStore};
use super::embedded_account::{decode, encode};
use super::store::StoreError;
use crate::clock::Millis;
use crate::passkeys::{
    check_credential_id, check_name, check_passkey, check_record, oldest_first, too_many_passkeys, Passkey,
    PasskeyRecord, PasskeyStore, MAX_PASSKEYS_PER_PERSON,
};

const PASSKEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("passkeys");
const USER_PASSKEYS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_passkeys");

fn add_sync(db: &Database, record: &PasskeyRecord, bytes: &[u8]) -> Result<bool, StoreError> {
    let (user, id) = (record.user_id.as_str(), record.id.as_str());
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut passkeys = txn.open_table(PASSKEYS).map_err(unavailable)?;
        let existing = passkeys.get(id).map_err(unavailable)?.map(|v| decode::<PasskeyRecord>(v.value()).map(drop));
        if let Some(readable) = existing {
            drop(passkeys);
            txn.abort().map_err(unavailable)?;
            readable?; // unreadable: corrupt, and never overwritten
            return Ok(false);
        }
        let mut index = txn.open_table(USER_PASSKEYS).map_err(unavailable)?;
        let mut count = 0;
        for entry in index.range((user, "")..).map_err(unavailable)?.take(MAX_PASSKEYS_PER_PERSON) {
            if entry.map_err(unavailable)?.0.value().0 != user {
                break;
            }
            count += 1;
        }
        if count >= MAX_PASSKEYS_PER_PERSON {
            drop((passkeys, index));
            txn.abort().map_err(unavailable)?;
            return Err(too_many_passkeys());
        }
        passkeys.insert(id, bytes).map_err(unavailable)?;
        index.insert((user, id), ()).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)?;
    Ok(true)
}

fn passkey_sync(db: &Database, id: &str) -> Result<Option<PasskeyRecord>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let Some(passkeys) = open_read(&txn, PASSKEYS)? else { return Ok(None) };
    let value = passkeys.get(id).map_err(unavailable)?;
    value.map(|v| decode(v.value())).transpose()
}

fn passkeys_of_sync(db: &Database, user: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let (Some(index), Some(passkeys)) = (open_read(&txn, USER_PASSKEYS)?, open_read(&txn, PASSKEYS)?) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    // Tuples order by user id first: this person's entries are one run starting at (user, "").
    for entry in index.range((user, "")..).map_err(unavailable)? {
        let (key, _) = entry.map_err(unavailable)?;
        let (owner, id) = key.value();
        if owner != user {
            break;
        }
        if let Some(value) = passkeys.get(id).map_err(unavailable)? {
            let record: PasskeyRecord = decode(value.value())?;
            if record.user_id == user {
                out.push(record);
            }
        }
    }
    oldest_first(&mut out);
    Ok(out)
}

/// Runs `change` on the person's passkey `id` inside one write transaction, committed only
/// when it is theirs and `change` returns `Some` (the record to write, or `None` inside it to
/// remove it). Whether it was theirs.
fn change_sync(
    db: &Database,
    user: &str,
    id: &str,
    change: impl FnOnce(PasskeyRecord) -> Result<Option<PasskeyRecord>, StoreError>,
) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let changed = apply(&txn, user, id, change);
    match changed {
        Ok(true) => txn.commit().map_err(unavailable)?,
        _ => txn.abort().map_err(unavailable)?,
    }
    changed
}

fn apply(
    txn: &WriteTransaction,
    user: &str,
    id: &str,
    change: impl FnOnce(PasskeyRecord) -> Result<Option<PasskeyRecord>, StoreError>,
) -> Result<bool, StoreError> {
    let mut passkeys = txn.open_table(PASSKEYS).map_err(unavailable)?;
    let existing = passkeys.get(id).map_err(unavailable)?.map(|v| decode::<PasskeyRecord>(v.value())).transpose()?;
    let Some(record) = existing.filter(|r| r.user_id == user) else { return Ok(false) };
    match change(record)? {
        Some(updated) => {
            passkeys.insert(id, encode(&updated)?.as_slice()).map_err(unavailable)?;
        }
        None => {
            passkeys.remove(id).map_err(unavailable)?;
            txn.open_table(USER_PASSKEYS).map_err(unavailable)?.remove((user, id)).map_err(unavailable)?;
        }
    }
    Ok(true)
}

#[async_trait]
impl PasskeyStore for EmbeddedStore {
    async fn add_passkey(&self, record: &PasskeyRecord) -> Result<bool, StoreError> {
        check_record(record)?;
        let bytes = encode(record)?;
        let record = record.clone();
        self.blocking(move |db| add_sync(db, &record, &bytes)).await
    }

    async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| passkeys_of_sync(db, &user)).await
    }

    async fn passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>, StoreError> {
        check_credential_id(credential_id)?;
        let id = credential_id.to_string();
        self.blocking(move |db| passkey_sync(db, &id)).await
    }

    async fn rename_passkey(&self, user_id: &str, credential_id: &str, name: &str) -> Result<bool, StoreError> {
        check_credential_id(credential_id)?;
        check_name(name)?;
        let (user, id, name) = (user_id.to_string(), credential_id.to_string(), name.to_string());
        self.blocking(move |db| change_sync(db, &user, &id, |r| Ok(Some(PasskeyRecord { name, ..r })))).await
    }

    async fn remove_passkey(&self, user_id: &str, credential_id: &str) -> Result<bool, StoreError> {
        check_credential_id(credential_id)?;
        let (user, id) = (user_id.to_string(), credential_id.to_string());
        self.blocking(move |db| change_sync(db, &user, &id, |_| Ok(None))).await
    }

    async fn passkey_used(
        &self,
        user_id: &str,
        credential_id: &str,
        passkey: &Passkey,
        at: Millis,
    ) -> Result<bool, StoreError> {
        check_passkey(credential_id, passkey)?;
        let (user, id, passkey) = (user_id.to_string(), credential_id.to_string(), passkey.clone());
        self.blocking(move |db| {
            change_sync(db, &user, &id, |r| {
                let last_used_at = Some(r.last_used_at.map_or(at, |last| last.max(at)));
                Ok(Some(PasskeyRecord { passkey, last_used_at, ..r }))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passkeys::contract::{run_all, sample_passkey};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded_store_fulfils_the_passkey_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        run_all(&EmbeddedStore::open(dir.path()).expect("open")).await;
    }

    #[tokio::test]
    async fn passkeys_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = PasskeyRecord::new("amy", "Phone", sample_passkey(1), 5);
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            assert!(store.passkeys_of("amy").await.expect("before any passkey").is_empty());
            assert!(store.add_passkey(&record).await.expect("add"));
            assert!(store.passkey_used("amy", &record.id, &record.passkey, 9).await.expect("used"));
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let found = store.passkey(&record.id).await.expect("passkey").expect("kept");
        assert_eq!((found.user_id.as_str(), found.name.as_str(), found.last_used_at), ("amy", "Phone", Some(9)));
        assert_eq!(store.passkeys_of("amy").await.expect("passkeys_of").len(), 1);
    }

    #[tokio::test]
    async fn unreadable_passkeys_are_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let record = PasskeyRecord::new("ben", "Key", sample_passkey(2), 1);
        {
            let txn = store.db.begin_write().expect("write");
            txn.open_table(PASSKEYS).expect("table").insert(record.id.as_str(), b"\x09garbage".as_slice()).expect("x");
            txn.open_table(USER_PASSKEYS).expect("table").insert(("amy", record.id.as_str()), ()).expect("insert");
            txn.commit().expect("commit");
        }
        assert!(matches!(store.passkey(&record.id).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.passkeys_of("amy").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.add_passkey(&record).await, Err(StoreError::Corrupt(_))), "never overwritten");
        assert!(matches!(store.remove_passkey("amy", &record.id).await, Err(StoreError::Corrupt(_))));
    }
}
