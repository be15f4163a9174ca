//! The one HTTP client every sign-in provider is spoken to with, and the rules it keeps:
//! redirects are never followed (an endpoint that redirects is an error, not a hop to wherever
//! it points: SSRF), a connection must open within 5 s and a whole exchange end within 10 s,
//! and an answer larger than 1 MiB is refused before it is read to the end.
//!
//! TLS is rustls with the ring provider installed process-wide by
//! [`crate::session::redis::install_crypto_provider`]; certificates are checked against the
//! system's roots.

use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{RequestBuilder, StatusCode};

/// The largest answer read from a provider.
pub const MAX_BODY: usize = 1024 * 1024;
/// Time to open a connection (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole request, answer included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Sent on every request (GitHub's API refuses requests without one).
pub const USER_AGENT: &str = "dalea-gateway";

/// A provider's answer, read in full.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    /// The media type without parameters, lower case (`application/json`).
    pub media_type: String,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON of type `T`, if it is that.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why no answer was had. The text is for the log (no URL, no secret), not for people.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection, a timeout, a broken answer.
    Network(String),
    /// The answer was larger than [`MAX_BODY`].
    TooLarge(StatusCode),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Network(e) => f.write_str(e),
            Failure::TooLarge(status) => write!(f, "the answer ({status}) is larger than {MAX_BODY} bytes"),
        }
    }
}

/// The shared client.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> anyhow::Result<Http> {
        crate::session::redis::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for sign-in providers: {e}"))?;
        Ok(Http { client })
    }

    pub fn get(&self, url: &str) -> RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: &str) -> RequestBuilder {
        self.client.post(url)
    }

    /// Sends `req` and reads the answer, at most [`MAX_BODY`] bytes of it. Any status is an
    /// answer (redirects included: they are not followed).
    pub async fn send(&self, req: RequestBuilder) -> Result<Answer, Failure> {
        let mut resp = req.send().await.map_err(|e| Failure::Network(e.without_url().to_string()))?;
        let status = resp.status();
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .unwrap_or_default();
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(Failure::TooLarge(status));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Failure::Network(e.without_url().to_string()))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Failure::TooLarge(status));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, media_type, body: body.freeze() })
    }
}

/// `Authorization: Basic` for a client id and secret as RFC 6749 2.3.1 says: each
/// form-urlencoded first, then joined with `:` and base64-encoded.
pub(crate) fn client_basic_auth(client_id: &str, client_secret: &str) -> HeaderValue {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = format!("{}:{}", enc(client_id), enc(client_secret));
    let mut value = HeaderValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// Adds `client_basic_auth` to `req`.
pub(crate) fn with_basic_auth(req: RequestBuilder, client_id: &str, client_secret: &str) -> RequestBuilder {
    req.header(AUTHORIZATION, client_basic_auth(client_id, client_secret))
}

/// `Authorization: Bearer <token>`, marked sensitive.
pub(crate) fn bearer(token: &str) -> HeaderValue {
    let mut value =
        HeaderValue::try_from(format!("Bearer {token}")).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    value.set_sensitive(true);
    value
}

/// Whether a URL a provider gave us (from its discovery document) may be called: `https://`,
/// or `http://` to a loopback host (a provider on this machine, as the configuration allows).
pub(crate) fn allowed_url(value: &str) -> bool {
    let Ok(url) = url::Url::parse(value) else { return false };
    let loopback = crate::config::is_loopback(&url);
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => loopback,
        _ => false,
    }
}

/// An OAuth error code from a provider, if it looks like one (`invalid_grant`): safe to show.
pub(crate) fn error_code(value: Option<&str>) -> Option<&str> {
    value.filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_id_and_secret() {
        let v = client_basic_auth("my client", "s:e/c+r%t");
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(std::str::from_utf8(&decoded).unwrap(), "my+client:s%3Ae%2Fc%2Br%25t");
        assert!(v.is_sensitive());
    }

    #[test]
    fn only_https_or_loopback_http_urls_are_called() {
        assert!(allowed_url("https://accounts.google.com/o/oauth2/v2/auth"));
        assert!(allowed_url("http://127.0.0.1:8080/token"));
        assert!(allowed_url("http://localhost/token"));
        assert!(allowed_url("http://[::1]:9/jwks"));
        assert!(!allowed_url("http://accounts.google.com/token"));
        assert!(!allowed_url("http://10.0.0.1/token"));
        assert!(!allowed_url("file:///etc/passwd"));
        assert!(!allowed_url("not a url"));
    }

    #[test]
    fn error_codes_are_shown_only_when_they_look_like_one() {
        assert_eq!(error_code(Some("invalid_grant")), Some("invalid_grant"));
        assert_eq!(error_code(Some("<script>")), None);
        assert_eq!(error_code(Some("")), None);
        assert_eq!(error_code(None), None);
    }
}
