//! Vigilance end to end inside the library: sign-ins resolved through a GeoIP database the test
//! writes, recorded in the embedded store, flagged and notified.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::client_info::{ClientHints, ClientInfoResolver};
use crate::config::{NotifyConfig, WebhookSecret};
use crate::session::embedded::EmbeddedStore;
use crate::session::{NewSession, SignInMethod};

// The same writer `client_info`'s tests use (their copy is private to them).
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/support/mmdb.rs"]
mod mmdb;

use mmdb::{City, Geo, MmdbWriter};

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;
const T0: Millis = 1_700_000_000_000;

const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";

const LONDON_IP: &str = "81.2.69.160";
const SYDNEY_IP: &str = "1.128.0.1";
const SAN_FRANCISCO_IP: &str = "2001:480:10::1";
const NEW_YORK_IP: &str = "2001:480:20::1";
const NO_RECORD_IP: &str = "8.8.8.8";

fn geoip_database(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("city.mmdb");
    let city = |city, country, iso| City { city_en: Some(city), country_en: Some(country), iso: Some(iso) };
    MmdbWriter::new("GeoIP2-City")
        .insert(
            "81.2.69.0/24".parse().expect("net"),
            Geo {
                city: city("London", "United Kingdom", "GB"),
                region: Some(("ENG", "England")),
                at: Some((51.51, -0.13, 20)),
            },
        )
        .insert(
            "1.128.0.0/16".parse().expect("net"),
            Geo {
                city: city("Sydney", "Australia", "AU"),
                region: Some(("NSW", "New South Wales")),
                at: Some((-33.87, 151.21, 50)),
            },
        )
        .insert(
            "2001:480:10::/48".parse().expect("net"),
            Geo {
                city: city("San Francisco", "United States", "US"),
                region: Some(("CA", "California")),
                at: Some((37.77, -122.42, 10)),
            },
        )
        .insert(
            "2001:480:20::/48".parse().expect("net"),
            Geo {
                city: city("New York", "United States", "US"),
                region: Some(("NY", "New York")),
                at: Some((40.71, -74.01, 10)),
            },
        )
        .write(&path)
        .expect("write the GeoIP database");
    path
}

/// One gateway's worth of vigilance: resolver, embedded store, a notifier nobody delivers for.
struct Rig {
    resolver: ClientInfoResolver,
    vigilance: Vigilance,
    notifier: Notifier,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(with_geoip: bool) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = with_geoip.then(|| geoip_database(dir.path()));
        let resolver = ClientInfoResolver::new(Vec::new(), db.as_deref()).expect("resolver");
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("store")).expect("store"));
        let notifier = Notifier::new(NotifyConfig {
            webhook: "http://127.0.0.1:9/".into(),
            secret: WebhookSecret::new("0123456789abcdef0123456789abcdef"),
            timeout: Duration::from_secs(1),
            max_attempts: 1,
            retry_backoff: Duration::from_millis(10),
        })
        .expect("notifier");
        let vigilance = Vigilance::new(store, &VigilanceConfig::default(), Some(notifier.clone()));
        Rig { resolver, vigilance, notifier, _dir: dir }
    }

    /// Signs `user` in from `ip` with `ua` at `at`, as the sign-in flow would, and records it.
    async fn sign_in(&self, user: &str, ua: &str, ip: &str, at: Millis) -> (Session, Option<SignInNovelty>) {
        let ip: IpAddr = ip.parse().expect("ip");
        let new = NewSession {
            user_id: user.into(),
            method: SignInMethod::Password,
            remember_me: true,
            ip: Some(ip),
            user_agent: ua.into(),
            client_hints: ClientHints::default(),
            reauthenticated: false,
            passkey: None,
        };
        let (session, _) = Session::start(new, at, 90 * DAY);
        let location = self.resolver.locate(ip);
        let facts = SignInFacts {
            session: &session,
            email: Some("amy@example.com"),
            ip: Some(ip),
            fingerprint: Fingerprint::of(&self.resolver, ua, &session.client_hints),
            location: location.as_ref(),
        };
        let novelty = self.vigilance.on_sign_in(&facts).await;
        (session, novelty)
    }

    /// The flags of `session`'s row at `now`, used from `ip` now, as the sessions page builds them.
    async fn row_flags(&self, session: &Session, ip: &str, now: Millis) -> Vec<FlagKind> {
        let history = self.vigilance.history(&session.user_id).await.expect("history");
        let fingerprint = Fingerprint::of(&self.resolver, &session.user_agent, &session.client_hints);
        let place = ip.parse().ok().and_then(|ip| self.resolver.locate(ip)).as_ref().and_then(Place::from_location);
        let id = session.id.to_string();
        let facts = SessionFacts {
            session_id: &id,
            created_at: session.created_at,
            fingerprint: &fingerprint,
            place: place.as_ref(),
        };
        let flags = self.vigilance.flags(&facts, &history, self.resolver.has_geoip(), now);
        flags.iter().map(|f| f.kind).collect()
    }
}

#[tokio::test]
async fn sign_ins_are_flagged_and_notified_as_they_happen() {
    let rig = Rig::new(true);
    // Amy's first sign-ins: home, her usual browser. Nothing to compare with, nothing to say.
    let (first, n) = rig.sign_in("amy", CHROME_MAC, LONDON_IP, T0).await;
    let n = n.expect("recorded");
    assert!(n.first_sign_in && !n.new_device && !n.unusual_place && n.flags.is_empty(), "{n:?}");
    let (_, n) = rig.sign_in("amy", CHROME_MAC, LONDON_IP, T0 + DAY).await;
    let n = n.expect("recorded");
    assert!(!n.first_sign_in && n.flags.is_empty(), "{n:?}");
    assert_eq!(n.previous_sign_in.map(|p| p.session_id), Some(first.id.to_string()));
    assert!(rig.notifier.drain().is_empty());

    // A new browser at home: new device, one notice.
    let (firefox, n) = rig.sign_in("amy", FIREFOX_WINDOWS, LONDON_IP, T0 + 2 * DAY).await;
    let n = n.expect("recorded");
    assert!(n.new_device && !n.new_place && !n.unusual_place, "{n:?}");
    let notices = rig.notifier.drain();
    assert_eq!(notices.len(), 1);
    let notice = &notices[0];
    assert_eq!(notice.kind, NoticeKind::NewDevice);
    assert_eq!(notice.reason, "First sign-in from Firefox on Windows");
    assert_eq!((notice.user_id.as_str(), notice.email.as_deref()), ("amy", Some("amy@example.com")));
    assert_eq!(notice.session_id, firefox.id.to_string());
    assert_eq!(notice.device, "Firefox on Windows");
    assert_eq!(notice.location.as_deref(), Some("London, United Kingdom"));
    assert_eq!(notice.ip.map(|ip| ip.to_string()).as_deref(), Some(LONDON_IP));

    // Her usual browser, an hour later, from Sydney: unusual place and impossible travel; only
    // the place is notified.
    let (sydney, n) = rig.sign_in("amy", CHROME_MAC, SYDNEY_IP, T0 + 2 * DAY + HOUR).await;
    let n = n.expect("recorded");
    assert!(!n.new_device && n.new_place && n.unusual_place, "{n:?}");
    let kinds: Vec<FlagKind> = n.flags.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FlagKind::UnusualLocation, FlagKind::ImpossibleTravel]);
    let notices = rig.notifier.drain();
    assert_eq!(notices.iter().map(|n| n.kind).collect::<Vec<_>>(), [NoticeKind::UnusualLocation]);
    assert_eq!(
        notices[0].reason,
        "New South Wales, Australia is not one of your usual places: first sign-in from there"
    );

    // The rows a month later: everything long-lived; the flags stay with the sessions that earned them.
    let now = T0 + 40 * DAY;
    assert_eq!(rig.row_flags(&first, LONDON_IP, now).await, [FlagKind::LongLived]);
    assert_eq!(rig.row_flags(&firefox, LONDON_IP, now).await, [FlagKind::NewDevice, FlagKind::LongLived]);
    assert_eq!(
        rig.row_flags(&sydney, SYDNEY_IP, now).await,
        [FlagKind::UnusualLocation, FlagKind::ImpossibleTravel, FlagKind::LongLived]
    );
    // Before the month is up, and with the Sydney session now back in London.
    assert_eq!(rig.row_flags(&sydney, LONDON_IP, T0 + 3 * DAY).await, [FlagKind::ImpossibleTravel]);
}

#[tokio::test]
async fn large_countries_are_compared_by_region() {
    let rig = Rig::new(true);
    rig.sign_in("ben", CHROME_MAC, SAN_FRANCISCO_IP, T0).await;
    rig.sign_in("ben", CHROME_MAC, SAN_FRANCISCO_IP, T0 + DAY).await;
    // New York, ten hours later: another region (flagged), but a plane could make it.
    let (ny, n) = rig.sign_in("ben", CHROME_MAC, NEW_YORK_IP, T0 + DAY + 10 * HOUR).await;
    let kinds: Vec<FlagKind> = n.expect("recorded").flags.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FlagKind::UnusualLocation]);
    assert_eq!(rig.row_flags(&ny, NEW_YORK_IP, T0 + 2 * DAY).await, [FlagKind::UnusualLocation]);
}

#[tokio::test]
async fn private_unknown_and_garbage_inputs_raise_no_location_flags() {
    let rig = Rig::new(true);
    rig.sign_in("cat", CHROME_MAC, LONDON_IP, T0).await;
    rig.sign_in("cat", CHROME_MAC, LONDON_IP, T0 + DAY).await;
    for (i, ip) in ["10.1.2.3", "127.0.0.1", "192.168.1.20", "fd00::1", NO_RECORD_IP].into_iter().enumerate() {
        let (s, n) = rig.sign_in("cat", CHROME_MAC, ip, T0 + 2 * DAY + i as Millis * HOUR).await;
        let n = n.expect("recorded");
        assert!(n.flags.is_empty() && !n.new_place, "{ip}: {n:?}");
        assert!(rig.row_flags(&s, ip, T0 + 3 * DAY).await.is_empty(), "{ip}");
    }
    // A missing User-Agent from a private address: a new (unrecognised) device, nothing else.
    let (blank, n) = rig.sign_in("cat", "", "10.9.9.9", T0 + 4 * DAY).await;
    let n = n.expect("recorded");
    assert_eq!(n.flags.iter().map(|f| f.kind).collect::<Vec<_>>(), [FlagKind::NewDevice]);
    assert_eq!(n.flags[0].reason, "First sign-in from an unrecognised browser");
    assert_eq!(rig.row_flags(&blank, "10.9.9.9", T0 + 4 * DAY).await, [FlagKind::NewDevice]);
    let notices = rig.notifier.drain();
    assert_eq!(notices.len(), 1);
    assert_eq!((notices[0].ip.map(|i| i.to_string()), notices[0].location.as_deref()), (Some("10.9.9.9".into()), None));
}

#[tokio::test]
async fn without_a_geoip_database_there_are_never_location_flags() {
    let rig = Rig::new(false);
    let (_, _) = rig.sign_in("dan", CHROME_MAC, LONDON_IP, T0).await;
    let (s, n) = rig.sign_in("dan", FIREFOX_WINDOWS, SYDNEY_IP, T0 + HOUR).await;
    let n = n.expect("recorded");
    assert_eq!(n.flags.iter().map(|f| f.kind).collect::<Vec<_>>(), [FlagKind::NewDevice]);
    assert!(!n.new_place);
    assert_eq!(rig.row_flags(&s, SYDNEY_IP, T0 + 2 * HOUR).await, [FlagKind::NewDevice]);
    let h = rig.vigilance.history("dan").await.expect("history");
    assert!(h.places.is_empty());
}

/// A store that is down.
struct Down;

#[async_trait]
impl HistoryStore for Down {
    async fn record_sign_in(&self, _: &str, _: &SignIn, _: Keep) -> Result<History, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn history(&self, _: &str) -> Result<History, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn forget_history(&self, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn a_store_outage_never_fails_the_sign_in() {
    let mut rig = Rig::new(true);
    rig.vigilance = Vigilance::new(Arc::new(Down), &VigilanceConfig::default(), Some(rig.notifier.clone()));
    let (_, n) = rig.sign_in("eve", CHROME_MAC, LONDON_IP, T0).await;
    assert_eq!(n, None);
    assert!(rig.notifier.drain().is_empty());
}

#[tokio::test]
async fn the_config_sets_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let config = VigilanceConfig {
        long_lived_after: Duration::from_secs(7 * 86_400),
        usual_place_sign_ins: 3,
        remember_devices: 5,
        remember_places: 6,
    };
    let v = Vigilance::new(store, &config, None);
    assert_eq!(*v.rules(), Rules { long_lived_after: 7 * DAY, usual_after_sign_ins: 3 });
    assert_eq!(v.keep, Keep { devices: 5, places: 6, sign_ins: Keep::default().sign_ins });
    assert!(v.notifier().is_none());
}

#[test]
fn places_key_by_region_only_in_large_countries() {
    assert!(LARGE_COUNTRIES.contains(&"US") && !LARGE_COUNTRIES.contains(&"GB"));
    let p = |key: &str| Place { key: key.into(), country: key[..2].into(), label: key.into(), coordinates: None };
    assert!(p("US-CA").may_be(&p("US-CA")));
    assert!(p("US").may_be(&p("US-CA")) && p("US-CA").may_be(&p("US")));
    assert!(!p("US-CA").may_be(&p("US-NY")));
    assert!(!p("GB").may_be(&p("FR")));
    assert_eq!(cut("ééé", 3), "é");
}
