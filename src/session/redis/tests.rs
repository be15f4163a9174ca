//! The shared contract against real Redis (standalone and a 3-master cluster), and the
//! Redis-specific guarantees: key layout, TTLs, no resurrection, index cleaning, notices.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Commands;

use super::redis_server::{RedisCluster, RedisServer};
use super::{hex, RedisStore};
use crate::clock::{Clock, ManualClock, Millis, SystemClock};
use crate::config::{RedisConfig, RedisMode};
use crate::session::store::{Activity, SessionStore};
use crate::session::store_contract::run_all;
use crate::session::{Session, Token};

const DAY: Duration = Duration::from_secs(86_400);
const MINUTE: Millis = 60_000;

pub(super) fn config(mode: RedisMode, timeout: Duration) -> RedisConfig {
    RedisConfig { mode, key_prefix: "dalea".into(), timeout, outage_grace: Duration::from_secs(60), tls_ca_file: None }
}

/// A store on a standalone test server (2 s timeout, 10-minute idle timeout).
pub(super) fn standalone(server: &RedisServer) -> RedisStore {
    RedisStore::new(
        config(RedisMode::Standalone { url: server.url() }, Duration::from_secs(2)),
        Duration::from_secs(600),
    )
    .expect("store")
}

/// A store on a 3-master test cluster (5 s timeout, 10-minute idle timeout).
pub(super) fn clustered(cluster: &RedisCluster) -> RedisStore {
    RedisStore::new(
        config(RedisMode::Cluster { nodes: cluster.nodes() }, Duration::from_secs(5)),
        Duration::from_secs(600),
    )
    .expect("store")
}

/// A store that never connects (nothing listens on port 1): for checking key names.
pub(super) fn unconnected() -> RedisStore {
    RedisStore::new(
        config(RedisMode::Standalone { url: "redis://127.0.0.1:1/".into() }, Duration::from_secs(1)),
        Duration::from_secs(600),
    )
    .expect("store")
}

pub(super) use crate::session::store_contract::session_at;

/// A plain connection to the test server, to look at or tamper with keys.
pub(super) fn raw(server: &RedisServer) -> ::redis::Connection {
    ::redis::Client::open(server.url()).expect("client").get_connection().expect("raw connection")
}

#[tokio::test]
async fn standalone_store_fulfils_the_contract() {
    let server = RedisServer::start();
    // The contract's sessions live near the epoch: pin the store's clock there.
    let clock = Arc::new(ManualClock::new(0));
    let cfg = config(RedisMode::Standalone { url: server.url() }, Duration::from_secs(2));
    let store = RedisStore::with_clock(cfg, 30 * DAY, clock).expect("store");
    run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_store_fulfils_the_contract_and_publishes_notices() {
    let cluster = RedisCluster::start(3);
    let clock = Arc::new(ManualClock::new(0));
    let cfg = config(RedisMode::Cluster { nodes: cluster.nodes() }, Duration::from_secs(5));
    let store = RedisStore::with_clock(cfg, 30 * DAY, clock).expect("store");
    run_all(&store).await;

    // Sessions spread over the masters; every operation still works, and a notice published
    // through the cluster reaches a subscriber on any node.
    let sessions: Vec<Session> = (0..20).map(|i| session_at("zoe", i, 90 * 86_400_000).0).collect();
    for s in &sessions {
        store.insert(s).await.expect("insert");
    }
    let batch: Vec<Activity> =
        sessions.iter().map(|s| Activity { token_hash: s.token_hash, at: 50_000, ip: None }).collect();
    store.record_activity(&batch).await.expect("activity across slots");
    let listed = store.list_for_user("zoe").await.expect("list");
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|s| s.last_active_at == 50_000));
    let rx = subscribe(format!("redis://127.0.0.1:{}/", cluster.ports[2]), store.revocation_channel());
    assert!(store.remove(&sessions[0].token_hash).await.expect("remove"));
    let payload = await_notice(&rx, hex(&sessions[0].token_hash).as_bytes());
    assert_eq!(RedisStore::parse_revocation(&payload), Some(sessions[0].token_hash));
    assert_eq!(store.list_for_user("zoe").await.expect("list").len(), 19);
}

/// Subscribes on a plain redis-rs connection in a thread; payloads arrive on the receiver.
pub(super) fn subscribe(url: String, channel: String) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut con = ::redis::Client::open(url).expect("client").get_connection().expect("connection");
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(&channel).expect("subscribe");
        pubsub.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        let _ = ready_tx.send(());
        // Every notice, in order, until none arrives for a while or nobody listens.
        while let Ok(msg) = pubsub.get_message() {
            if tx.send(msg.get_payload_bytes().to_vec()).is_err() {
                break;
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("subscribed");
    rx
}

/// Waits for `expected` among the notices `rx` receives. In a cluster, notices published
/// earlier on other nodes may still arrive after a subscription starts; they are passed over.
pub(super) fn await_notice(rx: &std::sync::mpsc::Receiver<Vec<u8>>, expected: &[u8]) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let payload = rx.recv_timeout(Duration::from_secs(5)).expect("notice");
        if payload == expected || std::time::Instant::now() >= deadline {
            return payload;
        }
    }
}

#[tokio::test]
async fn keys_are_hashed_and_tagged_and_no_token_is_stored() {
    let server = RedisServer::start();
    let store = standalone(&server);
    let (s, token) = session_at("alice", SystemClock.now(), 90 * 86_400_000);
    store.insert(&s).await.expect("insert");
    let mut con = raw(&server);
    let mut keys: Vec<String> = con.keys("*").expect("keys");
    keys.sort();
    assert_eq!(keys, vec![format!("dalea:s:{{{}}}", hex(&s.token_hash)), "dalea:u:{alice}".to_string()]);
    let fields: HashMap<String, Vec<u8>> = con.hgetall(&keys[0]).expect("hgetall");
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["exp", "la", "rec"]);
    let index: HashMap<String, String> = con.hgetall(&keys[1]).expect("hgetall");
    assert_eq!(index, HashMap::from([(s.id.as_str().to_string(), hex(&s.token_hash))]));
    for v in fields.values() {
        let text = String::from_utf8_lossy(v);
        assert!(!text.contains(token.as_str()), "the raw token is never stored");
    }
    assert!(keys.iter().all(|k| !k.contains(token.as_str())));
}

#[tokio::test]
async fn ttls_follow_idle_and_absolute_timeouts() {
    let server = RedisServer::start();
    let store = standalone(&server); // idle timeout 10 minutes
    let mut con = raw(&server);
    let now = SystemClock.now();

    let (long, _) = session_at("ttl", now, 60 * MINUTE);
    store.insert(&long).await.expect("insert");
    let skey = format!("dalea:s:{{{}}}", hex(&long.token_hash));
    let pttl: i64 = con.pttl(&skey).expect("pttl");
    assert!((9 * MINUTE..=10 * MINUTE).contains(&pttl), "idle bounds the session key: {pttl}");
    let ittl: i64 = con.pttl("dalea:u:{ttl}").expect("pttl");
    assert!((59 * MINUTE..=60 * MINUTE).contains(&ittl), "the index lives as long as the session may: {ittl}");

    let (short, _) = session_at("ttl", now, 5 * MINUTE);
    store.insert(&short).await.expect("insert");
    let pttl: i64 = con.pttl(format!("dalea:s:{{{}}}", hex(&short.token_hash))).expect("pttl");
    assert!((4 * MINUTE..=5 * MINUTE).contains(&pttl), "absolute expiry bounds it: {pttl}");
    let ittl: i64 = con.pttl("dalea:u:{ttl}").expect("pttl");
    assert!(ittl > 59 * MINUTE, "a shorter session never shortens the index: {ittl}");

    // Activity resets the idle clock.
    let _: () = con.pexpire(&skey, 2_000).expect("pexpire");
    let at = SystemClock.now();
    store.record_activity(&[Activity { token_hash: long.token_hash, at, ip: None }]).await.expect("activity");
    let pttl: i64 = con.pttl(&skey).expect("pttl");
    assert!(pttl > 9 * MINUTE, "activity refreshed the TTL: {pttl}");

    // A session already over is not written.
    let (over, _) = session_at("ttl", now - 2 * 60 * MINUTE, 60 * MINUTE);
    store.insert(&over).await.expect("insert");
    assert!(store.get(&over.token_hash).await.expect("get").is_none());
    assert_eq!(store.list_for_user("ttl").await.expect("list").len(), 2);
}

#[tokio::test]
async fn activity_never_resurrects_a_removed_session_and_keeps_the_record() {
    let server = RedisServer::start();
    let store = standalone(&server);
    let mut con = raw(&server);
    let now = SystemClock.now();
    let (s, _) = session_at("bob", now, 60 * MINUTE);
    store.insert(&s).await.expect("insert");
    let skey = format!("dalea:s:{{{}}}", hex(&s.token_hash));
    let rec_before: Vec<u8> = con.hget(&skey, "rec").expect("rec");
    let ip: IpAddr = "2001:db8::1".parse().expect("ip");
    store.record_activity(&[Activity { token_hash: s.token_hash, at: now + 1_000, ip: Some(ip) }]).await.expect("a");
    let rec_after: Vec<u8> = con.hget(&skey, "rec").expect("rec");
    assert_eq!(rec_before, rec_after, "activity writes its own fields, not the record");
    let got = store.get(&s.token_hash).await.expect("get").expect("present");
    assert_eq!((got.last_active_at, got.last_ip), (now + 1_000, Some(ip)));

    assert!(store.remove(&s.token_hash).await.expect("remove"));
    store.record_activity(&[Activity { token_hash: s.token_hash, at: now + 2_000, ip: Some(ip) }]).await.expect("a");
    let exists: bool = con.exists(&skey).expect("exists");
    assert!(!exists, "activity after remove must not recreate the key");
    assert!(store.get(&s.token_hash).await.expect("get").is_none());

    // The script cache being flushed (e.g. a Redis restart) is handled: NOSCRIPT → load → retry.
    let (t, _) = session_at("bob", now, 60 * MINUTE);
    store.insert(&t).await.expect("insert");
    let _: () = ::redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).expect("flush scripts");
    store.record_activity(&[Activity { token_hash: t.token_hash, at: now + 3_000, ip: None }]).await.expect("a");
    assert_eq!(store.get(&t.token_hash).await.expect("get").expect("present").last_active_at, now + 3_000);
}

#[tokio::test]
async fn list_for_user_cleans_index_entries_whose_session_expired() {
    let server = RedisServer::start();
    let store = standalone(&server);
    let mut con = raw(&server);
    let now = SystemClock.now();
    let (keep, _) = session_at("carol", now, 60 * MINUTE);
    let (gone, _) = session_at("carol", now, 60 * MINUTE);
    store.insert(&keep).await.expect("insert");
    store.insert(&gone).await.expect("insert");
    let _: () = con.pexpire(format!("dalea:s:{{{}}}", hex(&gone.token_hash)), 1).expect("pexpire");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let listed = store.list_for_user("carol").await.expect("list");
    assert_eq!(listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![keep.id.clone()]);
    let len: usize = con.hlen("dalea:u:{carol}").expect("hlen");
    assert_eq!(len, 1, "the stale entry was removed from the index");
    assert!(store.find_for_user("carol", &gone.id).await.expect("find").is_none());
}

#[tokio::test]
async fn remove_publishes_a_revocation_notice_after_deleting() {
    let server = RedisServer::start();
    let store = standalone(&server);
    assert_eq!(store.revocation_channel(), "dalea:revocations");
    let (s, _) = session_at("dan", SystemClock.now(), 60 * MINUTE);
    store.insert(&s).await.expect("insert");
    let rx = subscribe(server.url(), store.revocation_channel());
    assert!(store.remove(&s.token_hash).await.expect("remove"));
    let payload = rx.recv_timeout(Duration::from_secs(5)).expect("notice received");
    assert_eq!(payload, hex(&s.token_hash).into_bytes());
    assert_eq!(RedisStore::parse_revocation(&payload), Some(s.token_hash));
    let index_len: usize = raw(&server).hlen("dalea:u:{dan}").expect("hlen");
    assert_eq!(index_len, 0);
}

#[test]
fn revocation_payloads_parse_strictly() {
    let h = Token::generate().hash();
    assert_eq!(RedisStore::parse_revocation(hex(&h).as_bytes()), Some(h));
    assert_eq!(RedisStore::parse_revocation(hex(&h).to_uppercase().as_bytes()), Some(h));
    assert_eq!(RedisStore::parse_revocation(b""), None);
    assert_eq!(RedisStore::parse_revocation(&[b'z'; 64]), None);
    assert_eq!(RedisStore::parse_revocation(&hex(&h).as_bytes()[..62]), None);
}
