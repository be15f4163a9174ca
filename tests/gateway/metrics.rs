//! `/metrics` on the admin listener as Prometheus scrapes it: what a user does shows up in the
//! right series, the exposition passes `promtool check metrics`, and replicas on Redis report
//! the revocation notices they exchange.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::account::*;
use crate::support::redis::RedisServer;
use crate::support::*;

async fn scrape(gw: &TestGateway) -> String {
    let resp = client().get(format!("http://{}/metrics", gw.admin)).send().await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "Prometheus text format, got {ct}");
    resp.text().await.expect("body")
}

/// The value of one series (`name{labels}` exactly as exposed, labels sorted by name).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} is not exported:\n{text}"))
}

/// Runs `promtool check metrics` on a scrape; it must exit 0 and report nothing.
fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup.sh --test installs Debian's prometheus package)");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics reported:\n{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_people_do_shows_up_in_the_metrics_and_promtool_finds_nothing_to_report() {
    let gw = Setup::default()
        .toml("[session]\nactivity_flush_interval = \"100ms\"\n[rate_limit]\nsignin_per_account = 2")
        .start();
    let c = client();
    let before = scrape(&gw).await;
    promtool_check(&before);
    assert_eq!(value(&before, r#"dalea_requests_total{decision="allowed",route="app"}"#), 0.0);

    assert_eq!(c.get(gw.url("/public/x")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/app")).send().await.unwrap().status(), 401);
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, "wrong password").await.status(), 401);
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, "wrong again").await.status(), 401);
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, PASSWORD).await.status(), 429, "over the per-account limit");
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    for _ in 0..3 {
        assert_eq!(c.get(gw.url("/app/page")).header("cookie", &cookie).send().await.unwrap().status(), 200);
    }
    // Enrolling TOTP makes /admin ask for a code; a wrong one fails, the right one elevates.
    let app = enroll_totp(&gw, &cookie).await;
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 401);
    assert_eq!(elevate_with_code(&gw, &cookie, &app.wrong_code(&gw.clock)).await.status(), 401);
    let cookie = elevate(&gw, &cookie, &app).await;
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 200);
    assert_eq!(raw_request(gw.addr, b"GET /a/%2e%2e/b HTTP/1.1\r\nHost: x\r\n\r\n").split(' ').nth(1), Some("400"));
    tokio::time::sleep(Duration::from_millis(400)).await; // an activity flush

    let after = scrape(&gw).await;
    promtool_check(&after);
    let v = |s: &str| value(&after, s);
    assert_eq!(v(r#"dalea_requests_total{decision="allowed",route="public"}"#), 1.0);
    assert_eq!(v(r#"dalea_requests_total{decision="signin_required",route="app"}"#), 1.0);
    assert_eq!(v(r#"dalea_requests_total{decision="allowed",route="app"}"#), 3.0);
    assert_eq!(v(r#"dalea_requests_total{decision="elevation_required",route="admin"}"#), 1.0);
    assert_eq!(v(r#"dalea_requests_total{decision="allowed",route="admin"}"#), 1.0);
    assert_eq!(v(r#"dalea_requests_total{decision="denied",route="_none"}"#), 1.0);
    assert_eq!(v("dalea_auth_check_duration_seconds_count"), 7.0, "every routed request was timed");
    assert_eq!(v(r#"dalea_upstream_responses_total{class="2xx",route="app"}"#), 3.0);
    assert_eq!(v(r#"dalea_upstream_response_duration_seconds_count{route="app"}"#), 3.0);
    assert_eq!(v(r#"dalea_signins_total{method="password",outcome="failure"}"#), 2.0);
    assert_eq!(v(r#"dalea_signins_total{method="password",outcome="throttled"}"#), 1.0);
    assert_eq!(v(r#"dalea_signins_total{method="password",outcome="success"}"#), 1.0);
    assert_eq!(v(r#"dalea_rate_limit_rejections_total{limit="signin"}"#), 1.0);
    assert_eq!(v(r#"dalea_elevations_total{method="totp",outcome="failure"}"#), 1.0);
    assert_eq!(v(r#"dalea_elevations_total{method="totp",outcome="success"}"#), 1.0);
    assert!(v(r#"dalea_cache_hits_total{cache="session"}"#) >= 3.0);
    assert_eq!(v("dalea_sessions_active"), 1.0, "one person browsing");
    assert!(v(r#"dalea_store_operations_total{op="insert"}"#) >= 1.0);
    assert_eq!(v(r#"dalea_store_errors_total{op="get"}"#), 0.0);
    assert!(v(r#"dalea_activity_flush_batch_size_count{lane="sessions"}"#) >= 1.0, "activity was flushed");
    assert!(v(r#"dalea_store_operations_total{op="record_activity"}"#) >= 1.0);
    assert_eq!(v("dalea_revocation_subscribed"), 1.0, "the embedded store cannot miss a revocation");
    // Bounded labels: no path, user id or email ever becomes a label value.
    for secretish in ["demo", "/app/page", "example.com", "%2e"] {
        assert!(
            !after.lines().filter(|l| !l.starts_with('#')).any(|l| l.contains(&format!("\"{secretish}\""))),
            "{secretish} appears as a label value"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_answer_on_the_admin_listener() {
    let gw = TestGateway::start();
    let c = client();
    let health = c.get(format!("http://{}/healthz", gw.admin)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = c.get(format!("http://{}/readyz", gw.admin)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body = ready.text().await.unwrap();
    assert!(body.contains("store: ok") && body.contains("proxy listener: ok"), "{body}");
    assert_eq!(c.get(format!("http://{}/nope", gw.admin)).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_count_the_revocation_notices_they_exchange() {
    let redis = RedisServer::start();
    let replica = || {
        Setup::default()
            .toml(&format!("[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"", redis.url()))
            .start()
    };
    let (r1, r2) = (replica(), replica());
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;
    let mine = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    let other = sign_in(&r1, DEMO_EMAIL, FIREFOX_WIN).await;
    assert_eq!(client().get(r2.url("/app")).header("cookie", &other).send().await.unwrap().status(), 200);
    let (_, v) = sessions(&r1, &other).await;
    let id = v["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = client().delete(r1.url(&format!("/.dalea/api/sessions/{id}"))).header("cookie", &mine).send().await;
    assert_eq!(resp.unwrap().status(), 204);

    // The notice reaches both replicas (r1 hears its own notice back: that is the fan-out lag).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (m1, m2) = loop {
        let (m1, m2) = (scrape(&r1).await, scrape(&r2).await);
        let got = |m: &str| value(m, r#"dalea_revocation_notices_received_total{kind="revoked"}"#) >= 1.0;
        if (got(&m1) && got(&m2)) || std::time::Instant::now() > deadline {
            break (m1, m2);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    promtool_check(&m1);
    assert!(value(&m1, "dalea_revocation_notices_sent_total") >= 1.0);
    assert_eq!(value(&m2, "dalea_revocation_notices_sent_total"), 0.0, "r2 published nothing");
    assert!(value(&m2, r#"dalea_revocation_notices_received_total{kind="revoked"}"#) >= 1.0);
    assert!(value(&m1, "dalea_revocation_fanout_lag_seconds_count") >= 1.0, "r1 timed its own notice");
    assert_eq!(value(&m2, "dalea_revocation_fanout_lag_seconds_count"), 0.0, "r2 cannot time others' notices");
    assert_eq!(value(&m1, "dalea_revocation_subscribed"), 1.0);
    assert_eq!(value(&m2, r#"dalea_cache_misses_total{cache="session"}"#), 1.0, "r2 read the session once");
}
