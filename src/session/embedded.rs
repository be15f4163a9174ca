//! The embedded store: sessions in a local redb file, so a restart signs nobody out. Single
//! node only (one process owns the file). redb is synchronous, so every call runs on the
//! blocking pool.
//!
//! Tables:
//! - `sessions`: token hash (32 bytes) → record (`[version byte] ++ JSON`)
//! - `user_sessions`: `user_id ++ 0x00 ++ public_id` → token hash (the per-person index)

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::store::{Activity, SessionStore, StoreError};
use super::{Liveness, PublicId, Session, TokenHash};
use crate::clock::Millis;

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const USER_SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("user_sessions");
const RECORD_VERSION: u8 = 1;
pub const FILE_NAME: &str = "sessions.redb";

/// redb-backed [`SessionStore`].
#[derive(Clone)]
pub struct EmbeddedStore {
    pub(super) db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A table for reading; `None` when nothing has created it yet.
pub(super) fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: redb::TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

fn encode(session: &Session) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<Session, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, json)) => serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.to_string())),
        _ => Err(StoreError::Corrupt("unknown record version".into())),
    }
}

fn index_key(user_id: &str, id: &PublicId) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_id.len() + 1 + id.as_str().len());
    key.extend_from_slice(user_id.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// The key range holding one person's index entries: `user_id ++ 0x00 ..= user_id ++ 0x01`.
fn user_range(user_id: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = user_id.as_bytes().to_vec();
    let mut end = start.clone();
    start.push(0);
    end.push(1);
    (start, end)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        // Password hashes, sealed TOTP secrets and audit logs live here too: owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        }
        // Create both tables up front so readers never see "table does not exist".
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(SESSIONS).map_err(unavailable)?;
        txn.open_table(USER_SESSIONS).map_err(unavailable)?;
        super::embedded_account::create_tables(&txn)?;
        super::embedded_api_keys::create_tables(&txn)?;
        txn.commit().map_err(unavailable)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }
}

fn get_sync(db: &Database, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let table = txn.open_table(SESSIONS).map_err(unavailable)?;
    let value = table.get(hash.0.as_slice()).map_err(unavailable)?;
    value.map(|v| decode(v.value())).transpose()
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let record = encode(session)?;
        let key = index_key(&session.user_id, &session.id);
        let hash = session.token_hash;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                sessions.insert(hash.0.as_slice(), record.as_slice()).map_err(unavailable)?;
                let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
                index.insert(key.as_slice(), hash.0.as_slice()).map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn get(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let hash = *hash;
        self.blocking(move |db| get_sync(db, &hash)).await
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        let (start, end) = user_range(user_id);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in index.range(start.as_slice()..end.as_slice()).map_err(unavailable)? {
                let (_, hash) = entry.map_err(unavailable)?;
                // A stale index entry (record already gone) is skipped, not shown.
                if let Some(record) = sessions.get(hash.value()).map_err(unavailable)? {
                    out.push(decode(record.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn find_for_user(&self, user_id: &str, id: &PublicId) -> Result<Option<Session>, StoreError> {
        let key = index_key(user_id, id);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
            let Some(hash) = index.get(key.as_slice()).map_err(unavailable)? else {
                return Ok(None);
            };
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let record = sessions.get(hash.value()).map_err(unavailable)?;
            record.map(|r| decode(r.value())).transpose()
        })
        .await
    }

    async fn rotate(&self, old: &TokenHash, new: &Session) -> Result<bool, StoreError> {
        let (old, mut new) = (*old, new.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                let Some(stored) = sessions.remove(old.0.as_slice()).map_err(unavailable)?.map(|r| decode(r.value()))
                else {
                    return Ok(false);
                };
                let stored = stored?;
                if stored.id != new.id || stored.user_id != new.user_id {
                    return Err(StoreError::Corrupt("rotation to another session".into()));
                }
                keep_newest_activity(&stored, &mut new);
                sessions.insert(new.token_hash.0.as_slice(), encode(&new)?.as_slice()).map_err(unavailable)?;
                let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
                index
                    .insert(index_key(&new.user_id, &new.id).as_slice(), new.token_hash.0.as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn update(&self, session: &Session) -> Result<bool, StoreError> {
        let mut session = session.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                let stored =
                    sessions.get(session.token_hash.0.as_slice()).map_err(unavailable)?.map(|r| decode(r.value()));
                let Some(stored) = stored.transpose()? else {
                    return Ok(false);
                };
                keep_newest_activity(&stored, &mut session);
                sessions.insert(session.token_hash.0.as_slice(), encode(&session)?.as_slice()).map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn remove(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let hash = *hash;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let existed = {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                let removed = sessions.remove(hash.0.as_slice()).map_err(unavailable)?;
                let session = removed.map(|r| decode(r.value())).transpose()?;
                if let Some(s) = &session {
                    let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
                    index.remove(index_key(&s.user_id, &s.id).as_slice()).map_err(unavailable)?;
                }
                session.is_some()
            };
            txn.commit().map_err(unavailable)?;
            Ok(existed)
        })
        .await
    }

    async fn record_activity(&self, batch: &[Activity]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                for a in &batch {
                    let current = sessions.get(a.token_hash.0.as_slice()).map_err(unavailable)?;
                    let Some(current) = current.map(|r| decode(r.value())).transpose()? else {
                        continue; // revoked or swept meanwhile: never resurrect it
                    };
                    if a.at <= current.last_active_at {
                        continue;
                    }
                    let mut updated = current;
                    updated.last_active_at = a.at;
                    if a.ip.is_some() {
                        updated.last_ip = a.ip;
                    }
                    let record = encode(&updated)?;
                    sessions.insert(a.token_hash.0.as_slice(), record.as_slice()).map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn remove_expired(&self, now: Millis, idle_timeout: Millis) -> Result<usize, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let removed = {
                let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                let mut expired = Vec::new();
                for entry in sessions.iter().map_err(unavailable)? {
                    let (key, value) = entry.map_err(unavailable)?;
                    // A record we cannot read is left alone rather than deleted.
                    let Ok(s) = decode(value.value()) else { continue };
                    if s.liveness(s.last_active_at, now, idle_timeout) != Liveness::Alive {
                        expired.push((key.value().to_vec(), index_key(&s.user_id, &s.id)));
                    }
                }
                let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
                for (hash, idx) in &expired {
                    sessions.remove(hash.as_slice()).map_err(unavailable)?;
                    index.remove(idx.as_slice()).map_err(unavailable)?;
                }
                expired.len()
            };
            txn.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }
}

/// A rewritten record keeps the newer of its own and the stored last-active time and IP.
fn keep_newest_activity(stored: &Session, new: &mut Session) {
    if stored.last_active_at > new.last_active_at {
        new.last_active_at = stored.last_active_at;
        new.last_ip = stored.last_ip.or(new.last_ip);
    }
}

#[cfg(test)]
pub(crate) fn decode_for_test(bytes: &[u8]) -> Result<Session, StoreError> {
    decode(bytes)
}
