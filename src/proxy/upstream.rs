//! What the upstream receives: client-sent `X-Dalea-*` headers and our cookies removed on
//! every route, then our identity and `X-Forwarded-*` headers added; and on the way back, an
//! upstream's attempt to set our cookie dropped.

use pingora::http::{RequestHeader, ResponseHeader};

use super::ctx::RequestCtx;
use crate::api_keys;
use crate::session::cookie::CookieJar;

/// The identity headers other authentication proxies give apps (oauth2-proxy's
/// `X-Forwarded-User`/`-Email`/… and `X-Auth-Request-*`, Authelia's `Remote-*`, Grafana's
/// `X-WEBAUTH-*`, Kong's `X-Authenticated-*`): an app moved behind this gateway may still trust
/// one, and the gateway never sets them, so whoever sends one — even through a trusted proxy —
/// is removed. Prefixes end in `-`.
const OTHER_PROXIES: [&[u8]; 10] = [
    b"x-auth-request-",
    b"remote-",
    b"x-remote-",
    b"x-webauth-",
    b"x-authenticated-",
    b"x-forwarded-user",
    b"x-forwarded-email",
    b"x-forwarded-preferred-username",
    b"x-forwarded-groups",
    b"x-forwarded-access-token",
];

/// Headers only the gateway may set, and other proxies' identity headers ([`OTHER_PROXIES`]).
/// Names are compared the way CGI/WSGI-style apps see them (`X_Dalea_User` and `X-Dalea-User`
/// both become `HTTP_X_DALEA_USER`), so underscore spellings are removed too. Forwarding
/// headers spelled with underscores (`X_Forwarded_For`) are never legitimate.
fn is_reserved(name: &str) -> bool {
    // `-` and `_` compare equal; names are already lower case.
    let folded_eq =
        |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (*x == b'_' && *y == b'-'));
    let n = name.as_bytes();
    let starts = |p: &[u8]| n.len() >= p.len() && folded_eq(&n[..p.len()], p);
    // Every name below starts with `x` or `r`: most headers are done after one byte.
    if !matches!(n.first(), Some(b'x' | b'r')) {
        return false;
    }
    starts(b"x-dalea-")
        || folded_eq(n, b"x-real-ip")
        || (n.contains(&b'_') && starts(b"x-forwarded-"))
        || OTHER_PROXIES.iter().any(|p| if p.ends_with(b"-") { starts(p) } else { folded_eq(n, p) })
}

/// Rewrites the request headers for the upstream.
pub fn rewrite_request(req: &mut RequestHeader, ctx: &RequestCtx, cookies: &CookieJar) -> pingora::Result<()> {
    // Header names are already lower case in the `http` crate's map.
    let spoofed: Vec<http::HeaderName> = req.headers.keys().filter(|k| is_reserved(k.as_str())).cloned().collect();
    for name in spoofed {
        req.remove_header(&name);
    }

    let kept = cookies.strip_ours(req.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()));
    req.remove_header(&http::header::COOKIE);
    if let Some(kept) = kept {
        req.insert_header(http::header::COOKIE, kept)?;
    }

    // Our API keys never leave the gateway; any other Authorization value is the app's own.
    let values: Vec<http::HeaderValue> = req.headers.get_all(http::header::AUTHORIZATION).iter().cloned().collect();
    if values.iter().any(|v| api_keys::request::is_ours(v.as_bytes())) {
        req.remove_header(&http::header::AUTHORIZATION);
        for v in values.into_iter().filter(|v| !api_keys::request::is_ours(v.as_bytes())) {
            req.append_header(http::header::AUTHORIZATION, v)?;
        }
    }

    forwarded_headers(req, ctx)?;

    // Client-sent X-Dalea-* are gone (above), so appending cannot leave a second value.
    if let Some(id) = &ctx.identity {
        req.append_header("x-dalea-user", id.user.id.as_str())?;
        req.append_header("x-dalea-email", id.user.email.as_str())?;
        req.append_header("x-dalea-session", id.session.session.id.as_str())?;
        req.append_header("x-dalea-auth-strength", id.auth_strength())?;
        req.append_header("x-dalea-auth-method", id.session.session.sign_in_method.as_string())?;
    }
    if let Some(k) = &ctx.api_key {
        req.append_header("x-dalea-user", k.user.id.as_str())?;
        req.append_header("x-dalea-email", k.user.email.as_str())?;
        req.append_header("x-dalea-api-key", k.key.id.as_str())?;
        req.append_header("x-dalea-auth-strength", "basic")?;
        req.append_header("x-dalea-auth-method", "api_key")?;
    }
    Ok(())
}

/// `X-Forwarded-For/Proto/Host`: a trusted proxy's values are extended, anyone else's replaced.
fn forwarded_headers(req: &mut RequestHeader, ctx: &RequestCtx) -> pingora::Result<()> {
    // Every field of a repeated header counts (a proxy may add its own line).
    let header_str = |req: &RequestHeader, name: &str| {
        let values: Vec<&str> = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    // A trusted proxy's chain is kept and its own address appended, as every proxy does.
    let peer = ctx.peer_ip.map(|ip| ip.to_string()).unwrap_or_default();
    // Without a trusted proxy in front, the client is the peer: no second formatting.
    let client_ip = match ctx.client_ip {
        Some(ip) if Some(ip) == ctx.peer_ip => Some(peer.clone()),
        other => other.map(|ip| ip.to_string()),
    };
    let xff = match (ctx.peer_trusted, header_str(req, "x-forwarded-for")) {
        (true, Some(chain)) if !chain.trim().is_empty() => format!("{chain}, {peer}"),
        _ => peer,
    };
    let proto = match (ctx.peer_trusted, header_str(req, "x-forwarded-proto")) {
        (true, Some(p)) if p == "https" || p == "http" => p,
        _ => "http".to_string(),
    };
    let host = match (ctx.peer_trusted, header_str(req, "x-forwarded-host")) {
        (true, Some(h)) => Some(h),
        _ => header_str(req, "host").or_else(|| req.uri.authority().map(|a| a.to_string())),
    };
    if !ctx.peer_trusted {
        // Headers apps and frameworks read to learn the client, scheme, host or path behind a
        // proxy: only a trusted proxy may send them.
        let untrusted: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|k| {
                let n = k.as_str();
                (n.starts_with("x-forwarded-")
                    && !matches!(n, "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"))
                    || matches!(
                        n,
                        "forwarded"
                            | "x-original-url"
                            | "x-rewrite-url"
                            | "true-client-ip"
                            | "x-client-ip"
                            | "x-cluster-client-ip"
                            | "client-ip"
                            | "cf-connecting-ip"
                            | "fastly-client-ip"
                    )
            })
            .cloned()
            .collect();
        for name in untrusted {
            req.remove_header(&name);
        }
    }
    if !xff.is_empty() {
        req.insert_header("x-forwarded-for", xff)?;
    } else {
        req.remove_header("x-forwarded-for");
    }
    req.insert_header("x-forwarded-proto", proto)?;
    if let Some(ip) = client_ip {
        req.insert_header("x-real-ip", ip)?;
    }
    match host {
        Some(h) => req.insert_header("x-forwarded-host", h)?,
        None => {
            req.remove_header("x-forwarded-host");
        }
    }
    Ok(())
}

/// Drops an upstream `Set-Cookie` aimed at our cookies, and clears a dead session cookie.
pub fn rewrite_response(resp: &mut ResponseHeader, ctx: &RequestCtx, cookies: &CookieJar) -> pingora::Result<()> {
    let set_cookies: Vec<http::HeaderValue> = resp.headers.get_all(http::header::SET_COOKIE).iter().cloned().collect();
    if set_cookies.iter().any(|v| cookies.is_ours(v.as_bytes())) {
        resp.remove_header(&http::header::SET_COOKIE);
        for v in set_cookies.into_iter().filter(|v| !cookies.is_ours(v.as_bytes())) {
            resp.append_header(http::header::SET_COOKIE, v)?;
        }
    }
    if ctx.clear_cookie {
        resp.append_header(http::header::SET_COOKIE, cookies.clear_session())?;
        // A response that sets our cookie must never be stored by a shared cache.
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_cover_underscore_spellings() {
        for name in ["x-dalea-user", "x_dalea_user", "x-dalea_email", "x_forwarded_for", "x-real-ip", "x_real_ip"] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["x-forwarded-for", "forwarded", "x-request-id", "accept", "x_custom", "referer", "range"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn other_proxies_identity_headers_are_reserved_in_any_spelling() {
        for name in [
            "x-forwarded-user",
            "x_forwarded_email",
            "x-forwarded-preferred-username",
            "x-auth-request-user",
            "x_auth_request_email",
            "remote-user",
            "remote_groups",
            "x-remote-user",
            "x-webauth-user",
            "x-authenticated-userid",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["x-forwarded-host", "x-forwarded-prefix", "x-forwarded-username", "remote", "x-request-user"] {
            assert!(!is_reserved(name), "{name}");
        }
    }
}
