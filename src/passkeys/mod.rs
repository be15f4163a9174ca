//! Passkeys (WebAuthn): the credentials people register, where they are kept, and the
//! ceremonies that register and use them.
//!
//! - [`PasskeyRecord`] / [`PasskeyStore`]: one registered passkey of one person, and where
//!   records live (implemented by every session store: `session/embedded_passkeys.rs`,
//!   `session/redis/passkeys.rs`).
//! - [`PasskeyService`] (`service.rs`): webauthn-rs configured from `[passkeys]`, with the
//!   gateway's policy applied — user verification always required, discoverable credentials,
//!   signature counters and backup flags checked and carried forward.
//!
//! What the stores guarantee: a credential id belongs to at most one person, and adding never
//! replaces a registered passkey (of two replicas adding one credential id at once exactly one
//! succeeds); a credential id's own record is the truth, so a person's list never shows a passkey
//! that is not theirs; a person has at most [`MAX_PASSKEYS_PER_PERSON`] passkeys.

mod service;
#[cfg(test)]
mod service_tests;

#[cfg(test)]
pub(crate) mod contract;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::session::store::StoreError;

pub use service::{PasskeyError, PasskeyService, CEREMONY_TIMEOUT};
pub use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Uuid,
};

/// How many passkeys one person may register. Adding one more is refused with
/// `StoreError::Unavailable(`[`TOO_MANY_PASSKEYS`]`)`; callers check [`PasskeyStore::passkeys_of`]
/// first to say so nicely. The Redis store counts without a lock, so replicas adding at the same
/// moment may pass it by a few.
pub const MAX_PASSKEYS_PER_PERSON: usize = 20;
/// The `StoreError::Unavailable` message when a person has [`MAX_PASSKEYS_PER_PERSON`] passkeys.
pub const TOO_MANY_PASSKEYS: &str = "too many passkeys";
/// The longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest credential id, in base64url characters: WebAuthn credential ids are at most
/// 1023 bytes.
pub const MAX_CREDENTIAL_ID_LEN: usize = 1364;

/// One registered passkey of one person.
#[derive(Clone, Serialize, Deserialize)]
pub struct PasskeyRecord {
    /// The credential id, base64url without padding (the browser's `rawId`, as `id`).
    pub id: String,
    pub user_id: String,
    /// What the person called it: 1 to [`MAX_NAME_CHARS`] characters, no control characters.
    pub name: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    /// The webauthn-rs credential: public key, signature counter, backup flags.
    pub passkey: Passkey,
}

impl PasskeyRecord {
    /// A new record for a passkey just registered (`PasskeyService::finish_registration`); its
    /// id is the passkey's credential id.
    pub fn new(user_id: &str, name: &str, passkey: Passkey, created_at: Millis) -> PasskeyRecord {
        PasskeyRecord {
            id: credential_id(&passkey),
            user_id: user_id.to_string(),
            name: name.to_string(),
            created_at,
            last_used_at: None,
            passkey,
        }
    }
}

// The public key is not secret, but it is no one's business in a log line either.
impl std::fmt::Debug for PasskeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

/// A passkey's credential id as records and URLs carry it: base64url without padding.
pub fn credential_id(passkey: &Passkey) -> String {
    URL_SAFE_NO_PAD.encode(passkey.cred_id().as_slice())
}

/// Whether `name` may name a passkey: 1 to [`MAX_NAME_CHARS`] characters, not only spaces, no
/// control characters.
pub fn name_is_valid(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= MAX_NAME_CHARS && !name.chars().any(char::is_control)
}

/// Where passkeys live. Implemented by every session store.
#[async_trait]
pub trait PasskeyStore: Send + Sync + 'static {
    /// Adds a newly registered passkey; `Ok(false)` (nothing written) when its credential id is
    /// already registered, to this person or anyone else. Refused with
    /// `StoreError::Unavailable(`[`TOO_MANY_PASSKEYS`]`)` when the person already has
    /// [`MAX_PASSKEYS_PER_PERSON`]; a record whose id, name or passkey is not valid
    /// (`id` must be the passkey's [`credential_id`]) is `StoreError::Corrupt`, before any I/O.
    async fn add_passkey(&self, record: &PasskeyRecord) -> Result<bool, StoreError>;

    /// One person's passkeys, oldest first.
    async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError>;

    /// The passkey with this credential id, whoever's it is (sign-in with a discoverable
    /// credential starts from the credential id).
    async fn passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>, StoreError>;

    /// Renames one of the person's passkeys; `false` when it is not theirs or is gone.
    async fn rename_passkey(&self, user_id: &str, credential_id: &str, name: &str) -> Result<bool, StoreError>;

    /// Removes one of the person's passkeys; `false` when it is not theirs or is gone.
    async fn remove_passkey(&self, user_id: &str, credential_id: &str) -> Result<bool, StoreError>;

    /// After a successful assertion: stores the updated credential (signature counter, backup
    /// state; what `PasskeyService::finish_signin`/`finish_elevation` return) and `at` as its last
    /// use. `false` (nothing written) when the passkey was removed meanwhile or is not theirs:
    /// the sign-in must then fail. Concurrent uses of one passkey: the last write wins.
    async fn passkey_used(
        &self,
        user_id: &str,
        credential_id: &str,
        passkey: &Passkey,
        at: Millis,
    ) -> Result<bool, StoreError>;
}

/// Checks a credential id before any I/O: 1 to [`MAX_CREDENTIAL_ID_LEN`] characters of
/// base64url (`A-Z a-z 0-9 - _`). A refusal is `StoreError::Corrupt` (bad input: trying again
/// cannot help), saying what was wrong without echoing the value.
pub(crate) fn check_credential_id(id: &str) -> Result<(), StoreError> {
    let ok = (1..=MAX_CREDENTIAL_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(refused(format!("credential id is not 1 to {MAX_CREDENTIAL_ID_LEN} characters of base64url")));
    }
    Ok(())
}

/// Checks a name before any I/O ([`name_is_valid`]).
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if !name_is_valid(name) {
        return Err(refused(format!("name is not 1 to {MAX_NAME_CHARS} characters without control characters")));
    }
    Ok(())
}

/// Checks a passkey given for `credential_id` is that credential.
pub(crate) fn check_passkey(credential_id: &str, passkey: &Passkey) -> Result<(), StoreError> {
    check_credential_id(credential_id)?;
    if self::credential_id(passkey) != credential_id {
        return Err(refused("the passkey is another credential than its id says".into()));
    }
    Ok(())
}

/// Everything [`PasskeyStore::add_passkey`] checks before any I/O.
pub(crate) fn check_record(record: &PasskeyRecord) -> Result<(), StoreError> {
    check_passkey(&record.id, &record.passkey)?;
    check_name(&record.name)
}

fn refused(why: String) -> StoreError {
    StoreError::Corrupt(format!("passkey refused: {why}"))
}

/// The cap's refusal.
pub(crate) fn too_many_passkeys() -> StoreError {
    StoreError::Unavailable(TOO_MANY_PASSKEYS.into())
}

/// A person's records in the promised order: oldest first, then by id.
pub(crate) fn oldest_first(records: &mut [PasskeyRecord]) {
    records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
}
