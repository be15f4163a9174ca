//! Validated gateway configuration: what every other module reads, built once at start-up.
//!
//! The TOML file format lives in `file.rs` (checked and converted in `validate.rs` and
//! `routing.rs`; the `[store]` section's structs and checks in `store.rs`), the
//! `DALEA__SECTION__KEY` environment overlay in `env.rs`, duration strings ("30d") in
//! `duration.rs`; `config/gateway.example.toml` documents every key. `load` turns file +
//! environment + CLI flags into this internal [`Config`], or a [`ConfigError`] naming the exact
//! key and why.

mod duration;
mod env;
mod file;
mod oauth;
mod passkeys;
mod routing;
mod security;
mod store;
#[cfg(test)]
mod tests;
mod validate;
mod vigilance;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use duration::{format_duration, parse_duration};
pub use oauth::{is_loopback, ClientSecret, OAuthConfig, ProviderConfig, ProviderKind, UnknownPeople};
pub use passkeys::{PasskeysConfig, DEFAULT_RP_NAME};
pub use security::{check_key, ElevationConfig, KeySource, RateLimitConfig, GENERATED_KEY_FILE};
pub use vigilance::{NotifyConfig, VigilanceConfig, WebhookSecret};

/// The hard cap on `session.idle_timeout` from the product contract: 30 idle days.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub session: SessionConfig,
    pub client_info: ClientInfoConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub users: UsersConfig,
    pub elevation: ElevationConfig,
    pub rate_limit: RateLimitConfig,
    /// The key that encrypts TOTP secrets at rest.
    pub secrets: KeySource,
    /// Sign-in through Google, Microsoft, GitHub and OpenID Connect providers.
    pub oauth: OAuthConfig,
    /// Passkeys (WebAuthn): `None` when `[passkeys] origin` is not set (passkeys are off).
    pub passkeys: Option<PasskeysConfig>,
    /// The warning flags on the sessions list.
    pub vigilance: VigilanceConfig,
    /// The sign-in notice webhook: `None` when `[notify] webhook` is not set.
    pub notify: Option<NotifyConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Public listener (plain HTTP; TLS terminates in front of the gateway for now).
    pub listen: SocketAddr,
    /// Admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// How long SIGTERM waits for in-flight requests before the process exits.
    pub shutdown_grace_period: Duration,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Largest request body the built-in endpoints accept (forms, JSON); bigger → 413.
    pub max_form_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Redis,
}

/// How the gateway reaches Redis.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// One server: `redis://[user:pass@]host:port/db` or `rediss://…`.
    Standalone { url: String },
    /// Redis Cluster, discovered from these seed node URLs.
    Cluster { nodes: Vec<String> },
    /// A Sentinel-managed primary: the master name and the sentinels' URLs.
    Sentinel { master: String, sentinels: Vec<String> },
}

impl std::fmt::Debug for RedisMode {
    // URLs may carry passwords: show hosts only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |u: &String| store::redact_url(u);
        match self {
            RedisMode::Standalone { url } => f.debug_struct("Standalone").field("url", &hide(url)).finish(),
            RedisMode::Cluster { nodes } => {
                f.debug_struct("Cluster").field("nodes", &nodes.iter().map(hide).collect::<Vec<_>>()).finish()
            }
            RedisMode::Sentinel { master, sentinels } => f
                .debug_struct("Sentinel")
                .field("master", master)
                .field("sentinels", &sentinels.iter().map(hide).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// The Redis store's settings (when `store.kind = "redis"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub mode: RedisMode,
    /// Prefix of every key and channel, so several gateways can share one Redis.
    pub key_prefix: String,
    /// How long any Redis call may take before the request gets 503.
    pub timeout: Duration,
    /// How long a session already in the local cache keeps working while Redis is unreachable.
    pub outage_grace: Duration,
    /// PEM file of CA certificates that verify `rediss://` servers instead of the system roots
    /// (`[store] tls_ca_file`, resolved against the config file's directory).
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Directory of the embedded store (created when missing).
    pub path: PathBuf,
    /// Present exactly when `kind` is `Redis`.
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session unused for this long is over. Never more than [`MAX_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// Hard maximum age of any session, however active.
    pub absolute_timeout: Duration,
    /// Cookie name without prefix; `__Host-` is prepended when `cookie_secure`.
    pub cookie_name: String,
    /// `Secure` + `__Host-` cookies. False only for plain-HTTP development.
    pub cookie_secure: bool,
    /// How often buffered last-active/IP updates are written to the store.
    pub activity_flush_interval: Duration,
    /// How often expired sessions are swept from the store.
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ClientInfoConfig {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// MaxMind City/Country database for approximate locations.
    pub geoip_database: Option<PathBuf>,
    /// A database that is missing or does not load is logged and the gateway runs without
    /// locations, instead of refusing to start.
    pub geoip_optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// A real server, resolved once at start-up (pingora must not resolve DNS per request).
    Address(SocketAddr),
    /// The built-in "whoami" demo app, started by the gateway on a free loopback port.
    Whoami,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub target: UpstreamTarget,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// What a route needs before a request may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; identity headers are still stripped.
    Public,
    /// A valid session.
    Session,
    /// A session re-authenticated within `elevation.max_age` (TOTP, or the password for people
    /// with no second factor).
    Elevated,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Session => "session",
            Access::Elevated => "elevated",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Bounded label for logs and metrics; defaults to `route<N>`.
    pub name: String,
    /// Exact host (lower case, no port) or `None` for any host.
    pub host: Option<String>,
    /// Path prefix, always starting with `/`.
    pub path_prefix: String,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub access: Access,
    /// Methods the route applies to; empty: every method. `GET` includes `HEAD`.
    pub methods: Vec<http::Method>,
    /// API keys (`Authorization: Bearer dalea_…`) are accepted (never on elevated routes).
    pub api_keys: bool,
}

#[derive(Debug, Clone)]
pub struct UsersConfig {
    /// TOML file with `[[users]]` entries (resolved relative to the config file).
    pub file: PathBuf,
    /// The environment variable that set `file` (`DALEA__USERS__FILE`), if one did.
    pub set_by: Option<String>,
}

impl UsersConfig {
    /// `message` (about loading [`UsersConfig::file`]) with " (set by DALEA__USERS__FILE)"
    /// appended when the path came from the environment, as config errors about
    /// environment-set keys have it.
    pub fn annotate(&self, message: impl std::fmt::Display) -> String {
        match &self.set_by {
            Some(var) => format!("{message} (set by {var})"),
            None => message.to_string(),
        }
    }
}

/// Command-line flags that beat the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// Replaces `[store] path`.
    pub data_dir: Option<PathBuf>,
}

/// A configuration problem, naming the key (`session.idle_timeout`) and, when it came from the
/// environment, the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

impl Config {
    /// Loads `path` exactly as `serve` does: file, then `DALEA__*` from the process
    /// environment, then `overrides`, then validation.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let vars = env::process_vars()?;
        Self::from_toml_str(&text, base, &vars, overrides)
    }

    /// Same as [`Config::load`] with the file text, base directory and environment given.
    pub fn from_toml_str(
        text: &str,
        base_dir: &Path,
        env_vars: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::new("config", format!("not valid TOML: {e}")))?;
        let from_env = env::overlay(&mut value, env_vars)?;
        let mut config = file::FileConfig::from_table(value)
            .and_then(|parsed| parsed.into_config(base_dir, overrides))
            .map_err(|e| from_env.annotate(e))?;
        config.users.set_by = from_env.var_for("users.file").map(str::to_string);
        Ok(config)
    }
}
