//! Checks `[[upstreams]]` and `[[routes]]`: names, targets, hosts, prefixes, references, and
//! that no route is shadowed by an earlier one with the same host and prefix.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};

use super::file::{AccessFile, BuiltinFile, RouteFile, UpstreamFile};
use super::validate::positive_duration;
use super::*;

/// Built-in pages and API live here; no route may shadow them.
const RESERVED_PREFIX: &str = "/.dalea";

pub(super) fn upstreams(list: Vec<UpstreamFile>) -> Result<Vec<UpstreamConfig>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new("upstreams", "at least one [[upstreams]] entry is required"));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, u) in list.into_iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        let name = u.name.ok_or_else(|| ConfigError::new(key("name"), "is required"))?;
        slug(&key("name"), &name)?;
        if !seen.insert(name.clone()) {
            return Err(ConfigError::new(
                key("name"),
                format!("{name:?} is used by an earlier upstream; names must be unique"),
            ));
        }
        let target = match (u.address, u.builtin) {
            (Some(addr), None) => UpstreamTarget::Address(resolve(&key("address"), &addr)?),
            (None, Some(BuiltinFile::Whoami)) => UpstreamTarget::Whoami,
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(key("address"), "set either address or builtin, not both"))
            }
            (None, None) => return Err(ConfigError::new(key("address"), "is required (or builtin = \"whoami\")")),
        };
        let connect_timeout = positive_duration(&key("connect_timeout"), &u.connect_timeout)?;
        let read_timeout = positive_duration(&key("read_timeout"), &u.read_timeout)?;
        out.push(UpstreamConfig { name, target, connect_timeout, read_timeout });
    }
    Ok(out)
}

/// A route already placed on a host + prefix: its index and methods (empty: all).
type Claim = (usize, Vec<http::Method>);

pub(super) fn routes(list: Vec<RouteFile>, upstreams: &[UpstreamConfig]) -> Result<Vec<RouteConfig>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new("routes", "at least one [[routes]] entry is required"));
    }
    let mut seen = HashSet::new();
    // (host, normalised prefix) → the routes there so far, with their methods.
    let mut claimed: HashMap<(Option<String>, String), Vec<Claim>> = HashMap::new();
    let mut out: Vec<RouteConfig> = Vec::with_capacity(list.len());
    for (i, r) in list.into_iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let name = match r.name {
            Some(name) => {
                slug(&key("name"), &name)?;
                name
            }
            None => format!("route{i}"),
        };
        if !seen.insert(name.clone()) {
            return Err(ConfigError::new(
                key("name"),
                format!("{name:?} is used by an earlier route; names must be unique"),
            ));
        }
        let host = r.host.map(|h| host(&key("host"), &h)).transpose()?;
        path_prefix(&key("path_prefix"), &r.path_prefix)?;
        let normalised = normalised_prefix(&r.path_prefix);
        let methods = methods(&key("methods"), &r.methods)?;
        let same_place = claimed.entry((host.clone(), normalised)).or_default();
        // Two routes on one host + prefix are fine only when their methods cannot overlap (a
        // route with methods is tried before one without).
        let clash = same_place
            .iter()
            .find(|(_, m): &&Claim| (m.is_empty() && methods.is_empty()) || m.iter().any(|x| methods.contains(x)));
        if let Some(&(earlier, _)) = clash {
            let earlier_prefix = &out[earlier].path_prefix;
            let on = match &host {
                Some(h) => format!("host {h:?}"),
                None => "any host (no host set)".to_string(),
            };
            let same = if *earlier_prefix == r.path_prefix {
                format!("is already routed by routes[{earlier}]")
            } else {
                format!(
                    "is the same prefix as routes[{earlier}]'s {earlier_prefix:?} (trailing and \
                     repeated slashes make no difference)"
                )
            };
            let what = if methods.is_empty() { String::new() } else { " for the same methods".to_string() };
            return Err(ConfigError::new(
                key("path_prefix"),
                format!(
                    "{:?} on {on} {same}{what}; routes[{earlier}] always matches first, so this route \
                     would never be used: change its path_prefix, host or methods, or remove it",
                    r.path_prefix
                ),
            ));
        }
        same_place.push((i, methods.clone()));
        let wanted = r.upstream.ok_or_else(|| ConfigError::new(key("upstream"), "is required"))?;
        let upstream = upstreams.iter().position(|u| u.name == wanted).ok_or_else(|| {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            ConfigError::new(key("upstream"), format!("no upstream is named {wanted:?} (known: {})", known.join(", ")))
        })?;
        let access = match r.access {
            AccessFile::Public => Access::Public,
            AccessFile::Session => Access::Session,
            AccessFile::Elevated => Access::Elevated,
        };
        if r.api_keys && access == Access::Elevated {
            return Err(ConfigError::new(
                key("api_keys"),
                "API keys never satisfy access = \"elevated\" (they cannot re-authenticate); give scripts a \
                 route with access = \"session\", or leave api_keys out",
            ));
        }
        out.push(RouteConfig {
            name,
            host,
            path_prefix: r.path_prefix,
            upstream,
            access,
            methods,
            api_keys: r.api_keys,
        });
    }
    Ok(out)
}

/// A (valid) prefix as the route table compares it: percent-decoded, `\` as `/`, repeated and
/// trailing slashes dropped ("/app/" and "/app" are one prefix; "/" stays "/").
fn normalised_prefix(p: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(p).decode_utf8_lossy();
    let segments: Vec<&str> = decoded.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

/// A prefix must be a plain absolute path with no dot segments, and must not reach under
/// [`RESERVED_PREFIX`], also not by `//`, `\\` or `%2e` tricks (the route table normalises those).
fn path_prefix(key: &str, p: &str) -> Result<(), ConfigError> {
    let bad = |why: String| Err(ConfigError::new(key, format!("{p:?} {why}")));
    if !p.starts_with('/') {
        return bad("must start with \"/\"".into());
    }
    if p.contains(|c: char| c == '?' || c == '#' || c.is_whitespace() || c.is_control()) {
        return bad("must be a plain path (no ?, # or spaces)".into());
    }
    let decoded = p.to_ascii_lowercase().replace("%2e", ".");
    let segments: Vec<&str> = decoded.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return bad("must not contain . or .. segments".into());
    }
    if format!("/{}", segments.join("/")).starts_with(RESERVED_PREFIX) {
        return bad(format!("is under {RESERVED_PREFIX}, which is reserved for the gateway's own pages"));
    }
    Ok(())
}

/// Lower-cases a host and drops a port: "App.Example.com:443" → "app.example.com",
/// "[::1]:8080" → "[::1]".
fn host(key: &str, raw: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError::new(key, format!("{raw:?} {why}"));
    let lower = raw.to_ascii_lowercase();
    let name = if lower.starts_with('[') {
        let end = lower.find(']').ok_or_else(|| bad("has an unclosed ["))?;
        let (name, rest) = lower.split_at(end + 1);
        port_suffix(rest).then_some(name).ok_or_else(|| bad("has junk after ]"))?
    } else {
        match lower.split_once(':') {
            Some((name, port)) if port_suffix(&format!(":{port}")) => name,
            Some(_) => return Err(bad("is not a host name (IPv6 addresses go in brackets)")),
            None => lower.as_str(),
        }
    };
    let valid = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
    };
    if !valid {
        return Err(bad("is not a host name"));
    }
    Ok(name.to_string())
}

/// True for "" or ":<digits>".
fn port_suffix(rest: &str) -> bool {
    rest.is_empty() || rest.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Names of upstreams and routes: lower-case letters, digits, `_`, `-`.
/// Upper-case HTTP method tokens, no duplicates; `GET` brings `HEAD` along (a HEAD is a GET
/// without the body, so it must not get past a rule for GET).
fn methods(key: &str, list: &[String]) -> Result<Vec<http::Method>, ConfigError> {
    let mut out: Vec<http::Method> = Vec::new();
    for raw in list {
        let upper = raw.trim().to_ascii_uppercase();
        let method = http::Method::from_bytes(upper.as_bytes())
            .ok()
            .filter(|_| !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase()))
            .ok_or_else(|| ConfigError::new(key, format!("{raw:?} is not an HTTP method such as \"POST\"")))?;
        if out.contains(&method) {
            return Err(ConfigError::new(key, format!("{upper} is listed twice")));
        }
        out.push(method);
    }
    if out.contains(&http::Method::GET) && !out.contains(&http::Method::HEAD) {
        out.push(http::Method::HEAD);
    }
    Ok(out)
}

fn slug(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if name.is_empty() || !name.chars().all(ok) {
        return Err(ConfigError::new(key, format!("{name:?} must be non-empty and use only a-z, 0-9, _ and -")));
    }
    Ok(())
}

/// Resolves once at start-up; the first address wins. A URL-like value ("http://app:3000",
/// "app:3000/api") or a missing port is refused with the host:port to write instead, before
/// any DNS lookup could blur the problem.
fn resolve(key: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    let text = raw.trim();
    if let Some(why) = not_host_port(text) {
        return Err(ConfigError::new(key, format!("{raw:?} {why}")));
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| ConfigError::new(key, format!("cannot resolve {raw:?} (expected host:port): {e}")))?;
    addrs.next().ok_or_else(|| ConfigError::new(key, format!("{raw:?} resolved to no addresses")))
}

/// Why `text` is not a plain host:port, with what to write instead; `None` when it looks like
/// one (whether it resolves is up to DNS).
fn not_host_port(text: &str) -> Option<String> {
    if let Some((scheme, rest)) = text.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "https" {
            return Some(format!(
                "must be host:port without a scheme; note the gateway connects to upstreams \
                 over plain HTTP only, so give the host:port of the upstream's plain-HTTP \
                 listener rather than {authority:?}"
            ));
        }
        let suggestion = if has_port(authority) { authority.to_string() } else { format!("{authority}:80") };
        return Some(format!(
            "must be host:port without a scheme (the gateway always speaks plain HTTP to \
             upstreams): write {suggestion:?}"
        ));
    }
    if let Some(at) = text.find(['/', '?', '#']) {
        let authority = &text[..at];
        return Some(format!(
            "must be host:port without a path: write {authority:?} (an upstream is only an \
             address; which paths go to it is set by the path_prefix of [[routes]])"
        ));
    }
    if !text.is_empty() && !has_port(text) {
        return Some(format!("is missing the port: write host:port, e.g. \"{text}:80\""));
    }
    None
}

/// Whether `authority` ends in ":<port>" ("app:3000", "[::1]:80"; not "app" or "[::1]").
fn has_port(authority: &str) -> bool {
    let after_host = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority,
    };
    after_host.rsplit_once(':').is_some_and(|(_, port)| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()))
}
