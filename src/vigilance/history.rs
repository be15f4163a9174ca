//! A person's sign-in history: the devices (fingerprints) and places seen at sign-in, with
//! first and last seen, and the latest sign-ins themselves. Bounded: the least recently seen
//! entries go first. Kept in the shared store ([`HistoryStore`]) as one record per person.
//!
//! Merging is what makes replicas agree: [`History::record`] is applied by the store inside one
//! atomic step (a write transaction, or a compare-and-set that starts over when another replica
//! wrote first), so concurrent sign-ins are all counted. Replica clocks may disagree by a little:
//! a sign-in stamped earlier than what is stored never moves `first_seen` later, `last_seen` only
//! grows, and the sign-in log is ordered by time whatever order the writes arrive in.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Fingerprint, Place, MAX_LABEL_LEN};
use crate::clock::Millis;
use crate::session::store::StoreError;

/// How much of a history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Fingerprints (`[vigilance] remember_devices`).
    pub devices: usize,
    /// Places (`[vigilance] remember_places`).
    pub places: usize,
    /// Latest sign-ins (for impossible travel and for which session introduced what).
    pub sign_ins: usize,
}

impl Default for Keep {
    fn default() -> Self {
        Keep { devices: 50, places: 50, sign_ins: 20 }
    }
}

/// The most any [`Keep`] field may be: a history stays a few dozen kilobytes at most.
pub const MAX_KEEP: usize = 500;
/// Longest session id accepted in a sign-in (public ids are 22 characters).
const MAX_SESSION_ID_LEN: usize = 64;
/// Longest place key ("US-CA" is 5).
const MAX_PLACE_KEY_LEN: usize = 8;
/// How far apart two times stamped by different replicas must be for one to count as "before"
/// the other: replica clocks may disagree by this much.
pub const CLOCK_SKEW_TOLERANCE: Millis = 2 * 60 * 1000;

/// One fingerprint seen at sign-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSeen {
    pub fingerprint: Fingerprint,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// How many recorded sign-ins had it.
    pub sign_ins: u32,
    /// The public id of the session whose sign-in first showed it.
    pub first_session: String,
}

/// One place seen at sign-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceSeen {
    /// As of the latest sign-in from there (label and coordinates may change with the database).
    pub place: Place,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub sign_ins: u32,
    pub first_session: String,
}

/// One recorded sign-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignInSeen {
    pub session_id: String,
    pub at: Millis,
    /// The fingerprint's key.
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<Place>,
}

/// A sign-in to record: the new session's public id, its creation time, its device and where
/// it came from (None when the gateway cannot tell).
#[derive(Debug, Clone, PartialEq)]
pub struct SignIn {
    pub session_id: String,
    pub at: Millis,
    pub fingerprint: Fingerprint,
    pub place: Option<Place>,
}

/// A person's history. The store's record; empty for someone never recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    pub devices: Vec<DeviceSeen>,
    pub places: Vec<PlaceSeen>,
    /// Oldest first.
    pub sign_ins: Vec<SignInSeen>,
}

impl History {
    /// The entry of a fingerprint.
    pub fn device(&self, key: &str) -> Option<&DeviceSeen> {
        self.devices.iter().find(|d| d.fingerprint.key == key)
    }

    /// The sign-in that started a session, if still in the log.
    pub fn sign_in_of(&self, session_id: &str) -> Option<&SignInSeen> {
        self.sign_ins.iter().find(|s| s.session_id == session_id)
    }

    /// Merges one sign-in in (see the module docs). Recording the same session twice changes
    /// nothing the second time, so a store may safely retry.
    pub fn record(&mut self, s: &SignIn, keep: Keep) {
        if self.sign_in_of(&s.session_id).is_some() {
            return;
        }
        match self.devices.iter_mut().find(|d| d.fingerprint.key == s.fingerprint.key) {
            Some(d) => {
                if s.at >= d.last_seen {
                    d.fingerprint = s.fingerprint.clone();
                }
                seen(&mut d.first_seen, &mut d.last_seen, &mut d.first_session, s);
                d.sign_ins = d.sign_ins.saturating_add(1);
            }
            None => self.devices.push(DeviceSeen {
                fingerprint: s.fingerprint.clone(),
                first_seen: s.at,
                last_seen: s.at,
                sign_ins: 1,
                first_session: s.session_id.clone(),
            }),
        }
        if let Some(place) = &s.place {
            match self.places.iter_mut().find(|p| p.place.key == place.key) {
                Some(p) => {
                    if s.at >= p.last_seen {
                        p.place = place.clone();
                    }
                    seen(&mut p.first_seen, &mut p.last_seen, &mut p.first_session, s);
                    p.sign_ins = p.sign_ins.saturating_add(1);
                }
                None => self.places.push(PlaceSeen {
                    place: place.clone(),
                    first_seen: s.at,
                    last_seen: s.at,
                    sign_ins: 1,
                    first_session: s.session_id.clone(),
                }),
            }
        }
        self.sign_ins.push(SignInSeen {
            session_id: s.session_id.clone(),
            at: s.at,
            fingerprint: s.fingerprint.key.clone(),
            place: s.place.clone(),
        });
        self.trim(keep);
    }

    /// Drops the least recently seen entries beyond `keep`, and the oldest sign-ins.
    pub fn trim(&mut self, keep: Keep) {
        self.sign_ins.sort_by(|a, b| (a.at, &a.session_id).cmp(&(b.at, &b.session_id)));
        let extra = self.sign_ins.len().saturating_sub(keep.sign_ins);
        self.sign_ins.drain(..extra);
        self.devices.sort_by_key(|d| std::cmp::Reverse(d.last_seen));
        self.devices.truncate(keep.devices);
        self.places.sort_by_key(|p| std::cmp::Reverse(p.last_seen));
        self.places.truncate(keep.places);
    }
}

/// `first_seen` only moves earlier and `last_seen` only later. The session that showed it
/// first changes only for a sign-in clearly earlier than the recorded one: a sign-in stamped a
/// little earlier by a replica whose clock is behind, but recorded after it, did not come first.
fn seen(first_seen: &mut Millis, last_seen: &mut Millis, first_session: &mut String, s: &SignIn) {
    if s.at < first_seen.saturating_sub(CLOCK_SKEW_TOLERANCE) {
        *first_session = s.session_id.clone();
    }
    *first_seen = (*first_seen).min(s.at);
    *last_seen = (*last_seen).max(s.at);
}

/// Where histories live. Implemented by every session store.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Adds `sign_in` to `user_id`'s history with [`History::record`] and `keep`, as one atomic
    /// step (sign-ins at the same moment on several replicas are all counted), and returns the
    /// history as it was just before.
    async fn record_sign_in(&self, user_id: &str, sign_in: &SignIn, keep: Keep) -> Result<History, StoreError>;

    /// The person's history; empty when nothing was recorded.
    async fn history(&self, user_id: &str) -> Result<History, StoreError>;

    /// Removes the person's history (the person was removed); whether there was one.
    async fn forget_history(&self, user_id: &str) -> Result<bool, StoreError>;
}

/// Checks a sign-in before any I/O. A refusal is `StoreError::Corrupt` (bad input: trying again
/// cannot help), saying what was wrong without echoing the value.
pub(crate) fn check_sign_in(s: &SignIn, keep: Keep) -> Result<(), StoreError> {
    let refuse = |why: &str| Err(StoreError::Corrupt(format!("sign-in history refused: {why}")));
    if s.session_id.is_empty() || s.session_id.len() > MAX_SESSION_ID_LEN {
        return refuse("the session id is empty or too long");
    }
    let key = &s.fingerprint.key;
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse("the fingerprint is not 32 hex digits");
    }
    if s.fingerprint.label.len() > MAX_LABEL_LEN {
        return refuse("the device label is too long");
    }
    if let Some(p) = &s.place {
        if p.key.is_empty() || p.key.len() > MAX_PLACE_KEY_LEN || p.label.len() > MAX_LABEL_LEN || p.country.len() != 2
        {
            return refuse("the place is malformed");
        }
    }
    let counts = [keep.devices, keep.places, keep.sign_ins];
    if counts.iter().any(|&n| n == 0 || n > MAX_KEEP) {
        return refuse("keep counts must be 1 to 500");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vigilance::DeviceClass;

    fn fingerprint(n: u32) -> Fingerprint {
        Fingerprint { key: format!("{n:032x}"), label: format!("Browser {n} on OS"), class: DeviceClass::Desktop }
    }

    fn place(key: &str) -> Place {
        Place { key: key.into(), country: key[..2].into(), label: key.into(), coordinates: None }
    }

    fn sign_in(session: &str, at: Millis, device: u32, place_key: Option<&str>) -> SignIn {
        SignIn { session_id: session.into(), at, fingerprint: fingerprint(device), place: place_key.map(place) }
    }

    const HOUR: Millis = 3_600_000;

    #[test]
    fn first_seen_never_moves_later_and_last_seen_only_grows() {
        let mut h = History::default();
        h.record(&sign_in("b", 2 * HOUR, 1, Some("GB")), Keep::default());
        // A sign-in an hour earlier is recorded afterwards (a write that was held up).
        h.record(&sign_in("a", HOUR, 1, Some("GB")), Keep::default());
        let d = h.device(&fingerprint(1).key).unwrap();
        assert_eq!((d.first_seen, d.last_seen, d.sign_ins, d.first_session.as_str()), (HOUR, 2 * HOUR, 2, "a"));
        let p = &h.places[0];
        assert_eq!((p.first_seen, p.last_seen, p.sign_ins, p.first_session.as_str()), (HOUR, 2 * HOUR, 2, "a"));
        let order: Vec<&str> = h.sign_ins.iter().map(|s| s.session_id.as_str()).collect();
        assert_eq!(order, ["a", "b"], "the log is in time order");
    }

    #[test]
    fn a_replica_a_minute_behind_does_not_steal_the_first_sign_in() {
        let mut h = History::default();
        h.record(&sign_in("first", 10 * 60_000, 1, Some("GB")), Keep::default());
        // Recorded later, stamped a minute earlier by a replica whose clock is behind.
        h.record(&sign_in("second", 9 * 60_000, 1, Some("GB")), Keep::default());
        let d = h.device(&fingerprint(1).key).unwrap();
        assert_eq!((d.first_seen, d.first_session.as_str()), (9 * 60_000, "first"));
        assert_eq!(h.places[0].first_session, "first");
    }

    #[test]
    fn recording_a_session_twice_counts_it_once() {
        let mut h = History::default();
        let s = sign_in("a", 1_000, 1, Some("FR"));
        h.record(&s, Keep::default());
        let once = h.clone();
        h.record(&s, Keep::default());
        assert_eq!(h, once);
    }

    #[test]
    fn the_least_recently_seen_are_forgotten_first() {
        let keep = Keep { devices: 3, places: 2, sign_ins: 4 };
        let mut h = History::default();
        for (i, (device, place)) in [(1, "GB"), (2, "FR"), (3, "DE"), (1, "GB"), (4, "GB")].into_iter().enumerate() {
            h.record(&sign_in(&format!("s{i}"), 1_000 * i as Millis, device, Some(place)), keep);
        }
        let mut devices: Vec<String> = h.devices.iter().map(|d| d.fingerprint.label.clone()).collect();
        devices.sort();
        // Device 2 was last seen at the second sign-in: the oldest.
        assert_eq!(devices, ["Browser 1 on OS", "Browser 3 on OS", "Browser 4 on OS"]);
        let places: Vec<&str> = h.places.iter().map(|p| p.place.key.as_str()).collect();
        assert_eq!(places, ["GB", "DE"]);
        let log: Vec<&str> = h.sign_ins.iter().map(|s| s.session_id.as_str()).collect();
        assert_eq!(log, ["s1", "s2", "s3", "s4"]);
    }

    #[test]
    fn the_latest_sign_in_names_the_place() {
        let mut h = History::default();
        let mut later = place("US-CA");
        later.label = "California, United States".into();
        h.record(&SignIn { place: Some(later.clone()), ..sign_in("b", 2_000, 1, None) }, Keep::default());
        h.record(&sign_in("a", 1_000, 1, Some("US-CA")), Keep::default());
        assert_eq!(h.places[0].place, later, "an older sign-in does not replace the newer label");
        assert_eq!(h.sign_ins[0].place.as_ref().map(|p| p.label.as_str()), Some("US-CA"));
    }

    #[test]
    fn sign_ins_without_a_place_record_only_the_device() {
        let mut h = History::default();
        h.record(&sign_in("a", 1, 1, None), Keep::default());
        assert_eq!((h.devices.len(), h.places.len(), h.sign_ins.len()), (1, 0, 1));
    }

    #[test]
    fn malformed_sign_ins_are_refused() {
        let good = sign_in("a", 1, 1, Some("GB"));
        assert!(check_sign_in(&good, Keep::default()).is_ok());
        let mut bad = vec![
            SignIn { session_id: String::new(), ..good.clone() },
            SignIn { session_id: "x".repeat(65), ..good.clone() },
            SignIn { place: Some(place("GB-TOOLONG")), ..good.clone() },
        ];
        let mut f = good.clone();
        f.fingerprint.key = "not hex".into();
        bad.push(f);
        let mut f = good.clone();
        f.fingerprint.label = "x".repeat(MAX_LABEL_LEN + 1);
        bad.push(f);
        for s in &bad {
            assert!(matches!(check_sign_in(s, Keep::default()), Err(StoreError::Corrupt(_))), "{s:?}");
        }
        assert!(check_sign_in(&good, Keep { devices: 0, ..Keep::default() }).is_err());
        assert!(check_sign_in(&good, Keep { places: MAX_KEEP + 1, ..Keep::default() }).is_err());
    }
}
