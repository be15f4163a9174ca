//! The `SessionStore` contract as tests: one suite, run against every backend.

use std::net::IpAddr;

use super::store::{Activity, SessionStore};
use super::{Elevation, ElevationMethod, NewSession, PublicId, Session, SignInMethod};
use crate::client_info::ClientHints;
use crate::clock::Millis;

const DAY: Millis = 86_400_000;

/// A test session for `user`, signed in at `now`, ending `absolute` later.
pub(crate) fn session_at(user: &str, now: Millis, absolute: Millis) -> (Session, super::Token) {
    let new = NewSession {
        user_id: user.into(),
        method: SignInMethod::Password,
        remember_me: false,
        ip: Some(IpAddr::from([192, 0, 2, 1])),
        user_agent: "test-agent".into(),
        client_hints: ClientHints::default(),
        reauthenticated: false,
        passkey: None,
    };
    Session::start(new, now, absolute)
}

fn session(user: &str, now: Millis) -> Session {
    session_at(user, now, 90 * DAY).0
}

/// Runs every contract check against `store`, which must start empty.
pub async fn run_all(store: &dyn SessionStore) {
    insert_get_remove(store).await;
    per_user_listing_is_isolated(store).await;
    activity_updates_without_resurrecting(store).await;
    expiry_sweep_removes_only_expired(store).await;
    rotation_moves_a_session_to_a_new_token(store).await;
    update_rewrites_only_existing_sessions(store).await;
}

async fn insert_get_remove(store: &dyn SessionStore) {
    let s = session("alice", 1_000);
    store.insert(&s).await.expect("insert");
    let got = store.get(&s.token_hash).await.expect("get").expect("present");
    assert_eq!(got.id, s.id);
    assert_eq!(got.user_id, "alice");
    assert_eq!(got.last_ip, s.last_ip);
    assert!(got.csrf.matches(s.csrf.expose()));
    let found = store.find_for_user("alice", &s.id).await.expect("find");
    assert_eq!(found.map(|f| f.token_hash), Some(s.token_hash));
    assert!(store.find_for_user("bob", &s.id).await.expect("find").is_none(), "another person's id is not found");
    assert!(store.remove(&s.token_hash).await.expect("remove"));
    assert!(!store.remove(&s.token_hash).await.expect("remove twice"));
    assert!(store.get(&s.token_hash).await.expect("get").is_none());
    assert!(store.find_for_user("alice", &s.id).await.expect("find").is_none());
}

async fn per_user_listing_is_isolated(store: &dyn SessionStore) {
    // "ann" is a prefix of "anna": the index must not mix them up.
    let a1 = session("ann", 1_000);
    let a2 = session("ann", 2_000);
    let b = session("anna", 3_000);
    for s in [&a1, &a2, &b] {
        store.insert(s).await.expect("insert");
    }
    let mut ids: Vec<PublicId> = store.list_for_user("ann").await.expect("list").into_iter().map(|s| s.id).collect();
    ids.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut want = vec![a1.id.clone(), a2.id.clone()];
    want.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(ids, want);
    assert_eq!(store.list_for_user("anna").await.expect("list").len(), 1);
    assert!(store.list_for_user("nobody").await.expect("list").is_empty());
    for s in [&a1, &a2, &b] {
        store.remove(&s.token_hash).await.expect("remove");
    }
    assert!(store.list_for_user("ann").await.expect("list").is_empty());
}

async fn activity_updates_without_resurrecting(store: &dyn SessionStore) {
    let live = session("carol", 1_000);
    let gone = session("carol", 1_000);
    store.insert(&live).await.expect("insert");
    let ip: IpAddr = "2001:db8::7".parse().expect("ip");
    let batch = [
        Activity { token_hash: live.token_hash, at: 5_000, ip: Some(ip) },
        Activity { token_hash: gone.token_hash, at: 5_000, ip: None },
    ];
    store.record_activity(&batch).await.expect("activity");
    let got = store.get(&live.token_hash).await.expect("get").expect("present");
    assert_eq!(got.last_active_at, 5_000);
    assert_eq!(got.last_ip, Some(ip));
    assert!(store.get(&gone.token_hash).await.expect("get").is_none(), "activity never creates a session");
    // Older activity never moves last-active backwards.
    store.record_activity(&[Activity { token_hash: live.token_hash, at: 2_000, ip: None }]).await.expect("activity");
    assert_eq!(store.get(&live.token_hash).await.expect("get").expect("present").last_active_at, 5_000);
    store.remove(&live.token_hash).await.expect("remove");
}

async fn expiry_sweep_removes_only_expired(store: &dyn SessionStore) {
    let idle = session("dave", 0);
    let fresh = session("dave", 0);
    store.insert(&idle).await.expect("insert");
    store.insert(&fresh).await.expect("insert");
    store
        .record_activity(&[Activity { token_hash: fresh.token_hash, at: 20 * DAY, ip: None }])
        .await
        .expect("activity");
    let removed = store.remove_expired(31 * DAY, 30 * DAY).await.expect("sweep");
    assert_eq!(removed, 1);
    assert!(store.get(&idle.token_hash).await.expect("get").is_none());
    assert!(store.get(&fresh.token_hash).await.expect("get").is_some());
    let listed = store.list_for_user("dave").await.expect("list");
    assert_eq!(listed.len(), 1, "the swept session leaves the per-person index too");
    // Past the absolute lifetime even an active session goes.
    assert_eq!(store.remove_expired(90 * DAY, 30 * DAY).await.expect("sweep"), 1);
    assert!(store.list_for_user("dave").await.expect("list").is_empty());
}

async fn rotation_moves_a_session_to_a_new_token(store: &dyn SessionStore) {
    let s = session("frank", 1_000);
    store.insert(&s).await.expect("insert");
    let ip: IpAddr = "192.0.2.9".parse().expect("ip");
    store.record_activity(&[Activity { token_hash: s.token_hash, at: 4_000, ip: Some(ip) }]).await.expect("activity");
    let mut new = s.clone();
    new.token_hash = super::Token::generate().hash();
    new.elevation = Some(Elevation { method: ElevationMethod::Totp, at: 3_000 });
    new.ever_elevated = true;
    assert!(store.rotate(&s.token_hash, &new).await.expect("rotate"));
    assert!(store.get(&s.token_hash).await.expect("get").is_none(), "the old token finds nothing");
    let got = store.get(&new.token_hash).await.expect("get").expect("the new token finds the session");
    assert_eq!(got.id, s.id, "the public id stays");
    assert_eq!(got.created_at, s.created_at);
    assert_eq!(got.expires_at, s.expires_at, "rotation never extends the hard expiry");
    assert_eq!(got.elevation, new.elevation);
    assert_eq!((got.last_active_at, got.last_ip), (4_000, Some(ip)), "the newest stored activity is kept");
    let found = store.find_for_user("frank", &s.id).await.expect("find").map(|f| f.token_hash);
    assert_eq!(found, Some(new.token_hash), "the index follows the new token");
    assert_eq!(store.list_for_user("frank").await.expect("list").len(), 1);
    // A session that is gone (revoked meanwhile) is not brought back by a late rotation.
    let mut late = new.clone();
    late.token_hash = super::Token::generate().hash();
    assert!(!store.rotate(&s.token_hash, &late).await.expect("rotate"));
    assert!(store.get(&late.token_hash).await.expect("get").is_none());
    store.remove(&new.token_hash).await.expect("remove");
    assert!(!store.rotate(&new.token_hash, &late).await.expect("rotate after revoke"));
    assert!(store.get(&late.token_hash).await.expect("get").is_none());
    assert!(store.list_for_user("frank").await.expect("list").is_empty());
}

async fn update_rewrites_only_existing_sessions(store: &dyn SessionStore) {
    let mut s = session("gina", 1_000);
    s.elevation = Some(Elevation { method: ElevationMethod::Totp, at: 1_500 });
    store.insert(&s).await.expect("insert");
    store.record_activity(&[Activity { token_hash: s.token_hash, at: 6_000, ip: None }]).await.expect("activity");
    let mut changed = s.clone();
    changed.elevation = None;
    assert!(store.update(&changed).await.expect("update"));
    let got = store.get(&s.token_hash).await.expect("get").expect("present");
    assert_eq!(got.elevation, None);
    assert_eq!(got.last_active_at, 6_000, "an update never moves activity backwards");
    store.remove(&s.token_hash).await.expect("remove");
    assert!(!store.update(&changed).await.expect("update a removed session"));
    assert!(store.get(&s.token_hash).await.expect("get").is_none(), "an update never resurrects");
}

mod embedded {
    use super::*;
    use crate::session::embedded::EmbeddedStore;

    #[tokio::test]
    async fn embedded_store_fulfils_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        run_all(&store).await;
    }

    #[tokio::test]
    async fn embedded_store_keeps_sessions_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = session("erin", 1_000);
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store.insert(&s).await.expect("insert");
        }
        let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
        let got = reopened.get(&s.token_hash).await.expect("get");
        assert_eq!(got.map(|g| g.id), Some(s.id));
    }

    #[tokio::test]
    async fn a_corrupt_record_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        assert!(super::super::embedded::decode_for_test(b"\x09garbage").is_err());
        assert!(store.get(&super::super::Token::generate().hash()).await.expect("get").is_none());
    }
}
