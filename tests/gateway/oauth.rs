//! Sign-in through providers, end to end: a real OpenID Provider (`oidc-provider`) and the
//! GitHub stand-in, the gateway on real sockets, and the person's browser played by HTTP
//! clients that keep each site's cookies apart.

use serde_json::Value;

use crate::support::echo::seen;
use crate::support::github::{GitHubConfig, GitHubStandIn, GitHubUser};
use crate::support::oidc::*;
use crate::support::redis::RedisServer;
use crate::support::*;

const CLIENT_ID: &str = "dalea-gateway";
const CLIENT_SECRET: &str = "test-secret-not-for-production";

fn provider(accounts: &[OidcAccount]) -> OidcProvider {
    let client =
        OidcClient::new(CLIENT_ID, CLIENT_SECRET, "http://127.0.0.1/.dalea/oauth/corp/callback").any_loopback_port();
    let mut config = OidcConfig::new(SigningKeys::rs256()).client(client);
    for a in accounts {
        config = config.account(a.clone());
    }
    OidcProvider::start(config)
}

/// `[oauth]` with `rules`, and the provider `corp` at `issuer`.
fn oauth_toml(issuer: &str, rules: &str) -> String {
    oauth_toml_at("{gateway_url}", issuer, rules)
}

/// The same, with another public URL (a load balancer's in front of several replicas).
fn oauth_toml_at(public_url: &str, issuer: &str, rules: &str) -> String {
    format!(
        "[oauth]\npublic_url = \"{public_url}\"\n{rules}\n\
         [[oauth.providers]]\nkind = \"oidc\"\nname = \"corp\"\ndisplay_name = \"Corp SSO\"\nissuer = \"{issuer}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n"
    )
}

fn gateway(op: &OidcProvider, rules: &str) -> TestGateway {
    Setup::default().toml(&oauth_toml(&op.issuer(), rules)).start()
}

fn alice() -> OidcAccount {
    OidcAccount::new("alice-sub", "alice@example.com", true, "Alice Example")
}

/// The provider account of the users file's demo person.
fn demo_at_provider() -> OidcAccount {
    OidcAccount::new("demo-sub", DEMO_EMAIL, true, "Demo at Corp")
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// The `name=value` of the binding cookie a start response set.
fn binding_cookie(resp: &reqwest::Response) -> String {
    set_cookies(resp)
        .into_iter()
        .find(|c| c.starts_with("dalea_oauth="))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .expect("start sets the binding cookie")
}

/// A sign-in begun at the gateway: where it sends the browser, and the browser's cookie.
struct Started {
    authorize: String,
    cookie: String,
}

async fn start(gw: &TestGateway, provider: &str, query: &str) -> Started {
    let resp = client().get(gw.url(&format!("/.dalea/oauth/{provider}/start{query}"))).send().await.unwrap();
    assert_eq!(resp.status(), 303, "start redirects to the provider");
    Started { authorize: location(&resp), cookie: binding_cookie(&resp) }
}

/// The browser arrives back at the gateway's callback with `cookie`.
async fn callback(gw_callback_url: &str, cookie: &str) -> reqwest::Response {
    client().get(gw_callback_url).header("cookie", cookie).send().await.unwrap()
}

/// Start, approve at the provider as `login`, come back: the callback's response.
async fn sign_in_as(gw: &TestGateway, browser: &ProviderBrowser, login: &str) -> reqwest::Response {
    let s = start(gw, "corp", "?rd=/dashboard").await;
    let back = browser.approve(&s.authorize, login).await;
    assert!(back.starts_with(&gw.url("/.dalea/oauth/corp/callback?")), "back at the gateway: {back}");
    callback(&back, &s.cookie).await
}

async fn page_text(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn echo_identity(gw: &TestGateway, cookie: &str) -> Value {
    let resp = client().get(gw.url("/app")).header("cookie", cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn signins(gw: &TestGateway, outcome: &str) -> f64 {
    let text = gw.state.render_metrics();
    let series = format!("dalea_signins_total{{method=\"oauth:corp\",outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.parse().unwrap_or(0.0))
}

#[tokio::test]
async fn a_verified_email_links_to_the_person_and_the_session_says_oauth() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let browser = ProviderBrowser::new();

    let resp = sign_in_as(&gw, &browser, "demo-sub").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/dashboard", "back where the person was going");
    let cookie = session_cookie(&resp).expect("a session");
    // Signed in, a start goes straight on instead of making a second session.
    let again = client().get(gw.url("/.dalea/oauth/corp/start?rd=/next")).header("cookie", &cookie).send().await;
    assert_eq!(location(&again.unwrap()), "/next");
    assert!(!set_cookies(&resp).iter().any(|c| c.contains("Max-Age") && c.contains("dalea_session")), "not remembered");

    let got = echo_identity(&gw, &cookie).await;
    assert_eq!(seen(&got, "x-dalea-user"), vec!["demo"], "the users file's person");
    assert_eq!(seen(&got, "x-dalea-email"), vec![DEMO_EMAIL]);
    let (_, list) = sessions(&gw, &cookie).await;
    assert_eq!(list["sessions"][0]["sign_in_method"], "oauth:corp");
    let page = client().get(gw.url("/.dalea/settings/security/sessions")).header("cookie", &cookie).send().await;
    let html = page.unwrap().text().await.unwrap();
    assert!(html.contains("OAuth (Corp SSO)"), "the sessions page names the provider");
    let links = gw.state.links.links_of("demo").await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].provider.as_str(), links[0].subject.as_str()), ("corp", "demo-sub"));
    assert_eq!(signins(&gw, "success"), 1.0);

    // The audit log says how.
    let log = gw.state.accounts.audit_page("demo", None, 10).await.unwrap();
    assert!(log.iter().any(|e| e.json.contains("\"sign_in\"") && e.json.contains("oauth:corp")), "{log:?}");
}

#[tokio::test]
async fn a_linked_identity_is_found_by_subject_even_after_its_email_changes() {
    let mut op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let resp = sign_in_as(&gw, &ProviderBrowser::new(), "demo-sub").await;
    assert!(session_cookie(&resp).is_some());

    // The person changes their email at the provider (unverified, even): still them.
    let changed = OidcAccount::new("demo-sub", "someone-else@example.org", false, "Demo");
    let mut config = op.config().clone();
    config.accounts = vec![changed];
    op.restart_with(config);
    let resp = sign_in_as(&gw, &ProviderBrowser::new(), "demo-sub").await;
    let cookie = session_cookie(&resp).expect("signed in by the link");
    assert_eq!(seen(&echo_identity(&gw, &cookie).await, "x-dalea-user"), vec!["demo"]);
}

#[tokio::test]
async fn without_linking_by_email_a_matching_email_is_refused_and_nothing_is_linked() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "");
    let (status, html) = page_text(sign_in_as(&gw, &ProviderBrowser::new(), "demo-sub").await).await;
    assert_eq!(status, 403);
    assert!(html.contains("already uses this Corp SSO account"), "{html}");
    assert!(html.contains("<form"), "the sign-in form, to sign in as before");
    assert!(gw.state.links.links_of("demo").await.unwrap().is_empty());
    assert_eq!(signins(&gw, "refused"), 1.0);
}

#[tokio::test]
async fn unknown_people_are_refused_by_default_and_created_when_configured() {
    let op = provider(&[alice()]);
    let refusing = gateway(&op, "");
    let resp = sign_in_as(&refusing, &ProviderBrowser::new(), "alice-sub").await;
    assert!(session_cookie(&resp).is_none());
    let (status, html) = page_text(resp).await;
    assert_eq!(status, 403);
    assert!(html.contains("There is no account here for this Corp SSO account"), "{html}");
    assert_eq!(refusing.state.person_by_email("alice@example.com").await.unwrap(), None);

    let creating = gateway(&op, "unknown_people = \"create\"");
    let resp = sign_in_as(&creating, &ProviderBrowser::new(), "alice-sub").await;
    assert_eq!(resp.status(), 303);
    let cookie = session_cookie(&resp).expect("a session for the new person");
    let got = echo_identity(&creating, &cookie).await;
    let id = seen(&got, "x-dalea-user").pop().expect("an id");
    assert!(id.starts_with("p-"), "a created person's id: {id}");
    assert_eq!(seen(&got, "x-dalea-email"), vec!["alice@example.com"]);
    // The next sign-in is the same person, not another one.
    let again = sign_in_as(&creating, &ProviderBrowser::new(), "alice-sub").await;
    let cookie = session_cookie(&again).expect("signed in again");
    assert_eq!(seen(&echo_identity(&creating, &cookie).await, "x-dalea-user"), vec![id]);
    // A created person has no password: the password form never lets them in.
    assert_eq!(try_sign_in(&creating, "alice@example.com", "").await.status(), 401);
}

#[tokio::test]
async fn unverified_emails_and_addresses_off_the_allow_list_are_refused() {
    let op = provider(&[
        OidcAccount::new("unverified", "unverified@example.com", false, "Unverified"),
        OidcAccount::new("outsider", "outsider@other.example", true, "Outsider"),
        OidcAccount::new("partner", "partner@other.example", true, "Partner"),
    ]);
    let gw = gateway(
        &op,
        "unknown_people = \"create\"\nallowed_domains = [\"example.com\"]\nallowed_emails = [\"partner@other.example\"]",
    );
    let (status, html) = page_text(sign_in_as(&gw, &ProviderBrowser::new(), "unverified").await).await;
    assert_eq!(status, 403);
    assert!(html.contains("did not confirm an email address"), "{html}");
    let (status, html) = page_text(sign_in_as(&gw, &ProviderBrowser::new(), "outsider").await).await;
    assert_eq!(status, 403);
    assert!(html.contains("not allowed to sign in here"), "{html}");
    let resp = sign_in_as(&gw, &ProviderBrowser::new(), "partner").await;
    assert!(session_cookie(&resp).is_some(), "an address on the list gets in");
    assert_eq!(gw.state.person_by_email("outsider@other.example").await.unwrap(), None, "nobody created");
}

#[tokio::test]
async fn a_missing_forged_replayed_or_foreign_state_restarts_sign_in() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let restart = "/.dalea/signin?notice=restart";
    let cb = gw.url("/.dalea/oauth/corp/callback");

    // No state, a malformed one, one never handed out.
    for query in ["?code=abc", "?code=abc&state=%7B%7D", "?code=abc&state=never-issued", ""] {
        let resp = callback(&format!("{cb}{query}"), "").await;
        assert_eq!((resp.status().as_u16(), location(&resp)), (303, restart.to_string()), "{query}");
    }
    let page = client().get(gw.url(restart)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Please choose how to sign in again"));

    // Another browser (no binding cookie, or its own) cannot finish someone's sign-in.
    let browser = ProviderBrowser::new();
    let s = start(&gw, "corp", "").await;
    let back = browser.approve(&s.authorize, "demo-sub").await;
    let own = start(&gw, "corp", "").await;
    for cookie in ["", own.cookie.as_str()] {
        let resp = callback(&back, cookie).await;
        assert_eq!(location(&resp), restart, "foreign browser {cookie:?}");
        assert!(session_cookie(&resp).is_none());
    }
    // ... and that attempt used the flow up: the right browser must start again too.
    assert_eq!(location(&callback(&back, &s.cookie).await), restart);

    // A completed callback replayed finds nothing.
    let s = start(&gw, "corp", "").await;
    let back = browser.approve(&s.authorize, "demo-sub").await;
    assert!(session_cookie(&callback(&back, &s.cookie).await).is_some());
    let replay = callback(&back, &s.cookie).await;
    assert_eq!(location(&replay), restart);
    assert!(session_cookie(&replay).is_none());
}

#[tokio::test]
async fn two_tabs_each_finish_their_own_sign_in() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let browser = ProviderBrowser::new();
    let first = start(&gw, "corp", "?rd=/one").await;
    // The second tab sends the cookie the first one got: the binding is shared.
    let resp =
        client().get(gw.url("/.dalea/oauth/corp/start?rd=/two")).header("cookie", &first.cookie).send().await.unwrap();
    assert_eq!(binding_cookie(&resp), first.cookie, "the same binding for the second tab");
    let second = location(&resp);
    let back2 = browser.approve(&second, "demo-sub").await;
    let back1 = browser.approve(&first.authorize, "demo-sub").await;
    assert_eq!(location(&callback(&back2, &first.cookie).await), "/two");
    assert_eq!(location(&callback(&back1, &first.cookie).await), "/one");
}

#[tokio::test]
async fn a_sign_in_whose_flow_the_gateway_lost_restarts_cleanly() {
    let op = provider(&[demo_at_provider()]);
    let browser = ProviderBrowser::new();
    let gw = gateway(&op, "link_by_verified_email = true");
    let s = start(&gw, "corp", "").await;
    let back = browser.approve(&s.authorize, "demo-sub").await;
    // A gateway that never saw this flow (a fresh store) on the same address.
    let port = gw.addr;
    drop(gw);
    let fresh = Setup::default().toml(&oauth_toml(&op.issuer(), "link_by_verified_email = true")).listen(port).start();
    let resp = callback(&back, &s.cookie).await;
    assert_eq!(location(&resp), "/.dalea/signin?notice=restart");
    // Choosing again works.
    assert!(session_cookie(&sign_in_as(&fresh, &browser, "demo-sub").await).is_some());
}

#[tokio::test]
async fn the_provider_saying_no_shows_the_sign_in_page_and_passwords_still_work() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let s = start(&gw, "corp", "").await;
    let back = ProviderBrowser::new().deny(&s.authorize, "demo-sub").await;
    assert!(back.contains("error=access_denied"), "{back}");
    let (status, html) = page_text(callback(&back, &s.cookie).await).await;
    assert_eq!(status, 401);
    assert!(html.contains("Signing in with Corp SSO was cancelled"), "{html}");
    assert_eq!(signins(&gw, "cancelled"), 1.0);
    // Another error, with nothing usable for a code: said plainly, nothing echoed.
    let s = start(&gw, "corp", "").await;
    let state = query_param(&s.authorize, "state").expect("state");
    let back = gw.url(&format!("/.dalea/oauth/corp/callback?error=%3C%2F%3E&state={state}"));
    let (status, html) = page_text(callback(&back, &s.cookie).await).await;
    assert_eq!(status, 401);
    assert!(html.contains("Corp SSO could not sign you in. Try again"), "{html}");
    assert_eq!(try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_client_secret_the_provider_refuses_is_the_operators_problem_and_said_so() {
    let op = provider(&[demo_at_provider()]);
    let toml = oauth_toml(&op.issuer(), "link_by_verified_email = true")
        .replace(&format!("client_secret = \"{CLIENT_SECRET}\""), "client_secret = \"not-the-registered-one\"");
    let gw = Setup::default().toml(&toml).start();
    let browser = ProviderBrowser::new();
    let resp = sign_in_as(&gw, &browser, "demo-sub").await;
    assert!(session_cookie(&resp).is_none());
    let (status, html) = page_text(resp).await;
    // Not "try again": no retry by the person can work, so it is a gateway error (502).
    assert_eq!(status, 502, "{html}");
    assert!(html.contains("Signing in with Corp SSO is not set up correctly"), "{html}");
    assert!(html.contains("tell the site"), "{html}");
    assert!(!html.contains("not-the-registered-one"), "no secret on the page");
    assert_eq!(signins(&gw, "error"), 1.0);
    assert_eq!(signins(&gw, "failure"), 0.0);
    assert_eq!(try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_code_too_long_to_use_is_refused_as_unusable_not_as_missing() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let s = start(&gw, "corp", "").await;
    let state = query_param(&s.authorize, "state").expect("state");
    let long = "A".repeat(5000);
    let back = gw.url(&format!("/.dalea/oauth/corp/callback?code={long}&state={state}"));
    let resp = callback(&back, &s.cookie).await;
    assert!(session_cookie(&resp).is_none());
    let (status, html) = page_text(resp).await;
    assert_eq!(status, 401, "{html}");
    assert!(html.contains("Corp SSO sent no usable code"), "{html}");
    assert!(!html.contains("sent no sign-in code back"), "{html}");
    assert_eq!(signins(&gw, "failure"), 1.0);
}

#[tokio::test]
async fn forged_and_broken_id_tokens_are_refused_with_nothing_signed_in() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let browser = ProviderBrowser::new();
    let stranger = SigningKeys::rs256();
    let tampers = [
        ("wrong nonce", IdTokenTamper::new().set("nonce", "not-the-one-we-sent")),
        ("expired", IdTokenTamper::new().set("exp", 1_000_000_000)),
        ("another audience", IdTokenTamper::new().set("aud", "someone-else")),
        ("another issuer", IdTokenTamper::new().set("iss", "https://evil.example")),
        ("unpublished key", IdTokenTamper::new().signed_with(stranger.key("RS256"))),
        ("alg none", IdTokenTamper::new().unsigned()),
        ("not a JWT", IdTokenTamper::replaced_by("garbage")),
        ("no ID token", IdTokenTamper::omitted()),
    ];
    for (what, tamper) in tampers {
        let s = start(&gw, "corp", "").await;
        let back = browser.approve(&s.authorize, "demo-sub").await;
        op.tamper_next_id_token(tamper);
        let resp = callback(&back, &s.cookie).await;
        assert!(session_cookie(&resp).is_none(), "{what}: no session");
        let (status, html) = page_text(resp).await;
        assert_eq!(status, 401, "{what}: {html}");
        assert!(html.contains("Signing in with Corp SSO did not work"), "{what}: {html}");
        assert!(!html.contains(CLIENT_SECRET), "{what}: no secret on the page");
        op.clear_id_token_tamper();
    }
    assert_eq!(signins(&gw, "failure"), 8.0);
    assert!(gw.state.links.links_of("demo").await.unwrap().is_empty(), "nothing linked");
    // The same provider, untampered, signs in.
    assert!(session_cookie(&sign_in_as(&gw, &browser, "demo-sub").await).is_some());
}

#[tokio::test]
async fn a_new_signing_key_at_the_provider_is_picked_up() {
    let mut op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    assert!(session_cookie(&sign_in_as(&gw, &ProviderBrowser::new(), "demo-sub").await).is_some());
    op.restart_with_keys(SigningKeys::rs256());
    assert!(session_cookie(&sign_in_as(&gw, &ProviderBrowser::new(), "demo-sub").await).is_some());
}

#[tokio::test]
async fn an_unreachable_provider_gets_a_clear_page_and_passwords_still_work() {
    let closed = free_addr();
    let gw = Setup::default().toml(&oauth_toml(&format!("http://{closed}"), "")).start();
    let resp = client().get(gw.url("/.dalea/oauth/corp/start")).send().await.unwrap();
    let (status, html) = page_text(resp).await;
    assert_eq!(status, 502);
    assert!(html.contains("Corp SSO could not be reached just now"), "{html}");
    assert!(html.contains("name=\"password\""), "the password form is right there");
    assert_eq!(try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await.status(), 200);
    let unknown = client().get(gw.url("/.dalea/oauth/nope/start")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_sign_in_page_offers_each_provider_and_honours_remember_me() {
    let op = provider(&[demo_at_provider()]);
    let gw = gateway(&op, "link_by_verified_email = true");
    let page = client().get(gw.url("/.dalea/signin?rd=/reports")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains(&format!("form-action 'self' {}", op.issuer().trim_end_matches('/'))), "{csp}");
    let csrf = set_cookies(&page).into_iter().find(|c| c.starts_with("dalea_csrf=")).unwrap();
    let csrf = csrf.split(';').next().unwrap().to_string();
    let token = csrf.trim_start_matches("dalea_csrf=").to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains("formaction=\"/.dalea/oauth/corp/start\""), "{html}");
    assert!(html.contains("Sign in with Corp SSO"));

    // The button posts the form: CSRF token, where to go, remember-me.
    let form = [("csrf_token", token.as_str()), ("rd", "/reports"), ("remember_me", "on"), ("email", "")];
    let bad = client().post(gw.url("/.dalea/oauth/corp/start")).form(&form).send().await.unwrap();
    assert_eq!(bad.status(), 403, "no CSRF cookie, no start");
    let resp =
        client().post(gw.url("/.dalea/oauth/corp/start")).header("cookie", &csrf).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = binding_cookie(&resp);
    let back = ProviderBrowser::new().approve(&location(&resp), "demo-sub").await;
    let done = callback(&back, &cookie).await;
    assert_eq!(location(&done), "/reports");
    let set = set_cookies(&done).into_iter().find(|c| c.starts_with("dalea_session=")).unwrap();
    assert!(set.contains("Max-Age="), "remembered as asked: {set}");
}

#[tokio::test]
async fn github_signs_in_with_its_verified_primary_email_only() {
    let hub = GitHubStandIn::start(
        GitHubConfig::new("gh-client", "gh-secret")
            .user(GitHubUser::new(4242, "demo-gh", "Demo Hub", DEMO_EMAIL))
            .user(GitHubUser::unverified(777, "sloppy", "Sloppy", SAM_EMAIL)),
    );
    let toml = format!(
        "[oauth]\npublic_url = \"{{gateway_url}}\"\nlink_by_verified_email = true\n\
         [[oauth.providers]]\nkind = \"github\"\nclient_id = \"gh-client\"\nclient_secret = \"gh-secret\"\n\
         authorize_url = \"{}\"\ntoken_url = \"{}\"\napi_url = \"{}\"\n",
        hub.authorize_url(),
        hub.token_url(),
        hub.api_url()
    );
    let gw = Setup::default().toml(&toml).start();
    let via_github = || async {
        let s = start(&gw, "github", "?rd=/code").await;
        let at_hub = client().get(&s.authorize).send().await.unwrap();
        let back = location(&at_hub);
        assert!(back.starts_with(&gw.url("/.dalea/oauth/github/callback?")), "{back}");
        callback(&back, &s.cookie).await
    };
    let resp = via_github().await;
    assert_eq!(location(&resp), "/code");
    let cookie = session_cookie(&resp).expect("signed in");
    assert_eq!(seen(&echo_identity(&gw, &cookie).await, "x-dalea-user"), vec!["demo"]);
    let html = client().get(gw.url("/.dalea/settings/security/sessions")).header("cookie", &cookie).send().await;
    assert!(html.unwrap().text().await.unwrap().contains("OAuth (GitHub)"));

    hub.approve_as("sloppy");
    let (status, html) = page_text(via_github().await).await;
    assert_eq!(status, 403);
    assert!(html.contains("GitHub did not confirm an email address"), "{html}");

    // A client secret GitHub does not accept is the operator's to fix: said so, not "try again".
    let stale = toml.replace("client_secret = \"gh-secret\"", "client_secret = \"gh-stale\"");
    let wrong = Setup::default().toml(&stale).start();
    let s = start(&wrong, "github", "").await;
    let back = location(&client().get(&s.authorize).send().await.unwrap());
    let (status, html) = page_text(callback(&back, &s.cookie).await).await;
    assert_eq!(status, 502, "{html}");
    assert!(html.contains("Signing in with GitHub is not set up correctly"), "{html}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_callback_may_land_on_another_replica_and_both_know_the_person_it_created() {
    let redis = RedisServer::start();
    let op = provider(&[alice()]);
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"\n", redis.url());
    let rules = "unknown_people = \"create\"";
    let r1 = Setup::default().toml(&store).toml(&oauth_toml(&op.issuer(), rules)).start();
    // Both replicas answer for r1's address, as behind a load balancer.
    let r2 = Setup::default().toml(&store).toml(&oauth_toml_at(&r1.url(""), &op.issuer(), rules)).start();

    let s = start(&r1, "corp", "?rd=/here").await;
    let back = ProviderBrowser::new().approve(&s.authorize, "alice-sub").await;
    let on_r2 = back.replace(&r1.url(""), &r2.url(""));
    assert_ne!(on_r2, back);
    let resp = callback(&on_r2, &s.cookie).await;
    assert_eq!(location(&resp), "/here", "replica 2 finished what replica 1 started");
    let cookie = session_cookie(&resp).expect("a session");
    let via_r1 = seen(&echo_identity(&r1, &cookie).await, "x-dalea-user");
    assert_eq!(via_r1, seen(&echo_identity(&r2, &cookie).await, "x-dalea-user"), "the same created person on both");
    assert!(via_r1[0].starts_with("p-"));
    // The flow is gone on both replicas now.
    assert_eq!(location(&callback(&back, &s.cookie).await), "/.dalea/signin?notice=restart");
}
