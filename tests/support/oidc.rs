//! A real OpenID Provider for sign-in tests, and the person who signs in at it.
//!
//! [`OidcProvider`] runs `node tests/oidc/provider.mjs` (panva's `oidc-provider`, pinned in
//! `tests/oidc/package.json`; `scripts/test.sh` runs `npm ci` there) on a free loopback port,
//! configured from an [`OidcConfig`]: clients, accounts, signing keys, Google-style ID token
//! claims or not, an issuer path for Microsoft-style issuers. It is killed (by its own pid) on
//! Drop, and can be stopped and restarted on the same port, with other keys for key rotation.
//!
//! [`ProviderBrowser`] is the person at the provider: given the authorization URL the gateway
//! redirected to, it logs in through the provider's development login and consent pages with a
//! cookie jar of its own (never the gateway's) and without following redirects, and returns the
//! `Location` the provider finally sends the person to: the gateway's callback with `code`,
//! `state` and `iss`, or with `error=access_denied` when the person denies or cancels.
//!
//! [`SigningKeys`] and the `*_jwt` functions make keys and forged ID tokens for bad-input tests
//! (signing runs `node tests/oidc/jwt.mjs`, on node:crypto, as the crate has no RSA signer), and
//! [`OidcProvider::tamper_next_id_token`] makes the provider's token endpoint hand the gateway
//! an altered ID token (claims changed, another key, `alg: none`, or any string) once.
//!
//! Node or the npm packages missing is a PANIC with a clear message, never a skip.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Map, Value};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `tests/oidc` in this checkout.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("oidc")
}

fn node() -> PathBuf {
    std::env::var_os("DALEA_NODE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("node"))
}

/// Panics unless `npm ci` has been run in `tests/oidc`.
fn ensure_installed() {
    let pkg = oidc_dir().join("node_modules").join("oidc-provider").join("package.json");
    assert!(
        pkg.exists(),
        "{} is missing: install the OIDC test peer's packages first: (cd tests/oidc && npm ci) \
         (scripts/test.sh does it)",
        pkg.display()
    );
}

/// Runs `node tests/oidc/jwt.mjs <args>` with `stdin`, returns its stdout (trimmed).
fn jwt_mjs(args: &[&str], stdin: Option<&Value>) -> String {
    let mut child = Command::new(node())
        .arg(oidc_dir().join("jwt.mjs"))
        .args(args)
        .current_dir(oidc_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): the OIDC tests need Node.js 20 or newer"));
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(v) = stdin {
            input.write_all(v.to_string().as_bytes()).expect("write to jwt.mjs");
        }
    }
    let out = child.wait_with_output().expect("jwt.mjs runs");
    assert!(
        out.status.success(),
        "node tests/oidc/jwt.mjs {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------------------------

/// A set of private signing keys (a JWK Set whose keys have `kid`, `alg`, `use: "sig"` and the
/// private parts), freshly generated for a test: what a provider signs with, or what a test
/// forges tokens with.
#[derive(Clone, Debug, PartialEq)]
pub struct SigningKeys {
    jwks: Value,
}

impl SigningKeys {
    /// One fresh key per alg (`"RS256"`, `"ES256"`, `"PS256"`...), in that order.
    pub fn generate(algs: &[&str]) -> SigningKeys {
        let mut args = vec!["keys"];
        args.extend_from_slice(algs);
        let jwks: Value = serde_json::from_str(&jwt_mjs(&args, None)).expect("jwt.mjs keys prints JSON");
        SigningKeys { jwks }
    }

    /// One fresh RS256 key.
    pub fn rs256() -> SigningKeys {
        SigningKeys::generate(&["RS256"])
    }

    /// These keys and then `other`'s (a provider that publishes the old and the new key).
    pub fn merged(&self, other: &SigningKeys) -> SigningKeys {
        let mut keys = self.keys().to_vec();
        keys.extend_from_slice(other.keys());
        SigningKeys { jwks: json!({ "keys": keys }) }
    }

    pub fn keys(&self) -> &[Value] {
        self.jwks["keys"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// The private JWK Set, as given to the provider.
    pub fn private_jwks(&self) -> &Value {
        &self.jwks
    }

    /// The public JWK Set, as the provider publishes it at its `jwks_uri`.
    pub fn public_jwks(&self) -> Value {
        const PRIVATE: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];
        let keys: Vec<Value> = self
            .keys()
            .iter()
            .map(|k| {
                let mut k = k.as_object().cloned().unwrap_or_default();
                k.retain(|name, _| !PRIVATE.contains(&name.as_str()));
                Value::Object(k)
            })
            .collect();
        json!({ "keys": keys })
    }

    pub fn kids(&self) -> Vec<String> {
        self.keys().iter().filter_map(|k| k["kid"].as_str().map(str::to_string)).collect()
    }

    /// The first key for `alg`.
    pub fn key(&self, alg: &str) -> &Value {
        self.keys().iter().find(|k| k["alg"] == alg).unwrap_or_else(|| panic!("no {alg} key in {:?}", self.kids()))
    }

    /// The `kid` of the first key for `alg`.
    pub fn kid(&self, alg: &str) -> String {
        self.key(alg)["kid"].as_str().expect("kid").to_string()
    }
}

/// Signs `claims` with the private JWK `key` (RS256, PS256, ES256..., or an `oct` key for
/// HS256). The header is `{alg, typ: "JWT", kid}` from the key, then each field of `header`
/// (an object; `json!({})` for none) set over it, so a test can make the header lie.
pub fn sign_jwt(key: &Value, header: &Value, claims: &Value) -> String {
    jwt_mjs(&["sign"], Some(&json!({ "jwk": key, "header": header, "claims": claims })))
}

/// An unsecured JWT (`alg: "none"`, empty signature): `{alg: "none", typ: "JWT"}` with the
/// fields of `header` set over it.
pub fn unsigned_jwt(header: &Value, claims: &Value) -> String {
    let mut h = json!({ "alg": "none", "typ": "JWT" });
    merge(&mut h, header);
    format!("{}.{}.", B64.encode(h.to_string()), B64.encode(claims.to_string()))
}

/// An HS256 JWT with `secret` as the HMAC key (e.g. the provider's public key bytes, for the
/// algorithm-confusion attack), header `{alg: "HS256", typ: "JWT"}` with `header` set over it.
pub fn hs256_jwt(secret: &[u8], header: &Value, claims: &Value) -> String {
    use hmac::Mac;
    let mut h = json!({ "alg": "HS256", "typ": "JWT" });
    merge(&mut h, header);
    let input = format!("{}.{}", B64.encode(h.to_string()), B64.encode(claims.to_string()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// The same token with its payload replaced by `claims` and its signature kept (now invalid).
pub fn with_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2])
}

/// Header and claims of a compact JWS, without verifying anything.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    let part = |p: &str| -> Value {
        serde_json::from_slice(&B64.decode(p).expect("base64url JWT part")).expect("JSON JWT part")
    };
    (part(parts[0]), part(parts[1]))
}

/// Whether `token`'s signature verifies with the key of `jwks` (public or private JWK Set) that
/// its header's `kid` names, for the `alg` the header names (claims are not checked).
pub fn verify_jwt(token: &str, jwks: &Value) -> Result<(), String> {
    let out: Value = serde_json::from_str(&jwt_mjs(&["verify"], Some(&json!({ "token": token, "jwks": jwks }))))
        .expect("jwt.mjs verify prints JSON");
    if out["valid"] == true {
        Ok(())
    } else {
        Err(out["reason"].as_str().unwrap_or("invalid").to_string())
    }
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// A random URL-safe string of `bytes` random bytes (state, nonce, PKCE verifier).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random bytes");
    B64.encode(buf)
}

/// The PKCE S256 `code_challenge` of `verifier` (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    B64.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The value of query parameter `name` in `url` (decoded), if there is one.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The gateway's callback URL for provider `name` on a gateway at `gateway` (`127.0.0.1:port`).
pub fn gateway_callback(gateway: std::net::SocketAddr, name: &str) -> String {
    format!("http://{gateway}/.dalea/oauth/{name}/callback")
}

// ---------------------------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------------------------

/// A client (relying party) registered at the provider.
#[derive(Clone, Debug)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` (default) or `client_secret_post`; a client registered with
    /// either may authenticate with either at the token endpoint.
    pub token_endpoint_auth_method: String,
    /// `RS256` (default), `ES256`, `PS256`: the provider's keys must include one for it.
    pub id_token_signed_response_alg: String,
    /// A loopback redirect URI matches whatever its port (RFC 8252 7.3; oidc-provider does this
    /// for native clients): register the callback before the gateway's port is known.
    pub any_loopback_port: bool,
}

impl OidcClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> OidcClient {
        OidcClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            token_endpoint_auth_method: "client_secret_basic".into(),
            id_token_signed_response_alg: "RS256".into(),
            any_loopback_port: false,
        }
    }

    /// Registers one more redirect URI.
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    pub fn auth_method(mut self, method: &str) -> Self {
        self.token_endpoint_auth_method = method.into();
        self
    }

    pub fn id_token_alg(mut self, alg: &str) -> Self {
        self.id_token_signed_response_alg = alg.into();
        self
    }

    pub fn any_loopback_port(mut self) -> Self {
        self.any_loopback_port = true;
        self
    }
}

/// An account at the provider. The person logs in by typing its `sub`.
#[derive(Clone, Debug)]
pub struct OidcAccount {
    pub sub: String,
    /// Standard claims (`email`, `email_verified`, `name`, ...) are released by their scope;
    /// any other (e.g. Microsoft's `tid`) always goes into the ID token.
    pub claims: Map<String, Value>,
}

impl OidcAccount {
    pub fn new(sub: &str, email: &str, email_verified: bool, name: &str) -> OidcAccount {
        OidcAccount::bare(sub).claim("email", email).claim("email_verified", email_verified).claim("name", name)
    }

    /// An account with no claims but `sub`.
    pub fn bare(sub: &str) -> OidcAccount {
        OidcAccount { sub: sub.into(), claims: Map::new() }
    }

    /// Sets a claim (any JSON: `"false"` as a string for an `email_verified` of the wrong type).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }
}

/// Everything [`OidcProvider::start`] needs.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// `None`: a free port from [`super::free_addr`], kept across restarts.
    pub port: Option<u16>,
    /// `""` or e.g. `"/<tenant>/v2.0"`: the issuer and all endpoints live under it.
    pub issuer_path: String,
    pub clients: Vec<OidcClient>,
    pub accounts: Vec<OidcAccount>,
    /// `false` (default, Google style): the claims of the requested scopes (email...) go into
    /// the ID token. `true`: only into userinfo.
    pub conform_id_token_claims: bool,
    pub keys: SigningKeys,
    /// `None`: openid, offline_access, email, profile.
    pub scopes: Option<Vec<String>>,
    /// oidc-provider `ttl` overrides in seconds (`IdToken`, `AuthorizationCode`, ...).
    pub ttl: Map<String, Value>,
}

impl OidcConfig {
    pub fn new(keys: SigningKeys) -> OidcConfig {
        OidcConfig {
            port: None,
            issuer_path: String::new(),
            clients: Vec::new(),
            accounts: Vec::new(),
            conform_id_token_claims: false,
            keys,
            scopes: None,
            ttl: Map::new(),
        }
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn issuer_path(mut self, path: &str) -> Self {
        self.issuer_path = path.into();
        self
    }

    pub fn client(mut self, client: OidcClient) -> Self {
        self.clients.push(client);
        self
    }

    pub fn account(mut self, account: OidcAccount) -> Self {
        self.accounts.push(account);
        self
    }

    pub fn conform_id_token_claims(mut self, conform: bool) -> Self {
        self.conform_id_token_claims = conform;
        self
    }

    pub fn ttl(mut self, model: &str, seconds: u64) -> Self {
        self.ttl.insert(model.into(), seconds.into());
        self
    }

    /// The JSON `provider.mjs` reads (for the port it will listen on).
    pub fn to_json(&self, port: u16) -> Value {
        let clients: Vec<Value> = self
            .clients
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "redirect_uris": c.redirect_uris,
                    "token_endpoint_auth_method": c.token_endpoint_auth_method,
                    "id_token_signed_response_alg": c.id_token_signed_response_alg,
                    "any_loopback_port": c.any_loopback_port,
                })
            })
            .collect();
        let accounts: Vec<Value> = self.accounts.iter().map(|a| json!({ "sub": a.sub, "claims": a.claims })).collect();
        let mut cfg = json!({
            "port": port,
            "issuer_path": self.issuer_path,
            "clients": clients,
            "accounts": accounts,
            "conform_id_token_claims": self.conform_id_token_claims,
            "jwks": self.keys.private_jwks(),
            "ttl": self.ttl,
        });
        if let Some(scopes) = &self.scopes {
            cfg["scopes"] = json!(scopes);
        }
        cfg
    }
}

// ---------------------------------------------------------------------------------------------
// The provider process
// ---------------------------------------------------------------------------------------------

/// A running `tests/oidc/provider.mjs`; killed on Drop.
pub struct OidcProvider {
    config: OidcConfig,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl OidcProvider {
    /// Starts the provider and waits until its discovery document answers 200.
    pub fn start(config: OidcConfig) -> OidcProvider {
        ensure_installed();
        let port = config.port.unwrap_or_else(|| super::free_addr().port());
        let dir = tempfile::tempdir().expect("temp dir for the provider log");
        let mut provider = OidcProvider { config, port, child: None, dir, starts: 0 };
        provider.spawn();
        provider
    }

    /// `http://127.0.0.1:<port><issuer_path>`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.config.issuer_path.trim_end_matches('/'))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `issuer` + `path` (e.g. `"/jwks"`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    pub fn discovery_url(&self) -> String {
        self.url("/.well-known/openid-configuration")
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The keys it signs with now.
    pub fn keys(&self) -> &SigningKeys {
        &self.config.keys
    }

    /// Everything the current process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the process (its port then refuses connections). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts it again on the same port with the same configuration. Everything it
    /// kept in memory (sessions, codes, grants) is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts it on the same port signing with `keys` (and publishing only them).
    pub fn restart_with_keys(&mut self, keys: SigningKeys) {
        self.config.keys = keys;
        self.restart();
    }

    /// Restarts it on the same port with another configuration (its `port` is ignored).
    pub fn restart_with(&mut self, config: OidcConfig) {
        self.config = config;
        self.restart();
    }

    /// Alters the ID token of the provider's next successful token response (once): the real
    /// token (right `nonce`, `aud`, `iss`, `exp`...) with `tamper` applied, for bad-input
    /// tests of the gateway's ID token validation.
    pub fn tamper_next_id_token(&self, tamper: IdTokenTamper) {
        let body = tamper.to_json().to_string();
        let status = http_request(self.port, "POST", "/__test/next-id-token", Some(&body));
        assert_eq!(status, Some(204), "the provider did not take the ID token tamper:\n{}", self.log());
    }

    /// Forgets a tamper no token response used yet.
    pub fn clear_id_token_tamper(&self) {
        assert_eq!(http_request(self.port, "DELETE", "/__test/next-id-token", None), Some(204));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("provider-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).expect("create provider log");
        let mut child = Command::new(node())
            .arg(oidc_dir().join("provider.mjs"))
            .current_dir(oidc_dir())
            .env("DALEA_OIDC_PROVIDER_CONFIG", self.config.to_json(self.port).to_string())
            // Held open by the Child: if this process dies without stopping it, it exits.
            .env("DALEA_OIDC_EXIT_WITH_PARENT", "1")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node ({e}): the OIDC tests need Node.js 20 or newer"));
        let ready = format!("listening {}", self.issuer());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::fs::read_to_string(&log_path).unwrap_or_default().lines().any(|l| l == ready)
                && http_status(self.port, &format!("{}/.well-known/openid-configuration", self.config.issuer_path))
                    == Some(200)
            {
                self.child = Some(child);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the OIDC provider on port {} exited ({status}) before it was ready:\n{}",
                    self.port,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the OIDC provider on port {} was not ready within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status of `GET path` on 127.0.0.1:`port`, or `None` if it cannot be had.
fn http_status(port: u16, path: &str) -> Option<u16> {
    http_request(port, "GET", path, None)
}

/// The status of one request with a JSON `body` to 127.0.0.1:`port` (blocking; the provider's
/// own test-control endpoint and readiness check only).
fn http_request(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Who signs a tampered ID token ([`IdTokenTamper`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Signer {
    /// The provider's key that signed the real token (claims tampered, signature valid).
    #[default]
    Provider,
    /// This private JWK (e.g. from a [`SigningKeys`] the provider does not publish).
    Key(Value),
    /// Nobody: `alg: "none"`, empty signature.
    Unsigned,
}

/// How the provider alters the ID token of its next token response
/// ([`OidcProvider::tamper_next_id_token`]).
#[derive(Clone, Debug, Default)]
pub struct IdTokenTamper {
    pub set_claims: Map<String, Value>,
    pub remove_claims: Vec<String>,
    /// Header fields set over the real header (`kid`, `alg`, `typ`...).
    pub header: Map<String, Value>,
    pub signer: Signer,
    /// This token instead of the real one (nothing else applies).
    pub replace: Option<String>,
    /// No `id_token` in the response at all.
    pub omit: bool,
}

impl IdTokenTamper {
    pub fn new() -> IdTokenTamper {
        IdTokenTamper::default()
    }

    /// Sets claim `name` (e.g. `aud` to someone else, `exp` in the past, `nonce` another).
    pub fn set(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.set_claims.insert(name.into(), value.into());
        self
    }

    pub fn remove(mut self, name: &str) -> Self {
        self.remove_claims.push(name.into());
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.into(), value.into());
        self
    }

    /// Re-signed with `key` (a private JWK) instead of the provider's key.
    pub fn signed_with(mut self, key: &Value) -> Self {
        self.signer = Signer::Key(key.clone());
        self
    }

    /// `alg: "none"`.
    pub fn unsigned(mut self) -> Self {
        self.signer = Signer::Unsigned;
        self
    }

    /// `token` (anything, even not a JWT) in place of the real ID token.
    pub fn replaced_by(token: &str) -> IdTokenTamper {
        IdTokenTamper { replace: Some(token.into()), ..IdTokenTamper::default() }
    }

    /// A token response without an ID token.
    pub fn omitted() -> IdTokenTamper {
        IdTokenTamper { omit: true, ..IdTokenTamper::default() }
    }

    /// The JSON `provider.mjs` takes at `POST /__test/next-id-token`.
    pub fn to_json(&self) -> Value {
        let signer = match &self.signer {
            Signer::Provider => json!("provider"),
            Signer::Key(jwk) => jwk.clone(),
            Signer::Unsigned => json!("none"),
        };
        let mut v = json!({
            "set_claims": self.set_claims,
            "remove_claims": self.remove_claims,
            "header": self.header,
            "signer": signer,
            "omit": self.omit,
        });
        if let Some(token) = &self.replace {
            v["replace"] = json!(token);
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// The person at the provider
// ---------------------------------------------------------------------------------------------

/// Where the person's visit to the provider ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AtProvider {
    /// The provider sent the person to another origin (the relying party's redirect URI):
    /// this `Location`.
    Redirected(String),
    /// The provider refused the login typed (no such account) and asks for it again: the
    /// login page's URL (pass it to [`ProviderBrowser::cancel_at`] to give up).
    LoginRefused(String),
    /// The provider answered with a page of its own that is neither login nor consent (an
    /// error page, e.g. for an unregistered redirect URI).
    Page { status: u16, url: String, body: String },
}

/// What the person does on the consent page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Consent {
    Approve,
    Deny,
}

#[derive(Debug, Clone)]
struct StoredCookie {
    origin: String,
    name: String,
    value: String,
    path: String,
}

/// The person's browser at the provider: a cookie jar of its own (path-aware, host-only, as a
/// browser keeps the provider's cookies) and no automatic redirects. One per person; reusing
/// it for a second sign-in reuses the provider session (no login page, maybe no consent).
pub struct ProviderBrowser {
    client: reqwest::Client,
    jar: Mutex<Vec<StoredCookie>>,
    /// Every URL visited, in order (for assertion messages).
    pub visited: Mutex<Vec<String>>,
    /// The provider pages the person was shown, in order: `"login"` or `"consent"`.
    pub pages_seen: Mutex<Vec<&'static str>>,
}

impl Default for ProviderBrowser {
    fn default() -> Self {
        ProviderBrowser::new()
    }
}

impl ProviderBrowser {
    pub fn new() -> ProviderBrowser {
        ProviderBrowser {
            client: super::http_builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            jar: Mutex::new(Vec::new()),
            visited: Mutex::new(Vec::new()),
            pages_seen: Mutex::new(Vec::new()),
        }
    }

    /// Logs in as `login` and approves: the `Location` back to the relying party (with `code`,
    /// `state`, `iss`). Panics if the provider ends anywhere else.
    pub async fn approve(&self, authorization_url: &str, login: &str) -> String {
        match self.visit(authorization_url, login, Consent::Approve).await {
            AtProvider::Redirected(location) => location,
            other => panic!("the provider did not send {login} back after approval: {other:?}"),
        }
    }

    /// Logs in as `login` and denies consent: the `Location` back to the relying party (with
    /// `error=access_denied`, `state`, `iss`).
    pub async fn deny(&self, authorization_url: &str, login: &str) -> String {
        match self.visit(authorization_url, login, Consent::Deny).await {
            AtProvider::Redirected(location) => location,
            other => panic!("the provider did not send {login} back after denial: {other:?}"),
        }
    }

    /// Cancels on the login page without logging in: the `Location` back to the relying party
    /// (with `error=access_denied`). Needs a browser with no provider session.
    pub async fn cancel(&self, authorization_url: &str) -> String {
        let mut url = authorization_url.to_string();
        for _ in 0..10 {
            let (status, location, body) = self.get(&url).await;
            if let Some(location) = location {
                if !same_origin(&location, authorization_url) {
                    panic!("the provider sent the person away before the login page: {location}");
                }
                url = location;
            } else if status == 200 && prompt(&body) == Some("login") {
                self.pages_seen.lock().unwrap().push("login");
                return self.cancel_at(&url).await;
            } else {
                panic!("no login page to cancel at {url} ({status}):\n{body}");
            }
        }
        panic!("too many redirects at the provider from {authorization_url}");
    }

    /// Gives up on an interaction page (login or consent): the `Location` back to the relying
    /// party with `error=access_denied`.
    pub async fn cancel_at(&self, interaction_url: &str) -> String {
        let abort = format!("{}/abort", interaction_url.split('?').next().unwrap_or(interaction_url));
        let mut url = abort;
        for _ in 0..10 {
            let (status, location, body) = self.get(&url).await;
            match location {
                Some(location) if !same_origin(&location, interaction_url) => return location,
                Some(location) => url = location,
                None => panic!("cancelling at {interaction_url} ended on a page ({status}):\n{body}"),
            }
        }
        panic!("too many redirects at the provider cancelling {interaction_url}");
    }

    /// Tries to log in as `login`, which the provider does not know: the URL of the login page
    /// it asks again on. Panics if the provider let the person through.
    pub async fn unknown_login(&self, authorization_url: &str, login: &str) -> String {
        match self.visit(authorization_url, login, Consent::Approve).await {
            AtProvider::LoginRefused(url) => url,
            other => panic!("the provider did not refuse the login {login}: {other:?}"),
        }
    }

    /// Follows the provider's redirects from `url`, logging in as `login` on a login page
    /// (once: a second login page means the login was refused) and answering `consent` on a
    /// consent page, until the provider sends the person to another origin.
    pub async fn visit(&self, url: &str, login: &str, consent: Consent) -> AtProvider {
        let provider = url.to_string();
        let mut url = url.to_string();
        let mut logged_in = false;
        for _ in 0..20 {
            let (status, location, body) = self.get(&url).await;
            if let Some(location) = location {
                if !same_origin(&location, &provider) {
                    return AtProvider::Redirected(location);
                }
                url = location;
                continue;
            }
            if let (200, Some(page)) = (status, prompt(&body)) {
                self.pages_seen.lock().unwrap().push(page);
            }
            match (status, prompt(&body)) {
                (200, Some("login")) if logged_in => return AtProvider::LoginRefused(url),
                (200, Some("login")) => {
                    logged_in = true;
                    let form = [("prompt", "login"), ("login", login), ("password", "any password")];
                    url = self.post_form(&url, &form).await;
                }
                (200, Some("consent")) => match consent {
                    Consent::Approve => url = self.post_form(&url, &[("prompt", "consent")]).await,
                    Consent::Deny => url = format!("{url}/abort"),
                },
                _ => return AtProvider::Page { status, url, body },
            }
            if !same_origin(&url, &provider) {
                return AtProvider::Redirected(url);
            }
        }
        panic!("too many redirects at the provider; visited: {:#?}", self.visited.lock().unwrap());
    }

    /// GET with the jar; returns status, absolute `Location` (on a redirect) and body.
    async fn get(&self, url: &str) -> (u16, Option<String>, String) {
        let resp = self
            .with_cookies(url, self.client.get(url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} at the provider: {e}"));
        self.finish(url, resp).await
    }

    /// POSTs a form; the provider answers with a redirect: its absolute `Location`.
    async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> String {
        let resp = self
            .with_cookies(url, self.client.post(url).form(form))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url} at the provider: {e}"));
        match self.finish(url, resp).await {
            (_, Some(location), _) => location,
            (status, None, body) => panic!("POST {url} at the provider answered {status} without a redirect:\n{body}"),
        }
    }

    fn with_cookies(&self, url: &str, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.visited.lock().unwrap().push(url.to_string());
        match self.cookie_header(url) {
            Some(cookies) => req.header("cookie", cookies),
            None => req,
        }
    }

    async fn finish(&self, url: &str, resp: reqwest::Response) -> (u16, Option<String>, String) {
        let status = resp.status().as_u16();
        for set in resp.headers().get_all("set-cookie") {
            if let Ok(set) = set.to_str() {
                self.store(url, set);
            }
        }
        let location = if resp.status().is_redirection() {
            resp.headers().get("location").and_then(|l| l.to_str().ok()).map(|l| {
                url::Url::parse(url).and_then(|base| base.join(l)).map(String::from).unwrap_or_else(|_| l.to_string())
            })
        } else {
            None
        };
        let body = resp.text().await.unwrap_or_default();
        (status, location, body)
    }

    /// The `Cookie` header this browser sends to `url`, if any.
    pub fn cookie_header(&self, url: &str) -> Option<String> {
        let parsed = url::Url::parse(url).ok()?;
        let origin = parsed.origin().ascii_serialization();
        let path = parsed.path();
        let mut matching: Vec<StoredCookie> = self
            .jar
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.origin == origin && path_matches(path, &c.path))
            .cloned()
            .collect();
        // Longer paths first, as browsers send them (RFC 6265 5.4).
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        if matching.is_empty() {
            return None;
        }
        Some(matching.iter().map(|c| format!("{}={}", c.name, c.value)).collect::<Vec<_>>().join("; "))
    }

    /// Names of the cookies it holds for `url`'s origin.
    pub fn cookie_names(&self, url: &str) -> Vec<String> {
        let origin = url::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
        self.jar.lock().unwrap().iter().filter(|c| c.origin == origin).map(|c| c.name.clone()).collect()
    }

    fn store(&self, url: &str, set_cookie: &str) {
        let Ok(parsed) = url::Url::parse(url) else { return };
        let origin = parsed.origin().ascii_serialization();
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else { return };
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        // Default path (RFC 6265 5.1.4): the request path up to its last '/'.
        let mut path = match parsed.path().rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => parsed.path()[..i].to_string(),
        };
        let mut expired = value.is_empty();
        for attr in parts {
            let (k, v) = attr.split_once('=').map_or((attr.trim(), ""), |(k, v)| (k.trim(), v.trim()));
            match k.to_ascii_lowercase().as_str() {
                "path" if v.starts_with('/') => path = v.to_string(),
                "max-age" => expired |= v.parse::<i64>().is_ok_and(|s| s <= 0),
                "expires" => {
                    expired |= chrono::DateTime::parse_from_rfc2822(v)
                        .is_ok_and(|t| t.timestamp() <= chrono::Utc::now().timestamp())
                }
                _ => {}
            }
        }
        let mut jar = self.jar.lock().unwrap();
        jar.retain(|c| !(c.origin == origin && c.name == name && c.path == path));
        if !expired {
            jar.push(StoredCookie { origin, name, value, path });
        }
    }
}

/// RFC 6265 5.1.4 path-match.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie) && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Which interaction a provider page asks for (`login` or `consent`), from its form.
fn prompt(body: &str) -> Option<&'static str> {
    if body.contains(r#"name="prompt" value="login""#) {
        Some("login")
    } else if body.contains(r#"name="prompt" value="consent""#) {
        Some("consent")
    } else {
        None
    }
}

/// Plays a person who logs in as `login` at the provider and approves, in a fresh browser:
/// the `Location` back to the relying party (its callback, with `code`, `state` and `iss`).
pub async fn sign_in_at_provider(authorization_url: &str, login: &str) -> String {
    ProviderBrowser::new().approve(authorization_url, login).await
}

/// Plays a person who logs in as `login` and denies consent, in a fresh browser: the
/// `Location` back to the relying party (with `error=access_denied`).
pub async fn deny_at_provider(authorization_url: &str, login: &str) -> String {
    ProviderBrowser::new().deny(authorization_url, login).await
}

/// Plays a person who cancels on the provider's login page, in a fresh browser: the
/// `Location` back to the relying party (with `error=access_denied`).
pub async fn cancel_at_provider(authorization_url: &str) -> String {
    ProviderBrowser::new().cancel(authorization_url).await
}
