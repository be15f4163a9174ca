//! Each rule with `now` pinned: when it fires, when it must stay silent, and what it says.

use super::*;
use crate::client_info::Location;
use crate::vigilance::history::{Keep, SignIn};
use crate::vigilance::DeviceClass;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;
const T0: Millis = 1_700_000_000_000;

fn device(label: &str) -> Fingerprint {
    let key: String = format!("{:0>32}", label.bytes().map(|b| format!("{b:02x}")).collect::<String>());
    Fingerprint { key: key[key.len() - 32..].to_string(), label: label.into(), class: DeviceClass::Desktop }
}

fn place(key: &str, label: &str, at: Option<(f64, f64, u16)>) -> Place {
    Place {
        key: key.into(),
        country: key[..2].into(),
        label: label.into(),
        coordinates: at.map(|(latitude, longitude, r)| Coordinates { latitude, longitude, accuracy_km: Some(r) }),
    }
}

fn london() -> Place {
    place("GB", "United Kingdom", Some((51.51, -0.13, 50)))
}
fn paris() -> Place {
    place("FR", "France", Some((48.86, 2.35, 50)))
}
fn sydney() -> Place {
    place("AU-NSW", "New South Wales, Australia", Some((-33.87, 151.21, 50)))
}
fn new_york() -> Place {
    place("US-NY", "New York, United States", Some((40.71, -74.01, 50)))
}

/// A history made of these sign-ins (session id, time, device, place), recorded in order.
fn history(sign_ins: &[(&str, Millis, &Fingerprint, Option<Place>)]) -> History {
    let mut h = History::default();
    for (id, at, fp, place) in sign_ins {
        let s = SignIn { session_id: (*id).into(), at: *at, fingerprint: (*fp).clone(), place: place.clone() };
        h.record(&s, Keep::default());
    }
    h
}

fn facts<'a>(id: &'a str, created_at: Millis, fp: &'a Fingerprint, place: Option<&'a Place>) -> SessionFacts<'a> {
    SessionFacts { session_id: id, created_at, fingerprint: fp, place }
}

fn kinds(flags: &[Flag]) -> Vec<FlagKind> {
    flags.iter().map(|f| f.kind).collect()
}

// === new_device ===

#[test]
fn a_new_device_is_flagged_with_when_it_first_signed_in() {
    let (firefox, chrome) = (device("Firefox on Windows"), device("Chrome on macOS"));
    let h = history(&[("a", T0, &chrome, None), ("b", T0 + DAY, &firefox, None)]);
    let flag = new_device(&facts("b", T0 + DAY, &firefox, None), &h, T0 + 4 * DAY).expect("flag");
    assert_eq!(flag.kind, FlagKind::NewDevice);
    assert_eq!(flag.reason, "First sign-in from Firefox on Windows, 3 days ago");
    assert_eq!(serde_json::to_value(&flag).unwrap()["kind"], "new_device");
}

#[test]
fn a_first_sign_in_ever_and_a_known_device_are_not_new() {
    let (firefox, chrome) = (device("Firefox on Windows"), device("Chrome on macOS"));
    let h = history(&[("a", T0, &chrome, None), ("b", T0 + DAY, &chrome, None), ("c", T0 + 2 * DAY, &firefox, None)]);
    let now = T0 + 3 * DAY;
    assert_eq!(new_device(&facts("a", T0, &chrome, None), &h, now), None, "the first device of all");
    assert_eq!(new_device(&facts("b", T0 + DAY, &chrome, None), &h, now), None, "seen before b");
    assert!(new_device(&facts("c", T0 + 2 * DAY, &firefox, None), &h, now).is_some());
}

#[test]
fn a_session_older_than_the_history_is_not_flagged() {
    let (firefox, chrome) = (device("Firefox on Windows"), device("Chrome on macOS"));
    let h = history(&[("a", T0, &chrome, None), ("b", T0 + DAY, &firefox, None)]);
    // Signed in before vigilance existed, on a device recorded later by another session.
    assert_eq!(new_device(&facts("old", T0 - DAY, &firefox, None), &h, T0 + 2 * DAY), None);
    // A device the history does not hold (never recorded, or forgotten).
    assert_eq!(new_device(&facts("old", T0 - DAY, &device("Opera on Linux"), None), &h, T0 + 2 * DAY), None);
}

#[test]
fn devices_first_seen_within_the_clock_skew_are_not_new_to_each_other() {
    let (firefox, chrome) = (device("Firefox on Windows"), device("Chrome on macOS"));
    let h = history(&[("a", T0, &chrome, None), ("b", T0 + MINUTE, &firefox, None)]);
    assert_eq!(new_device(&facts("b", T0 + MINUTE, &firefox, None), &h, T0 + HOUR), None);
    // A replica whose clock is behind stamps the second sign-in *before* the first: neither is
    // new against the other, and nothing panics.
    let h = history(&[("a", T0, &chrome, None), ("b", T0 - MINUTE, &firefox, None)]);
    assert_eq!(new_device(&facts("a", T0, &chrome, None), &h, T0 + HOUR), None);
    assert_eq!(new_device(&facts("b", T0 - MINUTE, &firefox, None), &h, T0 + HOUR), None);
}

#[test]
fn missing_and_garbage_user_agents_are_one_unrecognised_device() {
    let resolver = crate::client_info::ClientInfoResolver::new(Vec::new(), None).expect("resolver");
    let none = crate::client_info::ClientHints::default();
    let chrome = device("Chrome on macOS");
    let blank = Fingerprint::of(&resolver, "", &none);
    let garbage = Fingerprint::of(&resolver, "\u{1}%%%garbage", &none);
    let h = history(&[("a", T0, &chrome, None), ("b", T0 + DAY, &blank, None), ("c", T0 + 2 * DAY, &garbage, None)]);
    let flag = new_device(&facts("b", T0 + DAY, &blank, None), &h, T0 + 2 * DAY).expect("flag");
    assert_eq!(flag.reason, "First sign-in from an unrecognised browser, 1 day ago");
    assert_eq!(new_device(&facts("c", T0 + 2 * DAY, &garbage, None), &h, T0 + 2 * DAY), None);
}

// === unusual_location ===

#[test]
fn a_place_away_from_the_usual_ones_is_flagged() {
    let fp = device("Firefox on Windows");
    let h = history(&[
        ("a", T0, &fp, Some(london())),
        ("b", T0 + DAY, &fp, Some(london())),
        ("c", T0 + 2 * DAY, &fp, Some(paris())),
    ]);
    let now = T0 + 5 * DAY;
    let flag = unusual_location(&facts("c", T0 + 2 * DAY, &fp, Some(&paris())), &h, 2, now).expect("flag");
    assert_eq!(flag.reason, "France is not one of your usual places: first sign-in from there 3 days ago");
    assert_eq!(unusual_location(&facts("b", T0 + DAY, &fp, Some(&london())), &h, 2, now), None);
    // A session signed in at home, now used from a place never seen at any sign-in.
    let flag = unusual_location(&facts("a", T0, &fp, Some(&new_york())), &h, 2, now).expect("flag");
    assert_eq!(flag.reason, "Used from New York, United States, where you have never signed in");
}

#[test]
fn someones_first_places_and_places_seen_often_enough_are_usual() {
    let fp = device("Firefox on Windows");
    let only_paris = history(&[("a", T0, &fp, Some(paris()))]);
    assert_eq!(unusual_location(&facts("a", T0, &fp, Some(&paris())), &only_paris, 2, T0), None);
    let h = history(&[
        ("a", T0, &fp, Some(london())),
        ("b", T0 + DAY, &fp, Some(paris())),
        ("c", T0 + 2 * DAY, &fp, Some(paris())),
    ]);
    assert_eq!(unusual_location(&facts("b", T0 + DAY, &fp, Some(&paris())), &h, 2, T0 + 3 * DAY), None);
    assert!(unusual_location(&facts("b", T0 + DAY, &fp, Some(&paris())), &h, 3, T0 + 3 * DAY).is_some());
    // London itself was seen once but came first: it is not unusual against Paris.
    assert_eq!(unusual_location(&facts("a", T0, &fp, Some(&london())), &h, 3, T0 + 3 * DAY), None);
}

#[test]
fn large_countries_compare_regions_and_a_missing_region_matches_any() {
    let fp = device("Chrome on macOS");
    let california = place("US-CA", "California, United States", None);
    let us = place("US", "United States", None);
    let h = history(&[
        ("a", T0, &fp, Some(california.clone())),
        ("b", T0 + DAY, &fp, Some(california.clone())),
        ("c", T0 + 2 * DAY, &fp, Some(new_york())),
    ]);
    let now = T0 + 3 * DAY;
    assert!(unusual_location(&facts("c", T0 + 2 * DAY, &fp, Some(&new_york())), &h, 2, now).is_some());
    assert_eq!(unusual_location(&facts("x", now, &fp, Some(&us)), &h, 2, now), None, "no region: could be home");
    let vague = history(&[("a", T0, &fp, Some(us.clone())), ("b", T0 + DAY, &fp, Some(us))]);
    assert_eq!(unusual_location(&facts("x", now, &fp, Some(&new_york())), &vague, 2, now), None);
}

#[test]
fn regions_count_only_in_large_countries() {
    let mut england = Location::named(Some("London"), Some("United Kingdom"), Some("GB"));
    england.region_code = Some("ENG".into());
    england.region = Some("England".into());
    let mut scotland = england.clone();
    scotland.region_code = Some("SCT".into());
    let gb = Place::from_location(&england).expect("place");
    assert_eq!((gb.key.as_str(), gb.label.as_str()), ("GB", "United Kingdom"));
    assert_eq!(Place::from_location(&scotland).map(|p| p.key), Some("GB".into()));
    let mut california = Location::named(Some("San Francisco"), Some("United States"), Some("us"));
    california.region_code = Some("CA".into());
    california.region = Some("California".into());
    california.latitude = Some(37.77);
    california.longitude = Some(-122.42);
    california.accuracy_radius_km = Some(20);
    let ca = Place::from_location(&california).expect("place");
    assert_eq!((ca.key.as_str(), ca.country.as_str(), ca.label.as_str()), ("US-CA", "US", "California, United States"));
    assert_eq!(ca.coordinates, Some(Coordinates { latitude: 37.77, longitude: -122.42, accuracy_km: Some(20) }));
    // No usable country code: no place at all.
    for code in [None, Some(""), Some("USA"), Some("1A")] {
        let l = Location::named(Some("Somewhere"), Some("Somewhere"), code);
        assert_eq!(Place::from_location(&l), None, "{code:?}");
    }
}

#[test]
fn no_place_and_no_geoip_mean_no_location_flags() {
    let fp = device("Firefox on Windows");
    let far = sydney();
    let h = history(&[
        ("a", T0, &fp, Some(london())),
        ("b", T0 + DAY, &fp, Some(london())),
        ("c", T0 + DAY + HOUR, &fp, Some(far.clone())),
    ]);
    let now = T0 + 2 * DAY;
    // Private IP, no GeoIP record: no place.
    assert_eq!(unusual_location(&facts("c", T0 + DAY + HOUR, &fp, None), &h, 2, now), None);
    let with_geoip = evaluate(&facts("c", T0 + DAY + HOUR, &fp, Some(&far)), &h, &Rules::default(), true, now);
    assert_eq!(kinds(&with_geoip), [FlagKind::UnusualLocation, FlagKind::ImpossibleTravel]);
    let without = evaluate(&facts("c", T0 + DAY + HOUR, &fp, Some(&far)), &h, &Rules::default(), false, now);
    assert!(without.is_empty(), "{without:?}");
}

#[test]
fn places_first_seen_within_the_clock_skew_are_not_unusual_to_each_other() {
    let fp = device("Firefox on Windows");
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 + MINUTE, &fp, Some(paris()))]);
    assert_eq!(unusual_location(&facts("b", T0 + MINUTE, &fp, Some(&paris())), &h, 2, T0 + HOUR), None);
}

// === impossible_travel ===

#[test]
fn a_sign_in_farther_than_a_plane_flies_is_flagged() {
    let fp = device("Firefox on Windows");
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 + 2 * HOUR, &fp, Some(sydney()))]);
    let flag = impossible_travel(&facts("b", T0 + 2 * HOUR, &fp, None), &h).expect("flag");
    assert_eq!(
        flag.reason,
        "Signed in from New South Wales, Australia 2 hours after a sign-in from United Kingdom, about 16,994 km \
         away: faster than any plane"
    );
    // The earlier sign-in is not the suspicious one.
    assert_eq!(impossible_travel(&facts("a", T0, &fp, None), &h), None);
    // Given a day, anyone can fly to Sydney.
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 + 24 * HOUR, &fp, Some(sydney()))]);
    assert_eq!(impossible_travel(&facts("b", T0 + 24 * HOUR, &fp, None), &h), None);
}

#[test]
fn nearby_or_slow_enough_travel_is_possible() {
    let fp = device("Firefox on Windows");
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 + 10 * MINUTE, &fp, Some(paris()))]);
    assert_eq!(impossible_travel(&facts("b", T0 + 10 * MINUTE, &fp, None), &h), None, "344 km is within the slack");
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 + 7 * HOUR, &fp, Some(new_york()))]);
    assert_eq!(impossible_travel(&facts("b", T0 + 7 * HOUR, &fp, None), &h), None);
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 + HOUR, &fp, Some(new_york()))]);
    assert!(impossible_travel(&facts("b", T0 + HOUR, &fp, None), &h).is_some());
}

#[test]
fn wide_accuracy_radii_keep_the_rule_conservative() {
    let fp = device("Firefox on Windows");
    // Country-level records: 1000 km either way swallows London–Moscow (2,500 km) in 30 minutes.
    let wide = |key: &str, lat: f64, lon: f64| place(key, key, Some((lat, lon, 1000)));
    let h = history(&[
        ("a", T0, &fp, Some(wide("GB", 51.51, -0.13))),
        ("b", T0 + 30 * MINUTE, &fp, Some(wide("RU", 55.76, 37.62))),
    ]);
    assert_eq!(impossible_travel(&facts("b", T0 + 30 * MINUTE, &fp, None), &h), None);
    // No radius in the record: a wide one is assumed.
    let no_radius =
        |p: Place| Place { coordinates: p.coordinates.map(|c| Coordinates { accuracy_km: None, ..c }), ..p };
    let h = history(&[
        ("a", T0, &fp, Some(no_radius(london()))),
        ("b", T0 + 30 * MINUTE, &fp, Some(no_radius(place("IT", "Italy", Some((41.9, 12.5, 0)))))),
    ]);
    assert_eq!(impossible_travel(&facts("b", T0 + 30 * MINUTE, &fp, None), &h), None, "1,430 km less 2 × 500");
}

#[test]
fn travel_needs_coordinates_on_both_sign_ins() {
    let fp = device("Firefox on Windows");
    let no_coordinates = place("AU", "Australia", None);
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 + HOUR, &fp, Some(no_coordinates))]);
    assert_eq!(impossible_travel(&facts("b", T0 + HOUR, &fp, None), &h), None);
    let h = history(&[("a", T0, &fp, None), ("b", T0 + HOUR, &fp, Some(sydney()))]);
    assert_eq!(impossible_travel(&facts("b", T0 + HOUR, &fp, None), &h), None);
    // A sign-in without a place in between is skipped: the one before it still counts.
    let h = history(&[
        ("a", T0, &fp, Some(london())),
        ("x", T0 + HOUR, &fp, None),
        ("b", T0 + 2 * HOUR, &fp, Some(sydney())),
    ]);
    assert!(impossible_travel(&facts("b", T0 + 2 * HOUR, &fp, None), &h).is_some());
    // A session whose sign-in is not in the log.
    assert_eq!(impossible_travel(&facts("gone", T0 + HOUR, &fp, Some(&sydney())), &h), None);
}

#[test]
fn skewed_clocks_never_make_travel_impossible_backwards() {
    let fp = device("Firefox on Windows");
    // The Sydney sign-in was stamped by a replica whose clock is behind, a minute "before"
    // London: London's sign-in compares with it (1 minute apart: impossible), never the reverse
    // with a negative time.
    let h = history(&[("a", T0, &fp, Some(london())), ("b", T0 - MINUTE, &fp, Some(sydney()))]);
    assert_eq!(impossible_travel(&facts("b", T0 - MINUTE, &fp, None), &h), None);
    assert!(impossible_travel(&facts("a", T0, &fp, None), &h).is_some());
    assert!(!travel_is_impossible(100.0, 0.0, -5.0), "a negative time counts as zero");
    assert!(travel_is_impossible(1000.0, 0.0, -5.0));
}

#[test]
fn distances_are_great_circles() {
    let at = |latitude, longitude| Coordinates { latitude, longitude, accuracy_km: None };
    let d = distance_km(at(51.51, -0.13), at(48.86, 2.35));
    assert!((d - 344.0).abs() < 5.0, "{d}");
    let d = distance_km(at(51.51, -0.13), at(40.71, -74.01));
    assert!((d - 5570.0).abs() < 20.0, "{d}");
    assert_eq!(distance_km(at(10.0, 10.0), at(10.0, 10.0)), 0.0);
    let d = distance_km(at(0.0, 0.0), at(0.0, 180.0));
    assert!((d - 20_015.0).abs() < 5.0, "{d}");
}

// === long_lived ===

#[test]
fn long_lived_fires_after_the_configured_age_only() {
    let fp = device("Firefox on Windows");
    let s = facts("a", T0, &fp, None);
    assert_eq!(long_lived(&s, 30 * DAY, T0 + 30 * DAY), None);
    let flag = long_lived(&s, 30 * DAY, T0 + 45 * DAY).expect("flag");
    assert_eq!(flag.kind, FlagKind::LongLived);
    assert!(
        flag.reason.starts_with("Signed in 1 month ago. If you no longer use this device, sign it out"),
        "{}",
        flag.reason
    );
    assert!(long_lived(&s, 7 * DAY, T0 + 8 * DAY).is_some());
    // A creation time in the future (clock skew): not long-lived.
    assert_eq!(long_lived(&facts("a", T0 + DAY, &fp, None), 30 * DAY, T0), None);
}

#[test]
fn evaluate_lists_flags_in_a_fixed_order() {
    let (firefox, chrome) = (device("Firefox on Windows"), device("Chrome on macOS"));
    let h = history(&[
        ("a", T0, &chrome, Some(london())),
        ("b", T0 + DAY, &chrome, Some(london())),
        ("c", T0 + DAY + HOUR, &firefox, Some(sydney())),
    ]);
    let now = T0 + 40 * DAY;
    let flags = evaluate(&facts("c", T0 + DAY + HOUR, &firefox, Some(&sydney())), &h, &Rules::default(), true, now);
    assert_eq!(
        kinds(&flags),
        [FlagKind::NewDevice, FlagKind::UnusualLocation, FlagKind::ImpossibleTravel, FlagKind::LongLived]
    );
    let json = serde_json::to_value(&flags).unwrap();
    assert_eq!(json[2]["kind"], "impossible_travel");
    assert!(json[2]["reason"].as_str().unwrap_or("").contains("km away"));
    assert!(
        evaluate(&facts("b", T0 + DAY, &chrome, Some(&london())), &h, &Rules::default(), true, T0 + 2 * DAY).is_empty()
    );
}

#[test]
fn spans_and_thousands_read_naturally() {
    assert_eq!(span(30_000), "moments");
    assert_eq!(span(MINUTE), "1 minute");
    assert_eq!(span(90 * MINUTE), "1 hour");
    assert_eq!(span(47 * HOUR), "47 hours");
    assert_eq!(span(3 * DAY), "3 days");
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(16_994), "16,994");
    assert_eq!(thousands(1_234_567), "1,234,567");
}
