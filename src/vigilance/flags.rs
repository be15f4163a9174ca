//! The warning flags on a session row, as pure functions of the session, the person's history
//! and `now`. Each rule says in plain words why it fired, and none fires on data the gateway does
//! not have: no place (private IP, no GeoIP record, no database) means no location flag, no
//! coordinates means no travel flag, a session older than the history means no device flag.

use serde::Serialize;

use super::history::{History, CLOCK_SKEW_TOLERANCE};
use super::{Coordinates, Fingerprint, Place};
use crate::clock::{ago, Millis};

/// The fastest anyone is assumed to travel: an airliner's cruising speed, rounded up.
pub const MAX_TRAVEL_KMH: f64 = 1000.0;
/// Added to the distance a plane could cover before travel counts as impossible: clock skew
/// between replicas, taxiing, GeoIP's coarser records.
pub const TRAVEL_SLACK_KM: f64 = 200.0;
/// The accuracy radius assumed when a GeoIP record has coordinates but no radius: wide, so the
/// travel rule stays conservative.
pub const DEFAULT_ACCURACY_KM: f64 = 500.0;
/// Mean Earth radius (km), for great-circle distances.
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Which warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// The session's device had never been seen for this person before its sign-in.
    NewDevice,
    /// Its place is not among the person's usual ones.
    UnusualLocation,
    /// Its sign-in was farther from the previous one than a plane could fly in the time between.
    ImpossibleTravel,
    /// Signed in long ago: worth a spring-clean.
    LongLived,
}

impl FlagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::NewDevice => "new_device",
            FlagKind::UnusualLocation => "unusual_location",
            FlagKind::ImpossibleTravel => "impossible_travel",
            FlagKind::LongLived => "long_lived",
        }
    }

    /// The badge on the sessions page.
    pub fn title(self) -> &'static str {
        match self {
            FlagKind::NewDevice => "New device",
            FlagKind::UnusualLocation => "Unusual location",
            FlagKind::ImpossibleTravel => "Impossible travel",
            FlagKind::LongLived => "Signed in long ago",
        }
    }
}

/// One warning on a session, as the JSON shows it: `{"kind": "new_device", "reason": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    pub kind: FlagKind,
    /// Why, in words: "First sign-in from Firefox on Windows, 3 days ago".
    pub reason: String,
}

/// The configurable parts of the rules (`[vigilance]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `long_lived` fires on sessions signed in longer ago than this (ms).
    pub long_lived_after: Millis,
    /// A place seen on at least this many sign-ins is usual.
    pub usual_after_sign_ins: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { long_lived_after: 30 * 86_400_000, usual_after_sign_ins: 2 }
    }
}

/// What the rules look at in a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// Its public id (the history names sessions by it).
    pub session_id: &'a str,
    /// When it signed in.
    pub created_at: Millis,
    pub fingerprint: &'a Fingerprint,
    /// Where it is now (its latest IP, the place its row shows); None when unknown.
    pub place: Option<&'a Place>,
}

/// Every flag of a session, in a fixed order. `geoip`: whether a GeoIP database is loaded; the
/// location rules stay silent without one, whatever the history holds.
pub fn evaluate(s: &SessionFacts<'_>, history: &History, rules: &Rules, geoip: bool, now: Millis) -> Vec<Flag> {
    let mut flags = Vec::new();
    flags.extend(new_device(s, history, now));
    if geoip {
        flags.extend(unusual_location(s, history, rules.usual_after_sign_ins, now));
        flags.extend(impossible_travel(s, history));
    }
    flags.extend(long_lived(s, rules.long_lived_after, now));
    flags
}

/// `new_device`: this session's sign-in is the one that first showed its fingerprint, and the
/// person had signed in with something else before (a first sign-in ever has nothing to be new
/// against). Sessions older than the history (their sign-in was never recorded) get no flag,
/// nor do two devices first seen within [`CLOCK_SKEW_TOLERANCE`] of each other.
pub fn new_device(s: &SessionFacts<'_>, history: &History, now: Millis) -> Option<Flag> {
    let device = history.device(&s.fingerprint.key)?;
    if device.first_session != s.session_id {
        return None;
    }
    // Clearly before (replica clocks may disagree a little), by a device still remembered or a
    // sign-in still in the log.
    let before = device.first_seen.saturating_sub(CLOCK_SKEW_TOLERANCE);
    let known_before =
        history.devices.iter().any(|d| d.fingerprint.key != device.fingerprint.key && d.first_seen < before)
            || history.sign_ins.iter().any(|x| x.fingerprint != device.fingerprint.key && x.at < before);
    known_before.then(|| Flag {
        kind: FlagKind::NewDevice,
        reason: format!("First sign-in from {}, {}", device.fingerprint.label, ago(s.created_at, now)),
    })
}

/// `unusual_location`: the session's place has been seen on fewer than `usual_after` sign-ins,
/// and the person had signed in from somewhere else before it first appeared (someone's first
/// places are theirs). A place without a region in a large country, or a history entry without
/// one, matches every region of that country: no flag on what the database did not say.
pub fn unusual_location(s: &SessionFacts<'_>, history: &History, usual_after: u32, now: Millis) -> Option<Flag> {
    let here = s.place?;
    let (mut count, mut first_seen) = (0u32, None::<Millis>);
    for seen in history.places.iter().filter(|p| p.place.may_be(here)) {
        count = count.saturating_add(seen.sign_ins);
        first_seen = Some(first_seen.map_or(seen.first_seen, |f| f.min(seen.first_seen)));
    }
    if count >= usual_after {
        return None;
    }
    let since = first_seen.unwrap_or(Millis::MAX);
    let elsewhere_before = history
        .places
        .iter()
        .any(|p| !p.place.may_be(here) && p.first_seen < since.saturating_sub(CLOCK_SKEW_TOLERANCE));
    if !elsewhere_before {
        return None;
    }
    let reason = match first_seen {
        Some(first) => {
            format!("{} is not one of your usual places: first sign-in from there {}", here.label, ago(first, now))
        }
        None => format!("Used from {}, where you have never signed in", here.label),
    };
    Some(Flag { kind: FlagKind::UnusualLocation, reason })
}

/// `impossible_travel`: the session's sign-in and the latest sign-in before it (another
/// session's, with coordinates) are farther apart, less both accuracy radii, than
/// [`MAX_TRAVEL_KMH`] covers in the time between, plus [`TRAVEL_SLACK_KM`]. Needs both sign-ins
/// in the history with coordinates; otherwise silent.
pub fn impossible_travel(s: &SessionFacts<'_>, history: &History) -> Option<Flag> {
    let this = history.sign_in_of(s.session_id)?;
    let here_place = this.place.as_ref()?;
    let here = here_place.coordinates?;
    let (before, there) = history
        .sign_ins
        .iter()
        .filter(|x| x.session_id != this.session_id && x.at <= this.at)
        .filter_map(|x| Some((x, x.place.as_ref()?.coordinates?)))
        .max_by_key(|(x, _)| x.at)?;
    let km = distance_km(here, there);
    let hours = (this.at - before.at) as f64 / 3_600_000.0;
    if !travel_is_impossible(km, radius(here) + radius(there), hours) {
        return None;
    }
    let there_label = before.place.as_ref().map_or("elsewhere", |p| p.label.as_str());
    Some(Flag {
        kind: FlagKind::ImpossibleTravel,
        reason: format!(
            "Signed in from {} {} after a sign-in from {}, about {} km away: faster than any plane",
            here_place.label,
            span(this.at - before.at),
            there_label,
            thousands(km.round() as u64)
        ),
    })
}

/// A reason as a notice or an audit entry keeps it: written at the sign-in and read later, so
/// without the "just now" the rules say at that moment (the record carries its own time).
pub fn as_recorded(reason: &str) -> String {
    reason.replace(", just now", "").replace(" just now", "")
}

/// `long_lived`: signed in more than `after` ago.
pub fn long_lived(s: &SessionFacts<'_>, after: Millis, now: Millis) -> Option<Flag> {
    (now.saturating_sub(s.created_at) > after).then(|| Flag {
        kind: FlagKind::LongLived,
        reason: format!(
            "Signed in {}. If you no longer use this device, sign it out: a spring-clean keeps your account safer",
            ago(s.created_at, now)
        ),
    })
}

/// Whether covering `km` (less `radii_km` of uncertainty) in `hours` beats a plane.
pub fn travel_is_impossible(km: f64, radii_km: f64, hours: f64) -> bool {
    let gap = km - radii_km;
    gap > MAX_TRAVEL_KMH * hours.max(0.0) + TRAVEL_SLACK_KM
}

fn radius(c: Coordinates) -> f64 {
    c.accuracy_km.map_or(DEFAULT_ACCURACY_KM, f64::from)
}

/// Great-circle distance (haversine), km.
pub fn distance_km(a: Coordinates, b: Coordinates) -> f64 {
    let (la1, la2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dla = la2 - la1;
    let dlo = (b.longitude - a.longitude).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// "12 minutes", "3 hours", "2 days": how long between two sign-ins.
fn span(ms: Millis) -> String {
    let mins = ms.max(0) / 60_000;
    let (n, unit) = match mins {
        0 => return "moments".to_string(),
        1..=59 => (mins, "minute"),
        60..=2879 => (mins / 60, "hour"),
        _ => (mins / 1440, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// 17000 → "17,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[path = "flags_tests.rs"]
mod tests;
