//! Session secrets and ids: the 256-bit cookie token, its SHA-256 (the only form the store
//! sees), the public id shown in URLs, and the per-session CSRF secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes from the operating system. Failing to get them is not recoverable.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// A fresh random string of `N` bytes, base64url without padding.
pub fn random_string<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// True for exactly `len` base64url characters: the shape of every value we issue.
pub fn is_base64url(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The cookie value: 256 random bits. Lives only in the browser; never stored or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        Token(random_string::<32>())
    }

    /// Accepts a cookie value only if it has the exact shape we issue (43 base64url chars),
    /// so garbage never reaches the store.
    pub fn parse(value: &str) -> Option<Self> {
        is_base64url(value, 43).then(|| Token(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token: the store's key. A dump of the store cannot be replayed as a cookie.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to tell sessions apart in logs.
        write!(f, "TokenHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// The id people and URLs see (`/.dalea/api/sessions/{id}`): random, unrelated to the token.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct PublicId(String);

impl PublicId {
    pub fn generate() -> Self {
        PublicId(random_string::<16>())
    }

    /// Accepts only the shape we issue (22 base64url chars).
    pub fn parse(value: &str) -> Option<Self> {
        is_base64url(value, 22).then(|| PublicId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PublicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret compared in constant time (CSRF tokens).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Self {
        Secret(random_string::<32>())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, candidate: &str) -> bool {
        self.0.len() == candidate.len() && bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_chars_and_round_trip_through_parse() {
        let t = Token::generate();
        assert_eq!(t.as_str().len(), 43);
        assert_eq!(Token::parse(t.as_str()).map(|p| p.hash()), Some(t.hash()));
        assert_ne!(Token::generate().hash(), t.hash());
    }

    #[test]
    fn garbage_cookie_values_are_not_tokens() {
        for bad in ["", "abc", &"a".repeat(44), &format!("{}=", "a".repeat(42)), "ü".repeat(22).as_str()] {
            assert!(Token::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let t = Token::generate();
        assert!(!format!("{t:?}").contains(t.as_str()));
        let s = Secret::generate();
        assert!(!format!("{s:?}").contains(s.expose()));
    }

    #[test]
    fn secret_matching_is_exact() {
        let s = Secret::from("abc".to_string());
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches("ab"));
        assert!(!s.matches(""));
    }
}
