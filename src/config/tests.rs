//! End-to-end tests of the loader: file text + environment + flags → `Config` or the exact key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod layering;
mod oauth;
mod passkeys;
mod routing;
mod store;
mod store_env;

const BASE: &str = "/etc/dalea";

/// The smallest valid file.
const MINIMAL: &str = r#"
[[upstreams]]
name = "app"
builtin = "whoami"

[[routes]]
upstream = "app"

[users]
file = "users.toml"
"#;

fn load_with(text: &str, env: &[(&str, &str)], o: &Overrides) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_toml_str(text, Path::new(BASE), &vars, o)
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_with(text, &[], &Overrides::default())
}

/// MINIMAL plus extra lines (TOML allows a section header to appear after arrays of tables).
fn with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}\n")
}

fn err_key(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.key,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.server.listen, addr("127.0.0.1:8080"));
    assert_eq!(c.server.admin_listen, addr("127.0.0.1:9090"));
    assert_eq!(c.server.shutdown_grace_period, Duration::from_secs(5));
    assert!(c.server.threads >= 1);
    assert_eq!(c.server.max_form_bytes, 16384);
    assert_eq!(c.store.kind, StoreKind::Embedded);
    assert_eq!(c.store.path, PathBuf::from("/etc/dalea/data"));
    assert_eq!(c.session.idle_timeout, MAX_IDLE_TIMEOUT);
    assert_eq!(c.session.absolute_timeout, Duration::from_secs(90 * 86400));
    assert_eq!(c.session.cookie_name, "dalea_session");
    assert!(c.session.cookie_secure);
    assert_eq!(c.session.activity_flush_interval, Duration::from_secs(1));
    assert_eq!(c.session.sweep_interval, Duration::from_secs(300));
    assert!(c.client_info.trusted_proxies.is_empty());
    assert_eq!(c.client_info.geoip_database, None);
    assert_eq!(c.upstreams.len(), 1);
    assert_eq!(c.upstreams[0].target, UpstreamTarget::Whoami);
    assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(3));
    assert_eq!(c.upstreams[0].read_timeout, Duration::from_secs(60));
    let r = &c.routes[0];
    assert_eq!((r.name.as_str(), r.host.as_deref(), r.path_prefix.as_str()), ("route0", None, "/"));
    assert_eq!((r.upstream, r.access), (0, Access::Session));
    assert_eq!(c.users.file, PathBuf::from("/etc/dalea/users.toml"));
}

#[test]
fn example_file_loads_with_the_defaults() {
    let text = include_str!("../../config/gateway.example.toml");
    let c = load(text).unwrap();
    let d = load(MINIMAL).unwrap();
    assert_eq!(c.server.listen, d.server.listen);
    assert_eq!(c.server.admin_listen, d.server.admin_listen);
    assert_eq!(c.server.shutdown_grace_period, d.server.shutdown_grace_period);
    assert_eq!(c.server.max_form_bytes, d.server.max_form_bytes);
    assert_eq!(c.store.path, d.store.path);
    assert_eq!(c.session.idle_timeout, d.session.idle_timeout);
    assert_eq!(c.session.absolute_timeout, d.session.absolute_timeout);
    assert_eq!(c.session.cookie_name, d.session.cookie_name);
    assert_eq!(c.session.activity_flush_interval, d.session.activity_flush_interval);
    assert_eq!(c.session.sweep_interval, d.session.sweep_interval);
    assert_eq!(c.users.file, PathBuf::from("/etc/dalea/users.example.toml"));
}

#[test]
fn example_file_documents_that_an_empty_trusted_proxies_variable_clears_the_list() {
    let text = include_str!("../../config/gateway.example.toml");
    let at = text.find("trusted_proxies = []").unwrap();
    let comment = &text[text[..at].rfind("[client_info]").unwrap()..at];
    assert!(comment.contains("(DALEA__CLIENT_INFO__TRUSTED_PROXIES=)"), "{comment}");
    assert!(comment.contains("clears the list"), "{comment}");
}

#[test]
fn idle_timeout_cap() {
    let err = load(&with("[session]\nidle_timeout = \"31d\"")).unwrap_err();
    assert_eq!(err.key, "session.idle_timeout");
    assert_eq!(err.message, "31d is longer than the 30-day maximum idle timeout; sessions idle for 30 days must end");
    let c = load(&with("[session]\nidle_timeout = \"30d\"")).unwrap();
    assert_eq!(c.session.idle_timeout, MAX_IDLE_TIMEOUT);
    assert_eq!(err_key(&with("[session]\nidle_timeout = \"720h1s\"")), "session.idle_timeout");
    assert_eq!(err_key(&with("[session]\nidle_timeout = \"0s\"")), "session.idle_timeout");
    assert_eq!(err_key(&with("[session]\nidle_timeout = \"30 days\"")), "session.idle_timeout");
}

#[test]
fn absolute_timeout_not_below_idle() {
    let text = with("[session]\nidle_timeout = \"2d\"\nabsolute_timeout = \"1d\"");
    assert_eq!(err_key(&text), "session.absolute_timeout");
    assert!(load(&with("[session]\nidle_timeout = \"2d\"\nabsolute_timeout = \"2d\"")).is_ok());
}

#[test]
fn session_ranges() {
    for v in ["50ms", "11s"] {
        let text = with(&format!("[session]\nactivity_flush_interval = \"{v}\""));
        assert_eq!(err_key(&text), "session.activity_flush_interval");
    }
    assert_eq!(err_key(&with("[session]\nsweep_interval = \"0s\"")), "session.sweep_interval");
    for bad in ["", "has space", "semi;colon", "__Host-x", "__secure-x", &"a".repeat(65)] {
        let text = with(&format!("[session]\ncookie_name = \"{bad}\""));
        assert_eq!(err_key(&text), "session.cookie_name", "{bad:?}");
    }
    assert!(load(&with("[session]\ncookie_name = \"My-App_2\"")).is_ok());
}

#[test]
fn server_ranges() {
    assert_eq!(err_key(&with("[server]\nlisten = \"localhost\"")), "server.listen");
    assert_eq!(err_key(&with("[server]\nshutdown_grace_period = \"61s\"")), "server.shutdown_grace_period");
    assert_eq!(err_key(&with("[server]\nthreads = 0")), "server.threads");
    assert_eq!(err_key(&with("[server]\nmax_form_bytes = 1023")), "server.max_form_bytes");
    assert_eq!(err_key(&with("[server]\nmax_form_bytes = 1048577")), "server.max_form_bytes");
    assert_eq!(load(&with("[server]\nthreads = 3")).unwrap().server.threads, 3);
}

#[test]
fn unknown_key_is_named() {
    let err = load(&with("[session]\ncookie_nmae = \"x\"")).unwrap_err();
    assert_eq!(err.key, "session.cookie_nmae");
    assert!(err.message.contains("unknown field"), "{err}");
    assert_eq!(err_key(&format!("colour = \"blue\"\n{MINIMAL}")), "colour");
    assert_eq!(err_key(&with("colour = \"blue\"")), "users.colour");
}

#[test]
fn users_file_is_required() {
    let text = MINIMAL.replace("[users]\nfile = \"users.toml\"\n", "");
    assert_eq!(err_key(&text), "users.file");
    let absolute = MINIMAL.replace("\"users.toml\"", "\"/srv/users.toml\"");
    assert_eq!(load(&absolute).unwrap().users.file, PathBuf::from("/srv/users.toml"));
}

#[test]
fn client_info_is_checked() {
    let c = load(&with("[client_info]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1\"]")).unwrap();
    let nets: Vec<String> = c.client_info.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
    let bad = with("[client_info]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]");
    assert_eq!(err_key(&bad), "client_info.trusted_proxies[1]");

    let host_bits = with("[client_info]\ntrusted_proxies = [\"10.0.0.1/8\"]");
    let err = load(&host_bits).unwrap_err();
    assert_eq!(err.key, "client_info.trusted_proxies[0]");
    assert!(err.message.contains("host bits set"), "{err}");
    assert!(err.message.contains("\"10.0.0.0/8\""), "{err}");
    assert!(err.message.contains("\"10.0.0.1\""), "{err}");
    let v6 = with("[client_info]\ntrusted_proxies = [\"fd00::1/64\"]");
    assert!(load(&v6).unwrap_err().message.contains("\"fd00::/64\""));
    assert!(load(&with("[client_info]\ntrusted_proxies = [\"10.0.0.1/32\"]")).is_ok());

    let missing = with("[client_info]\ngeoip_database = \"no-such-GeoLite2.mmdb\"");
    let err = load(&missing).unwrap_err();
    assert_eq!(err.key, "client_info.geoip_database");
    assert!(err.message.starts_with("cannot open GeoIP database ") && err.message.ends_with(": no such file"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("geo-dir")).unwrap();
    let a_dir = with("[client_info]\ngeoip_database = \"geo-dir\"");
    let err = Config::from_toml_str(&a_dir, dir.path(), &[], &Overrides::default()).unwrap_err();
    assert!(err.message.ends_with(": it is not a file"), "{err}");

    std::fs::write(dir.path().join("geo.mmdb"), b"x").unwrap();
    let present = with("[client_info]\ngeoip_database = \"geo.mmdb\"");
    let c = Config::from_toml_str(&present, dir.path(), &[], &Overrides::default()).unwrap();
    assert_eq!(c.client_info.geoip_database, Some(dir.path().join("geo.mmdb")));
}

#[test]
fn invalid_toml_is_reported() {
    assert_eq!(err_key("[server\n"), "config");
}

#[test]
fn load_reads_the_file_and_resolves_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let c = Config::load(&path, &Overrides::default()).unwrap();
    assert_eq!(c.users.file, dir.path().join("users.toml"));
    assert_eq!(c.store.path, dir.path().join("data"));
    let err = Config::load(&dir.path().join("missing.toml"), &Overrides::default()).unwrap_err();
    assert_eq!(err.key, "config");
}
