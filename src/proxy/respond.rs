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

    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Reply::new(status, Some("application/json"), body)
    }

    pub fn empty(status: u16) -> Self {
        Reply::new(status, None, Bytes::new())
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
        resp.insert_header("content-length", self.body.len().to_string())?;
        let head_only = session.req_header().method == http::Method::HEAD;
        let empty = self.body.is_empty() || head_only;
        session.write_response_header(Box::new(resp), empty).await?;
        if !empty {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(true)
    }
}
