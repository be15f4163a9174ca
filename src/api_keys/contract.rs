//! The `ApiKeyStore` contract as tests: one suite, run against every backend (embedded, Redis
//! standalone, Redis Cluster). Every check uses its own people and keys, so the order does not
//! matter. Stores with a clock (Redis key TTLs) must read [`NOW`]: some keys expire around then.
//!
//! [`keys_and_sessions_are_independent`] is for stores that keep sessions too.

use futures_util::future::join_all;

use super::{ApiKey, ApiKeyStore, KeySecret};
use crate::clock::Millis;
use crate::session::store::{Activity, SessionStore};
use crate::session::store_contract::session_at;
use crate::session::{PublicId, Session, TokenHash};

/// The contract's "now" (Nov 2023).
pub(crate) const NOW: Millis = 1_700_000_000_000;
const HOUR: Millis = 3_600_000;
const DAY: Millis = 24 * HOUR;

/// Runs every contract check against `store`, which must start empty.
pub(crate) async fn run_all(store: &dyn ApiKeyStore) {
    unknown_keys_and_people_have_nothing(store).await;
    inserted_keys_are_found_listed_and_removed(store).await;
    every_field_round_trips(store).await;
    another_persons_key_id_removes_nothing(store).await;
    expired_keys_are_still_found(store).await;
    use_is_recorded_and_only_moves_forward(store).await;
    use_continues_from_a_stored_last_use(store).await;
    concurrent_uses_keep_the_newest(store).await;
    use_never_creates_or_resurrects_a_key(store).await;
    people_are_isolated(store).await;
}

/// A fresh key of `user`'s, created `n` ms after [`NOW`], unused and without expiry.
pub(crate) fn api_key(user: &str, n: u32) -> ApiKey {
    let secret = KeySecret::generate();
    ApiKey {
        id: PublicId::generate().to_string(),
        user_id: user.into(),
        name: format!("deploy bot {n} — café ✓"),
        prefix: secret.shown_prefix(),
        key_hash: secret.hash(),
        created_at: NOW + Millis::from(n),
        expires_at: None,
        last_used_at: None,
        last_ip: None,
    }
}

fn used(key: &ApiKey, at: Millis, ip: Option<&str>) -> Activity {
    Activity { token_hash: key.key_hash, at, ip: ip.map(|ip| ip.parse().expect("ip")) }
}

/// A hash no key has.
fn unknown_hash() -> TokenHash {
    KeySecret::generate().hash()
}

async fn insert(store: &dyn ApiKeyStore, keys: &[&ApiKey]) {
    for key in keys {
        store.insert_key(key).await.expect("insert");
    }
}

async fn get(store: &dyn ApiKeyStore, hash: &TokenHash) -> Option<ApiKey> {
    store.key_by_hash(hash).await.expect("key_by_hash")
}

/// The person's keys, ordered by id (the store promises no order).
async fn listed(store: &dyn ApiKeyStore, user: &str) -> Vec<ApiKey> {
    let mut keys = store.keys_for_user(user).await.expect("keys_for_user");
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}

fn sorted(keys: &[&ApiKey]) -> Vec<ApiKey> {
    let mut keys: Vec<ApiKey> = keys.iter().map(|&k| k.clone()).collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}

async fn unknown_keys_and_people_have_nothing(store: &dyn ApiKeyStore) {
    assert_eq!(get(store, &unknown_hash()).await, None);
    assert!(listed(store, "nobody").await.is_empty());
    assert_eq!(store.remove_key("nobody", "no-such-id").await.expect("remove"), None);
    store.record_key_use(&[]).await.expect("an empty batch");
    let ghost = api_key("nobody", 0);
    store.record_key_use(&[used(&ghost, NOW, Some("192.0.2.9"))]).await.expect("use of an unknown key");
    assert_eq!(get(store, &ghost.key_hash).await, None, "use-recording created nothing");
    assert!(listed(store, "nobody").await.is_empty());
}

async fn inserted_keys_are_found_listed_and_removed(store: &dyn ApiKeyStore) {
    let (k1, k2) = (api_key("alice", 1), api_key("alice", 2));
    insert(store, &[&k1, &k2]).await;
    assert_eq!(get(store, &k1.key_hash).await, Some(k1.clone()));
    assert_eq!(get(store, &k2.key_hash).await, Some(k2.clone()));
    assert_eq!(listed(store, "alice").await, sorted(&[&k1, &k2]));

    assert_eq!(store.remove_key("alice", &k1.id).await.expect("remove"), Some(k1.clone()));
    assert_eq!(get(store, &k1.key_hash).await, None);
    assert_eq!(listed(store, "alice").await, vec![k2.clone()]);
    assert_eq!(store.remove_key("alice", &k1.id).await.expect("remove twice"), None);
    assert_eq!(get(store, &k2.key_hash).await, Some(k2.clone()), "the other key stays");

    assert_eq!(store.remove_key("alice", &k2.id).await.expect("remove"), Some(k2.clone()));
    assert!(listed(store, "alice").await.is_empty());
    assert_eq!(get(store, &k2.key_hash).await, None);
}

async fn every_field_round_trips(store: &dyn ApiKeyStore) {
    let key = ApiKey {
        name: String::new(),
        expires_at: Some(NOW + 90 * DAY),
        last_used_at: Some(NOW + 5),
        last_ip: Some("2001:db8::42".parse().expect("ip")),
        ..api_key("bea", 3)
    };
    let odd_name = ApiKey { name: "\"quotes\", {braces}, \u{0}nul and 🔑".into(), ..api_key("bea", 4) };
    insert(store, &[&key, &odd_name]).await;
    assert_eq!(get(store, &key.key_hash).await, Some(key.clone()));
    assert_eq!(get(store, &odd_name.key_hash).await, Some(odd_name.clone()));
    assert_eq!(listed(store, "bea").await, sorted(&[&key, &odd_name]));
    assert_eq!(store.remove_key("bea", &key.id).await.expect("remove"), Some(key), "removal returns the record");
}

async fn another_persons_key_id_removes_nothing(store: &dyn ApiKeyStore) {
    let key = api_key("carl", 1);
    insert(store, &[&key]).await;
    for user in ["dora", "car", "carlo", "Carl", "carl "] {
        assert_eq!(store.remove_key(user, &key.id).await.expect("remove"), None, "{user:?} cannot remove carl's key");
    }
    let other_id = PublicId::generate().to_string();
    for id in [other_id.as_str(), "", &key.id[..key.id.len() - 1]] {
        assert_eq!(store.remove_key("carl", id).await.expect("remove"), None, "no key {id:?}");
    }
    assert_eq!(get(store, &key.key_hash).await, Some(key.clone()), "nothing changed");
    assert_eq!(listed(store, "carl").await, vec![key.clone()]);
    assert!(listed(store, "dora").await.is_empty());
}

async fn expired_keys_are_still_found(store: &dyn ApiKeyStore) {
    let expired = ApiKey { expires_at: Some(NOW - HOUR), ..api_key("eli", 1) };
    let expiring = ApiKey { expires_at: Some(NOW + HOUR), ..api_key("eli", 2) };
    insert(store, &[&expired, &expiring]).await;
    let got = get(store, &expired.key_hash).await.expect("an expired key is still found");
    assert!(got.is_expired(NOW));
    let got = get(store, &expiring.key_hash).await.expect("present");
    assert!(!got.is_expired(NOW) && got.is_expired(NOW + HOUR));
    assert_eq!(listed(store, "eli").await, sorted(&[&expired, &expiring]));
    assert_eq!(store.remove_key("eli", &expired.id).await.expect("remove"), Some(expired));
}

async fn use_is_recorded_and_only_moves_forward(store: &dyn ApiKeyStore) {
    let key = api_key("fay", 1);
    let bystander = api_key("fay", 2);
    insert(store, &[&key, &bystander]).await;
    let expect = |at: Millis, ip: &str| ApiKey { last_used_at: Some(at), last_ip: ip.parse().ok(), ..key.clone() };

    store.record_key_use(&[used(&key, NOW + 10, Some("192.0.2.1"))]).await.expect("use");
    assert_eq!(get(store, &key.key_hash).await, Some(expect(NOW + 10, "192.0.2.1")));
    // Older or equal times change nothing, not even the IP.
    store.record_key_use(&[used(&key, NOW + 5, Some("192.0.2.2"))]).await.expect("older use");
    store.record_key_use(&[used(&key, NOW + 10, Some("192.0.2.3"))]).await.expect("same time");
    assert_eq!(get(store, &key.key_hash).await, Some(expect(NOW + 10, "192.0.2.1")));
    // No IP: the time moves, the last IP stays.
    store.record_key_use(&[used(&key, NOW + 20, None)]).await.expect("use without ip");
    assert_eq!(get(store, &key.key_hash).await, Some(expect(NOW + 20, "192.0.2.1")));
    // One batch, the newest first: the newest wins.
    let batch = [used(&key, NOW + 40, Some("2001:db8::4")), used(&key, NOW + 30, Some("192.0.2.3"))];
    store.record_key_use(&batch).await.expect("batch");
    assert_eq!(get(store, &key.key_hash).await, Some(expect(NOW + 40, "2001:db8::4")));
    assert_eq!(listed(store, "fay").await, sorted(&[&expect(NOW + 40, "2001:db8::4"), &bystander]), "listed too");
    assert_eq!(get(store, &bystander.key_hash).await, Some(bystander), "other keys untouched");
}

async fn use_continues_from_a_stored_last_use(store: &dyn ApiKeyStore) {
    let ip = "198.51.100.7".parse().ok();
    let key = ApiKey { last_used_at: Some(NOW + 100), last_ip: ip, ..api_key("gus", 1) };
    insert(store, &[&key]).await;
    store.record_key_use(&[used(&key, NOW + 50, Some("192.0.2.50"))]).await.expect("older use");
    assert_eq!(get(store, &key.key_hash).await, Some(key.clone()), "the stored last use is newer");
    store.record_key_use(&[used(&key, NOW + 150, None)]).await.expect("newer use");
    let want = ApiKey { last_used_at: Some(NOW + 150), ..key.clone() };
    assert_eq!(get(store, &key.key_hash).await, Some(want));
}

async fn concurrent_uses_keep_the_newest(store: &dyn ApiKeyStore) {
    let key = api_key("hal", 1);
    insert(store, &[&key]).await;
    let batches: Vec<[Activity; 1]> = (1..=16).rev().map(|i| [used(&key, NOW + i, None)]).collect();
    for result in join_all(batches.iter().map(|b| store.record_key_use(b))).await {
        result.expect("use");
    }
    assert_eq!(get(store, &key.key_hash).await.and_then(|k| k.last_used_at), Some(NOW + 16));
}

async fn use_never_creates_or_resurrects_a_key(store: &dyn ApiKeyStore) {
    let (gone, live) = (api_key("ida", 1), api_key("ida", 2));
    insert(store, &[&gone, &live]).await;
    assert!(store.remove_key("ida", &gone.id).await.expect("remove").is_some());
    let never = api_key("ida", 3);
    let batch = [used(&gone, NOW + 9, Some("192.0.2.9")), used(&live, NOW + 9, None), used(&never, NOW + 9, None)];
    store.record_key_use(&batch).await.expect("uses");
    assert_eq!(get(store, &gone.key_hash).await, None, "a removed key stays removed");
    assert_eq!(get(store, &never.key_hash).await, None, "an unknown key is not created");
    assert_eq!(get(store, &live.key_hash).await.and_then(|k| k.last_used_at), Some(NOW + 9));
    assert_eq!(listed(store, "ida").await.len(), 1);
    assert_eq!(store.remove_key("ida", &gone.id).await.expect("remove again"), None);
}

async fn people_are_isolated(store: &dyn ApiKeyStore) {
    // Prefixes of each other, and ids with the characters keys are built from.
    let people = ["ann", "anna", "an", "a{b", "a}b", "}x", "{y}", "a:b", "a", "a}:n", "a:n", "%7D", "}", "%", ""];
    let mut keys: Vec<Vec<ApiKey>> = Vec::new();
    for (i, user) in people.iter().enumerate() {
        let mine: Vec<ApiKey> = (0..=(i % 3) as u32).map(|n| api_key(user, 100 * i as u32 + n)).collect();
        for key in &mine {
            store.insert_key(key).await.expect("insert");
        }
        keys.push(mine);
    }
    // The same key id for two people: each person's index is their own.
    let shared = |user: &str, n| ApiKey { id: "shared-id".into(), ..api_key(user, n) };
    let (ann_shared, anna_shared) = (shared("ann", 9_000), shared("anna", 9_001));
    insert(store, &[&ann_shared, &anna_shared]).await;
    keys[0].push(ann_shared.clone());
    keys[1].push(anna_shared.clone());
    for (user, mine) in people.iter().zip(&keys) {
        assert_eq!(listed(store, user).await, sorted(&mine.iter().collect::<Vec<_>>()), "{user:?}");
    }

    // Removing or using one person's key leaves everyone else's alone.
    assert_eq!(store.remove_key("ann", "shared-id").await.expect("remove"), Some(ann_shared));
    assert_eq!(get(store, &anna_shared.key_hash).await, Some(anna_shared));
    keys[0].pop();
    let (brace, a) = (people.iter().position(|&p| p == "a{b"), people.iter().position(|&p| p == "a"));
    let (brace, a) = (brace.expect("a{b"), a.expect("a"));
    let removed = keys[brace].remove(0);
    assert_eq!(store.remove_key("a{b", &removed.id).await.expect("remove"), Some(removed));
    store.record_key_use(&[used(&keys[a][0], NOW + 1_000, None)]).await.expect("use");
    keys[a][0].last_used_at = Some(NOW + 1_000);
    for (user, mine) in people.iter().zip(&keys) {
        assert_eq!(listed(store, user).await, sorted(&mine.iter().collect::<Vec<_>>()), "{user:?}");
    }
}

/// For stores that keep sessions too: removing every session of a person (one by one, or by
/// the expiry sweep) leaves their keys, removing their keys leaves their sessions, and a hash
/// names a key or a session, never both. Uses the person "kay".
pub(crate) async fn keys_and_sessions_are_independent<S: ApiKeyStore + SessionStore>(store: &S) {
    let keys = [api_key("kay", 1), api_key("kay", 2)];
    for key in &keys {
        store.insert_key(key).await.expect("insert key");
    }
    let keys_intact = || async {
        assert_eq!(listed(store, "kay").await, sorted(&keys.iter().collect::<Vec<_>>()));
        for key in &keys {
            assert_eq!(get(store, &key.key_hash).await.as_ref(), Some(key));
        }
    };

    for session in sessions(store, 2).await {
        assert!(store.remove(&session.token_hash).await.expect("remove session"));
    }
    assert!(store.list_for_user("kay").await.expect("list").is_empty());
    keys_intact().await;
    sessions(store, 1).await;
    assert!(store.remove_expired(NOW + 365 * DAY, DAY).await.expect("sweep") >= 1);
    assert!(store.list_for_user("kay").await.expect("list").is_empty(), "the sweep took the session");
    keys_intact().await;

    let fresh = sessions(store, 2).await;
    // Each kind's activity writes only its own kind, whatever hash it is given.
    store.record_key_use(&[Activity { token_hash: fresh[0].token_hash, at: NOW + 7, ip: None }]).await.expect("use");
    store.record_activity(&[Activity { token_hash: keys[0].key_hash, at: NOW + 7, ip: None }]).await.expect("active");
    assert_eq!(get(store, &fresh[0].token_hash).await, None, "a session is no key");
    assert!(store.get(&keys[0].key_hash).await.expect("get").is_none(), "a key is no session");
    keys_intact().await;
    for key in &keys {
        assert!(store.remove_key("kay", &key.id).await.expect("remove key").is_some());
    }
    assert!(listed(store, "kay").await.is_empty());
    assert_eq!(store.list_for_user("kay").await.expect("list").len(), 2, "removing keys leaves sessions");
    for session in &fresh {
        let got = store.get(&session.token_hash).await.expect("get").expect("session stays");
        assert_eq!(got.last_active_at, NOW, "and their activity");
    }
}

/// Starts `n` sessions for "kay" at [`NOW`].
async fn sessions<S: SessionStore>(store: &S, n: usize) -> Vec<Session> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (session, _) = session_at("kay", NOW, 90 * DAY);
        store.insert(&session).await.expect("insert session");
        out.push(session);
    }
    out
}
