//! The `[store]` section: its file format and its validation into [`StoreConfig`].
//!
//! `kind = "embedded"` (the default) keeps sessions in a local database under `path`;
//! `kind = "redis"` needs exactly one of `url`, `cluster` or `sentinel_master` + `sentinels`, and
//! takes `key_prefix`, `timeout`, `outage_grace` and `tls_ca_file`, which are refused with the
//! embedded store. `tls_ca_file` (a PEM file of CA certificates, relative to the config file)
//! replaces the system roots when verifying `rediss://` servers; it must exist at load.
//! URLs may carry passwords, so any message quoting one goes through [`redact_url`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::duration::{deserialize_text as duration_text, parse_duration};
use super::{ConfigError, Overrides, RedisConfig, RedisMode, StoreConfig, StoreKind};

const DEFAULT_KEY_PREFIX: &str = "dalea";
const DEFAULT_TIMEOUT: &str = "1s";
const DEFAULT_OUTAGE_GRACE: &str = "60s";
const MAX_KEY_PREFIX: usize = 32;
const MIN_TIMEOUT: Duration = Duration::from_millis(50);
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_OUTAGE_GRACE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum StoreKindFile {
    #[default]
    Embedded,
    Redis,
}

/// `[store]` as written. The Redis keys are `Option`s so that validation can tell "left out"
/// (default, or refused with the embedded store) from "set".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct StoreFile {
    pub(super) kind: StoreKindFile,
    pub(super) path: String,
    pub(super) url: Option<String>,
    pub(super) cluster: Option<Vec<String>>,
    pub(super) sentinel_master: Option<String>,
    pub(super) sentinels: Option<Vec<String>>,
    pub(super) key_prefix: Option<String>,
    #[serde(deserialize_with = "optional_duration_text")]
    pub(super) timeout: Option<String>,
    #[serde(deserialize_with = "optional_duration_text")]
    pub(super) outage_grace: Option<String>,
    pub(super) tls_ca_file: Option<String>,
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile {
            kind: StoreKindFile::Embedded,
            path: "data".into(),
            url: None,
            cluster: None,
            sentinel_master: None,
            sentinels: None,
            key_prefix: None,
            timeout: None,
            outage_grace: None,
            tls_ca_file: None,
        }
    }
}

/// [`duration_text`] for a key that may be left out (the struct's `default` gives `None`).
fn optional_duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    duration_text(d).map(Some)
}

/// Checks `[store]`; `path` is resolved against `base` unless `--data-dir` replaces it.
pub(super) fn store(s: StoreFile, base: &Path, o: &Overrides) -> Result<StoreConfig, ConfigError> {
    let path = o.data_dir.clone().unwrap_or_else(|| base.join(&s.path));
    let (kind, redis) = match s.kind {
        StoreKindFile::Embedded => {
            if let Some(key) = s.redis_keys_set().first() {
                return Err(ConfigError::new(
                    format!("store.{key}"),
                    "is only used with kind = \"redis\" (kind is \"embedded\")",
                ));
            }
            (StoreKind::Embedded, None)
        }
        StoreKindFile::Redis => (StoreKind::Redis, Some(redis(s, base)?)),
    };
    Ok(StoreConfig { kind, path, redis })
}

impl StoreFile {
    /// The Redis-only keys that are set, in file order.
    fn redis_keys_set(&self) -> Vec<&'static str> {
        [
            ("url", self.url.is_some()),
            ("cluster", self.cluster.is_some()),
            ("sentinel_master", self.sentinel_master.is_some()),
            ("sentinels", self.sentinels.is_some()),
            ("key_prefix", self.key_prefix.is_some()),
            ("timeout", self.timeout.is_some()),
            ("outage_grace", self.outage_grace.is_some()),
            ("tls_ca_file", self.tls_ca_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

fn redis(s: StoreFile, base: &Path) -> Result<RedisConfig, ConfigError> {
    let mode = mode(s.url, s.cluster, s.sentinel_master, s.sentinels)?;
    let tls_ca_file = match s.tls_ca_file {
        None => None,
        Some(raw) => Some(tls_ca_file(&raw, base, &mode)?),
    };
    let key_prefix = s.key_prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
    check_key_prefix(&key_prefix)?;
    let timeout_text = s.timeout.unwrap_or_else(|| DEFAULT_TIMEOUT.into());
    let timeout = duration("store.timeout", &timeout_text)?;
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        return Err(ConfigError::new("store.timeout", format!("{} is outside 50ms..=10s", timeout_text.trim())));
    }
    let grace_text = s.outage_grace.unwrap_or_else(|| DEFAULT_OUTAGE_GRACE.into());
    let outage_grace = duration("store.outage_grace", &grace_text)?;
    if outage_grace > MAX_OUTAGE_GRACE {
        return Err(ConfigError::new("store.outage_grace", format!("{} is outside 0s..=10m", grace_text.trim())));
    }
    Ok(RedisConfig { mode, key_prefix, timeout, outage_grace, tls_ca_file })
}

/// `tls_ca_file`: resolved against `base`, an existing file, and only with `rediss://` servers
/// (it is what verifies them; plain `redis://` never uses it).
fn tls_ca_file(raw: &str, base: &Path, mode: &RedisMode) -> Result<PathBuf, ConfigError> {
    let key = "store.tls_ca_file";
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    let path = base.join(raw);
    if !path.is_file() {
        return Err(ConfigError::new(key, format!("the CA certificate file {} is missing", path.display())));
    }
    let urls: Vec<&String> = match mode {
        RedisMode::Standalone { url } => vec![url],
        RedisMode::Cluster { nodes } => nodes.iter().collect(),
        RedisMode::Sentinel { sentinels, .. } => sentinels.iter().collect(),
    };
    if !urls.iter().any(|u| u.to_ascii_lowercase().starts_with("rediss://")) {
        return Err(ConfigError::new(key, "is only used with TLS: the server URLs must start with rediss://"));
    }
    Ok(path)
}

/// Exactly one of standalone (`url`), `cluster` or Sentinel (`sentinel_master` + `sentinels`).
fn mode(
    url: Option<String>,
    cluster: Option<Vec<String>>,
    master: Option<String>,
    sentinels: Option<Vec<String>>,
) -> Result<RedisMode, ConfigError> {
    // Each mode present, by the key that is its first one set.
    let sentinel_key = match (&master, &sentinels) {
        (Some(_), _) => Some("sentinel_master"),
        (None, Some(_)) => Some("sentinels"),
        (None, None) => None,
    };
    let present: Vec<&str> = [url.as_ref().map(|_| "url"), cluster.as_ref().map(|_| "cluster"), sentinel_key]
        .into_iter()
        .flatten()
        .collect();
    if let [first, second, ..] = present.as_slice() {
        return Err(ConfigError::new(
            format!("store.{second}"),
            format!("cannot be combined with {first}: set only one of url, cluster, or sentinel_master + sentinels"),
        ));
    }
    match (url, cluster, master, sentinels) {
        (Some(url), _, _, _) => Ok(RedisMode::Standalone { url: redis_url("store.url", &url)? }),
        (_, Some(nodes), _, _) => Ok(RedisMode::Cluster { nodes: url_list("store.cluster", &nodes, "seed node")? }),
        (_, _, Some(master), Some(sentinels)) => {
            let master = master.trim();
            if master.is_empty() {
                return Err(ConfigError::new("store.sentinel_master", "must not be empty"));
            }
            Ok(RedisMode::Sentinel {
                master: master.to_string(),
                sentinels: url_list("store.sentinels", &sentinels, "sentinel")?,
            })
        }
        (_, _, Some(_), None) => Err(ConfigError::new(
            "store.sentinels",
            "is required with sentinel_master: list the sentinels' redis:// URLs",
        )),
        (_, _, None, Some(_)) => Err(ConfigError::new(
            "store.sentinel_master",
            "is required with sentinels: the name of the master the sentinels monitor",
        )),
        (None, None, None, None) => Err(ConfigError::new(
            "store.url",
            "kind = \"redis\" needs a server: set url, cluster, or sentinel_master + sentinels",
        )),
    }
}

fn url_list(key: &str, list: &[String], what: &str) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("must not be empty: list at least one {what} URL (redis://host:port)"),
        ));
    }
    list.iter().enumerate().map(|(i, raw)| redis_url(&format!("{key}[{i}]"), raw)).collect()
}

/// A `redis://` or `rediss://` URL with a host, returned trimmed.
fn redis_url(key: &str, raw: &str) -> Result<String, ConfigError> {
    let text = raw.trim();
    let shown = redact_url(text);
    let lower = text.to_ascii_lowercase();
    if !(lower.starts_with("redis://") || lower.starts_with("rediss://")) {
        return Err(ConfigError::new(key, format!("{shown:?} must start with redis:// or rediss://")));
    }
    let parsed =
        url::Url::parse(text).map_err(|e| ConfigError::new(key, format!("{shown:?} is not a valid URL: {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(key, format!("{shown:?} has no host (expected redis://host:port)")));
    }
    Ok(text.to_string())
}

/// `url` with any `user:password@` replaced by `<credentials>@`, for messages and logs. Works on
/// text that is not a valid URL too: everything up to the last `@` after the scheme is hidden.
pub(super) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}<credentials>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn check_key_prefix(prefix: &str) -> Result<(), ConfigError> {
    let key = "store.key_prefix";
    if prefix.is_empty() || prefix.len() > MAX_KEY_PREFIX {
        return Err(ConfigError::new(key, format!("{prefix:?} must be 1 to {MAX_KEY_PREFIX} characters long")));
    }
    if let Some(c) = prefix.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(ConfigError::new(key, format!("{prefix:?} contains {c:?}; use only A-Z, a-z, 0-9, _ and -")));
    }
    Ok(())
}

fn duration(key: &str, raw: &str) -> Result<Duration, ConfigError> {
    parse_duration(raw).map_err(|msg| ConfigError::new(key, msg))
}

#[cfg(test)]
mod tls_ca_file_tests {
    //! `[store] tls_ca_file`: resolved against the config directory, must exist, only with
    //! `kind = "redis"` and `rediss://` servers, settable from the environment.

    use super::super::{Config, Overrides};
    use super::*;

    const MINIMAL: &str = "[[upstreams]]\nname = \"app\"\nbuiltin = \"whoami\"\n\n[[routes]]\nupstream = \"app\"\n\n[users]\nfile = \"users.toml\"\n";

    fn load(dir: &Path, store: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_toml_str(&format!("{MINIMAL}\n[store]\n{store}\n"), dir, &vars, &Overrides::default())
    }

    fn dir_with_ca() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        dir
    }

    #[test]
    fn is_resolved_against_the_config_directory() {
        let dir = dir_with_ca();
        let c =
            load(dir.path(), "kind = \"redis\"\nurl = \"rediss://r:6380\"\ntls_ca_file = \"tls/ca.pem\"", &[]).unwrap();
        let redis = c.store.redis.unwrap();
        assert_eq!(redis.tls_ca_file, Some(dir.path().join("tls/ca.pem")));
        // Left out: the system roots.
        let c = load(dir.path(), "kind = \"redis\"\nurl = \"rediss://r:6380\"", &[]).unwrap();
        assert_eq!(c.store.redis.unwrap().tls_ca_file, None);
    }

    #[test]
    fn works_for_cluster_and_sentinel_over_tls() {
        let dir = dir_with_ca();
        let c =
            load(dir.path(), "kind = \"redis\"\ncluster = [\"rediss://a:7000\"]\ntls_ca_file = \"tls/ca.pem\"", &[]);
        assert!(c.unwrap().store.redis.unwrap().tls_ca_file.is_some());
        let c = load(
            dir.path(),
            "kind = \"redis\"\nsentinel_master = \"m\"\nsentinels = [\"rediss://s:26379\"]\ntls_ca_file = \"tls/ca.pem\"",
            &[],
        );
        assert!(c.unwrap().store.redis.unwrap().tls_ca_file.is_some());
    }

    #[test]
    fn can_come_from_the_environment() {
        let dir = dir_with_ca();
        let c = load(
            dir.path(),
            "kind = \"redis\"\nurl = \"rediss://r:6380\"",
            &[("DALEA__STORE__TLS_CA_FILE", "tls/ca.pem")],
        )
        .unwrap();
        assert_eq!(c.store.redis.unwrap().tls_ca_file, Some(dir.path().join("tls/ca.pem")));
    }

    #[test]
    fn is_refused_when_missing_empty_without_tls_or_with_the_embedded_store() {
        let dir = dir_with_ca();
        let err = |store: &str| load(dir.path(), store, &[]).unwrap_err();
        let e = err("kind = \"redis\"\nurl = \"rediss://r:6380\"\ntls_ca_file = \"tls/nope.pem\"");
        assert_eq!(e.key, "store.tls_ca_file");
        assert!(e.message.contains("missing"), "{}", e.message);
        assert_eq!(err("kind = \"redis\"\nurl = \"rediss://r:6380\"\ntls_ca_file = \" \"").key, "store.tls_ca_file");
        let e = err("kind = \"redis\"\nurl = \"redis://r:6379\"\ntls_ca_file = \"tls/ca.pem\"");
        assert_eq!(e.key, "store.tls_ca_file");
        assert!(e.message.contains("rediss://"), "{}", e.message);
        let e = err("kind = \"embedded\"\ntls_ca_file = \"tls/ca.pem\"");
        assert_eq!(e.key, "store.tls_ca_file");
        assert!(e.message.contains("only used with kind = \"redis\""), "{}", e.message);
    }
}
