//! Vigilance: warning flags on the sessions list, and a notice when someone signs in from a new
//! device or an unusual place.
//!
//! - `fingerprint`: what a device looks like to the gateway (browser family, OS family, the
//!   client-hint platform, phone/tablet/desktop; never versions, never the IP).
//! - `history`: per person, the fingerprints and places seen at sign-in (first/last seen,
//!   bounded) and the latest sign-ins, in the shared store ([`HistoryStore`]), so it holds across
//!   replicas and restarts.
//! - `flags`: the rules, pure functions of a session, the history and `now`.
//! - `notify`: the optional webhook, signed, retried, never in a request's way.
//!
//! [`Vigilance`] ties them together: [`Vigilance::on_sign_in`] at sign-in, [`Vigilance::flags`]
//! when the sessions list is built. Location rules need a GeoIP database: without one no
//! location flag is ever raised ([`NO_GEOIP_NOTE`] says so on the page).

pub mod fingerprint;
pub mod flags;
pub mod history;
#[cfg(test)]
pub(crate) mod history_contract;
pub mod notify;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::client_info::Location;
use crate::clock::{millis, Millis};
use crate::config::VigilanceConfig;
use crate::session::store::StoreError;
use crate::session::Session;
pub use fingerprint::{DeviceClass, Fingerprint};
pub use flags::{Flag, FlagKind, Rules, SessionFacts};
pub use history::{DeviceSeen, History, HistoryStore, Keep, PlaceSeen, SignIn, SignInSeen};
pub use notify::{Notice, NoticeKind, Notifier};

/// What the sessions page says once when no GeoIP database is configured.
pub const NO_GEOIP_NOTE: &str =
    "Location warnings are off: the gateway has no GeoIP database, so it cannot tell where sessions are.";

/// Countries large enough that a sign-in from another region of them is worth a flag; elsewhere
/// the country is the place.
pub const LARGE_COUNTRIES: [&str; 7] = ["US", "CA", "RU", "CN", "BR", "AU", "IN"];

/// Approximate coordinates of a place (degrees) with the GeoIP accuracy radius (km).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    pub latitude: f64,
    pub longitude: f64,
    /// None when the database gave none; the travel rule then assumes a wide one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_km: Option<u16>,
}

/// A place as the flags compare them: a country, or a country's region for the
/// [`LARGE_COUNTRIES`] (when the database knows the region).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// "GB", or "US-CA" (country code, `-`, ISO 3166-2 subdivision code).
    pub key: String,
    /// ISO 3166-1 alpha-2 country code, upper case: "US".
    pub country: String,
    /// What people read: "United Kingdom", "California, United States".
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
}

impl Place {
    /// The place of a GeoIP location; None without a well-formed country code (the database had
    /// no country for the IP: nothing to compare).
    pub fn from_location(location: &Location) -> Option<Place> {
        let code = location.country_code.as_deref()?.trim();
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        let country = code.to_ascii_uppercase();
        let name = location.country.clone().unwrap_or_else(|| country.clone());
        let region = location.region_code.as_deref().filter(|_| LARGE_COUNTRIES.contains(&country.as_str()));
        let (key, label) = match region {
            Some(region) => {
                let key = format!("{country}-{region}");
                let label = match location.region.as_deref() {
                    Some(region_name) => format!("{region_name}, {name}"),
                    None => format!("{name} ({key})"),
                };
                (key, label)
            }
            None => (country.clone(), name),
        };
        let coordinates = location.coordinates().map(|(latitude, longitude, accuracy_km)| Coordinates {
            latitude,
            longitude,
            accuracy_km,
        });
        Some(Place { key, country, label: cut(&label, MAX_LABEL_LEN), coordinates })
    }

    /// Whether `self` (from the history) may be the same place as `other`. Same key; or the same
    /// country where one of them has no region (the database did not say: assume the best).
    pub fn may_be(&self, other: &Place) -> bool {
        self.key == other.key
            || (self.country == other.country && (self.key == self.country || other.key == other.country))
    }
}

/// The longest label kept for a device or a place.
pub(crate) const MAX_LABEL_LEN: usize = 160;

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What happened at one sign-in, as far as vigilance is concerned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignInNovelty {
    /// The person had no recorded sign-in before (nothing to compare with: no flag, no notice).
    pub first_sign_in: bool,
    /// The device's fingerprint had never been seen for this person (never on a first sign-in).
    pub new_device: bool,
    /// The place had never been seen for this person (whether or not that is unusual).
    pub new_place: bool,
    /// The place is not among the person's usual ones (see [`flags::unusual_location`]).
    pub unusual_place: bool,
    /// The latest earlier sign-in (by time), if the history still holds one.
    pub previous_sign_in: Option<SignInSeen>,
    /// The flags the new session carries from the start (not `long_lived`).
    pub flags: Vec<Flag>,
}

/// The sign-in to record and maybe notify about.
#[derive(Debug, Clone)]
pub struct SignInFacts<'a> {
    pub session: &'a Session,
    /// For the notice: the person's email, when known.
    pub email: Option<&'a str>,
    /// The sign-in request's client IP.
    pub ip: Option<IpAddr>,
    /// [`Fingerprint::of`] the session's User-Agent and client hints.
    pub fingerprint: Fingerprint,
    /// Where `ip` is, when the GeoIP database says (None for private IPs, unknown ones, or
    /// without a database).
    pub location: Option<&'a Location>,
}

/// The flags' rules, the history store and the notifier, built once at start-up.
pub struct Vigilance {
    store: Arc<dyn HistoryStore>,
    rules: Rules,
    keep: Keep,
    notifier: Option<Notifier>,
}

impl std::fmt::Debug for Vigilance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vigilance")
            .field("rules", &self.rules)
            .field("keep", &self.keep)
            .field("notifier", &self.notifier)
            .finish_non_exhaustive()
    }
}

impl Vigilance {
    /// `notifier` is `None` without `[notify] webhook`.
    pub fn new(store: Arc<dyn HistoryStore>, config: &VigilanceConfig, notifier: Option<Notifier>) -> Self {
        let rules = Rules {
            long_lived_after: millis(config.long_lived_after),
            usual_after_sign_ins: config.usual_place_sign_ins,
        };
        let keep = Keep { devices: config.remember_devices, places: config.remember_places, ..Keep::default() };
        Vigilance { store, rules, keep, notifier }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn notifier(&self) -> Option<&Notifier> {
        self.notifier.as_ref()
    }

    /// A person's history, for [`Vigilance::flags`] on each of their sessions.
    pub async fn history(&self, user_id: &str) -> Result<History, StoreError> {
        self.store.history(user_id).await
    }

    /// Forgets a person's history (the person was removed). Whether there was one.
    pub async fn forget(&self, user_id: &str) -> Result<bool, StoreError> {
        self.store.forget_history(user_id).await
    }

    /// The flags of one session row, in this order: `new_device`, `unusual_location`,
    /// `impossible_travel`, `long_lived`. `geoip` is whether a GeoIP database is loaded (no
    /// location flag without one).
    pub fn flags(&self, session: &SessionFacts<'_>, history: &History, geoip: bool, now: Millis) -> Vec<Flag> {
        flags::evaluate(session, history, &self.rules, geoip, now)
    }

    /// Records a sign-in in the person's history (atomically, whatever other replicas do at the
    /// same moment) and says what was new about it.
    pub async fn record_sign_in(&self, user_id: &str, sign_in: &SignIn) -> Result<SignInNovelty, StoreError> {
        let before = self.store.record_sign_in(user_id, sign_in, self.keep).await?;
        Ok(novelty(&before, sign_in, &self.rules, self.keep))
    }

    /// At sign-in, after the session is stored: records it and queues a notice for a new device
    /// and for an unusual place (each one also deserves an audit event; the caller records them
    /// from the answer). Never fails the sign-in: a store error is logged and gives `None`.
    pub async fn on_sign_in(&self, facts: &SignInFacts<'_>) -> Option<SignInNovelty> {
        let session = facts.session;
        let sign_in = SignIn {
            session_id: session.id.to_string(),
            at: session.created_at,
            fingerprint: facts.fingerprint.clone(),
            place: facts.location.and_then(Place::from_location),
        };
        let novelty = match self.record_sign_in(&session.user_id, &sign_in).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    user.id = %session.user_id,
                    "could not record the sign-in in the vigilance history"
                );
                return None;
            }
        };
        if let Some(notifier) = &self.notifier {
            for flag in novelty.flags.iter() {
                let Some(kind) = NoticeKind::for_flag(flag.kind) else { continue };
                let location = facts.location.map(location_label).filter(|l| !l.is_empty());
                notifier.notify(Notice::new(kind, facts, &flag.reason, location));
            }
        }
        Some(novelty)
    }
}

/// "London, United Kingdom": city and country, as the sessions page shows them.
pub fn location_label(l: &Location) -> String {
    [l.city.as_deref(), l.country.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", ")
}

/// What was new about `sign_in`, given the history just before it: the history after it is
/// worked out the way the store did, then the same rules as on the sessions page are applied at
/// the sign-in's own time, so a notice and the row's flags always agree.
pub fn novelty(before: &History, sign_in: &SignIn, rules: &Rules, keep: Keep) -> SignInNovelty {
    let mut after = before.clone();
    after.record(sign_in, keep);
    let facts = SessionFacts {
        session_id: &sign_in.session_id,
        created_at: sign_in.at,
        fingerprint: &sign_in.fingerprint,
        place: sign_in.place.as_ref(),
    };
    let flags: Vec<Flag> = flags::evaluate(&facts, &after, rules, true, sign_in.at)
        .into_iter()
        .filter(|f| f.kind != FlagKind::LongLived)
        .map(|f| Flag { reason: flags::as_recorded(&f.reason), ..f })
        .collect();
    let has = |kind| flags.iter().any(|f: &Flag| f.kind == kind);
    SignInNovelty {
        first_sign_in: before.sign_ins.is_empty() && before.devices.is_empty(),
        new_device: has(FlagKind::NewDevice),
        new_place: sign_in.place.as_ref().is_some_and(|p| !before.places.iter().any(|seen| seen.place.key == p.key)),
        unusual_place: has(FlagKind::UnusualLocation),
        previous_sign_in: before
            .sign_ins
            .iter()
            .filter(|s| s.session_id != sign_in.session_id && s.at <= sign_in.at)
            .max_by_key(|s| s.at)
            .cloned(),
        flags,
    }
}
