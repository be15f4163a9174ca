//! Checks a parsed [`FileConfig`] and turns it into the internal [`Config`] (upstreams and
//! routes are checked in `routing.rs`, `[store]` in `store.rs`).
//!
//! The first problem found wins, as a [`ConfigError`] whose key is the exact dotted key
//! (`session.idle_timeout`, `routes[2].upstream`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::duration::{format_duration, parse_duration};
use super::file::{ClientInfoFile, FileConfig, ServerFile, SessionFile};
use super::oauth::oauth;
use super::passkeys::passkeys;
use super::routing::{routes, upstreams};
use super::security::{elevation, rate_limit, secrets};
use super::store::store;
use super::vigilance::{notify, vigilance};
use super::*;

const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
const FORM_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024;
const MIN_FLUSH: Duration = Duration::from_millis(100);
const MAX_FLUSH: Duration = Duration::from_secs(10);

impl FileConfig {
    /// Validates everything; relative paths are resolved against `base` (the config file's
    /// directory); `overrides` replace what they name.
    pub(super) fn into_config(self, base: &Path, o: &Overrides) -> Result<Config, ConfigError> {
        let server = server(self.server, o)?;
        let store = store(self.store, base, o)?;
        let session = session(self.session)?;
        let client_info = client_info(self.client_info, base)?;
        let upstreams = upstreams(self.upstreams)?;
        let routes = routes(self.routes, &upstreams)?;
        let file = self
            .users
            .and_then(|u| u.file)
            .ok_or_else(|| ConfigError::new("users.file", "is required: the TOML file of people who may sign in"))?;
        let file = non_empty("users.file", &file).map(|f| base.join(f))?;
        let elevation = elevation(self.elevation)?;
        let rate_limit = rate_limit(self.rate_limit)?;
        let secrets = secrets(self.secrets, base, store.kind, &store.path)?;
        let oauth = oauth(self.oauth, base)?;
        let passkeys = passkeys(self.passkeys)?;
        let vigilance = vigilance(self.vigilance)?;
        let notify = notify(self.notify, base, &|var: &str| std::env::var(var).ok())?;
        Ok(Config {
            server,
            store,
            session,
            client_info,
            upstreams,
            routes,
            users: UsersConfig { file, set_by: None },
            elevation,
            rate_limit,
            secrets,
            oauth,
            passkeys,
            vigilance,
            notify,
        })
    }
}

fn server(s: ServerFile, o: &Overrides) -> Result<ServerConfig, ConfigError> {
    let listen = match o.listen {
        Some(addr) => addr,
        None => socket_addr("server.listen", &s.listen)?,
    };
    let admin_listen = match o.admin_listen {
        Some(addr) => addr,
        None => socket_addr("server.admin_listen", &s.admin_listen)?,
    };
    let key = "server.shutdown_grace_period";
    let shutdown_grace_period = duration(key, &s.shutdown_grace_period)?;
    if shutdown_grace_period > MAX_SHUTDOWN_GRACE {
        return Err(ConfigError::new(
            key,
            format!("{} is longer than the 60s maximum", s.shutdown_grace_period.trim()),
        ));
    }
    let threads = match s.threads {
        Some(0) => return Err(ConfigError::new("server.threads", "must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if !FORM_BYTES_RANGE.contains(&s.max_form_bytes) {
        return Err(ConfigError::new(
            "server.max_form_bytes",
            format!("{} is outside {}..={}", s.max_form_bytes, FORM_BYTES_RANGE.start(), FORM_BYTES_RANGE.end()),
        ));
    }
    Ok(ServerConfig { listen, admin_listen, shutdown_grace_period, threads, max_form_bytes: s.max_form_bytes })
}

fn session(s: SessionFile) -> Result<SessionConfig, ConfigError> {
    let idle_timeout = positive_duration("session.idle_timeout", &s.idle_timeout)?;
    if idle_timeout > MAX_IDLE_TIMEOUT {
        return Err(ConfigError::new(
            "session.idle_timeout",
            format!(
                "{} is longer than the 30-day maximum idle timeout; sessions idle for 30 days must end",
                s.idle_timeout.trim()
            ),
        ));
    }
    let absolute_timeout = duration("session.absolute_timeout", &s.absolute_timeout)?;
    if absolute_timeout < idle_timeout {
        return Err(ConfigError::new(
            "session.absolute_timeout",
            format!(
                "{} is shorter than session.idle_timeout ({}); the absolute lifetime must be at least the idle timeout",
                s.absolute_timeout.trim(),
                format_duration(idle_timeout)
            ),
        ));
    }
    cookie_name(&s.cookie_name)?;
    let key = "session.activity_flush_interval";
    let activity_flush_interval = duration(key, &s.activity_flush_interval)?;
    if !(MIN_FLUSH..=MAX_FLUSH).contains(&activity_flush_interval) {
        return Err(ConfigError::new(key, format!("{} is outside 100ms..=10s", s.activity_flush_interval.trim())));
    }
    let sweep_interval = positive_duration("session.sweep_interval", &s.sweep_interval)?;
    Ok(SessionConfig {
        idle_timeout,
        absolute_timeout,
        cookie_name: s.cookie_name,
        cookie_secure: s.cookie_secure,
        activity_flush_interval,
        sweep_interval,
    })
}

fn cookie_name(name: &str) -> Result<(), ConfigError> {
    let key = "session.cookie_name";
    if name.is_empty() || name.len() > 64 {
        return Err(ConfigError::new(key, format!("{name:?} must be 1 to 64 characters long")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(ConfigError::new(key, format!("{name:?} contains {c:?}; use only A-Z, a-z, 0-9, _ and -")));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("__host-") || lower.starts_with("__secure-") {
        return Err(ConfigError::new(
            key,
            format!("{name:?} must not carry a cookie prefix; __Host- is added when cookie_secure is true"),
        ));
    }
    Ok(())
}

fn client_info(c: ClientInfoFile, base: &Path) -> Result<ClientInfoConfig, ConfigError> {
    let mut trusted_proxies = Vec::with_capacity(c.trusted_proxies.len());
    for (i, raw) in c.trusted_proxies.iter().enumerate() {
        let text = raw.trim();
        let net = text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
            ConfigError::new(
                format!("client_info.trusted_proxies[{i}]"),
                format!("{raw:?} is neither a CIDR range (10.0.0.0/8) nor an IP address"),
            )
        })?;
        if net.trunc() != net {
            return Err(ConfigError::new(
                format!("client_info.trusted_proxies[{i}]"),
                format!(
                    "{raw:?} has host bits set after the /{len}: write the network \"{network}\" \
                     to trust that whole range, or the bare IP \"{ip}\" to trust only that one \
                     address",
                    len = net.prefix_len(),
                    network = net.trunc(),
                    ip = net.addr(),
                ),
            ));
        }
        trusted_proxies.push(net);
    }
    let geoip_database = match c.geoip_database {
        None => None,
        Some(raw) => {
            let key = "client_info.geoip_database";
            let path = base.join(non_empty(key, &raw)?);
            // An optional database is checked when the gateway starts (and skipped then if bad).
            if !path.is_file() && !c.geoip_optional {
                let why = if path.exists() { "it is not a file" } else { "no such file" };
                return Err(ConfigError::new(key, format!("cannot open GeoIP database {}: {why}", path.display())));
            }
            Some(path)
        }
    };
    Ok(ClientInfoConfig { trusted_proxies, geoip_database, geoip_optional: c.geoip_optional })
}

fn non_empty<'a>(key: &str, raw: &'a str) -> Result<&'a str, ConfigError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(trimmed)
}

fn socket_addr(key: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.trim().parse().map_err(|_| ConfigError::new(key, format!("{raw:?} is not an IP:port socket address")))
}

fn duration(key: &str, raw: &str) -> Result<Duration, ConfigError> {
    parse_duration(raw).map_err(|msg| ConfigError::new(key, msg))
}

pub(super) fn positive_duration(key: &str, raw: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, raw)?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(d)
}
