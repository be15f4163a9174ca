//! The one place cookie attributes are decided: the session cookie, the sign-in form's CSRF
//! cookie, the one-time flash cookie (a new API key on its way from the create form to the
//! page that shows it) and the cookies that bind a sign-in through a provider, or a passkey
//! sign-in, to the browser that started it are set, read and cleared here, with
//! `HttpOnly; SameSite=Lax; Path=/` and, outside plain-HTTP development, `Secure` and the
//! `__Host-` prefix.

use std::time::Duration;

use super::Token;

const CSRF_COOKIE: &str = "dalea_csrf";
const FLASH_COOKIE: &str = "dalea_flash";
const OAUTH_COOKIE: &str = "dalea_oauth";
const PASSKEY_COOKIE: &str = "dalea_passkey";
/// How long a sign-in through a provider may take, start to callback.
pub const OAUTH_MAX_AGE: Duration = Duration::from_secs(600);
/// How long a passkey ceremony (sign-in, registration, confirmation) may take, begin to finish.
pub const PASSKEY_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a flash cookie lives: just long enough for the redirect that reads it.
const FLASH_MAX_AGE: Duration = Duration::from_secs(120);
/// How many session cookie copies one request may make us look up (each may cost a store
/// read). Far more than any browser holds; a bound for hostile requests.
const MAX_CANDIDATES: usize = 16;
/// How long a sign-in form's CSRF cookie lives.
const CSRF_MAX_AGE: Duration = Duration::from_secs(3600);

/// Cookie names and attributes, fixed at start-up.
#[derive(Debug, Clone)]
pub struct CookieJar {
    session_name: String,
    csrf_name: String,
    flash_name: String,
    oauth_name: String,
    passkey_name: String,
    secure: bool,
}

impl CookieJar {
    /// `secure = false` only for plain-HTTP development: no `Secure`, no `__Host-` prefix.
    pub fn new(cookie_name: &str, secure: bool) -> Self {
        let prefix = if secure { "__Host-" } else { "" };
        CookieJar {
            session_name: format!("{prefix}{cookie_name}"),
            csrf_name: format!("{prefix}{CSRF_COOKIE}"),
            flash_name: format!("{prefix}{FLASH_COOKIE}"),
            oauth_name: format!("{prefix}{OAUTH_COOKIE}"),
            passkey_name: format!("{prefix}{PASSKEY_COOKIE}"),
            secure,
        }
    }

    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    fn build(&self, name: &str, value: &str, max_age: Option<Duration>) -> String {
        // __Host- requires Secure, Path=/ and no Domain; we always send the same attributes so
        // that clearing a cookie always matches the one that was set.
        let mut out = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if self.secure {
            out.push_str("; Secure");
        }
        if let Some(age) = max_age {
            out.push_str(&format!("; Max-Age={}", age.as_secs()));
        }
        out
    }

    /// `Set-Cookie` for a new session. `max_age` None = a browser-session cookie (not
    /// remembered); otherwise the time left until the session's absolute expiry.
    pub fn set_session(&self, token: &Token, max_age: Option<Duration>) -> String {
        self.build(&self.session_name, token.as_str(), max_age)
    }

    /// `Set-Cookie` that deletes the session cookie (same name and attributes, Max-Age=0).
    pub fn clear_session(&self) -> String {
        self.build(&self.session_name, "", Some(Duration::ZERO))
    }

    pub fn set_csrf(&self, value: &str) -> String {
        self.build(&self.csrf_name, value, Some(CSRF_MAX_AGE))
    }

    /// Deletes the sign-in form's CSRF cookie (it has done its job once signed in).
    pub fn clear_csrf(&self) -> String {
        self.build(&self.csrf_name, "", Some(Duration::ZERO))
    }

    /// `Set-Cookie` for a one-time message to the next page (already encrypted by the caller).
    pub fn set_flash(&self, value: &str) -> String {
        self.build(&self.flash_name, value, Some(FLASH_MAX_AGE))
    }

    pub fn clear_flash(&self) -> String {
        self.build(&self.flash_name, "", Some(Duration::ZERO))
    }

    /// The flash cookie's value, if any.
    pub fn flash_value<'a>(&self, cookie_headers: impl Iterator<Item = &'a [u8]>) -> Option<String> {
        cookie_pairs(cookie_headers)
            .filter(|(name, _)| *name == self.flash_name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .find(|v| !v.is_empty() && v.len() <= 512)
            .map(str::to_string)
    }

    /// `Set-Cookie` binding sign-ins through providers to this browser (a random value whose
    /// hash each pending sign-in keeps).
    pub fn set_oauth_binding(&self, value: &str) -> String {
        self.build(&self.oauth_name, value, Some(OAUTH_MAX_AGE))
    }

    /// The provider sign-in binding, if present and well-formed.
    pub fn oauth_binding<'a>(&self, cookie_headers: impl Iterator<Item = &'a [u8]>) -> Option<String> {
        cookie_pairs(cookie_headers)
            .filter(|(name, _)| *name == self.oauth_name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .find(|v| super::token::is_base64url(v, 43))
            .map(str::to_string)
    }

    /// `Set-Cookie` binding passkey sign-ins to this browser (a random value whose hash each
    /// pending passkey sign-in keeps).
    pub fn set_passkey_binding(&self, value: &str) -> String {
        self.build(&self.passkey_name, value, Some(PASSKEY_MAX_AGE))
    }

    /// Deletes the passkey sign-in binding (it has done its job once signed in).
    pub fn clear_passkey_binding(&self) -> String {
        self.build(&self.passkey_name, "", Some(Duration::ZERO))
    }

    /// The passkey sign-in binding, if present and well-formed.
    pub fn passkey_binding<'a>(&self, cookie_headers: impl Iterator<Item = &'a [u8]>) -> Option<String> {
        cookie_pairs(cookie_headers)
            .filter(|(name, _)| *name == self.passkey_name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .find(|v| super::token::is_base64url(v, 43))
            .map(str::to_string)
    }

    fn is_our_name(&self, name: &[u8]) -> bool {
        [&self.session_name, &self.csrf_name, &self.flash_name, &self.oauth_name, &self.passkey_name]
            .iter()
            .any(|n| name == n.as_bytes())
    }

    /// Every session token candidate in the request's `Cookie` headers, in order. Several can
    /// appear (duplicates from old paths or other apps); the caller tries each, so a stale
    /// duplicate never causes an error or a loop. Values of the wrong shape are skipped.
    pub fn session_tokens<'a>(&self, cookie_headers: impl Iterator<Item = &'a [u8]>) -> Vec<Token> {
        let mut out = Vec::new();
        for (name, value) in cookie_pairs(cookie_headers) {
            if name == self.session_name.as_bytes() {
                if let Some(t) = std::str::from_utf8(value).ok().and_then(Token::parse) {
                    if out.len() < MAX_CANDIDATES && !out.contains(&t) {
                        out.push(t);
                    }
                }
            }
        }
        out
    }

    /// The sign-in form's CSRF cookie value, if present and well-formed.
    pub fn csrf_value<'a>(&self, cookie_headers: impl Iterator<Item = &'a [u8]>) -> Option<String> {
        cookie_pairs(cookie_headers)
            .filter(|(name, _)| *name == self.csrf_name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .find(|v| super::token::is_base64url(v, 43))
            .map(str::to_string)
    }

    /// The `Cookie` header to send upstream: every cookie except ours, joined into one header
    /// (HTTP/2 clients may split cookies over several fields). None when nothing is left.
    pub fn strip_ours<'a>(&self, cookie_headers: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
        let mut out: Vec<u8> = Vec::new();
        for header in cookie_headers {
            for part in header.split(|&b| b == b';') {
                let part = part.trim_ascii();
                if part.is_empty() {
                    continue;
                }
                let name = part.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
                if self.is_our_name(name) {
                    continue;
                }
                if !out.is_empty() {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(part);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// True when an upstream's `Set-Cookie` would overwrite one of our cookies.
    pub fn is_ours(&self, set_cookie: &[u8]) -> bool {
        let name = set_cookie.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
        self.is_our_name(name)
    }
}

/// `name=value` pairs of `Cookie` headers, as bytes (non-UTF-8 input is tolerated).
fn cookie_pairs<'a>(headers: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    headers.flat_map(|h| h.split(|&b| b == b';')).filter_map(|part| {
        let part = part.trim_ascii();
        let eq = part.iter().position(|&b| b == b'=')?;
        let value = part[eq + 1..].trim_ascii();
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        Some((part[..eq].trim_ascii(), value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookies_use_the_host_prefix_and_all_attributes() {
        let jar = CookieJar::new("dalea_session", true);
        let t = Token::generate();
        let set = jar.set_session(&t, Some(Duration::from_secs(60)));
        assert!(set.starts_with(&format!("__Host-dalea_session={}", t.as_str())));
        for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=60"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        assert!(!set.contains("Domain"));
    }

    #[test]
    fn clearing_repeats_the_attributes_it_was_set_with() {
        let jar = CookieJar::new("s", true);
        assert_eq!(jar.clear_session(), "__Host-s=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0");
        let dev = CookieJar::new("s", false);
        assert_eq!(dev.clear_session(), "s=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    }

    #[test]
    fn finds_every_well_formed_duplicate_and_skips_garbage() {
        let jar = CookieJar::new("s", false);
        let a = Token::generate();
        let b = Token::generate();
        let h1 = format!("other=1; s=garbage; s={}", a.as_str());
        let h2 = format!("s=\"{}\"; s={}", b.as_str(), a.as_str());
        let found = jar.session_tokens([h1.as_bytes(), h2.as_bytes()].into_iter());
        assert_eq!(found.iter().map(|t| t.hash()).collect::<Vec<_>>(), vec![a.hash(), b.hash()]);
    }

    #[test]
    fn non_utf8_and_malformed_cookie_headers_are_tolerated() {
        let jar = CookieJar::new("s", false);
        let raw: &[u8] = b"\xff\xfe=\x80; ;;=; s; s=";
        assert!(jar.session_tokens([raw].into_iter()).is_empty());
        assert_eq!(jar.strip_ours([raw].into_iter()), Some(b"\xff\xfe=\x80; =".to_vec()));
    }

    #[test]
    fn strip_ours_keeps_other_cookies_in_one_header() {
        let jar = CookieJar::new("s", true);
        let t = Token::generate();
        let h1 = format!("a=1; __Host-s={}", t.as_str());
        let h2 = "__Host-dalea_csrf=x; b=2; __Host-dalea_oauth=y; __Host-dalea_passkey=z".to_string();
        let out = jar.strip_ours([h1.as_bytes(), h2.as_bytes()].into_iter());
        assert_eq!(out.as_deref(), Some(b"a=1; b=2".as_slice()));
        assert_eq!(jar.strip_ours([format!("__Host-s={}", t.as_str()).as_bytes()].into_iter()), None);
    }

    #[test]
    fn the_passkey_binding_is_set_read_and_cleared_with_the_same_attributes() {
        let jar = CookieJar::new("s", true);
        let value = crate::session::token::random_string::<32>();
        let set = jar.set_passkey_binding(&value);
        assert!(set.starts_with(&format!("__Host-dalea_passkey={value}; Path=/; HttpOnly; SameSite=Lax; Secure")));
        assert!(set.ends_with(&format!("Max-Age={}", PASSKEY_MAX_AGE.as_secs())));
        let header = format!("__Host-dalea_passkey=short; __Host-dalea_passkey={value}");
        assert_eq!(jar.passkey_binding([header.as_bytes()].into_iter()), Some(value));
        assert_eq!(
            jar.clear_passkey_binding(),
            "__Host-dalea_passkey=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0"
        );
        assert!(jar.is_ours(b"__Host-dalea_passkey=x"));
    }

    #[test]
    fn recognises_upstream_set_cookie_for_our_name() {
        let jar = CookieJar::new("s", true);
        assert!(jar.is_ours(b"__Host-s=evil; Path=/"));
        assert!(!jar.is_ours(b"s=fine; Path=/"));
    }
}
