//! The `PasskeyStore` contract as tests: one suite, run against every backend (embedded, Redis
//! standalone, Redis Cluster). Every check uses its own people and credentials, so the order
//! does not matter.

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::join_all;
use serde_json::Value;

use super::service_tests::{register, service, Browser, ORIGIN};
use super::{
    credential_id, Passkey, PasskeyRecord, PasskeyStore, MAX_CREDENTIAL_ID_LEN, MAX_NAME_CHARS,
    MAX_PASSKEYS_PER_PERSON, TOO_MANY_PASSKEYS,
};
use crate::clock::Millis;
use crate::session::store::StoreError;

const NOW: Millis = 1_700_000_000_000;

/// A real passkey (registered through a software authenticator once), as JSON.
static TEMPLATE: LazyLock<Value> = LazyLock::new(|| {
    let record = register(&service(ORIGIN, "app.example.com"), &mut Browser::new(ORIGIN), "template", "Template");
    serde_json::to_value(&record.passkey).expect("passkey json")
});

/// A passkey whose credential id is the bytes `id` (otherwise the same real key).
pub(crate) fn passkey_with_id(id: &[u8]) -> Passkey {
    let mut value = TEMPLATE.clone();
    value["cred"]["cred_id"] = Value::String(URL_SAFE_NO_PAD.encode(id));
    serde_json::from_value(value).expect("passkey")
}

/// A passkey with a credential id of its own for each `n`.
pub(crate) fn sample_passkey(n: u32) -> Passkey {
    passkey_with_id(format!("credential-{n}").as_bytes())
}

/// `passkey` with its signature counter set (what a use moves forward).
fn with_counter(passkey: &Passkey, counter: u32) -> Passkey {
    let mut value = serde_json::to_value(passkey).expect("json");
    value["cred"]["counter"] = counter.into();
    serde_json::from_value(value).expect("passkey")
}

fn counter(passkey: &Passkey) -> u64 {
    serde_json::to_value(passkey).expect("json")["cred"]["counter"].as_u64().expect("counter")
}

/// Runs every contract check against `store`, which must start empty.
pub(crate) async fn run_all(store: &dyn PasskeyStore) {
    unknown_credentials_and_people_have_nothing(store).await;
    a_passkey_is_found_by_id_and_by_person(store).await;
    a_registered_credential_id_is_never_added_again(store).await;
    concurrent_adds_of_one_credential_have_one_winner(store).await;
    a_person_lists_their_passkeys_oldest_first(store).await;
    rename_changes_only_the_persons_own_passkey(store).await;
    remove_removes_only_the_persons_own_passkey(store).await;
    a_use_updates_the_credential_and_last_use(store).await;
    a_use_of_a_removed_passkey_is_refused(store).await;
    concurrent_changes_of_one_passkey_are_all_kept(store).await;
    passkeys_per_person_are_capped(store).await;
    bad_input_is_refused(store).await;
    odd_person_ids_are_kept_apart(store).await;
}

fn record(user: &str, n: u32, name: &str, at: Millis) -> PasskeyRecord {
    PasskeyRecord::new(user, name, sample_passkey(n), NOW + at)
}

async fn added(store: &dyn PasskeyStore, r: &PasskeyRecord) -> bool {
    store.add_passkey(r).await.unwrap_or_else(|e| panic!("add {} for {}: {e}", r.name, r.user_id))
}

async fn found(store: &dyn PasskeyStore, id: &str) -> Option<PasskeyRecord> {
    store.passkey(id).await.expect("passkey")
}

async fn listed(store: &dyn PasskeyStore, user: &str) -> Vec<PasskeyRecord> {
    store.passkeys_of(user).await.expect("passkeys_of")
}

/// The fields that say which record this is (the credential compared as JSON).
fn summary(r: &PasskeyRecord) -> (String, String, String, Millis, Option<Millis>, Value) {
    let key = serde_json::to_value(&r.passkey).expect("json");
    (r.id.clone(), r.user_id.clone(), r.name.clone(), r.created_at, r.last_used_at, key)
}

fn summaries(records: &[PasskeyRecord]) -> Vec<(String, String, String, Millis, Option<Millis>, Value)> {
    records.iter().map(summary).collect()
}

async fn unknown_credentials_and_people_have_nothing(store: &dyn PasskeyStore) {
    let nobody = record("nobody", 1, "None", 0);
    assert!(found(store, &nobody.id).await.is_none());
    assert!(listed(store, "nobody").await.is_empty());
    assert!(!store.rename_passkey("nobody", &nobody.id, "x").await.expect("rename"));
    assert!(!store.remove_passkey("nobody", &nobody.id).await.expect("remove"));
    assert!(!store.passkey_used("nobody", &nobody.id, &nobody.passkey, NOW).await.expect("used"));
    assert!(found(store, &nobody.id).await.is_none(), "nothing was created");
}

async fn a_passkey_is_found_by_id_and_by_person(store: &dyn PasskeyStore) {
    let r = record("amy", 10, "Amy's laptop", 1);
    assert_eq!(r.id, credential_id(&r.passkey));
    assert!(added(store, &r).await);
    let got = found(store, &r.id).await.expect("found");
    assert_eq!(summary(&got), summary(&r), "every field comes back");
    assert_eq!(summaries(&listed(store, "amy").await), summaries(&[r]));
}

async fn a_registered_credential_id_is_never_added_again(store: &dyn PasskeyStore) {
    let first = record("ben", 20, "Ben's key", 2);
    assert!(added(store, &first).await);
    let again = PasskeyRecord { name: "Again".into(), created_at: NOW + 99, ..first.clone() };
    assert!(!added(store, &again).await, "the same person again");
    let thief = PasskeyRecord { user_id: "cat".into(), ..first.clone() };
    assert!(!added(store, &thief).await, "someone else");
    assert_eq!(summary(&found(store, &first.id).await.expect("found")), summary(&first), "unchanged");
    assert_eq!(listed(store, "ben").await.len(), 1);
    assert!(listed(store, "cat").await.is_empty());
}

async fn concurrent_adds_of_one_credential_have_one_winner(store: &dyn PasskeyStore) {
    for round in 0..5 {
        let people: Vec<String> = (0..6).map(|p| format!("racer-{round}-{p}")).collect();
        let records: Vec<PasskeyRecord> = people.iter().map(|p| record(p, 30 + round, "Contested", 3)).collect();
        let results = join_all(records.iter().map(|r| store.add_passkey(r))).await;
        let wins: Vec<bool> = results.into_iter().map(|r| r.expect("add")).collect();
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
        let winner = &people[wins.iter().position(|w| *w).expect("a winner")];
        assert_eq!(found(store, &records[0].id).await.expect("found").user_id, *winner);
        for p in &people {
            assert_eq!(listed(store, p).await.len(), usize::from(p == winner), "{p}");
        }
    }
}

async fn a_person_lists_their_passkeys_oldest_first(store: &dyn PasskeyStore) {
    let (newest, oldest, middle) = (record("dan", 40, "C", 30), record("dan", 41, "A", 10), record("dan", 42, "B", 20));
    for r in [&newest, &oldest, &middle] {
        assert!(added(store, r).await);
    }
    added(store, &record("dana", 43, "Dana's", 5)).await;
    assert_eq!(summaries(&listed(store, "dan").await), summaries(&[oldest, middle, newest]));
    assert_eq!(listed(store, "dana").await.len(), 1, "a person whose id starts with another's");
}

async fn rename_changes_only_the_persons_own_passkey(store: &dyn PasskeyStore) {
    let r = record("eve", 50, "Old name", 4);
    added(store, &r).await;
    assert!(!store.rename_passkey("fay", &r.id, "Stolen").await.expect("rename"), "not fay's");
    assert_eq!(found(store, &r.id).await.expect("found").name, "Old name");
    assert!(store.rename_passkey("eve", &r.id, "Phone — ünïcode 😀").await.expect("rename"));
    let renamed = found(store, &r.id).await.expect("found");
    assert_eq!(summary(&renamed), summary(&PasskeyRecord { name: "Phone — ünïcode 😀".into(), ..r.clone() }));
    assert_eq!(listed(store, "eve").await[0].name, "Phone — ünïcode 😀");
}

async fn remove_removes_only_the_persons_own_passkey(store: &dyn PasskeyStore) {
    let (keep, drop) = (record("gil", 60, "Keep", 5), record("gil", 61, "Drop", 6));
    added(store, &keep).await;
    added(store, &drop).await;
    assert!(!store.remove_passkey("hal", &drop.id).await.expect("remove"), "not hal's");
    assert!(found(store, &drop.id).await.is_some());
    assert!(store.remove_passkey("gil", &drop.id).await.expect("remove"));
    assert!(found(store, &drop.id).await.is_none());
    assert_eq!(summaries(&listed(store, "gil").await), summaries(&[keep]));
    assert!(!store.remove_passkey("gil", &drop.id).await.expect("remove twice"));
    // A removed credential may be registered again (by anyone).
    let moved = PasskeyRecord { user_id: "hal".into(), ..drop.clone() };
    assert!(added(store, &moved).await);
    assert_eq!(found(store, &drop.id).await.expect("found").user_id, "hal");
    // Concurrent removals of one passkey: exactly one removes it.
    let results = join_all((0..6).map(|_| store.remove_passkey("hal", &drop.id))).await;
    assert_eq!(results.into_iter().filter(|r| *r.as_ref().expect("remove")).count(), 1);
    assert!(listed(store, "hal").await.is_empty());
}

async fn a_use_updates_the_credential_and_last_use(store: &dyn PasskeyStore) {
    let r = record("ida", 70, "Key", 7);
    added(store, &r).await;
    let later = with_counter(&r.passkey, 5);
    assert!(store.passkey_used("ida", &r.id, &later, NOW + 100).await.expect("used"));
    let got = found(store, &r.id).await.expect("found");
    assert_eq!((counter(&got.passkey), got.last_used_at), (5, Some(NOW + 100)));
    assert_eq!((got.name.as_str(), got.created_at), ("Key", r.created_at), "the rest is kept");
    // The last use never goes back in time (a slow replica finishing late).
    assert!(store.passkey_used("ida", &r.id, &with_counter(&r.passkey, 6), NOW + 50).await.expect("used"));
    let got = found(store, &r.id).await.expect("found");
    assert_eq!((counter(&got.passkey), got.last_used_at), (6, Some(NOW + 100)));
    // Someone else's: refused, nothing changed.
    assert!(!store.passkey_used("jan", &r.id, &with_counter(&r.passkey, 9), NOW + 200).await.expect("used"));
    assert_eq!(counter(&found(store, &r.id).await.expect("found").passkey), 6);
    // Another credential's passkey under this id: bad input.
    let other = sample_passkey(71);
    assert!(matches!(store.passkey_used("ida", &r.id, &other, NOW).await, Err(StoreError::Corrupt(_))));
}

async fn a_use_of_a_removed_passkey_is_refused(store: &dyn PasskeyStore) {
    let r = record("kim", 80, "Key", 8);
    added(store, &r).await;
    assert!(store.remove_passkey("kim", &r.id).await.expect("remove"));
    assert!(!store.passkey_used("kim", &r.id, &with_counter(&r.passkey, 1), NOW).await.expect("used"));
    assert!(found(store, &r.id).await.is_none(), "not resurrected");
    assert!(listed(store, "kim").await.is_empty());
}

async fn concurrent_changes_of_one_passkey_are_all_kept(store: &dyn PasskeyStore) {
    let r = record("lea", 90, "Key", 9);
    added(store, &r).await;
    let later = with_counter(&r.passkey, 3);
    let (renamed, used) = futures_util::join!(
        store.rename_passkey("lea", &r.id, "Renamed"),
        store.passkey_used("lea", &r.id, &later, NOW + 9)
    );
    assert!(renamed.expect("rename") && used.expect("used"));
    let got = found(store, &r.id).await.expect("found");
    assert_eq!((got.name.as_str(), counter(&got.passkey), got.last_used_at), ("Renamed", 3, Some(NOW + 9)));
    // Many uses at once all succeed; one of them is the last.
    let uses = join_all((1..=6).map(|i| store.passkey_used("lea", &r.id, &r.passkey, NOW + 10 + i))).await;
    assert!(uses.into_iter().all(|u| u.expect("used")));
    assert_eq!(found(store, &r.id).await.expect("found").last_used_at, Some(NOW + 16));
}

async fn passkeys_per_person_are_capped(store: &dyn PasskeyStore) {
    let user = "max";
    let mine: Vec<PasskeyRecord> =
        (0..MAX_PASSKEYS_PER_PERSON as u32).map(|i| record(user, 100 + i, &format!("Key {i}"), i.into())).collect();
    for r in &mine {
        assert!(added(store, r).await);
    }
    let one_more = record(user, 199, "One more", 99);
    let refused = store.add_passkey(&one_more).await;
    assert!(matches!(&refused, Err(StoreError::Unavailable(m)) if m == TOO_MANY_PASSKEYS), "{refused:?}");
    assert!(found(store, &one_more.id).await.is_none(), "the refused passkey was not written");
    // A credential already registered still answers false, not the cap.
    assert!(!added(store, &mine[0]).await);
    // A removal makes room.
    assert!(store.remove_passkey(user, &mine[3].id).await.expect("remove"));
    assert!(added(store, &one_more).await);
    assert_eq!(listed(store, user).await.len(), MAX_PASSKEYS_PER_PERSON);
}

async fn bad_input_is_refused(store: &dyn PasskeyStore) {
    let good = record("ned", 200, "Good", 0);
    let long_name = "n".repeat(MAX_NAME_CHARS + 1);
    for name in ["", "   ", "tab\there", "new\nline", "nul\0", "\u{7f}", long_name.as_str()] {
        let r = PasskeyRecord { name: name.into(), ..good.clone() };
        assert!(matches!(store.add_passkey(&r).await, Err(StoreError::Corrupt(_))), "{name:?}");
    }
    assert!(found(store, &good.id).await.is_none(), "nothing written");
    assert!(added(store, &good).await);
    for name in ["", "tab\there", long_name.as_str()] {
        assert!(matches!(store.rename_passkey("ned", &good.id, name).await, Err(StoreError::Corrupt(_))), "{name:?}");
    }
    assert_eq!(found(store, &good.id).await.expect("found").name, "Good");
    // The longest name, in characters not bytes.
    let longest = "ü".repeat(MAX_NAME_CHARS);
    assert!(store.rename_passkey("ned", &good.id, &longest).await.expect("rename"));

    // Credential ids: base64url of at most 1023 bytes, and the passkey's own.
    let too_long = passkey_with_id(&[7u8; 1024]);
    let longest_id = passkey_with_id(&[8u8; 1023]);
    assert_eq!(credential_id(&longest_id).len(), MAX_CREDENTIAL_ID_LEN);
    let bad_ids = ["", "has space", "pad==", "a+b/c", "{x}", "%7D", "é"];
    for id in bad_ids.iter().copied().chain([credential_id(&too_long).as_str()]) {
        assert!(matches!(store.passkey(id).await, Err(StoreError::Corrupt(_))), "{id:?}");
        assert!(matches!(store.rename_passkey("ned", id, "x").await, Err(StoreError::Corrupt(_))), "{id:?}");
        assert!(matches!(store.remove_passkey("ned", id).await, Err(StoreError::Corrupt(_))), "{id:?}");
        let r = PasskeyRecord { id: id.into(), ..good.clone() };
        assert!(matches!(store.add_passkey(&r).await, Err(StoreError::Corrupt(_))), "{id:?}");
    }
    let r = PasskeyRecord::new("ned", "Too long", too_long, NOW);
    assert!(matches!(store.add_passkey(&r).await, Err(StoreError::Corrupt(_))));
    let mismatched = PasskeyRecord { id: record("ned", 201, "x", 0).id, ..good.clone() };
    assert!(matches!(store.add_passkey(&mismatched).await, Err(StoreError::Corrupt(_))), "id of another credential");
    assert!(found(store, &mismatched.id).await.is_none());
    let longest = PasskeyRecord::new("ned", "Longest id", longest_id, NOW);
    assert!(added(store, &longest).await);
    assert_eq!(found(store, &longest.id).await.expect("found").name, "Longest id");
    assert_eq!(listed(store, "ned").await.len(), 2);
}

async fn odd_person_ids_are_kept_apart(store: &dyn PasskeyStore) {
    // Characters keys are built from, escapes of them, prefixes of each other, and unicode.
    let odd = ["a{b", "a}b", "}", "{", "{x}", "a:b", "a", "%7D", "%7B", "%", "a}:n", "ünï—😀", "a:b}", "a%7Db", ""];
    for (i, id) in odd.iter().enumerate() {
        assert!(added(store, &record(id, 300 + i as u32, &format!("Key of {id}"), i as Millis)).await, "{id:?}");
    }
    for (i, id) in odd.iter().enumerate() {
        let theirs = listed(store, id).await;
        assert_eq!(theirs.len(), 1, "{id:?}");
        assert_eq!(
            (theirs[0].user_id.as_str(), theirs[0].id.as_str()),
            (*id, credential_id(&sample_passkey(300 + i as u32)).as_str())
        );
    }
    // Removing for one odd id leaves the look-alikes alone.
    let first = record(odd[0], 300, "x", 0);
    assert!(!store.remove_passkey(odd[1], &first.id).await.expect("remove"));
    assert!(store.remove_passkey(odd[0], &first.id).await.expect("remove"));
    for id in &odd[1..] {
        assert_eq!(listed(store, id).await.len(), 1, "{id:?}");
    }
}
