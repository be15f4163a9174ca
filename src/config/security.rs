//! The `[elevation]`, `[rate_limit]` and `[secrets]` sections: how recent a sensitive action's
//! re-authentication must be, how many failed attempts (and sign-in starts) are allowed, and the
//! key that encrypts per-person secrets (TOTP seeds) at rest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::duration::{deserialize_text as duration_text, parse_duration};
use super::{ConfigError, StoreKind};

const MAX_AGE_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(60)..=Duration::from_secs(24 * 3600);
/// Where the embedded store keeps a generated key when none is configured.
pub const GENERATED_KEY_FILE: &str = "secret.key";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ElevationFile {
    #[serde(deserialize_with = "duration_text")]
    pub(super) max_age: String,
}

impl Default for ElevationFile {
    fn default() -> Self {
        ElevationFile { max_age: "10m".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RateLimitFile {
    #[serde(deserialize_with = "duration_text")]
    pub(super) window: String,
    pub(super) signin_per_account: u32,
    pub(super) signin_per_network: u32,
    pub(super) totp_per_account: u32,
    pub(super) totp_per_network: u32,
    pub(super) signin_starts_per_network: u32,
}

impl Default for RateLimitFile {
    fn default() -> Self {
        RateLimitFile {
            window: "15m".into(),
            signin_per_account: 10,
            signin_per_network: 50,
            totp_per_account: 10,
            totp_per_network: 50,
            signin_starts_per_network: 450,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SecretsFile {
    pub(super) encryption_key: Option<String>,
    pub(super) encryption_key_file: Option<String>,
}

/// Sensitive actions and routes need a re-authentication at most this old.
#[derive(Debug, Clone)]
pub struct ElevationConfig {
    pub max_age: Duration,
}

/// Failed-attempt limits, per account and per client network, in fixed windows; and how many
/// sign-ins through a provider or with a passkey one client network may start per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub window: Duration,
    pub signin_per_account: u32,
    pub signin_per_network: u32,
    pub totp_per_account: u32,
    pub totp_per_network: u32,
    /// Starts (`/.dalea/oauth/{p}/start`, passkey `signin/begin`) per IPv4 /24 or IPv6 /64: each
    /// keeps a record in the pending store until it is finished or expires, so one client
    /// cannot fill the store and block everyone's sign-ins. Successful starts are not given back.
    pub signin_starts_per_network: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let f = RateLimitFile::default();
        RateLimitConfig {
            window: Duration::from_secs(15 * 60),
            signin_per_account: f.signin_per_account,
            signin_per_network: f.signin_per_network,
            totp_per_account: f.totp_per_account,
            totp_per_network: f.totp_per_network,
            signin_starts_per_network: f.signin_starts_per_network,
        }
    }
}

/// Where the key that encrypts TOTP secrets comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `secrets.encryption_key`: base64 of 32 bytes (checked at load).
    Inline(String),
    /// `secrets.encryption_key_file`: a file holding that base64 text.
    File(PathBuf),
    /// Embedded store without a configured key: generated on first start in the data directory.
    Generated(PathBuf),
    /// Redis store without a configured key: TOTP cannot be enrolled (replicas must share a key).
    Missing,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Inline(_) => f.write_str("Inline(..)"),
            KeySource::File(p) => f.debug_tuple("File").field(p).finish(),
            KeySource::Generated(p) => f.debug_tuple("Generated").field(p).finish(),
            KeySource::Missing => f.write_str("Missing"),
        }
    }
}

pub(super) fn elevation(e: ElevationFile) -> Result<ElevationConfig, ConfigError> {
    let key = "elevation.max_age";
    let max_age = parse_duration(&e.max_age).map_err(|m| ConfigError::new(key, m))?;
    if !MAX_AGE_RANGE.contains(&max_age) {
        return Err(ConfigError::new(key, format!("{} is outside 1m..=24h", e.max_age.trim())));
    }
    Ok(ElevationConfig { max_age })
}

pub(super) fn rate_limit(r: RateLimitFile) -> Result<RateLimitConfig, ConfigError> {
    let key = "rate_limit.window";
    let window = parse_duration(&r.window).map_err(|m| ConfigError::new(key, m))?;
    if !(Duration::from_secs(60)..=Duration::from_secs(24 * 3600)).contains(&window) {
        return Err(ConfigError::new(key, format!("{} is outside 1m..=24h", r.window.trim())));
    }
    for (name, n) in [
        ("signin_per_account", r.signin_per_account),
        ("signin_per_network", r.signin_per_network),
        ("totp_per_account", r.totp_per_account),
        ("totp_per_network", r.totp_per_network),
        ("signin_starts_per_network", r.signin_starts_per_network),
    ] {
        if !(1..=100_000).contains(&n) {
            return Err(ConfigError::new(format!("rate_limit.{name}"), format!("{n} is outside 1..=100000")));
        }
    }
    Ok(RateLimitConfig {
        window,
        signin_per_account: r.signin_per_account,
        signin_per_network: r.signin_per_network,
        totp_per_account: r.totp_per_account,
        totp_per_network: r.totp_per_network,
        signin_starts_per_network: r.signin_starts_per_network,
    })
}

pub(super) fn secrets(
    s: SecretsFile,
    base: &Path,
    store: StoreKind,
    data_dir: &Path,
) -> Result<KeySource, ConfigError> {
    match (s.encryption_key, s.encryption_key_file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "secrets.encryption_key",
            "set either encryption_key or encryption_key_file, not both",
        )),
        (Some(inline), None) => {
            check_key("secrets.encryption_key", &inline)?;
            Ok(KeySource::Inline(inline.trim().to_string()))
        }
        (None, Some(file)) => {
            let key = "secrets.encryption_key_file";
            if file.trim().is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
            let path = base.join(file.trim());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
            check_key(key, &text)?;
            Ok(KeySource::File(path))
        }
        (None, None) => Ok(match store {
            StoreKind::Embedded => KeySource::Generated(data_dir.join(GENERATED_KEY_FILE)),
            StoreKind::Redis => KeySource::Missing,
        }),
    }
}

/// A key is standard base64 (padding optional) of exactly 32 bytes. The message never
/// repeats the value.
pub fn check_key(key: &str, text: &str) -> Result<[u8; 32], ConfigError> {
    let text = text.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|_| ConfigError::new(key, "is not base64; generate a key with `openssl rand -base64 32`"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        ConfigError::new(
            key,
            format!(
                "must be 32 bytes of base64 (got {} bytes); generate one with `openssl rand -base64 32`",
                bytes.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_32_bytes_of_base64_and_errors_never_echo_them() {
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(check_key("k", &good).ok(), Some([7u8; 32]));
        assert!(check_key("k", &format!(" {}\n", good.trim_end_matches('='))).is_ok());
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = check_key("k", &short).unwrap_err();
        assert!(err.message.contains("got 16 bytes") && !err.message.contains(&short), "{err}");
        let err = check_key("k", "not base64 at all!").unwrap_err();
        assert!(err.message.contains("not base64") && !err.message.contains("at all"), "{err}");
    }

    #[test]
    fn without_a_key_the_embedded_store_generates_one_and_redis_has_none() {
        let base = Path::new("/etc/dalea");
        let data = Path::new("/var/lib/dalea");
        let k = secrets(SecretsFile::default(), base, StoreKind::Embedded, data).unwrap();
        assert_eq!(k, KeySource::Generated(data.join(GENERATED_KEY_FILE)));
        assert_eq!(secrets(SecretsFile::default(), base, StoreKind::Redis, data).unwrap(), KeySource::Missing);
        let both = SecretsFile { encryption_key: Some("a".into()), encryption_key_file: Some("b".into()) };
        assert_eq!(secrets(both, base, StoreKind::Redis, data).unwrap_err().key, "secrets.encryption_key");
    }

    #[test]
    fn elevation_max_age_and_limits_are_bounded() {
        assert_eq!(elevation(ElevationFile::default()).unwrap().max_age, Duration::from_secs(600));
        assert_eq!(elevation(ElevationFile { max_age: "10s".into() }).unwrap_err().key, "elevation.max_age");
        assert_eq!(rate_limit(RateLimitFile::default()).unwrap(), RateLimitConfig::default());
        let zero = RateLimitFile { totp_per_account: 0, ..RateLimitFile::default() };
        assert_eq!(rate_limit(zero).unwrap_err().key, "rate_limit.totp_per_account");
        assert_eq!(RateLimitConfig::default().signin_starts_per_network, 450, "30 a minute over 15 minutes");
        let none = RateLimitFile { signin_starts_per_network: 0, ..RateLimitFile::default() };
        assert_eq!(rate_limit(none).unwrap_err().key, "rate_limit.signin_starts_per_network");
        let starts = RateLimitFile { signin_starts_per_network: 5, ..RateLimitFile::default() };
        assert_eq!(rate_limit(starts).unwrap().signin_starts_per_network, 5);
    }

    #[test]
    fn inline_keys_are_hidden_from_debug() {
        assert_eq!(format!("{:?}", KeySource::Inline("c2VjcmV0".into())), "Inline(..)");
    }
}
