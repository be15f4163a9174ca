//! Helpers for the API key tests: a gateway with a route that accepts keys (as in the README's
//! `/api` example), creating, listing and revoking keys through the JSON API the way the
//! settings page does, and requests made with a key the way a script makes them.

use std::time::{Duration, Instant};

use dalea_gateway::api_keys::ApiKey;

use super::account::{get_json, post_json, status_json};
use super::*;

/// The default test routes plus `/api`, which accepts API keys. `/admin` is elevated and
/// everything else (`/app`, …) needs a session: neither accepts keys.
pub const KEY_ROUTES: &str = "\
[[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nupstream = \"app\"\naccess = \"public\"\n\
[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\naccess = \"elevated\"\n\
[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"app\"\naccess = \"session\"\napi_keys = true\n\
[[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n";

/// A gateway set-up with [`KEY_ROUTES`].
pub fn key_setup() -> Setup {
    Setup::default().routes(KEY_ROUTES)
}

/// A key as `POST /.dalea/api/api-keys` answered it.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    /// The full key, shown this once.
    pub key: String,
    /// The whole 201 answer.
    pub json: serde_json::Value,
}

/// `POST /.dalea/api/api-keys` with `body`, whatever the outcome.
pub async fn create_key_with(gw: &TestGateway, cookie: &str, body: serde_json::Value) -> reqwest::Response {
    post_json(gw, "/.dalea/api/api-keys", cookie, body).await
}

/// Creates a key named `name` (expiring in `days`, or never), asserting 201.
pub async fn create_key(gw: &TestGateway, cookie: &str, name: &str, days: Option<u32>) -> NewKey {
    let body = match days {
        Some(days) => serde_json::json!({ "name": name, "expires_in_days": days }),
        None => serde_json::json!({ "name": name }),
    };
    let (status, json) = status_json(create_key_with(gw, cookie, body).await).await;
    assert_eq!(status, 201, "creating API key {name:?}: {json}");
    let id = json["id"].as_str().expect("id in the 201 answer").to_string();
    let key = json["key"].as_str().expect("key in the 201 answer").to_string();
    NewKey { id, key, json }
}

/// `GET /.dalea/api/api-keys`: the raw body and the parsed list, asserting 200.
pub async fn list_keys(gw: &TestGateway, cookie: &str) -> (String, Vec<serde_json::Value>) {
    let resp = get_json(gw, "/.dalea/api/api-keys", cookie).await;
    assert_eq!(resp.status(), 200, "the API keys list");
    let raw = resp.text().await.expect("body");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let list = v["api_keys"].as_array().unwrap_or_else(|| panic!("{{\"api_keys\":[…]}} expected: {raw}")).clone();
    (raw, list)
}

/// The entry for key `id` in a list.
pub fn entry<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|k| k["id"] == id)
}

/// `DELETE /.dalea/api/api-keys/{id}` with the session cookie; the status.
pub async fn revoke_key(gw: &TestGateway, cookie: &str, id: &str) -> u16 {
    let resp = client()
        .delete(gw.url(&format!("/.dalea/api/api-keys/{id}")))
        .header("cookie", cookie)
        .send()
        .await
        .expect("DELETE");
    resp.status().as_u16()
}

/// A script's GET of `path` with `Authorization: Bearer <key>` (no cookie).
pub async fn get_with_key(gw: &TestGateway, path: &str, key: &str) -> reqwest::Response {
    client().get(gw.url(path)).header("authorization", format!("Bearer {key}")).send().await.expect("GET with a key")
}

/// What the upstream received for a GET of `path` with `key`, asserting 200.
pub async fn echo_with_key(gw: &TestGateway, path: &str, key: &str) -> serde_json::Value {
    let resp = get_with_key(gw, path, key).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "GET {path} with the key: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Whether `key` still gets through on `/api` (200) rather than being refused (401).
pub async fn key_works(gw: &TestGateway, key: &str) -> bool {
    let status = get_with_key(gw, "/api/reports", key).await.status().as_u16();
    assert!(status == 200 || status == 401, "a key is either taken (200) or refused (401), not {status}");
    status == 200
}

/// A refusal as a script sees it.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub set_cookies: Vec<String>,
    pub raw: String,
    pub json: serde_json::Value,
}

impl Refusal {
    pub async fn of(resp: reqwest::Response) -> Refusal {
        let status = resp.status().as_u16();
        let www_authenticate = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
        let set_cookies = set_cookies(&resp);
        let raw = resp.text().await.expect("body");
        let json = serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null);
        Refusal { status, www_authenticate, set_cookies, raw, json }
    }

    /// Asserts a 401 with JSON `error` = `code` and a message; `what` names the case.
    pub fn assert_401(&self, code: &str, what: &str) {
        assert_eq!(
            (self.status, self.json["error"].as_str()),
            (401, Some(code)),
            "{what}: expected 401 {code}, got {} {}",
            self.status,
            self.raw
        );
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message: {}", self.raw);
    }
}

/// Whether `text` has the shape of an issued key: `dalea_` + 49 base62 characters.
pub fn looks_like_a_key(text: &str) -> bool {
    text.len() == 55 && text.starts_with("dalea_") && text["dalea_".len()..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The key as stored (what the activity flusher has written), by id.
pub async fn stored_key(gw: &TestGateway, user_id: &str, id: &str) -> Option<ApiKey> {
    let keys = gw.state.api_keys.store.keys_for_user(user_id).await.expect("the store answers");
    keys.into_iter().find(|k| k.id == id)
}

/// Polls `check` every 50 ms until it holds or `within` has passed; whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
