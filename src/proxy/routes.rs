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
    pub name: String,
    host: Option<String>,
    prefix: String,
    pub upstream: usize,
    pub access: Access,
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
            .map(|r| Route {
                name: r.name.clone(),
                host: r.host.clone(),
                prefix: normalise(&r.path_prefix).unwrap_or_else(|_| r.path_prefix.clone()),
                upstream: r.upstream,
                access: r.access,
            })
            .collect();
        // Most specific first: a host-specific route beats any-host, a longer prefix a shorter one.
        routes.sort_by(|a, b| b.host.is_some().cmp(&a.host.is_some()).then(b.prefix.len().cmp(&a.prefix.len())));
        Ok(RouteTable { routes, upstreams })
    }

    /// The route for `host` (already lower-case, no port) and raw `path` (no query).
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Result<Option<&Route>, BadPath> {
        let path = normalise(path)?;
        Ok(self.routes.iter().find(|r| {
            r.host.as_deref().is_none_or(|h| Some(h) == host) && prefix_matches(&r.prefix, &path)
        }))
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The path as routing sees it; dot segments are refused rather than resolved.
pub fn normalise(path: &str) -> Result<String, BadPath> {
    let mut out = String::with_capacity(path.len());
    let decoded_dots = path.replace("%2e", ".").replace("%2E", ".");
    for segment in decoded_dots.split(['/', '\\']) {
        if segment == "." || segment == ".." {
            return Err(BadPath);
        }
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || path.ends_with('/') || path.ends_with('\\') {
        out.push('/');
    }
    Ok(out)
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
        assert_eq!(normalise(""), Ok("/".into()));
        assert_eq!(normalise("//admin"), Ok("/admin".into()));
        assert_eq!(normalise("/\\admin/x/"), Ok("/admin/x/".into()));
        assert_eq!(normalise("/public/../admin"), Err(BadPath));
        assert_eq!(normalise("/public/%2e%2E/admin"), Err(BadPath));
        assert_eq!(normalise("/a/./b"), Err(BadPath));
        assert_eq!(normalise("/a..b/c"), Ok("/a..b/c".into()));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/admin", "/admin"));
        assert!(prefix_matches("/admin", "/admin/users"));
        assert!(!prefix_matches("/admin", "/administrator"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(!prefix_matches("/api/", "/api"));
    }
}
