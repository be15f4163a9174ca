//! The TOML file format (serde, unknown keys rejected) and its conversion into `Config`.
//!
//! These structs mirror the file one to one and hold raw values (duration strings, addresses
//! as text); `validate.rs` checks them and builds the internal [`super::Config`]. Defaults live
//! here so the file, `config/gateway.example.toml` and the docs agree. Duration fields go
//! through [`duration_text`] so a bare number gets a message about the missing unit.

use serde::Deserialize;

use super::duration::deserialize_text as duration_text;
use super::oauth::OAuthFile;
use super::passkeys::PasskeysFile;
use super::security::{ElevationFile, RateLimitFile, SecretsFile};
use super::store::StoreFile;
use super::vigilance::{NotifyFile, VigilanceFile};
use super::ConfigError;

/// The whole file. Every section but `[users]` may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: ServerFile,
    #[serde(default)]
    pub(super) store: StoreFile,
    #[serde(default)]
    pub(super) session: SessionFile,
    #[serde(default)]
    pub(super) client_info: ClientInfoFile,
    #[serde(default)]
    pub(super) upstreams: Vec<UpstreamFile>,
    #[serde(default)]
    pub(super) routes: Vec<RouteFile>,
    #[serde(default)]
    pub(super) elevation: ElevationFile,
    #[serde(default)]
    pub(super) rate_limit: RateLimitFile,
    #[serde(default)]
    pub(super) secrets: SecretsFile,
    #[serde(default)]
    pub(super) oauth: OAuthFile,
    #[serde(default)]
    pub(super) passkeys: PasskeysFile,
    #[serde(default)]
    pub(super) vigilance: VigilanceFile,
    #[serde(default)]
    pub(super) notify: NotifyFile,
    /// Required; `None` is reported by validation as `users.file`.
    pub(super) users: Option<UsersFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServerFile {
    pub(super) listen: String,
    pub(super) admin_listen: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) shutdown_grace_period: String,
    /// `None` → the number of CPUs.
    pub(super) threads: Option<usize>,
    pub(super) max_form_bytes: usize,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            shutdown_grace_period: "5s".into(),
            threads: None,
            max_form_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SessionFile {
    #[serde(deserialize_with = "duration_text")]
    pub(super) idle_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) absolute_timeout: String,
    pub(super) cookie_name: String,
    pub(super) cookie_secure: bool,
    #[serde(deserialize_with = "duration_text")]
    pub(super) activity_flush_interval: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) sweep_interval: String,
}

impl Default for SessionFile {
    fn default() -> Self {
        SessionFile {
            idle_timeout: "30d".into(),
            absolute_timeout: "90d".into(),
            cookie_name: "dalea_session".into(),
            cookie_secure: true,
            activity_flush_interval: "1s".into(),
            sweep_interval: "5m".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ClientInfoFile {
    pub(super) trusted_proxies: Vec<String>,
    pub(super) geoip_database: Option<String>,
    pub(super) geoip_optional: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum BuiltinFile {
    Whoami,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamFile {
    /// Required; checked by validation so the error names `upstreams[i].name`.
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) address: Option<String>,
    #[serde(default)]
    pub(super) builtin: Option<BuiltinFile>,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration_text")]
    pub(super) connect_timeout: String,
    #[serde(default = "default_read_timeout", deserialize_with = "duration_text")]
    pub(super) read_timeout: String,
}

fn default_connect_timeout() -> String {
    "3s".into()
}

fn default_read_timeout() -> String {
    "60s".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum AccessFile {
    Public,
    #[default]
    Session,
    Elevated,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) host: Option<String>,
    #[serde(default = "default_path_prefix")]
    pub(super) path_prefix: String,
    /// Required; checked by validation so the error names `routes[i].upstream`.
    #[serde(default)]
    pub(super) upstream: Option<String>,
    #[serde(default)]
    pub(super) access: AccessFile,
    /// HTTP methods this route applies to (empty: all). `GET` includes `HEAD`.
    #[serde(default)]
    pub(super) methods: Vec<String>,
    /// Whether `Authorization: Bearer <API key>` is accepted here.
    #[serde(default)]
    pub(super) api_keys: bool,
}

fn default_path_prefix() -> String {
    "/".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsersFile {
    /// Required (no default); checked by validation.
    #[serde(default)]
    pub(super) file: Option<String>,
}

impl FileConfig {
    /// Deserialises the (environment-overlaid) table; a type error or unknown key comes back
    /// with its dotted path, e.g. `session.cookie_nmae`.
    pub(super) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
            let path = err.path().to_string();
            let key = if path == "." { "config".to_string() } else { path };
            ConfigError::new(key, err.inner().message())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::from_table(toml::from_str(text).unwrap())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let f = parse("").unwrap();
        assert_eq!(f.server.listen, "127.0.0.1:8080");
        assert_eq!(f.session.idle_timeout, "30d");
        assert!(f.session.cookie_secure);
        assert!(f.users.is_none());
        assert!(f.upstreams.is_empty());
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let err = parse("[session]\ncookie_nmae = \"x\"\n").unwrap_err();
        assert_eq!(err.key, "session.cookie_nmae");
        assert!(err.message.starts_with("unknown field `cookie_nmae`"), "{err}");

        let err = parse("[sesion]\n").unwrap_err();
        assert_eq!(err.key, "sesion");

        let text = "[[routes]]\nupstream = \"a\"\n[[routes]]\nupstrem = \"a\"\n";
        assert_eq!(parse(text).unwrap_err().key, "routes[1].upstrem");
    }

    #[test]
    fn type_errors_name_their_path() {
        assert_eq!(parse("[server]\nthreads = \"two\"\n").unwrap_err().key, "server.threads");
        assert_eq!(parse("[server]\nthreads = -1\n").unwrap_err().key, "server.threads");
        assert_eq!(parse("[store]\nkind = \"postgres\"\n").unwrap_err().key, "store.kind");
        let err = parse("[[upstreams]]\nname = \"a\"\nbuiltin = \"echo\"\n").unwrap_err();
        assert_eq!(err.key, "upstreams[0].builtin");
        let err = parse("[[routes]]\naccess = \"admin\"\n").unwrap_err();
        assert_eq!(err.key, "routes[0].access");
        assert!(err.message.contains("public"), "{err}");
    }

    #[test]
    fn a_bare_number_as_duration_asks_for_a_unit() {
        let err = parse("[session]\nidle_timeout = 604800\n").unwrap_err();
        assert_eq!(err.key, "session.idle_timeout");
        assert_eq!(
            err.message,
            "expected a duration such as \"30d\", \"12h\" or \"90s\", got the number 604800 \
             (add a unit: if seconds were meant, write \"604800s\", the same as \"1w\")"
        );
        let err = parse("[server]\nshutdown_grace_period = 5\n").unwrap_err();
        assert_eq!(err.key, "server.shutdown_grace_period");
        assert!(err.message.ends_with("write \"5s\")"), "{err}");
        let err = parse("[[upstreams]]\nname = \"a\"\nconnect_timeout = 1.5\n").unwrap_err();
        assert_eq!(err.key, "upstreams[0].connect_timeout");
        assert!(err.message.contains("got the number 1.5"), "{err}");
        assert!(err.message.contains("fractions are not supported"), "{err}");
        let err = parse("[[upstreams]]\nname = \"a\"\nread_timeout = -5\n").unwrap_err();
        assert_eq!(err.key, "upstreams[0].read_timeout");
        assert!(err.message.contains("cannot be negative"), "{err}");
        let err = parse("[session]\nsweep_interval = true\n").unwrap_err();
        assert_eq!(err.key, "session.sweep_interval");
        assert!(err.message.contains("expected a duration such as"), "{err}");
        // Strings still pass through untouched, to be checked by validation.
        let f = parse("[session]\nabsolute_timeout = \"1h30m\"\n").unwrap();
        assert_eq!(f.session.absolute_timeout, "1h30m");
    }
}
