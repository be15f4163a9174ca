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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

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
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("users file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut dir = UserDirectory::default();
        for (i, entry) in file.users.into_iter().enumerate() {
            let at = format!("users[{i}]");
            let email = entry.email.trim().to_ascii_lowercase();
            if email.len() > 254 || !email.contains('@') || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{at}.email: {:?} is not an email address", entry.email));
            }
            if !password::is_valid_hash(&entry.password_hash) {
                return Err(format!(
                    "{at}.password_hash: not an argon2 PHC string (make one with `dalea-gateway hash-password`)"
                ));
            }
            let id = entry.id.unwrap_or_else(|| derived_id(&email));
            let id_ok = !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
            if !id_ok {
                return Err(format!("{at}.id: use 1-128 letters, digits, '-', '_', '.' or '@'"));
            }
            let user = Arc::new(User {
                display_name: entry.display_name.unwrap_or_else(|| email.clone()),
                id: id.clone(),
                email: email.clone(),
                password_hash: entry.password_hash,
            });
            if dir.by_id.insert(id.clone(), user.clone()).is_some() {
                return Err(format!("{at}.id: {id:?} appears twice"));
            }
            if dir.by_email.insert(email.clone(), user).is_some() {
                return Err(format!("{at}.email: {email:?} appears twice"));
            }
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

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
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
        assert_eq!(UserDirectory::parse(&text).expect("parse").by_email("ann@example.com").map(|u| u.id.clone()), Some(ann.id.clone()));
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

    #[test]
    fn debug_hides_the_hash() {
        let text = format!("[[users]]\nemail = \"a@x\"\npassword_hash = \"{HASH}\"\n");
        let dir = UserDirectory::parse(&text).expect("parse");
        assert!(!format!("{:?}", dir.by_email("a@x")).contains("argon2"));
    }
}
