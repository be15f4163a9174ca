//! Two gateway replicas on a Sentinel-managed Redis (master + replica + 3 sentinels): the
//! master dies under steady traffic through both replicas. Nobody is signed out (503 is the
//! only acceptable error while there is no master), service resumes by itself once the
//! sentinels promote the replica, and a revoke afterwards still reaches the other replica.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::redis::RedisSentinelSetup;
use crate::support::*;

fn replica(setup: &RedisSentinelSetup) -> TestGateway {
    let sentinels: Vec<String> = setup.sentinel_urls().iter().map(|u| format!("\"{u}\"")).collect();
    Setup::default()
        .toml(&format!(
            "[store]\nkind = \"redis\"\nsentinel_master = \"mymaster\"\nsentinels = [{}]\ntimeout = \"1s\"",
            sentinels.join(", ")
        ))
        .start()
}

/// One answer seen by the traffic loop.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// 0 = warm session via replica 1, 1 = warm via replica 2, 2 = cold via replica 2.
    stream: usize,
    status: u16,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_under_traffic_signs_nobody_out_and_revocation_still_reaches_every_replica() {
    let mut setup = RedisSentinelSetup::start();
    let r1 = Arc::new(replica(&setup));
    let r2 = Arc::new(replica(&setup));
    subscribed(&r1, Duration::from_secs(10)).await;
    subscribed(&r2, Duration::from_secs(10)).await;

    let cookie = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    assert_eq!(client().get(r2.url("/app")).header("cookie", &cookie).send().await.unwrap().status(), 200);

    // A second session, never used on replica 2 before the failover: replica 2 needs Redis
    // to accept it, so it sees the window without a master (503) and the recovery.
    let cold = sign_in(&r1, SAM_EMAIL, CHROME_MAC).await;
    // Both sessions must be on the replica before the master dies (replication is asynchronous).
    setup.sync_replica();

    // Steady traffic: the warm session through both replicas; the cold one through replica 2
    // from the moment the master dies.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let traffic = |stream: usize, gw: Arc<TestGateway>, cookie: String| {
        let (stop, seen) = (stop.clone(), seen.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let resp = c.get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap();
                let status = resp.status().as_u16();
                let touched = set_cookies(&resp).iter().any(|c| c.contains("dalea_session="));
                assert!(!touched, "stream {stream} had its session cookie touched (status {status})");
                seen.lock().unwrap().push(Seen { stream, status, at: Instant::now() });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut streams = vec![traffic(0, r1.clone(), cookie.clone()), traffic(1, r2.clone(), cookie.clone())];
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed_at = Instant::now();
    let old = setup.kill_master();
    streams.push(traffic(2, r2.clone(), cold.clone()));
    let setup = Arc::new(setup);
    let new = {
        let setup = setup.clone();
        tokio::task::spawn_blocking(move || setup.wait_for_failover(old, Duration::from_secs(20))).await.unwrap()
    };
    eprintln!("sentinels promoted {new} {:?} after {old} was killed", killed_at.elapsed());

    // Service resumes by itself: every stream's last 5 answers are 200 within 15 s of the kill.
    let deadline = killed_at + Duration::from_secs(15);
    loop {
        let resumed = |stream: usize| {
            let seen = seen.lock().unwrap();
            let last: Vec<u16> = seen
                .iter()
                .rev()
                .filter(|s| s.stream == stream && s.at > killed_at)
                .take(5)
                .map(|s| s.status)
                .collect();
            last.len() == 5 && last.iter().all(|&s| s == 200)
        };
        if (0..3).all(resumed) {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume within 15 s of the master dying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("all streams answer 200 again {:?} after the kill", killed_at.elapsed());
    // Both replicas resubscribe on the promoted master.
    subscribed(&r1, deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1))).await;
    subscribed(&r2, deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1))).await;
    // Writes reach the new master too: the activity flush and a second sign-in.
    let admin = sign_in(&r1, DEMO_EMAIL, FIREFOX_WIN).await;

    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.await.expect("traffic loop");
    }
    let seen = seen.lock().unwrap().clone();
    for stream in 0..3 {
        let count = |code: u16| seen.iter().filter(|s| s.stream == stream && s.status == code).count();
        eprintln!("stream {stream}: {} × 200, {} × 503", count(200), count(503));
    }
    let bad: Vec<&Seen> = seen.iter().filter(|s| s.status != 200 && s.status != 503).collect();
    assert!(bad.is_empty(), "valid sessions got answers other than 200/503 (a sign-out): {bad:?}");

    // A revoke through replica 1 after the failover signs the session out on replica 2.
    let (_, v) = sessions(&r1, &admin).await;
    let list = v["sessions"].as_array().expect("session list");
    assert_eq!(list.len(), 2, "both sessions are listed after the failover: {v}");
    let id =
        list.iter().find(|s| s["current"] == false).expect("the first session")["id"].as_str().unwrap().to_string();
    let resp =
        client().delete(r1.url(&format!("/.dalea/api/sessions/{id}"))).header("cookie", &admin).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let revoked_at = Instant::now();
    loop {
        let status = client().get(r2.url("/app")).header("cookie", &cookie).send().await.unwrap().status().as_u16();
        if status == 401 || status == 302 {
            break;
        }
        assert_eq!(status, 200, "replica 2 answered {status} for the revoked session");
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "replica 2 still accepts the revoked session after 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("revocation reached replica 2 {:?} after the revoke returned", revoked_at.elapsed());
    assert_eq!(client().get(r1.url("/app")).header("cookie", &admin).send().await.unwrap().status(), 200);
}
