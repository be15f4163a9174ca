//! Cross-site request checks for state-changing built-in endpoints: the browser's `Origin` /
//! `Sec-Fetch-Site` must say same-origin when present, and HTML forms also carry a token.

use pingora::http::RequestHeader;
use url::Url;

use crate::error::GatewayError;
use crate::session::Secret;

/// Fails unless the request plausibly comes from one of our own pages. Requests without
/// `Origin` (non-browser clients, some same-origin navigations) pass this check; forms are
/// still protected by their token and JSON endpoints by needing a non-simple request.
pub fn check_origin(req: &RequestHeader, trusted_forwarded_host: Option<&str>) -> Result<(), GatewayError> {
    if let Some(site) = req.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") {
            return Err(GatewayError::CsrfRejected);
        }
    }
    let Some(origin) = req.headers.get(http::header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().ok().and_then(|o| Url::parse(o).ok()).ok_or(GatewayError::CsrfRejected)?;
    let origin_authority = match (origin.host_str(), origin.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return Err(GatewayError::CsrfRejected),
    };
    let host = trusted_forwarded_host
        .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .ok_or(GatewayError::CsrfRejected)?;
    let host = host.trim().to_ascii_lowercase();
    let same = host == origin_authority
        || host.strip_suffix(":80").is_some_and(|h| h == origin_authority && origin.scheme() == "http")
        || host.strip_suffix(":443").is_some_and(|h| h == origin_authority && origin.scheme() == "https");
    same.then_some(()).ok_or(GatewayError::CsrfRejected)
}

/// Compares a form's `csrf_token` with the expected secret in constant time.
pub fn check_token(expected: &Secret, given: Option<&String>) -> Result<(), GatewayError> {
    given.filter(|g| expected.matches(g)).map(|_| ()).ok_or(GatewayError::CsrfRejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/.dalea/signout", None).expect("request");
        for (k, v) in headers {
            r.insert_header(*k, *v).expect("header");
        }
        r
    }

    #[test]
    fn same_origin_passes_and_cross_origin_fails() {
        assert!(check_origin(&req(&[("host", "app.example"), ("origin", "https://app.example")]), None).is_ok());
        assert!(check_origin(&req(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]), None).is_ok());
        assert!(check_origin(&req(&[("host", "app.example"), ("origin", "https://evil.example")]), None).is_err());
        assert!(check_origin(&req(&[("host", "app.example"), ("origin", "null")]), None).is_err());
        assert!(check_origin(&req(&[("host", "app.example:8080"), ("origin", "http://app.example")]), None).is_err());
        assert!(check_origin(&req(&[("host", "app.example"), ("sec-fetch-site", "cross-site")]), None).is_err());
        assert!(check_origin(&req(&[("host", "app.example")]), None).is_ok());
    }

    #[test]
    fn a_trusted_proxy_host_is_used_when_given() {
        let r = req(&[("host", "10.0.0.5:8080"), ("origin", "https://app.example")]);
        assert!(check_origin(&r, Some("app.example")).is_ok());
    }

    #[test]
    fn tokens_must_match_exactly() {
        let s = Secret::generate();
        assert!(check_token(&s, Some(&s.expose().to_string())).is_ok());
        assert!(check_token(&s, Some(&"x".to_string())).is_err());
        assert!(check_token(&s, None).is_err());
    }
}
