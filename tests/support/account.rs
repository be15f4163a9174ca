//! Helpers for the account-security tests (elevation, TOTP, password, audit log): a gateway on
//! either store, a person's authenticator app reading the gateway's own clock, and the JSON
//! calls a browser page or API client makes.

use std::ops::Deref;
use std::time::Duration;

use dalea_gateway::auth::totp::{code_at, TotpSecret};
use dalea_gateway::clock::{Clock, ManualClock};

use super::redis::RedisServer;
use super::*;

/// base64 of 32 bytes: the `[secrets] encryption_key` every Redis replica in a test shares.
pub const ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// One TOTP time step.
pub const STEP: Duration = Duration::from_secs(30);

/// The store a gateway under test keeps sessions and accounts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
}

/// A gateway and, for Redis, the redis-server behind it (stopped after the gateway).
pub struct Bed {
    pub gw: TestGateway,
    pub redis: Option<RedisServer>,
}

impl Deref for Bed {
    type Target = TestGateway;
    fn deref(&self) -> &TestGateway {
        &self.gw
    }
}

/// `[store]` and `[secrets]` for a gateway on `redis`.
pub fn redis_toml(redis: &RedisServer) -> String {
    format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"2s\"\n[secrets]\nencryption_key = \"{ENCRYPTION_KEY}\"",
        redis.url()
    )
}

impl Backend {
    /// Starts `setup` on this store (Redis: a fresh redis-server of its own).
    pub fn start(self, setup: Setup) -> Bed {
        match self {
            Backend::Embedded => Bed { gw: setup.start(), redis: None },
            Backend::Redis => {
                let redis = RedisServer::start();
                let gw = setup.toml(&redis_toml(&redis)).start();
                Bed { gw, redis: Some(redis) }
            }
        }
    }
}

/// A person's authenticator app: the secret they typed in, codes by the gateway's clock.
pub struct Authenticator {
    secret: TotpSecret,
    /// The secret as the gateway showed it (base32).
    pub base32: String,
}

impl Authenticator {
    pub fn from_base32(base32: &str) -> Authenticator {
        let bytes = totp_rs::Secret::try_from_base32(base32).expect("the secret is base32").as_ref().to_vec();
        Authenticator { secret: TotpSecret::from_bytes(bytes), base32: base32.to_string() }
    }

    /// The code the app shows now.
    pub fn code(&self, clock: &ManualClock) -> String {
        code_at(&self.secret, clock.now())
    }

    /// The code the app shows `offset` milliseconds from now (an app whose clock is off).
    pub fn code_at_offset(&self, clock: &ManualClock, offset: i64) -> String {
        code_at(&self.secret, clock.now() + offset)
    }

    /// Waits for the app's next code (the clock moves on one 30-second step) and returns it.
    pub fn next_code(&self, clock: &ManualClock) -> String {
        clock.advance(STEP);
        self.code(clock)
    }

    /// Whether the gateway would take `code` from this app now (one step either side).
    pub fn matches_now(&self, clock: &ManualClock, code: &str) -> bool {
        let now = clock.now();
        [-30_000, 0, 30_000].iter().any(|d| code_at(&self.secret, now + d) == code)
    }

    /// Six digits that match none of the codes the gateway accepts now (one step either side).
    pub fn wrong_code(&self, clock: &ManualClock) -> String {
        let mut n: u32 = self.code(clock).parse().expect("digits");
        loop {
            n = (n + 1) % 1_000_000;
            let candidate = format!("{n:06}");
            if !self.matches_now(clock, &candidate) {
                return candidate;
            }
        }
    }
}

/// A JSON POST from a same-origin page (or an API client) with the session cookie.
pub async fn post_json(gw: &TestGateway, path: &str, cookie: &str, body: serde_json::Value) -> reqwest::Response {
    client().post(gw.url(path)).header("cookie", cookie).json(&body).send().await.expect("POST")
}

/// A GET from an API client (`Accept: application/json`).
pub async fn get_json(gw: &TestGateway, path: &str, cookie: &str) -> reqwest::Response {
    client().get(gw.url(path)).header("cookie", cookie).header("accept", "application/json").send().await.expect("GET")
}

/// A browser navigating to `path`.
pub async fn navigate(gw: &TestGateway, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("cookie", cookie)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .expect("GET")
}

/// Status and JSON body (`Null` when the body is not JSON).
pub async fn status_json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// The public id of the session behind `cookie` (the `current` one in the sessions list).
pub async fn public_id(gw: &TestGateway, cookie: &str) -> String {
    let (status, v) = sessions(gw, cookie).await;
    assert_eq!(status, 200, "sessions list: {v}");
    let list = v["sessions"].as_array().expect("sessions");
    list.iter().find(|s| s["current"] == true).expect("a current session")["id"].as_str().expect("id").to_string()
}

/// The `current` entry of the sessions list.
pub async fn current_session(gw: &TestGateway, cookie: &str) -> serde_json::Value {
    let (status, v) = sessions(gw, cookie).await;
    assert_eq!(status, 200, "sessions list: {v}");
    v["sessions"].as_array().expect("sessions").iter().find(|s| s["current"] == true).expect("current").clone()
}

/// Starts TOTP enrolment: the secret and `otpauth://` URI, asserting 200.
pub async fn start_enrolment(gw: &TestGateway, cookie: &str) -> (Authenticator, String) {
    let (status, v) = status_json(post_json(gw, "/.dalea/api/totp/enroll", cookie, serde_json::json!({})).await).await;
    assert_eq!(status, 200, "enrol: {v}");
    let secret = v["secret"].as_str().expect("secret in the enrolment answer");
    let uri = v["otpauth_uri"].as_str().expect("otpauth_uri in the enrolment answer").to_string();
    (Authenticator::from_base32(secret), uri)
}

/// Sets up TOTP for the person behind `cookie` (enrol, confirm with the current code).
pub async fn enroll_totp(gw: &TestGateway, cookie: &str) -> Authenticator {
    let (app, _) = start_enrolment(gw, cookie).await;
    let resp =
        post_json(gw, "/.dalea/api/totp/confirm", cookie, serde_json::json!({ "code": app.code(&gw.clock) })).await;
    let status = resp.status().as_u16();
    assert_eq!(status, 204, "confirm: {}", resp.text().await.unwrap_or_default());
    app
}

/// `POST /.dalea/api/elevate` with a TOTP code.
pub async fn elevate_with_code(gw: &TestGateway, cookie: &str, code: &str) -> reqwest::Response {
    post_json(gw, "/.dalea/api/elevate", cookie, serde_json::json!({ "method": "totp", "code": code })).await
}

/// `POST /.dalea/api/elevate` with the password (people without TOTP).
pub async fn elevate_with_password(gw: &TestGateway, cookie: &str, password: &str) -> reqwest::Response {
    post_json(gw, "/.dalea/api/elevate", cookie, serde_json::json!({ "method": "password", "password": password }))
        .await
}

/// Elevates with the app's next code; returns the new session cookie.
pub async fn elevate(gw: &TestGateway, cookie: &str, app: &Authenticator) -> String {
    let resp = elevate_with_code(gw, cookie, &app.next_code(&gw.clock)).await;
    let new = session_cookie(&resp);
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "elevate: {v}");
    new.expect("an elevation sets a new session cookie")
}

/// Re-authenticates with the password; returns the cookie to use afterwards.
pub async fn elevate_by_password(gw: &TestGateway, cookie: &str, password: &str) -> String {
    let resp = elevate_with_password(gw, cookie, password).await;
    let new = session_cookie(&resp);
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "password re-authentication: {v}");
    new.unwrap_or_else(|| cookie.to_string())
}

/// The value of the first `<input name="{name}" value="…">` in a page.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    html.split("<input").filter(|tag| tag.contains(&marker)).find_map(|tag| {
        let tag = tag.split('>').next()?;
        let value = tag.split("value=\"").nth(1)?.split('"').next()?;
        Some(unescape_html(value))
    })
}

/// Undoes HTML attribute escaping (`&amp;`, `&#x2f;`, `&quot;`, …).
pub fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The cookie header a browser sends after `resp`: `cookie` plus any other cookie it set.
pub fn with_cookies_from(cookie: &str, resp: &reqwest::Response) -> String {
    let mut all = vec![cookie.to_string()];
    for c in set_cookies(resp) {
        let pair = c.split(';').next().unwrap_or_default().to_string();
        if !pair.starts_with("dalea_session=") && !pair.ends_with('=') {
            all.push(pair);
        }
    }
    all.join("; ")
}
