//! Vigilance end to end: the warning flags on the sessions list (JSON and page) for sign-ins from
//! places a GeoIP database written by the test knows (behind a trusted proxy's
//! `X-Forwarded-For`), with the test clock; no database, a broken one, bad input; two replicas on
//! one Redis; and the sign-in notice webhook against a real HTTP receiver.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dalea_gateway::clock::{Clock, ManualClock};
use dalea_gateway::vigilance::NO_GEOIP_NOTE;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderValue;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::account::get_json;
use crate::support::mmdb::{City, Geo, MmdbWriter};
use crate::support::redis::RedisServer;
use crate::support::*;

const LONDON: &str = "81.2.69.160";
const SYDNEY: &str = "1.128.0.1";
/// In the database, without a record.
const NO_RECORD: &str = "8.8.8.8";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                             (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const SECRET: &str = "a-webhook-secret-for-the-tests-0123456789";

/// A City database with London and Sydney (regions and coordinates, as the flags need them).
fn geoip_database(dir: &Path) -> PathBuf {
    let path = dir.join("city.mmdb");
    MmdbWriter::new("GeoIP2-City")
        .insert(
            "81.2.69.0/24".parse().expect("net"),
            Geo {
                city: City { city_en: Some("London"), country_en: Some("United Kingdom"), iso: Some("GB") },
                region: Some(("ENG", "England")),
                at: Some((51.51, -0.13, 20)),
            },
        )
        .insert(
            "1.128.0.0/16".parse().expect("net"),
            Geo {
                city: City { city_en: Some("Sydney"), country_en: Some("Australia"), iso: Some("AU") },
                region: Some(("NSW", "New South Wales")),
                at: Some((-33.87, 151.21, 50)),
            },
        )
        .write(&path)
        .expect("write the GeoIP database");
    path
}

/// Requests come through a trusted proxy on 127.0.0.1; `geoip`: the database, if any.
fn behind_proxy(geoip: Option<&Path>) -> Setup {
    let db = geoip.map(|p| format!("geoip_database = \"{}\"\n", p.display())).unwrap_or_default();
    Setup::default().toml(&format!("[client_info]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{db}"))
}

/// Signs the demo user in (remembered) through the JSON API from `ip`, with `ua` as the
/// User-Agent (none at all when `None`). Returns the cookie and the new session's public id.
async fn sign_in_from(gw: &TestGateway, ua: Option<&[u8]>, ip: &str) -> (String, String) {
    let mut req = client().post(gw.url("/.dalea/api/signin")).header("x-forwarded-for", ip);
    if let Some(ua) = ua {
        req = req.header("user-agent", HeaderValue::from_bytes(ua).expect("a sendable header value"));
    }
    let body = json!({"email": DEMO_EMAIL, "password": PASSWORD, "remember_me": true});
    let resp = req.json(&body).send().await.expect("sign-in request");
    assert_eq!(resp.status(), 200, "the sign-in from {ip} with {ua:?} should succeed");
    let cookie = session_cookie(&resp).expect("a session cookie");
    let v: Value = resp.json().await.expect("JSON");
    (cookie, v["session"]["id"].as_str().expect("the session's id").to_string())
}

/// `GET /.dalea/api/sessions` from `ip`: the rows.
async fn rows_from(gw: &TestGateway, cookie: &str, ip: &str) -> Vec<Value> {
    let resp = client()
        .get(gw.url("/.dalea/api/sessions"))
        .header("cookie", cookie)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("JSON");
    v["sessions"].as_array().expect("a sessions array").clone()
}

/// The sessions page from `ip`.
async fn page_from(gw: &TestGateway, cookie: &str, ip: &str) -> String {
    let resp = client()
        .get(gw.url("/.dalea/settings/security/sessions"))
        .header("cookie", cookie)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .expect("page");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("HTML")
}

fn row<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no row {id} in {rows:#?}"))
}

/// The row's flag kinds, in order (the `flags` array must be there, even when empty).
fn kinds(row: &Value) -> Vec<String> {
    let flags = row["flags"].as_array().unwrap_or_else(|| panic!("no flags array in {row:#}"));
    flags.iter().map(|f| f["kind"].as_str().expect("kind").to_string()).collect()
}

fn reason(row: &Value, kind: &str) -> String {
    let flags = row["flags"].as_array().expect("flags");
    let flag = flags.iter().find(|f| f["kind"] == kind).unwrap_or_else(|| panic!("no {kind} flag in {row:#}"));
    flag["reason"].as_str().expect("reason").to_string()
}

/// The HTML of one row of the sessions page (from its `<li class="row` to the next row).
fn row_html<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html.find(&format!("data-session-id=\"{id}\"")).unwrap_or_else(|| panic!("no row {id}:\n{html}"));
    let start = html[..at].rfind("<li class=\"row").expect("the row's start");
    let rest = &html[at..];
    let end = rest.find("<li class=\"row").or_else(|| rest.find("</section>")).expect("the row's end");
    &html[start..at + end]
}

#[tokio::test]
async fn a_new_device_on_another_continent_an_hour_later_carries_three_flags() {
    let dir = tempfile::tempdir().unwrap();
    let gw = behind_proxy(Some(&geoip_database(dir.path()))).start();
    let (london, london_id) = sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(HOUR);
    let (sydney, sydney_id) = sign_in_from(&gw, Some(FIREFOX_WIN.as_bytes()), SYDNEY).await;

    let rows = rows_from(&gw, &sydney, SYDNEY).await;
    assert!(kinds(row(&rows, &london_id)).is_empty(), "someone's first sign-in is theirs: {rows:#?}");
    let flagged = row(&rows, &sydney_id);
    assert_eq!(kinds(flagged), ["new_device", "unusual_location", "impossible_travel"]);
    assert_eq!(reason(flagged, "new_device"), "First sign-in from Firefox on Windows, just now");
    assert_eq!(
        reason(flagged, "unusual_location"),
        "New South Wales, Australia is not one of your usual places: first sign-in from there just now"
    );
    let travel = reason(flagged, "impossible_travel");
    assert!(
        travel.starts_with(
            "Signed in from New South Wales, Australia 1 hour after a sign-in from United Kingdom, about "
        ) && travel.ends_with(" km away: faster than any plane"),
        "{travel}"
    );

    // The page, seen from London: the Sydney row stands out, says why in words (to screen
    // readers too) and keeps its ×; the London row is an ordinary one.
    let html = page_from(&gw, &london, LONDON).await;
    let sydney_row = row_html(&html, &sydney_id);
    assert!(sydney_row.starts_with("<li class=\"row flagged\""), "{sydney_row}");
    for text in [
        "<strong>New device</strong>: First sign-in from Firefox on Windows, just now",
        "<strong>Unusual location</strong>: New South Wales, Australia is not one of your usual places",
        "<strong>Impossible travel</strong>: Signed in from New South Wales, Australia 1 hour after",
        "<span class=\"sr-only\">Warning: </span>",
        &format!("<ul class=\"flags\" id=\"flags-{sydney_id}\""),
        &format!("action=\"/.dalea/settings/security/sessions/{sydney_id}/revoke\""),
        &format!("aria-describedby=\"flags-{sydney_id}\">×</button>"),
    ] {
        assert!(sydney_row.contains(text), "{text} is not on the flagged row:\n{sydney_row}");
    }
    let london_row = row_html(&html, &london_id);
    assert!(london_row.starts_with("<li class=\"row current\""), "{london_row}");
    assert!(!london_row.contains("class=\"flags\""), "{london_row}");
    assert!(html.contains("One session carries a warning"), "{html}");
    assert!(!html.contains(NO_GEOIP_NOTE), "the database is there");

    // Each notice-worthy warning is in the audit log (travel is on the page only).
    let resp = get_json(&gw, "/.dalea/api/audit-log", &sydney).await;
    assert_eq!(resp.status(), 200);
    let log: Value = resp.json().await.unwrap();
    let warnings: Vec<&Value> =
        log["events"].as_array().unwrap().iter().filter(|e| e["type"] == "sign_in_warning").collect();
    let events: Vec<&str> = warnings.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events.len(), 2, "{warnings:#?}");
    assert!(events.contains(&"new_device") && events.contains(&"unusual_location"), "{warnings:#?}");
    for w in &warnings {
        assert_eq!(w["session_id"], sydney_id.as_str());
        assert_eq!(w["ip"], SYDNEY);
        let described = w["description"].as_str().unwrap();
        assert_eq!(described, format!("Sign-in warning: {}", w["reason"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn a_session_signed_in_more_than_30_days_ago_is_due_a_spring_clean() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await; // remembered
    gw.clock.advance(DAY * 20);
    let (_, v) = sessions(&gw, &cookie).await;
    assert_eq!(v["sessions"][0]["flags"], json!([]), "20 days is not long");
    gw.clock.advance(DAY * 11);
    let (_, v) = sessions(&gw, &cookie).await;
    let only = &v["sessions"][0];
    assert_eq!(kinds(only), ["long_lived"]);
    assert_eq!(
        reason(only, "long_lived"),
        "Signed in 1 month ago. If you no longer use this device, sign it out: a spring-clean keeps your account safer"
    );
    let html = client()
        .get(gw.url("/.dalea/settings/security/sessions"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<strong>Signed in long ago</strong>: Signed in 1 month ago."), "{html}");
    assert!(html.contains("a spring-clean keeps your account safer"));
}

#[tokio::test]
async fn without_a_geoip_database_only_the_device_is_flagged_and_the_page_says_why_once() {
    let gw = behind_proxy(None).start();
    let (london, london_id) = sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(HOUR);
    let (_, sydney_id) = sign_in_from(&gw, Some(FIREFOX_WIN.as_bytes()), SYDNEY).await;
    let rows = rows_from(&gw, &london, LONDON).await;
    assert!(kinds(row(&rows, &london_id)).is_empty());
    assert_eq!(kinds(row(&rows, &sydney_id)), ["new_device"], "no location flag without locations");
    let html = page_from(&gw, &london, LONDON).await;
    assert_eq!(html.matches(NO_GEOIP_NOTE).count(), 1, "{html}");
    assert!(row_html(&html, &sydney_id).contains("<strong>New device</strong>"));
}

/// The `dalea-gateway` binary with no `DALEA__*` variables inherited.
fn check_config(config: &Path) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dalea-gateway"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DALEA__") {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .args(["check-config", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run check-config");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn a_geoip_database_that_does_not_load_stops_the_gateway_unless_it_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.mmdb");
    std::fs::write(&broken, b"this is not a MaxMind database").unwrap();
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[[users]]\nid = \"demo\"\nemail = \"{DEMO_EMAIL}\"\npassword_hash = \"{HASH}\"\n"),
    )
    .unwrap();
    let config = |optional: bool| {
        let path = dir.path().join(format!("gateway-{optional}.toml"));
        std::fs::write(
            &path,
            format!(
                "[users]\nfile = \"users.toml\"\n[client_info]\ngeoip_database = \"broken.mmdb\"\n\
                 geoip_optional = {optional}\n[[upstreams]]\nname = \"a\"\nbuiltin = \"whoami\"\n\
                 [[routes]]\nupstream = \"a\"\n"
            ),
        )
        .unwrap();
        path
    };
    let (ok, said) = check_config(&config(false));
    assert!(!ok, "{said}");
    assert!(said.contains("client_info.geoip_database: cannot open GeoIP database"), "{said}");
    let (ok, said) = check_config(&config(true));
    assert!(ok, "{said}");
    assert!(said.contains("geoip_optional is set, so the gateway will run without locations"), "{said}");

    // Served with it optional: no locations, so no location flags, and the page says why.
    let gw = Setup::default()
        .toml(&format!(
            "[client_info]\ntrusted_proxies = [\"127.0.0.1/32\"]\ngeoip_database = \"{}\"\ngeoip_optional = true",
            broken.display()
        ))
        .start();
    assert!(!gw.state.client_info.has_geoip());
    let (london, _) = sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(HOUR);
    let (_, sydney_id) = sign_in_from(&gw, Some(FIREFOX_WIN.as_bytes()), SYDNEY).await;
    assert_eq!(kinds(row(&rows_from(&gw, &london, LONDON).await, &sydney_id)), ["new_device"]);
    assert_eq!(page_from(&gw, &london, LONDON).await.matches(NO_GEOIP_NOTE).count(), 1);
}

#[tokio::test]
async fn missing_or_garbage_user_agents_and_private_addresses_break_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = behind_proxy(Some(&geoip_database(dir.path()))).start();
    let (london, _) = sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(DAY);
    sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(HOUR);
    let long = "Mozilla/5.0 ".repeat(800);
    let mut ids = HashMap::new();
    for (name, ua, ip) in [
        ("no user agent", None, "10.1.2.3"),
        ("garbage bytes", Some(&b"\xff\xfe(((;;;))) \x80garbage"[..]), "192.168.7.9"),
        ("a 9,600-byte user agent", Some(long.as_bytes()), "fd00::1"),
        ("no GeoIP record", Some(CHROME_MAC.as_bytes()), NO_RECORD),
        ("loopback", Some(CHROME_MAC.as_bytes()), "127.0.0.1"),
        ("an unparsable forwarded address", Some(CHROME_MAC.as_bytes()), "not-an-ip, ;;"),
    ] {
        let (_, id) = sign_in_from(&gw, ua, ip).await;
        ids.insert(name, id);
        gw.clock.advance(Duration::from_secs(600));
    }
    let rows = rows_from(&gw, &london, LONDON).await;
    assert_eq!(rows.len(), 8);
    for r in &rows {
        let k = kinds(r);
        assert!(!k.iter().any(|k| k == "unusual_location" || k == "impossible_travel"), "{r:#}");
    }
    // The first unrecognisable browser is a new device; every other one is the same device.
    let blank = row(&rows, &ids["no user agent"]);
    assert_eq!(kinds(blank), ["new_device"]);
    assert!(reason(blank, "new_device").starts_with("First sign-in from an unrecognised browser, "));
    for name in ["garbage bytes", "a 9,600-byte user agent", "no GeoIP record", "loopback"] {
        assert!(kinds(row(&rows, &ids[name])).is_empty(), "{name}: {rows:#?}");
    }
    let html = page_from(&gw, &london, LONDON).await;
    assert!(html.contains("First sign-in from an unrecognised browser"));
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_the_history_whatever_their_clocks_say() {
    let redis = RedisServer::start();
    let start = ManualClock::starting_now().now();
    // Replica 2's clock runs a minute behind replica 1's.
    let (c1, c2) = (ManualClock::new(start), ManualClock::new(start - 60_000));
    let replica = |clock: &ManualClock| {
        Setup::default()
            .toml(&format!("[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"", redis.url()))
            .clock(clock.clone())
            .start()
    };
    let (r1, r2) = (replica(&c1), replica(&c2));
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;

    let first = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    for c in [&c1, &c2] {
        c.advance(HOUR);
    }
    // The same browser through replica 2: seen before (via replica 1), not new.
    let again = sign_in(&r2, DEMO_EMAIL, CHROME_MAC).await;
    let (_, v) = sessions(&r2, &again).await;
    let rows = v["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| kinds(r).is_empty()), "{rows:#?}");
    // A new browser through replica 2 is new on both replicas' lists.
    let firefox = sign_in(&r2, DEMO_EMAIL, FIREFOX_WIN).await;
    let (_, mine) = sessions(&r2, &firefox).await;
    let id = mine["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"].clone();
    for (gw, cookie) in [(&r1, &first), (&r2, &again)] {
        let (_, v) = sessions(gw, cookie).await;
        let rows = v["sessions"].as_array().unwrap().clone();
        let id = id.as_str().unwrap();
        assert_eq!(kinds(row(&rows, id)), ["new_device"]);
        assert_eq!(
            reason(row(&rows, id), "new_device").split(", ").next(),
            Some("First sign-in from Firefox on Windows")
        );
        assert_eq!(rows.iter().filter(|r| !kinds(r).is_empty()).count(), 1, "{rows:#?}");
    }
}

// -------------------------------------------------------------------------------------------
// the webhook

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Read the request, then never answer.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    /// Lower-case names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on a loopback port: answers each request with the next scripted answer
/// (200 once the script runs out) and keeps what it received.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: &[Answer]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let seen = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, script) = (seen.clone(), script.clone());
                tokio::spawn(serve(stream, seen, script));
            }
        });
        Receiver { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/dalea?token=t0p", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "only {} of {n} webhook requests arrived", got.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Received>>>, script: Arc<Mutex<VecDeque<Answer>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, path, headers) = loop {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut parsed = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut parsed);
        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
            let headers: HashMap<String, String> = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            break (len, req.path.unwrap_or("").to_string(), headers);
        }
    };
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < head + length {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let answer = script.lock().ok().and_then(|mut s| s.pop_front()).unwrap_or(Answer::Status(200));
    if let Ok(mut seen) = seen.lock() {
        seen.push(Received { path, headers, body: buf[head..head + length].to_vec() });
    }
    let status = match answer {
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Answer::Status(s) => s,
    };
    let reply = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// What the README tells operators to do: recompute `sha256=<hex HMAC-SHA256(secret,
/// "<X-Dalea-Timestamp>.<body>")>`, compare in constant time, and refuse timestamps more than
/// five minutes away.
fn verify_as_the_readme_says(secret: &[u8], r: &Received) -> bool {
    let (Some(timestamp), Some(signature)) = (r.headers.get("x-dalea-timestamp"), r.headers.get("x-dalea-signature"))
    else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<u64>() else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if now.abs_diff(ts) > 300 {
        return false;
    }
    let Some(hex) = signature.strip_prefix("sha256=") else { return false };
    let Some(given) = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    mac.verify_slice(&given).is_ok()
}

/// A gateway behind the proxy with the GeoIP database, posting notices to `receiver`.
fn notifying(dir: &Path, receiver: &Receiver, extra: &str) -> TestGateway {
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    behind_proxy(Some(&geoip_database(dir)))
        .toml(&format!(
            "[notify]\nwebhook = \"{}\"\nsecret_file = \"{}\"\nretry_backoff = \"10ms\"\n{extra}",
            receiver.url(),
            secret.display()
        ))
        .start()
}

async fn scrape(gw: &TestGateway) -> String {
    client().get(format!("http://{}/metrics", gw.admin)).send().await.unwrap().text().await.unwrap()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} is not exported:\n{text}"))
}

/// Waits until `/metrics` shows `series` at `value` at least.
async fn metric_reaches(gw: &TestGateway, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(gw).await;
        if metric(&text, series) >= value {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} stayed below {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_device_is_notified_signed_and_retried_after_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[Answer::Status(500), Answer::Status(200)]).await;
    let gw = notifying(dir.path(), &receiver, "max_attempts = 3\ntimeout = \"2s\"");
    let before = scrape(&gw).await;
    for result in ["delivered", "failed", "dropped"] {
        assert_eq!(metric(&before, &format!("dalea_notify_webhook_notices_total{{result=\"{result}\"}}")), 0.0);
    }

    // A first sign-in and the same browser again: nothing to tell.
    sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(DAY);
    sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(DAY);
    // A new browser at home: one notice, refused once with a 500, then delivered.
    let resp = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("x-forwarded-for", LONDON)
        .header("user-agent", FIREFOX_WIN)
        .json(&json!({"email": DEMO_EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let session: Value = resp.json().await.unwrap();
    let session = &session["session"];

    let metrics = metric_reaches(&gw, r#"dalea_notify_webhook_notices_total{result="delivered"}"#, 1.0).await;
    assert_eq!(metric(&metrics, "dalea_notify_webhook_retries_total"), 1.0);
    assert_eq!(metric(&metrics, r#"dalea_notify_webhook_notices_total{result="failed"}"#), 0.0);
    let got = receiver.received();
    assert_eq!(got.len(), 2, "the 500, then the retry: {got:#?}");
    for r in &got {
        assert_eq!(r.path, "/hooks/dalea?token=t0p");
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
        assert_eq!(r.headers.get("x-dalea-event").map(String::as_str), Some("new_device"));
        assert!(verify_as_the_readme_says(SECRET.as_bytes(), r), "bad signature: {:?}", r.headers);
        assert!(!verify_as_the_readme_says(b"another secret of the same length at all", r));
        let mut tampered = r.clone();
        tampered.body[3] ^= 1;
        assert!(!verify_as_the_readme_says(SECRET.as_bytes(), &tampered), "the body is signed");
    }
    assert_eq!(got[0].headers["x-dalea-delivery"], got[1].headers["x-dalea-delivery"], "one delivery id per notice");
    assert_eq!(got[0].body, got[1].body, "a retry posts the same notice");
    let payload: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        payload,
        json!({
            "id": got[0].headers["x-dalea-delivery"],
            "event": "new_device",
            "reason": "First sign-in from Firefox on Windows",
            "user": {"id": "demo", "email": DEMO_EMAIL},
            "session": {"id": session["id"], "device": "Firefox on Windows", "ip": LONDON, "location": "London, United Kingdom"},
            "at": session["created_at"],
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_ins_never_wait_for_a_webhook_that_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[Answer::Hang; 8]).await;
    let gw = notifying(dir.path(), &receiver, "max_attempts = 1\ntimeout = \"1s\"");
    sign_in_from(&gw, Some(CHROME_MAC.as_bytes()), LONDON).await;
    gw.clock.advance(DAY);
    // Two new devices while the receiver holds every request open: both sign-ins complete.
    let (_, firefox) = sign_in_from(&gw, Some(FIREFOX_WIN.as_bytes()), LONDON).await;
    receiver.wait_for(1).await;
    gw.clock.advance(HOUR);
    let (iphone, _) = sign_in_from(&gw, Some(SAFARI_IPHONE.as_bytes()), LONDON).await;
    let rows = rows_from(&gw, &iphone, LONDON).await;
    assert_eq!(kinds(row(&rows, &firefox)), ["new_device"]);
    // Each attempt times out and, out of attempts, the notice is given up on and counted.
    let metrics = metric_reaches(&gw, r#"dalea_notify_webhook_notices_total{result="failed"}"#, 2.0).await;
    assert_eq!(metric(&metrics, r#"dalea_notify_webhook_notices_total{result="delivered"}"#), 0.0);
}
