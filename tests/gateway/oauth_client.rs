//! The OAuth2 / OpenID Connect client core (`dalea_gateway::auth::oauth`) against real peers,
//! without a gateway: the OpenID Provider of `support::oidc` (Google-style and Microsoft-style
//! issuers), the GitHub stand-in of `support::github`, and for the failure modes a provider
//! that is down, one that never answers, and one that answers too much or redirects.
//!
//! The person's side (login and consent at the provider) is played by `ProviderBrowser`; the
//! `state` the provider sends back is compared here as the sign-in pages will.
//!
//! Microsoft multi-tenant issuers (`{tenantid}` in the discovery `issuer`) cannot be served by
//! the OIDC peer — an HTTP client percent-encodes `{` and `}` in the discovery path, which
//! `provider.mjs` matches literally — so that check runs on `verify_id_token` with ID tokens
//! signed by `jwt.mjs` (real signatures, real key set), and the Microsoft flow end to end runs
//! against a single-tenant issuer.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use dalea_gateway::auth::oauth::id_token::{verify_id_token, IdTokenCheck, IdTokenError, KeySet};
use dalea_gateway::auth::oauth::{ExternalIdentity, OAuthClients, OAuthError, PendingFlow};
use dalea_gateway::clock::{Clock, Millis, SystemClock};
use dalea_gateway::config::{Config, Overrides};
use serde_json::json;

use crate::support::github::{GitHubConfig, GitHubStandIn, GitHubUser};
use crate::support::oidc::*;

const CLIENT_ID: &str = "dalea-gateway";
const CLIENT_SECRET: &str = "oauth-client-test-secret";
const MS_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// reqwest (the peers' browsers too) is built with `rustls-no-provider`: install ring first.
fn init() {
    dalea_gateway::session::redis::install_crypto_provider();
}

fn now() -> Millis {
    SystemClock.now()
}

/// The gateway's callback URL for provider `name`: a loopback listener nobody answers on (the
/// person's browser stops at the redirect to it), kept open so its port stays ours.
fn callback(name: &str) -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/.dalea/oauth/{name}/callback", listener.local_addr().expect("addr"));
    (listener, url)
}

/// `OAuthClients` for these `[[oauth.providers]]` tables, parsed as a gateway config.
fn oauth_clients(providers: &str) -> OAuthClients {
    init();
    let text = format!(
        "[[upstreams]]\nname = \"app\"\nbuiltin = \"whoami\"\n\n[[routes]]\nupstream = \"app\"\n\n\
         [users]\nfile = \"users.toml\"\n\n[oauth]\npublic_url = \"https://gateway.example\"\n\n{providers}"
    );
    let config = Config::from_toml_str(&text, Path::new("/nonexistent"), &[], &Overrides::default())
        .unwrap_or_else(|e| panic!("test config: {e:?}\n{text}"));
    OAuthClients::new(&config.oauth).expect("clients")
}

fn oidc_table(name: &str, issuer: &str) -> String {
    format!(
        "[[oauth.providers]]\nkind = \"oidc\"\nname = \"{name}\"\ndisplay_name = \"Test OP\"\n\
         issuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n"
    )
}

fn alice() -> OidcAccount {
    OidcAccount::new("alice", "alice@example.com", true, "Alice Example")
}

/// An OpenID Provider with client `CLIENT_ID` (callback `redirect`) and these accounts.
fn provider(redirect: &str, accounts: &[OidcAccount]) -> OidcProvider {
    init();
    let mut config = OidcConfig::new(SigningKeys::rs256()).client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, redirect));
    for a in accounts {
        config = config.account(a.clone());
    }
    OidcProvider::start(config)
}

/// Starts a sign-in, plays the person approving as `login`, checks the `state` that comes back:
/// the flow and the code.
async fn approve(clients: &OAuthClients, name: &str, redirect: &str, login: &str) -> (PendingFlow, String) {
    let (url, flow) = clients.start(name, redirect, now()).await.expect("start");
    let back = ProviderBrowser::new().approve(&url, login).await;
    assert!(back.starts_with(redirect), "back at the callback: {back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some(flow.state.as_str()), "state comes back");
    let code = query_param(&back, "code").expect("code in the callback");
    (flow, code)
}

/// No error message shows a secret, the code or the verifier.
fn assert_discreet(e: &OAuthError, flow: &PendingFlow, code: &str) {
    let shown = format!("{e} {e:?}");
    for secret in [CLIENT_SECRET, code, flow.pkce_verifier.as_str(), flow.nonce.as_str()] {
        assert!(!shown.contains(secret), "{shown:?} shows a secret");
    }
}

// ---------------------------------------------------------------------------------------------
// OpenID Connect
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oidc_sign_in_returns_who_signed_in() {
    let (_rp, redirect) = callback("op");
    let op = provider(&redirect, &[alice()]);
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));

    let (url, flow) = clients.start("op", &redirect, now()).await.expect("start");
    let parsed = url::Url::parse(&url).unwrap();
    assert!(url.starts_with(&op.url("/auth?")), "{url}");
    let q: std::collections::HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], redirect);
    assert_eq!(q["scope"], "openid email profile", "the config's default scopes");
    assert_eq!((q["state"].as_str(), q["nonce"].as_str()), (flow.state.as_str(), flow.nonce.as_str()));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"], pkce_challenge(&flow.pkce_verifier));
    assert!(!url.contains(&flow.pkce_verifier) && !url.contains(CLIENT_SECRET));
    assert!(flow.state.len() <= 128 && flow.state.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
    assert_eq!(flow.provider, "op");
    let debug = format!("{flow:?}");
    assert!(!debug.contains(&flow.state) && !debug.contains(&flow.nonce) && !debug.contains(&flow.pkce_verifier));

    let back = ProviderBrowser::new().approve(&url, "alice").await;
    assert_eq!(query_param(&back, "state").as_deref(), Some(flow.state.as_str()));
    let code = query_param(&back, "code").expect("code");
    let who = clients.finish(&flow, &redirect, &code, now()).await.expect("signed in");
    assert_eq!(
        who,
        ExternalIdentity {
            provider: "op".into(),
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            email_verified: true,
            name: Some("Alice Example".into()),
        }
    );
}

#[tokio::test]
async fn an_unverified_email_is_reported_unverified() {
    let (_rp, redirect) = callback("op");
    let op = provider(&redirect, &[OidcAccount::new("bob", "bob@example.com", false, "Bob")]);
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));
    let (flow, code) = approve(&clients, "op", &redirect, "bob").await;
    let who = clients.finish(&flow, &redirect, &code, now()).await.expect("signed in");
    assert_eq!((who.email.as_deref(), who.email_verified), (Some("bob@example.com"), false));

    // No email at all: none, and not verified.
    let (_rp, redirect) = callback("op");
    let op = provider(&redirect, &[OidcAccount::bare("carol").claim("email_verified", true)]);
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));
    let (flow, code) = approve(&clients, "op", &redirect, "carol").await;
    let who = clients.finish(&flow, &redirect, &code, now()).await.expect("signed in");
    assert_eq!((who.subject.as_str(), who.email, who.email_verified, who.name), ("carol", None, false, None));
}

#[tokio::test]
async fn the_email_comes_from_userinfo_when_the_id_token_has_none() {
    let (_rp, redirect) = callback("op");
    init();
    // oidc-provider's default: scope claims go to userinfo only, not into the ID token.
    let op = OidcProvider::start(
        OidcConfig::new(SigningKeys::rs256())
            .client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, &redirect))
            .account(alice())
            .conform_id_token_claims(true),
    );
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    let who = clients.finish(&flow, &redirect, &code, now()).await.expect("signed in");
    assert_eq!(who.email.as_deref(), Some("alice@example.com"));
    assert!(who.email_verified);
    assert_eq!(who.name.as_deref(), Some("Alice Example"));
}

#[tokio::test]
async fn forged_or_altered_id_tokens_are_refused() {
    let (_rp, redirect) = callback("op");
    let op = provider(&redirect, &[alice()]);
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));
    let secs = now() / 1000;
    let stranger = SigningKeys::rs256();
    let public_n = op.keys().key("RS256")["n"].as_str().expect("n").to_string();
    // What is done to the real token, and the reason the person is shown.
    let cases: Vec<(&str, IdTokenTamper, &str)> = vec![
        ("another audience", IdTokenTamper::new().set("aud", "someone-else"), "(audience)"),
        (
            "an extra untrusted audience",
            IdTokenTamper::new().set("aud", json!([CLIENT_ID, "someone-else"])),
            "(audience)",
        ),
        ("azp another client", IdTokenTamper::new().set("azp", "someone-else"), "(audience)"),
        ("another issuer", IdTokenTamper::new().set("iss", "https://evil.example"), "(issuer)"),
        ("expired beyond the skew", IdTokenTamper::new().set("exp", secs - 120), "(expired)"),
        ("issued in the future", IdTokenTamper::new().set("iat", secs + 3600), "(issued in the future)"),
        ("another nonce", IdTokenTamper::new().set("nonce", random_token(16)), "(nonce)"),
        ("no nonce", IdTokenTamper::new().remove("nonce"), "(nonce)"),
        ("no sub", IdTokenTamper::new().remove("sub"), "(unreadable)"),
        (
            "signed with an unpublished key under the real kid",
            IdTokenTamper::new().signed_with(stranger.key("RS256")),
            "(signature)",
        ),
        (
            "signed with an unpublished key under its own kid",
            IdTokenTamper::new().signed_with(stranger.key("RS256")).header("kid", stranger.kid("RS256")),
            "(signature)",
        ),
        ("alg none", IdTokenTamper::new().unsigned(), "(signature)"),
        (
            "HS256 keyed with the public key",
            IdTokenTamper::new().signed_with(&json!({"kty": "oct", "k": public_n})).header("alg", "HS256"),
            "(signature)",
        ),
        ("not a JWT", IdTokenTamper::replaced_by("not-a-jwt"), "(unreadable)"),
        ("omitted", IdTokenTamper::omitted(), "Test OP sent no ID token"),
    ];
    for (what, tamper, reason) in cases {
        let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
        op.tamper_next_id_token(tamper);
        let result = clients.finish(&flow, &redirect, &code, now()).await;
        let Err(e) = result else { panic!("{what}: accepted: {result:?}\n{}", op.log()) };
        assert!(matches!(&e, OAuthError::InvalidToken(m) if m.contains(reason)), "{what}: {e:?}");
        assert!(e.to_string().contains("Test OP"), "{what}: names the provider: {e}");
        assert_discreet(&e, &flow, &code);
    }

    // Expired, but within the 60 s of clock skew allowed: accepted.
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    op.tamper_next_id_token(IdTokenTamper::new().set("exp", secs - 20));
    let who = clients.finish(&flow, &redirect, &code, now()).await.expect("within the skew");
    assert_eq!(who.subject, "alice");
}

#[tokio::test]
async fn a_code_is_exchanged_only_once() {
    let (_rp, redirect) = callback("op");
    let op = provider(&redirect, &[alice()]);
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    clients.finish(&flow, &redirect, &code, now()).await.expect("first use");
    let e = clients.finish(&flow, &redirect, &code, now()).await.expect_err("second use");
    assert!(matches!(&e, OAuthError::Refused(m) if m.contains("Test OP") && m.contains("invalid_grant")), "{e:?}");
    assert_discreet(&e, &flow, &code);

    // Another redirect URI, or another verifier, is refused too (each on a fresh code).
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    let e = clients.finish(&flow, "http://127.0.0.1:9/elsewhere", &code, now()).await.expect_err("redirect_uri");
    assert!(matches!(e, OAuthError::Refused(_)), "{e:?}");
    let (mut flow, code) = approve(&clients, "op", &redirect, "alice").await;
    flow.pkce_verifier = random_token(32);
    let e = clients.finish(&flow, &redirect, &code, now()).await.expect_err("verifier");
    assert!(matches!(e, OAuthError::Refused(_)), "{e:?}");
    assert_discreet(&e, &flow, &code);

    // A flow for a provider that is not configured.
    flow.provider = "nope".into();
    let e = clients.finish(&flow, &redirect, "code", now()).await.expect_err("unknown");
    assert!(matches!(e, OAuthError::UnknownProvider), "{e:?}");
}

#[tokio::test]
async fn rotated_keys_are_fetched_again_at_most_every_30_seconds() {
    let (_rp, redirect) = callback("op");
    let mut op = provider(&redirect, &[alice()]);
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    clients.finish(&flow, &redirect, &code, now()).await.expect("before rotation");

    // The provider rotates its keys: an ID token with an unknown kid makes the client fetch
    // the key set again, and the sign-in works.
    op.restart_with_keys(SigningKeys::rs256());
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    let t = now();
    clients.finish(&flow, &redirect, &code, t).await.expect("after rotation");

    // Rotated again within 30 s: no second fetch yet, the token cannot be verified.
    op.restart_with_keys(SigningKeys::rs256());
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    let e = clients.finish(&flow, &redirect, &code, t + 10_000).await.expect_err("rate-limited");
    assert!(matches!(&e, OAuthError::InvalidToken(m) if m.contains("signature")), "{e:?}");
    // 30 s after the last fetch it is fetched again.
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    clients.finish(&flow, &redirect, &code, t + 30_000).await.expect("30 s later");
}

#[tokio::test]
async fn an_unreachable_provider_fails_fast_and_recovers() {
    let (_rp, redirect) = callback("op");
    let mut op = provider(&redirect, &[alice()]);
    let clients = oauth_clients(&oidc_table("op", &op.issuer()));
    op.stop();
    let started = Instant::now();
    let e = clients.start("op", &redirect, now()).await.expect_err("down");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(matches!(&e, OAuthError::Unreachable(m) if m == "Test OP could not be reached"), "{e:?}");

    // The failure is not remembered: back up, it works.
    op.restart();
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    // Down between the redirect and the callback: the code exchange cannot happen.
    op.stop();
    let e = clients.finish(&flow, &redirect, &code, now()).await.expect_err("down at the callback");
    assert!(matches!(e, OAuthError::Unreachable(_)), "{e:?}");
    assert_discreet(&e, &flow, &code);
    op.restart();
    let (flow, code) = approve(&clients, "op", &redirect, "alice").await;
    assert_eq!(clients.finish(&flow, &redirect, &code, now()).await.expect("recovered").subject, "alice");
}

/// A peer on loopback that reads one request at a time and answers each with `answer` (or
/// never answers, for `None`), counting the requests it read.
fn misbehaving_peer(answer: Option<Vec<u8>>) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf);
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match answer {
                    Some(bytes) => {
                        let _ = stream.write_all(&bytes);
                    }
                    None => std::thread::sleep(Duration::from_secs(30)),
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out() {
    let (addr, _) = misbehaving_peer(None);
    let clients = oauth_clients(&oidc_table("op", &format!("http://{addr}")));
    let started = Instant::now();
    let e = clients.start("op", "http://127.0.0.1:9/cb", now()).await.expect_err("silent");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(15), "total timeout 10 s: {took:?}");
    assert!(matches!(&e, OAuthError::Unreachable(m) if m == "Test OP could not be reached"), "{e:?}");
}

#[tokio::test]
async fn redirects_are_not_followed_and_huge_answers_are_refused() {
    // The discovery URL redirects to another peer: never asked.
    let (target, asked) = misbehaving_peer(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec()));
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nlocation: http://{target}/.well-known/openid-configuration\r\ncontent-length: 0\r\n\r\n"
    );
    let (addr, _) = misbehaving_peer(Some(redirect.into_bytes()));
    let clients = oauth_clients(&oidc_table("op", &format!("http://{addr}")));
    let e = clients.start("op", "http://127.0.0.1:9/cb", now()).await.expect_err("redirect");
    assert!(matches!(&e, OAuthError::Unreachable(m) if m.contains("Test OP")), "{e:?}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0, "the redirect was not followed");

    // 2 MiB of discovery document, announced or not.
    let body = format!("{{\"issuer\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    for announced in [true, false] {
        let head = if announced {
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
        } else {
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".to_string()
        };
        let (addr, _) = misbehaving_peer(Some([head.as_bytes(), body.as_bytes()].concat()));
        let clients = oauth_clients(&oidc_table("op", &format!("http://{addr}")));
        let e = clients.start("op", "http://127.0.0.1:9/cb", now()).await.expect_err("too large");
        assert!(matches!(&e, OAuthError::Unreachable(m) if m.contains("unexpected")), "{announced}: {e:?}");
    }

    // A discovery document naming another issuer is not used.
    let (_rp, redirect) = callback("op");
    let op = provider(&redirect, &[alice()]);
    let other = format!("http://127.0.0.1:{}", op.port());
    let clients = oauth_clients(&oidc_table("op", &other.replace("127.0.0.1", "localhost")));
    let e = clients.start("op", &redirect, now()).await.expect_err("issuer mismatch");
    assert!(matches!(&e, OAuthError::Unreachable(m) if m.contains("unexpected")), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Microsoft
// ---------------------------------------------------------------------------------------------

fn microsoft_table(issuer: &str, tenant: &str) -> String {
    format!(
        "[[oauth.providers]]\nkind = \"microsoft\"\ntenant = \"{tenant}\"\nissuer = \"{issuer}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n"
    )
}

#[tokio::test]
async fn microsoft_single_tenant_and_when_its_email_counts_as_verified() {
    let (_rp, redirect) = callback("microsoft");
    init();
    // A Microsoft-shaped issuer: http://127.0.0.1:<port>/<tenant>/v2.0, tokens with `tid`.
    let account = |sub: &str| {
        OidcAccount::bare(sub)
            .claim("email", format!("{sub}@contoso.example"))
            .claim("tid", MS_TENANT)
            .claim("name", sub)
    };
    let op = OidcProvider::start(
        OidcConfig::new(SigningKeys::rs256())
            .issuer_path(&format!("/{MS_TENANT}/v2.0"))
            .client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, &redirect))
            .account(account("plain"))
            .account(account("edov").claim("xms_edov", true))
            .account(account("claimed").claim("email_verified", true))
            .account(account("stringy").claim("xms_edov", "true")),
    );
    let clients = oauth_clients(&microsoft_table(&op.issuer(), MS_TENANT));
    assert_eq!(clients.display_name("microsoft"), Some("Microsoft"));
    for (login, verified) in [("plain", false), ("edov", true), ("claimed", true), ("stringy", false)] {
        let (flow, code) = approve(&clients, "microsoft", &redirect, login).await;
        let who = clients.finish(&flow, &redirect, &code, now()).await.expect("signed in");
        assert_eq!(who.subject, login);
        assert_eq!(who.email, Some(format!("{login}@contoso.example")));
        assert_eq!(who.email_verified, verified, "{login}");
    }

    // A single-tenant issuer is checked exactly: another tenant's issuer is refused.
    let (flow, code) = approve(&clients, "microsoft", &redirect, "plain").await;
    let other_iss = op.issuer().replace(MS_TENANT, OTHER_TENANT);
    op.tamper_next_id_token(IdTokenTamper::new().set("iss", other_iss).set("tid", OTHER_TENANT));
    let e = clients.finish(&flow, &redirect, &code, now()).await.expect_err("other tenant");
    assert!(matches!(&e, OAuthError::InvalidToken(m) if m.contains("Microsoft") && m.contains("issuer")), "{e:?}");
}

/// Claims a Microsoft multi-tenant ID token for `tid` would carry.
fn ms_claims(tid: &str, nonce: &str) -> serde_json::Value {
    let secs = now() / 1000;
    json!({
        "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "aud": CLIENT_ID,
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": tid,
        "nonce": nonce,
        "iat": secs,
        "exp": secs + 3600,
        "email": "person@contoso.example",
        "name": "A Person",
    })
}

fn ms_check<'a>(template: &'a str, nonce: &'a str, allowed: &'a [String]) -> IdTokenCheck<'a> {
    IdTokenCheck { issuer: template, client_id: CLIENT_ID, nonce, now: now(), microsoft: Some(allowed) }
}

#[test]
fn microsoft_multi_tenant_issuers_name_the_tokens_tenant() {
    let keys = SigningKeys::rs256();
    let key_set = KeySet::from_json(keys.public_jwks().to_string().as_bytes()).expect("key set");
    let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
    let nonce = random_token(16);
    let (none, only_ms): (&[String], &[String]) = (&[], &[MS_TENANT.to_string()]);
    let check = |allowed| ms_check(template, &nonce, allowed);
    let sign = |claims: &serde_json::Value| sign_jwt(keys.key("RS256"), &json!({}), claims);

    // Any tenant when allowed_tenants is empty; the issuer is the token's own tenant's.
    for tid in [MS_TENANT, OTHER_TENANT] {
        let verified = verify_id_token(&sign(&ms_claims(tid, &nonce)), &key_set, &check(none)).expect("any tenant");
        assert_eq!(verified.tenant.as_deref(), Some(tid));
        assert_eq!(verified.email.as_deref(), Some("person@contoso.example"));
        assert!(!verified.email_verified, "Microsoft's email is unverified unless it says so");
    }
    let mut edov = ms_claims(MS_TENANT, &nonce);
    edov["xms_edov"] = json!(true);
    assert!(verify_id_token(&sign(&edov), &key_set, &check(none)).expect("edov").email_verified);

    // allowed_tenants limits it.
    verify_id_token(&sign(&ms_claims(MS_TENANT, &nonce)), &key_set, &check(only_ms)).expect("allowed tenant");
    let e =
        verify_id_token(&sign(&ms_claims(OTHER_TENANT, &nonce)), &key_set, &check(only_ms)).expect_err("not allowed");
    assert!(matches!(e, IdTokenError::Invalid { reason: "tenant", .. }), "{e:?}");

    // The issuer must be the tid's: not another tenant's, not the template itself.
    let mut mismatched = ms_claims(OTHER_TENANT, &nonce);
    mismatched["tid"] = json!(MS_TENANT);
    let mut literal = ms_claims(MS_TENANT, &nonce);
    literal["iss"] = json!(template);
    let mut no_tid = ms_claims(MS_TENANT, &nonce);
    no_tid.as_object_mut().unwrap().remove("tid");
    let mut elsewhere = ms_claims(MS_TENANT, &nonce);
    elsewhere["iss"] = json!(format!("https://evil.example/{MS_TENANT}/v2.0"));
    for (what, claims) in
        [("mismatched", mismatched), ("literal", literal), ("no tid", no_tid), ("elsewhere", elsewhere)]
    {
        let e = verify_id_token(&sign(&claims), &key_set, &check(none)).expect_err(what);
        assert!(matches!(e, IdTokenError::Invalid { reason: "issuer", .. }), "{what}: {e:?}");
    }

    // Signature, audience, nonce and expiry are still checked with the issuer check off.
    let stranger = SigningKeys::rs256();
    let forged = sign_jwt(stranger.key("RS256"), &json!({"kid": keys.kid("RS256")}), &ms_claims(MS_TENANT, &nonce));
    assert!(matches!(
        verify_id_token(&forged, &key_set, &check(none)),
        Err(IdTokenError::Invalid { reason: "signature", .. })
    ));
    let unknown_kid = sign_jwt(stranger.key("RS256"), &json!({}), &ms_claims(MS_TENANT, &nonce));
    assert_eq!(verify_id_token(&unknown_kid, &key_set, &check(none)), Err(IdTokenError::UnknownKey));
    let mut other_aud = ms_claims(MS_TENANT, &nonce);
    other_aud["aud"] = json!("another-app");
    let mut other_nonce = ms_claims(MS_TENANT, &nonce);
    other_nonce["nonce"] = json!("another");
    let mut expired = ms_claims(MS_TENANT, &nonce);
    expired["exp"] = json!(now() / 1000 - 120);
    for (what, claims, reason) in
        [("aud", other_aud, "audience"), ("nonce", other_nonce, "nonce"), ("expired", expired, "expired")]
    {
        let e = verify_id_token(&sign(&claims), &key_set, &check(none)).expect_err(what);
        assert!(matches!(&e, IdTokenError::Invalid { reason: r, .. } if *r == reason), "{what}: {e:?}");
    }
    let unsigned = unsigned_jwt(&json!({}), &ms_claims(MS_TENANT, &nonce));
    assert!(matches!(
        verify_id_token(&unsigned, &key_set, &check(none)),
        Err(IdTokenError::Invalid { reason: "signature", .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------------------------

fn github_table(gh: &GitHubStandIn) -> String {
    format!(
        "[[oauth.providers]]\nkind = \"github\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         authorize_url = \"{}\"\ntoken_url = \"{}\"\napi_url = \"{}\"\n",
        gh.authorize_url(),
        gh.token_url(),
        gh.api_url()
    )
}

fn github(users: Vec<GitHubUser>) -> GitHubStandIn {
    init();
    let mut config = GitHubConfig::new(CLIENT_ID, CLIENT_SECRET);
    for u in users {
        config = config.user(u);
    }
    GitHubStandIn::start(config)
}

async fn github_approve(clients: &OAuthClients, gh: &GitHubStandIn, redirect: &str) -> (PendingFlow, String) {
    let (url, flow) = clients.start("github", redirect, now()).await.expect("start");
    assert!(url.starts_with(&gh.authorize_url()), "{url}");
    let back = gh.authorize(&url).await;
    assert_eq!(query_param(&back, "state").as_deref(), Some(flow.state.as_str()));
    (flow, query_param(&back, "code").expect("code"))
}

#[tokio::test]
async fn github_sign_in_takes_the_verified_primary_email() {
    let gh = github(vec![GitHubUser::new(583231, "octocat", "The Octocat", "octocat@github.example")
        .private_email()
        .with_email("octo@second.example", true)]);
    let clients = oauth_clients(&github_table(&gh));
    let (_rp, redirect) = callback("github");
    let (flow, code) = github_approve(&clients, &gh, &redirect).await;
    let who = clients.finish(&flow, &redirect, &code, now()).await.expect("signed in");
    assert_eq!(
        who,
        ExternalIdentity {
            provider: "github".into(),
            subject: "583231".into(),
            email: Some("octocat@github.example".into()),
            email_verified: true,
            name: Some("The Octocat".into()),
        }
    );

    // What was sent: PKCE S256 with the verifier kept in the flow, JSON asked for, the API
    // called with the token, GitHub's media type and a User-Agent.
    let authorize = &gh.requests_to("/login/oauth/authorize")[0];
    assert_eq!(authorize.param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(authorize.param("code_challenge"), Some(pkce_challenge(&flow.pkce_verifier)));
    assert_eq!(authorize.param("scope").as_deref(), Some("read:user user:email"));
    let token = &gh.requests_to("/login/oauth/access_token")[0];
    assert_eq!(token.param("code_verifier").as_deref(), Some(flow.pkce_verifier.as_str()));
    assert_eq!(token.param("redirect_uri").as_deref(), Some(redirect.as_str()));
    assert!(token.header("accept").is_some_and(|a| a.contains("application/json")));
    for path in ["/user", "/user/emails"] {
        let r = &gh.requests_to(path)[0];
        assert!(r.header("authorization").is_some_and(|a| a.starts_with("Bearer gho_")), "{path}");
        assert_eq!(r.header("accept"), Some("application/vnd.github+json"), "{path}");
        assert_eq!(r.header("user-agent"), Some("dalea-gateway"), "{path}");
    }
}

#[tokio::test]
async fn github_without_a_verified_primary_email_gives_no_email() {
    let mut user = GitHubUser::unverified(7, "mona", "Mona", "mona@unverified.example");
    user = user.with_email("mona@verified-secondary.example", true);
    user.name = None;
    let gh = github(vec![user]);
    let clients = oauth_clients(&github_table(&gh));
    let (_rp, redirect) = callback("github");
    let (flow, code) = github_approve(&clients, &gh, &redirect).await;
    let who = clients.finish(&flow, &redirect, &code, now()).await.expect("signed in");
    assert_eq!((who.subject.as_str(), who.email, who.email_verified), ("7", None, false));
    assert_eq!(who.name.as_deref(), Some("mona"), "no name: the login");
}

#[tokio::test]
async fn github_checks_the_pkce_verifier_and_single_use_codes() {
    let gh = github(vec![GitHubUser::new(1, "octocat", "The Octocat", "octocat@github.example")]);
    let clients = oauth_clients(&github_table(&gh));
    let (_rp, redirect) = callback("github");

    let (mut flow, code) = github_approve(&clients, &gh, &redirect).await;
    flow.pkce_verifier = random_token(32);
    let e = clients.finish(&flow, &redirect, &code, now()).await.expect_err("wrong verifier");
    assert!(matches!(&e, OAuthError::Refused(m) if m == "GitHub refused the sign-in (bad_verification_code)"), "{e:?}");
    assert_discreet(&e, &flow, &code);

    let (flow, code) = github_approve(&clients, &gh, &redirect).await;
    clients.finish(&flow, &redirect, &code, now()).await.expect("first use");
    let e = clients.finish(&flow, &redirect, &code, now()).await.expect_err("second use");
    assert!(matches!(e, OAuthError::Refused(_)), "{e:?}");
    assert_discreet(&e, &flow, &code);

    // GitHub down: unreachable, quickly.
    let (flow, code) = github_approve(&clients, &gh, &redirect).await;
    drop(gh);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let e = clients.finish(&flow, &redirect, &code, now()).await.expect_err("down");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(&e, OAuthError::Unreachable(m) if m == "GitHub could not be reached"), "{e:?}");
}
