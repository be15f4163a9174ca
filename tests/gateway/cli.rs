//! The real `dalea-gateway` binary: `check-config`, `hash-password`, `reset-totp` (the operator
//! removes a lost authenticator app), and `serve` with its command-line overrides and SIGTERM
//! behaviour (a restart signs nobody out; the last activity before the signal is written to the
//! store).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dalea_gateway::session::embedded::EmbeddedStore;
use dalea_gateway::session::store::SessionStore;

use crate::support::account::{
    elevate, elevate_by_password, elevate_with_code, enroll_totp, get_json, redis_toml, status_json, Backend,
};
use crate::support::{
    free_addr, session_cookie, sign_in, subscribed, Setup, TestGateway, CHROME_MAC, DEMO_EMAIL, FIREFOX_WIN, PASSWORD,
    SAM_EMAIL, SUBSCRIBE_WITHIN,
};

const BIN: &str = env!("CARGO_BIN_EXE_dalea-gateway");

fn dev_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev.toml")
}

/// The binary with no `DALEA__*` variables inherited from whoever runs the tests.
fn gateway() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DALEA__") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the dev config (and its users file) in a temp dir, with `edit` applied to the text.
fn edited_dev_config(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dev_config();
    let users = src.parent().expect("config dir").join("users.dev.toml");
    std::fs::copy(&users, dir.path().join("users.dev.toml")).expect("copy users");
    let original = std::fs::read_to_string(&src).expect("read dev config");
    let edited = edit(original.clone());
    assert_ne!(edited, original, "the edit must change the file");
    let path = dir.path().join("dev.toml");
    std::fs::write(&path, edited).expect("write config");
    (dir, path)
}

fn insert_after(text: String, section: &str, line: &str) -> String {
    assert!(text.contains(section), "dev.toml has no {section}");
    text.replacen(section, &format!("{section}\n{line}"), 1)
}

#[test]
fn check_config_accepts_the_dev_config() {
    let out = run(gateway().args(["check-config", "--config"]).arg(dev_config()), b"");
    assert!(out.status.success(), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"), "{}", text(&out.stdout));
}

#[test]
fn check_config_refuses_an_idle_timeout_over_30_days_naming_the_key() {
    let (_dir, path) = edited_dev_config(|t| insert_after(t, "[session]", "idle_timeout = \"31d\""));
    let out = run(gateway().args(["check-config", "--config"]).arg(&path), b"");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "31d must be refused; stdout: {}", text(&out.stdout));
    assert!(err.contains("session.idle_timeout"), "{err}");
    assert!(err.contains("31d") || err.contains("30"), "the message says what is wrong: {err}");

    // The unedited copy passes, so it is the one line that fails it.
    let (_dir2, fine) = edited_dev_config(|t| insert_after(t, "[session]", "idle_timeout = \"30d\""));
    let ok = run(gateway().args(["check-config", "--config"]).arg(&fine), b"");
    assert!(ok.status.success(), "30d is allowed: {}", text(&ok.stderr));
}

#[test]
fn check_config_names_the_key_and_the_variable_for_a_bad_environment_value() {
    let out = run(
        gateway().args(["check-config", "--config"]).arg(dev_config()).env("DALEA__SESSION__IDLE_TIMEOUT", "31d"),
        b"",
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "31d from the environment must be refused too");
    assert!(err.contains("session.idle_timeout"), "{err}");
    assert!(err.contains("DALEA__SESSION__IDLE_TIMEOUT"), "{err}");

    let ok = run(
        gateway().args(["check-config", "--config"]).arg(dev_config()).env("DALEA__SESSION__IDLE_TIMEOUT", "2h"),
        b"",
    );
    assert!(ok.status.success(), "a shorter idle timeout from the environment is fine: {}", text(&ok.stderr));
}

#[test]
fn check_config_names_an_unknown_key() {
    let (_dir, path) = edited_dev_config(|t| insert_after(t, "[session]", "idle_timout = \"1h\""));
    let out = run(gateway().args(["check-config", "--config"]).arg(&path), b"");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a misspelt key must be refused");
    assert!(err.contains("idle_timout"), "{err}");
    assert!(err.contains("session"), "the section is named: {err}");

    let env = run(
        gateway().args(["check-config", "--config"]).arg(dev_config()).env("DALEA__SESSION__IDLE_TIMOUT", "1h"),
        b"",
    );
    let err = text(&env.stderr);
    assert!(!env.status.success(), "a misspelt variable must be refused");
    assert!(err.contains("DALEA__SESSION__IDLE_TIMOUT"), "{err}");
}

#[tokio::test]
async fn hash_password_prints_an_argon2id_hash_that_verifies() {
    let out = run(gateway().arg("hash-password"), b"correct horse battery staple\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let hash = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "one line, ready for the users file: {stdout:?}");
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!stdout.contains("correct horse"), "the password is never echoed");
    assert!(dalea_gateway::auth::password::is_valid_hash(hash));

    let pool = dalea_gateway::auth::password::PasswordVerifierPool::new(1);
    assert!(
        pool.verify("correct horse battery staple".into(), Some(hash.to_string())).await,
        "the trailing newline is not part of the password"
    );
    assert!(!pool.verify("correct horse battery staple\n".into(), Some(hash.to_string())).await);
    assert!(!pool.verify("wrong".into(), Some(hash.to_string())).await);

    // Without a trailing newline (printf '%s') the same password verifies as well.
    let out = run(gateway().arg("hash-password"), b"dalea-demo");
    assert!(out.status.success());
    assert!(pool.verify("dalea-demo".into(), Some(text(&out.stdout).trim().to_string())).await);
}

#[test]
fn hash_password_refuses_an_empty_password() {
    for input in [&b""[..], b"\n", b"\r\n"] {
        let out = run(gateway().arg("hash-password"), input);
        assert!(!out.status.success(), "{input:?} must be refused");
        assert!(text(&out.stdout).trim().is_empty(), "no hash printed for {input:?}");
        assert!(text(&out.stderr).contains("empty"), "{}", text(&out.stderr));
    }
}

/// A `serve` process; killed (by its own pid) if a test fails before it exits.
struct Served {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Served {
    /// `serve` on free ports with the dev config; `data` None = a fresh temp data directory.
    fn start(env: &[(&str, &str)], data: Option<&Path>) -> Served {
        Self::start_with(env, data, &[], Stdio::null())
    }

    /// [`Served::start`] with extra arguments and where its log (stderr) goes.
    fn start_with(env: &[(&str, &str)], data: Option<&Path>, args: &[&str], log: Stdio) -> Served {
        let tmp = data.is_none().then(|| tempfile::tempdir().expect("tempdir"));
        let data = data.map(Path::to_path_buf).unwrap_or_else(|| tmp.as_ref().expect("tmp").path().to_path_buf());
        let addr = free_addr();
        let admin = free_addr();
        let mut cmd = gateway();
        cmd.arg("serve")
            .arg("--config")
            .arg(dev_config())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("DALEA__SERVER__SHUTDOWN_GRACE_PERIOD", "2s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn serve");
        let mut served = Served { child, addr, admin, data, _tmp: tmp };
        served.wait_until_listening();
        served
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("serve exited early with {status}");
            }
            let up = |a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_ok();
            if up(self.addr) && up(self.admin) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not listen on {} and {}", self.addr, self.admin);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn sigterm(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; None if it is still running after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as i64
}

fn client_from(ip: IpAddr) -> reqwest::Client {
    crate::support::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// SIGTERM: the process exits on its own, successfully and promptly; the session survives in
/// the store; and the request made just before the signal is recorded there (activity is
/// flushed on shutdown, not only on the periodic tick — which is set longer than the test).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_keeps_sessions_and_flushes_the_last_activity() {
    let mut gw = Served::start(&[("DALEA__SESSION__ACTIVITY_FLUSH_INTERVAL", "10s")], None);
    let from_1: IpAddr = "127.0.0.1".parse().expect("ip");
    let from_2: IpAddr = "127.0.0.2".parse().expect("ip");

    let resp = client_from(from_1)
        .post(gw.url("/.dalea/api/signin"))
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD, "remember_me": true}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), 200);
    let cookie = session_cookie(&resp).expect("cookie");
    let signed_in: serde_json::Value = resp.json().await.expect("json");
    let id = signed_in["session"]["id"].as_str().expect("id").to_string();
    assert_eq!(signed_in["session"]["ip"], "127.0.0.1");

    // Later, from another address: the store must end up with this request's time and IP.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_request = now_millis();
    let app = client_from(from_2).get(gw.url("/app")).header("cookie", &cookie).send().await.expect("request");
    assert_eq!(app.status(), 200, "the whoami app answers through the gateway");
    let after_request = now_millis();

    let signalled = Instant::now();
    gw.sigterm();
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(8)));
    let status = status.unwrap_or_else(|| panic!("still running {:?} after SIGTERM", signalled.elapsed()));
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let store = EmbeddedStore::open(&gw.data).expect("the store file opens after shutdown");
    let sessions = store.list_for_user("demo").await.expect("list");
    let s = sessions.iter().find(|s| s.id.as_str() == id).expect("the session survived the shutdown");
    assert_eq!(sessions.len(), 1);
    assert!(
        s.last_active_at >= before_request && s.last_active_at <= after_request,
        "last_active_at {} should be the request's time ({before_request}..={after_request}); created_at {}",
        s.last_active_at,
        s.created_at
    );
    assert!(s.last_active_at > s.created_at + 1000);
    assert_eq!(s.last_ip, Some(from_2), "the last request's IP");

    // And a restart on the same data directory signs nobody out.
    drop(store);
    let mut again = Served::start(&[], Some(&gw.data));
    // (Listing is itself a request of this session, so it comes from the same address.)
    let resp = client_from(from_2)
        .get(again.url("/.dalea/api/sessions"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 200, "still signed in after the restart");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["sessions"][0]["id"], id.as_str());
    assert_eq!(v["sessions"][0]["ip"], "127.0.0.2");
    again.sigterm();
    assert!(tokio::task::block_in_place(|| again.wait_exit(Duration::from_secs(8))).is_some_and(|s| s.success()));
}

/// `--listen`, `--admin-listen` and `--data-dir` beat the file (which says 8080/9090 and
/// `target/dev-data`).
#[tokio::test(flavor = "multi_thread")]
async fn serve_flags_beat_the_config_file() {
    let mut gw = Served::start(&[], None);
    let admin = |path: &str| format!("http://{}{}", gw.admin, path);
    let c = crate::support::http_client();
    let health = c.get(admin("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = c.get(admin("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(c.get(admin("/nope")).send().await.expect("404").status(), 404);

    // The public listener is the gateway, not the admin app.
    let anon = c.get(gw.url("/app")).send().await.expect("anon");
    assert_eq!(anon.status(), 401);
    let resp = c
        .post(gw.url("/.dalea/api/signin"))
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), 200);

    // The session went into --data-dir.
    gw.sigterm();
    assert!(tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(8))).is_some_and(|s| s.success()));
    assert!(gw.data.join("sessions.redb").is_file(), "the store lives in --data-dir");
    let store = EmbeddedStore::open(&gw.data).expect("open");
    assert_eq!(store.list_for_user("demo").await.expect("list").len(), 1);
}

/// With the Redis store too, SIGTERM writes the activity still buffered (flush interval set
/// longer than the test, so only the shutdown flush can have written it).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_buffered_activity_to_redis() {
    let redis = crate::support::redis::RedisServer::start();
    let url = redis.url();
    let env = [
        ("DALEA__STORE__KIND", "redis"),
        ("DALEA__STORE__URL", url.as_str()),
        ("DALEA__SESSION__ACTIVITY_FLUSH_INTERVAL", "10s"),
    ];
    let mut gw = Served::start(&env, None);
    let from_1: IpAddr = "127.0.0.1".parse().expect("ip");
    let from_2: IpAddr = "127.0.0.2".parse().expect("ip");
    let resp = client_from(from_1)
        .post(gw.url("/.dalea/api/signin"))
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), 200);
    let cookie = session_cookie(&resp).expect("cookie");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = now_millis();
    let app = client_from(from_2).get(gw.url("/app")).header("cookie", &cookie).send().await.expect("request");
    assert_eq!(app.status(), 200);

    gw.sigterm();
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(8)));
    assert!(status.is_some_and(|s| s.success()), "clean exit within 8 s of SIGTERM: {status:?}");

    let token = cookie.split_once('=').map(|(_, v)| v).expect("token");
    let hash = dalea_gateway::session::Token::parse(token).expect("token").hash();
    let hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("dalea:s:{{{hex}}}");
    let la: i64 = redis.command(&["HGET", &key, "la"]).trim().parse().expect("last-active stored");
    assert!(la >= before, "the request just before SIGTERM reached Redis (la {la}, request at {before})");
    assert_eq!(redis.command(&["HGET", &key, "ip"]).trim(), "127.0.0.2");
}

/// A config for `reset-totp` in `dir`: a copy of the gateway's users file, `store_toml` (empty:
/// the embedded store, whose place `--data-dir` gives), and the one upstream and route a
/// config must have.
fn reset_totp_config(dir: &Path, users_file: &Path, store_toml: &str) -> PathBuf {
    std::fs::copy(users_file, dir.join("users.toml")).expect("copy the users file");
    let path = dir.join("gateway.toml");
    let text = format!(
        "[users]\nfile = \"users.toml\"\n{store_toml}\n\
         [[upstreams]]\nname = \"app\"\naddress = \"127.0.0.1:9\"\n\
         [[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `reset-totp --config <config> --email <email> [--data-dir <data>]`, blocking until it exits.
fn reset_totp(config: &Path, email: &str, data: Option<&Path>) -> Output {
    let mut cmd = gateway();
    cmd.arg("reset-totp").arg("--config").arg(config).arg("--email").arg(email);
    if let Some(data) = data {
        cmd.arg("--data-dir").arg(data);
    }
    run(&mut cmd, b"")
}

fn describe(out: &Output) -> String {
    format!("{}\nstdout: {}\nstderr: {}", out.status, text(&out.stdout), text(&out.stderr))
}

/// `GET /.dalea/api/totp`'s `enabled`.
async fn totp_enabled(gw: &TestGateway, cookie: &str) -> bool {
    let (status, v) = status_json(get_json(gw, "/.dalea/api/totp", cookie).await).await;
    assert_eq!(status, 200, "{v}");
    v["enabled"].as_bool().unwrap_or_else(|| panic!("enabled in {v}"))
}

/// Status and `error` of `GET /admin` (an elevated route) as an API client.
async fn admin(gw: &TestGateway, cookie: &str) -> (u16, Option<String>) {
    let (status, v) = status_json(get_json(gw, "/admin", cookie).await).await;
    (status, v["error"].as_str().map(str::to_string))
}

/// Polls until `GET /admin` is refused with `elevation_required`, for at most `within`.
async fn admin_refused_within(gw: &TestGateway, cookie: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let answer = admin(gw, cookie).await;
        if answer == (401, Some("elevation_required".into())) {
            return;
        }
        assert!(Instant::now() < deadline, "/admin still answers {answer:?} {within:?} after reset-totp");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The person's audit log (newest first); the session must be recently elevated.
async fn audit_events(gw: &TestGateway, cookie: &str) -> Vec<serde_json::Value> {
    let (status, v) = status_json(get_json(gw, "/.dalea/api/audit-log", cookie).await).await;
    assert_eq!(status, 200, "audit log: {v}");
    v["events"].as_array().unwrap_or_else(|| panic!("events in {v}")).clone()
}

fn of_type<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The `totp_disabled` event the operator's reset leaves: no session, no IP, the CLI as device.
fn assert_operator_reset_event(e: &serde_json::Value) {
    assert_eq!(e["type"], "totp_disabled", "{e}");
    assert_eq!(e["device"], "operator (reset-totp)", "{e}");
    assert!(e["session_id"].is_null(), "no session did it: {e}");
    assert!(e["ip"].is_null(), "no client IP: {e}");
    assert!(e["description"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
}

/// With Redis the gateway keeps running: the person's authenticator app is gone at once, every
/// session of theirs elevated with it loses that elevation (pushed to the replica's cache, whose
/// own 30 s expiry never comes under the test's stopped clock), the password confirms it's them
/// again, and the audit log says what the operator did. Someone else's app is untouched, and a
/// second run changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn reset_totp_on_redis_removes_the_app_while_the_gateway_runs() {
    let bed = Backend::Redis.start(Setup::default());
    let gw = &bed.gw;
    let redis = bed.redis.as_ref().expect("a redis-server");
    subscribed(gw, SUBSCRIBE_WITHIN).await;

    let phone = sign_in(gw, DEMO_EMAIL, CHROME_MAC).await;
    let laptop = sign_in(gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let app = enroll_totp(gw, &phone).await;
    let phone = elevate(gw, &phone, &app).await;
    let laptop = elevate(gw, &laptop, &app).await;
    let sam = sign_in(gw, SAM_EMAIL, CHROME_MAC).await;
    let sam_app = enroll_totp(gw, &sam).await;
    let sam = elevate(gw, &sam, &sam_app).await;
    for cookie in [&phone, &laptop, &sam] {
        assert_eq!(admin(gw, cookie).await, (200, None), "elevated with TOTP");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let config = reset_totp_config(dir.path(), &gw.users_file, &redis_toml(redis));
    let out = tokio::task::block_in_place(|| reset_totp(&config, DEMO_EMAIL, None));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(DEMO_EMAIL) && stdout.contains("removed"), "{}", describe(&out));

    for cookie in [&phone, &laptop] {
        admin_refused_within(gw, cookie, Duration::from_secs(3)).await;
    }
    assert!(!totp_enabled(gw, &phone).await, "the app is gone");
    let (status, v) = status_json(elevate_with_code(gw, &laptop, &app.next_code(&gw.clock)).await).await;
    assert_eq!((status, v["error"].as_str()), (409, Some("conflict")), "the lost phone's codes no longer elevate: {v}");

    // Sam's app and elevation are untouched.
    assert!(totp_enabled(gw, &sam).await);
    assert_eq!(admin(gw, &sam).await, (200, None));

    // Without TOTP, the password confirms it's Demo.
    let phone = elevate_by_password(gw, &phone, PASSWORD).await;
    assert_eq!(admin(gw, &phone).await, (200, None));
    let events = audit_events(gw, &phone).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(types.get(..2), Some(&["elevation", "totp_disabled"][..]), "newest first: {events:#?}");
    assert_eq!(events[0]["method"], "password", "{}", events[0]);
    assert_operator_reset_event(&events[1]);
    assert_eq!(of_type(&events, "totp_disabled").len(), 1, "{events:#?}");
    let sam_events = audit_events(gw, &sam).await;
    assert!(of_type(&sam_events, "totp_disabled").is_empty(), "Sam's log: {sam_events:#?}");

    // Again: nothing to remove, nothing recorded.
    let again = tokio::task::block_in_place(|| reset_totp(&config, DEMO_EMAIL, None));
    assert!(again.status.success(), "{}", describe(&again));
    assert!(text(&again.stdout).contains("nothing changed"), "{}", describe(&again));
    assert_eq!(of_type(&audit_events(gw, &phone).await, "totp_disabled").len(), 1, "no second event");
    assert_eq!(admin(gw, &phone).await, (200, None), "the password elevation is not taken away");
}

/// An email no one has, and a config that is not there: a non-zero exit saying why.
#[test]
fn reset_totp_refuses_an_unknown_email_and_a_missing_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.source.toml");
    std::fs::write(
        &users,
        format!(
            "[[users]]\nid = \"demo\"\nemail = \"{DEMO_EMAIL}\"\ndisplay_name = \"Demo User\"\n\
             password_hash = \"{}\"\n",
            crate::support::HASH
        ),
    )
    .expect("users file");
    let config = reset_totp_config(dir.path(), &users, "");
    let data = dir.path().join("data");

    let out = reset_totp(&config, "nobody@example.com", Some(&data));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(text(&out.stderr).contains("nobody@example.com"), "the message names the email: {}", describe(&out));
    assert!(!text(&out.stdout).contains("removed"), "{}", describe(&out));

    let missing = dir.path().join("no-such-gateway.toml");
    let out = reset_totp(&missing, DEMO_EMAIL, Some(&data));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(text(&out.stderr).contains("no-such-gateway.toml"), "the message names the file: {}", describe(&out));
    assert!(text(&out.stdout).trim().is_empty(), "{}", describe(&out));

    // A data dir with no gateway data (a typo) is refused and left untouched, not mistaken for
    // "nothing to do".
    let out = reset_totp(&config, DEMO_EMAIL, Some(&data));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(text(&out.stderr).contains("no gateway data"), "{}", describe(&out));
    assert!(!data.exists(), "nothing was created at the mistyped path");

    // With a real store and a known email: fine (Demo has no app), so it was the email, the
    // path and the data dir that were refused.
    dalea_gateway::session::embedded::EmbeddedStore::open(&data).expect("a store");
    let out = reset_totp(&config, DEMO_EMAIL, Some(&data));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text(&out.stdout).contains("nothing changed"), "{}", describe(&out));
}

/// Waits until nothing in this process holds the embedded store in `data` (an in-process
/// gateway's runtimes are torn down without waiting, so its store may outlive `stop` a moment).
fn wait_until_released(data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = EmbeddedStore::open(data) {
        assert!(Instant::now() < deadline, "the stopped gateway still holds its store: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An embedded-store gateway on `data` whose demo person set up TOTP and elevated with it, and
/// a `reset-totp` config (written into `dir`) for the same users file. Returns the gateway,
/// the config and the elevated session's cookie.
async fn elevated_with_totp_on(data: &Path, dir: &Path) -> (TestGateway, PathBuf, String) {
    let gw = Setup::default().data_dir(data).start();
    let config = reset_totp_config(dir, &gw.users_file, "");
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&gw, &cookie).await;
    let cookie = elevate(&gw, &cookie, &app).await;
    (gw, config, cookie)
}

/// The embedded store after the gateway stopped: `--data-dir` names its store, the app is
/// removed there, and when the gateway starts again the person's session has lost its TOTP
/// elevation, the password confirms it's them and the audit log has the operator's event.
#[tokio::test(flavor = "multi_thread")]
async fn reset_totp_on_the_embedded_store_of_a_stopped_gateway() {
    let (data, dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (gw, config, cookie) = elevated_with_totp_on(data.path(), dir.path()).await;
    assert_eq!(admin(&gw, &cookie).await, (200, None));
    tokio::task::block_in_place(|| wait_until_released(&gw.stop()));

    let out = tokio::task::block_in_place(|| reset_totp(&config, DEMO_EMAIL, Some(data.path())));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text(&out.stdout).contains("removed"), "{}", describe(&out));

    let gw = Setup::default().data_dir(data.path()).start();
    assert!(!totp_enabled(&gw, &cookie).await, "the app is gone after the restart");
    assert_eq!(admin(&gw, &cookie).await, (401, Some("elevation_required".into())));
    let cookie = elevate_by_password(&gw, &cookie, PASSWORD).await;
    let events = audit_events(&gw, &cookie).await;
    assert_eq!(events.get(1).map(|e| &e["type"]), Some(&serde_json::json!("totp_disabled")), "{events:#?}");
    assert_operator_reset_event(&events[1]);
    tokio::task::block_in_place(|| wait_until_released(&gw.stop()));

    let again = tokio::task::block_in_place(|| reset_totp(&config, DEMO_EMAIL, Some(data.path())));
    assert!(again.status.success(), "{}", describe(&again));
    assert!(text(&again.stdout).contains("nothing changed"), "{}", describe(&again));
}

/// While a gateway holds the embedded store, `reset-totp` cannot open it: it fails, says to
/// stop the gateway first, and nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn reset_totp_refuses_an_embedded_store_a_running_gateway_holds() {
    let (data, dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (gw, config, cookie) = elevated_with_totp_on(data.path(), dir.path()).await;

    let out = tokio::task::block_in_place(|| reset_totp(&config, DEMO_EMAIL, Some(data.path())));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(text(&out.stderr).contains("stop the gateway first"), "{}", describe(&out));
    assert!(totp_enabled(&gw, &cookie).await, "the app is still there");
    assert_eq!(admin(&gw, &cookie).await, (200, None), "and the elevation too");
}

/// `--log-json` writes one JSON line per security decision: refusals at the default level,
/// allowed requests once `dalea::decision=debug` asks for them; never the query string.
#[tokio::test(flavor = "multi_thread")]
async fn every_decision_is_one_json_log_line_without_the_query_string() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_path = tmp.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let env = [("RUST_LOG", "info,dalea::decision=debug")];
    let mut gw = Served::start_with(&env, None, &["--log-json"], Stdio::from(log));
    let c = crate::support::client();
    let denied = c.get(gw.url("/reports?token=s3cret")).header("accept", "text/html").send().await.expect("request");
    assert_eq!(denied.status(), 303);
    let allowed = c.get(gw.url("/public/page?q=also-secret")).send().await.expect("request");
    assert_eq!(allowed.status(), 200);
    gw.sigterm();
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some(), "serve exits on SIGTERM");

    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(!text.contains("s3cret") && !text.contains("also-secret"), "query strings are never logged:\n{text}");
    let decisions: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v| v["target"] == "dalea::decision")
        .collect();
    assert_eq!(decisions.len(), 2, "one line per request:\n{text}");
    let (refused, passed) = (&decisions[0], &decisions[1]);
    assert_eq!(refused["level"], "INFO");
    assert_eq!(refused["fields"]["decision"], "signin_required");
    assert_eq!(refused["fields"]["route"], "app");
    assert_eq!(refused["fields"]["path"], "/reports");
    assert_eq!(refused["fields"]["status"], 303);
    assert_eq!(refused["fields"]["client.ip"], "127.0.0.1");
    assert_eq!(passed["level"], "DEBUG");
    assert_eq!(passed["fields"]["decision"], "allowed");
    assert_eq!(passed["fields"]["route"], "public");
    assert_eq!(passed["fields"]["status"], 200);
}
