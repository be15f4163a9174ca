//! The `PendingStore` contract as tests: one suite, run against every backend (embedded, Redis
//! standalone, Redis Cluster). Every check uses its own ids, so the order does not matter.
//!
//! The records expire [`TTL`] after the `now` passed to [`run_all`]. The embedded store purges by
//! the wall clock and Redis computes TTLs with its clock, so `now` must be the real current
//! time, and a Redis store's clock must read it (or the real time).

use futures_util::future::join_all;

use super::{PendingStore, MAX_ID_LEN, MAX_VALUE_LEN};
use crate::clock::Millis;
use crate::session::store::StoreError;

/// How long the contract's records live: ten minutes, an OAuth sign-in's usual window.
pub(crate) const TTL: Millis = 600_000;

/// Runs every contract check against `store`, which must start empty. `now`: see the module.
pub(crate) async fn run_all(store: &dyn PendingStore, now: Millis) {
    absent_records_are_none(store, now).await;
    a_record_is_taken_once(store, now).await;
    concurrent_takes_give_it_to_exactly_one(store, now).await;
    records_expire_at_their_expiry(store, now).await;
    an_already_expired_record_is_not_kept(store, now).await;
    a_put_replaces_the_earlier_record(store, now).await;
    values_round_trip_byte_for_byte(store, now).await;
    bad_ids_and_kinds_are_refused(store, now).await;
    values_over_the_limit_are_refused(store, now).await;
    kinds_and_ids_are_isolated(store, now).await;
}

/// A binary value distinct per `n` (zero and non-UTF-8 bytes included).
fn value(n: u8) -> Vec<u8> {
    vec![0, 0xff, n, b'{', b':', 0x80, n.wrapping_mul(3), 0]
}

async fn put(store: &dyn PendingStore, kind: &str, id: &str, v: &[u8], expires_at: Millis) {
    store.put_pending(kind, id, v, expires_at).await.unwrap_or_else(|e| panic!("put {kind}/{id}: {e}"));
}

async fn take(store: &dyn PendingStore, kind: &str, id: &str, now: Millis) -> Option<Vec<u8>> {
    store.take_pending(kind, id, now).await.unwrap_or_else(|e| panic!("take {kind}/{id}: {e}"))
}

async fn absent_records_are_none(store: &dyn PendingStore, now: Millis) {
    assert_eq!(take(store, "oauth", "never-put", now).await, None);
    assert_eq!(take(store, "passkey", "never-put", now).await, None);
}

async fn a_record_is_taken_once(store: &dyn PendingStore, now: Millis) {
    put(store, "oauth", "once", &value(1), now + TTL).await;
    assert_eq!(take(store, "oauth", "once", now).await, Some(value(1)));
    assert_eq!(take(store, "oauth", "once", now).await, None, "taken already");
    assert_eq!(take(store, "oauth", "once", now + 1).await, None, "still gone");
    // Put again after a take: a new record, taken once again.
    put(store, "oauth", "once", &value(2), now + TTL).await;
    assert_eq!(take(store, "oauth", "once", now).await, Some(value(2)));
    assert_eq!(take(store, "oauth", "once", now).await, None);
}

async fn concurrent_takes_give_it_to_exactly_one(store: &dyn PendingStore, now: Millis) {
    for round in 0..5u8 {
        let id = format!("race-{round}");
        put(store, "passkey", &id, &value(round), now + TTL).await;
        let results = join_all((0..8).map(|_| store.take_pending("passkey", &id, now))).await;
        let got: Vec<Vec<u8>> = results.into_iter().filter_map(|r| r.expect("take")).collect();
        assert_eq!(got, vec![value(round)], "one record, one taker (round {round})");
    }
}

async fn records_expire_at_their_expiry(store: &dyn PendingStore, now: Millis) {
    let expires = now + TTL;
    put(store, "oauth", "in-time", &value(3), expires).await;
    assert_eq!(take(store, "oauth", "in-time", expires - 1).await, Some(value(3)), "a millisecond before");
    for (id, late) in [("at-expiry", expires), ("after-expiry", expires + 1), ("long-after", expires + 100 * TTL)] {
        put(store, "oauth", id, &value(4), expires).await;
        assert_eq!(take(store, "oauth", id, late).await, None, "{id}: expired at {late}");
        // An expired take consumes the record too: it is not there for a caller with an older clock.
        assert_eq!(take(store, "oauth", id, now).await, None, "{id}: gone");
    }
}

async fn an_already_expired_record_is_not_kept(store: &dyn PendingStore, now: Millis) {
    put(store, "oauth", "stale", &value(5), now - 1).await;
    assert_eq!(take(store, "oauth", "stale", now - TTL).await, None, "expired when put");
    // It replaces a live record all the same.
    put(store, "oauth", "stale-replace", &value(6), now + TTL).await;
    put(store, "oauth", "stale-replace", &value(7), now - TTL).await;
    assert_eq!(take(store, "oauth", "stale-replace", now).await, None);
}

async fn a_put_replaces_the_earlier_record(store: &dyn PendingStore, now: Millis) {
    put(store, "oauth", "again", &value(8), now + TTL).await;
    put(store, "oauth", "again", &value(9), now + TTL).await;
    assert_eq!(take(store, "oauth", "again", now).await, Some(value(9)));
    assert_eq!(take(store, "oauth", "again", now).await, None, "no second record left behind");
    // The replacement's expiry counts, earlier or later than the first one's.
    put(store, "oauth", "sooner", &value(10), now + TTL).await;
    put(store, "oauth", "sooner", &value(11), now + TTL / 2).await;
    assert_eq!(take(store, "oauth", "sooner", now + TTL / 2).await, None);
    put(store, "oauth", "later", &value(12), now + TTL / 2).await;
    put(store, "oauth", "later", &value(13), now + TTL).await;
    assert_eq!(take(store, "oauth", "later", now + TTL / 2).await, Some(value(13)));
}

async fn values_round_trip_byte_for_byte(store: &dyn PendingStore, now: Millis) {
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(MAX_VALUE_LEN).collect();
    let json = r#"{"state":"x","nonce":"y","verifier":"z","return_to":"/café?a=1&b={2}"}"#.as_bytes().to_vec();
    for (i, v) in [Vec::new(), vec![0], all_bytes, json].into_iter().enumerate() {
        let id = format!("bytes-{i}");
        put(store, "oauth", &id, &v, now + TTL).await;
        assert_eq!(take(store, "oauth", &id, now).await, Some(v), "value {i}");
    }
}

async fn bad_ids_and_kinds_are_refused(store: &dyn PendingStore, now: Millis) {
    let longest = "L".repeat(MAX_ID_LEN);
    put(store, "oauth", &longest, &value(14), now + TTL).await;
    assert_eq!(take(store, "oauth", &longest, now).await, Some(value(14)), "the longest id is fine");

    let too_long = "L".repeat(MAX_ID_LEN + 1);
    let bad_ids = ["", too_long.as_str(), "a{b}", "}", "a:b", "a b", "a/b", "a.b", "ü", "a\0", "a\r\n", "%2F", "a*"];
    for id in bad_ids {
        let put = store.put_pending("oauth", id, &value(15), now + TTL).await;
        assert!(matches!(put, Err(StoreError::Corrupt(_))), "put {id:?} refused: {put:?}");
        let take = store.take_pending("oauth", id, now).await;
        assert!(matches!(take, Err(StoreError::Corrupt(_))), "take {id:?} refused: {take:?}");
    }
    for kind in ["", "o:auth", "{oauth}", "pass key"] {
        let put = store.put_pending(kind, "fine-id", &value(15), now + TTL).await;
        assert!(matches!(put, Err(StoreError::Corrupt(_))), "kind {kind:?} refused: {put:?}");
        assert!(store.take_pending(kind, "fine-id", now).await.is_err(), "kind {kind:?}");
    }
    // A refused id is a different one from its neighbours: nothing of theirs was touched.
    put(store, "oauth", "a", &value(16), now + TTL).await;
    assert!(store.take_pending("oauth", "a:", now).await.is_err());
    assert_eq!(take(store, "oauth", "a", now).await, Some(value(16)));
}

async fn values_over_the_limit_are_refused(store: &dyn PendingStore, now: Millis) {
    put(store, "passkey", "big", &value(17), now + TTL).await;
    let too_big = vec![7u8; MAX_VALUE_LEN + 1];
    let refused = store.put_pending("passkey", "big", &too_big, now + TTL).await;
    assert!(matches!(refused, Err(StoreError::Corrupt(_))), "{refused:?}");
    assert_eq!(take(store, "passkey", "big", now).await, Some(value(17)), "the earlier record is untouched");
    let largest = vec![7u8; MAX_VALUE_LEN];
    put(store, "passkey", "big", &largest, now + TTL).await;
    assert_eq!(take(store, "passkey", "big", now).await, Some(largest));
}

async fn kinds_and_ids_are_isolated(store: &dyn PendingStore, now: Millis) {
    // Same id under two kinds, and ids that are prefixes of each other or differ in case.
    let records = [("oauth", "x"), ("passkey", "x"), ("oauth", "x-"), ("oauth", "xx"), ("oauth", "X"), ("oauth2", "x")];
    for (n, (kind, id)) in records.iter().enumerate() {
        put(store, kind, id, &value(20 + n as u8), now + TTL).await;
    }
    assert_eq!(take(store, "passkey", "x", now).await, Some(value(21)));
    assert_eq!(take(store, "passkey", "x", now).await, None);
    for (n, (kind, id)) in records.iter().enumerate().filter(|(_, r)| **r != ("passkey", "x")) {
        assert_eq!(take(store, kind, id, now).await, Some(value(20 + n as u8)), "{kind}/{id}");
    }
}
