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
    let (status, got, _) = echo(
        &gw,
        "/public/info",
        &[
            ("x-dalea-user", "admin"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-prefix", "//evil.example"),
            ("x-original-url", "/admin"),
            ("true-client-ip", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(seen(&got, "x-dalea-user").is_empty());
    for h in ["x-forwarded-prefix", "x-original-url", "true-client-ip"] {
        assert!(seen(&got, h).is_empty(), "{h} from an untrusted client must not reach the app");
    }
    assert_eq!(seen(&got, "x-forwarded-for"), vec!["127.0.0.1"], "an untrusted peer's X-Forwarded-For is replaced");
}

#[tokio::test]
async fn other_auth_proxies_identity_headers_never_reach_the_app_even_through_a_trusted_proxy() {
    // Behind a trusted load balancer that passes client headers on, as most do.
    let gw = Setup::default().toml("[client_info]\ntrusted_proxies = [\"127.0.0.0/8\"]").start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let spoof = [
        ("x-forwarded-user", "admin"),
        ("X-Forwarded-Email", "admin@example.com"),
        ("x-auth-request-user", "admin"),
        ("Remote-User", "admin"),
        ("remote_groups", "admins"),
        ("X-WEBAUTH-USER", "admin"),
        ("x-authenticated-userid", "admin"),
        ("x-forwarded-host", "app.example.com"),
        ("cookie", cookie.as_str()),
    ];
    for path in ["/app", "/public/info"] {
        let (status, got, _) = echo(&gw, path, &spoof).await;
        assert_eq!(status, 200, "{path}");
        for (h, _) in &spoof[..7] {
            assert!(seen(&got, &h.to_ascii_lowercase()).is_empty(), "{path}: {h} must not reach the app");
        }
        assert_eq!(seen(&got, "x-forwarded-host"), vec!["app.example.com"], "{path}: a trusted proxy's host is kept");
    }
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
async fn the_gateways_own_addresses_in_another_spelling_are_refused_never_proxied() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    // Sent raw: client libraries rewrite `\` and dot segments before sending.
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n");
        raw_request(gw.addr, req.as_bytes())
    };
    for path in [
        "/.dalea\\api\\sessions",
        "/.dalea;x/api/sessions",
        "/%2edalea/api/sessions",
        "//.dalea/api/sessions",
        "/.dalea/oauth/%2e%2e/start",
        "/.dalea/api/sessions%2fx",
        "/.dalea/api/sessions%00",
    ] {
        let answer = get(path);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("\"error\":\"bad_request\""), "{path}: answered by the gateway, not the app: {answer}");
    }
    // The standard spelling still works.
    let answer = get("/.dalea/api/sessions");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"sessions\":["), "{answer}");
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

/// Paths an upstream would decode to a stricter route's path never get there anonymously.
#[tokio::test]
async fn encoded_and_parameterised_paths_cannot_reach_a_stricter_route() {
    let gw = Setup::default()
        .routes(
            "[[routes]]\npath_prefix = \"/private/\"\nupstream = \"app\"\naccess = \"session\"\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\naccess = \"public\"\n",
        )
        .start();
    let get = |target: &str| {
        raw_request(gw.addr, format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
    };
    for target in [
        "/%70rivate/secret",
        "/privat%65/secret",
        "/private",
        "//private/secret",
        "/\\private/secret",
        "/private;x/secret",
        "/private;jsessionid=1",
    ] {
        let resp = get(target);
        assert!(resp.starts_with("HTTP/1.1 401"), "{target} must need a session: {resp}");
    }
    for target in [
        "/public/..%2fprivate/secret",
        "/private%2fsecret",
        "/%2fprivate/secret",
        "/x/..;/private/secret",
        "private/secret",
        "/a%00b",
    ] {
        let resp = get(target);
        assert!(resp.starts_with("HTTP/1.1 400"), "{target} must be refused: {resp}");
    }
    assert!(get("/public/page").starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn underscore_spellings_of_identity_headers_are_stripped_and_forwarding_headers_set() {
    let gw = Setup::default().toml("[client_info]\ntrusted_proxies = [\"127.0.0.1\"]").start();
    let cookie = sign_in(&gw, SAM_EMAIL, CHROME_MAC).await;
    let resp = client()
        .get(gw.url("/app"))
        .header("cookie", &cookie)
        .header("x_dalea_user", "demo")
        .header("X_Dalea_Email", "ceo@example.com")
        .header("x_forwarded_for", "6.6.6.6")
        .header("x-real-ip", "9.9.9.9")
        .header("x-forwarded-for", "203.0.113.1")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    let got: serde_json::Value = resp.json().await.unwrap();
    let names: Vec<String> =
        got["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap().to_string()).collect();
    assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
    assert_eq!(seen(&got, "x-dalea-user"), vec!["sam"]);
    assert_eq!(
        seen(&got, "x-forwarded-for"),
        vec!["203.0.113.1, 198.51.100.7, 127.0.0.1"],
        "every line of a trusted chain is kept"
    );
    assert_eq!(seen(&got, "x-real-ip"), vec!["198.51.100.7"], "the client as the gateway resolved it");
}

#[tokio::test]
async fn http11_without_a_host_is_refused() {
    let gw = TestGateway::start();
    let resp = raw_request(gw.addr, b"GET /public/x HTTP/1.1\r\nconnection: close\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[tokio::test]
async fn a_busy_listen_port_is_a_startup_error_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let text = format!(
        "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\n[users]\nfile = \"users.toml\"\n\
         [[upstreams]]\nname = \"a\"\naddress = \"127.0.0.1:9\"\n[[routes]]\nupstream = \"a\"\n"
    );
    let overrides = dalea_gateway::config::Overrides { data_dir: Some(dir.path().join("data")), ..Default::default() };
    let config = dalea_gateway::config::Config::from_toml_str(&text, dir.path(), &[], &overrides).unwrap();
    let err = dalea_gateway::server::build(config, std::sync::Arc::new(dalea_gateway::clock::SystemClock))
        .err()
        .expect("must fail");
    assert!(err.to_string().starts_with("server.listen: cannot listen on"), "{err}");
}

#[tokio::test]
async fn an_unreachable_or_silent_upstream_gets_a_clear_502_or_504() {
    let dead = free_addr(); // nothing listens there any more
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // accepts (backlog), never answers
    let gw = Setup::default()
        .toml(&format!(
            "[[upstreams]]\nname = \"dead\"\naddress = \"{dead}\"\n\
             [[upstreams]]\nname = \"silent\"\naddress = \"{}\"\nread_timeout = \"1s\"\n",
            silent.local_addr().unwrap()
        ))
        .routes(
            "[[routes]]\npath_prefix = \"/dead\"\nupstream = \"dead\"\naccess = \"public\"\n\
             [[routes]]\npath_prefix = \"/silent\"\nupstream = \"silent\"\naccess = \"public\"\n",
        )
        .start();
    let resp = client().get(gw.url("/dead/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unavailable");

    let resp = client().get(gw.url("/silent/x")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(resp.text().await.unwrap().contains("took too long"));
}
