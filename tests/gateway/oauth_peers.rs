//! The sign-in test peers themselves (the OpenID Provider of `support::oidc` and the GitHub
//! stand-in of `support::github`), driven without a gateway, so they cannot silently rot: a
//! gateway test that fails must be the gateway's fault.

use serde_json::{json, Value};

use crate::support::github::{GitHubConfig, GitHubStandIn, GitHubUser};
use crate::support::oidc::*;

const CLIENT_ID: &str = "dalea-gateway";
const CLIENT_SECRET: &str = "test-secret-not-for-production";

/// A loopback listener that stands for the relying party's callback (never answered: the
/// person's browser is stopped at the redirect to it), and its callback URL.
fn throwaway_callback() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/.dalea/oauth/test/callback", listener.local_addr().expect("addr"));
    (listener, url)
}

fn alice() -> OidcAccount {
    OidcAccount::new("alice", "alice@example.com", true, "Alice Example")
}

/// What a relying party sends the person to, with its PKCE verifier, state and nonce.
struct AuthRequest {
    url: String,
    verifier: String,
    state: String,
    nonce: String,
}

fn auth_request(authorization_endpoint: &str, client_id: &str, redirect_uri: &str, scope: &str) -> AuthRequest {
    let verifier = random_token(32);
    let state = random_token(16);
    let nonce = random_token(16);
    let mut url = url::Url::parse(authorization_endpoint).expect("authorization endpoint");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    AuthRequest { url: url.into(), verifier, state, nonce }
}

async fn get_json(url: &str) -> Value {
    let resp = crate::support::http_client().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json().await.expect("JSON")
}

/// The token request a relying party makes: client_secret_basic, or client_secret_post.
async fn exchange(
    token_endpoint: &str,
    secret: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    post: bool,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let req = crate::support::http_client().post(token_endpoint);
    let req = if post {
        form.extend([("client_id", CLIENT_ID), ("client_secret", secret)]);
        req
    } else {
        req.basic_auth(CLIENT_ID, Some(secret))
    };
    let resp = req.form(&form).send().await.expect("token request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_provider_publishes_discovery_with_the_endpoints_a_gateway_uses() {
    let (_rp, callback) = throwaway_callback();
    let op = OidcProvider::start(
        OidcConfig::new(SigningKeys::rs256())
            .client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, &callback))
            .account(alice()),
    );
    let d = get_json(&op.discovery_url()).await;
    let issuer = op.issuer();
    assert_eq!(d["issuer"], issuer);
    assert_eq!(d["authorization_endpoint"], format!("{issuer}/auth"));
    assert_eq!(d["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(d["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(d["userinfo_endpoint"], format!("{issuer}/me"));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    for method in ["client_secret_basic", "client_secret_post"] {
        assert!(
            d["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!(method)),
            "{method} in {d}"
        );
    }
    assert!(d["response_types_supported"].as_array().unwrap().contains(&json!("code")));
    assert!(d["scopes_supported"].as_array().unwrap().contains(&json!("email")));
    // It publishes exactly the public parts of the keys it was given.
    let jwks = get_json(d["jwks_uri"].as_str().unwrap()).await;
    let published: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(published, op.keys().kids());
    assert!(jwks["keys"][0].get("d").is_none(), "no private key material at the jwks_uri");
}

#[tokio::test]
async fn a_code_and_pkce_sign_in_yields_an_id_token_signed_with_a_published_key() {
    let (_rp, callback) = throwaway_callback();
    let op = OidcProvider::start(
        OidcConfig::new(SigningKeys::rs256())
            .client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, &callback))
            .account(alice()),
    );
    let auth_endpoint = op.url("/auth");
    let token_endpoint = op.url("/token");
    let browser = ProviderBrowser::new();

    let req = auth_request(&auth_endpoint, CLIENT_ID, &callback, "openid email profile");
    let back = browser.approve(&req.url, "alice").await;
    assert!(back.starts_with(&format!("{callback}?")), "back at the callback: {back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some(req.state.as_str()));
    assert_eq!(query_param(&back, "iss"), Some(op.issuer()), "RFC 9207 iss in the callback");
    let code = query_param(&back, "code").expect("code");
    assert_eq!(*browser.pages_seen.lock().unwrap(), ["login", "consent"]);
    assert!(browser.cookie_header(&back).is_none(), "the provider's cookies stay with the provider");

    // A wrong verifier is refused (a fresh flow: the provider may burn the code on a failure).
    let (status, body) = exchange(&token_endpoint, CLIENT_SECRET, &code, &callback, &random_token(32), false).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");

    let req = auth_request(&auth_endpoint, CLIENT_ID, &callback, "openid email profile");
    // The same browser has a provider session and a grant: straight back, no login page.
    let back = browser.approve(&req.url, "alice").await;
    assert_eq!(browser.pages_seen.lock().unwrap().len(), 2, "no page the second time");
    let code = query_param(&back, "code").expect("code");
    let (status, body) = exchange(&token_endpoint, "wrong secret", &code, &callback, &req.verifier, false).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let (status, tokens) = exchange(&token_endpoint, CLIENT_SECRET, &code, &callback, &req.verifier, false).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let (header, claims) = decode_jwt(id_token);
    assert_eq!(header["alg"], "RS256");
    let jwks = get_json(&op.url("/jwks")).await;
    let kid = header["kid"].as_str().expect("kid");
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid), "kid {kid} published in {jwks}");
    verify_jwt(id_token, &jwks).expect("signature verifies with the published key");
    assert_eq!(claims["iss"], op.issuer());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["nonce"], req.nonce.as_str());
    assert_eq!(claims["sub"], "alice");
    // Google style (conform_id_token_claims false): the scope's claims are in the ID token.
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Example");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    // The code is single use.
    let (status, body) = exchange(&token_endpoint, CLIENT_SECRET, &code, &callback, &req.verifier, false).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");

    // client_secret_post works for the same client.
    let req = auth_request(&auth_endpoint, CLIENT_ID, &callback, "openid email");
    let code = query_param(&browser.approve(&req.url, "alice").await, "code").expect("code");
    let (status, tokens) = exchange(&token_endpoint, CLIENT_SECRET, &code, &callback, &req.verifier, true).await;
    assert_eq!(status, 200, "{tokens}");
    let userinfo: Value = crate::support::http_client()
        .get(op.url("/me"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["email"], "alice@example.com");
}

#[tokio::test]
async fn restarting_with_new_keys_rotates_the_published_jwks_on_the_same_port() {
    let (_rp, callback) = throwaway_callback();
    let old = SigningKeys::rs256();
    let mut op = OidcProvider::start(
        OidcConfig::new(old.clone()).client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, &callback)).account(alice()),
    );
    let (issuer, port) = (op.issuer(), op.port());
    let old_jwks = get_json(&op.url("/jwks")).await;

    let new = SigningKeys::rs256();
    assert_ne!(old.kids(), new.kids());
    op.restart_with_keys(new.clone());
    assert_eq!((op.issuer(), op.port()), (issuer, port));
    let new_jwks = get_json(&op.url("/jwks")).await;
    assert_ne!(old_jwks, new_jwks);
    assert_eq!(new_jwks, new.public_jwks());

    let req = auth_request(&op.url("/auth"), CLIENT_ID, &callback, "openid email");
    let code = query_param(&sign_in_at_provider(&req.url, "alice").await, "code").expect("code");
    let (status, tokens) = exchange(&op.url("/token"), CLIENT_SECRET, &code, &callback, &req.verifier, false).await;
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(decode_jwt(id_token).0["kid"], new.kid("RS256"));
    verify_jwt(id_token, &new_jwks).expect("verifies with the new key");
    assert!(verify_jwt(id_token, &old_jwks).is_err(), "not with the old one");

    // Both published during a rollover: it signs with the first.
    op.restart_with_keys(old.merged(&new));
    let both = get_json(&op.url("/jwks")).await;
    assert_eq!(both["keys"].as_array().unwrap().len(), 2);

    op.stop();
    assert!(
        crate::support::http_client().get(op.discovery_url()).send().await.is_err(),
        "a stopped provider refuses connections"
    );
    op.restart();
    get_json(&op.discovery_url()).await;
}

#[tokio::test]
async fn the_person_can_deny_cancel_or_type_an_unknown_login() {
    let (_rp, callback) = throwaway_callback();
    let op = OidcProvider::start(
        OidcConfig::new(SigningKeys::rs256())
            .client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, &callback))
            .account(alice()),
    );
    let auth_endpoint = op.url("/auth");

    let req = auth_request(&auth_endpoint, CLIENT_ID, &callback, "openid email");
    let back = deny_at_provider(&req.url, "alice").await;
    assert!(back.starts_with(&format!("{callback}?")), "{back}");
    assert_eq!(query_param(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&back, "state").as_deref(), Some(req.state.as_str()));
    assert_eq!(query_param(&back, "iss"), Some(op.issuer()));
    assert_eq!(query_param(&back, "code"), None);

    let req = auth_request(&auth_endpoint, CLIENT_ID, &callback, "openid email");
    let back = cancel_at_provider(&req.url).await;
    assert_eq!(query_param(&back, "error").as_deref(), Some("access_denied"), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some(req.state.as_str()));

    // An unknown login is refused on the spot; the person may then give up.
    let browser = ProviderBrowser::new();
    let req = auth_request(&auth_endpoint, CLIENT_ID, &callback, "openid email");
    let login_page = browser.unknown_login(&req.url, "mallory").await;
    assert!(login_page.starts_with(&op.url("/interaction/")), "{login_page}");
    assert!(op.log().contains("login refused: no account \"mallory\""), "{}", op.log());
    let back = browser.cancel_at(&login_page).await;
    assert_eq!(query_param(&back, "error").as_deref(), Some("access_denied"), "{back}");

    // An unregistered redirect URI never leaves the provider.
    let req = auth_request(&auth_endpoint, CLIENT_ID, "http://127.0.0.1:9/elsewhere", "openid");
    match ProviderBrowser::new().visit(&req.url, "alice", Consent::Approve).await {
        AtProvider::Page { status: 400, body, .. } => assert!(body.contains("redirect_uri"), "{body}"),
        other => panic!("expected the provider's error page, got {other:?}"),
    }
}

#[tokio::test]
async fn a_microsoft_style_provider_has_an_issuer_path_es256_tokens_and_a_tenant_claim() {
    let (_rp, callback) = throwaway_callback();
    let tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let keys = SigningKeys::generate(&["RS256", "ES256"]);
    // Registered on another port: any loopback port matches, for a gateway started later.
    let registered = "http://127.0.0.1:9/.dalea/oauth/test/callback";
    let op = OidcProvider::start(
        OidcConfig::new(keys.clone())
            .issuer_path(&format!("/{tenant}/v2.0"))
            .conform_id_token_claims(true)
            .client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, registered).id_token_alg("ES256").any_loopback_port())
            .account(alice().claim("tid", tenant)),
    );
    assert_eq!(op.issuer(), format!("http://127.0.0.1:{}/{tenant}/v2.0", op.port()));
    let d = get_json(&op.discovery_url()).await;
    assert_eq!(d["issuer"], op.issuer());

    let req = auth_request(d["authorization_endpoint"].as_str().unwrap(), CLIENT_ID, &callback, "openid email profile");
    let back = sign_in_at_provider(&req.url, "alice").await;
    assert!(back.starts_with(&callback), "{back}");
    let code = query_param(&back, "code").expect("code");
    let (status, tokens) =
        exchange(d["token_endpoint"].as_str().unwrap(), CLIENT_SECRET, &code, &callback, &req.verifier, false).await;
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().unwrap();
    let (header, claims) = decode_jwt(id_token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], keys.kid("ES256"));
    verify_jwt(id_token, &get_json(d["jwks_uri"].as_str().unwrap()).await).expect("ES256 signature verifies");
    assert_eq!(claims["iss"], op.issuer());
    assert_eq!(claims["tid"], tenant);
    // conform_id_token_claims: the email goes to userinfo only.
    assert!(claims.get("email").is_none(), "{claims}");
}

#[tokio::test]
async fn forged_tokens_verify_only_with_the_forger_s_key() {
    let provider_keys = SigningKeys::rs256();
    let forger = SigningKeys::generate(&["RS256", "ES256"]);
    let claims = json!({"iss": "http://127.0.0.1:1", "aud": CLIENT_ID, "sub": "alice", "exp": 4_102_444_800_i64});

    let forged = sign_jwt(forger.key("RS256"), &json!({}), &claims);
    let (header, decoded) = decode_jwt(&forged);
    assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": forger.kid("RS256")}));
    assert_eq!(decoded, claims);
    verify_jwt(&forged, &forger.public_jwks()).expect("verifies with its own key");
    assert!(verify_jwt(&forged, &provider_keys.public_jwks()).is_err());
    // Claiming the provider's kid does not make it verify with the provider's key.
    let lying = sign_jwt(forger.key("RS256"), &json!({"kid": provider_keys.kid("RS256")}), &claims);
    assert_eq!(verify_jwt(&lying, &provider_keys.public_jwks()), Err("bad signature".into()));
    verify_jwt(&sign_jwt(forger.key("ES256"), &json!({}), &claims), &forger.public_jwks()).expect("ES256");
    assert!(verify_jwt(&with_claims(&forged, &json!({"sub": "mallory"})), &forger.public_jwks()).is_err());

    let none = unsigned_jwt(&json!({}), &claims);
    assert!(none.ends_with('.'));
    assert_eq!(decode_jwt(&none).0, json!({"alg": "none", "typ": "JWT"}));
    let hs = hs256_jwt(b"the provider's public key, misused", &json!({"kid": "k1"}), &claims);
    assert_eq!(decode_jwt(&hs).0, json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
    assert!(verify_jwt(&hs, &provider_keys.public_jwks()).is_err());
}

#[tokio::test]
async fn the_provider_can_hand_out_a_tampered_id_token_once() {
    let (_rp, callback) = throwaway_callback();
    let op = OidcProvider::start(
        OidcConfig::new(SigningKeys::rs256())
            .client(OidcClient::new(CLIENT_ID, CLIENT_SECRET, &callback))
            .account(alice()),
    );
    let jwks = op.keys().public_jwks();
    let forger = SigningKeys::rs256();
    let browser = ProviderBrowser::new();
    let id_token = |tamper: Option<IdTokenTamper>| {
        let (op, browser, callback) = (&op, &browser, &callback);
        async move {
            if let Some(tamper) = tamper {
                op.tamper_next_id_token(tamper);
            }
            let req = auth_request(&op.url("/auth"), CLIENT_ID, callback, "openid email");
            let code = query_param(&browser.approve(&req.url, "alice").await, "code").expect("code");
            let (status, tokens) =
                exchange(&op.url("/token"), CLIENT_SECRET, &code, callback, &req.verifier, false).await;
            assert_eq!(status, 200, "{tokens}");
            (req.nonce, tokens["id_token"].as_str().map(str::to_string))
        }
    };

    // Claims changed, still signed by the provider's key.
    let (nonce, token) = id_token(Some(IdTokenTamper::new().set("aud", "someone-else").remove("email"))).await;
    let token = token.expect("id_token");
    let (_, claims) = decode_jwt(&token);
    assert_eq!((&claims["aud"], &claims["nonce"]), (&json!("someone-else"), &json!(nonce)));
    assert!(claims.get("email").is_none());
    verify_jwt(&token, &jwks).expect("signed with the provider's key");

    // Once only.
    let (_, token) = id_token(None).await;
    assert_eq!(decode_jwt(&token.unwrap()).1["aud"], CLIENT_ID);

    // Another key, claiming the provider's kid.
    let (_, token) = id_token(Some(IdTokenTamper::new().signed_with(forger.key("RS256")))).await;
    let token = token.unwrap();
    assert_eq!(decode_jwt(&token).0["kid"], op.keys().kid("RS256"));
    assert_eq!(verify_jwt(&token, &jwks), Err("bad signature".into()));

    let (_, token) = id_token(Some(IdTokenTamper::new().unsigned())).await;
    let token = token.unwrap();
    assert_eq!(decode_jwt(&token).0["alg"], "none");
    assert!(token.ends_with('.'));

    let (_, token) = id_token(Some(IdTokenTamper::replaced_by("not-a-jwt"))).await;
    assert_eq!(token.as_deref(), Some("not-a-jwt"));
    let (_, token) = id_token(Some(IdTokenTamper::omitted())).await;
    assert_eq!(token, None);

    op.tamper_next_id_token(IdTokenTamper::omitted());
    op.clear_id_token_tamper();
    assert!(id_token(None).await.1.is_some());
}

// ---------------------------------------------------------------------------------------------
// GitHub stand-in
// ---------------------------------------------------------------------------------------------

fn octocat() -> GitHubUser {
    GitHubUser::new(583231, "octocat", "The Octocat", "octocat@example.com").with_email("old@example.com", false)
}

fn github_authorize_url(gh: &GitHubStandIn, callback: &str, verifier: &str, state: &str) -> String {
    let mut url = url::Url::parse(&gh.authorize_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", callback)
        .append_pair("scope", "read:user user:email")
        .append_pair("state", state)
        .append_pair("code_challenge", &pkce_challenge(verifier))
        .append_pair("code_challenge_method", "S256");
    url.into()
}

async fn github_token(gh: &GitHubStandIn, form: &[(&str, &str)]) -> Value {
    let resp = crate::support::http_client()
        .post(gh.token_url())
        .header("accept", "application/json")
        .form(form)
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200, "GitHub answers token errors with 200 too");
    resp.json().await.expect("JSON")
}

async fn github_api(gh: &GitHubStandIn, path: &str, token: Option<&str>, user_agent: bool) -> (u16, String) {
    let mut req = crate::support::http_client()
        .get(format!("{}{path}", gh.api_url()))
        .header("accept", "application/vnd.github+json");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if user_agent {
        req = req.header("user-agent", "dalea-gateway-test");
    }
    let resp = req.send().await.expect("API request");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn the_github_stand_in_does_the_web_flow_with_pkce() {
    let (_rp, callback) = throwaway_callback();
    let gh = GitHubStandIn::start(
        GitHubConfig::new(CLIENT_ID, CLIENT_SECRET)
            .callback_url("http://127.0.0.1/.dalea/oauth/test/callback")
            .user(octocat())
            .user(GitHubUser::unverified(2, "unverified", "Unverified Person", "unverified@example.com")),
    );
    let verifier = random_token(32);
    let back = gh.authorize(&github_authorize_url(&gh, &callback, &verifier, "st-1")).await;
    assert!(back.starts_with(&format!("{callback}?")), "a loopback redirect URI may use any port: {back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-1"));
    let code = query_param(&back, "code").expect("code");

    let mut form = vec![
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("code", code.as_str()),
        ("redirect_uri", callback.as_str()),
    ];
    let wrong = random_token(32);
    let body = github_token(&gh, &[form.clone(), vec![("code_verifier", wrong.as_str())]].concat()).await;
    assert_eq!(body["error"], "bad_verification_code", "{body}");
    let body = github_token(&gh, &form).await;
    assert_eq!(body["error"], "bad_verification_code", "no verifier for a PKCE code: {body}");
    form.push(("code_verifier", verifier.as_str()));
    let mut wrong_secret = form.clone();
    wrong_secret[1] = ("client_secret", "wrong");
    let body = github_token(&gh, &wrong_secret).await;
    assert_eq!(body["error"], "incorrect_client_credentials", "{body}");
    let tokens = github_token(&gh, &form).await;
    assert_eq!(tokens["token_type"], "bearer", "{tokens}");
    assert_eq!(tokens["scope"], "read:user,user:email");
    let token = tokens["access_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("gho_"));
    let body = github_token(&gh, &form).await;
    assert_eq!(body["error"], "bad_verification_code", "a code is single use: {body}");

    let (status, user) = github_api(&gh, "/user", Some(&token), true).await;
    assert_eq!(status, 200, "{user}");
    let user: Value = serde_json::from_str(&user).unwrap();
    assert_eq!((user["id"].as_u64(), user["login"].as_str()), (Some(583231), Some("octocat")));
    assert_eq!(user["email"], "octocat@example.com");
    let (status, emails) = github_api(&gh, "/user/emails", Some(&token), true).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&emails).unwrap(),
        json!([
            {"email": "octocat@example.com", "primary": true, "verified": true, "visibility": "public"},
            {"email": "old@example.com", "primary": false, "verified": false, "visibility": null},
        ])
    );
    assert_eq!(github_api(&gh, "/user", Some(&token), false).await.0, 403, "GitHub requires a User-Agent");
    let (status, body) = github_api(&gh, "/user", None, true).await;
    assert_eq!(status, 401);
    assert!(body.contains("Requires authentication"), "{body}");
    let (status, body) = github_api(&gh, "/user", Some("gho_not-a-token"), true).await;
    assert_eq!(status, 401);
    assert!(body.contains("Bad credentials"), "{body}");

    // What the relying party sent is on record.
    let sent = gh.requests_to("/login/oauth/access_token");
    assert_eq!(sent.len(), 5);
    let last_ok = &sent[3];
    assert_eq!(last_ok.param("code_verifier").as_deref(), Some(verifier.as_str()));
    assert_eq!(last_ok.param("client_secret").as_deref(), Some(CLIENT_SECRET));
    assert!(gh.requests().iter().all(|r| r.header("cookie").is_none()));

    // A person whose primary address is unverified; a token without user:email.
    gh.approve_as("unverified");
    let mut url = url::Url::parse(&gh.authorize_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", &callback)
        .append_pair("scope", "read:user");
    let code = query_param(&gh.authorize(url.as_str()).await, "code").unwrap();
    let tokens =
        github_token(&gh, &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("code", &code)]).await;
    let token = tokens["access_token"].as_str().expect("no PKCE, no verifier: fine");
    let user: Value = serde_json::from_str(&github_api(&gh, "/user", Some(token), true).await.1).unwrap();
    assert_eq!((user["login"].as_str(), &user["email"]), (Some("unverified"), &Value::Null));
    assert_eq!(github_api(&gh, "/user/emails", Some(token), true).await.0, 404, "needs the user:email scope");
    gh.set_user(GitHubUser::unverified(2, "unverified", "Unverified Person", "unverified@example.com"));
    let code = query_param(&gh.authorize(&github_authorize_url(&gh, &callback, &verifier, "s")).await, "code").unwrap();
    let form =
        [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("code", &code), ("code_verifier", &verifier)];
    let token = github_token(&gh, &form).await["access_token"].as_str().unwrap().to_string();
    let emails: Value = serde_json::from_str(&github_api(&gh, "/user/emails", Some(&token), true).await.1).unwrap();
    assert_eq!(emails[0]["primary"], true);
    assert_eq!(emails[0]["verified"], false);
}

#[tokio::test]
async fn the_github_stand_in_denies_and_checks_the_redirect_uri() {
    let (_rp, callback) = throwaway_callback();
    let registered = "http://127.0.0.1/.dalea/oauth/test/callback";
    let gh = GitHubStandIn::start(GitHubConfig::new(CLIENT_ID, CLIENT_SECRET).callback_url(registered).user(octocat()));
    let verifier = random_token(32);

    gh.deny();
    let back = gh.authorize(&github_authorize_url(&gh, &callback, &verifier, "st-2")).await;
    assert!(back.starts_with(&format!("{callback}?")), "{back}");
    assert_eq!(query_param(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-2"));
    assert!(query_param(&back, "error_description").is_some());
    assert_eq!(query_param(&back, "code"), None);

    gh.approve_as("octocat");
    let back = gh.authorize(&github_authorize_url(&gh, "http://127.0.0.1:9/elsewhere", &verifier, "st-3")).await;
    assert!(back.starts_with(&format!("{registered}?")), "to the registered callback: {back}");
    assert_eq!(query_param(&back, "error").as_deref(), Some("redirect_uri_mismatch"));

    // The code is bound to the redirect URI it was issued for.
    let code = query_param(&gh.authorize(&github_authorize_url(&gh, &callback, &verifier, "s")).await, "code").unwrap();
    let other = format!("{callback}/other");
    let form = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("code", code.as_str()),
        ("redirect_uri", other.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    assert_eq!(github_token(&gh, &form).await["error"], "redirect_uri_mismatch");

    // Without Accept: application/json the answer is form-encoded, as GitHub's default; and
    // HTTP Basic client authentication is accepted.
    let resp = crate::support::http_client()
        .post(gh.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("code", code.as_str()), ("redirect_uri", callback.as_str()), ("code_verifier", verifier.as_str())])
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    assert!(body.starts_with("access_token=gho_") && body.contains("token_type=bearer"), "{body}");
}
