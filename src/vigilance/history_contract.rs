//! The `HistoryStore` contract as tests: one suite, run against every backend (embedded, Redis
//! standalone, Redis Cluster). Every check uses its own people, so the order does not matter.

use futures_util::future::join_all;

use super::history::{History, HistoryStore, Keep, SignIn};
use super::{Coordinates, DeviceClass, Fingerprint, Place};
use crate::clock::Millis;
use crate::session::store::StoreError;

const NOW: Millis = 1_700_000_000_000;
const HOUR: Millis = 3_600_000;

/// Runs every contract check against `store`, which must start empty.
pub(crate) async fn run_all(store: &dyn HistoryStore) {
    someone_never_recorded_has_an_empty_history(store).await;
    a_sign_in_comes_back_with_every_field(store).await;
    the_answer_is_the_history_before_the_sign_in(store).await;
    recording_the_same_session_twice_counts_once(store).await;
    skewed_clocks_never_move_first_seen_later(store).await;
    histories_stay_bounded(store).await;
    concurrent_sign_ins_are_all_counted(store).await;
    people_are_kept_apart(store).await;
    forgetting_removes_the_history(store).await;
    malformed_sign_ins_are_refused_before_any_write(store).await;
}

pub(crate) fn fingerprint(n: u32) -> Fingerprint {
    Fingerprint { key: format!("{n:032x}"), label: format!("Browser {n} on OS {n}"), class: DeviceClass::Desktop }
}

pub(crate) fn place(key: &str) -> Place {
    Place {
        key: key.into(),
        country: key[..2].into(),
        label: format!("Place {key}"),
        coordinates: Some(Coordinates { latitude: 51.5, longitude: -0.125, accuracy_km: Some(50) }),
    }
}

pub(crate) fn sign_in(session: &str, at: Millis, device: u32, place_key: Option<&str>) -> SignIn {
    SignIn { session_id: session.into(), at, fingerprint: fingerprint(device), place: place_key.map(place) }
}

async fn record(store: &dyn HistoryStore, user: &str, s: &SignIn, keep: Keep) -> History {
    store.record_sign_in(user, s, keep).await.unwrap_or_else(|e| panic!("record {} for {user}: {e}", s.session_id))
}

async fn history(store: &dyn HistoryStore, user: &str) -> History {
    store.history(user).await.unwrap_or_else(|e| panic!("history of {user}: {e}"))
}

/// What a history built by recording `sign_ins` in memory looks like: the stores must agree.
fn expected(sign_ins: &[SignIn], keep: Keep) -> History {
    let mut h = History::default();
    for s in sign_ins {
        h.record(s, keep);
    }
    h
}

async fn someone_never_recorded_has_an_empty_history(store: &dyn HistoryStore) {
    assert_eq!(history(store, "nobody").await, History::default());
    assert!(!store.forget_history("nobody").await.expect("forget"));
}

async fn a_sign_in_comes_back_with_every_field(store: &dyn HistoryStore) {
    let s = sign_in("amy-1", NOW, 1, Some("US-CA"));
    assert_eq!(record(store, "amy", &s, Keep::default()).await, History::default());
    let h = history(store, "amy").await;
    assert_eq!(h, expected(std::slice::from_ref(&s), Keep::default()));
    assert_eq!(h.devices[0].fingerprint, fingerprint(1));
    assert_eq!(h.places[0].place, place("US-CA"), "coordinates and labels round-trip");
    let unplaced = sign_in("amy-2", NOW + 1, 2, None);
    record(store, "amy", &unplaced, Keep::default()).await;
    assert_eq!(history(store, "amy").await, expected(&[s, unplaced], Keep::default()));
}

async fn the_answer_is_the_history_before_the_sign_in(store: &dyn HistoryStore) {
    let first = sign_in("ben-1", NOW, 1, Some("GB"));
    let second = sign_in("ben-2", NOW + HOUR, 2, Some("FR"));
    record(store, "ben", &first, Keep::default()).await;
    let before = record(store, "ben", &second, Keep::default()).await;
    assert_eq!(before, expected(std::slice::from_ref(&first), Keep::default()));
    assert_eq!(history(store, "ben").await, expected(&[first, second], Keep::default()));
}

async fn recording_the_same_session_twice_counts_once(store: &dyn HistoryStore) {
    let s = sign_in("cat-1", NOW, 1, Some("GB"));
    record(store, "cat", &s, Keep::default()).await;
    record(store, "cat", &s, Keep::default()).await;
    let h = history(store, "cat").await;
    assert_eq!((h.devices[0].sign_ins, h.places[0].sign_ins, h.sign_ins.len()), (1, 1, 1));
}

async fn skewed_clocks_never_move_first_seen_later(store: &dyn HistoryStore) {
    record(store, "dan", &sign_in("dan-late", NOW + 2 * HOUR, 1, Some("GB")), Keep::default()).await;
    record(store, "dan", &sign_in("dan-early", NOW, 1, Some("GB")), Keep::default()).await;
    let h = history(store, "dan").await;
    let d = &h.devices[0];
    assert_eq!((d.first_seen, d.last_seen, d.first_session.as_str()), (NOW, NOW + 2 * HOUR, "dan-early"));
    let order: Vec<&str> = h.sign_ins.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(order, ["dan-early", "dan-late"]);
}

async fn histories_stay_bounded(store: &dyn HistoryStore) {
    let keep = Keep { devices: 5, places: 3, sign_ins: 4 };
    let mut all = Vec::new();
    for i in 0..12u32 {
        let country = ["AA", "BB", "CC", "DD", "EE", "FF"][i as usize % 6];
        let s = sign_in(&format!("eve-{i}"), NOW + Millis::from(i) * HOUR, i, Some(country));
        record(store, "eve", &s, keep).await;
        all.push(s);
    }
    let h = history(store, "eve").await;
    assert_eq!((h.devices.len(), h.places.len(), h.sign_ins.len()), (5, 3, 4));
    assert_eq!(h, expected(&all, keep), "the least recently seen went first");
    let newest: Vec<u32> = h.devices.iter().map(|d| u32::from_str_radix(&d.fingerprint.key, 16).unwrap_or(0)).collect();
    assert_eq!(newest, [11, 10, 9, 8, 7]);
}

async fn concurrent_sign_ins_are_all_counted(store: &dyn HistoryStore) {
    const N: u32 = 10;
    let sign_ins: Vec<SignIn> =
        (0..N).map(|i| sign_in(&format!("fay-{i}"), NOW + Millis::from(i) * HOUR, i % 3, Some("GB"))).collect();
    let results = join_all(sign_ins.iter().map(|s| store.record_sign_in("fay", s, Keep::default()))).await;
    for r in results {
        r.expect("every concurrent sign-in is recorded");
    }
    let h = history(store, "fay").await;
    assert_eq!(h.sign_ins.len(), N as usize);
    assert_eq!(h.devices.iter().map(|d| d.sign_ins).sum::<u32>(), N);
    assert_eq!(h.places[0].sign_ins, N);
    // Whatever order they landed in, the result is the same as recording them in time order.
    assert_eq!(h, expected(&sign_ins, Keep::default()));
}

async fn people_are_kept_apart(store: &dyn HistoryStore) {
    let odd = ["gus}", "{gus", "gus%7D", "gus:x", ""];
    for (i, user) in odd.iter().enumerate() {
        record(store, user, &sign_in(&format!("odd-{i}"), NOW, i as u32, None), Keep::default()).await;
    }
    for (i, user) in odd.iter().enumerate() {
        let h = history(store, user).await;
        assert_eq!(h.sign_ins.len(), 1, "{user:?}");
        assert_eq!(h.sign_ins[0].session_id, format!("odd-{i}"), "{user:?}");
    }
}

async fn forgetting_removes_the_history(store: &dyn HistoryStore) {
    record(store, "hal", &sign_in("hal-1", NOW, 1, Some("GB")), Keep::default()).await;
    assert!(store.forget_history("hal").await.expect("forget"));
    assert_eq!(history(store, "hal").await, History::default());
    assert!(!store.forget_history("hal").await.expect("forget again"));
}

async fn malformed_sign_ins_are_refused_before_any_write(store: &dyn HistoryStore) {
    let mut bad = sign_in("ivy-1", NOW, 1, None);
    bad.fingerprint.key = "zz".into();
    let err = store.record_sign_in("ivy", &bad, Keep::default()).await.expect_err("refused");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    let no_keep = Keep { devices: 0, ..Keep::default() };
    assert!(store.record_sign_in("ivy", &sign_in("ivy-2", NOW, 1, None), no_keep).await.is_err());
    assert_eq!(history(store, "ivy").await, History::default());
}
