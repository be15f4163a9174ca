//! Several gateway replicas on one real Redis: a session signed in on one is usable on the
//! other, and a revoke on one signs it out on the other as soon as the notice arrives.

use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::*;

fn replica(redis: &RedisServer) -> TestGateway {
    Setup::default().toml(&format!("[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"", redis.url())).start()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_on_one_replica_signs_the_session_out_on_the_other() {
    let redis = RedisServer::start();
    let r1 = replica(&redis);
    let r2 = replica(&redis);
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;

    let mine = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let other = sign_in(&r1, DEMO_EMAIL, FIREFOX_WIN).await;
        // Browse through replica 2 (the session is now in its cache).
        assert_eq!(client().get(r2.url("/app")).header("cookie", &other).send().await.unwrap().status(), 200);
        let (_, v) = sessions(&r2, &other).await;
        let id = v["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();

        let resp = client()
            .delete(r1.url(&format!("/.dalea/api/sessions/{id}")))
            .header("cookie", &mine)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        let revoked_at = Instant::now();
        loop {
            let status = client().get(r2.url("/app")).header("cookie", &other).send().await.unwrap().status();
            if status == 401 {
                latencies.push(revoked_at.elapsed());
                break;
            }
            assert_eq!(status, 200);
            assert!(revoked_at.elapsed() < Duration::from_secs(2), "replica 2 still accepts the revoked session");
        }
    }
    latencies.sort();
    eprintln!(
        "revocation latency across replicas over {} trials: p50 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // And the session list agrees on both replicas.
    let (_, v1) = sessions(&r1, &mine).await;
    let (_, v2) = sessions(&r2, &mine).await;
    assert_eq!(v1["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(v2["sessions"].as_array().unwrap().len(), 1);
}

/// Sign-in attempts count against one limit however the load balancer spreads them.
#[tokio::test(flavor = "multi_thread")]
async fn sign_in_attempts_are_counted_across_replicas() {
    let redis = RedisServer::start();
    let r1 = replica(&redis);
    let r2 = replica(&redis);
    for i in 0..10 {
        let gw = if i % 2 == 0 { &r1 } else { &r2 };
        assert_eq!(try_sign_in(gw, DEMO_EMAIL, "guess").await.status(), 401);
    }
    for gw in [&r1, &r2] {
        let locked = try_sign_in(gw, DEMO_EMAIL, PASSWORD).await;
        assert_eq!(locked.status(), 429, "the account's 10 attempts are used up on every replica");
        assert!(locked.headers().get("retry-after").is_some());
    }
    assert_eq!(try_sign_in(&r2, SAM_EMAIL, PASSWORD).await.status(), 200, "another account is unaffected");
    // The window lives in Redis, not in either replica.
    let count = redis.command(&["GET", "dalea:t:{a:demo@example.com}"]);
    assert_eq!(count.trim(), "10", "the account's counter is in Redis");
}
