//! [`AccountStore`] for the embedded store: per-person records in the same redb file as the
//! sessions. Every check-and-set runs in one write transaction, and redb runs one write
//! transaction at a time, so a TOTP step is accepted at most once even under concurrent calls.
//!
//! Tables (created by [`create_tables`] when the store opens):
//! - `totp`: user id → `[version byte] ++ JSON` of the active credential and the pending
//!   enrolment (secrets base64, still encrypted)
//! - `passwords`: user id → `[version byte] ++ JSON` of the [`PasswordRecord`]
//! - `audit`: (user id, sequence number) → `[version byte] ++ event JSON`; the tuple key keeps
//!   one person's events together, ordered by number, whatever characters the id holds
//! - `audit_seq`: user id → the last sequence number given out (kept when events are trimmed,
//!   so numbers never repeat)

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::embedded::{unavailable, EmbeddedStore};
use super::store::StoreError;
use crate::account::{AccountStore, AuditEntry, PasswordRecord, PendingTotp, TotpRecord, TotpState};
use crate::clock::Millis;

const TOTP: TableDefinition<&str, &[u8]> = TableDefinition::new("totp");
const PASSWORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("passwords");
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
const AUDIT_SEQ: TableDefinition<&str, u64> = TableDefinition::new("audit_seq");
const RECORD_VERSION: u8 = 1;

/// Creates the account tables, so readers never see "table does not exist".
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(TOTP).map_err(unavailable)?;
    txn.open_table(PASSWORDS).map_err(unavailable)?;
    txn.open_table(AUDIT).map_err(unavailable)?;
    txn.open_table(AUDIT_SEQ).map_err(unavailable)?;
    Ok(())
}

/// A secret as stored: base64 of the (already encrypted) bytes.
mod b64 {
    use super::{Engine, STANDARD};

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredActive {
    #[serde(with = "b64")]
    secret: Vec<u8>,
    enrolled_at: Millis,
    last_step: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredPending {
    #[serde(with = "b64")]
    secret: Vec<u8>,
    expires_at: Millis,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredTotp {
    active: Option<StoredActive>,
    pending: Option<StoredPending>,
}

impl StoredTotp {
    fn into_state(self) -> TotpState {
        TotpState {
            active: self.active.map(|a| TotpRecord {
                secret: a.secret,
                enrolled_at: a.enrolled_at,
                last_step: a.last_step,
            }),
            pending: self.pending.map(|p| PendingTotp { secret: p.secret, expires_at: p.expires_at }),
        }
    }

    fn is_empty(&self) -> bool {
        self.active.is_none() && self.pending.is_none()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredPassword {
    hash: String,
    replaces: String,
    changed_at: Millis,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// `[version byte] ++ JSON`: the encoding of every versioned record (also API keys, both stores).
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, value).map_err(corrupt)?;
    Ok(out)
}

/// The payload after the version byte.
fn payload(bytes: &[u8]) -> Result<&[u8], StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => Ok(rest),
        _ => Err(corrupt("unknown record version")),
    }
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(payload(bytes)?).map_err(corrupt)
}

fn read_totp(db: &Database, user: &str) -> Result<StoredTotp, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let table = txn.open_table(TOTP).map_err(unavailable)?;
    let value = table.get(user).map_err(unavailable)?;
    Ok(value.map(|v| decode(v.value())).transpose()?.unwrap_or_default())
}

/// Runs `change` on the person's TOTP record inside one write transaction. The change is
/// committed only when `change` returns `true` (an empty record is deleted).
fn update_totp(db: &Database, user: &str, change: impl FnOnce(&mut StoredTotp) -> bool) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let changed = {
        let mut table = txn.open_table(TOTP).map_err(unavailable)?;
        let current = table.get(user).map_err(unavailable)?.map(|v| decode(v.value())).transpose()?;
        let mut record: StoredTotp = current.unwrap_or_default();
        let changed = change(&mut record);
        if changed && record.is_empty() {
            table.remove(user).map_err(unavailable)?;
        } else if changed {
            table.insert(user, encode(&record)?.as_slice()).map_err(unavailable)?;
        }
        changed
    };
    if changed {
        txn.commit().map_err(unavailable)?;
    } else {
        txn.abort().map_err(unavailable)?;
    }
    Ok(changed)
}

/// Appends one event and trims to the newest `keep`, in one transaction. Returns its number.
fn append_audit_sync(db: &Database, user: &str, json: &str, keep: usize) -> Result<u64, StoreError> {
    let mut value = Vec::with_capacity(json.len() + 1);
    value.push(RECORD_VERSION);
    value.extend_from_slice(json.as_bytes());
    let txn = db.begin_write().map_err(unavailable)?;
    let seq = {
        let mut counters = txn.open_table(AUDIT_SEQ).map_err(unavailable)?;
        let last = counters.get(user).map_err(unavailable)?.map(|v| v.value()).unwrap_or(0);
        let seq = last.checked_add(1).ok_or_else(|| corrupt("audit sequence exhausted"))?;
        counters.insert(user, seq).map_err(unavailable)?;
        let mut audit = txn.open_table(AUDIT).map_err(unavailable)?;
        audit.insert((user, seq), value.as_slice()).map_err(unavailable)?;
        // Numbers only grow, so the newest `keep` are exactly those above `seq - keep`.
        let keep = u64::try_from(keep).unwrap_or(u64::MAX);
        if let Some(cut) = seq.checked_sub(keep).filter(|&cut| cut > 0) {
            audit.retain_in((user, 0)..=(user, cut), |_, _| false).map_err(unavailable)?;
        }
        seq
    };
    txn.commit().map_err(unavailable)?;
    Ok(seq)
}

fn audit_page_sync(
    db: &Database,
    user: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let end = before.unwrap_or(u64::MAX);
    if limit == 0 || end == 0 {
        return Ok(Vec::new());
    }
    let txn = db.begin_read().map_err(unavailable)?;
    let audit = txn.open_table(AUDIT).map_err(unavailable)?;
    // Below `before`, or everything (u64::MAX itself is never handed out).
    let range = audit.range((user, 0)..(user, end)).map_err(unavailable)?;
    let mut out = Vec::with_capacity(limit.min(256));
    for entry in range.rev().take(limit) {
        let (key, value) = entry.map_err(unavailable)?;
        let json = std::str::from_utf8(payload(value.value())?).map_err(corrupt)?;
        out.push(AuditEntry { seq: key.value().1, json: json.to_string() });
    }
    Ok(out)
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn totp(&self, user_id: &str) -> Result<TotpState, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| read_totp(db, &user).map(StoredTotp::into_state)).await
    }

    async fn set_pending_totp(&self, user_id: &str, pending: &PendingTotp) -> Result<(), StoreError> {
        let user = user_id.to_string();
        let stored = StoredPending { secret: pending.secret.clone(), expires_at: pending.expires_at };
        self.blocking(move |db| {
            update_totp(db, &user, |record| {
                record.pending = Some(stored);
                true
            })
            .map(drop)
        })
        .await
    }

    async fn confirm_totp(&self, user_id: &str, secret: &[u8], step: u64, now: Millis) -> Result<bool, StoreError> {
        let user = user_id.to_string();
        let secret = secret.to_vec();
        self.blocking(move |db| {
            update_totp(db, &user, |record| {
                let matches = record
                    .pending
                    .as_ref()
                    .is_some_and(|p| now < p.expires_at && bool::from(p.secret.as_slice().ct_eq(&secret)));
                if matches {
                    record.pending = None;
                    record.active = Some(StoredActive { secret, enrolled_at: now, last_step: step });
                }
                matches
            })
        })
        .await
    }

    async fn use_totp_step(&self, user_id: &str, step: u64) -> Result<bool, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| {
            update_totp(db, &user, |record| match &mut record.active {
                Some(active) if step > active.last_step => {
                    active.last_step = step;
                    true
                }
                _ => false,
            })
        })
        .await
    }

    async fn remove_totp(&self, user_id: &str) -> Result<bool, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let removed = {
                let mut table = txn.open_table(TOTP).map_err(unavailable)?;
                let old = table.remove(user.as_str()).map_err(unavailable)?;
                // An unreadable record is removed all the same; it counts as not active.
                old.map(|v| decode::<StoredTotp>(v.value()).map(|r| r.active.is_some()).unwrap_or(false))
            };
            txn.commit().map_err(unavailable)?;
            Ok(removed.unwrap_or(false))
        })
        .await
    }

    async fn password(&self, user_id: &str) -> Result<Option<PasswordRecord>, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(PASSWORDS).map_err(unavailable)?;
            let value = table.get(user.as_str()).map_err(unavailable)?;
            let stored: Option<StoredPassword> = value.map(|v| decode(v.value())).transpose()?;
            Ok(stored.map(|p| PasswordRecord { hash: p.hash, replaces: p.replaces, changed_at: p.changed_at }))
        })
        .await
    }

    async fn set_password(&self, user_id: &str, record: &PasswordRecord) -> Result<(), StoreError> {
        let user = user_id.to_string();
        let stored = StoredPassword {
            hash: record.hash.clone(),
            replaces: record.replaces.clone(),
            changed_at: record.changed_at,
        };
        let value = encode(&stored)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(PASSWORDS).map_err(unavailable)?;
                table.insert(user.as_str(), value.as_slice()).map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn append_audit(&self, user_id: &str, json: &str, keep: usize) -> Result<u64, StoreError> {
        let user = user_id.to_string();
        let json = json.to_string();
        self.blocking(move |db| append_audit_sync(db, &user, &json, keep)).await
    }

    async fn audit_page(
        &self,
        user_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let user = user_id.to_string();
        self.blocking(move |db| audit_page_sync(db, &user, before, limit)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::contract::run_all;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded_store_fulfils_the_account_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        run_all(&store).await;
    }

    #[tokio::test]
    async fn account_records_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            let pending = PendingTotp { secret: vec![1, 2, 3], expires_at: 10_000 };
            store.set_pending_totp("ora", &pending).await.expect("pending");
            assert!(store.confirm_totp("ora", &[1, 2, 3], 7, 5_000).await.expect("confirm"));
            assert_eq!(store.append_audit("ora", "{}", 10).await.expect("append"), 1);
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let active = store.totp("ora").await.expect("totp").active.expect("active");
        assert_eq!((active.secret, active.enrolled_at, active.last_step), (vec![1, 2, 3], 5_000, 7));
        assert_eq!(store.append_audit("ora", "{}", 10).await.expect("append"), 2, "numbers continue");
    }

    #[tokio::test]
    async fn stored_secrets_are_versioned_and_unreadable_records_are_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        store.set_pending_totp("pat", &PendingTotp { secret: vec![9; 4], expires_at: 1 }).await.expect("pending");
        let raw = {
            let txn = store.db.begin_read().expect("read");
            let table = txn.open_table(TOTP).expect("table");
            table.get("pat").expect("get").map(|v| v.value().to_vec()).expect("stored")
        };
        assert_eq!(raw.first(), Some(&RECORD_VERSION));
        {
            let txn = store.db.begin_write().expect("write");
            txn.open_table(TOTP).expect("table").insert("pat", b"\x09garbage".as_slice()).expect("insert");
            txn.commit().expect("commit");
        }
        assert!(matches!(store.totp("pat").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.use_totp_step("pat", 1).await, Err(StoreError::Corrupt(_))));
        assert!(!store.remove_totp("pat").await.expect("an unreadable record can still be removed"));
        assert!(store.totp("pat").await.expect("totp").active.is_none());
    }
}
