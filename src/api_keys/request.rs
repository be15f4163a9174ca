//! How a request carries an API key: only as `Authorization: Bearer dalea_…`. A key anywhere
//! else (a cookie, the query string) is refused rather than ignored, since it has already
//! leaked into places that log it; any other `Authorization` belongs to the upstream app.

use pingora::http::RequestHeader;

use super::{KeySecret, PREFIX};

/// What the request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No API key.
    None,
    /// `Authorization: Bearer dalea_…` with a well-formed key.
    Key(KeySecret),
    /// `Authorization: Bearer dalea_…` that is not a well-formed key (typo, truncation).
    Malformed,
    /// A key in a cookie or the query string.
    Misplaced,
}

/// The bearer token of an `Authorization` header, if it is one of ours.
fn our_bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token.starts_with(PREFIX)).then_some(token)
}

/// Whether the request has an `Authorization` header carrying one of our keys (well-formed or
/// not): such a header is never forwarded upstream.
pub fn is_ours(value: &[u8]) -> bool {
    our_bearer(value).is_some()
}

pub fn presented(req: &RequestHeader) -> Presented {
    if misplaced(req) {
        return Presented::Misplaced;
    }
    let mut ours = req.headers.get_all(http::header::AUTHORIZATION).iter().filter_map(|v| our_bearer(v.as_bytes()));
    match (ours.next(), ours.next()) {
        (None, _) => Presented::None,
        (Some(token), None) => KeySecret::parse(token).map_or(Presented::Malformed, Presented::Key),
        // Two keys at once: which one is meant is anyone's guess.
        (Some(_), Some(_)) => Presented::Malformed,
    }
}

/// A well-formed key as a cookie value or a query parameter value. Cheap for ordinary
/// requests: the full parse runs only where `dalea_` starts a value.
fn misplaced(req: &RequestHeader) -> bool {
    let in_query = req.uri.query().is_some_and(|q| {
        q.contains(PREFIX) && form_urlencoded::parse(q.as_bytes()).any(|(_, v)| KeySecret::parse(v.trim()).is_some())
    });
    let in_cookie = || {
        req.headers.get_all(http::header::COOKIE).iter().any(|h| {
            let h = String::from_utf8_lossy(h.as_bytes());
            h.contains(&format!("={PREFIX}"))
                && h.split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .any(|(_, v)| KeySecret::parse(v.trim()).is_some())
        })
    };
    in_query || in_cookie()
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
        let lower = format!("bearer  {} ", key.expose());
        assert_eq!(presented(&req("/", &[("authorization", &lower)])), Presented::Key(key.clone()));
        assert_eq!(presented(&req("/", &[])), Presented::None);
        // The app's own tokens are none of our business.
        assert_eq!(presented(&req("/", &[("authorization", "Bearer eyJhbGciOi.x.y")])), Presented::None);
        assert_eq!(presented(&req("/", &[("authorization", "Basic dXNlcjpwYXNz")])), Presented::None);
        let typo = format!("Bearer {}x", key.expose());
        assert_eq!(presented(&req("/", &[("authorization", &typo)])), Presented::Malformed);
        let two = [("authorization", bearer.as_str()), ("authorization", bearer.as_str())];
        assert_eq!(presented(&req("/", &two)), Presented::Malformed);
    }

    #[test]
    fn a_key_in_a_cookie_or_the_url_is_refused() {
        let key = KeySecret::generate();
        let url = format!("/api/x?page=2&api_key={}", key.expose());
        assert_eq!(presented(&req(&url, &[])), Presented::Misplaced);
        let cookie = format!("dalea_session=abc; token={}", key.expose());
        assert_eq!(presented(&req("/", &[("cookie", &cookie)])), Presented::Misplaced);
        // Our own cookie name starts with the prefix too; that is not a key.
        assert_eq!(presented(&req("/?q=dalea_", &[("cookie", "dalea_session=abc")])), Presented::None);
    }
}
