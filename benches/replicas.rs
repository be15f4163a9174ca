//! Two gateway replicas on one real Redis, measured side by side:
//! - revocation latency: from the revoke call's return on replica 1 to the first rejection of
//!   that session on replica 2 (p50/p99 over many trials);
//! - Redis commands per authenticated request in the steady state (from `INFO commandstats`),
//!   which coalesced activity writes keep far below one.
//!
//! Run: `cargo bench --bench replicas` (prints the numbers; nothing is asserted about speed).
//! Under `cargo test` it runs a few trials only, as a smoke test. Needs `redis-server`.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use support::redis::RedisServer;
use support::*;

fn replica(redis: &RedisServer) -> TestGateway {
    Setup::default().toml(&format!("[store]\nkind = \"redis\"\nurl = \"{}\"", redis.url())).start()
}

fn total_calls(redis: &RedisServer) -> u64 {
    redis
        .command(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (trials, requests) = if full { (200, 5_000) } else { (5, 200) };
    let redis = RedisServer::start();
    let r1 = replica(&redis);
    let r2 = replica(&redis);
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;
    let http = client();
    let mine = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;

    let mut latencies = Vec::with_capacity(trials);
    for _ in 0..trials {
        let other = sign_in(&r1, DEMO_EMAIL, FIREFOX_WIN).await;
        assert_eq!(http.get(r2.url("/app")).header("cookie", &other).send().await.expect("request").status(), 200);
        let (_, v) = sessions(&r2, &other).await;
        let id = v["sessions"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["current"] == true))
            .and_then(|s| s["id"].as_str())
            .expect("id")
            .to_string();
        let resp = http
            .delete(r1.url(&format!("/.dalea/api/sessions/{id}")))
            .header("cookie", &mine)
            .send()
            .await
            .expect("revoke");
        assert_eq!(resp.status(), 204);
        let returned = Instant::now();
        loop {
            let status = http.get(r2.url("/app")).header("cookie", &other).send().await.expect("request").status();
            if status == 401 {
                latencies.push(returned.elapsed());
                break;
            }
            assert!(returned.elapsed() < Duration::from_secs(5), "replica 2 kept accepting a revoked session");
        }
    }
    latencies.sort();

    // Steady state: one session, cached on both replicas, many requests.
    let steady = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    for gw in [&r1, &r2] {
        http.get(gw.url("/app")).header("cookie", &steady).send().await.expect("warm-up");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // let pending activity flush
    let before = total_calls(&redis);
    let started = Instant::now();
    for i in 0..requests {
        let gw = if i % 2 == 0 { &r1 } else { &r2 };
        let status = http.get(gw.url("/app")).header("cookie", &steady).send().await.expect("request").status();
        assert_eq!(status, 200);
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await; // include the flushes they caused
    let calls = total_calls(&redis) - before - 1; // minus the INFO call itself

    println!(
        "replicas: revocation latency over {trials} trials: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    println!(
        "replicas: {requests} authenticated requests in {elapsed:?} caused {calls} Redis commands = {:.4} per request",
        calls as f64 / requests as f64
    );
}
