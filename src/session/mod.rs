//! What a session is: the record, its sign-in method and elevation, and whether it is still
//! alive at `now` (pure functions; the clock is passed in).
//!
//! Where sessions live: `store` (the trait), `embedded` (redb, the default), `cache` (the
//! in-memory map in front), `activity` (last-active buffer and its flusher), `sweeper`
//! (expired-record removal). `cookie` is the one place cookie attributes are decided.

pub mod activity;
pub mod cache;
pub mod cookie;
pub mod embedded;
mod embedded_account;
mod embedded_api_keys;
mod embedded_history;
mod embedded_links;
mod embedded_passkeys;
mod embedded_pending;
mod embedded_people;
pub mod manager;
mod periodic;
pub mod redis;
pub mod revocation;
pub mod store;
#[cfg(test)]
pub(crate) mod store_contract;
pub mod sweeper;
pub mod token;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::client_info::ClientHints;
use crate::clock::Millis;
pub use token::{PublicId, Secret, Token, TokenHash};

/// How the person signed in. Stored as `"password"`, `"oauth:google"`, `"passkey"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInMethod {
    Password,
    OAuth(String),
    Passkey,
}

impl SignInMethod {
    pub fn as_string(&self) -> String {
        match self {
            SignInMethod::Password => "password".into(),
            SignInMethod::OAuth(p) => format!("oauth:{p}"),
            SignInMethod::Passkey => "passkey".into(),
        }
    }

    /// What the sessions page says. `provider_label` is the configured label of an OAuth
    /// provider ("Corp SSO"); without one (a provider since removed from the config) the
    /// well-known names are spelt as their owners do and others capitalised.
    pub fn label(&self, provider_label: Option<&str>) -> String {
        match self {
            SignInMethod::Password => "Email and password".into(),
            SignInMethod::OAuth(p) => {
                let name = provider_label.map(str::to_string).unwrap_or_else(|| match p.as_str() {
                    "google" => "Google".into(),
                    "github" => "GitHub".into(),
                    "microsoft" => "Microsoft".into(),
                    other => {
                        let mut name = other.to_string();
                        if let Some(first) = name.get_mut(0..1) {
                            first.make_ascii_uppercase();
                        }
                        name
                    }
                });
                format!("OAuth ({name})")
            }
            SignInMethod::Passkey => "Passkey".into(),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "password" => Some(SignInMethod::Password),
            "passkey" => Some(SignInMethod::Passkey),
            _ => s.strip_prefix("oauth:").filter(|p| !p.is_empty()).map(|p| SignInMethod::OAuth(p.into())),
        }
    }
}

impl Serialize for SignInMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for SignInMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SignInMethod::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown sign-in method {s:?}")))
    }
}

/// What a session was last elevated with: a second factor. (Re-entering the password, for
/// people with no second factor, is `Session::reauthenticated_at`, not an elevation.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElevationMethod {
    Totp,
    Passkey,
}

impl ElevationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ElevationMethod::Totp => "totp",
            ElevationMethod::Passkey => "passkey",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elevation {
    pub method: ElevationMethod,
    pub at: Millis,
}

/// One signed-in device. Keyed in the store by `token_hash`; shown to people by `id`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub id: PublicId,
    pub token_hash: TokenHash,
    pub user_id: String,
    pub created_at: Millis,
    pub last_active_at: Millis,
    pub last_ip: Option<IpAddr>,
    pub user_agent: String,
    pub client_hints: ClientHints,
    pub sign_in_method: SignInMethod,
    /// The latest elevation, if any.
    pub elevation: Option<Elevation>,
    /// Whether the session was ever elevated (the latest one may have been superseded).
    pub ever_elevated: bool,
    /// When the person last proved their password in this session while having no second
    /// factor (sign-in or the elevation page): that passes sensitive actions for
    /// `elevation.max_age` but is not an elevation. Cleared when a second factor is enrolled.
    #[serde(default)]
    pub reauthenticated_at: Option<Millis>,
    /// The passkey (its credential id) behind the latest elevation when that is a passkey one
    /// (a passkey sign-in counts): removing that passkey takes the elevation away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_id: Option<String>,
    /// Hard end of life, set at sign-in and never moved (rotation keeps it).
    pub expires_at: Millis,
    pub remember_me: bool,
    /// Per-session CSRF secret for the built-in HTML forms.
    pub csrf: Secret,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("token_hash", &self.token_hash)
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("last_active_at", &self.last_active_at)
            .field("sign_in_method", &self.sign_in_method)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Whether a session may still be used, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Unused for longer than the idle timeout.
    IdleExpired,
    /// Past its absolute lifetime, however active.
    AbsoluteExpired,
}

/// Everything needed to start a new session at sign-in.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: String,
    pub method: SignInMethod,
    pub remember_me: bool,
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub client_hints: ClientHints,
    /// The sign-in proved the password of someone with no second factor: it passes sensitive
    /// actions for `elevation.max_age`, like re-entering the password would.
    pub reauthenticated: bool,
    /// Signed in with this passkey (its credential id): the session starts elevated by it, as
    /// a passkey proves possession and user verification at once.
    pub passkey: Option<String>,
}

impl Session {
    /// A fresh session and the token for its cookie. Always a new token (never one the browser
    /// brought), so a fixated cookie cannot become signed in.
    pub fn start(new: NewSession, now: Millis, absolute_timeout: Millis) -> (Session, Token) {
        let token = Token::generate();
        let session = Session {
            id: PublicId::generate(),
            token_hash: token.hash(),
            user_id: new.user_id,
            created_at: now,
            last_active_at: now,
            last_ip: new.ip,
            user_agent: new.user_agent,
            client_hints: new.client_hints,
            sign_in_method: new.method,
            elevation: new.passkey.as_ref().map(|_| Elevation { method: ElevationMethod::Passkey, at: now }),
            ever_elevated: new.passkey.is_some(),
            reauthenticated_at: new.reauthenticated.then_some(now),
            passkey_id: new.passkey,
            expires_at: now.saturating_add(absolute_timeout),
            remember_me: new.remember_me,
            csrf: Secret::generate(),
        };
        (session, token)
    }

    /// Alive at `now` given its latest activity (which may be newer than the stored
    /// `last_active_at` while the activity buffer has not been flushed yet).
    pub fn liveness(&self, last_active_at: Millis, now: Millis, idle_timeout: Millis) -> Liveness {
        if now >= self.expires_at {
            Liveness::AbsoluteExpired
        } else if now >= last_active_at.max(self.last_active_at).saturating_add(idle_timeout) {
            Liveness::IdleExpired
        } else {
            Liveness::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    fn new_session(now: Millis) -> Session {
        let new = NewSession {
            user_id: "u1".into(),
            method: SignInMethod::Password,
            remember_me: true,
            ip: None,
            user_agent: String::new(),
            client_hints: ClientHints::default(),
            reauthenticated: false,
            passkey: None,
        };
        Session::start(new, now, 90 * DAY).0
    }

    #[test]
    fn a_passkey_sign_in_starts_elevated_by_that_passkey() {
        let new = NewSession {
            user_id: "u1".into(),
            method: SignInMethod::Passkey,
            remember_me: false,
            ip: None,
            user_agent: String::new(),
            client_hints: ClientHints::default(),
            reauthenticated: false,
            passkey: Some("cred-1".into()),
        };
        let (s, _) = Session::start(new, 5_000, 90 * DAY);
        assert_eq!(s.elevation, Some(Elevation { method: ElevationMethod::Passkey, at: 5_000 }));
        assert!(s.ever_elevated);
        assert_eq!(s.passkey_id.as_deref(), Some("cred-1"));
        assert!(!s.remember_me, "remember-me is the person's choice, not the method's");
        assert_eq!(new_session(0).passkey_id, None);
    }

    #[test]
    fn idle_expiry_counts_from_latest_activity() {
        let s = new_session(0);
        assert_eq!(s.liveness(0, 30 * DAY - 1, 30 * DAY), Liveness::Alive);
        assert_eq!(s.liveness(0, 30 * DAY, 30 * DAY), Liveness::IdleExpired);
        // Activity on day 20 keeps it alive until day 50.
        assert_eq!(s.liveness(20 * DAY, 49 * DAY, 30 * DAY), Liveness::Alive);
        assert_eq!(s.liveness(20 * DAY, 50 * DAY, 30 * DAY), Liveness::IdleExpired);
    }

    #[test]
    fn absolute_expiry_bites_however_active() {
        let s = new_session(0);
        assert_eq!(s.liveness(90 * DAY - 1, 90 * DAY - 1, 30 * DAY), Liveness::Alive);
        assert_eq!(s.liveness(90 * DAY, 90 * DAY, 30 * DAY), Liveness::AbsoluteExpired);
    }

    #[test]
    fn sign_in_methods_round_trip_as_strings() {
        for (m, s, label) in [
            (SignInMethod::Password, "password", "Email and password"),
            (SignInMethod::OAuth("google".into()), "oauth:google", "OAuth (Google)"),
            (SignInMethod::OAuth("github".into()), "oauth:github", "OAuth (GitHub)"),
            (SignInMethod::OAuth("corp".into()), "oauth:corp", "OAuth (Corp)"),
            (SignInMethod::Passkey, "passkey", "Passkey"),
        ] {
            assert_eq!(m.as_string(), s);
            assert_eq!(m.label(None), label);
            let json = serde_json::to_string(&m).unwrap_or_default();
            assert_eq!(serde_json::from_str::<SignInMethod>(&json).ok(), Some(m));
        }
        assert!(serde_json::from_str::<SignInMethod>("\"oauth:\"").is_err());
        assert_eq!(SignInMethod::OAuth("corp".into()).label(Some("Corp SSO")), "OAuth (Corp SSO)");
    }

    #[test]
    fn session_debug_hides_the_csrf_secret() {
        let s = new_session(0);
        assert!(!format!("{s:?}").contains(s.csrf.expose()));
    }
}
