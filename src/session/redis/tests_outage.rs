//! Redis unreachable, silent or restarted: every call answers `Unavailable` within the
//! timeout (never a panic, never a hang), and service resumes once Redis is back.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::redis_server::RedisServer;
use super::tests::{config, session_at};
use super::RedisStore;
use crate::clock::{Clock, SystemClock};
use crate::config::RedisMode;
use crate::session::store::{Activity, SessionStore, StoreError};

const TIMEOUT: Duration = Duration::from_millis(300);
const LIMIT: Duration = Duration::from_secs(2);

fn store_at(url: String) -> RedisStore {
    RedisStore::new(config(RedisMode::Standalone { url }, TIMEOUT), Duration::from_secs(600))
        .expect("new never connects")
}

async fn every_method_is_unavailable(store: &RedisStore) {
    let (s, _) = session_at("outage", SystemClock.now(), 3_600_000);
    let activity = [Activity { token_hash: s.token_hash, at: SystemClock.now(), ip: None }];
    macro_rules! check {
        ($name:literal, $call:expr) => {{
            let started = Instant::now();
            let r = $call.await;
            let took = started.elapsed();
            assert!(matches!(r, Err(StoreError::Unavailable(_))), "{}: {:?}", $name, r.map(|_| ()));
            assert!(took < LIMIT, "{} took {took:?}", $name);
        }};
    }
    check!("insert", store.insert(&s));
    check!("get", store.get(&s.token_hash));
    check!("list_for_user", store.list_for_user("outage"));
    check!("find_for_user", store.find_for_user("outage", &s.id));
    check!("remove", store.remove(&s.token_hash));
    check!("record_activity", store.record_activity(&activity));
    check!("remove_expired", store.remove_expired(SystemClock.now(), 600_000));
}

#[tokio::test]
async fn a_closed_port_is_unavailable_within_the_timeout() {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let store = store_at(format!("redis://127.0.0.1:{port}/"));
    every_method_is_unavailable(&store).await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_within_the_timeout() {
    // Accepts connections (kernel backlog) but never replies.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let store = store_at(format!("redis://127.0.0.1:{port}/"));
    every_method_is_unavailable(&store).await;
    drop(silent);
}

#[tokio::test]
async fn service_resumes_after_redis_comes_back() {
    let mut server = RedisServer::start();
    server.kill();
    // First use while Redis is down: the failed connect is not cached.
    let store = store_at(server.url());
    let (s, _) = session_at("back", SystemClock.now(), 3_600_000);
    assert!(matches!(store.insert(&s).await, Err(StoreError::Unavailable(_))));
    server.restart();
    store.insert(&s).await.expect("insert once Redis is back");

    // An outage after connecting: errors, then the connection manager reconnects.
    server.kill();
    every_method_is_unavailable(&store).await;
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get(&s.token_hash).await {
            Ok(got) => {
                assert!(got.is_none(), "the restarted server is empty (--save '')");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "did not recover: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.insert(&s).await.expect("insert after recovery");
    assert!(store.get(&s.token_hash).await.expect("get").is_some());
}

#[tokio::test]
async fn sentinels_that_do_not_answer_are_unavailable_within_the_timeout() {
    // One closed port and one that accepts but never replies: no master can be found.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let sentinels = vec![
        format!("redis://127.0.0.1:{closed}"),
        format!("redis://127.0.0.1:{}", silent.local_addr().expect("addr").port()),
    ];
    let mode = RedisMode::Sentinel { master: "mymaster".into(), sentinels };
    let store = RedisStore::new(config(mode, TIMEOUT), Duration::from_secs(600)).expect("new never connects");
    every_method_is_unavailable(&store).await;
    drop(silent);
}

#[test]
fn bad_settings_are_refused_without_panicking() {
    let sentinel = RedisMode::Sentinel { master: "m".into(), sentinels: vec!["redis://127.0.0.1:26379".into()] };
    RedisStore::new(config(sentinel, TIMEOUT), Duration::from_secs(600)).expect("sentinel settings are accepted");
    let none = RedisMode::Sentinel { master: "m".into(), sentinels: vec![] };
    assert!(RedisStore::new(config(none, TIMEOUT), Duration::from_secs(600)).is_err());
    let bad_sentinel = RedisMode::Sentinel { master: "m".into(), sentinels: vec!["not a url".into()] };
    assert!(RedisStore::new(config(bad_sentinel, TIMEOUT), Duration::from_secs(600)).is_err());
    let mut braces = config(RedisMode::Standalone { url: "redis://127.0.0.1:1/".into() }, TIMEOUT);
    braces.key_prefix = "a{b}".into();
    assert!(RedisStore::new(braces, Duration::from_secs(600)).is_err());
    let bad_url = config(RedisMode::Standalone { url: "not a url".into() }, TIMEOUT);
    assert!(RedisStore::new(bad_url, Duration::from_secs(600)).is_err());
    assert!(RedisStore::new(config(RedisMode::Cluster { nodes: vec![] }, TIMEOUT), Duration::from_secs(600)).is_err());
}
