//! Setting up an authenticator app (TOTP) through the JSON API: enrolment, confirmation with a
//! first code, status, removal, who may do each, and how many wrong codes are allowed.

use std::time::Duration;

use dalea_gateway::clock::{rfc3339, Clock};

use crate::support::account::*;
use crate::support::*;

const MAX_AGE: Duration = Duration::from_secs(600);
const ONE_MS: Duration = Duration::from_millis(1);

async fn totp_status(gw: &TestGateway, cookie: &str) -> serde_json::Value {
    let (status, v) = status_json(get_json(gw, "/.dalea/api/totp", cookie).await).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn confirm(gw: &TestGateway, cookie: &str, code: &str) -> reqwest::Response {
    post_json(gw, "/.dalea/api/totp/confirm", cookie, serde_json::json!({ "code": code })).await
}

async fn setting_up_totp_shows_the_secret_once_and_a_first_code_turns_it_on(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    assert_eq!(totp_status(gw, &cookie).await, serde_json::json!({ "enabled": false, "enrolled_at": null }));

    let resp = post_json(gw, "/.dalea/api/totp/enroll", &cookie, serde_json::json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store", "the secret must not be cached");
    let v: serde_json::Value = resp.json().await.unwrap();
    let secret = v["secret"].as_str().expect("secret").to_string();
    assert!(secret.len() >= 26, "at least 128 bits: {secret}");
    assert!(secret.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)), "base32: {secret}");
    let uri = v["otpauth_uri"].as_str().expect("otpauth_uri");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let parsed = url::Url::parse(uri).expect("a URI");
    let params: Vec<(String, String)> = parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    for (key, value) in [("secret", secret.as_str()), ("algorithm", "SHA1"), ("digits", "6"), ("period", "30")] {
        assert!(params.iter().any(|(k, v)| k == key && v == value), "{key}={value} in {uri}");
    }
    let label = percent_encoding::percent_decode_str(parsed.path()).decode_utf8_lossy().into_owned();
    assert!(label.ends_with(DEMO_EMAIL), "the label names the account: {uri}");
    let app = Authenticator::from_base32(&secret);
    assert_eq!(totp_status(gw, &cookie).await["enabled"], false, "not on before a first code");

    // A wrong code: refused, and the set-up is still waiting.
    let (code, v) = status_json(confirm(gw, &cookie, &app.wrong_code(&gw.clock)).await).await;
    assert_eq!((code, v["error"].as_str()), (401, Some("invalid_code")), "{v}");
    assert_eq!(totp_status(gw, &cookie).await["enabled"], false);

    let resp = confirm(gw, &cookie, &app.code(&gw.clock)).await;
    assert_eq!(resp.status(), 204);
    let v = totp_status(gw, &cookie).await;
    assert_eq!(v["enabled"], true, "{v}");
    assert_eq!(v["enrolled_at"], rfc3339(gw.clock.now()), "{v}");
    assert!(!v.to_string().contains(&secret), "the secret is shown once only");

    // Confirming again is changing a second factor that is now on: it needs a code first.
    let (code, v) = status_json(confirm(gw, &cookie, &app.next_code(&gw.clock)).await).await;
    assert_eq!((code, v["error"].as_str()), (401, Some("elevation_required")), "{v}");
    // And the app it was set up with now confirms it's you.
    let cookie = elevate(gw, &cookie, &app).await;
    assert_eq!(get_json(gw, "/admin", &cookie).await.status(), 200);
}

#[tokio::test]
async fn setting_up_totp_shows_the_secret_once_and_a_first_code_turns_it_on_embedded() {
    setting_up_totp_shows_the_secret_once_and_a_first_code_turns_it_on(Backend::Embedded).await;
}

#[tokio::test]
async fn setting_up_totp_shows_the_secret_once_and_a_first_code_turns_it_on_redis() {
    setting_up_totp_shows_the_secret_once_and_a_first_code_turns_it_on(Backend::Redis).await;
}

#[tokio::test]
async fn confirming_with_no_set_up_in_progress_is_a_conflict() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let (status, v) = status_json(confirm(&gw, &cookie, "123456").await).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// The TOTP API wants a session, JSON, and a request from this site.
#[tokio::test]
async fn the_totp_api_needs_a_session_json_and_the_same_origin() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;

    let anonymous = client().post(gw.url("/.dalea/api/totp/enroll")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(client().get(gw.url("/.dalea/api/totp")).send().await.unwrap().status(), 401);

    let text = client()
        .post(gw.url("/.dalea/api/totp/enroll"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    // An empty POST (what a form elsewhere could send) starts nothing either.
    let empty = client().post(gw.url("/.dalea/api/totp/enroll")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(empty.status(), 415);

    let cross_site = client()
        .post(gw.url("/.dalea/api/totp/enroll"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    assert!(!cross_site.text().await.unwrap().contains("otpauth"), "no secret handed to another site");
    // Nothing was started by the refused requests.
    assert_eq!(confirm(&gw, &cookie, "123456").await.status(), 409);

    // Removal from another site is refused too (with TOTP on and a recent elevation).
    let app = enroll_totp(&gw, &cookie).await;
    let cookie = elevate(&gw, &cookie, &app).await;
    let resp = client()
        .delete(gw.url("/.dalea/api/totp"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (status, v) = status_json(get_json(&gw, "/.dalea/api/totp", &cookie).await).await;
    assert_eq!((status, v["enabled"].as_bool()), (200, Some(true)), "{v}");
}

/// Someone without TOTP may set it up within `max_age` of signing in; later they confirm with
/// the password first.
#[tokio::test]
async fn setting_up_totp_needs_a_recent_sign_in() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(MAX_AGE + ONE_MS);
    let (status, v) =
        status_json(post_json(&gw, "/.dalea/api/totp/enroll", &cookie, serde_json::json!({})).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "{v}");
    assert!(v.get("secret").is_none());

    let cookie = elevate_by_password(&gw, &cookie, PASSWORD).await;
    enroll_totp(&gw, &cookie).await;
    assert_eq!(totp_status(&gw, &cookie).await["enabled"], true);
}

/// With TOTP on, replacing or removing it needs a recent TOTP elevation; a recent sign-in is
/// not enough.
async fn replacing_or_removing_totp_needs_a_recent_elevation(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let old_app = enroll_totp(gw, &cookie).await;
    let fresh = sign_in(gw, DEMO_EMAIL, FIREFOX_WIN).await;
    for session in [&cookie, &fresh] {
        let (status, v) =
            status_json(post_json(gw, "/.dalea/api/totp/enroll", session, serde_json::json!({})).await).await;
        assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "re-enrol: {v}");
        assert!(v.get("secret").is_none());
        let resp = client().delete(gw.url("/.dalea/api/totp")).header("cookie", session).send().await.unwrap();
        let (status, v) = status_json(resp).await;
        assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "remove: {v}");
    }
    assert_eq!(totp_status(gw, &cookie).await["enabled"], true, "still on");

    // Elevated: a new app can replace the old one; until confirmed, the old one still works.
    let cookie = elevate(gw, &cookie, &old_app).await;
    let (new_app, _) = start_enrolment(gw, &cookie).await;
    assert_ne!(new_app.base32, old_app.base32);
    let resp = elevate_with_code(gw, &fresh, &old_app.next_code(&gw.clock)).await;
    assert_eq!(resp.status(), 200, "the old app still works while the new one is being set up");
    let fresh = session_cookie(&resp).unwrap();
    assert_eq!(confirm(gw, &cookie, &new_app.code(&gw.clock)).await.status(), 204);
    let (status, v) = status_json(elevate_with_code(gw, &fresh, &old_app.next_code(&gw.clock)).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "the replaced app is refused: {v}");

    // Removing it: 204, off, and its codes no longer confirm anything.
    let cookie = elevate(gw, &cookie, &new_app).await;
    let resp = client().delete(gw.url("/.dalea/api/totp")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(totp_status(gw, &cookie).await, serde_json::json!({ "enabled": false, "enrolled_at": null }));
    let resp = elevate_with_code(gw, &fresh, &new_app.next_code(&gw.clock)).await;
    assert!(session_cookie(&resp).is_none());
    assert!(resp.status().is_client_error(), "{}", resp.status());
    // Without TOTP again, the password confirms it's you.
    let fresh = elevate_by_password(gw, &fresh, PASSWORD).await;
    assert_eq!(get_json(gw, "/admin", &fresh).await.status(), 200);
}

#[tokio::test]
async fn replacing_or_removing_totp_needs_a_recent_elevation_embedded() {
    replacing_or_removing_totp_needs_a_recent_elevation(Backend::Embedded).await;
}

#[tokio::test]
async fn replacing_or_removing_totp_needs_a_recent_elevation_redis() {
    replacing_or_removing_totp_needs_a_recent_elevation(Backend::Redis).await;
}

/// Wrong codes are limited per account and per client network; past the limit even the right
/// code is refused until the window is over.
#[tokio::test]
async fn wrong_codes_are_limited_per_account_and_per_network() {
    let gw = Setup::default().toml("[rate_limit]\ntotp_per_account = 3\ntotp_per_network = 5").start();
    let demo = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let sam = sign_in(&gw, SAM_EMAIL, FIREFOX_WIN).await;
    let demo_app = enroll_totp(&gw, &demo).await;
    let sam_app = enroll_totp(&gw, &sam).await;
    gw.clock.advance(STEP);

    for _ in 0..3 {
        let (status, v) = status_json(elevate_with_code(&gw, &demo, &demo_app.wrong_code(&gw.clock)).await).await;
        assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "{v}");
    }
    for code in [demo_app.wrong_code(&gw.clock), demo_app.code(&gw.clock)] {
        let resp = elevate_with_code(&gw, &demo, &code).await;
        assert_eq!(resp.status(), 429, "the fourth attempt is refused, right or wrong");
        assert!(session_cookie(&resp).is_none());
        let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
        assert!((1..=900).contains(&retry), "within the 15-minute window: {retry}");
        let (_, v) = status_json(resp).await;
        assert_eq!(v["error"], "too_many_attempts", "{v}");
        assert!(v["message"].as_str().unwrap_or_default().contains("Try again"), "{v}");
    }
    assert_eq!(get_json(&gw, "/admin", &demo).await.status(), 401, "not elevated");

    // Sam's account has its own count, but the network has used 3 of its 5.
    for _ in 0..2 {
        let (status, v) = status_json(elevate_with_code(&gw, &sam, &sam_app.wrong_code(&gw.clock)).await).await;
        assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "{v}");
    }
    let resp = elevate_with_code(&gw, &sam, &sam_app.code(&gw.clock)).await;
    assert_eq!(resp.status(), 429, "this network's 5 wrong codes are used up");

    gw.clock.advance(Duration::from_secs(15 * 60));
    let demo = {
        let resp = elevate_with_code(&gw, &demo, &demo_app.code(&gw.clock)).await;
        assert_eq!(resp.status(), 200, "a new window");
        session_cookie(&resp).unwrap()
    };
    assert_eq!(get_json(&gw, "/admin", &demo).await.status(), 200);
    assert_eq!(elevate_with_code(&gw, &sam, &sam_app.code(&gw.clock)).await.status(), 200);
}

/// Guessing the first code of a set-up counts against the same limit.
#[tokio::test]
async fn wrong_codes_while_setting_up_are_limited_too() {
    let gw = Setup::default().toml("[rate_limit]\ntotp_per_account = 3").start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let (app, _) = start_enrolment(&gw, &cookie).await;
    for _ in 0..3 {
        assert_eq!(confirm(&gw, &cookie, &app.wrong_code(&gw.clock)).await.status(), 401);
    }
    let resp = confirm(&gw, &cookie, &app.code(&gw.clock)).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(totp_status(&gw, &cookie).await["enabled"], false);
}
