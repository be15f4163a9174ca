//! What the upstream receives: client-sent `X-Dalea-*` headers and our cookies removed on
//! every route, then our identity and `X-Forwarded-*` headers added; and on the way back, an
//! upstream's attempt to set our cookie dropped.

use pingora::http::{RequestHeader, ResponseHeader};

use super::ctx::RequestCtx;
use crate::session::cookie::CookieJar;

const IDENTITY_PREFIX: &str = "x-dalea-";

/// Rewrites the request headers for the upstream.
pub fn rewrite_request(req: &mut RequestHeader, ctx: &RequestCtx, cookies: &CookieJar) -> pingora::Result<()> {
    let spoofed: Vec<http::HeaderName> =
        req.headers.keys().filter(|k| k.as_str().starts_with(IDENTITY_PREFIX)).cloned().collect();
    for name in spoofed {
        req.remove_header(&name);
    }

    let kept = cookies.strip_ours(req.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()));
    req.remove_header(&http::header::COOKIE);
    if let Some(kept) = kept {
        req.insert_header(http::header::COOKIE, kept)?;
    }

    forwarded_headers(req, ctx)?;

    if let Some(id) = &ctx.identity {
        req.insert_header("x-dalea-user", id.user_id.as_str())?;
        req.insert_header("x-dalea-email", id.email.as_str())?;
        req.insert_header("x-dalea-session", id.session.session.id.as_str())?;
        req.insert_header("x-dalea-auth-strength", id.auth_strength())?;
        req.insert_header("x-dalea-auth-method", id.session.session.sign_in_method.as_string())?;
    }
    Ok(())
}

/// `X-Forwarded-For/Proto/Host`: a trusted proxy's values are extended, anyone else's replaced.
fn forwarded_headers(req: &mut RequestHeader, ctx: &RequestCtx) -> pingora::Result<()> {
    let header_str = |req: &RequestHeader, name: &str| {
        req.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    };
    // A trusted proxy's chain is kept and its own address appended, as every proxy does.
    let peer = ctx.peer_ip.map(|ip| ip.to_string()).unwrap_or_default();
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
        req.remove_header("forwarded");
    }
    if !xff.is_empty() {
        req.insert_header("x-forwarded-for", xff)?;
    } else {
        req.remove_header("x-forwarded-for");
    }
    req.insert_header("x-forwarded-proto", proto)?;
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
