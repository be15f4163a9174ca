//! What the upstream receives and what comes back through the gateway.

use crate::support::echo::seen;
use crate::support::*;

async fn echo(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value, Vec<String>) {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cookies = set_cookies(&resp);
    (status, resp.json().await.unwrap_or(serde_json::Value::Null), cookies)
}

#[tokio::test]
async fn the_upstream_gets_our_identity_and_never_the_clients() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let (_, list) = sessions(&gw, &cookie).await;
    let sid = list["sessions"][0]["id"].as_str().unwrap().to_string();
    let spoof = [
        ("x-dalea-user", "admin"),
        ("X-Dalea-Email", "admin@example.com"),
        ("x-dalea-anything", "1"),
        ("cookie", "theme=dark"),
    ];
    let mut headers = spoof.to_vec();
    let both = format!("{cookie}; theme=dark");
    headers.retain(|(k, _)| *k != "cookie");
    headers.push(("cookie", &both));
    let (status, got, _) = echo(&gw, "/app", &headers).await;
    assert_eq!(status, 200);
    assert_eq!(seen(&got, "x-dalea-user"), vec!["demo"]);
    assert_eq!(seen(&got, "x-dalea-email"), vec![DEMO_EMAIL]);
    assert_eq!(seen(&got, "x-dalea-session"), vec![sid]);
    assert_eq!(seen(&got, "x-dalea-auth-strength"), vec!["basic"]);
    assert!(seen(&got, "x-dalea-anything").is_empty());
    assert_eq!(seen(&got, "cookie"), vec!["theme=dark"], "our cookie is never forwarded; others are");
    assert_eq!(seen(&got, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen(&got, "x-forwarded-proto"), vec!["http"]);
}

#[tokio::test]
async fn public_routes_strip_spoofed_identity_too() {
    let gw = TestGateway::start();
    let (status, got, _) =
        echo(&gw, "/public/info", &[("x-dalea-user", "admin"), ("x-forwarded-for", "6.6.6.6")]).await;
    assert_eq!(status, 200);
    assert!(seen(&got, "x-dalea-user").is_empty());
    assert_eq!(seen(&got, "x-forwarded-for"), vec!["127.0.0.1"], "an untrusted peer's X-Forwarded-For is replaced");
}

#[tokio::test]
async fn a_trusted_proxy_chain_is_walked_for_the_client_ip() {
    let gw = Setup::default().toml("[client_info]\ntrusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]").start();
    let resp = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["session"]["ip"], "203.0.113.9");
}

#[tokio::test]
async fn an_upstream_cannot_set_our_session_cookie() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let (status, _, cookies) = echo(&gw, "/app?set-cookie=dalea_session", &[("cookie", &cookie)]).await;
    assert_eq!(status, 200);
    assert!(!cookies.iter().any(|c| c.starts_with("dalea_session=")), "{cookies:?}");
    assert!(cookies.iter().any(|c| c.starts_with("app_pref=dark")), "the app's own cookies pass");
}

#[tokio::test]
async fn elevated_routes_answer_403_until_elevation_exists() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let resp = client().get(gw.url("/admin/users")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("not support"));
}

#[tokio::test]
async fn unrouted_hosts_get_404_and_dot_segments_400() {
    let gw = Setup::default()
        .routes("[[routes]]\nhost = \"app.example\"\npath_prefix = \"/\"\nupstream = \"app\"\naccess = \"public\"\n")
        .start();
    let ok = client().get(gw.url("/")).header("host", "app.example").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let other = client().get(gw.url("/")).header("host", "other.example").send().await.unwrap();
    assert_eq!(other.status(), 404);
    // Sent raw: client libraries resolve dot segments before sending.
    let dots = raw_request(gw.addr, b"GET /a/%2e%2e/b HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\n\r\n");
    assert!(dots.starts_with("HTTP/1.1 400"), "{dots}");
}

#[tokio::test]
async fn a_dead_cookie_on_a_public_route_passes_anonymously_and_is_cleared() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let signed_in = echo(&gw, "/public/x", &[("cookie", &cookie)]).await;
    assert_eq!(seen(&signed_in.1, "x-dalea-user"), vec!["demo"], "public routes still say who is signed in");
    gw.clock.advance(std::time::Duration::from_secs(31 * 86_400));
    let (status, got, cookies) = echo(&gw, "/public/x", &[("cookie", &cookie)]).await;
    assert_eq!(status, 200);
    assert!(seen(&got, "x-dalea-user").is_empty());
    assert!(cookies.iter().any(|c| c.starts_with("dalea_session=;") && c.contains("Max-Age=0")), "{cookies:?}");
}
