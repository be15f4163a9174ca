//! Confirming it's you ("elevation") before sensitive routes and actions: with a TOTP code, or
//! with the password for people without TOTP; the step-up challenge API clients get; the
//! browser round trip through the elevation page; how long an elevation lasts; and the same
//! guarantees across two replicas on one Redis.

use std::time::{Duration, Instant};

use dalea_gateway::clock::{rfc3339, Clock, ManualClock};

use crate::support::account::*;
use crate::support::echo::seen;
use crate::support::redis::RedisServer;
use crate::support::*;

const MAX_AGE: Duration = Duration::from_secs(600);
const ONE_MS: Duration = Duration::from_millis(1);

/// What `X-Dalea-Auth-Strength` the upstream saw for a GET of `path`, asserting it got there.
async fn upstream_strength(gw: &TestGateway, path: &str, cookie: &str) -> Vec<String> {
    let resp = client().get(gw.url(path)).header("cookie", cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path} should reach the upstream");
    let echo: serde_json::Value = resp.json().await.unwrap();
    seen(&echo, "x-dalea-auth-strength")
}

/// Asserts a 401 step-up challenge: RFC 9470 `WWW-Authenticate`, JSON with the elevation URL.
async fn assert_step_up(resp: reqwest::Response, max_age: u64, elevate_url: &str) {
    assert_eq!(resp.status(), 401, "{} {}", resp.url(), resp.status());
    assert!(resp.headers().get("location").is_none(), "a challenge, not a redirect");
    let challenge = resp.headers().get("www-authenticate").expect("WWW-Authenticate").to_str().unwrap().to_string();
    assert!(challenge.starts_with("Bearer error=\"insufficient_user_authentication\""), "{challenge}");
    assert!(challenge.contains("error_description=\""), "{challenge}");
    assert!(challenge.ends_with(&format!("max_age={max_age}")), "{challenge}");
    let (_, v) = status_json(resp).await;
    assert_eq!(v["error"], "elevation_required", "{v}");
    assert_eq!(v["elevate_url"], elevate_url, "{v}");
}

async fn elevating_with_a_code_rotates_the_cookie_and_keeps_the_session(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let old = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(gw, &old).await;
    let id = public_id(gw, &old).await;
    assert_eq!(upstream_strength(gw, "/app", &old).await, ["basic"]);
    assert_eq!(get_json(gw, "/admin", &old).await.status(), 401, "not elevated yet");

    let resp = elevate_with_code(gw, &old, &app.next_code(&gw.clock)).await;
    assert_eq!(resp.status(), 200);
    let new = session_cookie(&resp).expect("an elevation sets a new session cookie");
    assert_ne!(new, old, "the token changes with the elevation");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["method"], "totp", "{v}");
    assert_eq!(v["elevated_at"], rfc3339(gw.clock.now()), "{v}");

    // The old token stops working at once.
    assert_eq!(get_json(gw, "/app", &old).await.status(), 401);
    let resp = navigate(gw, "/app", &old).await;
    assert_eq!(resp.status(), 303);
    assert!(resp.headers()["location"].to_str().unwrap().starts_with("/.dalea/signin"));

    // Same session (public id), no second one, now shown as elevated.
    let (status, list) = sessions(gw, &new).await;
    assert_eq!(status, 200);
    let list = list["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "the elevation made no second session: {list:?}");
    assert_eq!(list[0]["id"], id.as_str(), "the public session id stays the same");
    assert_eq!(list[0]["current"], true);
    let strength = &list[0]["auth_strength"];
    assert_eq!(strength["elevated"], true, "{strength}");
    assert_eq!(strength["method"], "totp", "{strength}");
    assert_eq!(strength["elevated_at"], v["elevated_at"], "{strength}");

    // The sensitive route opens and the upstream is told how the person authenticated.
    assert_eq!(upstream_strength(gw, "/admin/users", &new).await, ["elevated:totp"]);
    assert_eq!(upstream_strength(gw, "/app", &new).await, ["elevated:totp"]);
}

#[tokio::test]
async fn elevating_with_a_code_rotates_the_cookie_and_keeps_the_session_embedded() {
    elevating_with_a_code_rotates_the_cookie_and_keeps_the_session(Backend::Embedded).await;
}

#[tokio::test]
async fn elevating_with_a_code_rotates_the_cookie_and_keeps_the_session_redis() {
    elevating_with_a_code_rotates_the_cookie_and_keeps_the_session(Backend::Redis).await;
}

async fn a_code_is_accepted_once(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(gw, &cookie).await;

    // The code that confirmed the set-up is used up.
    let (status, v) = status_json(elevate_with_code(gw, &cookie, &app.code(&gw.clock)).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "{v}");

    let code = app.next_code(&gw.clock);
    let resp = elevate_with_code(gw, &cookie, &code).await;
    assert_eq!(resp.status(), 200);
    let elevated = session_cookie(&resp).unwrap();

    // The same code again, in the same 30 seconds: refused, and nothing changes.
    let resp = elevate_with_code(gw, &elevated, &code).await;
    assert!(session_cookie(&resp).is_none(), "a refused code rotates nothing");
    let (status, v) = status_json(resp).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "{v}");
    assert_eq!(get_json(gw, "/admin", &elevated).await.status(), 200, "the refusal did not end the elevation");

    // An app whose clock runs one step ahead is accepted; after that, the current step's
    // code (older than one already used) is refused, and the step after is fine.
    gw.clock.advance(STEP);
    let ahead = app.code_at_offset(&gw.clock, STEP.as_millis() as i64);
    let current = app.code(&gw.clock);
    let resp = elevate_with_code(gw, &elevated, &ahead).await;
    assert_eq!(resp.status(), 200);
    let elevated = session_cookie(&resp).unwrap();
    let (status, v) = status_json(elevate_with_code(gw, &elevated, &current).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "an older step after a newer one: {v}");
    gw.clock.advance(STEP * 2);
    assert_eq!(elevate_with_code(gw, &elevated, &app.code(&gw.clock)).await.status(), 200);
}

#[tokio::test]
async fn a_code_is_accepted_once_embedded() {
    a_code_is_accepted_once(Backend::Embedded).await;
}

#[tokio::test]
async fn a_code_is_accepted_once_redis() {
    a_code_is_accepted_once(Backend::Redis).await;
}

/// Junk where a code should be gets a 400 or 401 with a JSON error, never a 500, never an
/// elevation; a real code still works afterwards.
#[tokio::test]
async fn malformed_codes_get_a_clear_error_and_never_elevate() {
    // High limits: this test is about the answers, not about throttling.
    let gw = Setup::default().toml("[rate_limit]\ntotp_per_account = 1000\ntotp_per_network = 1000").start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&gw, &cookie).await;
    gw.clock.advance(STEP);

    let long = "1".repeat(2000);
    let bodies = [
        serde_json::json!({ "method": "totp", "code": "" }),
        serde_json::json!({ "method": "totp", "code": "12345" }),
        serde_json::json!({ "method": "totp", "code": "1234567" }),
        serde_json::json!({ "method": "totp", "code": "abcdef" }),
        serde_json::json!({ "method": "totp", "code": "12345a" }),
        serde_json::json!({ "method": "totp", "code": "１２３４５６" }),
        serde_json::json!({ "method": "totp", "code": "123456\u{0}" }),
        serde_json::json!({ "method": "totp", "code": long }),
        serde_json::json!({ "method": "totp", "code": 123456 }),
        serde_json::json!({ "method": "totp", "code": null }),
        serde_json::json!({ "method": "totp", "code": ["123456"] }),
        serde_json::json!({ "method": "totp" }),
        serde_json::json!({ "method": "sms", "code": app.code(&gw.clock) }),
        serde_json::json!({ "method": 7 }),
        serde_json::json!({}),
        serde_json::json!([]),
        serde_json::json!("123456"),
    ];
    for body in &bodies {
        let resp = post_json(&gw, "/.dalea/api/elevate", &cookie, body.clone()).await;
        assert!(session_cookie(&resp).is_none(), "{body}: no new session");
        let (status, v) = status_json(resp).await;
        assert!(status == 400 || status == 401, "{body}: {status} {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}: a JSON error code: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}: a message: {v}");
    }
    for raw in ["not json", "{\"method\":\"totp\",\"code\":", ""] {
        let resp = client()
            .post(gw.url("/.dalea/api/elevate"))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let (status, v) = status_json(resp).await;
        assert_eq!(status, 400, "{raw:?}: {v}");
        assert!(v["error"].as_str().is_some(), "{raw:?}: {v}");
    }
    // A body far too large: refused as such, not a crash.
    let huge = serde_json::json!({ "method": "totp", "code": "1".repeat(40_000) });
    let resp = post_json(&gw, "/.dalea/api/elevate", &cookie, huge).await;
    assert!(resp.status().is_client_error(), "{}", resp.status());

    // Not JSON, or from another site: refused before any code is looked at.
    let code = app.code(&gw.clock);
    let resp = client()
        .post(gw.url("/.dalea/api/elevate"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body(format!("{{\"method\":\"totp\",\"code\":\"{code}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = client()
        .post(gw.url("/.dalea/api/elevate"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({ "method": "totp", "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(session_cookie(&resp).is_none());
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 401, "still not elevated");

    // Without a session: sign in first.
    let resp = client()
        .post(gw.url("/.dalea/api/elevate"))
        .json(&serde_json::json!({ "method": "totp", "code": code }))
        .send()
        .await
        .unwrap();
    let (status, v) = status_json(resp).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("signin_required")), "{v}");

    // None of that used the code up or broke anything.
    let resp = elevate_with_code(&gw, &cookie, &code).await;
    assert_eq!(resp.status(), 200);
    let cookie = session_cookie(&resp).unwrap();
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 200);
}

async fn without_totp_the_password_confirms_it_is_you_but_is_no_elevation(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(MAX_AGE + ONE_MS);
    assert_step_up(get_json(gw, "/admin", &cookie).await, 600, "/.dalea/elevate?rd=%2Fadmin").await;

    let resp = elevate_with_password(gw, &cookie, "not-my-password").await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(resp.status(), 401);
    assert_eq!(get_json(gw, "/admin", &cookie).await.status(), 401);

    let resp = elevate_with_password(gw, &cookie, PASSWORD).await;
    let next = session_cookie(&resp).unwrap_or_else(|| cookie.clone());
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["method"], "password", "{v}");
    let cookie = next;

    // Passes sensitive routes, but is not an elevation: the upstream and the list say basic.
    assert_eq!(upstream_strength(gw, "/admin/users", &cookie).await, ["basic"]);
    let current = current_session(gw, &cookie).await;
    assert_eq!(current["auth_strength"]["elevated"], false, "{current}");

    gw.clock.advance(MAX_AGE);
    assert_eq!(get_json(gw, "/admin", &cookie).await.status(), 200, "exactly max_age later it still passes");
    gw.clock.advance(ONE_MS);
    assert_eq!(get_json(gw, "/admin", &cookie).await.status(), 401);
}

#[tokio::test]
async fn without_totp_the_password_confirms_it_is_you_but_is_no_elevation_embedded() {
    without_totp_the_password_confirms_it_is_you_but_is_no_elevation(Backend::Embedded).await;
}

#[tokio::test]
async fn without_totp_the_password_confirms_it_is_you_but_is_no_elevation_redis() {
    without_totp_the_password_confirms_it_is_you_but_is_no_elevation(Backend::Redis).await;
}

#[tokio::test]
async fn a_fresh_password_sign_in_without_totp_passes_for_max_age() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    assert_eq!(upstream_strength(&gw, "/admin", &cookie).await, ["basic"]);
    gw.clock.advance(MAX_AGE);
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 200);
    gw.clock.advance(ONE_MS);
    assert_step_up(get_json(&gw, "/admin", &cookie).await, 600, "/.dalea/elevate?rd=%2Fadmin").await;
    assert_eq!(get_json(&gw, "/app", &cookie).await.status(), 200, "ordinary routes are unaffected");
}

async fn with_totp_the_password_is_not_enough(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let earlier = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    assert_eq!(get_json(gw, "/admin", &earlier).await.status(), 200, "a fresh password sign-in passes, for now");
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(gw, &cookie).await;
    assert_eq!(get_json(gw, "/admin", &cookie).await.status(), 401, "with TOTP, the password sign-in is not enough");
    assert_eq!(get_json(gw, "/admin", &earlier).await.status(), 401, "not on the other device either");
    let fresh = sign_in(gw, DEMO_EMAIL, FIREFOX_WIN).await;
    assert_step_up(get_json(gw, "/admin", &fresh).await, 600, "/.dalea/elevate?rd=%2Fadmin").await;

    let resp = elevate_with_password(gw, &fresh, PASSWORD).await;
    assert!(session_cookie(&resp).is_none(), "no new session cookie");
    let (status, v) = status_json(resp).await;
    assert!((400..500).contains(&status), "the password method is refused to people with TOTP: {status} {v}");
    assert!(v["error"].as_str().is_some(), "{v}");
    assert_eq!(get_json(gw, "/admin", &fresh).await.status(), 401);

    let fresh = elevate(gw, &fresh, &app).await;
    assert_eq!(get_json(gw, "/admin", &fresh).await.status(), 200);
}

#[tokio::test]
async fn with_totp_the_password_is_not_enough_embedded() {
    with_totp_the_password_is_not_enough(Backend::Embedded).await;
}

#[tokio::test]
async fn with_totp_the_password_is_not_enough_redis() {
    with_totp_the_password_is_not_enough(Backend::Redis).await;
}

/// A browser on a sensitive page is sent to confirm, and comes back to where it was going.
async fn a_browser_confirms_on_the_elevation_page_and_comes_back(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(gw, &cookie).await;
    let target = "/admin/users?tab=roles&page=2";

    let resp = navigate(gw, target, &cookie).await;
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, "/.dalea/elevate?rd=%2Fadmin%2Fusers%3Ftab%3Droles%26page%3D2");

    let page = navigate(gw, &location, &cookie).await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let cookies = with_cookies_from(&cookie, &page);
    let html = page.text().await.unwrap();
    assert!(html.contains("action=\"/.dalea/elevate\""), "a form posting to the elevation page");
    assert!(html.contains("name=\"code\""), "it asks for the code");
    let token = hidden_input(&html, "csrf_token").expect("a CSRF token in the form");
    let rd = hidden_input(&html, "rd").unwrap_or_else(|| target.to_string());
    assert_eq!(rd, target, "the form carries the way back");

    // A forged form does nothing.
    let forged = client()
        .post(gw.url("/.dalea/elevate"))
        .header("cookie", &cookies)
        .form(&[("csrf_token", "forged"), ("code", app.next_code(&gw.clock).as_str()), ("rd", target)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(session_cookie(&forged).is_none());
    assert_eq!(navigate(gw, target, &cookie).await.status(), 303, "still not elevated");

    // A wrong code shows the form again with a message, still not elevated.
    let wrong = client()
        .post(gw.url("/.dalea/elevate"))
        .header("cookie", &cookies)
        .form(&[("csrf_token", token.as_str()), ("code", app.wrong_code(&gw.clock).as_str()), ("rd", target)])
        .send()
        .await
        .unwrap();
    assert!(wrong.status().is_client_error(), "{}", wrong.status());
    assert!(session_cookie(&wrong).is_none());

    let resp = client()
        .post(gw.url("/.dalea/elevate"))
        .header("cookie", &cookies)
        .form(&[("csrf_token", token.as_str()), ("code", app.next_code(&gw.clock).as_str()), ("rd", rd.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], target, "back to where the browser was going");
    let elevated = session_cookie(&resp).expect("a new session cookie");
    let back = navigate(gw, target, &elevated).await;
    assert_eq!(back.status(), 200);
    let echo: serde_json::Value = back.json().await.unwrap();
    assert_eq!(echo["path"], target);
    assert_eq!(seen(&echo, "x-dalea-auth-strength"), ["elevated:totp"]);
}

#[tokio::test]
async fn a_browser_confirms_on_the_elevation_page_and_comes_back_embedded() {
    a_browser_confirms_on_the_elevation_page_and_comes_back(Backend::Embedded).await;
}

#[tokio::test]
async fn a_browser_confirms_on_the_elevation_page_and_comes_back_redis() {
    a_browser_confirms_on_the_elevation_page_and_comes_back(Backend::Redis).await;
}

/// Anything but a browser navigation gets the 401 challenge; a POST is never redirected and,
/// resent after elevating, reaches the upstream with its body.
#[tokio::test]
async fn api_clients_get_a_step_up_challenge_and_a_post_keeps_its_body() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&gw, &cookie).await;
    let path = "/admin/items?draft=1";
    let elevate_url = "/.dalea/elevate?rd=%2Fadmin%2Fitems%3Fdraft%3D1";
    let form = "name=Ada+Lovelace&role=owner";
    let post = || {
        client()
            .post(gw.url(path))
            .header("cookie", &cookie)
            .header("accept", "text/html")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
    };

    assert_step_up(post().send().await.unwrap(), 600, elevate_url).await;
    let requests = [
        client().get(gw.url(path)).header("accept", "application/json"),
        client().get(gw.url(path)).header("accept", "*/*").header("x-requested-with", "XMLHttpRequest"),
        client().get(gw.url(path)),
        client().delete(gw.url(path)).header("accept", "text/html"),
        client().put(gw.url(path)).json(&serde_json::json!({ "name": "Ada" })),
    ];
    for request in requests {
        assert_step_up(request.header("cookie", &cookie).send().await.unwrap(), 600, elevate_url).await;
    }

    let cookie = elevate(&gw, &cookie, &app).await;
    let resp = client()
        .post(gw.url(path))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], path);
    assert_eq!(echo["body"], form, "the body arrives intact");
}

/// An elevation lasts `max_age` to the millisecond; then the person is asked once, and once
/// they confirm again they are through.
#[tokio::test]
async fn an_elevation_lasts_exactly_max_age_then_asks_once() {
    let gw = Setup::default().toml("[elevation]\nmax_age = \"5m\"").start();
    let max_age = Duration::from_secs(300);
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&gw, &cookie).await;
    let cookie = elevate(&gw, &cookie, &app).await;

    gw.clock.advance(max_age);
    assert_eq!(navigate(&gw, "/admin/reports", &cookie).await.status(), 200, "exactly max_age: still elevated");
    assert_eq!(get_json(&gw, "/.dalea/api/audit-log", &cookie).await.status(), 200);

    gw.clock.advance(ONE_MS);
    let prompt = navigate(&gw, "/admin/reports", &cookie).await;
    assert_eq!(prompt.status(), 303, "one millisecond more: asked to confirm");
    assert_eq!(prompt.headers()["location"], "/.dalea/elevate?rd=%2Fadmin%2Freports");
    assert_step_up(get_json(&gw, "/admin/reports", &cookie).await, 300, "/.dalea/elevate?rd=%2Fadmin%2Freports").await;
    let (status, v) = status_json(get_json(&gw, "/.dalea/api/audit-log", &cookie).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "{v}");

    let cookie = elevate(&gw, &cookie, &app).await;
    assert_eq!(navigate(&gw, "/admin/reports", &cookie).await.status(), 200, "confirmed again: through");
    assert_eq!(get_json(&gw, "/admin/reports", &cookie).await.status(), 200, "and not asked a second time");
    assert_eq!(get_json(&gw, "/.dalea/api/audit-log", &cookie).await.status(), 200);
}

/// `methods` on a route: only those methods need elevation; GET brings HEAD along; a route
/// with methods wins over one without on the same prefix, whatever the order in the file.
#[tokio::test]
async fn a_route_can_ask_for_elevation_for_some_methods_only() {
    let routes = "\
        [[routes]]\nname = \"reports\"\npath_prefix = \"/reports\"\nupstream = \"app\"\n\
        [[routes]]\nname = \"reports-changes\"\npath_prefix = \"/reports\"\nupstream = \"app\"\naccess = \"elevated\"\nmethods = [\"POST\", \"DELETE\"]\n\
        [[routes]]\nname = \"exports\"\npath_prefix = \"/exports\"\nupstream = \"app\"\naccess = \"elevated\"\nmethods = [\"GET\"]\n\
        [[routes]]\nname = \"exports-rest\"\npath_prefix = \"/exports\"\nupstream = \"app\"\n\
        [[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n";
    let gw = Setup::default().routes(routes).start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(MAX_AGE + ONE_MS); // the sign-in no longer counts as recent

    let status = |method: reqwest::Method, path: &'static str, cookie: String| {
        let request = client().request(method, gw.url(path)).header("cookie", cookie);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    use reqwest::Method;
    assert_eq!(status(Method::GET, "/reports/q1", cookie.clone()).await, 200);
    assert_eq!(status(Method::HEAD, "/reports/q1", cookie.clone()).await, 200);
    assert_eq!(status(Method::PUT, "/reports/q1", cookie.clone()).await, 200);
    assert_eq!(status(Method::POST, "/reports/q1", cookie.clone()).await, 401);
    assert_eq!(status(Method::DELETE, "/reports/q1", cookie.clone()).await, 401);
    assert_eq!(status(Method::GET, "/exports/all", cookie.clone()).await, 401);
    assert_eq!(status(Method::HEAD, "/exports/all", cookie.clone()).await, 401, "GET brings HEAD along");
    assert_eq!(status(Method::POST, "/exports/all", cookie.clone()).await, 200);

    let cookie = elevate_by_password(&gw, &cookie, PASSWORD).await;
    assert_eq!(status(Method::POST, "/reports/q1", cookie.clone()).await, 200);
    assert_eq!(status(Method::DELETE, "/reports/q1", cookie.clone()).await, 200);
    assert_eq!(status(Method::GET, "/exports/all", cookie.clone()).await, 200);
}

/// Codes are checked against the app of the session's own person.
#[tokio::test]
async fn nobody_elevates_with_someone_elses_code() {
    let gw = TestGateway::start();
    let demo = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let sam = sign_in(&gw, SAM_EMAIL, FIREFOX_WIN).await;
    let sam_app = enroll_totp(&gw, &sam).await;
    gw.clock.advance(MAX_AGE + ONE_MS);

    // Demo has no TOTP: Sam's code means nothing for Demo.
    let resp = elevate_with_code(&gw, &demo, &sam_app.next_code(&gw.clock)).await;
    assert!(session_cookie(&resp).is_none());
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert_eq!(get_json(&gw, "/admin", &demo).await.status(), 401);

    // Demo with an app of their own: Sam's code is still wrong for Demo.
    let demo = elevate_by_password(&gw, &demo, PASSWORD).await;
    let demo_app = enroll_totp(&gw, &demo).await;
    let mut code = sam_app.next_code(&gw.clock);
    while demo_app.matches_now(&gw.clock, &code) {
        code = sam_app.next_code(&gw.clock); // a one-in-a-million coincidence: wait it out
    }
    let resp = elevate_with_code(&gw, &demo, &code).await;
    assert!(session_cookie(&resp).is_none());
    let (status, v) = status_json(resp).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "{v}");
    assert_eq!(get_json(&gw, "/admin", &demo).await.status(), 401);
    let strength = current_session(&gw, &demo).await["auth_strength"].clone();
    assert_eq!(strength["elevated"], false, "{strength}");

    // Demo's attempt did not use Sam's code up, and Demo's own code works for Demo.
    let resp = elevate_with_code(&gw, &sam, &code).await;
    assert_eq!(resp.status(), 200, "Sam's code still works for Sam");
    let resp = elevate_with_code(&gw, &demo, &demo_app.code(&gw.clock)).await;
    assert_eq!(resp.status(), 200);
    let demo = session_cookie(&resp).unwrap();
    let (_, list) = sessions(&gw, &demo).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "Demo sees only Demo's session");
}

/// Two replicas on one Redis: a code used on one is refused on the other, the old token dies
/// on both, and wrong codes count against one limit however they are spread.
#[tokio::test(flavor = "multi_thread")]
async fn elevation_codes_and_their_limits_hold_across_replicas() {
    let redis = RedisServer::start();
    let clock = ManualClock::starting_now();
    let replica = || {
        Setup::default()
            .clock(clock.clone())
            .toml(&redis_toml(&redis))
            .toml("[rate_limit]\ntotp_per_account = 3\ntotp_per_network = 50")
            .start()
    };
    let r1 = replica();
    let r2 = replica();
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;

    let old = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&r2, &old).await;
    assert_eq!(get_json(&r2, "/app", &old).await.status(), 200, "replica 2 has the session cached");

    let code = app.next_code(&clock);
    let resp = elevate_with_code(&r1, &old, &code).await;
    assert_eq!(resp.status(), 200);
    let new = session_cookie(&resp).unwrap();
    let (status, v) = status_json(elevate_with_code(&r2, &new, &code).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "the code was used on replica 1: {v}");

    let rotated_at = Instant::now();
    while get_json(&r2, "/app", &old).await.status() != 401 {
        assert!(rotated_at.elapsed() < Duration::from_secs(2), "replica 2 still accepts the replaced token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream_strength(&r2, "/admin", &new).await, ["elevated:totp"]);
    assert_eq!(public_id(&r2, &new).await, public_id(&r1, &new).await);

    // The replayed code above was the first failed attempt; two more, one on each replica,
    // use up the limit of three.
    for gw in [&r1, &r2] {
        let (status, v) = status_json(elevate_with_code(gw, &new, &app.wrong_code(&clock)).await).await;
        assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "{v}");
    }
    for gw in [&r2, &r1] {
        let resp = elevate_with_code(gw, &new, &app.next_code(&clock)).await;
        assert_eq!(resp.status(), 429, "three failed codes on any replica use the limit up, even for a right code");
        assert!(resp.headers().get("retry-after").is_some());
    }
    let count = redis.command(&["GET", "dalea:t:{totp:a:demo}"]);
    assert_eq!(count.trim(), "3", "the counter lives in Redis");
}
