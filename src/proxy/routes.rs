//! The route table: host + path prefix → upstream and access level, built once from config.
//!
//! Matching is done on a normalised path so that tricks cannot reach a stricter route through a
//! looser one: `\` counts as `/`, repeated slashes collapse, and paths with dot segments
//! (`/a/../b`, also percent-encoded) are refused before routing. Prefixes match whole segments:
//! `/admin` covers `/admin` and `/admin/x`, not `/administrator`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Access, Config, UpstreamTarget};

/// Where a route sends its traffic.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the config (metrics are kept per route in that order).
    pub index: usize,
    pub name: String,
    host: Option<String>,
    prefix: String,
    pub upstream: usize,
    pub access: Access,
    /// Empty: every method.
    methods: Vec<http::Method>,
    /// API keys are accepted.
    pub api_keys: bool,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    pub upstreams: Vec<Upstream>,
}

/// Why a path cannot be routed.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPath;

impl RouteTable {
    /// `whoami` is the address of the built-in demo upstream, if one was started.
    pub fn new(config: &Config, whoami: Option<SocketAddr>) -> Result<Self, String> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let addr = match &u.target {
                    UpstreamTarget::Address(a) => *a,
                    UpstreamTarget::Whoami => whoami.ok_or("the whoami upstream was not started")?,
                };
                Ok(Upstream {
                    name: u.name.clone(),
                    addr,
                    connect_timeout: u.connect_timeout,
                    read_timeout: u.read_timeout,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                index,
                name: r.name.clone(),
                host: r.host.clone(),
                prefix: route_prefix(&r.path_prefix),
                upstream: r.upstream,
                access: r.access,
                methods: r.methods.clone(),
                api_keys: r.api_keys,
            })
            .collect();
        // Most specific first: a host-specific route beats any-host, a longer prefix a shorter
        // one, a route for some methods one for all.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(a.methods.is_empty().cmp(&b.methods.is_empty()))
        });
        Ok(RouteTable { routes, upstreams })
    }

    /// The route for `host` (already lower-case, no port), `method` and raw `path` (no query).
    /// A path that is the gateway's own `/.dalea/…` only once normalised (`/.dalea\api`,
    /// `/.dalea;x/api`) is refused: it must neither reach the app nor be taken for a page.
    pub fn lookup(&self, host: Option<&str>, method: &http::Method, path: &str) -> Result<Option<&Route>, BadPath> {
        let path = normalise(path)?;
        if crate::pages::is_builtin(&path) {
            return Err(BadPath);
        }
        Ok(self.routes.iter().find(|r| {
            r.host.as_deref().is_none_or(|h| Some(h) == host)
                && prefix_matches(&r.prefix, &path)
                && (r.methods.is_empty() || r.methods.contains(method))
        }))
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The path as routing sees it: percent-decoded once (as the upstream will see it), `\` as
/// `/`, repeated slashes collapsed. Refused instead of interpreted: targets not starting with
/// `/`, encoded separators or NUL (`%2f`, `%5c`, `%00`), control characters, and `.`/`..`
/// segments, also with path parameters (`..;x`), which some servers resolve.
pub fn normalise(path: &str) -> Result<String, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath);
    }
    let lower = path.to_ascii_lowercase();
    if ["%2f", "%5c", "%00"].iter().any(|bad| lower.contains(bad)) {
        return Err(BadPath);
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if decoded.chars().any(char::is_control) {
        return Err(BadPath);
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split(['/', '\\']) {
        // Path parameters (`/admin;jsessionid=1`) are dropped by Java servers before routing,
        // so they are dropped here too: `/admin;x/secret` is `/admin/secret`.
        let bare = segment.split(';').next().unwrap_or_default();
        if bare == "." || bare == ".." {
            return Err(BadPath);
        }
        if bare.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(bare);
    }
    if out.is_empty() || decoded.ends_with('/') || decoded.ends_with('\\') {
        out.push('/');
    }
    Ok(out)
}

/// A configured prefix in the form [`prefix_matches`] expects: normalised, and without a
/// trailing slash (so `/admin/` also covers the bare `/admin`).
fn route_prefix(prefix: &str) -> String {
    let p = normalise(prefix).unwrap_or_else(|_| prefix.to_string());
    match p.trim_end_matches('/') {
        "" => "/".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// The request's host, lower-case without port, from `Host` (HTTP/1) or the URI authority (HTTP/2).
pub fn request_host(req: &pingora::http::RequestHeader) -> Option<String> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().map(|h| format!("[{h}]"))?
    } else {
        raw.split(':').next().unwrap_or(raw).to_string()
    };
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_collapses_slashes_and_refuses_dot_segments() {
        assert_eq!(normalise("/"), Ok("/".into()));
        assert_eq!(normalise(""), Err(BadPath), "a target must start with /");
        assert_eq!(normalise("private/x"), Err(BadPath));
        assert_eq!(normalise("//admin"), Ok("/admin".into()));
        assert_eq!(normalise("/\\admin/x/"), Ok("/admin/x/".into()));
        assert_eq!(normalise("/public/../admin"), Err(BadPath));
        assert_eq!(normalise("/public/%2e%2E/admin"), Err(BadPath));
        assert_eq!(normalise("/a/./b"), Err(BadPath));
        assert_eq!(normalise("/a..b/c"), Ok("/a..b/c".into()));
        assert_eq!(normalise("/%70rivate/x"), Ok("/private/x".into()), "decoded like the upstream will");
        assert_eq!(normalise("/admin;x/secret"), Ok("/admin/secret".into()), "path parameters dropped");
        assert_eq!(normalise("/admin;jsessionid=1"), Ok("/admin".into()));
        assert_eq!(normalise("/;x/admin"), Ok("/admin".into()));
        for bad in [
            "/public/..%2fprivate",
            "/private%2Fx",
            "/%2fprivate",
            "/a%5cb",
            "/a%00b",
            "/public/..;/private",
            "/a/.;x/b",
            "/a%0d%0ab",
        ] {
            assert_eq!(normalise(bad), Err(BadPath), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/admin", "/admin"));
        assert!(prefix_matches("/admin", "/admin/users"));
        assert!(!prefix_matches("/admin", "/administrator"));
        assert!(prefix_matches("/", "/anything"));
        assert_eq!(route_prefix("/api/"), "/api");
        assert!(
            prefix_matches(&route_prefix("/api/"), "/api"),
            "a trailing slash in config still covers the bare path"
        );
        assert_eq!(route_prefix("/"), "/");
    }
}
