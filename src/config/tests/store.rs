//! `[store]`: the embedded default, the three Redis modes, their defaults and every rejection
//! with its exact key, and that URL passwords never reach a message (environment: `store_env.rs`).

use super::*;

fn store(lines: &str) -> Result<StoreConfig, ConfigError> {
    load(&with(&format!("[store]\n{lines}"))).map(|c| c.store)
}

fn redis(lines: &str) -> RedisConfig {
    let s = store(&format!("kind = \"redis\"\n{lines}")).unwrap();
    assert_eq!(s.kind, StoreKind::Redis);
    s.redis.unwrap()
}

fn redis_err(lines: &str) -> ConfigError {
    store(&format!("kind = \"redis\"\n{lines}")).unwrap_err()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn embedded_is_the_default_and_has_no_redis() {
    let s = load(MINIMAL).unwrap().store;
    assert_eq!(s.kind, StoreKind::Embedded);
    assert!(s.redis.is_none());
    let s = store("kind = \"embedded\"\npath = \"sessions\"").unwrap();
    assert_eq!(s.path, PathBuf::from("/etc/dalea/sessions"));
    assert!(s.redis.is_none());
}

#[test]
fn standalone_with_defaults() {
    let r = redis("url = \" redis://user:secret@127.0.0.1:6379/0 \"");
    assert_eq!(r.mode, RedisMode::Standalone { url: "redis://user:secret@127.0.0.1:6379/0".into() });
    assert_eq!(r.key_prefix, "dalea");
    assert_eq!(r.timeout, Duration::from_secs(1));
    assert_eq!(r.outage_grace, Duration::from_secs(60));
    // Debug output (logs) hides the password.
    let debug = format!("{:?}", r.mode);
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("redis://<credentials>@127.0.0.1:6379/0"), "{debug}");
}

#[test]
fn cluster_and_sentinel_modes() {
    let r = redis("cluster = [\"redis://10.0.0.1:7000\", \"rediss://10.0.0.2:7000\"]");
    assert_eq!(r.mode, RedisMode::Cluster { nodes: strings(&["redis://10.0.0.1:7000", "rediss://10.0.0.2:7000"]) });
    let r = redis("sentinel_master = \"mymaster\"\nsentinels = [\"redis://10.0.0.5:26379\"]");
    assert_eq!(
        r.mode,
        RedisMode::Sentinel { master: "mymaster".into(), sentinels: strings(&["redis://10.0.0.5:26379"]) }
    );
}

#[test]
fn tuning_keys_are_read_and_bounded() {
    let r = redis("url = \"redis://h\"\nkey_prefix = \"gw-2_a\"\ntimeout = \"50ms\"\noutage_grace = \"0s\"");
    assert_eq!(r.key_prefix, "gw-2_a");
    assert_eq!(r.timeout, Duration::from_millis(50));
    assert_eq!(r.outage_grace, Duration::ZERO);
    let r = redis("url = \"redis://h\"\ntimeout = \"10s\"\noutage_grace = \"10m\"");
    assert_eq!((r.timeout, r.outage_grace), (Duration::from_secs(10), Duration::from_secs(600)));

    let url = "url = \"redis://h\"\n";
    for (extra, key) in [
        ("key_prefix = \"\"", "store.key_prefix"),
        ("key_prefix = \"a:b\"", "store.key_prefix"),
        ("key_prefix = \"123456789012345678901234567890123\"", "store.key_prefix"),
        ("timeout = \"49ms\"", "store.timeout"),
        ("timeout = \"11s\"", "store.timeout"),
        ("timeout = \"soon\"", "store.timeout"),
        ("timeout = 1", "store.timeout"),
        ("outage_grace = \"601s\"", "store.outage_grace"),
    ] {
        assert_eq!(redis_err(&format!("{url}{extra}")).key, key, "{extra}");
    }
    assert_eq!(redis_err(&format!("{url}timeout = \"11s\"")).message, "11s is outside 50ms..=10s");
}

#[test]
fn mode_problems_name_the_exact_key() {
    let err = redis_err("");
    assert_eq!(err.key, "store.url");
    assert!(err.message.contains("set url, cluster, or sentinel_master + sentinels"), "{err}");

    let both = "url = \"redis://a\"\ncluster = [\"redis://b\"]";
    let err = redis_err(both);
    assert_eq!(err.key, "store.cluster");
    assert!(err.message.contains("cannot be combined with url"), "{err}");
    let sentinel = "sentinel_master = \"m\"\nsentinels = [\"redis://s\"]";
    assert_eq!(redis_err(&format!("url = \"redis://a\"\n{sentinel}")).key, "store.sentinel_master");
    assert_eq!(redis_err(&format!("cluster = [\"redis://a\"]\n{sentinel}")).key, "store.sentinel_master");
    assert_eq!(redis_err("cluster = [\"redis://a\"]\nsentinels = [\"redis://s\"]").key, "store.sentinels");

    let err = redis_err("sentinel_master = \"m\"");
    assert_eq!(err.key, "store.sentinels");
    assert!(err.message.starts_with("is required"), "{err}");
    assert_eq!(redis_err("sentinels = [\"redis://s\"]").key, "store.sentinel_master");
    assert_eq!(redis_err("sentinel_master = \" \"\nsentinels = [\"redis://s\"]").key, "store.sentinel_master");

    assert_eq!(redis_err("cluster = []").key, "store.cluster");
    assert!(redis_err("cluster = []").message.contains("must not be empty"));
    assert_eq!(redis_err("sentinel_master = \"m\"\nsentinels = []").key, "store.sentinels");
}

#[test]
fn urls_are_checked_with_their_index() {
    for (lines, key) in [
        ("url = \"http://h:6379\"", "store.url"),
        ("url = \"\"", "store.url"),
        ("url = \"127.0.0.1:6379\"", "store.url"),
        ("url = \"redis://\"", "store.url"),
        ("url = \"redis://h:notaport\"", "store.url"),
        ("cluster = [\"redis://a:7000\", \"tcp://b:7000\"]", "store.cluster[1]"),
        ("sentinel_master = \"m\"\nsentinels = [\"redis:///0\"]", "store.sentinels[0]"),
    ] {
        assert_eq!(redis_err(lines).key, key, "{lines}");
    }
    let err = redis_err("url = \"http://h\"");
    assert_eq!(err.message, "\"http://h\" must start with redis:// or rediss://");
    assert!(redis_err("url = \"redis:///0\"").message.contains("has no host"));
}

#[test]
fn passwords_in_bad_urls_are_not_echoed() {
    for url in [
        "http://admin:hunter2@h:6379",
        "redis://admin:hunter2@h:notaport",
        "redis://:hunter2@",
        "admin:hunter2@h:6379",
        "redis://admin:hun@ter2@h:x",
        "redis://admin:hun/ter2@h:x",
    ] {
        let err = redis_err(&format!("url = \"{url}\""));
        assert_eq!(err.key, "store.url", "{url}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!err.to_string().contains("ter2"), "{err}");
        assert!(err.message.contains("<credentials>@"), "{err}");
    }
    let err = redis_err("cluster = [\"ftp://u:hunter2@n\"]");
    assert_eq!(err.key, "store.cluster[0]");
    assert!(err.message.starts_with("\"ftp://<credentials>@n\""), "{err}");
    // Also when the URL came from the environment.
    let env = [("DALEA__STORE__KIND", "redis"), ("DALEA__STORE__URL", "redis://u:hunter2@h:bad")];
    let err = load_with(MINIMAL, &env, &Overrides::default()).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.message.ends_with("(set by DALEA__STORE__URL)"), "{err}");
}

#[test]
fn redis_keys_are_refused_with_the_embedded_store() {
    for (line, key) in [
        ("url = \"redis://h\"", "store.url"),
        ("cluster = [\"redis://h\"]", "store.cluster"),
        ("sentinel_master = \"m\"", "store.sentinel_master"),
        ("sentinels = []", "store.sentinels"),
        ("key_prefix = \"dalea\"", "store.key_prefix"),
        ("timeout = \"1s\"", "store.timeout"),
        ("outage_grace = \"60s\"", "store.outage_grace"),
    ] {
        for kind in ["", "kind = \"embedded\"\n"] {
            let err = store(&format!("{kind}{line}")).unwrap_err();
            assert_eq!(err.key, key, "{line}");
            assert!(err.message.contains("only used with kind = \"redis\""), "{err}");
        }
    }
}
