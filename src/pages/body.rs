//! Reading request bodies of the built-in endpoints: size-capped (413), content type checked
//! (415), parsed as a form or JSON (400 on garbage).

use std::collections::HashMap;

use pingora::proxy::Session;
use serde::de::DeserializeOwned;

use crate::error::GatewayError;

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";
/// How long one read of a request body may take.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Fails with 415 unless the request's media type is `expected` (parameters like charset allowed).
pub fn require_content_type(session: &Session, expected: &'static str) -> Result<(), GatewayError> {
    let ok = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(expected));
    ok.then_some(()).ok_or(GatewayError::UnsupportedMediaType(expected))
}

/// Reads the whole body, refusing anything over `limit` bytes (by `Content-Length` up front,
/// and by counting for chunked bodies).
pub async fn read(session: &mut Session, limit: usize) -> Result<Vec<u8>, GatewayError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge);
    }
    // A client that promises a body and then stalls must not hold the connection for long.
    session.set_read_timeout(Some(BODY_READ_TIMEOUT));
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(GatewayError::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                tracing::debug!(error = %e, "could not read request body");
                return Err(GatewayError::BadRequest("The request body could not be read.".into()));
            }
        }
    }
}

/// Form fields; the first value of a repeated field wins.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::BadRequest(format!("The JSON body is not valid: {e}")))
}
