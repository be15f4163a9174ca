//! Idle and absolute expiry with the clock under test control, activity flushing, restarts.

use std::time::Duration;

use crate::support::*;

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn a_session_idle_for_30_days_is_over_and_its_cookie_cleared() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(DAY * 29);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap().status(), 200);
    // 29 idle days after that request it is still alive; 30 days after it, it is not.
    gw.clock.advance(DAY * 29);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap().status(), 200);
    gw.clock.advance(DAY * 30);
    let resp =
        client().get(gw.url("/app")).header("cookie", &cookie).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(set_cookies(&resp).iter().any(|c| c.contains("Max-Age=0")));
}

#[tokio::test]
async fn the_absolute_lifetime_ends_even_an_active_session() {
    let gw = Setup::default().toml("[session]\nabsolute_timeout = \"60d\"").start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    for _ in 0..2 {
        gw.clock.advance(DAY * 20);
        assert_eq!(client().get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap().status(), 200);
    }
    gw.clock.advance(DAY * 20);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_shorter_idle_timeout_is_honoured() {
    let gw = Setup::default().toml("[session]\nidle_timeout = \"2h\"").start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(Duration::from_secs(7_199));
    assert_eq!(client().get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap().status(), 200);
    gw.clock.advance(Duration::from_secs(7_200));
    assert_eq!(client().get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn activity_reaches_the_store_within_the_flush_interval() {
    let gw = Setup::default().toml("[client_info]\ntrusted_proxies = [\"127.0.0.1\"]").start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let (_, v) = sessions(&gw, &cookie).await;
    let id = v["sessions"][0]["id"].as_str().unwrap().to_string();
    gw.clock.advance(Duration::from_secs(300));
    let resp = client()
        .get(gw.url("/app"))
        .header("cookie", &cookie)
        .header("x-forwarded-for", "198.51.100.23")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Poll the store itself (not the cache) for up to 5 s.
    let mut stored = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all = gw.state.sessions.store.list_for_user("demo").await.unwrap();
        let s = all.into_iter().find(|s| s.id.as_str() == id).unwrap();
        if s.last_ip == Some("198.51.100.23".parse().unwrap()) {
            stored = Some(s);
            break;
        }
    }
    let s = stored.expect("activity was flushed to the store");
    assert!(s.last_active_at >= s.created_at + 300_000);
}

#[tokio::test]
async fn a_restart_signs_nobody_out() {
    let data = tempfile::tempdir().unwrap();
    let gw = Setup::default().data_dir(data.path()).start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.stop();
    let gw = Setup::default().data_dir(data.path()).start();
    let resp = client().get(gw.url("/app")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
