//! The fields of a session HASH (`rec`, `la`, `ip`, `exp`), their encoding, and the key TTL.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::clock::Millis;
use crate::session::store::StoreError;
use crate::session::Session;

/// The record: `[version byte] ++ JSON` (the same encoding as the embedded store).
pub(super) const REC: &str = "rec";
/// Last-active millis, written by the activity flusher (only ever moves forward).
pub(super) const LA: &str = "la";
/// Last IP from the activity flusher; absent or empty = the record's `last_ip`.
pub(super) const IP: &str = "ip";
/// Absolute expiry millis (so the activity script can cap the TTL without parsing JSON).
pub(super) const EXP: &str = "exp";

const RECORD_VERSION: u8 = 1;

pub(super) fn encode(session: &Session) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(out)
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<Session, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, json)) => serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.to_string())),
        _ => Err(StoreError::Corrupt("unknown record version".into())),
    }
}

/// A session from its HGETALL reply: `None` for an empty reply (no such key). The record's
/// last-active and IP are overlaid with the newer values from the activity fields.
pub(super) fn decode_hash(fields: HashMap<String, Vec<u8>>) -> Result<Option<Session>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let rec = fields.get(REC).ok_or_else(|| StoreError::Corrupt("session hash without a record".into()))?;
    let mut session = decode_record(rec)?;
    if let Some(la) = fields.get(LA).and_then(|v| std::str::from_utf8(v).ok()?.parse::<Millis>().ok()) {
        session.last_active_at = session.last_active_at.max(la);
    }
    if let Some(ip) = fields.get(IP).and_then(|v| std::str::from_utf8(v).ok()?.parse::<IpAddr>().ok()) {
        session.last_ip = Some(ip);
    }
    Ok(Some(session))
}

/// The key's time to live at `now`: until `min(last_active + idle, expires_at)`. `None` when
/// that moment has passed (such a session is not written).
pub(super) fn ttl(last_active: Millis, expires_at: Millis, idle: Millis, now: Millis) -> Option<Millis> {
    let end = last_active.saturating_add(idle).min(expires_at);
    let left = end.saturating_sub(now);
    (left > 0).then_some(left)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ttl_is_the_earlier_of_idle_and_absolute_end() {
        assert_eq!(ttl(1_000, 100_000, 10_000, 1_000), Some(10_000));
        assert_eq!(ttl(1_000, 5_000, 10_000, 1_000), Some(4_000));
        assert_eq!(ttl(1_000, 5_000, 10_000, 5_000), None);
        assert_eq!(ttl(0, 100_000, 10_000, 20_000), None);
    }

    #[test]
    fn an_empty_hash_is_no_session_and_a_hash_without_record_is_corrupt() {
        assert!(matches!(decode_hash(HashMap::new()), Ok(None)));
        let only_la = HashMap::from([(LA.to_string(), b"5".to_vec())]);
        assert!(matches!(decode_hash(only_la), Err(StoreError::Corrupt(_))));
        assert!(decode_record(b"\x09{}").is_err());
    }
}
