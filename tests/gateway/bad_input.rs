//! Bad input from clients: malformed, duplicated, foreign and non-UTF-8 cookies and headers,
//! oversized and mistyped bodies, wrong methods, unknown paths, missing or odd `Host`, and `rd`
//! / request-target tricks. Each gets a clear 3xx/4xx answer — never a 5xx, never a redirect
//! off-site — and no stored session is lost on the way.

use reqwest::header::HeaderValue;

use crate::support::echo::seen;
use crate::support::*;

/// A raw HTTP/1.1 response, split up.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

fn parse(text: &str) -> Raw {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Raw { status, headers, body: body.to_string() }
}

/// One HTTP/1.1 request as bytes; the connection closes after it.
fn http1(method: &str, target: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in headers {
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

fn host_line(gw: &TestGateway) -> Vec<u8> {
    format!("host: {}", gw.addr).into_bytes()
}

fn send_raw(gw: &TestGateway, request: &[u8]) -> Raw {
    parse(&raw_request(gw.addr, request))
}

/// True when a redirect target stays on this site — also one hop further, when it is the
/// sign-in page whose `rd` says where to go next.
fn on_site(location: &str) -> bool {
    let plain = location.starts_with('/')
        && !location.starts_with("//")
        && !location.starts_with("/\\")
        && !location.chars().any(|c| c.is_control() || c == '\\')
        // The path part must not name the attacker's host (a query string is harmless).
        && !location.split('?').next().unwrap_or_default().to_ascii_lowercase().contains("evil");
    if !plain {
        return false;
    }
    match location.strip_prefix("/.dalea/signin?") {
        Some(q) => form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == "rd").all(|(_, rd)| on_site(&rd)),
        None => true,
    }
}

/// Every answer to bad input: a real HTTP answer, not a 5xx, and any redirect stays on site.
fn assert_clear_answer(what: &str, status: u16, location: Option<&str>) {
    assert!(status != 0, "{what}: no HTTP answer at all");
    assert!(status < 500, "{what}: answered {status}");
    if let Some(loc) = location {
        assert!(on_site(loc), "{what}: redirected off-site to {loc:?}");
    }
}

fn check_raw(what: &str, r: &Raw) {
    assert_clear_answer(what, r.status, r.header("location"));
}

fn check(what: &str, r: &reqwest::Response) {
    assert_clear_answer(what, r.status().as_u16(), r.headers().get("location").and_then(|v| v.to_str().ok()));
}

/// The sign-in form's CSRF cookie pair and token.
async fn csrf(gw: &TestGateway) -> (String, String) {
    let page = client().get(gw.url("/.dalea/signin")).send().await.unwrap();
    let pair = set_cookies(&page).into_iter().find(|c| c.starts_with("dalea_csrf=")).expect("csrf cookie");
    let pair = pair.split(';').next().unwrap().to_string();
    let token = pair.split_once('=').unwrap().1.to_string();
    (pair, token)
}

/// The token part of a `dalea_session=…` pair.
fn token_of(cookie: &str) -> &str {
    cookie.strip_prefix("dalea_session=").expect("our cookie")
}

async fn session_id(gw: &TestGateway, cookie: &str) -> String {
    let (status, v) = sessions(gw, cookie).await;
    assert_eq!(status, 200);
    let list = v["sessions"].as_array().unwrap();
    list.iter().find(|s| s["current"] == true).unwrap()["id"].as_str().unwrap().to_string()
}

fn clears_our_cookie(cookies: &[String]) -> bool {
    cookies.iter().any(|c| c.starts_with("dalea_session=") && c.contains("Max-Age=0"))
}

#[tokio::test]
async fn malformed_session_cookie_values_count_as_no_session() {
    let gw = TestGateway::start();
    let b64 = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"; // 43 base64url characters
    let values: Vec<(String, Vec<u8>)> = vec![
        ("garbage".into(), b"dalea_session=garbage".to_vec()),
        ("too long".into(), format!("dalea_session={}", "A".repeat(4000)).into_bytes()),
        ("one char too long".into(), format!("dalea_session={b64}x").into_bytes()),
        ("one char short".into(), format!("dalea_session={}", &b64[..42]).into_bytes()),
        ("standard base64 charset".into(), format!("dalea_session={}+/", &b64[..41]).into_bytes()),
        ("percent and dots".into(), format!("dalea_session={}%2E.", &b64[..38]).into_bytes()),
        ("non-ASCII UTF-8".into(), format!("dalea_session={}ü", &b64[..41]).into_bytes()),
        ("latin-1 bytes".into(), [b"dalea_session=".as_slice(), &[0xe9; 43]].concat()),
        ("empty".into(), b"dalea_session=".to_vec()),
        ("empty quotes".into(), b"dalea_session=\"\"".to_vec()),
        ("quoted garbage".into(), b"dalea_session=\"garbage\"".to_vec()),
        ("lone quote".into(), b"dalea_session=\"".to_vec()),
        ("name only".into(), b"dalea_session".to_vec()),
        ("extra equals".into(), format!("dalea_session={b64}=").into_bytes()),
        ("only separators".into(), b";;; ; =;".to_vec()),
    ];
    for (what, cookie) in &values {
        let cookie = HeaderValue::from_bytes(cookie).unwrap();
        let nav = client()
            .get(gw.url("/app/x"))
            .header("cookie", cookie.clone())
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        check(what, &nav);
        assert_eq!(nav.status(), 303, "{what}: a browser is sent to sign in");
        assert_eq!(nav.headers()["location"], "/.dalea/signin?rd=%2Fapp%2Fx", "{what}");

        let api = client().get(gw.url("/app/x")).header("cookie", cookie.clone()).send().await.unwrap();
        assert_eq!(api.status(), 401, "{what}");
        let v: serde_json::Value = api.json().await.unwrap();
        assert_eq!(v["error"], "signin_required", "{what}");

        let list = client().get(gw.url("/.dalea/api/sessions")).header("cookie", cookie.clone()).send().await.unwrap();
        assert_eq!(list.status(), 401, "{what}");

        // The sign-in page itself answers (no loop back to sign-in).
        let page = client().get(gw.url("/.dalea/signin")).header("cookie", cookie.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200, "{what}");

        // Public routes still work, and the bad value is not forwarded as if it were ours.
        let public = client().get(gw.url("/public/x")).header("cookie", cookie.clone()).send().await.unwrap();
        assert_eq!(public.status(), 200, "{what}");
        let echo: serde_json::Value = public.json().await.unwrap();
        assert!(seen(&echo, "x-dalea-user").is_empty(), "{what}");
        assert!(
            seen(&echo, "cookie").iter().all(|c| !c.contains("dalea_session")),
            "{what}: {:?}",
            seen(&echo, "cookie")
        );
    }

    // A well-formed token the store does not know: no session, and the dead cookie is cleared.
    let unknown = format!("dalea_session={b64}");
    let resp =
        client().get(gw.url("/app")).header("cookie", &unknown).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(clears_our_cookie(&set_cookies(&resp)), "{:?}", set_cookies(&resp));
}

#[tokio::test]
async fn a_quoted_copy_of_a_real_token_is_that_token() {
    // RFC 6265 allows a cookie value in double quotes; some frameworks write them that way.
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let quoted = format!("dalea_session=\"{}\"", token_of(&cookie));
    let resp = client().get(gw.url("/app")).header("cookie", &quoted).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_stale_duplicate_beside_the_live_cookie_works_in_either_order() {
    let gw = TestGateway::start();
    let live = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let revoked = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let live_id = session_id(&gw, &live).await;
    let revoked_id = session_id(&gw, &revoked).await;
    let gone = client()
        .delete(gw.url(&format!("/.dalea/api/sessions/{revoked_id}")))
        .header("cookie", &live)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let unknown = "dalea_session=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

    let one_header = |a: &str, b: &str| vec![format!("{a}; {b}")];
    let two_headers = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
    let mut cases = Vec::new();
    for stale in [revoked.as_str(), unknown, "dalea_session=garbage"] {
        cases.push(("stale first, one header", one_header(stale, &live)));
        cases.push(("live first, one header", one_header(&live, stale)));
        cases.push(("stale first, two headers", two_headers(stale, &live)));
        cases.push(("live first, two headers", two_headers(&live, stale)));
    }
    for (what, headers) in cases {
        let mut req = client().get(gw.url("/app")).header("accept", "text/html");
        for h in &headers {
            req = req.header("cookie", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{what}: {headers:?}");
        // Clearing "the" cookie would delete the live one too: the browser has one per name+path.
        assert!(!clears_our_cookie(&set_cookies(&resp)), "{what}: must not clear the cookie");
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(seen(&echo, "x-dalea-session"), vec![live_id.clone()], "{what}");
        assert!(seen(&echo, "cookie").iter().all(|c| !c.contains("dalea_session")), "{what}");

        let mut list = client().get(gw.url("/.dalea/api/sessions"));
        for h in &headers {
            list = list.header("cookie", h);
        }
        let v: serde_json::Value = list.send().await.unwrap().json().await.unwrap();
        assert_eq!(v["sessions"].as_array().unwrap().len(), 1, "{what}");
        assert_eq!(v["sessions"][0]["id"], live_id.as_str(), "{what}");
        assert_eq!(v["sessions"][0]["current"], true, "{what}");

        // Already signed in: the sign-in page goes straight on.
        let mut page = client().get(gw.url("/.dalea/signin?rd=%2Fapp"));
        for h in &headers {
            page = page.header("cookie", h);
        }
        let page = page.send().await.unwrap();
        assert_eq!(page.status(), 303, "{what}");
        assert_eq!(page.headers()["location"], "/app", "{what}");
    }
}

#[tokio::test]
async fn foreign_cookies_reach_the_upstream_untouched() {
    let gw = TestGateway::start();
    let ours = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let foreign = "theme=dark; _ga=GA1.2.3.4; empty=; weird=a=b=c; quoted=\"x y\"; dalea_session_old=1; xdalea_session=2; DALEA_SESSION=3";

    // Signed in, our cookie in the middle, plus the sign-in form's CSRF cookie.
    let header = format!("theme=dark; _ga=GA1.2.3.4; {ours}; empty=; weird=a=b=c; dalea_csrf=abc; quoted=\"x y\"; dalea_session_old=1; xdalea_session=2; DALEA_SESSION=3");
    let resp = client().get(gw.url("/app")).header("cookie", header).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(set_cookies(&resp).is_empty(), "nothing is set or cleared: {:?}", set_cookies(&resp));
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen(&echo, "cookie"), vec![foreign.to_string()]);
    assert_eq!(seen(&echo, "x-dalea-user"), vec!["demo"]);

    // Anonymous on a public route: the same cookies pass.
    let resp = client().get(gw.url("/public/x")).header("cookie", foreign).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen(&echo, "cookie"), vec![foreign.to_string()]);

    // Only foreign cookies on a session route: they are not mistaken for a session.
    let resp =
        client().get(gw.url("/app")).header("cookie", foreign).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(set_cookies(&resp).is_empty(), "no cookie of ours to clear: {:?}", set_cookies(&resp));
}

#[tokio::test]
async fn cookie_headers_with_non_utf8_bytes_get_clear_answers() {
    let gw = TestGateway::start();
    let ours = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let host = host_line(&gw);

    // Valid session plus a foreign cookie with Latin-1 bytes: signed in, the foreign one passes.
    let cookie = [b"cookie: pref=caf\xe9; ".as_slice(), ours.as_bytes(), b"; n\xffme=1"].concat();
    let r = send_raw(&gw, &http1("GET", b"/app", &[&host, &cookie], b""));
    check_raw("valid + latin-1", &r);
    assert_eq!(r.status, 200, "{r:?}");
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen(&echo, "x-dalea-user"), vec!["demo"]);
    let forwarded = seen(&echo, "cookie");
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert!(forwarded[0].starts_with("pref=caf") && forwarded[0].contains("me=1"), "{forwarded:?}");
    assert!(!forwarded[0].contains("dalea_session"), "{forwarded:?}");

    // Our cookie's value in non-UTF-8 bytes: no session.
    let bad_ours = [b"cookie: dalea_session=".as_slice(), &[0xff; 43]].concat();
    let r = send_raw(&gw, &http1("GET", b"/app", &[&host, &bad_ours, b"accept: text/html"], b""));
    check_raw("non-utf8 session value", &r);
    assert_eq!(r.status, 303, "{r:?}");
    let r = send_raw(&gw, &http1("GET", b"/.dalea/api/sessions", &[&host, &bad_ours], b""));
    assert_eq!(r.status, 401, "{r:?}");

    // Nothing but bytes: the sign-in page still renders, public routes still pass.
    let junk: &[u8] = b"cookie: \xff\xfe\x80=\x81; ;;";
    let r = send_raw(&gw, &http1("GET", b"/.dalea/signin", &[&host, junk], b""));
    check_raw("junk on sign-in page", &r);
    assert_eq!(r.status, 200, "{r:?}");
    let r = send_raw(&gw, &http1("GET", b"/public/x", &[&host, junk], b""));
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn a_non_utf8_user_agent_at_sign_in_still_gives_a_listed_session() {
    let gw = TestGateway::start();
    let body = serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}).to_string();
    let len = format!("content-length: {}", body.len());
    let req = http1(
        "POST",
        b"/.dalea/api/signin",
        &[
            &host_line(&gw),
            b"content-type: application/json",
            len.as_bytes(),
            b"user-agent: Mozilla/5.0 (X11; \xff\xfe Linux x86_64) Chr\xc3me/131.0 \x80",
            b"sec-ch-ua-platform: \"Lin\xffux\"",
            b"sec-ch-ua-platform-version: \"\xfe\"",
            b"accept-language: d\xe9",
        ],
        body.as_bytes(),
    );
    let r = send_raw(&gw, &req);
    check_raw("non-utf8 user agent sign-in", &r);
    assert_eq!(r.status, 200, "{r:?}");
    let cookie = r.all("set-cookie").into_iter().find(|c| c.starts_with("dalea_session=")).expect("signed in");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let signed: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let device = signed["session"]["device"].as_str().expect("a device label");
    assert!(!device.trim().is_empty(), "{signed}");

    let (status, v) = sessions(&gw, &cookie).await;
    assert_eq!(status, 200);
    let list = v["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], signed["session"]["id"]);
    assert!(list[0]["device"].as_str().is_some_and(|d| !d.trim().is_empty()), "{v}");

    let page =
        client().get(gw.url("/.dalea/settings/security/sessions")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("This is you"));
}

/// A 16 KiB form limit by default: both a declared `Content-Length` and a chunked body without
/// one are refused with 413, and the gateway answers at once rather than reading everything.
#[tokio::test]
async fn oversized_sign_in_bodies_get_413() {
    let gw = TestGateway::start();
    let host = host_line(&gw);
    let (csrf_pair, token) = csrf(&gw).await;
    let csrf_cookie = format!("cookie: {csrf_pair}");
    for (path, ctype) in
        [("/.dalea/signin", "application/x-www-form-urlencoded"), ("/.dalea/api/signin", "application/json")]
    {
        let ctype = format!("content-type: {ctype}");
        // Declared too large: refused up front, before the body arrives.
        let r = send_raw(
            &gw,
            &http1(
                "POST",
                path.as_bytes(),
                &[&host, ctype.as_bytes(), csrf_cookie.as_bytes(), b"content-length: 1000000"],
                b"email=x",
            ),
        );
        check_raw(path, &r);
        assert_eq!(r.status, 413, "{path} by Content-Length: {r:?}");

        // Chunked, no Content-Length: counted while reading.
        let mut chunked = Vec::new();
        for _ in 0..5 {
            chunked.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
            chunked.extend_from_slice(&[b'a'; 4096]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let r = send_raw(
            &gw,
            &http1(
                "POST",
                path.as_bytes(),
                &[&host, ctype.as_bytes(), csrf_cookie.as_bytes(), b"transfer-encoding: chunked"],
                &chunked,
            ),
        );
        check_raw(path, &r);
        assert_eq!(r.status, 413, "{path} chunked: {r:?}");
        assert!(r.all("set-cookie").iter().all(|c| !c.starts_with("dalea_session=")));
    }
    let r = send_raw(
        &gw,
        &http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, b"content-type: application/json", b"content-length: 1000000", b"accept: application/json"],
            b"",
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"], "payload_too_large");

    // Just under the limit is fine, as a form and as a chunked JSON body.
    let padding = "p".repeat(15_000);
    let ok = client()
        .post(gw.url("/.dalea/signin"))
        .header("cookie", &csrf_pair)
        .form(&[
            ("email", DEMO_EMAIL),
            ("password", PASSWORD),
            ("csrf_token", &token),
            ("rd", "/app"),
            ("padding", &padding),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/app");
    let json = serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}).to_string();
    let chunked = format!("{:x}\r\n{json}\r\n0\r\n\r\n", json.len());
    let r = send_raw(
        &gw,
        &http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, b"content-type: application/json", b"transfer-encoding: chunked"],
            chunked.as_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");

    // The gateway is fine afterwards.
    assert_eq!(client().get(gw.url("/public/x")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn json_sign_in_refuses_wrong_types_and_bad_bodies() {
    let gw = TestGateway::start();
    let good = serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}).to_string();
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("text/plain", Some("text/plain"), good.clone().into_bytes(), 415),
        ("form type", Some("application/x-www-form-urlencoded"), good.clone().into_bytes(), 415),
        ("no content type", None, good.clone().into_bytes(), 415),
        ("json-ish but not json", Some("application/jsonp"), good.clone().into_bytes(), 415),
        ("garbage", Some("application/json"), b"{not json".to_vec(), 400),
        ("empty body", Some("application/json"), Vec::new(), 400),
        ("array", Some("application/json"), b"[1,2]".to_vec(), 400),
        ("non-utf8", Some("application/json"), b"{\"email\":\"\xff\"}".to_vec(), 400),
        ("missing password", Some("application/json"), format!("{{\"email\":\"{DEMO_EMAIL}\"}}").into_bytes(), 400),
        ("missing email", Some("application/json"), format!("{{\"password\":\"{PASSWORD}\"}}").into_bytes(), 400),
        ("wrong types", Some("application/json"), b"{\"email\":5,\"password\":[]}".to_vec(), 400),
        (
            "unknown field",
            Some("application/json"),
            format!("{{\"email\":\"{DEMO_EMAIL}\",\"password\":\"{PASSWORD}\",\"admin\":true}}").into_bytes(),
            400,
        ),
    ];
    for (what, ctype, body, expected) in cases {
        let mut req = client().post(gw.url("/.dalea/api/signin")).body(body);
        if let Some(ct) = ctype {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        check(what, &resp);
        assert_eq!(resp.status(), expected, "{what}");
        assert!(session_cookie(&resp).is_none(), "{what}: no session");
        let v: serde_json::Value = resp.json().await.unwrap();
        let code = if expected == 415 { "unsupported_media_type" } else { "bad_request" };
        assert_eq!(v["error"], code, "{what}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
    }

    // The same body with the right type (and a charset parameter) signs in.
    let ok = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("content-type", "application/json; charset=utf-8")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // The HTML form wants a form, not JSON.
    let (pair, token) = csrf(&gw).await;
    let resp = client()
        .post(gw.url("/.dalea/signin"))
        .header("cookie", &pair)
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD, "csrf_token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert!(session_cookie(&resp).is_none());
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow_and_change_nothing() {
    let gw = TestGateway::start();
    let mine = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let other = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let other_id = session_id(&gw, &other).await;
    let revoke_form = format!("/.dalea/settings/security/sessions/{other_id}/revoke");
    let revoke_api = format!("/.dalea/api/sessions/{other_id}");
    let cases = [
        ("GET", "/.dalea/api/signin", "POST"),
        ("GET", "/.dalea/signout", "POST"),
        ("HEAD", "/.dalea/signout", "POST"),
        ("GET", revoke_form.as_str(), "POST"),
        ("GET", revoke_api.as_str(), "DELETE"),
        ("POST", revoke_api.as_str(), "DELETE"),
        ("PUT", "/.dalea/signin", "GET, HEAD, POST"),
        ("DELETE", "/.dalea/settings/security/sessions", "GET, HEAD"),
        ("POST", "/.dalea/api/sessions", "GET, HEAD"),
        ("PATCH", "/.dalea/api/sessions", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        for accept in ["application/json", "text/html"] {
            let resp = client()
                .request(method.parse().unwrap(), gw.url(path))
                .header("cookie", &mine)
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            check(path, &resp);
            assert_eq!(resp.status(), 405, "{method} {path}");
            assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        }
    }
    // No method override either.
    let resp = client()
        .post(gw.url("/.dalea/api/sessions"))
        .header("cookie", &mine)
        .header("x-http-method-override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    // GET never changed state: both sessions still work.
    assert_eq!(client().get(gw.url("/app")).header("cookie", &mine).send().await.unwrap().status(), 200);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &other).send().await.unwrap().status(), 200);
    assert_eq!(sessions(&gw, &mine).await.1["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_builtin_paths_are_404_and_never_reach_the_upstream() {
    let gw = TestGateway::start();
    let mine = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    for path in [
        "/.dalea/nope",
        "/.dalea/api/nope",
        "/.dalea/api/signin/extra",
        "/.dalea/signin/",
        "/.dalea/settings/security/other",
        "/.dalea/settings/security/sessions/x/y/revoke/z",
    ] {
        for cookie in [None, Some(mine.as_str())] {
            let mut req = client().get(gw.url(path));
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            let json = req.send().await.unwrap();
            check(path, &json);
            assert_eq!(json.status(), 404, "{path}");
            let v: serde_json::Value = json.json().await.unwrap();
            assert_eq!(v["error"], "not_found", "{path}: the gateway answered, not the upstream: {v}");
        }
        // Browsers get a page, except under /.dalea/api/ which always speaks JSON.
        let html = client().get(gw.url(path)).header("accept", "text/html").send().await.unwrap();
        assert_eq!(html.status(), 404, "{path}");
        let ctype = html.headers()["content-type"].to_str().unwrap().to_string();
        let expected = if path.starts_with("/.dalea/api/") { "application/json" } else { "text/html" };
        assert!(ctype.starts_with(expected), "{path}: {ctype}");
        assert!(html.text().await.unwrap().contains("Not found"), "{path}");
    }
    // Sent raw (URL parsers resolve these before sending): a dot segment out of the prefix is
    // not resolved into an upstream path.
    for target in [&b"/.dalea/../app"[..], b"/.dalea/%2e%2e/app", b"/.dalea/%2E%2E/public/x"] {
        let r = send_raw(&gw, &http1("GET", target, &[&host_line(&gw)], b""));
        let what = String::from_utf8_lossy(target).into_owned();
        check_raw(&what, &r);
        assert!(r.status == 404 || r.status == 400, "{what}: {r:?}");
        assert!(!r.body.contains("\"headers\""), "{what}: reached the upstream: {r:?}");
    }
}

#[tokio::test]
async fn head_on_the_sign_in_page_has_the_headers_and_no_body() {
    let gw = TestGateway::start();
    let get = client().get(gw.url("/.dalea/signin?rd=%2Fapp")).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let get_len = get.text().await.unwrap().len();

    let head = client().head(gw.url("/.dalea/signin?rd=%2Fapp")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(head.headers()["cache-control"], "no-store");
    assert_eq!(head.headers()["content-length"].to_str().unwrap(), get_len.to_string(), "the GET's length");
    assert!(set_cookies(&head).iter().any(|c| c.starts_with("dalea_csrf=")));
    assert!(head.bytes().await.unwrap().is_empty());

    // On the wire: nothing after the header block, so keep-alive connections stay in sync.
    let r = send_raw(&gw, &http1("HEAD", b"/.dalea/signin", &[&host_line(&gw)], b""));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty(), "HEAD sent a body: {:?}", r.body);

    // Signed in, HEAD goes straight on like GET does.
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let head = client().head(gw.url("/.dalea/signin?rd=%2Fapp")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(head.status(), 303);
    assert_eq!(head.headers()["location"], "/app");
}

/// `rd` tricks on the paths the form-POST test does not cover: the page's hidden field, the
/// "already signed in" shortcut, header injection, and odd request targets of a page that
/// needs sign-in.
#[tokio::test]
async fn redirect_targets_never_leave_the_site() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let tricks = [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\/evil.example",
        "https://evil.example/",
        "http:evil.example",
        "HTTPS://EVIL.EXAMPLE",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%09/evil.example",
        "/%0a/evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%0d%0aSet-Cookie:%20dalea_session=x",
        " //evil.example",
        "javascript:alert(1)",
        "data:text/html,hi",
        "evil.example",
    ];
    for rd in tricks {
        // The sign-in page carries a safe rd, never the trick.
        let page = client().get(gw.url("/.dalea/signin")).query(&[("rd", rd)]).send().await.unwrap();
        check(rd, &page);
        assert_eq!(page.status(), 200, "{rd:?}");
        let html = page.text().await.unwrap().replace("&#x2f;", "/");
        let field = html.split("name=\"rd\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        assert!(on_site(&field), "{rd:?} → hidden rd {field:?}");

        // Already signed in: straight on, but only on site.
        let resp =
            client().get(gw.url("/.dalea/signin")).query(&[("rd", rd)]).header("cookie", &cookie).send().await.unwrap();
        check(rd, &resp);
        assert_eq!(resp.status(), 303, "{rd:?}");
        assert!(set_cookies(&resp).is_empty(), "{rd:?}: no header injection: {:?}", set_cookies(&resp));
    }

    // A page that needs sign-in, requested with odd targets: the sign-in link stays on site.
    let host = host_line(&gw);
    for target in [
        &b"//evil.example/"[..],
        b"//evil.example/%2F..",
        b"/\\evil.example",
        b"/%2F%2Fevil.example",
        b"/%09/evil.example",
        b"http://evil.example/app",
        b"/app?rd=//evil.example",
    ] {
        let r = send_raw(&gw, &http1("GET", target, &[&host, b"accept: text/html"], b""));
        let what = String::from_utf8_lossy(target).into_owned();
        check_raw(&what, &r);
        assert!(r.status == 303 || r.status == 400 || r.status == 404, "{what}: {r:?}");
    }
}

#[tokio::test]
async fn missing_or_odd_host_headers_get_clear_answers() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let cookie_line = format!("cookie: {cookie}");
    let hosts: [&[u8]; 10] = [
        b"",
        b"host:",
        b"host: evil.example",
        b"host: evil.example:99999",
        b"host: [::1",
        b"host: a b c",
        b"host: \xff\xfe",
        b"host: evil.example\r\nhost: other.example",
        b"host: 127.0.0.1:1/\\evil.example",
        b"host: ../../etc",
    ];
    for host in hosts {
        let what = String::from_utf8_lossy(host).into_owned();
        let mut lines: Vec<&[u8]> = Vec::new();
        if !host.is_empty() {
            lines.push(host);
        }
        // Anonymous browser: either refused as bad input or sent to a relative sign-in URL —
        // never to a URL built from the Host header.
        let nav = [lines.clone(), vec![b"accept: text/html".as_slice()]].concat();
        let r = send_raw(&gw, &http1("GET", b"/app", &nav, b""));
        check_raw(&what, &r);
        assert!(r.status == 303 || r.status == 400, "{what}: {r:?}");
        // Signed in: proxied or refused, not a 5xx.
        let signed = [lines.clone(), vec![cookie_line.as_bytes()]].concat();
        let r = send_raw(&gw, &http1("GET", b"/app", &signed, b""));
        check_raw(&what, &r);
        assert!(r.status == 200 || r.status == 400, "{what}: {r:?}");
        // The sign-in form with an odd Host and a matching-looking Origin: refused cleanly.
        let form = [
            lines.clone(),
            vec![
                b"content-type: application/x-www-form-urlencoded".as_slice(),
                b"origin: http://evil.example",
                b"content-length: 3",
            ],
        ]
        .concat();
        let r = send_raw(&gw, &http1("POST", b"/.dalea/signin", &form, b"a=1"));
        check_raw(&what, &r);
        assert!(r.all("set-cookie").iter().all(|c| !c.starts_with("dalea_session=")), "{what}: {r:?}");
    }
    // HTTP/1.0 has no Host requirement at all.
    let r = parse(&raw_request(gw.addr, format!("GET /app HTTP/1.0\r\ncookie: {cookie}\r\n\r\n").as_bytes()));
    check_raw("HTTP/1.0", &r);
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn host_specific_routes_do_not_match_a_missing_or_odd_host() {
    let gw = Setup::default()
        .routes("[[routes]]\nhost = \"app.example\"\npath_prefix = \"/\"\nupstream = \"app\"\naccess = \"public\"\n")
        .start();
    let r = send_raw(&gw, &http1("GET", b"/", &[b"host: APP.Example:8080"], b""));
    assert_eq!(r.status, 200, "case and port do not matter: {r:?}");
    for host in
        [&b""[..], b"host: app.example.evil", b"host: \xffapp.example", b"host: evil.example\r\nhost: app.example"]
    {
        let lines: Vec<&[u8]> = if host.is_empty() { vec![] } else { vec![host] };
        let r = send_raw(&gw, &http1("GET", b"/", &lines, b""));
        let what = String::from_utf8_lossy(host).into_owned();
        check_raw(&what, &r);
        assert!(r.status == 404 || r.status == 400, "{what}: {r:?}");
    }
}

/// The key property: a barrage of bad input, some of it carrying real session cookies, and
/// afterwards every session is still there, still works and is still listed.
#[tokio::test]
async fn bad_input_never_loses_a_stored_session() {
    let gw = TestGateway::start();
    let mac = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let win = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let sam = sign_in(&gw, SAM_EMAIL, CHROME_MAC).await;
    let mac_id = session_id(&gw, &mac).await;
    let win_id = session_id(&gw, &win).await;
    let sam_id = session_id(&gw, &sam).await;
    let host = host_line(&gw);
    let mac_line = format!("cookie: {mac}");
    let win_line = format!("cookie: {win}");

    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |what: &str, req: Vec<u8>| raw.push((what.to_string(), req));
    add(
        "dup cookies",
        http1("GET", b"/app", &[&host, format!("cookie: {mac}; {win}; {sam}; dalea_session=x").as_bytes()], b""),
    );
    add(
        "half-quoted token",
        http1("GET", b"/app", &[&host, format!("cookie: dalea_session=\"{}", token_of(&mac)).as_bytes()], b""),
    );
    add(
        "truncated token",
        http1("GET", b"/app", &[&host, format!("cookie: {}", &mac[..mac.len() - 1]).as_bytes()], b""),
    );
    add("non-utf8 cookie", http1("GET", b"/app", &[&host, b"cookie: dalea_session=\xff\xff; \xfe=\xfd"], b""));
    add("non-utf8 xff", http1("GET", b"/app", &[&host, mac_line.as_bytes(), b"x-forwarded-for: \xff, 1.2.3.4"], b""));
    add("non-utf8 accept", http1("GET", b"/app", &[&host, mac_line.as_bytes(), b"accept: text/ht\xffml"], b""));
    add(
        "non-utf8 origin on sign-out",
        http1(
            "POST",
            b"/.dalea/signout",
            &[
                &host,
                mac_line.as_bytes(),
                b"origin: http://\xff",
                b"content-type: application/x-www-form-urlencoded",
                b"content-length: 12",
            ],
            b"csrf_token=x",
        ),
    );
    add(
        "sign-out without token",
        http1(
            "POST",
            b"/.dalea/signout",
            &[&host, mac_line.as_bytes(), b"content-type: application/x-www-form-urlencoded", b"content-length: 3"],
            b"a=1",
        ),
    );
    add(
        "sign-out as json",
        http1(
            "POST",
            b"/.dalea/signout",
            &[&host, mac_line.as_bytes(), b"content-type: application/json", b"content-length: 2"],
            b"{}",
        ),
    );
    add(
        "oversized sign-out",
        http1(
            "POST",
            b"/.dalea/signout",
            &[
                &host,
                mac_line.as_bytes(),
                b"content-type: application/x-www-form-urlencoded",
                b"content-length: 999999",
            ],
            b"csrf_token=",
        ),
    );
    add("GET sign-out", http1("GET", b"/.dalea/signout", &[&host, win_line.as_bytes()], b""));
    add("revoke garbage id", http1("DELETE", b"/.dalea/api/sessions/%00%ff..", &[&host, mac_line.as_bytes()], b""));
    add(
        "revoke long id",
        http1(
            "DELETE",
            format!("/.dalea/api/sessions/{}", "A".repeat(2000)).as_bytes(),
            &[&host, mac_line.as_bytes()],
            b"",
        ),
    );
    add(
        "revoke cross-site",
        http1(
            "DELETE",
            format!("/.dalea/api/sessions/{win_id}").as_bytes(),
            &[&host, mac_line.as_bytes(), b"origin: https://evil.example"],
            b"",
        ),
    );
    add(
        "revoke sec-fetch cross-site",
        http1(
            "DELETE",
            format!("/.dalea/api/sessions/{win_id}").as_bytes(),
            &[&host, mac_line.as_bytes(), b"sec-fetch-site: cross-site"],
            b"",
        ),
    );
    add(
        "revoke someone else's",
        http1("DELETE", format!("/.dalea/api/sessions/{sam_id}").as_bytes(), &[&host, mac_line.as_bytes()], b""),
    );
    add(
        "revoke own",
        http1("DELETE", format!("/.dalea/api/sessions/{mac_id}").as_bytes(), &[&host, mac_line.as_bytes()], b""),
    );
    add(
        "revoke form without token",
        http1(
            "POST",
            format!("/.dalea/settings/security/sessions/{win_id}/revoke").as_bytes(),
            &[&host, mac_line.as_bytes(), b"content-type: application/x-www-form-urlencoded", b"content-length: 12"],
            b"csrf_token=x",
        ),
    );
    add(
        "revoke via GET",
        http1("GET", format!("/.dalea/api/sessions/{win_id}").as_bytes(), &[&host, mac_line.as_bytes()], b""),
    );
    add("chunked oversized sign-in", {
        let mut body = Vec::new();
        for _ in 0..20 {
            body.extend_from_slice(b"400\r\n");
            body.extend_from_slice(&[b'{'; 1024]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, mac_line.as_bytes(), b"content-type: application/json", b"transfer-encoding: chunked"],
            &body,
        )
    });
    add(
        "garbage json sign-in with a cookie",
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, mac_line.as_bytes(), b"content-type: application/json", b"content-length: 5"],
            b"{\"a\":",
        ),
    );
    add("wrong password with a cookie", {
        let body = format!("{{\"email\":\"{DEMO_EMAIL}\",\"password\":\"wrong\"}}");
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[
                &host,
                mac_line.as_bytes(),
                b"content-type: application/json",
                format!("content-length: {}", body.len()).as_bytes(),
            ],
            body.as_bytes(),
        )
    });
    add("unknown path", http1("GET", b"/.dalea/admin/dump", &[&host, mac_line.as_bytes()], b""));
    add("dot segments", http1("GET", b"/public/%2e%2e/app", &[&host, mac_line.as_bytes()], b""));
    add("no host", http1("GET", b"/app", &[mac_line.as_bytes()], b""));
    add("odd host", http1("GET", b"/.dalea/api/sessions", &[b"host: \xff", mac_line.as_bytes()], b""));
    add(
        "spoofed identity",
        http1(
            "GET",
            b"/app",
            &[&host, b"x-dalea-user: sam", b"x-dalea-session: x", b"cookie: dalea_session=garbage"],
            b"",
        ),
    );
    add(
        "broken chunked body",
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, mac_line.as_bytes(), b"content-type: application/json", b"transfer-encoding: chunked"],
            b"zz\r\nabc\r\n0\r\n\r\n",
        ),
    );
    add(
        "non-numeric content-length",
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, b"content-type: application/json", b"content-length: abc"],
            b"{}",
        ),
    );
    add(
        "negative content-length",
        http1(
            "POST",
            b"/.dalea/signin",
            &[&host, b"content-type: application/x-www-form-urlencoded", b"content-length: -1"],
            b"a=1",
        ),
    );
    add(
        "conflicting content-lengths",
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, b"content-type: application/json", b"content-length: 2", b"content-length: 5"],
            b"{}",
        ),
    );
    add(
        "content-length and chunked",
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, b"content-type: application/json", b"content-length: 2", b"transfer-encoding: chunked"],
            b"2\r\n{}\r\n0\r\n\r\n",
        ),
    );
    add(
        "expect 100-continue, too large",
        http1(
            "POST",
            b"/.dalea/api/signin",
            &[&host, b"content-type: application/json", b"content-length: 100000", b"expect: 100-continue"],
            b"",
        ),
    );
    let huge_cookie = format!("cookie: big={}; {mac}", "x".repeat(100_000));
    add("100 KB of foreign cookie", http1("GET", b"/app", &[&host, huge_cookie.as_bytes()], b""));
    add(
        "20 KB rd",
        http1(
            "GET",
            format!("/.dalea/signin?rd=/{}", "a".repeat(20_000)).as_bytes(),
            &[&host, mac_line.as_bytes()],
            b"",
        ),
    );
    add("control byte in path", http1("GET", b"/app\x01x", &[&host, mac_line.as_bytes()], b""));
    add("non-utf8 path", http1("GET", b"/app/\xc3\xa9\xff", &[&host, mac_line.as_bytes()], b""));
    add("CONNECT", http1("CONNECT", b"evil.example:443", &[&host, mac_line.as_bytes()], b""));
    add("unknown method on a built-in page", http1("FOO", b"/.dalea/signin", &[&host, mac_line.as_bytes()], b""));
    add("rd trick", http1("GET", b"/.dalea/signin?rd=%2F%2Fevil.example", &[&host, mac_line.as_bytes()], b""));

    for (what, req) in &raw {
        let r = send_raw(&gw, req);
        check_raw(what, &r);
        assert!(r.all("set-cookie").iter().all(|c| !c.starts_with("dalea_session=")), "{what}: {r:?}");
    }

    // Everything is still there and still works.
    for (cookie, id) in [(&mac, &mac_id), (&win, &win_id), (&sam, &sam_id)] {
        let resp = client().get(gw.url("/app")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(resp.status(), 200, "session {id} still works");
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(seen(&echo, "x-dalea-session"), vec![id.clone()]);
    }
    let (_, v) = sessions(&gw, &mac).await;
    let mut ids: Vec<String> =
        v["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let mut expected = vec![mac_id.clone(), win_id.clone()];
    expected.sort();
    assert_eq!(ids, expected, "demo's two sessions are listed, nothing more, nothing less");
    assert_eq!(sessions(&gw, &sam).await.1["sessions"].as_array().unwrap().len(), 1);
    // Straight from the store, bypassing the cache.
    let store = &gw.state.sessions.store;
    assert_eq!(store.list_for_user("demo").await.unwrap().len(), 2);
    assert_eq!(store.list_for_user("sam").await.unwrap().len(), 1);
}

/// A built-in endpoint that fails while a body is pending closes the connection, so the rest of
/// that body (or anything behind it) is never read as the next request.
#[test]
fn a_failed_body_on_a_builtin_endpoint_closes_the_connection() {
    use std::io::{Read, Write};
    let gw = TestGateway::start();
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let parts: [&[u8]; 3] = [
        b"POST /.dalea/api/signin HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"ZZ\r\n",
        b"GET /public/SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for part in parts {
        let _ = stream.write_all(part);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "only one response; the smuggled request was not served: {text}");
}

/// Content-Length together with Transfer-Encoding: the connection is not reused (RFC 9112 §6.1).
#[test]
fn content_length_with_transfer_encoding_is_not_kept_alive() {
    let gw = TestGateway::start();
    let resp = raw_request(
        gw.addr,
        b"POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(!resp.to_ascii_lowercase().contains("connection: keep-alive"), "{resp}");
}
