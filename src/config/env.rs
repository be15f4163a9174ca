//! The `DALEA__SECTION__KEY` environment overlay.
//!
//! Each `DALEA__<SECTION>__<KEY>` variable sets `section.key` in the parsed TOML table before
//! deserialisation, so the environment beats the file. Values are typed by [`SCHEMA`]; only the
//! single-table sections can be set this way (`[[upstreams]]` and `[[routes]]` are file-only).

use std::collections::BTreeMap;

use super::ConfigError;

const PREFIX: &str = "DALEA__";

/// How an environment value is turned into a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
    /// Comma-separated; items trimmed, empty items dropped.
    StrList,
}

/// Every key the environment may set. Keep in step with the structs in `file.rs` (a test checks
/// that each entry is a known key there).
const SCHEMA: &[(&str, &str, Kind)] = &[
    ("server", "listen", Kind::Str),
    ("server", "admin_listen", Kind::Str),
    ("server", "shutdown_grace_period", Kind::Str),
    ("server", "threads", Kind::Int),
    ("server", "max_form_bytes", Kind::Int),
    ("store", "kind", Kind::Str),
    ("store", "path", Kind::Str),
    ("store", "url", Kind::Str),
    ("store", "cluster", Kind::StrList),
    ("store", "sentinel_master", Kind::Str),
    ("store", "sentinels", Kind::StrList),
    ("store", "key_prefix", Kind::Str),
    ("store", "timeout", Kind::Str),
    ("store", "outage_grace", Kind::Str),
    ("store", "tls_ca_file", Kind::Str),
    ("session", "idle_timeout", Kind::Str),
    ("session", "absolute_timeout", Kind::Str),
    ("session", "cookie_name", Kind::Str),
    ("session", "cookie_secure", Kind::Bool),
    ("session", "activity_flush_interval", Kind::Str),
    ("session", "sweep_interval", Kind::Str),
    ("client_info", "trusted_proxies", Kind::StrList),
    ("client_info", "geoip_database", Kind::Str),
    ("client_info", "geoip_optional", Kind::Bool),
    ("users", "file", Kind::Str),
    ("elevation", "max_age", Kind::Str),
    ("rate_limit", "window", Kind::Str),
    ("rate_limit", "signin_per_account", Kind::Int),
    ("rate_limit", "signin_per_network", Kind::Int),
    ("rate_limit", "totp_per_account", Kind::Int),
    ("rate_limit", "totp_per_network", Kind::Int),
    ("rate_limit", "signin_starts_per_network", Kind::Int),
    ("secrets", "encryption_key", Kind::Str),
    ("secrets", "encryption_key_file", Kind::Str),
    ("oauth", "public_url", Kind::Str),
    ("oauth", "link_by_verified_email", Kind::Bool),
    ("oauth", "unknown_people", Kind::Str),
    ("oauth", "allowed_domains", Kind::StrList),
    ("oauth", "allowed_emails", Kind::StrList),
    ("passkeys", "origin", Kind::Str),
    ("passkeys", "rp_id", Kind::Str),
    ("passkeys", "rp_name", Kind::Str),
    ("vigilance", "long_lived_after", Kind::Str),
    ("vigilance", "usual_place_sign_ins", Kind::Int),
    ("vigilance", "remember_devices", Kind::Int),
    ("vigilance", "remember_places", Kind::Int),
    ("notify", "webhook", Kind::Str),
    ("notify", "secret_file", Kind::Str),
    ("notify", "secret_env", Kind::Str),
    ("notify", "timeout", Kind::Str),
    ("notify", "max_attempts", Kind::Int),
    ("notify", "retry_backoff", Kind::Str),
];

/// Sections that are arrays of tables and therefore cannot be set from the environment.
const FILE_ONLY: &[&str] = &["upstreams", "routes"];

/// The dotted keys the environment set, each with the variable that set it.
#[derive(Debug, Clone, Default)]
pub(super) struct EnvKeys(BTreeMap<String, String>);

impl EnvKeys {
    /// Appends " (set by DALEA__…)" when `err` is about a key that came from the environment
    /// (or an item inside it, like `client_info.trusted_proxies[1]`).
    pub(super) fn annotate(&self, mut err: ConfigError) -> ConfigError {
        let var = self.0.iter().find(|(key, _)| {
            err.key == **key || err.key.strip_prefix(key.as_str()).is_some_and(|r| r.starts_with(['[', '.']))
        });
        if let Some((_, var)) = var {
            if !err.message.contains(var.as_str()) {
                err.message.push_str(&format!(" (set by {var})"));
            }
        }
        err
    }

    /// The variable that set `key`, if the environment set it.
    pub(super) fn var_for(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// The process environment, as `overlay` wants it. Unlike `std::env::vars` this does not panic
/// on a variable that is not UTF-8: such a variable is skipped, or an error when it is ours.
pub(super) fn process_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        match value.into_string() {
            Ok(value) => vars.push((name.to_string(), value)),
            Err(_) if name.starts_with(PREFIX) => {
                return Err(ConfigError::new("config", format!("{name} is not valid UTF-8")));
            }
            Err(_) => {}
        }
    }
    Ok(vars)
}

/// Applies every `DALEA__*` variable of `vars` to `table`, in name order.
pub(super) fn overlay(table: &mut toml::Table, vars: &[(String, String)]) -> Result<EnvKeys, ConfigError> {
    let mut ours: Vec<&(String, String)> = vars.iter().filter(|(name, _)| name.starts_with(PREFIX)).collect();
    ours.sort();
    let mut keys = EnvKeys::default();
    for (name, raw) in ours {
        let (section, key, kind) = lookup(name)?;
        let dotted = format!("{section}.{key}");
        let value = convert(kind, raw).map_err(|why| ConfigError::new(&dotted, format!("{name}={raw:?} {why}")))?;
        let entry = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::new(section, format!("must be a table ([{section}]) for {name} to set {dotted}")));
        };
        section_table.insert(key.to_string(), value);
        keys.0.insert(dotted, name.clone());
    }
    Ok(keys)
}

/// Finds the schema entry for a variable name, or says why there is none.
fn lookup(name: &str) -> Result<(&'static str, &'static str, Kind), ConfigError> {
    let rest = name.strip_prefix(PREFIX).unwrap_or(name);
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let dotted = parts.join(".");
    if let Some(section) = FILE_ONLY.iter().find(|s| parts.first().is_some_and(|p| p == *s)) {
        return Err(ConfigError::new(
            *section,
            format!(
                "{name} cannot be used: [[{section}]] is an array of tables, and arrays of tables \
                 can only be set in the config file"
            ),
        ));
    }
    let [section, key] = parts.as_slice() else {
        return Err(ConfigError::new(
            dotted,
            format!("{name} is not of the form DALEA__<SECTION>__<KEY> (e.g. DALEA__SESSION__IDLE_TIMEOUT)"),
        ));
    };
    if let Some(&(s, k, kind)) = SCHEMA.iter().find(|(s, k, _)| s == section && k == key) {
        return Ok((s, k, kind));
    }
    let message = if SCHEMA.iter().any(|(s, _, _)| s == section) {
        let known: Vec<&str> = SCHEMA.iter().filter(|(s, _, _)| s == section).map(|(_, k, _)| *k).collect();
        format!("{name} names an unknown key; [{section}] has {}", known.join(", "))
    } else {
        let mut sections: Vec<&str> = SCHEMA.iter().map(|(s, _, _)| *s).collect();
        sections.dedup();
        format!("{name} names an unknown section; sections settable from the environment are {}", sections.join(", "))
    };
    Err(ConfigError::new(dotted, message))
}

fn convert(kind: Kind, raw: &str) -> Result<toml::Value, String> {
    match kind {
        Kind::Str => Ok(toml::Value::String(raw.to_string())),
        Kind::Bool => match raw.trim() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err("is not true or false".into()),
        },
        Kind::Int => raw.trim().parse::<i64>().map(toml::Value::Integer).map_err(|_| "is not an integer".into()),
        Kind::StrList => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_string()))
                .collect(),
        )),
    }
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
