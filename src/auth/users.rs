//! The users file: `[[users]]` entries with email, display name and argon2id hash, loaded once.
//!
//! ```toml
//! [[users]]
//! id = "u-7f3a"                 # optional stable id sent upstream as X-Dalea-User
//! email = "demo@example.com"
//! display_name = "Demo User"
//! password_hash = "$argon2id$v=19$..."
//! ```
//! Without `id`, the id is derived from the email (`u-` + 16 hex of its SHA-256), which stays
//! stable as long as the email does; set `id` to keep it across email changes.
//! Emails are unique case-insensitively, ids exactly. A hash must be argon2id at no less than
//! OWASP's minimum cost (what `dalea-gateway hash-password` makes); anything weaker is refused.
//! A file without `[[users]]` is fine: a gateway with only public routes needs nobody.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::password;

/// A person who can sign in.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").field("id", &self.id).field("email", &self.email).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    id: Option<String>,
    email: String,
    display_name: Option<String>,
    password_hash: String,
}

/// Every known person, by id and by (lower-case) email.
#[derive(Debug, Default)]
pub struct UserDirectory {
    by_id: HashMap<String, Arc<User>>,
    by_email: HashMap<String, Arc<User>>,
}

impl UserDirectory {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("users file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut dir = UserDirectory::default();
        // Entry index (and email as written) of each lower-case email and of each id so far.
        let mut email_at: HashMap<String, (usize, String)> = HashMap::new();
        let mut id_at: HashMap<String, (usize, bool)> = HashMap::new();
        for (i, entry) in file.users.into_iter().enumerate() {
            let at = format!("users[{i}]");
            let email = entry.email.trim().to_ascii_lowercase();
            if email.len() > 254 || !email.contains('@') || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{at}.email: {:?} is not an email address", entry.email));
            }
            // Before the id: a derived id repeats exactly when the email does, and the operator
            // wrote the email, not the id.
            if let Some((j, first)) = email_at.get(&email) {
                return Err(format!(
                    "{at}.email: {:?} appears twice (emails are compared case-insensitively): users[{j}].email is {first:?}; keep one entry per person",
                    entry.email
                ));
            }
            if !password::is_valid_hash(&entry.password_hash) {
                return Err(format!(
                    "{at}.password_hash: not an argon2 PHC string (make one with `dalea-gateway hash-password`)"
                ));
            }
            check_hash_strength(&entry.password_hash).map_err(|why| format!("{at}.password_hash: {why}"))?;
            let derived = entry.id.is_none();
            let id = entry.id.unwrap_or_else(|| derived_id(&email));
            let id_ok = !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
            if !id_ok {
                return Err(format!("{at}.id: use 1-128 letters, digits, '-', '_', '.' or '@'"));
            }
            if let Some(&(j, first_derived)) = id_at.get(&id) {
                let how = |d: bool| if d { " (derived from its email, as it sets no id)" } else { "" };
                return Err(format!(
                    "{at}.id: {id:?}{} appears twice: it is already the id of users[{j}]{}; give each person a different id",
                    how(derived),
                    how(first_derived)
                ));
            }
            email_at.insert(email.clone(), (i, entry.email.clone()));
            id_at.insert(id.clone(), (i, derived));
            let user = Arc::new(User {
                display_name: entry.display_name.unwrap_or_else(|| email.clone()),
                id: id.clone(),
                email: email.clone(),
                password_hash: entry.password_hash,
            });
            dir.by_id.insert(id, user.clone());
            dir.by_email.insert(email, user);
        }
        Ok(dir)
    }

    pub fn by_email(&self, email: &str) -> Option<Arc<User>> {
        self.by_email.get(&email.trim().to_ascii_lowercase()).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<User>> {
        self.by_id.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The ids of the people in `self` that `other` does not have.
    pub fn missing_from(&self, other: &UserDirectory) -> Vec<String> {
        let mut ids: Vec<String> = self.by_id.keys().filter(|id| !other.by_id.contains_key(*id)).cloned().collect();
        ids.sort();
        ids
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// OWASP's minimum argon2id settings, as (memory in KiB, iterations) pairs of equal strength
/// (Password Storage Cheat Sheet; parallelism 1). A hash meeting any one of them is accepted.
const OWASP_ARGON2ID_MINIMUMS: [(u32, u32); 5] = [(47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5)];

/// Refuses a (valid PHC) hash that is not argon2id or is weaker than [`OWASP_ARGON2ID_MINIMUMS`]:
/// a stolen users file must not be cheap to crack.
fn check_hash_strength(hash: &str) -> Result<(), String> {
    const REHASH: &str = "re-hash the password with `dalea-gateway hash-password`";
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a valid PHC string ({e}); {REHASH}"))?;
    let algorithm = parsed.algorithm.as_str();
    if algorithm != "argon2id" {
        return Err(format!("is {algorithm}, but only argon2id hashes are accepted; {REHASH}"));
    }
    let params =
        argon2::Params::try_from(&parsed).map_err(|e| format!("has invalid argon2id parameters ({e}); {REHASH}"))?;
    let (m, t) = (params.m_cost(), params.t_cost());
    if OWASP_ARGON2ID_MINIMUMS.iter().any(|&(min_m, min_t)| m >= min_m && t >= min_t) {
        return Ok(());
    }
    Err(format!(
        "argon2id with m={m} (KiB), t={t} is weaker than OWASP's minimum (m=19456 with t=2, or m=12288 with t=3, m=9216 with t=4, m=7168 with t=5, m=47104 with t=1); {REHASH} (it uses m=19456, t=2)"
    ))
}

fn derived_id(email: &str) -> String {
    let digest = Sha256::digest(email.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("u-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$jmzT0iIzTUyZwE7xN4DUJ0JHUFeXTn2nkAmVdMKv+oY";

    #[test]
    fn emails_match_case_insensitively_and_ids_are_stable() {
        let text = format!("[[users]]\nemail = \"Ann@Example.com\"\npassword_hash = \"{HASH}\"\n");
        let dir = UserDirectory::parse(&text).expect("parse");
        let ann = dir.by_email("ann@example.COM").expect("found");
        assert_eq!(ann.id, derived_id("ann@example.com"));
        assert_eq!(
            UserDirectory::parse(&text).expect("parse").by_email("ann@example.com").map(|u| u.id.clone()),
            Some(ann.id.clone())
        );
        assert!(dir.by_id(&ann.id).is_some());
    }

    #[test]
    fn bad_entries_are_named() {
        let dup = format!("[[users]]\nemail = \"a@x\"\npassword_hash = \"{HASH}\"\n[[users]]\nemail = \"A@x\"\npassword_hash = \"{HASH}\"\n");
        assert!(UserDirectory::parse(&dup).err().unwrap_or_default().contains("users[1]"));
        let bad_hash = "[[users]]\nemail = \"a@x\"\npassword_hash = \"hunter2\"\n";
        assert!(UserDirectory::parse(bad_hash).err().unwrap_or_default().contains("users[0].password_hash"));
        let unknown = format!("[[users]]\nemail = \"a@x\"\npasword_hash = \"{HASH}\"\n");
        assert!(UserDirectory::parse(&unknown).is_err());
    }

    fn one(email: &str, hash: &str) -> String {
        format!("[[users]]\nemail = \"{email}\"\npassword_hash = \"{hash}\"\n")
    }

    /// HASH with other parameters (and algorithm); the salt and output are only parsed.
    fn with_params(algorithm: &str, params: &str) -> String {
        HASH.replace("argon2id", algorithm).replace("m=19456,t=2,p=1", params)
    }

    #[test]
    fn people_missing_from_a_new_list_are_named_by_id() {
        let before =
            format!("{}id = \"ann\"\n{}id = \"ben\"\n{}", one("a@x", HASH), one("b@x", HASH), one("c@x", HASH));
        let before = UserDirectory::parse(&before).unwrap();
        // Ben left; Ann's email changed (same id); c@x stayed under its derived id.
        let after = format!("{}id = \"ann\"\n{}", one("ann@x", HASH), one("c@x", HASH));
        let after = UserDirectory::parse(&after).unwrap();
        assert_eq!(before.missing_from(&after), vec!["ben".to_string()]);
        assert!(after.missing_from(&before).is_empty());
        assert_eq!(before.missing_from(&UserDirectory::parse("").unwrap()).len(), 3);
    }

    #[test]
    fn a_case_only_duplicate_email_is_named_on_the_email() {
        let text = format!("{}{}", one("ann@example.com", HASH), one("Ann@Example.com", HASH));
        let err = UserDirectory::parse(&text).unwrap_err();
        assert!(
            err.starts_with(
                "users[1].email: \"Ann@Example.com\" appears twice (emails are compared case-insensitively)"
            ),
            "{err}"
        );
        assert!(err.contains("users[0].email is \"ann@example.com\""), "{err}");
        assert!(!err.contains("u-"), "no id the operator never wrote: {err}");

        // Explicit ids still collide on the id, naming where it came from.
        let ids = format!("{}id = \"x\"\n{}id = \"x\"\n", one("a@x", HASH), one("b@x", HASH));
        let err = UserDirectory::parse(&ids).unwrap_err();
        assert!(err.starts_with("users[1].id: \"x\" appears twice: it is already the id of users[0];"), "{err}");
        let derived = format!("{}{}id = \"{}\"\n", one("a@x", HASH), one("b@x", HASH), derived_id("a@x"));
        let err = UserDirectory::parse(&derived).unwrap_err();
        assert!(err.contains("already the id of users[0] (derived from its email"), "{err}");
    }

    #[test]
    fn weak_or_non_argon2id_hashes_are_refused() {
        let err = UserDirectory::parse(&one("a@x", &with_params("argon2id", "m=8,t=1,p=1"))).unwrap_err();
        assert!(
            err.starts_with("users[0].password_hash: argon2id with m=8 (KiB), t=1 is weaker than OWASP's minimum"),
            "{err}"
        );
        assert!(err.contains("`dalea-gateway hash-password`"), "{err}");
        for weak in ["m=19455,t=2,p=1", "m=19456,t=1,p=1", "m=12288,t=2,p=1", "m=7167,t=9,p=1", "m=47103,t=1,p=1"] {
            let err = UserDirectory::parse(&one("a@x", &with_params("argon2id", weak))).unwrap_err();
            assert!(err.contains("weaker than OWASP's minimum"), "{weak}: {err}");
        }
        for variant in ["argon2i", "argon2d"] {
            let err = UserDirectory::parse(&one("a@x", &with_params(variant, "m=65536,t=3,p=4"))).unwrap_err();
            assert!(err.starts_with(&format!("users[0].password_hash: is {variant}, but only argon2id")), "{err}");
            assert!(err.contains("`dalea-gateway hash-password`"), "{err}");
        }
        for strong in [
            "m=19456,t=2,p=1",
            "m=12288,t=3,p=1",
            "m=9216,t=4,p=1",
            "m=7168,t=5,p=1",
            "m=47104,t=1,p=1",
            "m=65536,t=3,p=4",
        ] {
            let text = one("a@x", &with_params("argon2id", strong));
            assert!(UserDirectory::parse(&text).is_ok(), "{strong} meets the minimum");
        }
    }

    /// A gateway with only public routes needs nobody in its users file.
    #[test]
    fn an_empty_users_file_is_accepted() {
        assert!(UserDirectory::parse("").expect("empty").is_empty());
        assert!(UserDirectory::parse("users = []\n").expect("empty list").is_empty());
    }

    #[test]
    fn debug_hides_the_hash() {
        let text = format!("[[users]]\nemail = \"a@x\"\npassword_hash = \"{HASH}\"\n");
        let dir = UserDirectory::parse(&text).expect("parse");
        assert!(!format!("{:?}", dir.by_email("a@x")).contains("argon2"));
    }
}
