//! Test harness: a real gateway started in-process on free ports in front of a real upstream,
//! driven by a real HTTP client that does not follow redirects, with the clock under test
//! control. Everything stops when the [`TestGateway`] is dropped.

#![allow(dead_code)]

pub mod account;
pub mod api_keys;
pub mod echo;
pub mod github;
pub mod mmdb;
pub mod oidc;
pub mod redis;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use dalea_gateway::clock::ManualClock;
use dalea_gateway::config::{Config, Overrides};
use dalea_gateway::session::store::SessionStore;
use dalea_gateway::state::AppState;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::oneshot;

pub const DEMO_EMAIL: &str = "demo@example.com";
pub const SAM_EMAIL: &str = "sam@example.com";
pub const PASSWORD: &str = "dalea-demo";
/// argon2id of "dalea-demo".
pub const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$II00VqDU3gUAWcBe4VuR5g$4k5so/kEu4nZSUQRaTvKME1UHS1AyiQFOQGI1Ah1UMM";

pub const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
pub const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// A loopback address free now and never handed out before in this test process, from a range
/// of its own: below the kernel's ephemeral ports (which the tests' upstreams get from port 0)
/// and above the test Redis servers' ports, so a gateway that has not bound its port yet never
/// loses it to another listener.
pub fn free_addr() -> SocketAddr {
    const RANGE: std::ops::Range<u16> = 31_000..32_700;
    // A random start per process, then each port once, in order.
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        std::process::id() ^ nanos
    });
    for _ in 0..RANGE.len() {
        let n = start.wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let port = RANGE.start + (n % u32::from(RANGE.end - RANGE.start)) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("addr");
        }
    }
    panic!("no free loopback port left in {RANGE:?}");
}

/// Shuts the server down when the test says so.
struct TestShutdown(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for TestShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().ok().and_then(|mut r| r.take());
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// Replaces the session store the gateway would open with one built around it (the account
/// store is left as it is).
pub type StoreWrapper = Box<dyn FnOnce(Arc<dyn SessionStore>) -> Arc<dyn SessionStore>>;

/// Builder for a gateway under test.
pub struct Setup {
    pub extra_toml: String,
    pub routes_toml: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub clock: ManualClock,
    /// `DALEA__*` variables as the gateway would read them from the environment.
    pub env: Vec<(String, String)>,
    /// Wraps the real store (fault injection for outage tests).
    pub wrap_store: Option<StoreWrapper>,
    /// The proxy listener's address (`None`: a free port).
    pub listen: Option<SocketAddr>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            extra_toml: String::new(),
            routes_toml: None,
            data_dir: None,
            clock: ManualClock::starting_now(),
            // The tests talk plain HTTP, like the dev config; tests of secure cookies set it back.
            env: vec![("DALEA__SESSION__COOKIE_SECURE".into(), "false".into())],
            wrap_store: None,
            listen: None,
        }
    }
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: echo::EchoUpstream,
    pub clock: ManualClock,
    pub state: Arc<AppState>,
    pub data_dir: PathBuf,
    pub users_file: PathBuf,
    _tmp: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Setup {
    pub fn toml(mut self, extra: &str) -> Self {
        self.extra_toml.push_str(extra);
        self.extra_toml.push('\n');
        self
    }

    /// Sets (or replaces) an environment variable for the config overlay.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn routes(mut self, routes: &str) -> Self {
        self.routes_toml = Some(routes.to_string());
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn wrap_store(mut self, wrap: impl FnOnce(Arc<dyn SessionStore>) -> Arc<dyn SessionStore> + 'static) -> Self {
        self.wrap_store = Some(Box::new(wrap));
        self
    }

    /// Listens on `addr` (e.g. a stopped gateway's, so links and redirects to it still work).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn start(self) -> TestGateway {
        let tmp = tempfile::tempdir().expect("tempdir");
        let users = tmp.path().join("users.toml");
        std::fs::write(
            &users,
            format!(
                "[[users]]\nid = \"demo\"\nemail = \"{DEMO_EMAIL}\"\ndisplay_name = \"Demo User\"\npassword_hash = \"{HASH}\"\n\
                 [[users]]\nid = \"sam\"\nemail = \"{SAM_EMAIL}\"\ndisplay_name = \"Sam\"\npassword_hash = \"{HASH}\"\n"
            ),
        )
        .expect("users file");
        let upstream = echo::EchoUpstream::start();
        let addr = self.listen.unwrap_or_else(free_addr);
        let admin = free_addr();
        let data_dir = self.data_dir.clone().unwrap_or_else(|| tmp.path().join("data"));
        let routes = self.routes_toml.unwrap_or_else(|| {
            "[[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nupstream = \"app\"\naccess = \"public\"\n\
             [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\naccess = \"elevated\"\n\
             [[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n"
                .to_string()
        });
        let text = format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\nshutdown_grace_period = \"0s\"\nthreads = 2\n\
             [users]\nfile = \"users.toml\"\n\
             {extra}\n\
             [[upstreams]]\nname = \"app\"\naddress = \"{up}\"\n{routes}",
            // `{gateway_url}` in the extra TOML: this gateway's own URL (e.g. `[oauth] public_url`).
            extra = self.extra_toml.replace("{gateway_url}", &format!("http://{addr}")),
            up = upstream.addr,
        );
        let overrides = Overrides { data_dir: Some(data_dir.clone()), ..Overrides::default() };
        let config = Config::from_toml_str(&text, tmp.path(), &self.env, &overrides).expect("test config loads");
        let mut stores = dalea_gateway::state::open_store(&config).expect("store opens");
        if let Some(wrap) = self.wrap_store {
            stores.sessions = wrap(stores.sessions);
        }
        let built = dalea_gateway::server::build_with_store(config, Arc::new(self.clock.clone()), stores)
            .expect("gateway builds");
        let state = built.state.clone();
        let (tx, rx) = oneshot::channel();
        let server = built.server;
        let thread = std::thread::spawn(move || {
            server.run(RunArgs { shutdown_signal: Box::new(TestShutdown(Mutex::new(Some(rx)))) });
        });
        wait_for_port(addr);
        TestGateway {
            addr,
            admin,
            upstream,
            clock: self.clock,
            state,
            data_dir,
            users_file: users,
            _tmp: tmp,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

pub fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("gateway did not listen on {addr}");
}

impl TestGateway {
    pub fn start() -> TestGateway {
        Setup::default().start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits until its threads are gone.
    pub fn stop(mut self) -> PathBuf {
        self.shutdown();
        self.data_dir.clone()
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A reqwest client builder. The gateway's reqwest brings no TLS crypto provider of its own (it
/// uses the process's, ring, which the gateway installs at start-up): install it first here,
/// as tests may build clients before any gateway starts.
pub fn http_builder() -> reqwest::ClientBuilder {
    dalea_gateway::session::redis::install_crypto_provider();
    reqwest::Client::builder()
}

/// A plain reqwest client (see [`http_builder`]).
pub fn http_client() -> reqwest::Client {
    http_builder().build().expect("client")
}

/// A client that never follows redirects and keeps no cookies: tests see every hop.
pub fn client() -> reqwest::Client {
    http_builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(20)).build().expect("client")
}

/// The `name=value` part of our session cookie in a response, if it sets one.
pub fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    set_cookies(resp)
        .into_iter()
        .find(|c| c.contains("dalea_session="))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
}

/// One JSON sign-in attempt, whatever its outcome.
pub async fn try_sign_in(gw: &TestGateway, email: &str, password: &str) -> reqwest::Response {
    client()
        .post(gw.url("/.dalea/api/signin"))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("sign-in request")
}

/// Signs in through the JSON API and returns the `Cookie` header value.
pub async fn sign_in(gw: &TestGateway, email: &str, user_agent: &str) -> String {
    let resp = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("user-agent", user_agent)
        .json(&serde_json::json!({ "email": email, "password": PASSWORD, "remember_me": true }))
        .send()
        .await
        .expect("sign-in request");
    assert_eq!(resp.status(), 200, "sign-in should succeed");
    session_cookie(&resp).expect("sign-in sets the session cookie")
}

/// Sends raw bytes as one HTTP/1.1 request and returns the raw response (for input a
/// well-behaved client library would refuse to send).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    // Read until the server closes or the response is complete per Content-Length.
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end].lines().find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if let Some(len) = len {
                if out.len() >= end + 4 + len {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long a replica on a shared store may take to subscribe to revocation notices.
pub const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(10);

/// Waits until `gw` is subscribed to revocation notices (its cache is trusted again).
pub async fn subscribed(gw: &TestGateway, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while !gw.state.sessions.cache.is_trusted() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not subscribe to revocation notices within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET /.dalea/api/sessions as JSON.
pub async fn sessions(gw: &TestGateway, cookie: &str) -> (u16, serde_json::Value) {
    let resp = client().get(gw.url("/.dalea/api/sessions")).header("cookie", cookie).send().await.expect("list");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}
