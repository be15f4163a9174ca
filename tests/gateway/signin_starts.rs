//! Sign-ins anyone may start — through a provider (`/.dalea/oauth/{p}/start`) and with a passkey
//! (`/.dalea/api/passkeys/signin/begin`) — each keep a record in the pending store: how many one
//! client network may start (`[rate_limit] signin_starts_per_network`), and what people are
//! told when the store is full anyway.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;

use crate::support::account::status_json;
use crate::support::oidc::*;
use crate::support::redis::RedisServer;
use crate::support::*;

const CLIENT_ID: &str = "dalea-gateway";
const CLIENT_SECRET: &str = "test-secret-not-for-production";
/// The test client talks from 127.0.0.1; as a trusted proxy it says whom it speaks for.
const TRUSTED: &str = "[client_info]\ntrusted_proxies = [\"127.0.0.1/32\"]";
const TOO_MANY_STARTS: &str = "Too many sign-ins started from your network. Try again in 15 minutes.";
const FULL: &str =
    "Too many sign-ins are in progress right now. Try again in a few minutes, or sign in with your password.";

fn provider() -> OidcProvider {
    let client =
        OidcClient::new(CLIENT_ID, CLIENT_SECRET, "http://127.0.0.1/.dalea/oauth/corp/callback").any_loopback_port();
    OidcProvider::start(OidcConfig::new(SigningKeys::rs256()).client(client))
}

/// The provider `corp` at `issuer`, and passkeys at `http://localhost:<port of addr>`.
fn sign_in_toml(issuer: &str, addr: SocketAddr) -> String {
    format!(
        "[oauth]\npublic_url = \"{{gateway_url}}\"\n\
         [[oauth.providers]]\nkind = \"oidc\"\nname = \"corp\"\ndisplay_name = \"Corp SSO\"\nissuer = \"{issuer}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         [passkeys]\norigin = \"http://localhost:{}\"\nrp_name = \"Dalea test\"",
        addr.port()
    )
}

/// A gateway with both ways to start a sign-in, behind a trusted proxy, plus `extra` TOML.
fn setup(op: &OidcProvider, extra: &str) -> Setup {
    let addr = free_addr();
    Setup::default().listen(addr).toml(&sign_in_toml(&op.issuer(), addr)).toml(TRUSTED).toml(extra)
}

/// GET the provider's start for the client at `ip`.
async fn oauth_start(gw: &TestGateway, ip: &str) -> reqwest::Response {
    let url = gw.url("/.dalea/oauth/corp/start?rd=/reports");
    client().get(url).header("x-forwarded-for", ip).send().await.expect("start")
}

/// POST the passkey sign-in begin for the client at `ip`.
async fn passkey_begin(gw: &TestGateway, ip: &str) -> reqwest::Response {
    let body = json!({ "remember_me": false, "rd": "/reports" });
    let url = gw.url("/.dalea/api/passkeys/signin/begin");
    client().post(url).header("x-forwarded-for", ip).json(&body).send().await.expect("begin")
}

/// The sign-in page's own button: its form posted to the provider's start, for the client at `ip`.
async fn oauth_start_form(gw: &TestGateway, ip: &str) -> reqwest::Response {
    let page = client().get(gw.url("/.dalea/signin?rd=/reports")).send().await.expect("sign-in page");
    let csrf = set_cookies(&page).into_iter().find(|c| c.starts_with("dalea_csrf=")).expect("CSRF cookie");
    let csrf = csrf.split(';').next().unwrap_or_default().to_string();
    let token = csrf.trim_start_matches("dalea_csrf=").to_string();
    let form = [("csrf_token", token.as_str()), ("rd", "/reports"), ("email", "")];
    let url = gw.url("/.dalea/oauth/corp/start");
    client().post(url).header("cookie", &csrf).header("x-forwarded-for", ip).form(&form).send().await.expect("form")
}

fn metric(gw: &TestGateway, series: &str) -> f64 {
    let text = gw.state.render_metrics();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or_else(|| panic!("{series} is not exported"), |v| v.parse().unwrap_or_else(|_| panic!("{series}: {v}")))
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers().get("retry-after").expect("Retry-After").to_str().unwrap().parse().expect("seconds")
}

async fn page_text(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_network_that_starts_too_many_sign_ins_gets_429_while_other_networks_still_start() {
    let op = provider();
    let gw = setup(&op, "[rate_limit]\nsignin_starts_per_network = 3").start();
    let rejections = r#"dalea_rate_limit_rejections_total{limit="signin_start"}"#;
    assert_eq!(metric(&gw, rejections), 0.0, "exported at zero");

    // Three starts from one /24, by either way in, share its budget…
    assert_eq!(oauth_start(&gw, "198.51.100.7").await.status(), 303);
    assert_eq!(oauth_start(&gw, "198.51.100.7").await.status(), 303);
    assert_eq!(passkey_begin(&gw, "198.51.100.8").await.status(), 200);

    // …and the fourth is refused before anything is kept: the sign-in page, saying why.
    let refused = oauth_start(&gw, "198.51.100.9").await;
    assert_eq!(retry_after(&refused), 900, "until the 15-minute window ends");
    assert!(!set_cookies(&refused).iter().any(|c| c.starts_with("dalea_oauth=")), "no flow was begun");
    let (status, html) = page_text(refused).await;
    assert_eq!(status, 429);
    assert!(html.contains(TOO_MANY_STARTS), "{html}");
    assert!(html.contains("name=\"password\""), "the password form is right there");

    // The sign-in page's button (a form POST) is told the same.
    let refused = oauth_start_form(&gw, "198.51.100.200").await;
    assert_eq!(retry_after(&refused), 900);
    let (status, html) = page_text(refused).await;
    assert_eq!(status, 429);
    assert!(html.contains(TOO_MANY_STARTS), "{html}");

    // The JSON API: 429 too_many_attempts, like the other limits.
    let refused = passkey_begin(&gw, "198.51.100.250").await;
    assert_eq!(retry_after(&refused), 900);
    assert!(!set_cookies(&refused).iter().any(|c| c.starts_with("dalea_passkey=")), "no ceremony was begun");
    let (status, v) = status_json(refused).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!((v["error"].as_str(), v["message"].as_str()), (Some("too_many_attempts"), Some(TOO_MANY_STARTS)));

    // Other networks start as usual (IPv4 /24s and IPv6 /64s apart).
    assert_eq!(oauth_start(&gw, "198.51.101.7").await.status(), 303);
    assert_eq!(passkey_begin(&gw, "203.0.113.5").await.status(), 200);
    assert_eq!(oauth_start(&gw, "2001:db8:1:2::1").await.status(), 303);
    assert_eq!(oauth_start(&gw, "2001:db8:1:2::2").await.status(), 303);
    assert_eq!(oauth_start(&gw, "2001:db8:1:2:ffff::3").await.status(), 303);
    assert_eq!(oauth_start(&gw, "2001:db8:1:2::4").await.status(), 429, "the same /64");
    assert_eq!(oauth_start(&gw, "2001:db8:1:3::4").await.status(), 303, "the next /64");

    // Counted: the limit, and each refused start as a throttled sign-in of its method.
    assert_eq!(metric(&gw, rejections), 4.0);
    assert_eq!(metric(&gw, r#"dalea_signins_total{method="oauth:corp",outcome="throttled"}"#), 3.0);
    assert_eq!(metric(&gw, r#"dalea_signins_total{method="passkey",outcome="throttled"}"#), 1.0);
    assert_eq!(metric(&gw, r#"dalea_rate_limit_rejections_total{limit="signin"}"#), 0.0, "a limit of its own");

    // A password sign-in from the busy network is not affected.
    let password = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("x-forwarded-for", "198.51.100.7")
        .json(&json!({ "email": DEMO_EMAIL, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(password.status(), 200);

    // A new window starts afresh.
    gw.clock.advance(std::time::Duration::from_secs(900));
    assert_eq!(oauth_start(&gw, "198.51.100.7").await.status(), 303);
    assert_eq!(passkey_begin(&gw, "198.51.100.7").await.status(), 200);
}

/// Fills the embedded store's pending table in `data_dir` to its cap (`pending::MAX_RECORDS`)
/// with records that expire in an hour, in one transaction — as many sign-ins left unfinished
/// would. The tables are the embedded store's own (`session/embedded_pending.rs`).
fn fill_pending_store(data_dir: &Path) {
    const PENDING: redb::TableDefinition<(&str, &str), (i64, &[u8])> = redb::TableDefinition::new("pending");
    const PENDING_EXPIRY: redb::TableDefinition<(i64, &str, &str), ()> = redb::TableDefinition::new("pending_expiry");
    std::fs::create_dir_all(data_dir).unwrap();
    let db = redb::Database::create(data_dir.join(dalea_gateway::session::embedded::FILE_NAME)).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let expires_at = now + 3_600_000;
    let txn = db.begin_write().unwrap();
    {
        let mut pending = txn.open_table(PENDING).unwrap();
        let mut expiry = txn.open_table(PENDING_EXPIRY).unwrap();
        for i in 0..dalea_gateway::pending::MAX_RECORDS {
            let id = format!("flood{i}");
            pending.insert(("oauth", id.as_str()), (expires_at, b"{}".as_slice())).unwrap();
            expiry.insert((expires_at, "oauth", id.as_str()), ()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_full_pending_store_gets_its_own_503_and_is_counted_as_sign_in_errors() {
    let op = provider();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fill_pending_store(&data);
    let gw = setup(&op, "").data_dir(&data).start();

    let resp = passkey_begin(&gw, "198.51.100.7").await;
    assert_eq!(retry_after(&resp), 60);
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!((v["error"].as_str(), v["message"].as_str()), (Some("too_many_signins_in_progress"), Some(FULL)));

    let resp = oauth_start(&gw, "203.0.113.5").await;
    assert_eq!(retry_after(&resp), 60);
    let (status, html) = page_text(resp).await;
    assert_eq!(status, 503);
    assert!(html.contains(FULL), "the sign-in page says what is wrong: {html}");
    assert!(html.contains("name=\"password\""), "and offers the password form");

    assert_eq!(metric(&gw, r#"dalea_signins_total{method="passkey",outcome="error"}"#), 1.0);
    assert_eq!(metric(&gw, r#"dalea_signins_total{method="oauth:corp",outcome="error"}"#), 1.0);
    assert_eq!(metric(&gw, r#"dalea_rate_limit_rejections_total{limit="signin_start"}"#), 0.0, "no limit was hit");
    assert_eq!(try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await.status(), 200, "passwords still work");
}

/// Starts count against one limit however the load balancer spreads them.
#[tokio::test(flavor = "multi_thread")]
async fn starts_are_counted_across_replicas() {
    let redis = RedisServer::start();
    let replica = || {
        let addr = free_addr();
        let passkeys = format!("[passkeys]\norigin = \"http://localhost:{}\"\nrp_name = \"Dalea test\"", addr.port());
        let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"", redis.url());
        Setup::default()
            .listen(addr)
            .toml(&passkeys)
            .toml(&store)
            .toml(TRUSTED)
            .toml("[rate_limit]\nsignin_starts_per_network = 3")
            .start()
    };
    let (r1, r2) = (replica(), replica());
    for gw in [&r1, &r2, &r1] {
        assert_eq!(passkey_begin(gw, "198.51.100.7").await.status(), 200);
    }
    for gw in [&r2, &r1] {
        assert_eq!(passkey_begin(gw, "198.51.100.8").await.status(), 429, "the network's 3 are used up everywhere");
    }
    assert_eq!(passkey_begin(&r2, "203.0.113.5").await.status(), 200, "another network is unaffected");
    let count = redis.command(&["GET", "dalea:t:{signin_start:a:198.51.100.0/24}"]);
    assert_eq!(count.trim(), "3", "the network's counter is in Redis");
    let rejections = r#"dalea_rate_limit_rejections_total{limit="signin_start"}"#;
    assert_eq!((metric(&r1, rejections), metric(&r2, rejections)), (1.0, 1.0), "each replica counts its own 429s");
}
