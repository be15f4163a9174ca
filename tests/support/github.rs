//! A local stand-in for GitHub in sign-in tests: exactly the endpoints a "Sign in with GitHub"
//! uses, as GitHub documents them for OAuth apps, on one loopback address (point the gateway's
//! GitHub authorize, token and API URLs at [`GitHubStandIn::base_url`]):
//!
//! - `GET /login/oauth/authorize?client_id&redirect_uri&scope&state&code_challenge&code_challenge_method=S256`
//!   → 302 to the redirect URI with `code` and `state`, as the person who approves
//!   ([`GitHubStandIn::approve_as`]), or with `error=access_denied&error_description&error_uri&state`
//!   ([`GitHubStandIn::deny`]). An unregistered redirect URI → 302 to the registered callback
//!   with `error=redirect_uri_mismatch`; an unknown `client_id` → 404.
//! - `POST /login/oauth/access_token` (form or JSON body, or query: `client_id`, `client_secret`,
//!   `code`, `redirect_uri`, `code_verifier`; client credentials may also come as HTTP Basic)
//!   → 200 with `{"access_token":"gho_…","token_type":"bearer","scope":"read:user,user:email"}`
//!   when `Accept: application/json`, else the same form-encoded. Errors are 200 too, with
//!   GitHub's documented `error`, `error_description`, `error_uri`: `incorrect_client_credentials`,
//!   `bad_verification_code` (unknown, used or another client's code; and, the stand-in's choice
//!   as GitHub does not document it, a PKCE verifier missing or not matching the S256
//!   challenge), `redirect_uri_mismatch`. Codes are single use.
//! - `GET /user` and `GET /user/emails` with `Authorization: Bearer <token>` (or `token <token>`):
//!   no `User-Agent` → 403 with GitHub's plain-text refusal; no or a bad token → 401 JSON
//!   (`Requires authentication` / `Bad credentials`); `/user/emails` without the `user:email`
//!   (or `user`) scope → 404 JSON, as GitHub answers. Responses carry `X-OAuth-Scopes`.
//!
//! Every request is recorded ([`GitHubStandIn::requests`]) so tests can assert what the gateway
//! sent (the code verifier, the client secret, no gateway cookie...). Runs on its own thread and
//! runtime like [`super::echo::EchoUpstream`]; stops when dropped.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const DOCS: &str = "https://docs.github.com";

/// One of the person's email addresses, as `GET /user/emails` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct GitHubEmail {
    pub email: String,
    pub primary: bool,
    pub verified: bool,
    /// `Some("public")`, `Some("private")`, or `None` (null: not the primary address).
    pub visibility: Option<String>,
}

/// A GitHub account.
#[derive(Clone, Debug, PartialEq)]
pub struct GitHubUser {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    /// The public email of `GET /user` (`None`: null, the person keeps it private).
    pub email: Option<String>,
    pub emails: Vec<GitHubEmail>,
}

impl GitHubUser {
    /// An account whose only address is `primary_email`, primary, verified and public.
    pub fn new(id: u64, login: &str, name: &str, primary_email: &str) -> GitHubUser {
        GitHubUser {
            id,
            login: login.into(),
            name: Some(name.into()),
            email: Some(primary_email.into()),
            emails: vec![GitHubEmail {
                email: primary_email.into(),
                primary: true,
                verified: true,
                visibility: Some("public".into()),
            }],
        }
    }

    /// An account whose primary address `primary_email` is not verified (and private).
    pub fn unverified(id: u64, login: &str, name: &str, primary_email: &str) -> GitHubUser {
        let mut user = GitHubUser::new(id, login, name, primary_email);
        user.email = None;
        user.emails[0].verified = false;
        user.emails[0].visibility = Some("private".into());
        user
    }

    /// Keeps the email private: `GET /user` says `"email": null`.
    pub fn private_email(mut self) -> Self {
        self.email = None;
        if let Some(primary) = self.emails.iter_mut().find(|e| e.primary) {
            primary.visibility = Some("private".into());
        }
        self
    }

    /// Adds a secondary address.
    pub fn with_email(mut self, email: &str, verified: bool) -> Self {
        self.emails.push(GitHubEmail { email: email.into(), primary: false, verified, visibility: None });
        self
    }

    fn json(&self) -> Value {
        json!({
            "login": self.login,
            "id": self.id,
            "node_id": format!("U_stand-in-{}", self.id),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", self.id),
            "html_url": format!("https://github.com/{}", self.login),
            "type": "User",
            "site_admin": false,
            "name": self.name,
            "company": null,
            "blog": "",
            "location": null,
            "email": self.email,
            "hireable": null,
            "bio": null,
            "public_repos": 0,
            "followers": 0,
            "following": 0,
            "created_at": "2020-01-01T00:00:00Z",
            "updated_at": "2020-01-01T00:00:00Z",
        })
    }
}

/// The OAuth app registered at the stand-in, and its accounts.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The app's registered "Authorization callback URL". A `redirect_uri` must have its
    /// scheme and host, its port unless on loopback (GitHub lets a loopback redirect URI use
    /// any port), and its path or a subdirectory of it. `None`: any redirect URI is accepted.
    pub callback_url: Option<String>,
    pub users: Vec<GitHubUser>,
}

impl GitHubConfig {
    pub fn new(client_id: &str, client_secret: &str) -> GitHubConfig {
        GitHubConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            callback_url: None,
            users: vec![],
        }
    }

    pub fn callback_url(mut self, url: &str) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    pub fn user(mut self, user: GitHubUser) -> Self {
        self.users.push(user);
        self
    }
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct GitHubRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl GitHubRequest {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Query and body parameters (form or JSON body), query first.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = match self.target.split_once('?') {
            Some((_, q)) => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
            None => Vec::new(),
        };
        let json_body = self.header("content-type").is_some_and(|c| c.contains("json"));
        if json_body {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&self.body) {
                for (k, v) in map {
                    out.push((k, v.as_str().map_or_else(|| v.to_string(), str::to_string)));
                }
            }
        } else {
            out.extend(form_urlencoded::parse(self.body.as_bytes()).into_owned());
        }
        out
    }

    /// The first query or body parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Client id and secret from an `Authorization: Basic` header, if it has one.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let value = self.header("authorization")?;
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
        let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        Some((dec(id), dec(secret)))
    }
}

/// What the person does at `GET /login/oauth/authorize`.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Signed in as this login and authorized the app.
    ApproveAs(String),
    /// Refused to authorize the app.
    Deny,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    login: String,
    scopes: Vec<String>,
    challenge: Option<String>,
    used: bool,
}

struct State {
    config: GitHubConfig,
    decision: Decision,
    codes: HashMap<String, CodeGrant>,
    /// token → (login, scopes)
    tokens: HashMap<String, (String, Vec<String>)>,
    requests: Vec<GitHubRequest>,
}

/// The running stand-in.
pub struct GitHubStandIn {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for GitHubStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl GitHubStandIn {
    /// Starts on a free loopback port. The person approves as the first user until told
    /// otherwise.
    pub fn start(config: GitHubConfig) -> GitHubStandIn {
        let decision = match config.users.first() {
            Some(u) => Decision::ApproveAs(u.login.clone()),
            None => Decision::Deny,
        };
        let state = Arc::new(Mutex::new(State {
            config,
            decision,
            codes: HashMap::new(),
            tokens: HashMap::new(),
            requests: vec![],
        }));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                tokio::select! {
                    _ = stopped => {}
                    _ = serve(listener, shared) => {}
                }
            });
        });
        GitHubStandIn { addr, state, stop: Some(stop) }
    }

    /// `http://127.0.0.1:<port>`: GitHub's web (`github.com`) and API (`api.github.com`) base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/login/oauth/authorize", self.base_url())
    }

    pub fn token_url(&self) -> String {
        format!("{}/login/oauth/access_token", self.base_url())
    }

    /// The REST API base (`/user`, `/user/emails` under it).
    pub fn api_url(&self) -> String {
        self.base_url()
    }

    /// From now on the person signs in as `login` (a configured user) and authorizes the app.
    pub fn approve_as(&self, login: &str) {
        let mut state = self.state.lock().unwrap();
        assert!(state.config.users.iter().any(|u| u.login == login), "no GitHub user {login} configured");
        state.decision = Decision::ApproveAs(login.into());
    }

    /// From now on the person refuses to authorize the app.
    pub fn deny(&self) {
        self.state.lock().unwrap().decision = Decision::Deny;
    }

    /// Adds `user`, or replaces the user with its login (e.g. to change their emails).
    pub fn set_user(&self, user: GitHubUser) {
        let mut state = self.state.lock().unwrap();
        state.config.users.retain(|u| u.login != user.login);
        state.config.users.push(user);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<GitHubRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests received so far for `path` (without query).
    pub fn requests_to(&self, path: &str) -> Vec<GitHubRequest> {
        self.requests().into_iter().filter(|r| r.path() == path).collect()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Plays the person's browser at `authorization_url` (where the gateway redirected to):
    /// the `Location` the stand-in sends them to (the gateway's callback with `code` and
    /// `state`, or with `error`). Panics unless it answers with a redirect.
    pub async fn authorize(&self, authorization_url: &str) -> String {
        let resp = super::http_builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client")
            .get(authorization_url)
            .header("user-agent", "Mozilla/5.0 (a person's browser)")
            .send()
            .await
            .expect("GET the GitHub authorize URL");
        let status = resp.status();
        match resp.headers().get("location").and_then(|l| l.to_str().ok()) {
            Some(location) if status.is_redirection() => location.to_string(),
            _ => panic!(
                "GitHub stand-in answered {status} at {authorization_url}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }
}

/// A response: status, extra headers, content type, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply { status, headers: vec![], content_type: "application/json; charset=utf-8", body: body.to_string() }
    }

    fn text(status: u16, body: &str) -> Reply {
        Reply { status, headers: vec![], content_type: "text/plain; charset=utf-8", body: body.into() }
    }

    fn redirect(location: String) -> Reply {
        Reply {
            status: 302,
            headers: vec![("location".into(), location)],
            content_type: "text/html; charset=utf-8",
            body: String::new(),
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let request = loop {
                    match parse(&buf) {
                        Parsed::Complete(req, used) => {
                            buf.drain(..used);
                            break req;
                        }
                        Parsed::Bad => return,
                        Parsed::Partial => match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        },
                    }
                };
                let close = request.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
                let reply = handle(&state, request);
                let mut head = format!(
                    "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nserver: github.com (stand-in)\r\n",
                    reply.status,
                    reason(reply.status),
                    reply.content_type,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str(if close { "connection: close\r\n\r\n" } else { "\r\n" });
                if stream.write_all(&[head.into_bytes(), reply.body.into_bytes()].concat()).await.is_err() || close {
                    return;
                }
            }
        });
    }
}

enum Parsed {
    Complete(GitHubRequest, usize),
    Partial,
    Bad,
}

/// One request from the front of `buf` (Content-Length or chunked body).
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad,
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let rest = &buf[head_len..];
    let (body, body_len) = if find("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        match dechunk(rest) {
            Some(done) => done,
            None => return Parsed::Partial,
        }
    } else {
        let len = find("content-length").and_then(|l| l.trim().parse::<usize>().ok()).unwrap_or(0);
        if rest.len() < len {
            return Parsed::Partial;
        }
        (rest[..len].to_vec(), len)
    };
    Parsed::Complete(
        GitHubRequest {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
        head_len + body_len,
    )
}

/// A complete chunked body: the data and how many bytes it took, or `None` if incomplete.
fn dechunk(mut rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = rest.len();
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // No trailers expected: the final CRLF.
            if rest.len() < 2 {
                return None;
            }
            return Some((out, total - rest.len() + 2));
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    }
}

fn handle(state: &Arc<Mutex<State>>, request: GitHubRequest) -> Reply {
    let mut state = state.lock().unwrap();
    state.requests.push(request.clone());
    match (request.method.as_str(), request.path()) {
        ("GET", "/login/oauth/authorize") => authorize(&mut state, &request),
        ("POST", "/login/oauth/access_token") => access_token(&mut state, &request),
        ("GET", "/user") | ("GET", "/user/emails") => api(&state, &request),
        _ => Reply::json(
            404,
            json!({"message": "Not Found", "documentation_url": format!("{DOCS}/rest"), "status": "404"}),
        ),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("random bytes");
    buf.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

fn s256(verifier: &str) -> String {
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// Appends query parameters to `url`.
fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(url).expect("redirect URI is a URL");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.into()
}

/// GitHub's rule for a `redirect_uri` against the registered callback URL.
fn redirect_allowed(redirect: &str, callback: &str) -> bool {
    let (Ok(r), Ok(c)) = (url::Url::parse(redirect), url::Url::parse(callback)) else { return false };
    let (Some(rh), Some(ch)) = (r.host_str(), c.host_str()) else { return false };
    let loopback = matches!(rh, "127.0.0.1" | "localhost" | "[::1]");
    let host_ok = rh == ch || rh.ends_with(&format!(".{ch}"));
    let port_ok = loopback || r.port_or_known_default() == c.port_or_known_default();
    let cpath = c.path().trim_end_matches('/');
    let path_ok =
        r.path() == c.path() || r.path().trim_end_matches('/') == cpath || r.path().starts_with(&format!("{cpath}/"));
    r.scheme() == c.scheme() && host_ok && port_ok && path_ok
}

fn authorize(state: &mut State, req: &GitHubRequest) -> Reply {
    let client_id = req.param("client_id").unwrap_or_default();
    if client_id != state.config.client_id {
        return Reply::text(404, "Not Found");
    }
    let state_param = req.param("state").unwrap_or_default();
    let callback = state.config.callback_url.clone();
    let redirect = match (req.param("redirect_uri"), &callback) {
        (Some(r), Some(cb)) if !redirect_allowed(&r, cb) => {
            return Reply::redirect(with_query(
                cb,
                &[
                    ("error", "redirect_uri_mismatch"),
                    ("error_description", "The redirect_uri MUST match the registered callback URL for this application."),
                    ("error_uri", &format!("{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch")),
                    ("state", &state_param),
                ],
            ));
        }
        (Some(r), _) => r,
        (None, Some(cb)) => cb.clone(),
        (None, None) => return Reply::text(404, "Not Found: no redirect_uri and no registered callback URL"),
    };
    let challenge = req.param("code_challenge");
    let method = req.param("code_challenge_method");
    if challenge.is_some() && method.as_deref() != Some("S256") {
        // GitHub accepts only S256; the exact answer to anything else is not documented.
        return Reply::redirect(with_query(
            &redirect,
            &[
                ("error", "invalid_request"),
                ("error_description", "Only the S256 code_challenge_method is supported."),
                ("state", &state_param),
            ],
        ));
    }
    let login = match &state.decision {
        Decision::Deny => {
            return Reply::redirect(with_query(
                &redirect,
                &[
                    ("error", "access_denied"),
                    ("error_description", "The user has denied your application access."),
                    ("error_uri", &format!("{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied")),
                    ("state", &state_param),
                ],
            ));
        }
        Decision::ApproveAs(login) => login.clone(),
    };
    // Scopes are space-separated in the request (commas are accepted too).
    let scopes: Vec<String> = req
        .param("scope")
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let code = random_hex(10);
    state.codes.insert(
        code.clone(),
        CodeGrant { client_id, redirect_uri: redirect.clone(), login, scopes, challenge, used: false },
    );
    Reply::redirect(with_query(&redirect, &[("code", &code), ("state", &state_param)]))
}

fn access_token(state: &mut State, req: &GitHubRequest) -> Reply {
    let wants_json = req.header("accept").is_some_and(|a| a.contains("application/json"));
    let answer = |fields: Vec<(&str, String)>| -> Reply {
        if wants_json {
            let map: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect();
            Reply::json(200, Value::Object(map))
        } else {
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
            Reply {
                status: 200,
                headers: vec![],
                content_type: "application/x-www-form-urlencoded; charset=utf-8",
                body,
            }
        }
    };
    let error = |code: &str, description: &str, anchor: &str| {
        answer(vec![
            ("error", code.to_string()),
            ("error_description", description.to_string()),
            (
                "error_uri",
                format!(
                    "{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#{anchor}"
                ),
            ),
        ])
    };
    let (client_id, secret) = match (req.param("client_id"), req.param("client_secret"), req.basic_auth()) {
        (Some(id), Some(secret), _) => (id, secret),
        (_, _, Some((id, secret))) => (id, secret),
        (id, secret, None) => (id.unwrap_or_default(), secret.unwrap_or_default()),
    };
    if client_id != state.config.client_id || secret != state.config.client_secret {
        return error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
            "incorrect-client-credentials",
        );
    }
    let bad_code =
        || error("bad_verification_code", "The code passed is incorrect or expired.", "bad-verification-code");
    let code = req.param("code").unwrap_or_default();
    let Some(grant) = state.codes.get(&code) else { return bad_code() };
    if grant.used || grant.client_id != client_id {
        return bad_code();
    }
    if let Some(redirect) = req.param("redirect_uri") {
        if redirect != grant.redirect_uri {
            return error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "redirect-uri-mismatch",
            );
        }
    }
    let verifier = req.param("code_verifier");
    let pkce_ok = match (&grant.challenge, &verifier) {
        (Some(challenge), Some(verifier)) => &s256(verifier) == challenge,
        (None, None) => true,
        _ => false,
    };
    if !pkce_ok {
        return error(
            "bad_verification_code",
            "The code passed is incorrect or expired (the code_verifier does not match the code_challenge).",
            "bad-verification-code",
        );
    }
    let (login, scopes) = (grant.login.clone(), grant.scopes.clone());
    if let Some(grant) = state.codes.get_mut(&code) {
        grant.used = true;
    }
    let token = format!("gho_{}", random_alnum(36));
    state.tokens.insert(token.clone(), (login, scopes.clone()));
    answer(vec![("access_token", token), ("token_type", "bearer".into()), ("scope", scopes.join(","))])
}

fn api(state: &State, req: &GitHubRequest) -> Reply {
    if req.header("user-agent").is_none_or(|ua| ua.trim().is_empty()) {
        return Reply::text(
            403,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header \
             (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
             Check https://developer.github.com for other possible causes.\n",
        );
    }
    let docs = if req.path() == "/user" {
        format!("{DOCS}/rest/users/users#get-the-authenticated-user")
    } else {
        format!("{DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user")
    };
    let token = req.header("authorization").and_then(|a| {
        let (scheme, token) = a.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
            .then(|| token.trim().to_string())
    });
    let Some(token) = token else {
        return Reply::json(
            401,
            json!({"message": "Requires authentication", "documentation_url": docs, "status": "401"}),
        );
    };
    let Some((login, scopes)) = state.tokens.get(&token) else {
        return Reply::json(
            401,
            json!({"message": "Bad credentials", "documentation_url": format!("{DOCS}/rest"), "status": "401"}),
        );
    };
    let Some(user) = state.config.users.iter().find(|u| &u.login == login) else {
        return Reply::json(404, json!({"message": "Not Found", "documentation_url": docs, "status": "404"}));
    };
    let scope_header = ("x-oauth-scopes".to_string(), scopes.join(", "));
    let mut reply = if req.path() == "/user" {
        let mut r = Reply::json(200, user.json());
        r.headers.push(("x-accepted-oauth-scopes".into(), String::new()));
        r
    } else if scopes.iter().any(|s| s == "user:email" || s == "user") {
        let emails: Vec<Value> = user
            .emails
            .iter()
            .map(
                |e| json!({"email": e.email, "primary": e.primary, "verified": e.verified, "visibility": e.visibility}),
            )
            .collect();
        let mut r = Reply::json(200, Value::Array(emails));
        r.headers.push(("x-accepted-oauth-scopes".into(), "user, user:email".into()));
        r
    } else {
        Reply::json(404, json!({"message": "Not Found", "documentation_url": docs, "status": "404"}))
    };
    reply.headers.push(scope_header);
    reply
}
