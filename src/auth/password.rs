//! Argon2id password hashing and verification, run on the blocking pool (each check costs
//! ~19 MiB and tens of milliseconds) and bounded so a burst of sign-ins cannot exhaust memory.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use tokio::sync::Semaphore;

/// A syntactically valid argon2id hash of a random password, verified against when the email
/// is unknown so that unknown users and wrong passwords take the same time.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$jmzT0iIzTUyZwE7xN4DUJ0JHUFeXTn2nkAmVdMKv+oY";

/// Hashes a new password with OWASP's argon2id parameters (19 MiB, t=2, p=1).
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `hash` is a PHC string argon2 can verify against (checked when the users file loads).
pub fn is_valid_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

fn verify_sync(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Verifies passwords off the async workers, at most `limit` at a time.
#[derive(Debug, Clone)]
pub struct PasswordVerifierPool {
    permits: Arc<Semaphore>,
}

impl PasswordVerifierPool {
    pub fn new(limit: usize) -> Self {
        PasswordVerifierPool { permits: Arc::new(Semaphore::new(limit.max(1))) }
    }

    /// True when `password` matches `hash`. `None` as hash = unknown user: the decoy is
    /// checked instead and the answer is always false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else { return false };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DECOY_HASH.to_string());
        let ok = tokio::task::spawn_blocking(move || verify_sync(&password, &hash)).await.unwrap_or(false);
        ok && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(is_valid_hash(&h));
        let pool = PasswordVerifierPool::new(2);
        assert!(pool.verify("correct horse".into(), Some(h.clone())).await);
        assert!(!pool.verify("wrong horse".into(), Some(h)).await);
    }

    #[tokio::test]
    async fn unknown_users_never_verify_even_with_the_decoy_password() {
        assert!(is_valid_hash(DECOY_HASH));
        let pool = PasswordVerifierPool::new(1);
        assert!(!pool.verify(String::new(), None).await);
    }

    #[test]
    fn garbage_hashes_are_rejected() {
        assert!(!is_valid_hash("plaintext"));
        assert!(!is_valid_hash("$2b$12$abcdefghijklmnopqrstuv"));
        assert!(!verify_sync("x", "not a hash"));
    }
}
