//! Pending ceremony records: the short-lived state of a sign-in in progress (OAuth: state,
//! nonce, PKCE verifier, where to return; passkeys: the WebAuthn challenge), kept in the store
//! so the callback may land on any replica, and taken exactly once.
//!
//! The store treats values as opaque bytes. What it guarantees: a record is returned by at most
//! one [`take_pending`](PendingStore::take_pending), never after its expiry, and ids that could
//! not have been handed out (they come back from cookies and query strings, i.e. from anyone)
//! are refused before the store is touched.
//!
//! Backends: the embedded store (`session/embedded_pending.rs`: a redb table, expired records
//! purged as new ones arrive, at most [`MAX_RECORDS`]) and Redis (`session/redis/pending.rs`:
//! one key per record with a TTL, taken with `GETDEL`).

#[cfg(test)]
pub(crate) mod contract;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::session::store::StoreError;

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 128;
/// The longest kind accepted (kinds are fixed strings in the code: `"oauth"`, `"passkey"`).
pub const MAX_KIND_LEN: usize = 32;
/// The largest value accepted: 16 KiB.
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// How many records the embedded store keeps at most (expired ones purged first); beyond it a
/// new sign-in is refused with [`TOO_MANY`].
pub const MAX_RECORDS: u64 = 100_000;
/// The `StoreError::Unavailable` message when the embedded store is full.
pub const TOO_MANY: &str = "too many sign-ins in progress";

/// Where pending ceremony records live. Implemented by every session store.
#[async_trait]
pub trait PendingStore: Send + Sync + 'static {
    /// Keeps `value` under (`kind`, `id`) until `expires_at`, replacing an earlier record.
    /// A record already expired (by the store's clock) replaces the earlier one and is not kept.
    async fn put_pending(&self, kind: &str, id: &str, value: &[u8], expires_at: Millis) -> Result<(), StoreError>;

    /// Reads and deletes the record in one atomic step: of two concurrent takes, one gets it.
    /// `None` when absent, already taken or expired at `now` (`now >= expires_at`).
    async fn take_pending(&self, kind: &str, id: &str, now: Millis) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Whether `id` is one the stores accept: 1 to [`MAX_ID_LEN`] characters of `[A-Za-z0-9_-]`
/// (what base64url without padding produces). Callers check ids from requests with this first
/// and answer 400; the stores refuse others all the same.
pub fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.bytes().all(is_id_byte)
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Checks what every store call gets, before any I/O. A refusal is `StoreError::Corrupt`
/// (bad input, not an outage: trying again cannot help), naming what was wrong but never
/// echoing the id.
pub(crate) fn check_key(kind: &str, id: &str) -> Result<(), StoreError> {
    if !(1..=MAX_KIND_LEN).contains(&kind.len()) || !kind.bytes().all(is_id_byte) {
        return Err(refused(format!("kind is not 1 to {MAX_KIND_LEN} characters of [A-Za-z0-9_-]")));
    }
    if !is_valid_id(id) {
        return Err(refused(format!("id is not 1 to {MAX_ID_LEN} characters of [A-Za-z0-9_-]")));
    }
    Ok(())
}

/// [`check_key`], and the value's size.
pub(crate) fn check_put(kind: &str, id: &str, value: &[u8]) -> Result<(), StoreError> {
    check_key(kind, id)?;
    if value.len() > MAX_VALUE_LEN {
        return Err(refused(format!("value of {} bytes is larger than {MAX_VALUE_LEN}", value.len())));
    }
    Ok(())
}

fn refused(why: String) -> StoreError {
    StoreError::Corrupt(format!("pending record refused: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_url_safe_strings() {
        for ok in ["a", "Z", "0", "-", "_", "aZ09-_", &"x".repeat(MAX_ID_LEN)] {
            assert!(is_valid_id(ok), "{ok}");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in ["", &long, "a b", "a{b", "a}b", "a:b", "a.b", "a/b", "a+b", "a=", "é", "a\0", "a\n", "%41"] {
            assert!(!is_valid_id(bad), "{bad:?}");
            assert!(matches!(check_key("oauth", bad), Err(StoreError::Corrupt(_))), "{bad:?}");
        }
    }

    #[test]
    fn kinds_and_values_are_checked_too() {
        assert!(check_put("passkey", "abc", &[0; MAX_VALUE_LEN]).is_ok());
        assert!(matches!(check_put("passkey", "abc", &[0; MAX_VALUE_LEN + 1]), Err(StoreError::Corrupt(_))));
        for bad in ["", "a:b", "o{auth}", &"k".repeat(MAX_KIND_LEN + 1)] {
            assert!(check_key(bad, "abc").is_err(), "{bad:?}");
        }
        let Err(e) = check_key("oauth", "secret id!") else { panic!("refused") };
        assert!(!e.to_string().contains("secret id!"), "the id is not echoed: {e}");
    }
}
