//! How a request carries an API key: only as `Authorization: Bearer dalea_…`. A real key
//! anywhere else (a cookie, the query string) is refused rather than ignored, since it has
//! already leaked into places that log it; any other `Authorization` belongs to the upstream.

use pingora::http::RequestHeader;

use super::{KeySecret, PREFIX};

/// What the request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No API key.
    None,
    /// `Authorization: Bearer dalea_…` with a well-formed key.
    Key(KeySecret),
    /// An `Authorization` value with `dalea_…` that is not one well-formed bearer key (typo,
    /// truncation, another scheme, two keys).
    Malformed,
    /// Well-formed keys in cookies or the query string. Only refused if one of them really
    /// exists: anyone can make up a well-formed key, and a made-up one planted in a cookie
    /// must not lock a browser out of the site.
    Misplaced(Vec<KeySecret>),
}

/// Whether an `Authorization` value is the gateway's (a `dalea_…` token under any scheme or
/// none): such a value is never forwarded upstream.
pub fn is_ours(value: &[u8]) -> bool {
    String::from_utf8_lossy(value).split(|c: char| c.is_whitespace() || c == ',').any(|t| t.starts_with(PREFIX))
}

/// The key of an `Authorization` value that is exactly `Bearer <key>`.
fn bearer_key(value: &[u8]) -> Option<KeySecret> {
    let value = std::str::from_utf8(value).ok()?;
    let mut parts = value.split_ascii_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(scheme), Some(token), None) if scheme.eq_ignore_ascii_case("bearer") => KeySecret::parse(token),
        _ => None,
    }
}

pub fn presented(req: &RequestHeader) -> Presented {
    let ours: Vec<&[u8]> =
        req.headers.get_all(http::header::AUTHORIZATION).iter().map(|v| v.as_bytes()).filter(|v| is_ours(v)).collect();
    match ours.as_slice() {
        [] => {}
        [one] => return bearer_key(one).map_or(Presented::Malformed, Presented::Key),
        // Two keys at once: which one is meant is anyone's guess.
        _ => return Presented::Malformed,
    }
    let misplaced = misplaced(req);
    if misplaced.is_empty() {
        Presented::None
    } else {
        Presented::Misplaced(misplaced)
    }
}

/// Well-formed keys as cookie values or query names or values (percent-decoded, quotes and
/// spaces trimmed). Cheap for ordinary requests: parsing runs only where `dalea_` appears, and
/// for cookies only where it starts a value (the session cookie's own name starts with it).
fn misplaced(req: &RequestHeader) -> Vec<KeySecret> {
    let clean = |v: &str| KeySecret::parse(v.trim().trim_matches('"').trim());
    let mut out = Vec::new();
    if let Some(q) = req.uri.query() {
        if q.contains(PREFIX) || q.contains('%') {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                out.extend(clean(&k).into_iter().chain(clean(&v)));
            }
        }
    }
    for h in req.headers.get_all(http::header::COOKIE) {
        let h = String::from_utf8_lossy(h.as_bytes());
        if starts_a_value(&h) {
            out.extend(h.split(';').filter_map(|pair| pair.split_once('=')).filter_map(|(_, v)| clean(v)));
        }
    }
    out.truncate(4);
    out
}

/// Whether `dalea_` begins some cookie value (after `=`, spaces and a quote) in this header.
fn starts_a_value(cookie_header: &str) -> bool {
    cookie_header
        .match_indices(PREFIX)
        .any(|(at, _)| cookie_header[..at].trim_end_matches([' ', '\t', '"']).ends_with('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).expect("request");
        for (k, v) in headers {
            r.append_header(*k, *v).expect("header");
        }
        r
    }

    #[test]
    fn only_a_bearer_header_carries_a_key() {
        let key = KeySecret::generate();
        let bearer = format!("Bearer {}", key.expose());
        assert_eq!(presented(&req("/", &[("authorization", &bearer)])), Presented::Key(key.clone()));
        let lower = format!("bearer \t {} ", key.expose());
        assert_eq!(presented(&req("/", &[("authorization", &lower)])), Presented::Key(key.clone()));
        assert_eq!(presented(&req("/", &[])), Presented::None);
        // The app's own tokens are none of our business.
        assert_eq!(presented(&req("/", &[("authorization", "Bearer eyJhbGciOi.x.y")])), Presented::None);
        assert_eq!(presented(&req("/", &[("authorization", "Basic dXNlcjpwYXNz")])), Presented::None);
        for odd in [
            format!("Bearer {}x", key.expose()),
            format!("Token {}", key.expose()),
            key.expose().to_string(),
            format!("Bearer {}, Bearer x", key.expose()),
        ] {
            assert_eq!(presented(&req("/", &[("authorization", &odd)])), Presented::Malformed, "{odd}");
            assert!(is_ours(odd.as_bytes()), "{odd} is never forwarded");
        }
        let two = [("authorization", bearer.as_str()), ("authorization", bearer.as_str())];
        assert_eq!(presented(&req("/", &two)), Presented::Malformed);
    }

    #[test]
    fn keys_in_a_cookie_or_the_url_are_found() {
        let key = KeySecret::generate();
        let found = Presented::Misplaced(vec![key.clone()]);
        assert_eq!(presented(&req(&format!("/api/x?page=2&api_key={}", key.expose()), &[])), found);
        assert_eq!(presented(&req(&format!("/api/x?{}", key.expose()), &[])), found, "as a query name");
        let encoded = format!("/x?k=%64{}", &key.expose()[1..]);
        assert_eq!(presented(&req(&encoded, &[])), found, "percent-encoded");
        for cookie in [
            format!("dalea_session=abc; token={}", key.expose()),
            format!("tok=\"{}\"", key.expose()),
            format!("tok= {}", key.expose()),
        ] {
            assert_eq!(presented(&req("/", &[("cookie", &cookie)])), found, "{cookie}");
        }
        // Our own cookie name starts with the prefix too; that is not a key.
        assert_eq!(presented(&req("/?q=dalea_", &[("cookie", "dalea_session=abc")])), Presented::None);
        let named = format!("dalea_session=abc; dalea_key={}", key.expose());
        assert_eq!(
            presented(&req("/", &[("cookie", &named)])),
            found,
            "a key under a name that starts with the prefix"
        );
        assert!(!starts_a_value("a=1; dalea_session=x; __Host-dalea_session=y"));
        assert!(starts_a_value("a= \"dalea_x"));
    }
}
