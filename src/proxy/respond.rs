//! Local responses written straight to the client (built-in pages, redirects, errors): always
//! with `Content-Length` (so keep-alive survives), `Cache-Control: no-store` and the security
//! headers our own pages need.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::error::GatewayError;

/// Content-Security-Policy of the built-in pages: no scripts, inline styles only, forms post
/// back to us, never framed.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// What [`Reply::with_script`] adds to a page's policy: our own script files (never inline
/// script) and requests back to us (the passkey ceremonies' JSON calls).
const SCRIPT_CSP: &str = "; script-src 'self'; connect-src 'self'";
/// How long browsers may keep the gateway's static files without asking again.
const ASSET_MAX_AGE_SECS: u32 = 3600;

/// A response we produce ourselves.
#[derive(Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Reply {
    pub fn new(status: u16, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Self {
        let mut headers = vec![
            ("cache-control", "no-store".to_string()),
            ("x-content-type-options", "nosniff".to_string()),
            ("referrer-policy", "same-origin".to_string()),
        ];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.to_string()));
        }
        Reply { status, headers, body: body.into() }
    }

    pub fn html(status: u16, body: String) -> Self {
        Reply::html_with_form_targets(status, body, &[])
    }

    /// A page whose forms may also lead to these origins (the sign-in page's provider buttons:
    /// `form-action` covers the redirects after a form is sent).
    pub fn html_with_form_targets(status: u16, body: String, origins: &[String]) -> Self {
        let csp = if origins.is_empty() {
            PAGE_CSP.to_string()
        } else {
            PAGE_CSP.replace("form-action 'self'", &format!("form-action 'self' {}", origins.join(" ")))
        };
        Reply::new(status, Some("text/html; charset=utf-8"), body)
            .header("content-security-policy", csp)
            .header("x-frame-options", "DENY")
    }

    /// Lets the page run the gateway's own script files (`/.dalea/assets/…`) and call back to the
    /// gateway from them; other pages stay script-free.
    pub fn with_script(mut self) -> Self {
        for (name, value) in &mut self.headers {
            if *name == "content-security-policy" && !value.contains("script-src") {
                value.push_str(SCRIPT_CSP);
            }
        }
        self
    }

    /// A static file of the gateway's own (`/.dalea/assets/…`): cacheable, validated by `etag`.
    pub fn asset(content_type: &'static str, body: &'static [u8], etag: &str) -> Self {
        Reply::new(200, Some(content_type), Bytes::from_static(body)).cacheable(etag)
    }

    /// 304 Not Modified for a static file the client already has (its `If-None-Match` matched).
    pub fn not_modified(etag: &str) -> Self {
        Reply::empty(304).cacheable(etag)
    }

    fn cacheable(mut self, etag: &str) -> Self {
        for (name, value) in &mut self.headers {
            if *name == "cache-control" {
                *value = format!("public, max-age={ASSET_MAX_AGE_SECS}");
            }
        }
        self.header("etag", etag)
    }

    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Reply::new(status, Some("application/json"), body)
    }

    pub fn empty(status: u16) -> Self {
        Reply::new(status, None, Bytes::new())
    }

    /// The answer to a `DELETE`: 204 when something of the caller's was removed, 404 otherwise.
    pub fn deleted(found: bool) -> Result<Self, GatewayError> {
        if found {
            Ok(Reply::empty(204))
        } else {
            Err(GatewayError::NotFound)
        }
    }

    /// 303 See Other: after a form POST or for a browser navigation that must sign in first.
    pub fn see_other(location: &str) -> Self {
        Reply::empty(303).header("location", location)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// An error as JSON (API clients) or as a small HTML page (browsers).
    pub fn error(err: &GatewayError, html_page: Option<String>, extra: Option<(&str, &str)>) -> Self {
        let reply = match html_page {
            Some(page) => Reply::html(err.status(), page),
            None => Reply::json(err.status(), err.json(extra)),
        };
        err.headers().into_iter().fold(reply, |r, (k, v)| r.header(k, v))
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// Writes the reply; returns `Ok(true)` for `request_filter` ("answered, stop here").
    pub async fn send(self, session: &mut Session) -> pingora::Result<bool> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 2))?;
        for (name, value) in self.headers {
            resp.append_header(name, value)?;
        }
        // A 304's Content-Length would describe the cached file, which this reply does not carry.
        if self.status != 304 {
            resp.insert_header("content-length", self.body.len().to_string())?;
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        let empty = self.body.is_empty() || head_only;
        session.write_response_header(Box::new(resp), empty).await?;
        if !empty {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Reply, name: &str) -> Vec<&'a str> {
        r.headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.as_str()).collect()
    }

    #[test]
    fn pages_are_script_free_unless_they_ask() {
        let plain = Reply::html(200, String::new());
        assert!(!header(&plain, "content-security-policy")[0].contains("script-src"));
        let scripted = Reply::html_with_form_targets(200, String::new(), &["https://idp.example".into()]).with_script();
        let csp = header(&scripted, "content-security-policy")[0];
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
        assert!(csp.contains("form-action 'self' https://idp.example"), "{csp}");
        assert!(!csp.contains("unsafe-inline'; script") && !csp.contains("script-src 'unsafe"), "{csp}");
    }

    #[test]
    fn assets_are_cacheable_and_validated() {
        let r = Reply::asset("text/javascript; charset=utf-8", b"x", "\"abc\"");
        assert_eq!(header(&r, "cache-control"), ["public, max-age=3600"]);
        assert_eq!(header(&r, "etag"), ["\"abc\""]);
        assert_eq!(header(&r, "content-type"), ["text/javascript; charset=utf-8"]);
        assert_eq!(header(&r, "x-content-type-options"), ["nosniff"]);
        let unchanged = Reply::not_modified("\"abc\"");
        assert_eq!((unchanged.status(), header(&unchanged, "cache-control")), (304, vec!["public, max-age=3600"]));
        assert_eq!(header(&unchanged, "etag"), ["\"abc\""]);
    }
}
