//! Per-person records kept beside the sessions, in the same store: the TOTP credential (and an
//! enrolment in progress), a password changed on the settings page, and the audit log.
//!
//! The store treats the values as opaque: TOTP secrets arrive already encrypted
//! (`crate::secrets`), audit events as JSON (`crate::audit`). What the store guarantees is the
//! bookkeeping: a TOTP time step is accepted at most once, a confirmation only promotes the
//! secret it was checked against, the audit log is bounded and pages newest first.

pub mod audit_log;
#[cfg(test)]
pub(crate) mod contract;
pub mod links;
#[cfg(test)]
pub(crate) mod links_contract;
pub mod password;
pub mod people;
#[cfg(test)]
pub(crate) mod people_contract;
pub mod removal;
pub mod totp;

use async_trait::async_trait;
use dashmap::DashMap;

use crate::clock::Millis;
use crate::session::store::StoreError;

/// One change of a kind at a time per person in this process (e.g. two password changes, or
/// key creations racing the per-person limit): the second waits and then sees the first's
/// result. Replicas do not share these locks.
pub async fn person_lock(kind: &'static str, user_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
    type Locks = DashMap<(&'static str, String), std::sync::Arc<tokio::sync::Mutex<()>>>;
    static LOCKS: std::sync::LazyLock<Locks> = std::sync::LazyLock::new(Default::default);
    let lock = LOCKS.entry((kind, user_id.to_string())).or_default().clone();
    lock.lock_owned().await
}

/// An enrolled TOTP credential.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    /// The shared secret, encrypted (never the plain bytes).
    pub secret: Vec<u8>,
    pub enrolled_at: Millis,
    /// The newest time step accepted so far; a code for this step or an older one is refused.
    pub last_step: u64,
}

/// An enrolment started but not yet confirmed with a first code.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingTotp {
    /// The new secret, encrypted.
    pub secret: Vec<u8>,
    pub expires_at: Millis,
}

/// One person's TOTP state: at most one active credential and one pending enrolment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TotpState {
    pub active: Option<TotpRecord>,
    pub pending: Option<PendingTotp>,
}

impl std::fmt::Debug for TotpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpState")
            .field("active", &self.active.as_ref().map(|a| (a.enrolled_at, a.last_step)))
            .field("pending", &self.pending.as_ref().map(|p| p.expires_at))
            .finish()
    }
}

/// A password set on the settings page. It wins over the users file's hash for as long as the
/// users file still has the hash it replaced (`replaces`): an operator who edits the person's
/// hash in the users file afterwards resets the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordRecord {
    /// PHC string (argon2id).
    pub hash: String,
    /// SHA-256 hex of the users-file hash this one replaced.
    pub replaces: String,
    pub changed_at: Millis,
}

impl std::fmt::Debug for PasswordRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordRecord").field("changed_at", &self.changed_at).finish_non_exhaustive()
    }
}

/// One stored audit event: its per-person sequence number and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub json: String,
}

/// Where per-person records live. Implemented by every session store.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// The person's TOTP state (empty when they have none).
    async fn totp(&self, user_id: &str) -> Result<TotpState, StoreError>;

    /// Starts (or restarts) an enrolment; an active credential is left as it is.
    async fn set_pending_totp(&self, user_id: &str, pending: &PendingTotp) -> Result<(), StoreError>;

    /// Makes the pending secret the active credential, enrolled at `now` with `step` already
    /// used, if a pending enrolment exists, has not expired at `now` (`now < expires_at`) and
    /// holds exactly `secret` (the one the code was checked against). Replaces any active
    /// credential and clears the enrolment. Returns whether it did; when not, nothing changes.
    async fn confirm_totp(&self, user_id: &str, secret: &[u8], step: u64, now: Millis) -> Result<bool, StoreError>;

    /// Marks `step` used if the person has an active credential and `step` is newer than its
    /// last used step. `false`: a replayed (or older) code, or no credential.
    async fn use_totp_step(&self, user_id: &str, step: u64) -> Result<bool, StoreError>;

    /// Removes the active credential and any pending enrolment. Returns whether one was active.
    async fn remove_totp(&self, user_id: &str) -> Result<bool, StoreError>;

    /// The password set on the settings page, if any.
    async fn password(&self, user_id: &str) -> Result<Option<PasswordRecord>, StoreError>;

    async fn set_password(&self, user_id: &str, record: &PasswordRecord) -> Result<(), StoreError>;

    /// Appends an event and keeps only the newest `keep`. Returns its sequence number:
    /// 1 for the person's first event, then always larger than every earlier one.
    async fn append_audit(&self, user_id: &str, json: &str, keep: usize) -> Result<u64, StoreError>;

    /// Newest first: events with `seq < before` (all when `None`), at most `limit`.
    async fn audit_page(&self, user_id: &str, before: Option<u64>, limit: usize)
        -> Result<Vec<AuditEntry>, StoreError>;
}
