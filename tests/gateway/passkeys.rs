//! Passkeys end to end over real HTTP, answered by a software authenticator
//! (`webauthn-authenticator-rs` `SoftPasskey`) that plays the browser's part: register one
//! after a fresh sign-in, sign in with it (discoverable: no email), confirm it's you with it,
//! rename and remove it; what a passkey sign-in is (method, elevation, remember-me, idle
//! expiry); and the answers that must be refused without changing anything stored — another
//! origin or RP id, a replayed ceremony, an unknown credential, someone else's credential, no
//! user verification. Last, two replicas on one Redis: a ceremony begun on one finishes on the
//! other, and a passkey removed on one stops working on the other at once.
//!
//! `SoftPasskey` cannot keep resident keys or hand out user handles, so [`Device`] does that
//! part of a real authenticator: it remembers the user handle each credential was made for and
//! answers discoverable requests (no allow list) with the credential the person picks.

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dalea_gateway::passkeys::{RegisterPublicKeyCredential, RequestChallengeResponse};
use serde_json::{json, Value};
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

use crate::support::account::*;
use crate::support::redis::RedisServer;
use crate::support::*;

const NOT_REGISTERED: &str = "That passkey is not registered here";
const ANOTHER_ACCOUNT: &str = "This passkey belongs to another account";
const NOT_VERIFIED: &str = "Your device did not verify it's you (user verification)";
const CEREMONY_OVER: &str = "This passkey request is over";
const ANOTHER_SITE: &str = "This passkey answer is for another site";

// === a gateway with passkeys, and a device that holds them ===

/// A gateway whose `[passkeys]` origin is `http://localhost:<its port>` (plus `extra` TOML).
fn gateway(extra: &str) -> TestGateway {
    let addr = free_addr();
    setup_at(addr, extra).start()
}

fn setup_at(addr: SocketAddr, extra: &str) -> Setup {
    Setup::default().listen(addr).toml(&passkeys_toml(addr)).toml(extra)
}

fn origin_of(addr: SocketAddr) -> String {
    format!("http://localhost:{}", addr.port())
}

fn passkeys_toml(addr: SocketAddr) -> String {
    format!("[passkeys]\norigin = \"{}\"\nrp_name = \"Dalea test\"", origin_of(addr))
}

/// One person's authenticator: its passkeys and, per credential, the user handle it was made for.
struct Device {
    soft: SoftPasskey,
    origin: Url,
    /// (credential id, user handle), oldest first.
    creds: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Device {
    /// A device that verifies its user (PIN, fingerprint) for pages at `origin`.
    fn new(origin: &str) -> Device {
        Device { soft: SoftPasskey::new(true), origin: Url::parse(origin).expect("origin"), creds: Vec::new() }
    }

    /// Answers `navigator.credentials.create({publicKey})`: the JSON a browser would send back.
    fn create(&mut self, public_key: &Value) -> Value {
        self.create_with(public_key, |o| o)
    }

    /// Answers a creation request after `tamper` changed it as this device saw it.
    fn create_with(&mut self, public_key: &Value, tamper: impl FnOnce(Value) -> Value) -> Value {
        let mut options = tamper(public_key.clone());
        // SoftPasskey keeps no resident keys (this Device does that part): let it make the
        // credential, as a real authenticator would a discoverable one.
        options["authenticatorSelection"]["requireResidentKey"] = json!(false);
        let ccr = serde_json::from_value(json!({ "publicKey": options })).expect("creation options");
        let cred: RegisterPublicKeyCredential = self.soft.do_registration(self.origin.clone(), ccr).expect("register");
        let handle = URL_SAFE_NO_PAD.decode(public_key["user"]["id"].as_str().expect("user.id")).expect("user id");
        self.creds.push((cred.raw_id.clone(), handle));
        serde_json::to_value(&cred).expect("credential JSON")
    }

    /// Answers `navigator.credentials.get({publicKey})` with the newest passkey it holds.
    fn get(&mut self, public_key: &Value) -> Value {
        self.get_with(public_key, self.creds.len() - 1, |o| o, None)
    }

    /// Answers with passkey `which`, after `tamper` changed the request as this device saw it,
    /// from `origin` (default: the device's).
    fn get_with(
        &mut self,
        public_key: &Value,
        which: usize,
        tamper: impl FnOnce(Value) -> Value,
        origin: Option<&str>,
    ) -> Value {
        let (id, handle) = self.creds[which].clone();
        let mut options = tamper(public_key.clone());
        if options["allowCredentials"].as_array().is_none_or(|a| a.is_empty()) {
            // Discoverable: the person picks one of the passkeys this device holds for the site.
            options["allowCredentials"] = json!([{ "type": "public-key", "id": URL_SAFE_NO_PAD.encode(&id) }]);
        }
        let rcr: RequestChallengeResponse =
            serde_json::from_value(json!({ "publicKey": options })).expect("request options");
        let origin = origin.map_or_else(|| self.origin.clone(), |o| Url::parse(o).expect("origin"));
        let mut cred = self.soft.do_authentication(origin, rcr).expect("assertion");
        cred.response.user_handle = Some(handle);
        serde_json::to_value(&cred).expect("assertion JSON")
    }
}

// === the JSON calls the passkey pages' script makes ===

/// POST a JSON body, optionally with cookies.
async fn post(gw: &TestGateway, path: &str, cookie: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = client().post(gw.url(path)).json(&body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.expect("POST")
}

/// Begins registering a passkey named `name`: (ceremony, publicKey).
async fn register_begin(gw: &TestGateway, cookie: &str, name: &str) -> (String, Value) {
    let (status, v) =
        status_json(post(gw, "/.dalea/api/passkeys/register/begin", Some(cookie), json!({ "name": name })).await).await;
    assert_eq!(status, 200, "register/begin: {v}");
    (v["ceremony"].as_str().expect("ceremony").to_string(), v["publicKey"].clone())
}

/// Registers a passkey on `device` for the person behind `cookie`; the passkey as listed.
async fn register(gw: &TestGateway, cookie: &str, device: &mut Device, name: &str) -> Value {
    let (ceremony, options) = register_begin(gw, cookie, name).await;
    let credential = device.create(&options);
    let resp = post(
        gw,
        "/.dalea/api/passkeys/register/finish",
        Some(cookie),
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 201, "register/finish: {v}");
    v
}

/// A browser's passkey sign-in begun: its binding cookie, the ceremony and the request options.
struct SignInBegun {
    binding: String,
    ceremony: String,
    options: Value,
}

async fn signin_begin(gw: &TestGateway, remember_me: bool, rd: &str) -> SignInBegun {
    let resp =
        post(gw, "/.dalea/api/passkeys/signin/begin", None, json!({ "remember_me": remember_me, "rd": rd })).await;
    let binding = set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("dalea_passkey="))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .expect("signin/begin binds the ceremony to the browser with a cookie");
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "signin/begin: {v}");
    assert_eq!(v["publicKey"]["allowCredentials"], json!([]), "discoverable: no allow list");
    assert_eq!(v["publicKey"]["userVerification"], "required");
    SignInBegun {
        binding,
        ceremony: v["ceremony"].as_str().expect("ceremony").to_string(),
        options: v["publicKey"].clone(),
    }
}

async fn signin_finish(gw: &TestGateway, begun: &SignInBegun, credential: Value) -> reqwest::Response {
    post(
        gw,
        "/.dalea/api/passkeys/signin/finish",
        Some(&begun.binding),
        json!({ "ceremony": begun.ceremony, "credential": credential }),
    )
    .await
}

/// Signs in with the device's newest passkey; returns the session cookie and the answer.
async fn passkey_sign_in(gw: &TestGateway, device: &mut Device, remember_me: bool) -> (String, Value, Vec<String>) {
    let begun = signin_begin(gw, remember_me, "/app/after").await;
    let resp = signin_finish(gw, &begun, device.get(&begun.options)).await;
    let cookies = set_cookies(&resp);
    let cookie = session_cookie(&resp);
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "signin/finish: {v}");
    (cookie.expect("a passkey sign-in sets the session cookie"), v, cookies)
}

async fn elevate_begin(gw: &TestGateway, cookie: &str) -> (String, Value) {
    let (status, v) = status_json(post(gw, "/.dalea/api/elevate/passkey/begin", Some(cookie), json!({})).await).await;
    assert_eq!(status, 200, "elevate/passkey/begin: {v}");
    (v["ceremony"].as_str().expect("ceremony").to_string(), v["publicKey"].clone())
}

async fn elevate_finish(gw: &TestGateway, cookie: &str, ceremony: &str, credential: Value) -> reqwest::Response {
    post(
        gw,
        "/.dalea/api/elevate/passkey/finish",
        Some(cookie),
        json!({ "ceremony": ceremony, "credential": credential, "rd": "/admin" }),
    )
    .await
}

/// Confirms it's you with the device's newest passkey; returns the new cookie.
async fn elevate_with_passkey(gw: &TestGateway, cookie: &str, device: &mut Device) -> String {
    let (ceremony, options) = elevate_begin(gw, cookie).await;
    let resp = elevate_finish(gw, cookie, &ceremony, device.get(&options)).await;
    let new = session_cookie(&resp);
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "elevate/passkey/finish: {v}");
    assert_eq!(v["method"], "passkey", "{v}");
    assert_eq!(v["elevated"], true, "{v}");
    assert_eq!(v["redirect"], "/admin", "{v}");
    new.expect("confirming rotates the session cookie")
}

async fn list(gw: &TestGateway, cookie: &str) -> Vec<Value> {
    let (status, v) = status_json(get_json(gw, "/.dalea/api/passkeys", cookie).await).await;
    assert_eq!(status, 200, "list: {v}");
    v["passkeys"].as_array().expect("passkeys").clone()
}

/// Asserts a refusal: `status`, and a message containing `says`.
async fn refused(resp: reqwest::Response, status: u16, says: &str) -> Value {
    let (got, v) = status_json(resp).await;
    assert_eq!(got, status, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "expected {says:?} in {message:?}");
    v
}

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
    assert_eq!(get_json(gw, "/app", cookie).await.status(), 401, "the old session is over");
}

fn max_age_of(set_cookie: &[String]) -> Option<String> {
    let session = set_cookie.iter().find(|c| c.starts_with("dalea_session=") && !c.starts_with("dalea_session=;"))?;
    session.split("; ").find_map(|a| a.strip_prefix("Max-Age=")).map(str::to_string)
}

// === the tests ===

/// The journey: register after a fresh sign-in, sign out, sign in with the passkey.
#[tokio::test]
async fn a_passkey_registered_after_signing_in_signs_in_without_an_email_and_counts_as_elevated() {
    let gw = gateway("");
    let mut device = Device::new(&origin_of(gw.addr));
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    assert!(list(&gw, &cookie).await.is_empty());

    let (_, options) = register_begin(&gw, &cookie, "ignored").await;
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required", "a discoverable credential");
    assert_eq!(options["authenticatorSelection"]["userVerification"], "required");
    let added = register(&gw, &cookie, &mut device, "  Work laptop ").await;
    assert_eq!(added["name"], "Work laptop", "trimmed: {added}");
    assert!(added["last_used_at"].is_null(), "{added}");
    let listed = list(&gw, &cookie).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], added["id"]);
    assert_eq!(listed[0]["created_at"], added["created_at"]);

    sign_out(&gw, &cookie).await;
    let (cookie, v, _) = passkey_sign_in(&gw, &mut device, false).await;
    assert_eq!(v["redirect"], "/app/after", "back to where the person was going: {v}");
    let s = &v["session"];
    assert_eq!(s["sign_in_method"], "passkey", "{s}");
    assert_eq!(s["auth_strength"]["elevated"], true, "{s}");
    assert_eq!(s["auth_strength"]["method"], "passkey", "{s}");
    assert_eq!(s["remember_me"], false, "{s}");

    let me = current_session(&gw, &cookie).await;
    assert_eq!(
        (me["sign_in_method"].as_str(), me["auth_strength"]["method"].as_str()),
        (Some("passkey"), Some("passkey"))
    );
    // The sessions page words it so.
    let html = navigate(&gw, "/.dalea/settings/security/sessions", &cookie).await.text().await.unwrap();
    assert!(html.contains("Passkey ·"), "sign-in method on the page");
    assert!(html.contains("Elevated (passkey)"), "auth strength on the page");
    // Elevated from the start: the sensitive route opens and the app is told how.
    let resp = get_json(&gw, "/admin/users", &cookie).await;
    assert_eq!(resp.status(), 200, "a passkey sign-in counts as elevated");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(crate::support::echo::seen(&echo, "x-dalea-auth-strength"), ["elevated:passkey"]);
    assert_eq!(crate::support::echo::seen(&echo, "x-dalea-user"), ["demo"]);

    let used = &list(&gw, &cookie).await[0];
    assert!(used["last_used_at"].is_string(), "the sign-in is the passkey's last use: {used}");
}

#[tokio::test]
async fn remember_me_is_the_persons_choice_and_idle_expiry_applies_to_passkey_sessions() {
    let gw = gateway("[session]\nidle_timeout = \"2h\"");
    let mut device = Device::new(&origin_of(gw.addr));
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    register(&gw, &cookie, &mut device, "Phone").await;

    let (browser_only, v, set) = passkey_sign_in(&gw, &mut device, false).await;
    assert_eq!(v["session"]["remember_me"], false);
    assert_eq!(max_age_of(&set), None, "not remembered: a browser-session cookie ({set:?})");
    assert!(
        set.iter().any(|c| c.starts_with("dalea_passkey=;") && c.contains("Max-Age=0")),
        "binding cleared: {set:?}"
    );

    let (remembered, v, set) = passkey_sign_in(&gw, &mut device, true).await;
    assert_eq!(v["session"]["remember_me"], true);
    assert!(max_age_of(&set).is_some_and(|a| a.parse::<u64>().unwrap() > 86_400), "remembered: {set:?}");

    gw.clock.advance(Duration::from_secs(3600));
    assert_eq!(get_json(&gw, "/app", &remembered).await.status(), 200, "an hour idle is fine");
    gw.clock.advance(Duration::from_secs(7201));
    for cookie in [&browser_only, &remembered] {
        assert_eq!(get_json(&gw, "/app", cookie).await.status(), 401, "idle past idle_timeout: over");
    }
}

#[tokio::test]
async fn adding_a_passkey_needs_a_recent_sign_in_and_then_replaces_the_password_for_confirming() {
    let gw = gateway("");
    let mut device = Device::new(&origin_of(gw.addr));
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(Duration::from_secs(601));
    let resp = post(&gw, "/.dalea/api/passkeys/register/begin", Some(&cookie), json!({ "name": "Laptop" })).await;
    let v = refused(resp, 401, "confirm it's you").await;
    assert_eq!(v["error"], "elevation_required");
    let resp = post(&gw, "/.dalea/api/passkeys/register/begin", Some(&cookie), json!({ "name": "" })).await;
    assert_eq!(resp.status(), 401, "the recency check comes first");

    // No second factor yet: the password passes, and then adding one works.
    let cookie = elevate_by_password(&gw, &cookie, PASSWORD).await;
    let resp = post(&gw, "/.dalea/api/passkeys/register/begin", Some(&cookie), json!({ "name": "\u{202E}evil" })).await;
    refused(resp, 400, "Give the passkey a name").await;
    register(&gw, &cookie, &mut device, "Laptop").await;

    // Now a passkey exists: the password no longer confirms, and the earlier password proof
    // no longer passes sensitive actions.
    let resp = elevate_with_password(&gw, &cookie, PASSWORD).await;
    refused(resp, 409, "You have a passkey").await;
    assert_eq!(get_json(&gw, "/.dalea/api/audit-log", &cookie).await.status(), 401);
    let page = navigate(&gw, "/.dalea/elevate?rd=%2Fadmin", &cookie).await;
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains("Use a passkey") && !html.contains("name=\"password\""), "passkey only");
    assert!(csp.contains("script-src 'self'"), "{csp}");

    let cookie = elevate_with_passkey(&gw, &cookie, &mut device).await;
    assert_eq!(get_json(&gw, "/.dalea/api/audit-log", &cookie).await.status(), 200, "confirmed with the passkey");
    let me = current_session(&gw, &cookie).await;
    assert_eq!(
        (me["sign_in_method"].as_str(), me["auth_strength"]["method"].as_str()),
        (Some("password"), Some("passkey"))
    );
}

#[tokio::test]
async fn a_password_alone_cannot_add_a_second_factor_once_the_person_has_one() {
    let gw = gateway("");
    let mut device = Device::new(&origin_of(gw.addr));
    let owner = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    register(&gw, &owner, &mut device, "Owner's phone").await;

    // Someone with only the password signs in: a fresh sign-in, but no second factor.
    let thief = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let resp = post(&gw, "/.dalea/api/passkeys/register/begin", Some(&thief), json!({ "name": "Mine now" })).await;
    assert_eq!(refused(resp, 401, "confirm it's you").await["error"], "elevation_required");
    let resp = post(&gw, "/.dalea/api/totp/enroll", Some(&thief), json!({})).await;
    assert_eq!(resp.status(), 401, "no authenticator app of their own either");
    assert_eq!(list(&gw, &owner).await.len(), 1, "nothing added");
    assert!(gw.state.accounts.totp("demo").await.unwrap().pending.is_none(), "no enrolment started");

    // The owner, confirmed with their passkey, may add another.
    let owner = elevate_with_passkey(&gw, &owner, &mut device).await;
    let mut second = Device::new(&origin_of(gw.addr));
    register(&gw, &owner, &mut second, "Spare key").await;
    assert_eq!(list(&gw, &owner).await.len(), 2);
}

#[tokio::test]
async fn confirming_with_a_passkey_rotates_the_cookie_and_ceremonies_are_taken_once_within_five_minutes() {
    let gw = gateway("");
    let mut device = Device::new(&origin_of(gw.addr));
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    register(&gw, &cookie, &mut device, "Laptop").await;
    gw.clock.advance(Duration::from_secs(601));
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 401, "not elevated");

    let (ceremony, options) = elevate_begin(&gw, &cookie).await;
    assert_eq!(options["allowCredentials"].as_array().map(Vec::len), Some(1), "the person's passkeys: {options}");
    let answer = device.get(&options);
    let resp = elevate_finish(&gw, &cookie, &ceremony, answer.clone()).await;
    let new = session_cookie(&resp).expect("a new cookie");
    assert_eq!(resp.status(), 200);
    assert_ne!(new, cookie);
    assert_eq!(get_json(&gw, "/app", &cookie).await.status(), 401, "the old token stops working");
    assert_eq!(get_json(&gw, "/admin", &new).await.status(), 200, "elevated");
    assert_eq!(current_session(&gw, &new).await["auth_strength"]["method"], "passkey");

    // The same answer again, to the same ceremony: it was used up.
    let resp = elevate_finish(&gw, &new, &ceremony, answer.clone()).await;
    refused(resp, 400, CEREMONY_OVER).await;
    // The same answer to a fresh ceremony: another challenge.
    let (fresh, _) = elevate_begin(&gw, &new).await;
    let resp = elevate_finish(&gw, &new, &fresh, answer).await;
    refused(resp, 401, "for another request").await;
    // A ceremony another session began cannot be finished here.
    let other = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let (theirs, options) = elevate_begin(&gw, &other).await;
    let resp = elevate_finish(&gw, &new, &theirs, device.get(&options)).await;
    refused(resp, 400, CEREMONY_OVER).await;
    // A ceremony lasts five minutes.
    let (late, options) = elevate_begin(&gw, &new).await;
    let answer = device.get(&options);
    gw.clock.advance(Duration::from_secs(301));
    refused(elevate_finish(&gw, &new, &late, answer).await, 400, CEREMONY_OVER).await;
    let begun = signin_begin(&gw, false, "/").await;
    let answer = device.get(&begun.options);
    gw.clock.advance(Duration::from_secs(301));
    refused(signin_finish(&gw, &begun, answer).await, 400, CEREMONY_OVER).await;
}

#[tokio::test]
async fn renaming_and_removing_a_passkey_which_then_stops_working_and_takes_its_elevations_with_it() {
    let gw = gateway("");
    let mut device = Device::new(&origin_of(gw.addr));
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let id = register(&gw, &cookie, &mut device, "Laptop").await["id"].as_str().unwrap().to_string();
    let path = format!("/.dalea/api/passkeys/{id}");

    let resp = client()
        .patch(gw.url(&path))
        .header("cookie", &cookie)
        .json(&json!({ "name": "Work laptop" }))
        .send()
        .await
        .unwrap();
    let (status, v) = status_json(resp).await;
    assert_eq!((status, v["name"].as_str()), (200, Some("Work laptop")), "{v}");
    let resp =
        client().patch(gw.url(&path)).header("cookie", &cookie).json(&json!({ "name": " " })).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client()
        .patch(gw.url("/.dalea/api/passkeys/bm90LW1pbmU"))
        .header("cookie", &cookie)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "no such passkey of theirs");

    // A passkey sign-in elsewhere, elevated by this passkey.
    let (elsewhere, _, _) = passkey_sign_in(&gw, &mut device, false).await;
    // Removing needs a confirmation with a second factor: the password sign-in is not one now.
    let resp = client().delete(gw.url(&path)).header("cookie", &cookie).send().await.unwrap();
    refused(resp, 401, "confirm it's you").await;
    let page = navigate(&gw, "/.dalea/settings/security/passkeys", &cookie).await.text().await.unwrap();
    assert!(page.contains("Work laptop") && page.contains("Confirm to remove") && !page.contains("/remove\""));

    let cookie = elevate_with_passkey(&gw, &cookie, &mut device).await;
    let page = navigate(&gw, "/.dalea/settings/security/passkeys", &cookie).await.text().await.unwrap();
    assert!(
        page.contains(&format!("/.dalea/settings/security/passkeys/{id}/remove")),
        "the remove form once confirmed"
    );
    let resp = client().delete(gw.url(&path)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(list(&gw, &cookie).await.is_empty());
    // The confirmation rested on that passkey, so it went with it.
    let resp = client().delete(gw.url(&path)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 401, "no longer elevated");

    // It no longer signs in …
    let begun = signin_begin(&gw, false, "/").await;
    refused(signin_finish(&gw, &begun, device.get(&begun.options)).await, 401, NOT_REGISTERED).await;
    // … and the sessions it elevated are elevated no more (still signed in).
    for c in [&cookie, &elsewhere] {
        let me = current_session(&gw, c).await;
        assert_eq!(me["auth_strength"]["elevated"], false, "{me}");
        assert_eq!(get_json(&gw, "/admin", c).await.status(), 401);
    }
    // No second factor left: the password confirms again; the audit log tells the story.
    let cookie = elevate_by_password(&gw, &cookie, PASSWORD).await;
    let (status, log) = status_json(get_json(&gw, "/.dalea/api/audit-log", &cookie).await).await;
    assert_eq!(status, 200);
    let said: Vec<&str> = log["events"].as_array().unwrap().iter().filter_map(|e| e["description"].as_str()).collect();
    for line in [
        "Passkey \u{201c}Laptop\u{201d} added",
        "Passkey \u{201c}Laptop\u{201d} renamed to \u{201c}Work laptop\u{201d}",
        "Passkey \u{201c}Work laptop\u{201d} removed",
        "Signed in (passkey)",
        "Confirmed it's you (passkey)",
    ] {
        assert!(said.contains(&line), "{line:?} in the audit log: {said:?}");
    }
}

#[tokio::test]
async fn the_page_forms_rename_and_remove_and_the_script_is_served() {
    let gw = gateway("");
    let mut device = Device::new(&origin_of(gw.addr));
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let id = register(&gw, &cookie, &mut device, "Laptop").await["id"].as_str().unwrap().to_string();
    let page = navigate(&gw, "/.dalea/settings/security/passkeys", &cookie).await;
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline'; script"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("id=\"passkey-add\""), "with a passkey, adding another needs a confirmation with one");
    let token = hidden_input(&html, "csrf_token").expect("form token");

    let form = |action: &str, fields: Vec<(&str, &str)>| {
        client()
            .post(gw.url(&format!("/.dalea/settings/security/passkeys/{id}/{action}")))
            .header("cookie", &cookie)
            .form(&fields)
            .send()
    };
    let resp = form("rename", vec![("csrf_token", &token), ("name", "Desk key")]).await.unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.headers()["location"].to_str().unwrap()),
        (303, "/.dalea/settings/security/passkeys?done=renamed")
    );
    assert_eq!(list(&gw, &cookie).await[0]["name"], "Desk key");
    let resp = form("rename", vec![("name", "No token")]).await.unwrap();
    assert_eq!(resp.status(), 403, "forms need the CSRF token");
    // Removing needs a confirmation with a second factor, which the password sign-in is not.
    let resp = form("remove", vec![("csrf_token", &token)]).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(list(&gw, &cookie).await.len(), 1);
    let cookie = elevate_with_passkey(&gw, &cookie, &mut device).await;
    let html = navigate(&gw, "/.dalea/settings/security/passkeys", &cookie).await.text().await.unwrap();
    assert!(html.contains("id=\"passkey-add\""), "confirmed with a passkey: adding another is offered");
    assert!(html.contains("src=\"/.dalea/assets/passkeys.js\""));
    let resp = client()
        .post(gw.url(&format!("/.dalea/settings/security/passkeys/{id}/remove")))
        .header("cookie", &cookie)
        .form(&[("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.headers()["location"].to_str().unwrap()),
        (303, "/.dalea/settings/security/passkeys?done=removed")
    );
    assert!(list(&gw, &cookie).await.is_empty());

    // Sign-in page: the button and its script; other pages stay script-free.
    let signin = client().get(gw.url("/.dalea/signin")).send().await.unwrap();
    let csp = signin.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(signin.text().await.unwrap().contains("Sign in with a passkey"));
    let sessions = navigate(&gw, "/.dalea/settings/security/sessions", &cookie).await;
    assert!(!sessions.headers()["content-security-policy"].to_str().unwrap().contains("script-src"));

    let js = client().get(gw.url("/.dalea/assets/passkeys.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(js.headers()["cache-control"].to_str().unwrap().starts_with("public, max-age="));
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    assert!(js.text().await.unwrap().contains("navigator.credentials.get"));
    // Revalidation: 304, still cacheable, and the connection goes on serving.
    let browser = client();
    for _ in 0..2 {
        let again =
            browser.get(gw.url("/.dalea/assets/passkeys.js")).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.headers()["cache-control"].to_str().unwrap().starts_with("public"));
        assert!(again.text().await.unwrap().is_empty());
    }
    assert_eq!(browser.get(gw.url("/.dalea/assets/passkeys.js")).send().await.unwrap().status(), 200);
}

/// Everything here must be refused with a clear message, and leave the stored passkeys and
/// sessions as they were.
#[tokio::test]
async fn bad_answers_are_refused_with_a_clear_message_and_change_nothing() {
    let gw = gateway("");
    let origin = origin_of(gw.addr);
    let mut device = Device::new(&origin);
    let demo = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    register(&gw, &demo, &mut device, "Laptop").await;
    // Confirmed with it, so that adding a second one (below) may begin.
    let demo = elevate_with_passkey(&gw, &demo, &mut device).await;
    let mut sams = Device::new(&origin);
    let sam = sign_in(&gw, SAM_EMAIL, FIREFOX_WIN).await;
    register(&gw, &sam, &mut sams, "Sam's key").await;
    let before = (list(&gw, &demo).await, list(&gw, &sam).await);
    let strength_before = current_session(&gw, &demo).await["auth_strength"].clone();
    let sessions_before = sessions(&gw, &demo).await.1["sessions"].as_array().unwrap().len();

    // An answer made on another origin (same RP id, another port).
    let begun = signin_begin(&gw, false, "/").await;
    let other_origin = format!("http://localhost:{}", gw.addr.port() + 1);
    let answer = device.get_with(&begun.options, 0, |o| o, Some(&other_origin));
    refused(signin_finish(&gw, &begun, answer).await, 401, ANOTHER_SITE).await;
    // An answer for another RP id (another site's passkey prompt).
    let begun = signin_begin(&gw, false, "/").await;
    let answer = device.get_with(
        &begun.options,
        0,
        |mut o| {
            o["rpId"] = json!("example.org");
            o
        },
        Some("https://example.org"),
    );
    refused(signin_finish(&gw, &begun, answer).await, 401, ANOTHER_SITE).await;
    // No user verification (the device only checked presence).
    let begun = signin_begin(&gw, false, "/").await;
    let answer = device.get_with(
        &begun.options,
        0,
        |mut o| {
            o["userVerification"] = json!("discouraged");
            o
        },
        None,
    );
    refused(signin_finish(&gw, &begun, answer).await, 401, NOT_VERIFIED).await;
    // An unknown credential: a passkey this gateway never registered.
    let begun = signin_begin(&gw, false, "/").await;
    let mut answer = device.get(&begun.options);
    answer["id"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
    answer["rawId"] = answer["id"].clone();
    refused(signin_finish(&gw, &begun, answer).await, 401, NOT_REGISTERED).await;
    // A credential whose user handle names someone else.
    let begun = signin_begin(&gw, false, "/").await;
    let mut answer = device.get(&begun.options);
    answer["response"]["userHandle"] = json!(URL_SAFE_NO_PAD.encode(sams.creds[0].1.clone()));
    refused(signin_finish(&gw, &begun, answer).await, 401, NOT_REGISTERED).await;
    // A replayed finish: the same ceremony twice.
    let begun = signin_begin(&gw, false, "/").await;
    let answer = device.get(&begun.options);
    let ok = signin_finish(&gw, &begun, answer.clone()).await;
    let signed_in = session_cookie(&ok).expect("the first finish signs in");
    assert_eq!(ok.status(), 200);
    refused(signin_finish(&gw, &begun, answer).await, 400, CEREMONY_OVER).await;
    // Finished from another browser (no binding cookie, or another one).
    let begun = signin_begin(&gw, false, "/").await;
    let answer = device.get(&begun.options);
    let resp = post(
        &gw,
        "/.dalea/api/passkeys/signin/finish",
        None,
        json!({ "ceremony": begun.ceremony, "credential": answer }),
    )
    .await;
    refused(resp, 400, CEREMONY_OVER).await;
    // Garbage in place of an answer, and an unknown ceremony.
    let begun = signin_begin(&gw, false, "/").await;
    refused(signin_finish(&gw, &begun, json!({ "id": "x" })).await, 400, "not in the expected form").await;
    let fake =
        SignInBegun { binding: begun.binding.clone(), ceremony: "no-such-ceremony".into(), options: Value::Null };
    refused(signin_finish(&gw, &fake, device.get(&begun.options)).await, 400, CEREMONY_OVER).await;

    // Someone else's passkey to confirm it's you (Sam's device answers with Sam's passkey).
    let (ceremony, options) = elevate_begin(&gw, &demo).await;
    let answer = sams.get_with(
        &options,
        0,
        |mut o| {
            o["allowCredentials"] = json!([]);
            o
        },
        None,
    );
    refused(elevate_finish(&gw, &demo, &ceremony, answer).await, 401, ANOTHER_ACCOUNT).await;
    // No user verification when confirming.
    let (ceremony, options) = elevate_begin(&gw, &demo).await;
    let answer = device.get_with(
        &options,
        0,
        |mut o| {
            o["userVerification"] = json!("discouraged");
            o
        },
        None,
    );
    refused(elevate_finish(&gw, &demo, &ceremony, answer).await, 401, NOT_VERIFIED).await;
    // Another origin when confirming.
    let (ceremony, options) = elevate_begin(&gw, &demo).await;
    let answer = device.get_with(&options, 0, |o| o, Some(&other_origin));
    refused(elevate_finish(&gw, &demo, &ceremony, answer).await, 401, ANOTHER_SITE).await;
    // Registering from another origin, and with a device that does not verify its user.
    let (ceremony, options) = register_begin(&gw, &demo, "Second").await;
    let mut elsewhere = Device::new(&other_origin);
    let credential = elsewhere.create(&options);
    let resp = post(
        &gw,
        "/.dalea/api/passkeys/register/finish",
        Some(&demo),
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    refused(resp, 401, ANOTHER_SITE).await;
    let (ceremony, options) = register_begin(&gw, &demo, "Second").await;
    let mut presence_only = Device::new(&origin);
    let credential = presence_only.create_with(&options, |mut o| {
        o["authenticatorSelection"]["userVerification"] = json!("discouraged");
        o
    });
    let resp = post(
        &gw,
        "/.dalea/api/passkeys/register/finish",
        Some(&demo),
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    refused(resp, 401, NOT_VERIFIED).await;

    // Nothing stored changed: the same passkeys (not even their last use, apart from the one
    // good sign-in above) and no new session but that one.
    let after_demo = list(&gw, &demo).await;
    assert_eq!(after_demo.len(), 1);
    assert_eq!(after_demo[0]["name"], before.0[0]["name"]);
    assert_eq!(list(&gw, &sam).await, before.1, "Sam's passkeys untouched");
    let now = sessions(&gw, &demo).await.1["sessions"].as_array().unwrap().len();
    assert_eq!(now, sessions_before + 1, "only the one good sign-in made a session");
    assert_eq!(current_session(&gw, &demo).await["auth_strength"], strength_before, "no refusal changed the elevation");
    assert_eq!(get_json(&gw, "/app", &signed_in).await.status(), 200);
}

/// Two replicas on one Redis behind one origin: a ceremony begun on one finishes on the other,
/// and a passkey removed on one stops signing in on the other at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_passkey_removed_on_one_replica_stops_working_on_the_other_at_once() {
    let redis = RedisServer::start();
    let a1 = free_addr();
    let shared = format!("{}\n{}", redis_toml(&redis), passkeys_toml(a1));
    let r1 = Setup::default().listen(a1).toml(&shared).start();
    let r2 = Setup::default().toml(&shared).start();
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;
    let mut device = Device::new(&origin_of(a1));

    let cookie = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    let id = register(&r1, &cookie, &mut device, "Laptop").await["id"].as_str().unwrap().to_string();
    // Begun on replica 1, finished on replica 2.
    let begun = signin_begin(&r1, false, "/").await;
    let resp = signin_finish(&r2, &begun, device.get(&begun.options)).await;
    assert_eq!(resp.status(), 200, "a ceremony kept in the store finishes on any replica");
    let on_r2 = session_cookie(&resp).unwrap();
    assert_eq!(current_session(&r2, &on_r2).await["auth_strength"]["method"], "passkey");
    assert_eq!(get_json(&r2, "/admin", &on_r2).await.status(), 200);

    // Removed on replica 1 (elevated by the passkey there) …
    let cookie = elevate_with_passkey(&r1, &cookie, &mut device).await;
    let resp =
        client().delete(r1.url(&format!("/.dalea/api/passkeys/{id}"))).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    // … it signs in nowhere, and the session on replica 2 lost its elevation at once.
    for gw in [&r1, &r2] {
        let begun = signin_begin(gw, false, "/").await;
        refused(signin_finish(gw, &begun, device.get(&begun.options)).await, 401, NOT_REGISTERED).await;
    }
    assert_eq!(get_json(&r2, "/admin", &on_r2).await.status(), 401, "no elevation left on replica 2");
    assert_eq!(get_json(&r2, "/app", &on_r2).await.status(), 200, "still signed in");
}

/// A person with as many passkeys as allowed can still confirm with any of them (the ceremony,
/// which lists them all, fits the pending store), and cannot add one more.
#[tokio::test]
async fn a_person_with_the_most_passkeys_still_confirms_and_cannot_add_more() {
    let gw = gateway("");
    let mut device = Device::new(&origin_of(gw.addr));
    let mut cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    for n in 0..dalea_gateway::passkeys::MAX_PASSKEYS_PER_PERSON {
        register(&gw, &cookie, &mut device, &format!("Key {n}")).await;
        if n == 0 {
            // Adding more needs a confirmation with one.
            cookie = elevate_with_passkey(&gw, &cookie, &mut device).await;
        }
    }
    let resp = post(&gw, "/.dalea/api/passkeys/register/begin", Some(&cookie), json!({ "name": "One more" })).await;
    refused(resp, 409, "Remove one you no longer use first").await;
    let (ceremony, options) = elevate_begin(&gw, &cookie).await;
    let first = device.get_with(&options, 0, |o| o, None);
    let resp = elevate_finish(&gw, &cookie, &ceremony, first).await;
    assert_eq!(
        resp.status(),
        200,
        "confirmed with the oldest of {} passkeys",
        options["allowCredentials"].as_array().unwrap().len()
    );
}
