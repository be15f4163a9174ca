//! API keys: programmatic access beside sessions. The key format, its hash (the only form the
//! store sees), the stored record and the store trait.
//!
//! A key is `dalea_` + 43 random base62 characters (256 bits) + a 6-character checksum of
//! them, e.g. `dalea_3xK…Qz7a1Bc9`: the prefix and checksum let secret scanners find leaked
//! keys with few false positives, and let the gateway refuse a mistyped key without a store
//! lookup. Keys are looked up by the SHA-256 of the whole key, so timing reveals nothing about
//! the secret and a store dump cannot be replayed.

#[cfg(test)]
pub(crate) mod contract;
pub mod keyring;
pub mod request;

use std::net::IpAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::session::store::{Activity, StoreError};
use crate::session::token::random_bytes;
use crate::session::TokenHash;

pub const PREFIX: &str = "dalea_";
const RANDOM_LEN: usize = 43;
const CHECK_LEN: usize = 6;
/// Total length of a key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECK_LEN;
/// How much of a key the list shows ("dalea_3xK9"): enough to recognise it, useless to use.
const SHOWN_LEN: usize = PREFIX.len() + 4;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A full API key as the person copies it. Shown once at creation; never stored or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

fn checksum(random: &str) -> String {
    let digest = Sha256::digest(random.as_bytes());
    let mut n = u64::from_be_bytes([0, 0, 0, 0, digest[0], digest[1], digest[2], digest[3]]);
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl KeySecret {
    /// A new key: 43 uniformly random base62 characters (rejection sampling, ≥ 256 bits).
    pub fn generate() -> KeySecret {
        let mut random = String::with_capacity(RANDOM_LEN);
        while random.len() < RANDOM_LEN {
            for b in random_bytes::<64>() {
                // 248 = 4 × 62: bytes above it would bias the first characters.
                if b < 248 && random.len() < RANDOM_LEN {
                    random.push(BASE62[(b % 62) as usize] as char);
                }
            }
        }
        let check = checksum(&random);
        KeySecret(format!("{PREFIX}{random}{check}"))
    }

    /// Accepts only the exact shape we issue with a correct checksum.
    pub fn parse(value: &str) -> Option<KeySecret> {
        let rest = value.strip_prefix(PREFIX)?;
        if value.len() != KEY_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let (random, check) = rest.split_at(RANDOM_LEN);
        (checksum(random) == check).then(|| KeySecret(value.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The recognisable start shown in lists.
    pub fn shown_prefix(&self) -> String {
        self.0[..SHOWN_LEN].to_string()
    }
}

/// One stored API key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id (as in URLs and `X-Dalea-Api-Key`), unrelated to the secret.
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the key, for recognising it.
    pub prefix: String,
    pub key_hash: TokenHash,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    pub last_ip: Option<IpAddr>,
}

impl ApiKey {
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

/// Where API keys live. Implemented by every session store, separately from sessions: no
/// session operation touches a key and no key operation touches a session.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// The key whose secret hashes to `hash` (expired ones too; callers check).
    async fn key_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiKey>, StoreError>;

    /// Every key of one person, in no particular order.
    async fn keys_for_user(&self, user_id: &str) -> Result<Vec<ApiKey>, StoreError>;

    /// Deletes one of `user_id`'s keys by id and tells every replica to drop it from memory.
    /// Returns the removed key (`None`: no such key of theirs).
    async fn remove_key(&self, user_id: &str, id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Records last-used time and IP for keys that still exist (never resurrects one; never
    /// moves last-used backwards). `Activity::token_hash` is the key hash.
    async fn record_key_use(&self, batch: &[Activity]) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// A key issued by this format: it must parse in every later version.
    const KNOWN: &str = "dalea_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg25GAMC";

    /// `key` with the character at byte `at` replaced by `with`.
    fn replaced(key: &str, at: usize, with: char) -> String {
        let mut out = key.to_string();
        out.replace_range(at..at + 1, &with.to_string());
        out
    }

    /// A base62 character other than `c`.
    fn other(c: u8) -> char {
        if c == b'x' {
            'y'
        } else {
            'x'
        }
    }

    #[test]
    fn generated_keys_parse_back_to_themselves() {
        for _ in 0..100 {
            let key = KeySecret::generate();
            assert_eq!(key.expose().len(), KEY_LEN);
            assert!(key.expose().starts_with(PREFIX));
            assert_eq!(KeySecret::parse(key.expose()), Some(key.clone()));
            assert_eq!(KeySecret::parse(key.expose()).map(|k| k.hash()), Some(key.hash()));
        }
        assert_eq!(KEY_LEN, 55);
    }

    #[test]
    fn a_known_key_still_parses() {
        let key = KeySecret::parse(KNOWN).expect("the issued format is stable");
        assert_eq!(key.expose(), KNOWN);
        let expected = "d5fa4504e98ec26a140f33f036d031025c4f779676a725cf393f6d693852a50e";
        assert_eq!(crate::session::redis::hex(&key.hash()), expected);
    }

    #[test]
    fn parse_refuses_a_wrong_prefix() {
        let key = KeySecret::generate();
        let rest = &key.expose()[PREFIX.len()..];
        for prefix in ["Dalea_", "DALEA_", "dalea-", "dalee_", "daleax", "sk_ab_", "", "dalea"] {
            assert_eq!(KeySecret::parse(&format!("{prefix}{rest}")), None, "{prefix:?}");
        }
        assert_eq!(KeySecret::parse(&format!(" {}", key.expose())), None, "leading space");
    }

    #[test]
    fn parse_refuses_a_wrong_length() {
        let key = KeySecret::generate();
        let full = key.expose();
        assert_eq!(KeySecret::parse(&full[..KEY_LEN - 1]), None, "one short");
        assert_eq!(KeySecret::parse(&format!("{full}a")), None, "one long");
        assert_eq!(KeySecret::parse(&format!("{full}{full}")), None, "doubled");
        assert_eq!(KeySecret::parse(&format!("{full}\n")), None, "trailing newline");
        assert_eq!(KeySecret::parse(PREFIX), None, "prefix only");
        // The random part with the checksum of a shorter one.
        let random = "a".repeat(RANDOM_LEN - 1);
        assert_eq!(KeySecret::parse(&format!("{PREFIX}{random}{}", checksum(&random))), None);
    }

    #[test]
    fn parse_refuses_non_alphanumerics() {
        let key = KeySecret::generate();
        for at in [PREFIX.len(), PREFIX.len() + 20, KEY_LEN - 1] {
            for bad in ['-', '_', ' ', '+', '/', '=', '.', '\0'] {
                assert_eq!(KeySecret::parse(&replaced(key.expose(), at, bad)), None, "{bad:?} at {at}");
            }
            // Multi-byte characters change the length as well; refused either way.
            assert_eq!(KeySecret::parse(&replaced(key.expose(), at, 'é')), None, "é at {at}");
        }
    }

    #[test]
    fn parse_refuses_any_changed_character() {
        let key = KeySecret::generate();
        let bytes = key.expose().as_bytes();
        for (at, &c) in bytes.iter().enumerate().skip(PREFIX.len()) {
            let changed = replaced(key.expose(), at, other(c));
            assert_eq!(KeySecret::parse(&changed), None, "changed at {at}: the checksum catches it");
        }
        // Two neighbouring characters swapped.
        let mut swapped = bytes.to_vec();
        let at = (PREFIX.len()..KEY_LEN - 1).find(|&i| bytes[i] != bytes[i + 1]).expect("two distinct neighbours");
        swapped.swap(at, at + 1);
        assert_eq!(KeySecret::parse(&String::from_utf8(swapped).expect("ascii")), None, "swapped at {at}");
    }

    #[test]
    fn parse_refuses_an_empty_string() {
        assert_eq!(KeySecret::parse(""), None);
    }

    #[test]
    fn the_hash_is_sha256_of_the_whole_key() {
        let key = KeySecret::generate();
        let digest: [u8; 32] = Sha256::digest(key.expose().as_bytes()).into();
        assert_eq!(key.hash(), TokenHash(digest));
        let random_only: [u8; 32] = Sha256::digest(&key.expose().as_bytes()[PREFIX.len()..]).into();
        assert_ne!(key.hash(), TokenHash(random_only), "the prefix is hashed too");
    }

    #[test]
    fn the_shown_prefix_is_dalea_and_four_characters() {
        let key = KeySecret::generate();
        let shown = key.shown_prefix();
        assert_eq!(shown.len(), PREFIX.len() + 4);
        assert!(shown.starts_with(PREFIX));
        assert!(key.expose().starts_with(&shown));
        assert!(shown[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(KeySecret::parse(KNOWN).map(|k| k.shown_prefix()).as_deref(), Some("dalea_0123"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = KeySecret::generate();
        let shown = format!("{key:?} {key:#?} {:?}", Some(&key));
        assert!(!shown.contains(&key.expose()[PREFIX.len()..PREFIX.len() + 8]), "{shown}");
        assert_eq!(format!("{key:?}"), "KeySecret(<redacted>)");
    }

    /// 4000 keys (more than the 1000 that would do for distinctness, so that the per-position
    /// bounds below are loose without ever failing by chance: each count is about 64.5 with a
    /// standard deviation of about 8).
    #[test]
    fn generated_keys_are_distinct_and_uniform_over_base62() {
        const KEYS: usize = 4_000;
        let keys: Vec<KeySecret> = (0..KEYS).map(|_| KeySecret::generate()).collect();
        let distinct: HashSet<&str> = keys.iter().map(KeySecret::expose).collect();
        assert_eq!(distinct.len(), KEYS);
        let hashes: HashSet<TokenHash> = keys.iter().map(KeySecret::hash).collect();
        assert_eq!(hashes.len(), KEYS);

        let expected = KEYS / BASE62.len();
        for position in PREFIX.len()..PREFIX.len() + RANDOM_LEN {
            let mut counts: HashMap<u8, usize> = HashMap::new();
            for key in &keys {
                *counts.entry(key.expose().as_bytes()[position]).or_default() += 1;
            }
            assert_eq!(counts.len(), BASE62.len(), "position {position} uses the whole alphabet");
            for (&c, &n) in &counts {
                assert!(BASE62.contains(&c), "{c} at {position}");
                assert!(n > expected / 3 && n < expected * 2, "{} appears {n} times at {position}", c as char);
            }
        }
    }
}
