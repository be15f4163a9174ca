//! Typed audit events: what happened to a person's account, when, from where and from which
//! session. Recorded in the store (bounded per person, newest kept) and shown to the person on
//! Settings → Security → Audit log. Events never carry secrets: no tokens, codes or passwords,
//! only public session ids.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::{rfc3339, Millis};

/// How many events are kept per person (the oldest are dropped).
pub const KEEP_PER_PERSON: usize = 1000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A sign-in; `method` as in sessions (`password`, `oauth:google`, `passkey`).
    SignIn {
        method: String,
    },
    /// A sign-in attempt for this account that failed (`reason`: `password`, `passkey`,
    /// `throttled`).
    SignInFailed {
        reason: String,
    },
    SignOut,
    /// Another session was signed out from the sessions list.
    SessionRevoked {
        revoked_session_id: String,
    },
    /// The session re-authenticated for sensitive actions (`totp`, `passkey`, `password`).
    Elevation {
        method: String,
    },
    /// A wrong, reused or throttled code on the elevation page.
    ElevationFailed {
        method: String,
        reason: String,
    },
    TotpEnrolled,
    TotpDisabled,
    PasswordChanged,
    ApiKeyCreated {
        key_id: String,
        name: String,
    },
    ApiKeyRevoked {
        key_id: String,
        name: String,
    },
    /// A passkey was registered (`name`: the one the person gave it).
    PasskeyAdded {
        name: String,
    },
    PasskeyRenamed {
        old_name: String,
        name: String,
    },
    /// A passkey was removed: it no longer signs in or confirms, and sessions elevated with it
    /// lost that elevation.
    PasskeyRemoved {
        name: String,
    },
    /// A sign-in from a device this person never used before, or from a place that is not one
    /// of their usual ones (`event`: `new_device`, `unusual_location`, as the webhook's), with
    /// the flag's reason in words.
    SignInWarning {
        event: String,
        reason: String,
    },
}

impl AuditEvent {
    /// The `type` string, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::SignIn { .. } => "sign_in",
            AuditEvent::SignInFailed { .. } => "sign_in_failed",
            AuditEvent::SignOut => "sign_out",
            AuditEvent::SessionRevoked { .. } => "session_revoked",
            AuditEvent::Elevation { .. } => "elevation",
            AuditEvent::ElevationFailed { .. } => "elevation_failed",
            AuditEvent::TotpEnrolled => "totp_enrolled",
            AuditEvent::TotpDisabled => "totp_disabled",
            AuditEvent::PasswordChanged => "password_changed",
            AuditEvent::ApiKeyCreated { .. } => "api_key_created",
            AuditEvent::ApiKeyRevoked { .. } => "api_key_revoked",
            AuditEvent::PasskeyAdded { .. } => "passkey_added",
            AuditEvent::PasskeyRenamed { .. } => "passkey_renamed",
            AuditEvent::PasskeyRemoved { .. } => "passkey_removed",
            AuditEvent::SignInWarning { .. } => "sign_in_warning",
        }
    }

    /// What the audit-log page says.
    pub fn describe(&self) -> String {
        match self {
            AuditEvent::SignIn { method } => format!("Signed in ({})", method_label(method)),
            AuditEvent::SignInFailed { reason } if reason == "throttled" => {
                "Sign-in refused: too many attempts".to_string()
            }
            AuditEvent::SignInFailed { reason } if reason == "passkey" => "Failed sign-in with a passkey".to_string(),
            AuditEvent::SignInFailed { .. } => "Failed sign-in: wrong password".to_string(),
            AuditEvent::SignOut => "Signed out".to_string(),
            AuditEvent::SessionRevoked { revoked_session_id } => {
                format!("Signed out another session ({revoked_session_id})")
            }
            AuditEvent::Elevation { method } => format!("Confirmed it's you ({})", method_label(method)),
            AuditEvent::ElevationFailed { method, reason } => {
                format!("Failed to confirm it's you ({}: {reason})", method_label(method))
            }
            AuditEvent::TotpEnrolled => "Authenticator app (TOTP) set up".to_string(),
            AuditEvent::TotpDisabled => "Authenticator app (TOTP) removed".to_string(),
            AuditEvent::PasswordChanged => "Password changed".to_string(),
            AuditEvent::ApiKeyCreated { name, .. } => format!("API key \u{201c}{name}\u{201d} created"),
            AuditEvent::ApiKeyRevoked { name, .. } => format!("API key \u{201c}{name}\u{201d} revoked"),
            AuditEvent::PasskeyAdded { name } => format!("Passkey \u{201c}{name}\u{201d} added"),
            AuditEvent::PasskeyRenamed { old_name, name } => {
                format!("Passkey \u{201c}{old_name}\u{201d} renamed to \u{201c}{name}\u{201d}")
            }
            AuditEvent::PasskeyRemoved { name } => format!("Passkey \u{201c}{name}\u{201d} removed"),
            AuditEvent::SignInWarning { reason, .. } => format!("Sign-in warning: {reason}"),
        }
    }
}

fn method_label(method: &str) -> String {
    match method {
        "password" => "password".to_string(),
        "totp" => "TOTP".to_string(),
        "passkey" => "passkey".to_string(),
        other => other.strip_prefix("oauth:").map_or(other.to_string(), |p| format!("OAuth {p}")),
    }
}

/// One event with its context, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: Millis,
    pub ip: Option<IpAddr>,
    /// The public id of the session that acted (none for a failed sign-in).
    pub session_id: Option<String>,
    /// "Chrome on macOS 14", when known.
    pub device: Option<String>,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl AuditRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(json: &str) -> Option<AuditRecord> {
        serde_json::from_str(json).ok()
    }

    /// The JSON API's view: the stored fields with `at` as RFC 3339, `id` (the sequence
    /// number, also the paging cursor) and `description`.
    pub fn view(&self, seq: u64) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("id".into(), seq.into());
            map.insert("at".into(), rfc3339(self.at).into());
            map.insert("description".into(), self.event.describe().into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_a_flat_type_field() {
        let r = AuditRecord {
            at: 1_700_000_000_000,
            ip: Some("192.0.2.1".parse().unwrap()),
            session_id: Some("abc".into()),
            device: Some("Firefox on Windows".into()),
            event: AuditEvent::SessionRevoked { revoked_session_id: "def".into() },
        };
        let json = r.to_json();
        assert!(json.contains(r#""type":"session_revoked""#), "{json}");
        assert_eq!(AuditRecord::from_json(&json), Some(r.clone()));
        let v = r.view(7);
        assert_eq!(v["id"], 7);
        assert_eq!(v["at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["revoked_session_id"], "def");
        assert_eq!(v["description"], "Signed out another session (def)");
        assert_eq!(r.event.kind(), "session_revoked");
    }

    #[test]
    fn descriptions_name_the_method() {
        assert_eq!(AuditEvent::SignIn { method: "oauth:google".into() }.describe(), "Signed in (OAuth google)");
        assert_eq!(AuditEvent::Elevation { method: "totp".into() }.describe(), "Confirmed it's you (TOTP)");
        assert_eq!(AuditEvent::SignIn { method: "passkey".into() }.describe(), "Signed in (passkey)");
        assert_eq!(AuditEvent::SignInFailed { reason: "passkey".into() }.describe(), "Failed sign-in with a passkey");
    }

    #[test]
    fn passkey_events_name_the_passkey() {
        let added = AuditEvent::PasskeyAdded { name: "Laptop".into() };
        assert_eq!(
            (added.kind(), added.describe().as_str()),
            ("passkey_added", "Passkey \u{201c}Laptop\u{201d} added")
        );
        let renamed = AuditEvent::PasskeyRenamed { old_name: "Laptop".into(), name: "Work laptop".into() };
        assert_eq!(renamed.describe(), "Passkey \u{201c}Laptop\u{201d} renamed to \u{201c}Work laptop\u{201d}");
        let removed = AuditEvent::PasskeyRemoved { name: "Phone".into() };
        assert_eq!(
            (removed.kind(), removed.describe().as_str()),
            ("passkey_removed", "Passkey \u{201c}Phone\u{201d} removed")
        );
        let json = serde_json::to_string(&renamed).unwrap_or_default();
        assert_eq!(json, r#"{"type":"passkey_renamed","old_name":"Laptop","name":"Work laptop"}"#);
    }

    #[test]
    fn sign_in_warnings_say_why() {
        let w = AuditEvent::SignInWarning {
            event: "new_device".into(),
            reason: "First sign-in from Firefox on Windows, just now".into(),
        };
        assert_eq!(
            (w.kind(), w.describe().as_str()),
            ("sign_in_warning", "Sign-in warning: First sign-in from Firefox on Windows, just now")
        );
        let json = serde_json::to_string(&w).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"type":"sign_in_warning","event":"new_device","reason":"First sign-in from Firefox on Windows, just now"}"#
        );
        // The record's own flattened `event` field does not clash with the warning's.
        let r = AuditRecord { at: 1, ip: None, session_id: Some("s".into()), device: None, event: w };
        assert_eq!(AuditRecord::from_json(&r.to_json()), Some(r));
    }
}
