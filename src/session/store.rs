//! The `SessionStore` contract every backend (embedded redb today, Redis next) fulfils, and
//! the store's error type.

use std::net::IpAddr;

use async_trait::async_trait;

use super::{PublicId, Session, TokenHash};
use crate::clock::Millis;

/// A store failure. Never a reason to sign anyone out: callers answer 503 and keep the record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session record is corrupt: {0}")]
    Corrupt(String),
}

/// The latest activity of one session, written in batches by the activity flusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub token_hash: TokenHash,
    pub at: Millis,
    pub ip: Option<IpAddr>,
}

/// Where sessions live. Implementations must be safe to call from many tasks at once.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session (sign-in).
    async fn insert(&self, session: &Session) -> Result<(), StoreError>;

    /// The session whose token hashes to `hash`, if it exists (expired ones may still be
    /// returned until swept; callers check `Session::liveness`).
    async fn get(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError>;

    /// Every stored session of one person, in no particular order; O(their sessions).
    async fn list_for_user(&self, user_id: &str) -> Result<Vec<Session>, StoreError>;

    /// One person's session by public id (revoke from the sessions page).
    async fn find_for_user(&self, user_id: &str, id: &PublicId) -> Result<Option<Session>, StoreError>;

    /// Gives a session a new token (elevation): `new` has the public id and person of the
    /// session stored under `old`, a fresh token hash and the changed fields. Afterwards the
    /// old token finds nothing (other replicas are told, as for a revocation) and the new one
    /// finds `new`, keeping the newest stored activity. `false` (nothing written) when `old`
    /// is gone, e.g. revoked meanwhile.
    async fn rotate(&self, old: &TokenHash, new: &Session) -> Result<bool, StoreError>;

    /// Overwrites the record of an existing session (same token hash), keeping its stored
    /// activity; other replicas drop their cached copy. `false` (nothing written) when it is gone.
    async fn update(&self, session: &Session) -> Result<bool, StoreError>;

    /// Deletes a session. Returns whether it existed.
    async fn remove(&self, hash: &TokenHash) -> Result<bool, StoreError>;

    /// Records last-active time and IP for sessions that still exist (never resurrects one).
    async fn record_activity(&self, batch: &[Activity]) -> Result<(), StoreError>;

    /// Deletes sessions idle for `idle_timeout` or past their absolute expiry. Returns how many.
    async fn remove_expired(&self, now: Millis, idle_timeout: Millis) -> Result<usize, StoreError>;
}
