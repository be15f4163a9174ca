//! People created by the gateway itself: someone who signs in through a provider and matches no
//! one (`[oauth] unknown_people = "create"`). They live in the store, beside the sessions, so
//! every replica sees them and a restart keeps them; the users file's people never do.
//!
//! What the stores guarantee: one person per id and one person per (lower-case) email, even
//! when two replicas create at the same moment (exactly one wins and both learn which); a
//! created person is never changed afterwards. Emails are kept trimmed and lower-case (ASCII,
//! as the users file does), and looked up the same way.
//!
//! The request path asks [`AppState::person`](crate::state::AppState::person), which tries the
//! users file first and keeps created people in a [`PersonCache`].

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::User;
use crate::clock::Millis;
use crate::session::store::StoreError;

/// Ids: 1 to 128 characters of `[A-Za-z0-9_.@-]`, as in the users file.
pub const MAX_ID_LEN: usize = 128;
/// Emails: at most 254 bytes, with an `@`, no spaces or control characters.
pub const MAX_EMAIL_LEN: usize = 254;
/// Display names: at most 200 characters, no control characters (may be empty).
pub const MAX_DISPLAY_NAME_LEN: usize = 200;
/// How the person came to be (`oauth:<provider>`): at most 128 bytes, no control characters.
pub const MAX_CREATED_VIA_LEN: usize = 128;

/// A person the gateway created (not from the users file). Nothing secret: they have no
/// password, and sign in only through the provider that created them (or one linked later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: String,
    /// Lower-case once stored.
    pub email: String,
    pub display_name: String,
    pub created_at: Millis,
    /// e.g. `oauth:google`.
    pub created_via: String,
}

impl Person {
    /// The person as the rest of the gateway sees people. The password hash is empty, which
    /// never verifies any password (`PasswordHash` refuses to parse it), so a created person
    /// cannot sign in or confirm it's them with a password.
    pub fn to_user(&self) -> User {
        User {
            id: self.id.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            password_hash: String::new(),
        }
    }
}

/// The id of the person created for a provider's identity: `p-` + 24 hex characters of
/// SHA-256(`provider` ++ `\0` ++ `subject`). Stable (signing in again names the same person),
/// and never one of the users file's derived ids (`u-…`).
pub fn created_person_id(provider: &str, subject: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(provider.as_bytes());
    digest.update([0]);
    digest.update(subject.as_bytes());
    let hex: String = digest.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("p-{hex}")
}

/// Where created people live. Implemented by every session store.
#[async_trait]
pub trait PeopleStore: Send + Sync + 'static {
    /// Stores `person` (its email trimmed and lower-cased) unless a person with its id or its
    /// email already exists; returns the person stored afterwards: `person` as stored, or the
    /// existing one (by id first, then by email), unchanged. Of concurrent creations with one
    /// email, on any replicas, exactly one wins and every caller gets the winner.
    async fn create_person(&self, person: &Person) -> Result<Person, StoreError>;

    /// The created person with this id, if any.
    async fn person(&self, id: &str) -> Result<Option<Person>, StoreError>;

    /// The created person with this email (compared trimmed and case-insensitively), if any.
    async fn person_by_email(&self, email: &str) -> Result<Option<Person>, StoreError>;
}

/// Checks an id before any I/O. A refusal is `StoreError::Corrupt` (bad input: trying again
/// cannot help), saying what was wrong without echoing the value.
pub(crate) fn check_id(id: &str) -> Result<(), StoreError> {
    let ok = (1..=MAX_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(refused(format!("id is not 1 to {MAX_ID_LEN} characters of [A-Za-z0-9_.@-]")))
    }
}

/// The form an email is stored and looked up in (trimmed, ASCII lower-case), after checking it.
pub(crate) fn email_key(email: &str) -> Result<String, StoreError> {
    let email = email.trim();
    let ok = email.len() <= MAX_EMAIL_LEN
        && email.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(email.to_ascii_lowercase())
    } else {
        Err(refused(format!("email is not an address of at most {MAX_EMAIL_LEN} bytes")))
    }
}

/// `person` as stored (email in [`email_key`] form), after checking every field.
pub(crate) fn normalized(person: &Person) -> Result<Person, StoreError> {
    check_id(&person.id)?;
    let email = email_key(&person.email)?;
    let name = &person.display_name;
    if name.chars().count() > MAX_DISPLAY_NAME_LEN || name.chars().any(char::is_control) {
        return Err(refused(format!(
            "display name is longer than {MAX_DISPLAY_NAME_LEN} characters or holds control characters"
        )));
    }
    let via = &person.created_via;
    if via.len() > MAX_CREATED_VIA_LEN || via.chars().any(char::is_control) {
        return Err(refused(format!(
            "created_via is longer than {MAX_CREATED_VIA_LEN} bytes or holds control characters"
        )));
    }
    Ok(Person { email, ..person.clone() })
}

fn refused(why: String) -> StoreError {
    StoreError::Corrupt(format!("person refused: {why}"))
}

/// Created people recently read from the store, as [`User`]s, with when they were read. A
/// bounded map: when it is full it is emptied (people are re-read on their next request).
#[derive(Debug)]
pub struct PersonCache {
    entries: DashMap<String, (Arc<User>, Millis)>,
    capacity: usize,
}

impl PersonCache {
    pub fn new(capacity: usize) -> Self {
        PersonCache { entries: DashMap::new(), capacity: capacity.max(1) }
    }

    /// The cached person and when it was read from the store.
    pub fn get(&self, id: &str) -> Option<(Arc<User>, Millis)> {
        self.entries.get(id).map(|e| e.value().clone())
    }

    /// Keeps `user`, read from the store at `fetched_at`.
    pub fn put(&self, user: Arc<User>, fetched_at: Millis) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&user.id) {
            self.entries.clear();
        }
        self.entries.insert(user.id.clone(), (user, fetched_at));
    }

    pub fn remove(&self, id: &str) {
        self.entries.remove(id);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::{is_valid_hash, PasswordVerifierPool};

    fn person(id: &str, email: &str) -> Person {
        Person {
            id: id.into(),
            email: email.into(),
            display_name: "Amy".into(),
            created_at: 1,
            created_via: "oauth:google".into(),
        }
    }

    #[test]
    fn created_ids_are_stable_distinct_and_valid() {
        let id = created_person_id("google", "108");
        assert_eq!(id, created_person_id("google", "108"));
        assert_eq!(id.len(), 2 + 24);
        assert!(id.starts_with("p-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(check_id(&id).is_ok());
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(created_person_id("ab", "c"), created_person_id("a", "bc"));
        assert_ne!(id, created_person_id("github", "108"));
    }

    #[test]
    fn inputs_are_checked_without_echoing_them() {
        assert_eq!(normalized(&person("amy", " Amy@Example.COM ")).expect("ok").email, "amy@example.com");
        let long_name = Person { display_name: "n".repeat(MAX_DISPLAY_NAME_LEN + 1), ..person("amy", "a@x") };
        let control_name = Person { display_name: "secret\u{7}".into(), ..person("amy", "a@x") };
        let bad_via = Person { created_via: "oauth:\ngoogle".into(), ..person("amy", "a@x") };
        let long_email = format!("{}@x", "secret".repeat(50));
        let bad = [
            person("", "a@x"),
            person("secret id", "a@x"),
            person(&"i".repeat(MAX_ID_LEN + 1), "a@x"),
            person("amy", "secret"),
            person("amy", "se cret@x"),
            person("amy", "secret\0@x"),
            person("amy", &long_email),
            long_name,
            control_name,
            bad_via,
        ];
        for p in &bad {
            match normalized(p) {
                Err(StoreError::Corrupt(m)) => {
                    assert!(m.starts_with("person refused: "), "{m}");
                    assert!(!m.contains("secret"), "the value is not echoed: {m}");
                }
                other => panic!("{p:?} was not refused: {other:?}"),
            }
        }
        let fine = Person { display_name: "ü".repeat(MAX_DISPLAY_NAME_LEN), ..person(&"i".repeat(MAX_ID_LEN), "a@x") };
        assert!(normalized(&fine).is_ok(), "the longest values are fine");
    }

    #[tokio::test]
    async fn a_created_persons_empty_password_hash_never_verifies() {
        let user = person("p-1", "amy@example.com").to_user();
        assert_eq!(user.password_hash, "");
        assert!(!is_valid_hash(&user.password_hash));
        let pool = PasswordVerifierPool::new(2);
        for password in ["", " ", "password", "$argon2id$", "\0"] {
            assert!(!pool.verify(password.into(), Some(user.password_hash.clone())).await, "{password:?}");
        }
    }

    #[test]
    fn the_cache_is_bounded_by_emptying_it() {
        let cache = PersonCache::new(2);
        let user = |id: &str| Arc::new(person(id, "a@x").to_user());
        cache.put(user("a"), 1);
        cache.put(user("b"), 2);
        cache.put(user("b"), 3);
        assert_eq!(cache.len(), 2, "refreshing one already cached does not empty it");
        assert_eq!(cache.get("b").map(|(u, at)| (u.id.clone(), at)), Some(("b".into(), 3)));
        cache.put(user("c"), 4);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("a").is_none() && cache.get("c").is_some());
        cache.remove("c");
        assert!(cache.is_empty());
    }
}
