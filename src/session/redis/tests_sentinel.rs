//! Sentinel mode against real processes (a master, a replica and three sentinels): the shared
//! contract, and a failover followed without rebuilding the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::redis_server::RedisSentinelSetup;
use super::tests::{config, session_at};
use super::RedisStore;
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::config::RedisMode;
use crate::session::store::SessionStore;
use crate::session::store_contract::run_all;

const DAY: Duration = Duration::from_secs(86_400);

fn mode(setup: &RedisSentinelSetup) -> RedisMode {
    RedisMode::Sentinel { master: "mymaster".into(), sentinels: setup.sentinel_urls() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_fulfils_the_contract_and_follows_a_failover() {
    let mut setup = RedisSentinelSetup::start();
    let clock = Arc::new(ManualClock::new(0));
    let store = RedisStore::with_clock(config(mode(&setup), Duration::from_secs(2)), 30 * DAY, clock).expect("store");
    run_all(&store).await;

    // A live store, connected to the first master.
    let live = RedisStore::new(config(mode(&setup), Duration::from_secs(1)), Duration::from_secs(600)).expect("store");
    let (s, _) = session_at("failover", SystemClock.now(), 3_600_000);
    live.insert(&s).await.expect("insert");
    assert!(live.get(&s.token_hash).await.expect("get").is_some());
    // Make sure the replica has it before the master dies (replication is asynchronous).
    setup.sync_replica();

    let old = setup.kill_master();
    let new = setup.wait_for_failover(old, Duration::from_secs(20));
    assert_ne!(old, new);
    // The same store follows the promoted replica by itself (no rebuild, no restart).
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        match live.get(&s.token_hash).await {
            Ok(got) => break got,
            Err(e) => assert!(Instant::now() < deadline, "the store never reached the new master: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.map(|g| g.id), Some(s.id.clone()), "the session survived the failover");
    let (t, _) = session_at("failover", SystemClock.now(), 3_600_000);
    live.insert(&t).await.expect("insert on the new master");
    assert_eq!(live.list_for_user("failover").await.expect("list").len(), 2);
    assert!(live.remove(&s.token_hash).await.expect("remove on the new master"));
    assert!(live.get(&s.token_hash).await.expect("get").is_none());
}
