//! Which password hash is in force for a person, and changing it from the settings page.
//!
//! The users file is the operator's word; a password changed on the settings page is stored
//! beside it and wins for as long as the users file still holds the hash it replaced. When
//! the operator later edits that person's hash in the users file (a reset), the file wins again.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use super::PasswordRecord;
use crate::auth::throttle::Rule;
use crate::auth::User;
use crate::error::GatewayError;
use crate::session::store::StoreError;
use crate::state::AppState;

/// Shortest and longest new password accepted (characters). Long passphrases are welcome;
/// the upper bound only keeps hashing cost bounded.
pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 256;

fn fingerprint(users_file_hash: &str) -> String {
    let digest = Sha256::digest(users_file_hash.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash to check `user`'s password against now.
pub async fn current_hash(state: &AppState, user: &User) -> Result<String, StoreError> {
    Ok(match state.accounts.password(&user.id).await? {
        Some(changed) if changed.replaces == fingerprint(&user.password_hash) => changed.hash,
        _ => user.password_hash.clone(),
    })
}

/// Checks a signed-in person's password (elevation, password change), counted against the
/// sign-in limits of their account and network like a sign-in attempt.
pub async fn verify(state: &AppState, user: &User, password: &str, ip: Option<IpAddr>) -> Result<(), GatewayError> {
    let rule = Rule::sign_in(&state.config.rate_limit);
    if let Err(retry) = state.throttle.reserve(&rule, &user.email, true, ip, state.sessions.now()).await? {
        return Err(GatewayError::TooManyAttempts(retry.as_secs()));
    }
    let hash = current_hash(state, user).await?;
    if state.passwords.verify(password.to_string(), Some(hash)).await {
        state.throttle.succeeded(&rule, &user.email, ip).await;
        Ok(())
    } else {
        Err(GatewayError::BadCredentials)
    }
}

/// Why a new password is refused, in words for the form.
pub fn check_new(current: &str, new: &str, confirm: Option<&str>) -> Result<(), String> {
    let len = new.chars().count();
    if len < MIN_LEN {
        return Err(format!("The new password needs at least {MIN_LEN} characters."));
    }
    if len > MAX_LEN {
        return Err(format!("The new password can have at most {MAX_LEN} characters."));
    }
    if new.chars().all(char::is_whitespace) {
        return Err("The new password cannot be only spaces.".to_string());
    }
    if confirm.is_some_and(|c| c != new) {
        return Err("The two new passwords are not the same.".to_string());
    }
    if new == current {
        return Err("The new password is the same as the current one.".to_string());
    }
    Ok(())
}

/// Hashes `new` (off the async workers) and stores it for `user`.
pub async fn set(state: &AppState, user: &User, new: String) -> Result<(), SetError> {
    let hash = tokio::task::spawn_blocking(move || crate::auth::password::hash(&new))
        .await
        .map_err(|_| SetError::Hashing)?
        .map_err(|_| SetError::Hashing)?;
    let record = PasswordRecord { hash, replaces: fingerprint(&user.password_hash), changed_at: state.sessions.now() };
    state.accounts.set_password(&user.id, &record).await.map_err(SetError::Store)
}

#[derive(Debug)]
pub enum SetError {
    Hashing,
    Store(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_passwords_are_checked_with_reasons() {
        assert!(check_new("old-password", "a-new-passphrase", Some("a-new-passphrase")).is_ok());
        assert!(check_new("old", "short", None).unwrap_err().contains("at least 10"));
        assert!(check_new("old", &"x".repeat(257), None).unwrap_err().contains("at most 256"));
        assert!(check_new("old", "long-enough-1", Some("long-enough-2")).unwrap_err().contains("not the same"));
        assert!(check_new("same-password", "same-password", None).unwrap_err().contains("same as the current"));
        assert!(check_new("old", &" ".repeat(12), None).unwrap_err().contains("only spaces"));
    }

    #[test]
    fn the_fingerprint_names_the_users_file_hash_without_revealing_it() {
        let f = fingerprint("$argon2id$v=19$m=19456,t=2,p=1$abc$def");
        assert_eq!(f.len(), 64);
        assert_ne!(f, fingerprint("$argon2id$v=19$m=19456,t=2,p=1$abc$deg"));
    }
}
