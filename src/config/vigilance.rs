//! The `[vigilance]` section (the warning flags on the sessions list) and the `[notify]` section
//! (the webhook told about sign-ins from a new device or an unusual place).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::duration::{deserialize_text as duration_text, parse_duration};
use super::oauth::is_loopback;
use super::ConfigError;

const LONG_LIVED_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(24 * 3600)..=Duration::from_secs(3650 * 24 * 3600);
const USUAL_RANGE: std::ops::RangeInclusive<u32> = 1..=100;
const REMEMBER_RANGE: std::ops::RangeInclusive<usize> = 5..=500;
const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(60);
const ATTEMPTS_RANGE: std::ops::RangeInclusive<u32> = 1..=10;
const BACKOFF_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(600);
/// The shortest webhook secret accepted, in bytes: HMAC keys should be random and long.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct VigilanceFile {
    #[serde(deserialize_with = "duration_text")]
    pub(super) long_lived_after: String,
    pub(super) usual_place_sign_ins: u32,
    pub(super) remember_devices: usize,
    pub(super) remember_places: usize,
}

impl Default for VigilanceFile {
    fn default() -> Self {
        VigilanceFile {
            long_lived_after: "30d".into(),
            usual_place_sign_ins: 2,
            remember_devices: 50,
            remember_places: 50,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NotifyFile {
    pub(super) webhook: Option<String>,
    pub(super) secret_file: Option<String>,
    pub(super) secret_env: Option<String>,
    #[serde(deserialize_with = "duration_text")]
    pub(super) timeout: String,
    pub(super) max_attempts: u32,
    #[serde(deserialize_with = "duration_text")]
    pub(super) retry_backoff: String,
}

impl Default for NotifyFile {
    fn default() -> Self {
        NotifyFile {
            webhook: None,
            secret_file: None,
            secret_env: None,
            timeout: "5s".into(),
            max_attempts: 5,
            retry_backoff: "1s".into(),
        }
    }
}

/// The warning flags' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VigilanceConfig {
    /// Sessions signed in longer ago than this carry the `long_lived` flag.
    pub long_lived_after: Duration,
    /// A place seen on at least this many sign-ins is one of the person's usual places.
    pub usual_place_sign_ins: u32,
    /// How many device fingerprints are remembered per person (least recently seen dropped).
    pub remember_devices: usize,
    /// How many places are remembered per person.
    pub remember_places: usize,
}

impl Default for VigilanceConfig {
    fn default() -> Self {
        VigilanceConfig {
            long_lived_after: Duration::from_secs(30 * 24 * 3600),
            usual_place_sign_ins: 2,
            remember_devices: 50,
            remember_places: 50,
        }
    }
}

/// The key webhook bodies are signed with (HMAC-SHA256). Never printed; wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl WebhookSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        WebhookSecret(Zeroizing::new(bytes.into()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// Where and how notices are sent; `Config::notify` is `None` without `[notify] webhook`.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// `https://…` (or `http://` to a loopback host). Its path and query may hold a token, so
    /// only its origin is ever printed.
    pub webhook: String,
    pub secret: WebhookSecret,
    /// How long one delivery attempt may take.
    pub timeout: Duration,
    /// Attempts per notice, the first included.
    pub max_attempts: u32,
    /// The wait before the first retry; each further retry waits twice as long.
    pub retry_backoff: Duration,
}

impl NotifyConfig {
    /// `scheme://host[:port]` of the webhook: what logs and `Debug` show.
    pub fn webhook_origin(&self) -> String {
        url::Url::parse(&self.webhook).map(|u| u.origin().ascii_serialization()).unwrap_or_else(|_| "?".into())
    }
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("webhook", &self.webhook_origin())
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .finish()
    }
}

pub(super) fn vigilance(v: VigilanceFile) -> Result<VigilanceConfig, ConfigError> {
    let key = "vigilance.long_lived_after";
    let long_lived_after = parse_duration(&v.long_lived_after).map_err(|m| ConfigError::new(key, m))?;
    if !LONG_LIVED_RANGE.contains(&long_lived_after) {
        return Err(ConfigError::new(key, format!("{} is outside 1d..=3650d", v.long_lived_after.trim())));
    }
    if !USUAL_RANGE.contains(&v.usual_place_sign_ins) {
        return Err(ConfigError::new(
            "vigilance.usual_place_sign_ins",
            format!("{} is outside 1..=100", v.usual_place_sign_ins),
        ));
    }
    for (name, n) in [("remember_devices", v.remember_devices), ("remember_places", v.remember_places)] {
        if !REMEMBER_RANGE.contains(&n) {
            return Err(ConfigError::new(format!("vigilance.{name}"), format!("{n} is outside 5..=500")));
        }
    }
    Ok(VigilanceConfig {
        long_lived_after,
        usual_place_sign_ins: v.usual_place_sign_ins,
        remember_devices: v.remember_devices,
        remember_places: v.remember_places,
    })
}

/// `env` looks up the variable `secret_env` names (the process environment in `Config::load`).
pub(super) fn notify(
    n: NotifyFile,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<NotifyConfig>, ConfigError> {
    let Some(raw) = n.webhook.clone() else {
        if n.secret_file.is_some() || n.secret_env.is_some() {
            return Err(ConfigError::new(
                "notify.webhook",
                "is required with secret_file or secret_env: the URL notices are posted to",
            ));
        }
        return Ok(None);
    };
    let webhook = webhook_url(&raw)?;
    let secret = secret(&n, base, env)?;
    let timeout = within("notify.timeout", &n.timeout, TIMEOUT_RANGE, "1s..=60s")?;
    if !ATTEMPTS_RANGE.contains(&n.max_attempts) {
        return Err(ConfigError::new("notify.max_attempts", format!("{} is outside 1..=10", n.max_attempts)));
    }
    let retry_backoff = within("notify.retry_backoff", &n.retry_backoff, BACKOFF_RANGE, "10ms..=10m")?;
    Ok(Some(NotifyConfig { webhook, secret, timeout, max_attempts: n.max_attempts, retry_backoff }))
}

fn within(
    key: &str,
    raw: &str,
    range: std::ops::RangeInclusive<Duration>,
    shown: &str,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(raw).map_err(|m| ConfigError::new(key, m))?;
    if !range.contains(&d) {
        return Err(ConfigError::new(key, format!("{} is outside {shown}", raw.trim())));
    }
    Ok(d)
}

/// `https://`, or `http://` to a loopback host (a receiver on this machine); no fragment. The
/// message never repeats the URL (its path or query may be a token).
fn webhook_url(raw: &str) -> Result<String, ConfigError> {
    let key = "notify.webhook";
    let url = url::Url::parse(raw.trim()).map_err(|e| ConfigError::new(key, format!("is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        _ => {
            return Err(ConfigError::new(
                key,
                "must be an https:// URL (http:// only to localhost): notices carry people's emails and IPs",
            ))
        }
    }
    if url.host().is_none() {
        return Err(ConfigError::new(key, "has no host"));
    }
    if url.fragment().is_some() {
        return Err(ConfigError::new(key, "must not have a #fragment"));
    }
    Ok(url.to_string())
}

/// Exactly one of `secret_file` (a file holding only the secret) and `secret_env` (the name of
/// an environment variable holding it); at least [`MIN_SECRET_LEN`] bytes once trimmed.
fn secret(n: &NotifyFile, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<WebhookSecret, ConfigError> {
    let (key, text) = match (&n.secret_file, &n.secret_env) {
        (Some(file), None) => {
            let key = "notify.secret_file";
            if file.trim().is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
            let path = base.join(file.trim());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
            (key, Zeroizing::new(text))
        }
        (None, Some(var)) => {
            let key = "notify.secret_env";
            let text = env(var.trim())
                .ok_or_else(|| ConfigError::new(key, format!("the environment variable {} is not set", var.trim())))?;
            (key, Zeroizing::new(text))
        }
        (None, None) => {
            return Err(ConfigError::new(
                "notify.secret_file",
                "is required with a webhook (or secret_env naming an environment variable): the key notices are \
                 signed with",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new("notify.secret_file", "set either secret_file or secret_env, not both"))
        }
    };
    let secret = text.trim();
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::new(
            key,
            format!(
                "the secret is {} bytes; use at least {MIN_SECRET_LEN} random bytes, e.g. from `openssl rand -hex 32`",
                secret.len()
            ),
        ));
    }
    Ok(WebhookSecret::new(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse_v(text: &str) -> Result<VigilanceConfig, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            vigilance: VigilanceFile,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| ConfigError::new("toml", e.to_string()))?;
        vigilance(doc.vigilance)
    }

    fn parse_n(text: &str, vars: &[(&str, &str)]) -> Result<Option<NotifyConfig>, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            notify: NotifyFile,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| ConfigError::new("toml", e.to_string()))?;
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        notify(doc.notify, Path::new("/nonexistent"), &env)
    }

    #[test]
    fn vigilance_defaults_and_limits() {
        assert_eq!(parse_v("").unwrap(), VigilanceConfig::default());
        let c = parse_v("[vigilance]\nlong_lived_after = \"90d\"\nusual_place_sign_ins = 3\nremember_devices = 20\n")
            .unwrap();
        assert_eq!(c.long_lived_after, Duration::from_secs(90 * 86_400));
        assert_eq!((c.usual_place_sign_ins, c.remember_devices, c.remember_places), (3, 20, 50));
        for (text, key) in [
            ("long_lived_after = \"12h\"", "vigilance.long_lived_after"),
            ("long_lived_after = \"soon\"", "vigilance.long_lived_after"),
            ("usual_place_sign_ins = 0", "vigilance.usual_place_sign_ins"),
            ("remember_devices = 4", "vigilance.remember_devices"),
            ("remember_places = 501", "vigilance.remember_places"),
        ] {
            assert_eq!(parse_v(&format!("[vigilance]\n{text}\n")).unwrap_err().key, key, "{text}");
        }
    }

    #[test]
    fn notify_is_off_without_a_webhook() {
        assert_eq!(parse_n("", &[]).unwrap(), None);
        let err = parse_n("[notify]\nsecret_env = \"HOOK_SECRET\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "notify.webhook");
    }

    #[test]
    fn a_webhook_needs_https_and_a_long_enough_secret() {
        let ok = "[notify]\nwebhook = \"https://hooks.example.com/dalea?token=t0p\"\nsecret_env = \"HOOK_SECRET\"\n";
        let c = parse_n(ok, &[("HOOK_SECRET", &format!(" {SECRET}\n"))]).unwrap().expect("on");
        assert_eq!(c.webhook, "https://hooks.example.com/dalea?token=t0p");
        assert_eq!(c.secret.expose(), SECRET.as_bytes(), "trimmed");
        assert_eq!((c.timeout, c.max_attempts, c.retry_backoff), (Duration::from_secs(5), 5, Duration::from_secs(1)));
        let local = "[notify]\nwebhook = \"http://127.0.0.1:9/x\"\nsecret_env = \"S\"\nretry_backoff = \"10ms\"\n";
        assert!(parse_n(local, &[("S", SECRET)]).unwrap().is_some());
        for (text, key) in [
            ("webhook = \"http://hooks.example.com/\"\nsecret_env = \"S\"", "notify.webhook"),
            ("webhook = \"ftp://hooks.example.com/\"\nsecret_env = \"S\"", "notify.webhook"),
            ("webhook = \"not a url\"\nsecret_env = \"S\"", "notify.webhook"),
            ("webhook = \"https://h.example.com/#x\"\nsecret_env = \"S\"", "notify.webhook"),
            ("webhook = \"https://h.example.com/\"", "notify.secret_file"),
            ("webhook = \"https://h.example.com/\"\nsecret_env = \"UNSET\"", "notify.secret_env"),
            ("webhook = \"https://h.example.com/\"\nsecret_env = \"SHORT\"", "notify.secret_env"),
            ("webhook = \"https://h.example.com/\"\nsecret_env = \"S\"\nsecret_file = \"f\"", "notify.secret_file"),
            ("webhook = \"https://h.example.com/\"\nsecret_file = \"missing\"", "notify.secret_file"),
            ("webhook = \"https://h.example.com/\"\nsecret_env = \"S\"\ntimeout = \"2m\"", "notify.timeout"),
            ("webhook = \"https://h.example.com/\"\nsecret_env = \"S\"\nmax_attempts = 0", "notify.max_attempts"),
            ("webhook = \"https://h.example.com/\"\nsecret_env = \"S\"\nmax_attempts = 11", "notify.max_attempts"),
            (
                "webhook = \"https://h.example.com/\"\nsecret_env = \"S\"\nretry_backoff = \"1ms\"",
                "notify.retry_backoff",
            ),
        ] {
            let err = parse_n(&format!("[notify]\n{text}\n"), &[("S", SECRET), ("SHORT", "tooshort")]).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(!err.message.contains(SECRET), "{err}");
        }
    }

    #[test]
    fn the_secret_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.secret"), format!("{SECRET}\n")).unwrap();
        let f = NotifyFile {
            webhook: Some("https://hooks.example.com/".into()),
            secret_file: Some("hook.secret".into()),
            ..NotifyFile::default()
        };
        let c = notify(f, dir.path(), &|_: &str| None).unwrap().expect("on");
        assert_eq!(c.secret.expose(), SECRET.as_bytes());
    }

    #[test]
    fn debug_shows_neither_the_secret_nor_the_webhook_path() {
        let c = NotifyConfig {
            webhook: "https://hooks.example.com/T0KEN/x?sig=abc".into(),
            secret: WebhookSecret::new(SECRET),
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            retry_backoff: Duration::from_secs(1),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        for hidden in [SECRET, "T0KEN", "sig=abc"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
    }
}
