//! `[store]` from `DALEA__STORE__*` variables: picking Redis and its mode, the tuning keys, and
//! errors that name the variable.

use super::*;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn env_selects_and_configures_redis() {
    let o = Overrides::default();
    let env = [("DALEA__STORE__KIND", "redis"), ("DALEA__STORE__URL", "rediss://r.example:6380/2")];
    let r = load_with(MINIMAL, &env, &o).unwrap().store.redis.unwrap();
    assert_eq!(r.mode, RedisMode::Standalone { url: "rediss://r.example:6380/2".into() });

    let env = [
        ("DALEA__STORE__KIND", "redis"),
        ("DALEA__STORE__CLUSTER", "redis://a:7000, redis://b:7000"),
        ("DALEA__STORE__KEY_PREFIX", "gw1"),
        ("DALEA__STORE__TIMEOUT", "250ms"),
        ("DALEA__STORE__OUTAGE_GRACE", "2m"),
    ];
    let r = load_with(MINIMAL, &env, &o).unwrap().store.redis.unwrap();
    assert_eq!(r.mode, RedisMode::Cluster { nodes: strings(&["redis://a:7000", "redis://b:7000"]) });
    assert_eq!(r.key_prefix, "gw1");
    assert_eq!(r.timeout, Duration::from_millis(250));
    assert_eq!(r.outage_grace, Duration::from_secs(120));

    let env = [
        ("DALEA__STORE__KIND", "redis"),
        ("DALEA__STORE__SENTINEL_MASTER", "mymaster"),
        ("DALEA__STORE__SENTINELS", "redis://s1:26379,redis://s2:26379"),
    ];
    let r = load_with(MINIMAL, &env, &o).unwrap().store.redis.unwrap();
    assert_eq!(
        r.mode,
        RedisMode::Sentinel {
            master: "mymaster".into(),
            sentinels: strings(&["redis://s1:26379", "redis://s2:26379"])
        }
    );

    // The environment's kind beats the file's; errors name the variable.
    let file = with("[store]\nkind = \"embedded\"\nurl = \"redis://h\"");
    let c = load_with(&file, &[("DALEA__STORE__KIND", "redis")], &o).unwrap();
    assert_eq!(c.store.kind, StoreKind::Redis);
    let err = load_with(MINIMAL, &[("DALEA__STORE__CLUSTER", "redis://a")], &o).unwrap_err();
    assert_eq!(err.key, "store.cluster");
    assert!(err.message.ends_with("(set by DALEA__STORE__CLUSTER)"), "{err}");
    let env = [("DALEA__STORE__KIND", "redis"), ("DALEA__STORE__CLUSTER", "redis://a,nope")];
    assert_eq!(load_with(MINIMAL, &env, &o).unwrap_err().key, "store.cluster[1]");
}

/// The example documents every `[store]` variable, and its commented-out Redis keys, once
/// uncommented with `kind = "redis"`, load as the built-in defaults.
#[test]
fn example_file_documents_the_redis_keys() {
    let text = include_str!("../../../config/gateway.example.toml");
    for key in
        ["KIND", "PATH", "URL", "CLUSTER", "SENTINEL_MASTER", "SENTINELS", "KEY_PREFIX", "TIMEOUT", "OUTAGE_GRACE"]
    {
        assert!(text.contains(&format!("DALEA__STORE__{key}")), "{key}");
    }
    let mut redis = text.replace("kind = \"embedded\"", "kind = \"redis\"");
    for key in ["url", "key_prefix", "timeout", "outage_grace"] {
        redis = redis.replace(&format!("# {key} = "), &format!("{key} = "));
    }
    let r = load(&redis).unwrap().store.redis.unwrap();
    assert_eq!(r.mode, RedisMode::Standalone { url: "redis://127.0.0.1:6379/0".into() });
    assert_eq!(
        (r.key_prefix.as_str(), r.timeout, r.outage_grace),
        ("dalea", Duration::from_secs(1), Duration::from_secs(60))
    );
}
