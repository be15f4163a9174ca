//! Signing in (JSON and HTML form), signing out, and being sent to sign in.

use crate::support::*;

#[tokio::test]
async fn anonymous_browser_navigation_is_sent_to_sign_in_and_api_calls_get_401() {
    let gw = TestGateway::start();
    let resp = client().get(gw.url("/reports?year=2026")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/.dalea/signin?rd=%2Freports%3Fyear%3D2026");

    let resp = client().get(gw.url("/reports")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "signin_required");
    assert_eq!(body["signin_url"], "/.dalea/signin?rd=%2Freports");

    // A POST is never redirected (its body would be lost).
    let resp = client().post(gw.url("/reports")).header("accept", "text/html").body("x=1").send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn json_sign_in_sets_a_hardened_cookie_and_never_echoes_the_token() {
    let gw = Setup::default().env("DALEA__SESSION__COOKIE_SECURE", "true").start();
    let resp = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("user-agent", CHROME_MAC)
        .json(&serde_json::json!({"email": "Demo@Example.com", "password": PASSWORD, "remember_me": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let cookie = set_cookies(&resp).into_iter().find(|c| c.starts_with("__Host-dalea_session=")).expect("cookie");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age="] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let token = cookie.split(';').next().unwrap().split('=').nth(1).unwrap().to_string();
    let body = resp.text().await.unwrap();
    assert!(!body.contains(&token), "the token must only be in the cookie");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["session"]["sign_in_method"], "password");
    assert_eq!(v["session"]["current"], true);
    assert_eq!(v["session"]["device"], "Chrome on macOS");
}

#[tokio::test]
async fn not_remembered_sessions_get_a_browser_session_cookie() {
    let gw = TestGateway::start();
    let resp = try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let cookie = set_cookies(&resp).into_iter().find(|c| c.starts_with("dalea_session=")).unwrap();
    assert!(!cookie.contains("Max-Age") && !cookie.contains("Expires"), "{cookie}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let gw = TestGateway::start();
    let mut answers = Vec::new();
    for (email, password) in [(DEMO_EMAIL, "wrong"), ("nobody@example.com", PASSWORD)] {
        let resp = try_sign_in(&gw, email, password).await;
        assert_eq!(resp.status(), 401);
        assert!(session_cookie(&resp).is_none());
        answers.push(resp.text().await.unwrap());
    }
    assert_eq!(answers[0], answers[1]);
}

/// The HTML form: CSRF cookie + hidden token, and back to where the person was going.
#[tokio::test]
async fn form_sign_in_returns_to_the_page_and_refuses_forged_posts() {
    let gw = TestGateway::start();
    let page = client().get(gw.url("/.dalea/signin?rd=%2Fapp%2Fpage%3Fx%3D1")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["accept-ch"].to_str().unwrap().contains("Sec-CH-UA-Platform-Version"));
    let csrf_cookie = set_cookies(&page).into_iter().find(|c| c.starts_with("dalea_csrf=")).expect("csrf cookie");
    let csrf_pair = csrf_cookie.split(';').next().unwrap().to_string();
    let token = csrf_pair.split('=').nth(1).unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("name=\"csrf_token\" value=\"{token}\"")));
    // minijinja escapes '/' as &#x2f; inside attributes.
    assert!(html.replace("&#x2f;", "/").contains("name=\"rd\" value=\"/app/page?x=1\""), "{html}");

    let form = |csrf: &str| {
        vec![
            ("email", DEMO_EMAIL.to_string()),
            ("password", PASSWORD.to_string()),
            ("rd", "/app/page?x=1".to_string()),
            ("csrf_token", csrf.to_string()),
        ]
    };
    // No CSRF cookie (a cross-site POST cannot send it with a matching token): refused.
    let forged = client().post(gw.url("/.dalea/signin")).form(&form(&token)).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert!(session_cookie(&forged).is_none());
    // Cross-origin Origin header: refused.
    let cross = client()
        .post(gw.url("/.dalea/signin"))
        .header("cookie", &csrf_pair)
        .header("origin", "https://evil.example")
        .form(&form(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);

    let ok =
        client().post(gw.url("/.dalea/signin")).header("cookie", &csrf_pair).form(&form(&token)).send().await.unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/app/page?x=1");
    let cookie = session_cookie(&ok).expect("signed in");
    let app = client().get(gw.url("/app/page")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(app.status(), 200);
}

#[tokio::test]
async fn off_site_redirect_targets_fall_back_to_the_root() {
    let gw = TestGateway::start();
    for rd in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%09/evil.example",
        "/%2F%2Fevil.example",
        "javascript:alert(1)",
    ] {
        let page = client().get(gw.url("/.dalea/signin")).query(&[("rd", rd)]).send().await.unwrap();
        let csrf_pair = set_cookies(&page).into_iter().find(|c| c.starts_with("dalea_csrf=")).unwrap();
        let csrf_pair = csrf_pair.split(';').next().unwrap().to_string();
        let token = csrf_pair.split('=').nth(1).unwrap().to_string();
        let resp = client()
            .post(gw.url("/.dalea/signin"))
            .header("cookie", &csrf_pair)
            .form(&[("email", DEMO_EMAIL), ("password", PASSWORD), ("rd", rd), ("csrf_token", &token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303, "{rd}");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location == "/" || (location.starts_with('/') && !location.starts_with("//") && !location.contains("evil")),
            "{rd} → {location}"
        );
    }
}

#[tokio::test]
async fn sign_out_ends_the_session_and_clears_the_cookie() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let page =
        client().get(gw.url("/.dalea/settings/security/sessions")).header("cookie", &cookie).send().await.unwrap();
    let html = page.text().await.unwrap();
    let token = html.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();

    let no_token =
        client().post(gw.url("/.dalea/signout")).header("cookie", &cookie).form(&[("x", "1")]).send().await.unwrap();
    assert_eq!(no_token.status(), 403, "sign-out needs the CSRF token");

    let resp = client()
        .post(gw.url("/.dalea/signout"))
        .header("cookie", &cookie)
        .form(&[("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/.dalea/signin");
    assert!(set_cookies(&resp).iter().any(|c| c.starts_with("dalea_session=;") && c.contains("Max-Age=0")));
    let after =
        client().get(gw.url("/x")).header("cookie", &cookie).header("accept", "text/html").send().await.unwrap();
    assert_eq!(after.status(), 303);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_for_a_while_but_not_others() {
    let gw = TestGateway::start();
    let attempt = |email: &'static str, password: &'static str| try_sign_in(&gw, email, password);
    for _ in 0..10 {
        assert_eq!(attempt(DEMO_EMAIL, "guess").await.status(), 401);
    }
    let locked = attempt(DEMO_EMAIL, PASSWORD).await;
    assert_eq!(locked.status(), 429, "even the right password waits until the window ends");
    let retry: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    assert_eq!(attempt(SAM_EMAIL, PASSWORD).await.status(), 200, "another account is unaffected");
    gw.clock.advance(std::time::Duration::from_secs(901));
    assert_eq!(attempt(DEMO_EMAIL, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn signing_in_again_replaces_the_browsers_old_session_instead_of_orphaning_it() {
    let gw = TestGateway::start();
    let first = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let other_device = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let resp = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("cookie", &first)
        .header("user-agent", CHROME_MAC)
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let second = session_cookie(&resp).unwrap();
    assert_ne!(first, second, "a fresh token, never the one the browser brought");
    assert_eq!(client().get(gw.url("/app")).header("cookie", &first).send().await.unwrap().status(), 401);
    let (_, v) = sessions(&gw, &second).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2, "the new session and the other device: {v}");
    assert_eq!(client().get(gw.url("/app")).header("cookie", &other_device).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn concurrent_guesses_cannot_slip_past_the_limit() {
    let gw = TestGateway::start();
    let attempts: Vec<_> = (0..40)
        .map(|i| {
            let url = gw.url("/.dalea/api/signin");
            // All wrong: a correct one among them would end the lock early (by design: a
            // success clears the account's count), which is not what this test is about.
            let password = format!("guess{i}");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .json(&serde_json::json!({"email": DEMO_EMAIL, "password": password}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut checked = 0;
    for a in attempts {
        let status = a.await.unwrap();
        assert!(matches!(status, 401 | 429), "{status}");
        if status != 429 {
            checked += 1;
        }
    }
    assert!(checked <= 10, "only the account's 10 attempts may reach a password check, got {checked}");
    // And the right password is refused too until the window ends.
    let right = client()
        .post(gw.url("/.dalea/api/signin"))
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 429);
}
