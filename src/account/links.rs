//! External identity links: which of our people an identity at a sign-in provider (the
//! provider's name as configured, e.g. `google`, plus its stable subject id) belongs to.
//!
//! What the stores guarantee: an identity belongs to at most one person, and linking never
//! moves it (of two replicas linking one identity to two people at once, exactly one wins and
//! both learn which); a person has at most [`MAX_LINKS_PER_PERSON`] links; an identity's own
//! record is the truth, so a person's list never shows a link that is not theirs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::session::store::StoreError;

/// How many identities one person may link. Linking one more is refused with
/// `StoreError::Unavailable(`[`TOO_MANY_LINKS`]`)`; callers check [`LinkStore::links_of`]
/// first to say so nicely. The Redis store counts without a lock, so replicas linking at the
/// same moment may pass it by a few.
pub const MAX_LINKS_PER_PERSON: usize = 20;
/// The `StoreError::Unavailable` message when a person has [`MAX_LINKS_PER_PERSON`] links.
pub const TOO_MANY_LINKS: &str = "too many linked sign-in identities";
/// Provider names: 1 to 64 characters of `[A-Za-z0-9_.-]` (config names; never a `:`).
pub const MAX_PROVIDER_LEN: usize = 64;
/// Subjects: 1 to 255 bytes, any characters (OpenID Connect's `sub` is at most 255 ASCII
/// characters; GitHub's are numbers).
pub const MAX_SUBJECT_LEN: usize = 255;
/// The longest email kept with a link.
pub const MAX_EMAIL_LEN: usize = 320;

/// One external identity linked to one of our people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    pub linked_at: Millis,
    /// The email the provider asserted at link time, for the person's settings page.
    pub email: Option<String>,
}

/// Where links live. Implemented by every session store.
#[async_trait]
pub trait LinkStore: Send + Sync + 'static {
    /// Links (provider, subject) to `user_id` unless that identity is already linked; returns
    /// the user the identity is linked to afterwards (the existing one if it was linked before —
    /// never silently moved to another person). An existing link is left as it was (its
    /// `linked_at` and `email` too).
    async fn link(&self, link: &Link) -> Result<String, StoreError>;

    /// The person the identity is linked to, if any.
    async fn linked_user(&self, provider: &str, subject: &str) -> Result<Option<String>, StoreError>;

    /// One person's links, in no particular order.
    async fn links_of(&self, user_id: &str) -> Result<Vec<Link>, StoreError>;

    /// Removes a link (the person unlinks a provider); whether it existed. An identity linked
    /// to someone else is left alone (`false`).
    async fn unlink(&self, user_id: &str, provider: &str, subject: &str) -> Result<bool, StoreError>;
}

/// Checks a provider name and subject before any I/O. A refusal is `StoreError::Corrupt` (bad
/// input: trying again cannot help), saying what was wrong without echoing the value.
pub(crate) fn check_identity(provider: &str, subject: &str) -> Result<(), StoreError> {
    let provider_ok = (1..=MAX_PROVIDER_LEN).contains(&provider.len())
        && provider.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !provider_ok {
        return Err(refused(format!("provider is not 1 to {MAX_PROVIDER_LEN} characters of [A-Za-z0-9_.-]")));
    }
    if !(1..=MAX_SUBJECT_LEN).contains(&subject.len()) {
        return Err(refused(format!("subject is not 1 to {MAX_SUBJECT_LEN} bytes")));
    }
    Ok(())
}

/// [`check_identity`], and the email's length.
pub(crate) fn check_link(link: &Link) -> Result<(), StoreError> {
    check_identity(&link.provider, &link.subject)?;
    if link.email.as_ref().is_some_and(|e| e.len() > MAX_EMAIL_LEN) {
        return Err(refused(format!("email is longer than {MAX_EMAIL_LEN} bytes")));
    }
    Ok(())
}

fn refused(why: String) -> StoreError {
    StoreError::Corrupt(format!("identity link refused: {why}"))
}

/// The cap's refusal.
pub(crate) fn too_many_links() -> StoreError {
    StoreError::Unavailable(TOO_MANY_LINKS.into())
}
