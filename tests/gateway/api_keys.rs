//! API keys for scripts and API clients (README "Scripts and API clients"): creating them (a
//! recent sign-in or confirmation, the key shown once), using them on routes with
//! `api_keys = true`, everything that refuses a key, their independence from sessions,
//! revocation across replicas, the audit log and the settings tab.

use std::time::Duration;

use dalea_gateway::api_keys::KeySecret;
use dalea_gateway::clock::{rfc3339, Clock};

use crate::support::account::*;
use crate::support::api_keys::*;
use crate::support::echo::seen;
use crate::support::redis::RedisServer;
use crate::support::*;

const MAX_AGE: Duration = Duration::from_secs(600);
const ONE_MS: Duration = Duration::from_millis(1);
const DAY: Duration = Duration::from_secs(86_400);
/// The activity flush interval is 1 s; a write may take one more interval.
const FLUSHED_WITHIN: Duration = Duration::from_secs(5);
const KEYS_PAGE: &str = "/.dalea/settings/security/api-keys";

// ---------------------------------------------------------------------------------------------
// Creating and listing

async fn creating_a_key_shows_it_once_and_the_list_never_does(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let (_, list) = list_keys(gw, &cookie).await;
    assert!(list.is_empty(), "no keys yet: {list:?}");

    let resp = create_key_with(gw, &cookie, serde_json::json!({ "name": "ci", "expires_in_days": 30 })).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "no-store", "the key must not be cached");
    let created_at = gw.clock.now();
    let v: serde_json::Value = resp.json().await.unwrap();
    let key = v["key"].as_str().expect("key").to_string();
    assert!(looks_like_a_key(&key), "dalea_ + 49 base62 characters: {key}");
    assert!(KeySecret::parse(&key).is_some(), "its checksum is right: {key}");
    let id = v["id"].as_str().expect("id").to_string();
    assert!(!id.is_empty() && !key.contains(&id), "a public id unrelated to the key: {v}");
    assert_eq!(v["name"], "ci");
    assert_eq!(v["prefix"], key[..10], "the prefix is the key's first 10 characters: {v}");
    assert_eq!(v["created_at"], rfc3339(created_at), "{v}");
    assert_eq!(v["expires_at"], rfc3339(created_at + 30 * 86_400_000), "30 days on: {v}");

    gw.clock.advance(Duration::from_secs(1));
    let forever = create_key(gw, &cookie, "backup script", None).await;
    assert!(forever.json["expires_at"].is_null(), "no expiry asked, none set: {}", forever.json);
    assert_ne!(forever.key, key, "every key is new");
    assert_ne!(forever.id, id);

    let (raw, list) = list_keys(gw, &cookie).await;
    assert_eq!(list.len(), 2, "{raw}");
    for secret in [&key, &forever.key] {
        assert!(!raw.contains(secret.as_str()), "the list contains a key: {raw}");
        assert!(!raw.contains(&secret[10..]), "the list contains more than the prefix: {raw}");
    }
    let ci = entry(&list, &id).expect("ci is listed");
    assert_eq!(ci["name"], "ci");
    assert_eq!(ci["prefix"], key[..10]);
    assert_eq!(ci["created_at"], rfc3339(created_at));
    assert_eq!(ci["expires_at"], v["expires_at"]);
    assert!(ci.get("last_used_at").is_some_and(|l| l.is_null()), "never used yet: {ci}");
    assert!(ci.get("key").is_none(), "{ci}");
    let backup = entry(&list, &forever.id).expect("the second key is listed");
    assert!(backup["expires_at"].is_null(), "{backup}");

    // Keys are per person.
    let sam = sign_in(gw, SAM_EMAIL, FIREFOX_WIN).await;
    let (raw, list) = list_keys(gw, &sam).await;
    assert!(list.is_empty(), "Sam sees none of Demo's keys: {raw}");
}

#[tokio::test]
async fn creating_a_key_shows_it_once_and_the_list_never_does_embedded() {
    creating_a_key_shows_it_once_and_the_list_never_does(Backend::Embedded).await;
}

#[tokio::test]
async fn creating_a_key_shows_it_once_and_the_list_never_does_redis() {
    creating_a_key_shows_it_once_and_the_list_never_does(Backend::Redis).await;
}

/// Names 1–100 characters, expiry 1–3650 days or none; JSON from this site with a session.
#[tokio::test]
async fn creating_a_key_checks_name_expiry_and_where_the_request_comes_from() {
    let gw = key_setup().start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let long = "n".repeat(101);
    for (body, what) in [
        (serde_json::json!({ "name": "" }), "an empty name"),
        (serde_json::json!({ "name": long }), "a 101-character name"),
        (serde_json::json!({ "name": "ci", "expires_in_days": 0 }), "0 days"),
        (serde_json::json!({ "name": "ci", "expires_in_days": 3651 }), "3651 days"),
    ] {
        let (status, v) = status_json(create_key_with(&gw, &cookie, body).await).await;
        assert_eq!(status, 400, "{what} is refused: {v}");
        assert!(v.get("key").is_none(), "{what}: {v}");
    }
    let (_, list) = list_keys(&gw, &cookie).await;
    assert!(list.is_empty(), "nothing was created: {list:?}");

    let anonymous =
        client().post(gw.url("/.dalea/api/api-keys")).json(&serde_json::json!({ "name": "ci" })).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let cross_site = client()
        .post(gw.url("/.dalea/api/api-keys"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({ "name": "ci" }))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let body = cross_site.text().await.unwrap();
    assert!(!body.contains("\"key\""), "no key handed to another site: {body}");
    let not_json = client()
        .post(gw.url("/.dalea/api/api-keys"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body(r#"{"name":"ci"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    let (_, list) = list_keys(&gw, &cookie).await;
    assert!(list.is_empty(), "the refused requests created nothing: {list:?}");

    // The limits themselves are allowed.
    let longest = create_key(&gw, &cookie, &"n".repeat(100), Some(3650)).await;
    assert_eq!(longest.json["name"], "n".repeat(100));
    create_key(&gw, &cookie, "one day", Some(1)).await;
}

/// Creating a key needs a sign-in or confirmation within `[elevation] max_age` (10 minutes).
async fn creating_a_key_needs_a_recent_sign_in_or_confirmation(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(MAX_AGE - Duration::from_secs(1));
    create_key(gw, &cookie, "just in time", None).await;

    gw.clock.advance(Duration::from_secs(1) + ONE_MS);
    let resp = create_key_with(gw, &cookie, serde_json::json!({ "name": "ci", "expires_in_days": 30 })).await;
    assert!(resp.headers().get("www-authenticate").is_some(), "a step-up challenge");
    let (status, v) = status_json(resp).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("elevation_required")), "{v}");
    assert!(v["elevate_url"].as_str().is_some(), "says where to confirm: {v}");
    assert!(v.get("key").is_none(), "{v}");
    let (_, list) = list_keys(gw, &cookie).await;
    assert_eq!(list.len(), 1, "no key was created: {list:?}");

    // Demo has no TOTP: the password confirms it's them.
    let cookie = elevate_by_password(gw, &cookie, PASSWORD).await;
    let created = create_key(gw, &cookie, "ci", Some(30)).await;
    assert!(key_works(gw, &created.key).await);
    let (_, list) = list_keys(gw, &cookie).await;
    assert_eq!(list.len(), 2);
}

#[tokio::test]
async fn creating_a_key_needs_a_recent_sign_in_or_confirmation_embedded() {
    creating_a_key_needs_a_recent_sign_in_or_confirmation(Backend::Embedded).await;
}

#[tokio::test]
async fn creating_a_key_needs_a_recent_sign_in_or_confirmation_redis() {
    creating_a_key_needs_a_recent_sign_in_or_confirmation(Backend::Redis).await;
}

// ---------------------------------------------------------------------------------------------
// Using a key

async fn a_script_calls_an_api_route_with_its_key(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let ci = create_key(gw, &cookie, "ci", Some(30)).await;

    gw.clock.advance(Duration::from_secs(90));
    let used_at = gw.clock.now();
    let resp = client()
        .get(gw.url("/api/reports?year=2026"))
        .header("authorization", format!("Bearer {}", ci.key))
        // A script cannot claim to be someone else.
        .header("x-dalea-user", "sam")
        .header("x-dalea-auth-method", "password")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the key is taken without any cookie");
    assert!(session_cookie(&resp).is_none(), "a key never starts a session");
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["path"], "/api/reports?year=2026");
    assert_eq!(seen(&echo, "x-dalea-user"), ["demo"], "{echo}");
    assert_eq!(seen(&echo, "x-dalea-email"), [DEMO_EMAIL], "{echo}");
    assert_eq!(seen(&echo, "x-dalea-auth-method"), ["api_key"], "{echo}");
    assert_eq!(seen(&echo, "x-dalea-api-key"), [ci.id.as_str()], "{echo}");
    assert_eq!(seen(&echo, "x-dalea-auth-strength"), ["basic"], "{echo}");
    assert!(seen(&echo, "x-dalea-session").is_empty(), "no session behind a key: {echo}");
    assert!(seen(&echo, "authorization").is_empty(), "the key never reaches the upstream: {echo}");
    assert!(!echo.to_string().contains(&ci.key), "the key never reaches the upstream: {echo}");

    // Scripts write too.
    let resp = client()
        .post(gw.url("/api/reports"))
        .header("authorization", format!("bearer {}", ci.key))
        .json(&serde_json::json!({ "title": "Q3" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a POST with the key (lower-case scheme)");
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], r#"{"title":"Q3"}"#);
    assert_eq!(seen(&echo, "x-dalea-api-key"), [ci.id.as_str()]);
    assert!(seen(&echo, "authorization").is_empty(), "{echo}");

    // The last use (time and IP) is written by the activity flusher, not just held in memory.
    let written = eventually(FLUSHED_WITHIN, || async {
        stored_key(gw, "demo", &ci.id).await.is_some_and(|k| k.last_used_at.is_some())
    })
    .await;
    assert!(written, "the key's last use was not written to the store within {FLUSHED_WITHIN:?}");
    let stored = stored_key(gw, "demo", &ci.id).await.unwrap();
    assert_eq!(stored.last_used_at, Some(used_at), "the time of the last use");
    assert_eq!(stored.last_ip.map(|ip| ip.to_string()).as_deref(), Some("127.0.0.1"));
    let (_, list) = list_keys(gw, &cookie).await;
    let listed = entry(&list, &ci.id).unwrap();
    assert_eq!(listed["last_used_at"], rfc3339(used_at), "{listed}");
    assert_eq!(listed["last_ip"], "127.0.0.1", "{listed}");
}

#[tokio::test]
async fn a_script_calls_an_api_route_with_its_key_embedded() {
    a_script_calls_an_api_route_with_its_key(Backend::Embedded).await;
}

#[tokio::test]
async fn a_script_calls_an_api_route_with_its_key_redis() {
    a_script_calls_an_api_route_with_its_key(Backend::Redis).await;
}

/// Only `Bearer dalea_…` is the gateway's: the app's own tokens pass through untouched and
/// start no key handling.
#[tokio::test]
async fn the_apps_own_bearer_tokens_pass_through_untouched() {
    let gw = key_setup().start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    for path in ["/api/reports", "/app/reports"] {
        let resp = client()
            .get(gw.url(path))
            .header("cookie", &cookie)
            .header("authorization", "Bearer some-app-jwt")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(seen(&echo, "authorization"), ["Bearer some-app-jwt"], "{path}: {echo}");
        assert_eq!(seen(&echo, "x-dalea-auth-method"), ["password"], "{path}: the session decides: {echo}");
        assert_eq!(seen(&echo, "x-dalea-session").len(), 1, "{path}: {echo}");
        assert!(seen(&echo, "x-dalea-api-key").is_empty(), "{path}: {echo}");
    }
    let basic = client()
        .get(gw.url("/api/reports"))
        .header("cookie", &cookie)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = basic.json().await.unwrap();
    assert_eq!(seen(&echo, "authorization"), ["Basic dXNlcjpwYXNz"], "{echo}");

    // Without a session an app token is just an anonymous request: sign in, not a key error.
    let resp =
        client().get(gw.url("/api/reports")).header("authorization", "Bearer some-app-jwt").send().await.unwrap();
    let refusal = Refusal::of(resp).await;
    refusal.assert_401("signin_required", "an app token without a session");
    assert!(
        refusal.www_authenticate.as_deref().is_none_or(|w| !w.contains("invalid_token")),
        "not treated as a bad key: {:?}",
        refusal.www_authenticate
    );
    // On a public route it goes through untouched.
    let resp = client().get(gw.url("/public/x")).header("authorization", "Bearer some-app-jwt").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen(&echo, "authorization"), ["Bearer some-app-jwt"], "{echo}");
}

/// With a key, the key's own `Authorization` value stays inside and the app's other one goes on.
#[tokio::test]
async fn only_the_keys_authorization_value_is_kept_from_the_upstream() {
    let gw = key_setup().start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let key = create_key(&gw, &cookie, "both", None).await;
    let resp = client()
        .get(gw.url("/api/reports"))
        .header("authorization", format!("Bearer {}", key.key))
        .header("authorization", "Basic YXBwOnRva2Vu")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen(&echo, "authorization"), ["Basic YXBwOnRva2Vu"], "{echo}");
    assert_eq!(seen(&echo, "x-dalea-auth-method"), ["api_key"], "{echo}");
    assert!(!echo.to_string().contains(&key.key), "the key never reaches the upstream: {echo}");
}

/// Anyone can make up a well-formed key; one planted in a cookie must not lock the browser
/// out (a real key there is refused, as the refusal tests show).
#[tokio::test]
async fn a_made_up_key_in_a_cookie_locks_no_one_out() {
    let gw = key_setup().start();
    let session = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let planted = format!("{session}; junk={}", KeySecret::generate().expose());
    for path in ["/public/x", "/app/x", "/.dalea/api/sessions", "/.dalea/signin"] {
        let resp = client().get(gw.url(path)).header("cookie", &planted).send().await.unwrap();
        assert!(matches!(resp.status().as_u16(), 200 | 303), "{path}: {}", resp.status());
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals

/// Every bad key, or a key in the wrong place, is a 401 with its own `error`, and nothing
/// else changes: the good key and the session keep working.
async fn bad_or_misplaced_keys_are_refused_and_change_nothing(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let good = create_key(gw, &cookie, "ci", Some(30)).await;
    let revoked = create_key(gw, &cookie, "old laptop", Some(30)).await;
    assert!(key_works(gw, &revoked.key).await, "it worked before it was revoked");
    assert_eq!(revoke_key(gw, &cookie, &revoked.id).await, 204);

    let mut altered = good.key.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = KeySecret::generate();
    let bearer = |key: &str| format!("Bearer {key}");

    // Bad keys on a route that accepts keys.
    for (key, what) in [
        ("dalea_abc", "a truncated key"),
        (altered.as_str(), "a key with a wrong checksum"),
        (unknown.expose(), "a well-formed key never issued"),
        (revoked.key.as_str(), "a revoked key"),
    ] {
        let resp = client().get(gw.url("/api/reports")).header("authorization", bearer(key)).send().await.unwrap();
        let refusal = Refusal::of(resp).await;
        refusal.assert_401("invalid_api_key", what);
        let challenge = refusal.www_authenticate.as_deref().unwrap_or_default();
        assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{what}: WWW-Authenticate {challenge:?}");
        assert!(!refusal.raw.contains(key), "{what}: the answer repeats the key: {}", refusal.raw);
        assert!(key_works(gw, &good.key).await, "after {what}, the good key still works");
    }

    // A good key where keys are not accepted.
    for path in ["/app/reports", "/public/x", "/admin/users"] {
        let refusal = Refusal::of(get_with_key(gw, path, &good.key).await).await;
        refusal.assert_401("api_key_not_accepted", path);
    }
    // An elevated route refuses a key even when an elevated session comes along with it.
    let elevated = elevate_by_password(gw, &cookie, PASSWORD).await;
    assert_eq!(get_json(gw, "/admin/users", &elevated).await.status(), 200, "the session alone passes");
    let resp = client()
        .get(gw.url("/admin/users"))
        .header("cookie", &elevated)
        .header("authorization", bearer(&good.key))
        .send()
        .await
        .unwrap();
    Refusal::of(resp).await.assert_401("api_key_not_accepted", "a key with an elevated session on /admin");

    // A key in a cookie or the query string: refused as leaked, also with a good session.
    let in_cookie = client().get(gw.url("/api/reports")).header("cookie", format!("k={}", good.key)).send().await;
    Refusal::of(in_cookie.unwrap()).await.assert_401("api_key_misplaced", "a key as a cookie");
    let with_session = format!("{elevated}; k={}", good.key);
    let in_cookie = client().get(gw.url("/app/home")).header("cookie", with_session).send().await;
    Refusal::of(in_cookie.unwrap()).await.assert_401("api_key_misplaced", "a key as a cookie beside a session");
    let in_query = client().get(gw.url(&format!("/api/reports?api_key={}", good.key))).send().await;
    let refusal = Refusal::of(in_query.unwrap()).await;
    refusal.assert_401("api_key_misplaced", "a key in the query string");
    assert!(!refusal.raw.contains(&good.key), "the answer repeats the key: {}", refusal.raw);
    let in_query =
        client().get(gw.url(&format!("/app/x?page=2&token={}", good.key))).header("cookie", &elevated).send().await;
    Refusal::of(in_query.unwrap()).await.assert_401("api_key_misplaced", "a key in the query beside a session");

    // Nothing changed: the key, the session and the list are as they were.
    assert!(key_works(gw, &good.key).await);
    assert!(!key_works(gw, &revoked.key).await);
    assert_eq!(get_json(gw, "/app/home", &elevated).await.status(), 200, "the session still works");
    let (_, list) = list_keys(gw, &elevated).await;
    let ids: Vec<&str> = list.iter().filter_map(|k| k["id"].as_str()).collect();
    assert_eq!(ids, [good.id.as_str()], "only the good key is left: {list:?}");
}

#[tokio::test]
async fn bad_or_misplaced_keys_are_refused_and_change_nothing_embedded() {
    bad_or_misplaced_keys_are_refused_and_change_nothing(Backend::Embedded).await;
}

#[tokio::test]
async fn bad_or_misplaced_keys_are_refused_and_change_nothing_redis() {
    bad_or_misplaced_keys_are_refused_and_change_nothing(Backend::Redis).await;
}

/// A key can never list, create or revoke keys or sessions: the gateway's own API refuses it,
/// with or without a session cookie beside it.
#[tokio::test]
async fn the_gateways_own_api_never_accepts_a_key() {
    let gw = key_setup().start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let key = create_key(&gw, &cookie, "ci", Some(30)).await;
    let session_id = public_id(&gw, &cookie).await;
    let bearer = format!("Bearer {}", key.key);

    let requests = [
        ("GET /.dalea/api/sessions", client().get(gw.url("/.dalea/api/sessions"))),
        ("GET /.dalea/api/api-keys", client().get(gw.url("/.dalea/api/api-keys"))),
        (
            "POST /.dalea/api/api-keys",
            client().post(gw.url("/.dalea/api/api-keys")).json(&serde_json::json!({ "name": "more" })),
        ),
        ("DELETE /.dalea/api/api-keys/{id}", client().delete(gw.url(&format!("/.dalea/api/api-keys/{}", key.id)))),
        ("DELETE /.dalea/api/sessions/{id}", client().delete(gw.url(&format!("/.dalea/api/sessions/{session_id}")))),
        ("GET /.dalea/api/audit-log", client().get(gw.url("/.dalea/api/audit-log"))),
    ];
    for (what, request) in requests {
        let refusal =
            Refusal::of(request.try_clone().unwrap().header("authorization", &bearer).send().await.unwrap()).await;
        refusal.assert_401("api_key_not_accepted", what);
        // With the person's own session cookie beside it the key still decides.
        let with_cookie = request.header("authorization", &bearer).header("cookie", &cookie).send().await.unwrap();
        Refusal::of(with_cookie).await.assert_401("api_key_not_accepted", &format!("{what} with a session cookie"));
    }

    // Nothing was listed, created or revoked.
    let (_, list) = list_keys(&gw, &cookie).await;
    assert_eq!(list.len(), 1, "no key was created or revoked: {list:?}");
    assert!(key_works(&gw, &key.key).await);
    assert_eq!(sessions(&gw, &cookie).await.0, 200, "the session was not revoked");
}

/// The gateway's own pages refuse a key the same way: 401 JSON with the specific `error` and
/// nothing else (not the sign-in redirect a page gives a signed-out visitor, which would clear a
/// browser's session cookie, loop on the sign-in page, or copy a leaked key into `Location`).
#[tokio::test]
async fn the_gateways_own_pages_never_accept_a_key() {
    let gw = key_setup().start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let key = create_key(&gw, &cookie, "ci", Some(30)).await;
    let bearer = format!("Bearer {}", key.key);

    let sessions_page = "/.dalea/settings/security/sessions";
    let leaked = format!("{sessions_page}?api_key={}", key.key);
    let cases = [
        (
            "GET the sessions page with a key",
            client().get(gw.url(sessions_page)).header("authorization", &bearer),
            "api_key_not_accepted",
        ),
        (
            "GET the sessions page with a key and a session cookie",
            client().get(gw.url(sessions_page)).header("authorization", &bearer).header("cookie", &cookie),
            "api_key_not_accepted",
        ),
        (
            "GET the API keys tab with a key and a session cookie",
            client().get(gw.url(KEYS_PAGE)).header("authorization", &bearer).header("cookie", &cookie),
            "api_key_not_accepted",
        ),
        (
            "GET the sign-in page with a key",
            client().get(gw.url("/.dalea/signin")).header("authorization", &bearer),
            "api_key_not_accepted",
        ),
        (
            "GET the sessions page with a key in the query string",
            client().get(gw.url(&leaked)).header("cookie", &cookie),
            "api_key_misplaced",
        ),
        (
            "POST the API keys form with a key",
            client().post(gw.url(KEYS_PAGE)).header("authorization", &bearer).form(&[
                ("csrf_token", "x"),
                ("name", "more"),
                ("expires_in_days", "never"),
            ]),
            "api_key_not_accepted",
        ),
    ];
    // Every case is tried, and every disagreement reported at once.
    let mut problems = Vec::new();
    for (what, request, code) in cases {
        let resp = request.send().await.unwrap();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let refusal = Refusal::of(resp).await;
        if refusal.status != 401 || refusal.json["error"] != code {
            problems.push(format!(
                "{what}: expected 401 {code}, got {} error={} location={location:?} set-cookie={:?}",
                refusal.status, refusal.json["error"], refusal.set_cookies
            ));
        }
        if !refusal.set_cookies.is_empty() {
            problems.push(format!("{what}: nothing else may change, but it sets {:?}", refusal.set_cookies));
        }
        if refusal.raw.contains(&key.key) || location.as_deref().is_some_and(|l| l.contains(&key.key)) {
            problems.push(format!("{what}: the answer repeats the key (location {location:?})"));
        }
    }
    let (_, list) = list_keys(&gw, &cookie).await;
    assert_eq!(list.len(), 1, "no key was created: {list:?}");
    assert_eq!(sessions(&gw, &cookie).await.0, 200, "the session still works");
    assert!(problems.is_empty(), "the gateway's own pages and a key:\n{}", problems.join("\n"));
}

/// A key expires `expires_in_days` after it was created.
async fn an_expired_key_is_refused(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let short = create_key(gw, &cookie, "one day", Some(1)).await;
    let forever = create_key(gw, &cookie, "forever", None).await;

    gw.clock.advance(DAY - Duration::from_secs(1));
    assert!(key_works(gw, &short.key).await, "a second before it expires it still works");
    gw.clock.advance(Duration::from_secs(1));
    let refusal = Refusal::of(get_with_key(gw, "/api/reports", &short.key).await).await;
    refusal.assert_401("invalid_api_key", "an expired key");
    let message = refusal.json["message"].as_str().unwrap_or_default();
    assert!(message.to_lowercase().contains("expired"), "the message says it expired: {message}");
    assert!(
        refusal.www_authenticate.as_deref().is_some_and(|w| w.starts_with("Bearer error=\"invalid_token\"")),
        "{:?}",
        refusal.www_authenticate
    );

    gw.clock.advance(Duration::from_secs(3600));
    assert!(!key_works(gw, &short.key).await, "and stays refused");
    assert!(key_works(gw, &forever.key).await, "a key without expiry goes on working");
    assert_eq!(get_json(gw, "/app/home", &cookie).await.status(), 200, "the session is untouched");
    let (_, list) = list_keys(gw, &cookie).await;
    let listed = entry(&list, &short.id).expect("an expired key is still listed");
    assert_eq!(listed["expires_at"], short.json["expires_at"], "{listed}");
}

#[tokio::test]
async fn an_expired_key_is_refused_embedded() {
    an_expired_key_is_refused(Backend::Embedded).await;
}

#[tokio::test]
async fn an_expired_key_is_refused_redis() {
    an_expired_key_is_refused(Backend::Redis).await;
}

/// `api_keys = true` on an elevated route is a configuration error naming the key.
#[tokio::test]
async fn api_keys_on_an_elevated_route_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.toml"),
        format!(
            "[[users]]\nid = \"demo\"\nemail = \"{DEMO_EMAIL}\"\ndisplay_name = \"Demo\"\npassword_hash = \"{HASH}\"\n"
        ),
    )
    .unwrap();
    let config = |admin_keys: &str| {
        format!(
            "[store]\npath = \"data\"\n[users]\nfile = \"users.toml\"\n\
             [[upstreams]]\nname = \"app\"\naddress = \"127.0.0.1:9\"\n\
             [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"app\"\napi_keys = true\n\
             [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\naccess = \"elevated\"\n{admin_keys}\
             [[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n"
        )
    };
    let load = |text: &str| dalea_gateway::config::Config::from_toml_str(text, dir.path(), &[], &Default::default());

    let err = load(&config("api_keys = true\n")).expect_err("api_keys on an elevated route must be refused");
    assert_eq!(err.key, "routes[1].api_keys", "{err:?}");
    assert!(load(&config("")).is_ok(), "the same config without it loads");
    assert!(load(&config("api_keys = false\n")).is_ok(), "api_keys = false is fine anywhere");

    // The binary's check-config says the same.
    let check = |text: String| {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dalea-gateway"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DALEA__") {
                cmd.env_remove(name);
            }
        }
        cmd.env_remove("RUST_LOG").args(["check-config", "--config"]).arg(&path).output().expect("run check-config")
    };
    let out = check(config("api_keys = true\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check-config must fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("routes[1].api_keys"), "names the key: {stderr}");
    let out = check(config(""));
    assert!(out.status.success(), "without it check-config passes: {}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------------------------
// Keys beside sessions

/// With a session cookie and a key in one request, the key decides; a bad key is not rescued
/// by a good cookie.
async fn with_a_key_and_a_session_cookie_the_key_decides(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let demo = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let key = create_key(gw, &demo, "ci", Some(30)).await;
    let sam = sign_in(gw, SAM_EMAIL, FIREFOX_WIN).await;
    let with_both = || {
        client()
            .get(gw.url("/api/reports"))
            .header("cookie", &sam)
            .header("authorization", format!("Bearer {}", key.key))
    };

    let resp = with_both().send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen(&echo, "x-dalea-user"), ["demo"], "the key's person, not the cookie's: {echo}");
    assert_eq!(seen(&echo, "x-dalea-auth-method"), ["api_key"], "{echo}");
    assert_eq!(seen(&echo, "x-dalea-api-key"), [key.id.as_str()], "{echo}");
    assert!(seen(&echo, "x-dalea-session").is_empty(), "{echo}");
    assert!(
        seen(&echo, "cookie").iter().all(|c| !c.contains("dalea_session")),
        "the session cookie is still stripped: {echo}"
    );
    assert!(seen(&echo, "authorization").is_empty(), "{echo}");

    // On a route without api_keys the key is refused too, cookie or not.
    let resp = client()
        .get(gw.url("/app/home"))
        .header("cookie", &sam)
        .header("authorization", format!("Bearer {}", key.key))
        .send()
        .await
        .unwrap();
    Refusal::of(resp).await.assert_401("api_key_not_accepted", "a key with a cookie on a route without api_keys");

    assert_eq!(revoke_key(gw, &demo, &key.id).await, 204);
    let refusal = Refusal::of(with_both().send().await.unwrap()).await;
    refusal.assert_401("invalid_api_key", "a revoked key with a valid cookie");
    assert!(refusal.set_cookies.is_empty(), "the session is left alone: {:?}", refusal.set_cookies);
    assert_eq!(get_json(gw, "/api/reports", &sam).await.status(), 200, "the cookie alone still works");
}

#[tokio::test]
async fn with_a_key_and_a_session_cookie_the_key_decides_embedded() {
    with_a_key_and_a_session_cookie_the_key_decides(Backend::Embedded).await;
}

#[tokio::test]
async fn with_a_key_and_a_session_cookie_the_key_decides_redis() {
    with_a_key_and_a_session_cookie_the_key_decides(Backend::Redis).await;
}

/// The sign-out form of the session behind `cookie` (CSRF token from the sessions page).
async fn sign_out(gw: &TestGateway, cookie: &str) {
    let page = navigate(gw, "/.dalea/settings/security/sessions", cookie).await;
    let token = hidden_input(&page.text().await.unwrap(), "csrf_token").expect("sign-out form token");
    let resp = client()
        .post(gw.url("/.dalea/signout"))
        .header("cookie", cookie)
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "signed out");
}

/// Revoking sessions leaves keys working; revoking a key leaves sessions (and other keys)
/// alone; nobody can revoke someone else's key.
async fn keys_and_sessions_are_independent(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let laptop = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let ci = create_key(gw, &laptop, "ci", Some(30)).await;
    let backup = create_key(gw, &laptop, "backup", None).await;
    assert!(key_works(gw, &ci.key).await);

    // Every session goes: one revoked from another, that one signed out.
    let desktop = sign_in(gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let laptop_id = public_id(gw, &laptop).await;
    let resp = client()
        .delete(gw.url(&format!("/.dalea/api/sessions/{laptop_id}")))
        .header("cookie", &desktop)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(get_json(gw, "/app/home", &laptop).await.status(), 401, "the laptop is signed out");
    assert!(key_works(gw, &ci.key).await, "the key outlives the session that created it");
    sign_out(gw, &desktop).await;
    assert_eq!(get_json(gw, "/app/home", &desktop).await.status(), 401, "the desktop is signed out");
    assert!(key_works(gw, &ci.key).await, "the key works with no session left");
    assert!(key_works(gw, &backup.key).await);

    // Revoking a key: 204, then 404; the session and the other key carry on.
    let phone = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let (_, list) = list_keys(gw, &phone).await;
    assert_eq!(list.len(), 2, "the keys are still listed: {list:?}");
    assert_eq!(revoke_key(gw, &phone, &ci.id).await, 204);
    assert!(!key_works(gw, &ci.key).await, "a revoked key is refused at once");
    assert_eq!(revoke_key(gw, &phone, &ci.id).await, 404, "already revoked");
    assert_eq!(revoke_key(gw, &phone, "no-such-key").await, 404);
    assert!(key_works(gw, &backup.key).await, "the other key still works");
    assert_eq!(get_json(gw, "/app/home", &phone).await.status(), 200, "the session is untouched");
    let (status, v) = sessions(gw, &phone).await;
    assert_eq!((status, v["sessions"].as_array().map(Vec::len)), (200, Some(1)), "{v}");
    let (_, list) = list_keys(gw, &phone).await;
    let ids: Vec<&str> = list.iter().filter_map(|k| k["id"].as_str()).collect();
    assert_eq!(ids, [backup.id.as_str()], "{list:?}");

    // Someone else's key: 404, and it goes on working.
    let sam = sign_in(gw, SAM_EMAIL, FIREFOX_WIN).await;
    let sams = create_key(gw, &sam, "sam's script", None).await;
    assert_eq!(revoke_key(gw, &phone, &sams.id).await, 404, "Demo cannot revoke Sam's key");
    assert!(key_works(gw, &sams.key).await, "Sam's key still works");
    let (_, list) = list_keys(gw, &sam).await;
    assert!(entry(&list, &sams.id).is_some(), "still in Sam's list: {list:?}");

    // A cross-site revoke is refused.
    let resp = client()
        .delete(gw.url(&format!("/.dalea/api/api-keys/{}", backup.id)))
        .header("cookie", &phone)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(key_works(gw, &backup.key).await);
}

#[tokio::test]
async fn keys_and_sessions_are_independent_embedded() {
    keys_and_sessions_are_independent(Backend::Embedded).await;
}

#[tokio::test]
async fn keys_and_sessions_are_independent_redis() {
    keys_and_sessions_are_independent(Backend::Redis).await;
}

/// A key stops working with its person when they leave the users file (no restart).
#[tokio::test]
async fn a_key_ends_with_its_person() {
    let gw = key_setup().start();
    let demo = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let sam = sign_in(&gw, SAM_EMAIL, CHROME_MAC).await;
    let demos = create_key(&gw, &demo, "ci", Some(30)).await;
    let sams = create_key(&gw, &sam, "sam's script", Some(30)).await;
    assert!(key_works(&gw, &sams.key).await, "cached before Sam leaves");

    let original = std::fs::read_to_string(&gw.users_file).unwrap();
    let without_sam =
        original.split("[[users]]").filter(|u| !u.contains(SAM_EMAIL)).collect::<Vec<_>>().join("[[users]]");
    assert_ne!(without_sam, original);
    std::fs::write(&gw.users_file, without_sam).unwrap();
    let refused = eventually(Duration::from_secs(6), || async { !key_works(&gw, &sams.key).await }).await;
    assert!(refused, "Sam's key still works after Sam left the users file");
    Refusal::of(get_with_key(&gw, "/api/reports", &sams.key).await).await.assert_401("invalid_api_key", "Sam left");
    assert!(key_works(&gw, &demos.key).await, "Demo's key is unaffected");
}

// ---------------------------------------------------------------------------------------------
// Replicas

/// A key revoked on one replica is refused on the other within moments, even though that one
/// had it cached; its last use on one replica shows in the other's list after a flush.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_stops_working_on_every_replica() {
    let redis = RedisServer::start();
    let r1 = key_setup().toml(&redis_toml(&redis)).start();
    let r2 = key_setup().toml(&redis_toml(&redis)).start();
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;
    let cookie = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;

    // Used through replica 2 only: replica 1 learns of it from the store.
    let used = create_key(&r1, &cookie, "used on r2", Some(30)).await;
    r2.clock.advance(Duration::from_secs(5));
    let used_at = r2.clock.now();
    assert!(key_works(&r2, &used.key).await);
    let shown = eventually(FLUSHED_WITHIN, || async {
        let (_, list) = list_keys(&r1, &cookie).await;
        entry(&list, &used.id).is_some_and(|k| !k["last_used_at"].is_null())
    })
    .await;
    assert!(shown, "replica 1's list never showed the use on replica 2");
    let (_, list) = list_keys(&r1, &cookie).await;
    let listed = entry(&list, &used.id).unwrap();
    assert_eq!(listed["last_used_at"], rfc3339(used_at), "{listed}");
    assert_eq!(listed["last_ip"], "127.0.0.1", "{listed}");

    let mut latencies = Vec::new();
    for i in 0..5 {
        let key = create_key(&r1, &cookie, &format!("script {i}"), Some(30)).await;
        for _ in 0..3 {
            assert!(key_works(&r2, &key.key).await, "replica 2 takes the key (and caches it)");
        }
        assert_eq!(revoke_key(&r1, &cookie, &key.id).await, 204);
        let revoked_at = std::time::Instant::now();
        assert!(!key_works(&r1, &key.key).await, "replica 1 refuses it at once");
        let refused = eventually(Duration::from_secs(2), || async { !key_works(&r2, &key.key).await }).await;
        assert!(refused, "replica 2 still accepts the revoked key after 2 s");
        latencies.push(revoked_at.elapsed());
        Refusal::of(get_with_key(&r2, "/api/reports", &key.key).await).await.assert_401("invalid_api_key", "r2");
        assert_eq!(revoke_key(&r2, &cookie, &key.id).await, 404, "gone on replica 2 too");
    }
    latencies.sort();
    eprintln!("API key revocation across replicas: max {:?}", latencies[latencies.len() - 1]);
    assert!(key_works(&r2, &used.key).await, "the other key is untouched");
}

// ---------------------------------------------------------------------------------------------
// Audit log

async fn creating_and_revoking_keys_are_in_the_audit_log(backend: Backend) {
    let bed = backend.start(key_setup());
    let gw = &bed.gw;
    let cookie = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let session_id = public_id(gw, &cookie).await;
    gw.clock.advance(Duration::from_secs(1));
    let key = create_key(gw, &cookie, "ci", Some(30)).await;
    gw.clock.advance(Duration::from_secs(1));
    assert!(key_works(gw, &key.key).await);
    assert_eq!(revoke_key(gw, &cookie, &key.id).await, 204);
    let sam = sign_in(gw, SAM_EMAIL, FIREFOX_WIN).await;

    let resp = get_json(gw, "/.dalea/api/audit-log", &cookie).await;
    assert_eq!(resp.status(), 200, "a fresh sign-in without TOTP may read the log");
    let raw = resp.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let events = v["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(types, ["api_key_revoked", "api_key_created", "sign_in"], "newest first: {v:#}");
    for e in &events[..2] {
        assert_eq!(e["key_id"], key.id, "{e}");
        assert_eq!(e["name"], "ci", "{e}");
        assert_eq!(e["session_id"], session_id, "{e}");
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
        assert!(e["description"].as_str().is_some_and(|d| d.contains("ci")), "{e}");
    }
    assert!(!raw.contains(&key.key), "the audit log holds the key: {raw}");
    assert!(!raw.contains(&key.key[10..]), "the audit log holds part of the key: {raw}");

    let (_, v) = status_json(get_json(gw, "/.dalea/api/audit-log", &sam).await).await;
    let types: Vec<&str> = v["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(types, ["sign_in"], "Sam's log has none of Demo's key events: {v}");
}

#[tokio::test]
async fn creating_and_revoking_keys_are_in_the_audit_log_embedded() {
    creating_and_revoking_keys_are_in_the_audit_log(Backend::Embedded).await;
}

#[tokio::test]
async fn creating_and_revoking_keys_are_in_the_audit_log_redis() {
    creating_and_revoking_keys_are_in_the_audit_log(Backend::Redis).await;
}

// ---------------------------------------------------------------------------------------------
// The settings tab

/// The text of `<code id="new-api-key">…</code>`.
fn new_key_on_page(html: &str) -> Option<String> {
    let after = html.split("id=\"new-api-key\"").nth(1)?;
    let text = after.split_once('>')?.1.split('<').next()?;
    Some(unescape_html(text.trim()))
}

#[tokio::test]
async fn the_api_keys_tab_lists_creates_once_and_revokes_with_a_csrf_token() {
    let gw = key_setup().start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let ci = create_key(&gw, &cookie, "ci", Some(30)).await;

    let page = navigate(&gw, KEYS_PAGE, &cookie).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("ci"), "the key's name is listed");
    assert!(html.contains(&ci.key[..10]), "its prefix is shown");
    assert!(!html.contains(&ci.key), "never the key itself");
    assert!(!html.contains("id=\"new-api-key\""), "no new key on a plain visit");
    let token = hidden_input(&html, "csrf_token").expect("the page's CSRF token");

    // Creating without (or with a wrong) CSRF token: 403, nothing created.
    for fields in [
        vec![("name", "forged"), ("expires_in_days", "never")],
        vec![("csrf_token", "nope"), ("name", "forged"), ("expires_in_days", "never")],
    ] {
        let resp = client().post(gw.url(KEYS_PAGE)).header("cookie", &cookie).form(&fields).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{fields:?}");
        assert!(!resp.text().await.unwrap().contains("new-api-key"));
    }
    let (_, list) = list_keys(&gw, &cookie).await;
    assert_eq!(list.len(), 1, "{list:?}");

    let resp = client()
        .post(gw.url(KEYS_PAGE))
        .header("cookie", &cookie)
        .form(&[("csrf_token", token.as_str()), ("name", "nightly <export>"), ("expires_in_days", "never")])
        .send()
        .await
        .unwrap();
    // Post/redirect/get: 303 back to the tab with the key sealed in a one-time cookie; the tab
    // shows it once and clears the cookie, so reloading neither shows it nor creates another.
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, KEYS_PAGE);
    let flash = set_cookies(&resp);
    assert!(flash.iter().any(|c| c.contains("HttpOnly") && c.contains("Max-Age=120")), "{flash:?}");
    assert!(!flash.iter().any(|c| c.contains("dalea_") && c.contains("=dalea_")), "the key is sealed: {flash:?}");
    let browser = with_cookies_from(&cookie, &resp);
    let page = navigate(&gw, &location, &browser).await;
    assert_eq!(page.status(), 200, "the page the form redirects to");
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(set_cookies(&page).iter().any(|c| c.contains("Max-Age=0")), "the tab clears the one-time cookie");
    let html = page.text().await.unwrap();
    let key = new_key_on_page(&html).expect("the new key is shown in #new-api-key");
    assert!(looks_like_a_key(&key), "{key}");
    assert_eq!(html.matches(key.as_str()).count(), 1, "the key is shown exactly once on the page");
    assert!(!html.contains("<export>"), "the name is escaped");
    assert!(key_works(&gw, &key).await, "the key from the page works");
    let (_, list) = list_keys(&gw, &cookie).await;
    let nightly = list.iter().find(|k| k["name"] == "nightly <export>").expect("listed");
    assert!(nightly["expires_at"].is_null(), "\"never\" expires: {nightly}");
    let nightly_id = nightly["id"].as_str().unwrap().to_string();

    let html = navigate(&gw, KEYS_PAGE, &cookie).await.text().await.unwrap();
    assert!(!html.contains(&key), "reloading the tab does not show the key again");
    assert!(!html.contains("id=\"new-api-key\""));
    assert!(html.contains("nightly"), "the new key is listed");

    // Revoking: without a CSRF token 403; with it 303 back to the tab, and the key is refused.
    let revoke = format!("{KEYS_PAGE}/{nightly_id}/revoke");
    let resp = client().post(gw.url(&revoke)).header("cookie", &cookie).form(&[("x", "y")]).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(key_works(&gw, &key).await, "a forged revoke changes nothing");
    let resp =
        client().post(gw.url(&revoke)).header("cookie", &cookie).form(&[("csrf_token", &token)]).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], format!("{KEYS_PAGE}?done=revoked"));
    assert!(!key_works(&gw, &key).await, "revoked from the tab");
    assert!(key_works(&gw, &ci.key).await, "the other key is untouched");
    let html = navigate(&gw, &format!("{KEYS_PAGE}?done=revoked"), &cookie).await.text().await.unwrap();
    assert!(!html.contains("nightly"), "the revoked key is gone from the tab");
    assert!(html.contains("revoked"), "the tab says it was revoked");
}
