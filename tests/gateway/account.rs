//! The person's own account: changing the password, and the audit log of what happened to
//! their account (both sensitive: they need a recent re-authentication).

use std::time::Duration;

use crate::support::account::*;
use crate::support::*;

const MAX_AGE: Duration = Duration::from_secs(600);
const ONE_MS: Duration = Duration::from_millis(1);
const NEW_PASSWORD: &str = "correct horse battery staple";

async fn change_password(gw: &TestGateway, cookie: &str, current: &str, new: &str) -> reqwest::Response {
    post_json(
        gw,
        "/.dalea/api/password",
        cookie,
        serde_json::json!({ "current_password": current, "new_password": new }),
    )
    .await
}

async fn changing_the_password(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let other_device = sign_in(gw, DEMO_EMAIL, FIREFOX_WIN).await;

    let (status, v) = status_json(change_password(gw, &cookie, "not-my-password", NEW_PASSWORD).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_credentials")), "{v}");
    let (status, v) = status_json(change_password(gw, &cookie, PASSWORD, "short-pw1").await).await;
    assert_eq!(status, 400, "nine characters are too few: {v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("10")), "says how long: {v}");
    let body = serde_json::json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    let cross_site = client()
        .post(gw.url("/.dalea/api/password"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let not_json = client()
        .post(gw.url("/.dalea/api/password"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    assert_eq!(try_sign_in(gw, DEMO_EMAIL, PASSWORD).await.status(), 200, "nothing changed yet");

    let resp = change_password(gw, &cookie, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(resp.status(), 204);

    assert_eq!(try_sign_in(gw, DEMO_EMAIL, NEW_PASSWORD).await.status(), 200, "the new password signs in");
    assert_eq!(try_sign_in(gw, DEMO_EMAIL, PASSWORD).await.status(), 401, "the old one does not");
    // Nobody is signed out by it.
    assert_eq!(get_json(gw, "/app", &cookie).await.status(), 200);
    assert_eq!(get_json(gw, "/app", &other_device).await.status(), 200, "other sessions stay signed in");
    assert_eq!(try_sign_in(gw, SAM_EMAIL, PASSWORD).await.status(), 200, "Sam's password is untouched");
}

#[tokio::test]
async fn changing_the_password_embedded() {
    changing_the_password(Backend::Embedded).await;
}

#[tokio::test]
async fn changing_the_password_redis() {
    changing_the_password(Backend::Redis).await;
}

#[tokio::test]
async fn changing_the_password_needs_a_recent_re_authentication() {
    let gw = TestGateway::start();
    // Without TOTP: a sign-in older than max_age is not enough.
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(MAX_AGE + ONE_MS);
    let resp = change_password(&gw, &cookie, PASSWORD, NEW_PASSWORD).await;
    assert!(resp.headers().get("www-authenticate").is_some());
    let (status, v) = status_json(resp).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "{v}");
    assert_eq!(try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await.status(), 200, "the password did not change");

    let page = navigate(&gw, "/.dalea/settings/security/password", &cookie).await;
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/.dalea/elevate?rd=%2F.dalea%2Fsettings%2Fsecurity%2Fpassword");

    let cookie = elevate_by_password(&gw, &cookie, PASSWORD).await;
    let page = navigate(&gw, "/.dalea/settings/security/password", &cookie).await;
    assert_eq!(page.status(), 200);
    assert_eq!(change_password(&gw, &cookie, PASSWORD, NEW_PASSWORD).await.status(), 204);

    // With TOTP: even a brand-new sign-in needs a code first.
    let sam = sign_in(&gw, SAM_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&gw, &sam).await;
    let fresh = sign_in(&gw, SAM_EMAIL, FIREFOX_WIN).await;
    let (status, v) = status_json(change_password(&gw, &fresh, PASSWORD, NEW_PASSWORD).await).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "{v}");
    assert_eq!(navigate(&gw, "/.dalea/settings/security/password", &fresh).await.status(), 303);
    let fresh = elevate(&gw, &fresh, &app).await;
    assert_eq!(change_password(&gw, &fresh, PASSWORD, NEW_PASSWORD).await.status(), 204);
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, NEW_PASSWORD).await.status(), 200);
}

/// GET /.dalea/api/audit-log, asserting 200.
async fn audit_log(gw: &TestGateway, cookie: &str, query: &str) -> (String, serde_json::Value) {
    let resp = get_json(gw, &format!("/.dalea/api/audit-log{query}"), cookie).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (text, v)
}

/// The whole log, `limit` at a time, following `next_before`.
async fn audit_log_in_pages(gw: &TestGateway, cookie: &str, limit: usize) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    let mut query = format!("?limit={limit}");
    for _ in 0..100 {
        let (_, v) = audit_log(gw, cookie, &query).await;
        let page = v["events"].as_array().expect("events").clone();
        assert!(page.len() <= limit, "at most {limit} per page: {v}");
        events.extend(page);
        match v["next_before"].as_u64() {
            Some(before) => query = format!("?limit={limit}&before={before}"),
            None => {
                assert!(v["next_before"].is_null(), "{v}");
                return events;
            }
        }
    }
    panic!("the log never ended");
}

async fn the_audit_log_tells_what_happened_to_the_account(backend: Backend) {
    let bed = backend.start(Setup::default());
    let gw = &bed.gw;
    let tick = || gw.clock.advance(Duration::from_secs(1));

    assert_eq!(try_sign_in(gw, DEMO_EMAIL, "hunter2-guess").await.status(), 401);
    tick();
    let a = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let a_id = public_id(gw, &a).await;
    tick();
    let b = sign_in(gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let b_id = public_id(gw, &b).await;
    let sam = sign_in(gw, SAM_EMAIL, CHROME_MAC).await;
    tick();
    let resp =
        client().delete(gw.url(&format!("/.dalea/api/sessions/{b_id}"))).header("cookie", &a).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    tick();
    let (app, _) = start_enrolment(gw, &a).await;
    let confirm_code = app.code(&gw.clock);
    let resp = post_json(gw, "/.dalea/api/totp/confirm", &a, serde_json::json!({ "code": confirm_code })).await;
    assert_eq!(resp.status(), 204);
    gw.clock.advance(STEP);
    let wrong = app.wrong_code(&gw.clock);
    assert_eq!(elevate_with_code(gw, &a, &wrong).await.status(), 401);
    let right = app.next_code(&gw.clock);
    let resp = elevate_with_code(gw, &a, &right).await;
    assert_eq!(resp.status(), 200);
    let a = session_cookie(&resp).unwrap();
    tick();
    assert_eq!(change_password(gw, &a, PASSWORD, NEW_PASSWORD).await.status(), 204);
    tick();
    let c = sign_in_with(gw, NEW_PASSWORD).await;
    let c_id = public_id(gw, &c).await;
    let page = navigate(gw, "/.dalea/settings/security/sessions", &c).await;
    let token = hidden_input(&page.text().await.unwrap(), "csrf_token").expect("sign-out form token");
    let resp = client()
        .post(gw.url("/.dalea/signout"))
        .header("cookie", &c)
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    tick();
    let resp = client().delete(gw.url("/.dalea/api/totp")).header("cookie", &a).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    tick();
    // TOTP is off, so the password confirms it's you again.
    let a = elevate_by_password(gw, &a, NEW_PASSWORD).await;

    let (raw, v) = audit_log(gw, &a, "").await;
    let events = v["events"].as_array().expect("events").clone();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(
        types,
        [
            "elevation",
            "totp_disabled",
            "sign_out",
            "sign_in",
            "password_changed",
            "elevation",
            "elevation_failed",
            "totp_enrolled",
            "session_revoked",
            "sign_in",
            "sign_in",
            "sign_in_failed",
        ],
        "newest first, only Demo's: {v:#}"
    );
    assert!(v["next_before"].is_null(), "one page holds it all: {v}");

    // Every event says when, from where, from which session, and what.
    for e in &events {
        for key in ["id", "type", "at", "ip", "session_id", "description"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
        assert!(e["description"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
        let at = e["at"].as_str().expect("at is text");
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "RFC 3339: {at}");
    }
    for pair in events.windows(2) {
        assert!(pair[0]["id"].as_u64() > pair[1]["id"].as_u64(), "ids go down: {pair:?}");
        assert!(pair[0]["at"].as_str() >= pair[1]["at"].as_str(), "newest first: {pair:?}");
    }
    let by_session: Vec<Option<&str>> = events.iter().map(|e| e["session_id"].as_str()).collect();
    let (a_id, b_id, c_id) = (Some(a_id.as_str()), Some(b_id.as_str()), Some(c_id.as_str()));
    assert_eq!(by_session, [a_id, a_id, c_id, c_id, a_id, a_id, a_id, a_id, a_id, b_id, a_id, None], "{v:#}");
    assert_eq!(events[0]["method"], "password");
    assert_eq!(events[3]["method"], "password");
    assert_eq!(events[5]["method"], "totp");
    assert_eq!(events[6]["method"], "totp");
    assert_eq!(events[8]["revoked_session_id"], b_id.unwrap());

    // Never a secret: no password, no TOTP secret, no code.
    for secret in [PASSWORD, NEW_PASSWORD, "hunter2-guess", app.base32.as_str(), &confirm_code, &wrong, &right] {
        assert!(!raw.contains(secret), "the audit log contains {secret:?}: {raw}");
    }

    // Pages of two (or three) follow each other without gaps or repeats.
    for limit in [2, 3] {
        let paged = audit_log_in_pages(gw, &a, limit).await;
        let ids: Vec<_> = paged.iter().map(|e| e["id"].clone()).collect();
        let all: Vec<_> = events.iter().map(|e| e["id"].clone()).collect();
        assert_eq!(ids, all, "limit={limit}");
    }

    // Sam sees Sam's sign-in and nothing of Demo's.
    let (raw, v) = audit_log(gw, &sam, "").await;
    let types: Vec<&str> = v["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(types, ["sign_in"], "{v}");
    for id in [a_id, b_id, c_id].into_iter().flatten() {
        assert!(!raw.contains(id), "Sam's log mentions Demo's session {id}");
    }
}

/// Signs Demo in with `password` through the JSON API and returns the cookie.
async fn sign_in_with(gw: &TestGateway, password: &str) -> String {
    let resp = try_sign_in(gw, DEMO_EMAIL, password).await;
    assert_eq!(resp.status(), 200);
    session_cookie(&resp).unwrap()
}

#[tokio::test]
async fn the_audit_log_tells_what_happened_to_the_account_embedded() {
    the_audit_log_tells_what_happened_to_the_account(Backend::Embedded).await;
}

#[tokio::test]
async fn the_audit_log_tells_what_happened_to_the_account_redis() {
    the_audit_log_tells_what_happened_to_the_account(Backend::Redis).await;
}

#[tokio::test]
async fn the_audit_log_needs_a_recent_re_authentication() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    assert_eq!(get_json(&gw, "/.dalea/api/audit-log", &cookie).await.status(), 200, "a fresh sign-in passes");
    gw.clock.advance(MAX_AGE + ONE_MS);
    let resp = get_json(&gw, "/.dalea/api/audit-log", &cookie).await;
    assert!(resp.headers().get("www-authenticate").is_some());
    let (status, v) = status_json(resp).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "{v}");
    assert!(v.get("events").is_none());
    let page = navigate(&gw, "/.dalea/settings/security/audit-log", &cookie).await;
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/.dalea/elevate?rd=%2F.dalea%2Fsettings%2Fsecurity%2Faudit-log");
    assert_eq!(client().get(gw.url("/.dalea/api/audit-log")).send().await.unwrap().status(), 401);

    let cookie = elevate_by_password(&gw, &cookie, PASSWORD).await;
    let page = navigate(&gw, "/.dalea/settings/security/audit-log", &cookie).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Signed in"), "the page lists the sign-in");
}
