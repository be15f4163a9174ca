//! Passkeys for people: Settings → Security → Passkeys (list, add, rename, remove; HTML and
//! JSON), sign-in with a passkey, and confirming it's you with one. The ceremonies themselves
//! run in the browser (`assets/passkeys.js`) between a `begin` and a `finish` call here.
//!
//! Each `begin` keeps the ceremony's state in the pending store (kind [`KIND`], under a random
//! id, for [`PASSKEY_MAX_AGE`]) with what it is for and who may finish it: a sign-in only from
//! the browser that began it (the hash of a binding cookie), a registration or a confirmation
//! only from the session that began it. `finish` takes the record once, so an answer replayed,
//! sent to another replica after it was used, or finished from elsewhere finds nothing; an
//! answer is checked against the passkeys as stored *now*, so a passkey removed on any replica
//! stops working at once. Refusals change nothing stored (beyond using up the ceremony).
//!
//! Adding a passkey needs a recent sign-in or confirmation; removing one needs a recent
//! confirmation with a second factor (it is one), and takes away the elevation of every session
//! that rests on it. A passkey sign-in is an elevation by that passkey from its first moment.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use pingora::proxy::Session;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sessions::SessionView;
use super::{
    body, csrf, elevate, elevate_url, guard, names, query_param, redirect, signin, trusted_forwarded_host, UserView,
    PASSKEYS_PATH,
};
use crate::account::audit_log::{self, Actor};
use crate::audit::AuditEvent;
use crate::auth::throttle::Rule;
use crate::clock::{ago, millis, rfc3339};
use crate::error::GatewayError;
use crate::passkeys::{
    name_is_valid, DiscoverableAuthentication, PasskeyAuthentication, PasskeyError, PasskeyRecord, PasskeyRegistration,
    PasskeyService, PublicKeyCredential, RegisterPublicKeyCredential, MAX_NAME_CHARS, MAX_PASSKEYS_PER_PERSON,
    TOO_MANY_PASSKEYS,
};
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::session::cookie::PASSKEY_MAX_AGE;
use crate::session::manager::Proof;
use crate::session::store::StoreError;
use crate::session::token::random_string;
use crate::state::AppState;

mod confirm;
mod manage;
mod register;
mod sign_in;

pub use self::confirm::{elevate_begin, elevate_finish};
pub use self::manage::{list_json, page, remove_form, remove_json, rename_form, rename_json};
pub use self::register::{register_begin, register_finish};
pub use self::sign_in::{signin_begin, signin_finish};

const SCRIPT: &[u8] = include_bytes!("../assets/passkeys.js");
/// The pending-store kind of passkey ceremonies.
const KIND: &str = "passkey";

// What people are told. Constants so the tests can hold the pages to them.
pub const NOT_REGISTERED: &str =
    "That passkey is not registered here. It may have been removed: sign in another way, or use another passkey.";
pub const ANOTHER_ACCOUNT: &str = "This passkey belongs to another account. Use one of your own passkeys.";
pub const NOT_VERIFIED: &str = "Your device did not verify it's you (user verification). Use the passkey with your \
     fingerprint, face, PIN or screen lock.";
pub const CEREMONY_OVER: &str = "This passkey request is over: it was already used, took more than 5 minutes, or was \
     started in another browser or session. Please try again.";
const MALFORMED: &str = "The browser's passkey answer is not in the expected form. Please try again.";

// === ceremonies in the pending store ===

/// A ceremony between `begin` and `finish`, as kept in the pending store.
#[derive(Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
enum Ceremony {
    SignIn {
        state: DiscoverableAuthentication,
        /// SHA-256 (hex) of the browser's binding cookie.
        binding: String,
        remember_me: bool,
        rd: String,
    },
    Register {
        state: PasskeyRegistration,
        /// The public id of the session that began it, and its person.
        session: String,
        user_id: String,
        name: String,
    },
    Elevate {
        state: PasskeyAuthentication,
        session: String,
        user_id: String,
    },
}

fn binding_hash(value: &str) -> String {
    Sha256::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps a ceremony for [`PASSKEY_MAX_AGE`]; returns its id.
async fn keep(state: &AppState, ceremony: &Ceremony) -> Result<String, GatewayError> {
    keep_or(state, ceremony, GatewayError::from).await
}

/// [`keep`], with the store's refusal answered by `refused` (a sign-in tells a full pending
/// store apart from an outage).
async fn keep_or(
    state: &AppState,
    ceremony: &Ceremony,
    refused: impl FnOnce(StoreError) -> GatewayError,
) -> Result<String, GatewayError> {
    let id = random_string::<32>();
    let value = serde_json::to_vec(ceremony).map_err(|e| {
        tracing::warn!(error = %e, "could not serialise a passkey ceremony");
        GatewayError::Internal
    })?;
    let expires_at = state.sessions.now() + millis(PASSKEY_MAX_AGE);
    state.pending.put_pending(KIND, &id, &value, expires_at).await.map_err(refused)?;
    Ok(id)
}

/// Takes the ceremony `id` once; `None` when there is no such (live) ceremony.
async fn take(state: &AppState, id: &str) -> Result<Option<Ceremony>, GatewayError> {
    if !crate::pending::is_valid_id(id) {
        return Ok(None);
    }
    let Some(raw) = state.pending.take_pending(KIND, id, state.sessions.now()).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&raw) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable passkey ceremony record");
            Ok(None)
        }
    }
}

fn over() -> GatewayError {
    GatewayError::BadRequest(CEREMONY_OVER.into())
}

/// The passkey service, or 404 when `[passkeys]` is not configured.
fn service(state: &AppState) -> Result<&PasskeyService, GatewayError> {
    state.passkeys.as_ref().ok_or(GatewayError::PasskeysNotEnabled)
}

/// Whether the person has a passkey they can use here (passkeys on, and at least one).
pub(super) async fn has_passkeys(state: &AppState, user_id: &str) -> Result<bool, GatewayError> {
    if state.passkeys.is_none() {
        return Ok(false);
    }
    Ok(!state.passkey_store.passkeys_of(user_id).await?.is_empty())
}

/// A failed ceremony as the person is told. `Unavailable` is our problem, not theirs.
fn refused(e: PasskeyError) -> GatewayError {
    match e {
        PasskeyError::UnknownPasskey => GatewayError::PasskeyRefused(NOT_REGISTERED.into()),
        PasskeyError::NotVerified => GatewayError::PasskeyRefused(NOT_VERIFIED.into()),
        PasskeyError::NoPasskeys => {
            GatewayError::Conflict("You have no passkeys: confirm it's you another way, or add a passkey first.".into())
        }
        PasskeyError::Unavailable(why) => {
            tracing::warn!(error = %why, "passkey ceremony could not start");
            GatewayError::Internal
        }
        other => GatewayError::PasskeyRefused(sentence(&other.to_string())),
    }
}

/// "this passkey answer is for another site" → "This passkey answer is for another site."
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
    let mut out = format!("{first}{}", chars.as_str());
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// The browser's answer, parsed; 400 with a plain message when it is not one.
fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, GatewayError> {
    serde_json::from_value(value).map_err(|e| {
        tracing::debug!(error = %e, "malformed passkey answer");
        GatewayError::BadRequest(MALFORMED.into())
    })
}

/// The JSON `begin` answers with: the ceremony id and the options for `navigator.credentials`.
fn begun(id: &str, public_key: impl Serialize) -> Result<Reply, GatewayError> {
    let body = serde_json::json!({ "ceremony": id, "publicKey": public_key });
    Ok(Reply::json(200, body.to_string().into_bytes()))
}

// === the script ===

/// GET /.dalea/assets/passkeys.js: the ceremonies' script (cacheable; `ETag` revalidation).
pub fn script(session: &Session) -> Result<Reply, GatewayError> {
    let digest = Sha256::digest(SCRIPT);
    let etag = format!("\"{}\"", digest[..12].iter().map(|b| format!("{b:02x}")).collect::<String>());
    let unchanged = session
        .req_header()
        .headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    if unchanged {
        return Ok(Reply::not_modified(&etag));
    }
    Ok(Reply::asset("text/javascript; charset=utf-8", SCRIPT, &etag))
}

/// Finishing any ceremony: its id and the browser's answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Finish {
    ceremony: String,
    credential: serde_json::Value,
    /// Where to go afterwards (confirmation only; sign-in keeps it from `begin`).
    #[serde(default)]
    rd: Option<String>,
}

/// A passkey name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, nothing hidden
/// ([`names::is_hidden`]).
fn check_name(raw: &str) -> Result<String, GatewayError> {
    names::clean(raw, MAX_NAME_CHARS).filter(|n| name_is_valid(n)).ok_or_else(|| {
        GatewayError::BadRequest(format!(
            "Give the passkey a name of 1 to {MAX_NAME_CHARS} characters, without line breaks or invisible characters, e.g. \"Work laptop\"."
        ))
    })
}

/// The start of a credential id, for log lines.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_messages_read_as_sentences() {
        assert_eq!(sentence("this passkey answer is for another site"), "This passkey answer is for another site.");
        assert_eq!(sentence("Done."), "Done.");
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(check_name("  Work laptop ").ok().as_deref(), Some("Work laptop"));
        for bad in ["", "   ", "a\u{202E}b", "tab\there", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_say_what_went_wrong() {
        assert_eq!(binding_hash("v").len(), 64);
        let not_verified = refused(PasskeyError::NotVerified);
        assert_eq!(not_verified.status(), 401);
        assert_eq!(not_verified.to_string(), NOT_VERIFIED);
        assert_eq!(refused(PasskeyError::UnknownPasskey).to_string(), NOT_REGISTERED);
    }
}
