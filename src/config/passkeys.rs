//! The `[passkeys]` section: the WebAuthn relying party the gateway is to browsers.
//!
//! Passkeys are off unless `origin` is set. WebAuthn works only in a secure context and binds
//! every credential to the RP id (a domain), so the origin must be `https://<domain>[:port]`, or
//! `http://localhost[:port]` for development (the one plain-HTTP host browsers allow passkeys
//! on); an IP address cannot be an RP id. The RP id defaults to the origin's host and may be a parent domain of it (credentials
//! then work on every subdomain of it); changing it later makes every registered passkey unusable.

use serde::Deserialize;

use super::ConfigError;

/// The `rp_name` shown by authenticators when none is configured.
pub const DEFAULT_RP_NAME: &str = "Dalea Gateway";
/// The longest `rp_name`, in characters.
const MAX_RP_NAME_CHARS: usize = 64;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PasskeysFile {
    pub(super) origin: Option<String>,
    pub(super) rp_id: Option<String>,
    pub(super) rp_name: Option<String>,
}

/// Passkeys (WebAuthn) settings; `Config::passkeys` is `None` when passkeys are off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeysConfig {
    /// The origin people's browsers are on, normalised: `scheme://host[:port]`, lower-case host,
    /// no default port, no trailing slash (`https://app.example.com`).
    pub origin: String,
    /// The relying party id: the origin's host or a parent domain of it, lower case.
    pub rp_id: String,
    /// The name authenticators show for the site.
    pub rp_name: String,
}

pub(super) fn passkeys(f: PasskeysFile) -> Result<Option<PasskeysConfig>, ConfigError> {
    let Some(raw) = f.origin else {
        if f.rp_id.is_some() || f.rp_name.is_some() {
            return Err(ConfigError::new(
                "passkeys.origin",
                "is required with rp_id or rp_name: the origin people's browsers use (e.g. \"https://app.example.com\")",
            ));
        }
        return Ok(None);
    };
    let (origin, host) = origin(&raw)?;
    let rp_id = match f.rp_id {
        Some(id) => rp_id(&id, &host)?,
        None => host,
    };
    let rp_name = match f.rp_name {
        Some(name) => rp_name(&name)?,
        None => DEFAULT_RP_NAME.to_string(),
    };
    Ok(Some(PasskeysConfig { origin, rp_id, rp_name }))
}

/// The normalised origin and its host.
fn origin(raw: &str) -> Result<(String, String), ConfigError> {
    let key = "passkeys.origin";
    let url = url::Url::parse(raw.trim())
        .map_err(|e| ConfigError::new(key, format!("{raw:?} is not a URL such as \"https://app.example.com\": {e}")))?;
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
            return Err(ConfigError::new(
                key,
                format!(
                    "{raw:?} has an IP address: passkeys are bound to a domain name (for development use \
                     \"http://localhost:<port>\")"
                ),
            ))
        }
        None => return Err(ConfigError::new(key, format!("{raw:?} has no host"))),
    };
    match url.scheme() {
        "https" => {}
        "http" if host == "localhost" => {}
        _ => {
            return Err(ConfigError::new(
                key,
                format!(
                    "{raw:?} must be https:// (or http://localhost for development): browsers offer passkeys \
                     only to secure pages"
                ),
            ))
        }
    }
    if host.ends_with('.') {
        return Err(ConfigError::new(key, format!("{raw:?}: write the host without a trailing dot")));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ConfigError::new(key, format!("{raw:?} must be an origin only: scheme, host and port, no path")));
    }
    Ok((url.origin().ascii_serialization(), host))
}

/// `raw` (trimmed, lower case) if it is `host` or a parent domain of it with at least two labels.
fn rp_id(raw: &str, host: &str) -> Result<String, ConfigError> {
    let key = "passkeys.rp_id";
    let id = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if id == host {
        return Ok(id);
    }
    let parent = !id.is_empty() && host.strip_suffix(id.as_str()).is_some_and(|rest| rest.ends_with('.'));
    if !parent {
        return Err(ConfigError::new(
            key,
            format!("{raw:?} must be the origin's host {host:?} or a parent domain of it (e.g. \"example.com\")"),
        ));
    }
    // Browsers refuse public suffixes (`com`, `co.uk`); without the public suffix list only
    // the single-label ones are caught here.
    if !id.contains('.') || id.starts_with('.') || id.contains("..") {
        return Err(ConfigError::new(key, format!("{raw:?} is a top-level domain, which cannot be an RP id")));
    }
    Ok(id)
}

fn rp_name(raw: &str) -> Result<String, ConfigError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_RP_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ConfigError::new(
            "passkeys.rp_name",
            format!("{raw:?} must be 1 to {MAX_RP_NAME_CHARS} characters, without control characters"),
        ));
    }
    Ok(name.to_string())
}
