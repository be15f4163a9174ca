//! The built-in pages and JSON API under `/.dalea/`, answered by the gateway itself.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/.dalea/signin?rd=` | sign-in page |
//! | POST | `/.dalea/signin` | sign-in form (CSRF cookie + token) |
//! | POST | `/.dalea/api/signin` | JSON sign-in |
//! | POST | `/.dalea/signout` | sign out this session (CSRF token) |
//! | GET | `/.dalea/settings/security/sessions` | the sessions page |
//! | POST | `/.dalea/settings/security/sessions/{id}/revoke` | the page's × (CSRF token) |
//! | GET | `/.dalea/api/sessions` | sessions as JSON |
//! | DELETE | `/.dalea/api/sessions/{id}` | revoke one |

pub mod body;
pub mod csrf;
pub mod redirect;
mod sessions;
mod signin;
pub mod templates;

use http::Method;
use pingora::proxy::Session;

use crate::error::GatewayError;
use crate::proxy::authenticate;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::respond::Reply;
use crate::state::AppState;

pub const PREFIX: &str = "/.dalea";
pub const SIGNIN_PATH: &str = "/.dalea/signin";
pub const SESSIONS_PATH: &str = "/.dalea/settings/security/sessions";

pub fn is_builtin(path: &str) -> bool {
    path == PREFIX || path.starts_with("/.dalea/")
}

/// The sign-in page URL that comes back to `rd` afterwards.
pub fn signin_url(rd: &str) -> String {
    let rd = redirect::safe_redirect(Some(rd));
    let encoded: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{SIGNIN_PATH}?rd={encoded}")
}

/// Answers a `/.dalea/*` request. Always writes a response.
pub async fn handle(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> pingora::Result<bool> {
    let path = session.req_header().uri.path().to_string();
    let api = path.starts_with("/.dalea/api/");
    let reply = match dispatch(state, session, ctx, &path).await {
        Ok(reply) => reply,
        Err(err) => {
            if has_body(session) {
                // The body may be half read (too large, malformed, never sent): never let its
                // remains be parsed as the next request on this connection.
                session.set_keepalive(None);
            }
            let html = !api && authenticate::accepts_html(session.req_header());
            let signin = (err == GatewayError::SignInRequired).then_some(("signin_url", SIGNIN_PATH));
            Reply::error(&err, html.then(|| state.templates.error_page(&err)), signin)
        }
    };
    reply.send(session).await
}

async fn dispatch(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    path: &str,
) -> Result<Reply, GatewayError> {
    let method = session.req_header().method.clone();
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        SIGNIN_PATH if read => signin::page(state, session, ctx).await,
        SIGNIN_PATH if method == Method::POST => signin::form(state, session, ctx).await,
        SIGNIN_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD, POST")),
        "/.dalea/api/signin" if method == Method::POST => signin::json(state, session, ctx).await,
        "/.dalea/api/signin" => Err(GatewayError::MethodNotAllowed("POST")),
        "/.dalea/signout" if method == Method::POST => signin::sign_out(state, session, ctx).await,
        "/.dalea/signout" => Err(GatewayError::MethodNotAllowed("POST")),
        SESSIONS_PATH if read => sessions::page(state, session, ctx).await,
        SESSIONS_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        "/.dalea/api/sessions" if read => sessions::list_json(state, session, ctx).await,
        "/.dalea/api/sessions" => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        PREFIX
        | "/.dalea/"
        | "/.dalea/settings"
        | "/.dalea/settings/"
        | "/.dalea/settings/security"
        | "/.dalea/settings/security/"
            if read =>
        {
            Ok(Reply::see_other(SESSIONS_PATH))
        }
        _ => {
            if let Some(id) = path.strip_prefix("/.dalea/api/sessions/") {
                return match method {
                    Method::DELETE => sessions::revoke_json(state, session, ctx, id).await,
                    _ => Err(GatewayError::MethodNotAllowed("DELETE")),
                };
            }
            let form_revoke =
                path.strip_prefix("/.dalea/settings/security/sessions/").and_then(|rest| rest.strip_suffix("/revoke"));
            if let Some(id) = form_revoke {
                return match method {
                    Method::POST => sessions::revoke_form(state, session, ctx, id).await,
                    _ => Err(GatewayError::MethodNotAllowed("POST")),
                };
            }
            Err(GatewayError::NotFound)
        }
    }
}

fn has_body(session: &Session) -> bool {
    let h = &session.req_header().headers;
    h.contains_key(http::header::TRANSFER_ENCODING)
        || h.get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
}

/// `X-Forwarded-Host` as sent by a trusted proxy (for the Origin check).
fn trusted_forwarded_host<'a>(session: &'a Session, ctx: &RequestCtx) -> Option<&'a str> {
    ctx.peer_trusted
        .then(|| session.req_header().headers.get("x-forwarded-host").and_then(|v| v.to_str().ok()))
        .flatten()
}

/// A query parameter, percent-decoded (first occurrence).
fn query_param(session: &Session, name: &str) -> Option<String> {
    let q = session.req_header().uri.query()?;
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
