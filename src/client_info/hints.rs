//! User-Agent Client Hints (`Sec-CH-UA-*`): what the browser says about its platform when asked.
//!
//! Only Chromium-based browsers send them, only on secure contexts, and the high-entropy ones
//! (platform version, full version list, model) only after the origin asked with `Accept-CH`.
//! The values are Structured-Field items: strings arrive quoted (`"macOS"`), booleans as `?1`.

use serde::{Deserialize, Serialize};

/// The value for the `Accept-CH` header the sign-in page sends.
pub const ACCEPT_CH: &str = "Sec-CH-UA-Platform-Version, Sec-CH-UA-Full-Version-List, Sec-CH-UA-Model, Sec-CH-UA-Arch";
/// The value for the `Critical-CH` header: on a first visit Chromium retries the request once
/// with this hint before showing the page, so even the first sign-in learns the OS version.
pub const CRITICAL_CH: &str = "Sec-CH-UA-Platform-Version";

/// Longest header value we keep; real ones are a few dozen bytes.
const MAX_HINT_LEN: usize = 256;

/// The client hints worth keeping with a session (stored raw, interpreted when displayed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientHints {
    /// `Sec-CH-UA-Platform`, unquoted: "macOS", "Windows", "Android", "Linux", "Chrome OS"…
    pub platform: Option<String>,
    /// `Sec-CH-UA-Platform-Version`, unquoted: "14.6.1"; "" on Linux.
    pub platform_version: Option<String>,
    /// `Sec-CH-UA-Mobile`: `?1` → true, `?0` → false.
    pub mobile: Option<bool>,
    /// `Sec-CH-UA-Model`, unquoted: "" on desktop, "Pixel 8" on Android.
    pub model: Option<String>,
    /// `Sec-CH-UA-Full-Version-List`, as sent (a Structured-Field list, GREASE brand included).
    pub full_version_list: Option<String>,
}

impl ClientHints {
    /// Reads the hints from request headers. A value that is not UTF-8, longer than 256 bytes
    /// or not a well-formed string (for the string hints) is ignored; only the first of
    /// repeated headers counts.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let raw = |name: &str| -> Option<&str> {
            let value = headers.get(name)?.as_bytes();
            if value.len() > MAX_HINT_LEN {
                return None;
            }
            std::str::from_utf8(value).ok().map(str::trim)
        };
        let string = |name: &str| raw(name).and_then(sf_string);
        ClientHints {
            platform: string("sec-ch-ua-platform"),
            platform_version: string("sec-ch-ua-platform-version"),
            mobile: raw("sec-ch-ua-mobile").and_then(sf_boolean),
            model: string("sec-ch-ua-model"),
            full_version_list: raw("sec-ch-ua-full-version-list").filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// True when the browser sent none of the hints.
    pub fn is_empty(&self) -> bool {
        self.platform.is_none()
            && self.platform_version.is_none()
            && self.mobile.is_none()
            && self.model.is_none()
            && self.full_version_list.is_none()
    }

    /// Whether `brand` appears in `Sec-CH-UA-Full-Version-List` (e.g. "Brave").
    pub(crate) fn has_brand(&self, brand: &str) -> bool {
        let Some(list) = &self.full_version_list else {
            return false;
        };
        list.split(',').any(|member| {
            let name = member.split(';').next().unwrap_or("").trim();
            sf_string(name).is_some_and(|n| n == brand)
        })
    }
}

/// An RFC 8941 sf-string (`"a \"b\""` → `a "b"`). Browsers have always quoted these hints,
/// but an unquoted token is accepted as-is for leniency; anything malformed is dropped.
fn sf_string(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        let token_ok = value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        return token_ok.then(|| value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                _ => return None,
            },
            // The closing quote must end the value.
            '"' => return chars.as_str().is_empty().then_some(out),
            c if c.is_control() => return None,
            c => out.push(c),
        }
    }
    None // unterminated
}

/// An RFC 8941 boolean (`?1` / `?0`).
fn sf_boolean(value: &str) -> Option<bool> {
    match value {
        "?1" => Some(true),
        "?0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    #[test]
    fn reads_chromium_hints_and_removes_quotes() {
        let h = headers(&[
            ("Sec-CH-UA-Platform", b"\"macOS\""),
            ("Sec-CH-UA-Platform-Version", b"\"14.6.1\""),
            ("Sec-CH-UA-Mobile", b"?0"),
            ("Sec-CH-UA-Model", b"\"\""),
            (
                "Sec-CH-UA-Full-Version-List",
                b"\"Google Chrome\";v=\"131.0.6778.86\", \"Chromium\";v=\"131.0.6778.86\", \"Not_A Brand\";v=\"24.0.0.0\"",
            ),
        ]);
        let hints = ClientHints::from_headers(&h);
        assert_eq!(hints.platform.as_deref(), Some("macOS"));
        assert_eq!(hints.platform_version.as_deref(), Some("14.6.1"));
        assert_eq!(hints.mobile, Some(false));
        assert_eq!(hints.model.as_deref(), Some(""));
        assert!(hints.has_brand("Google Chrome"));
        assert!(!hints.has_brand("Brave"));
        assert!(!hints.is_empty());
    }

    #[test]
    fn no_hints_is_empty() {
        let hints = ClientHints::from_headers(&HeaderMap::new());
        assert!(hints.is_empty());
        assert_eq!(hints, ClientHints::default());
    }

    #[test]
    fn ignores_non_utf8_overlong_and_malformed_values() {
        let long = format!("\"{}\"", "x".repeat(300));
        let h = headers(&[
            ("Sec-CH-UA-Platform", b"\"mac\xffOS\""),
            ("Sec-CH-UA-Platform-Version", long.as_bytes()),
            ("Sec-CH-UA-Mobile", b"yes"),
            ("Sec-CH-UA-Model", b"\"unterminated"),
        ]);
        assert!(ClientHints::from_headers(&h).is_empty());
    }

    #[test]
    fn first_of_repeated_headers_wins_and_escapes_are_decoded() {
        let h = headers(&[
            ("Sec-CH-UA-Platform", b"\"Windows\""),
            ("Sec-CH-UA-Platform", b"\"Linux\""),
            ("Sec-CH-UA-Model", b"\"Pixel \\\"8\\\"\""),
            ("Sec-CH-UA-Mobile", b"?1"),
        ]);
        let hints = ClientHints::from_headers(&h);
        assert_eq!(hints.platform.as_deref(), Some("Windows"));
        assert_eq!(hints.model.as_deref(), Some("Pixel \"8\""));
        assert_eq!(hints.mobile, Some(true));
    }

    #[test]
    fn sf_string_edge_cases() {
        assert_eq!(sf_string("\"a\" trailing"), None);
        assert_eq!(sf_string("\"a\\x\""), None);
        assert_eq!(sf_string("macOS").as_deref(), Some("macOS"));
        assert_eq!(sf_string("\"\"").as_deref(), Some(""));
        assert_eq!(sf_string("Chrome OS"), None, "an unquoted value with a space is not a token");
    }
}
