//! The built-in pages and JSON API under `/.dalea/`, answered by the gateway itself.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/.dalea/signin?rd=` | sign-in page |
//! | POST | `/.dalea/signin` | sign-in form (CSRF cookie + token) |
//! | POST | `/.dalea/api/signin` | JSON sign-in |
//! | POST | `/.dalea/signout` | sign out this session (CSRF token) |
//! | GET, POST | `/.dalea/oauth/{provider}/start` | sign in through a provider (POST: the sign-in form) |
//! | GET | `/.dalea/oauth/{provider}/callback` | the provider sends the browser back here |
//! | GET | `/.dalea/settings/security/sessions` | the sessions page |
//! | POST | `/.dalea/settings/security/sessions/{id}/revoke` | the page's × (CSRF token) |
//! | GET | `/.dalea/api/sessions` | sessions as JSON |
//! | DELETE | `/.dalea/api/sessions/{id}` | revoke one |
//! | GET, POST | `/.dalea/elevate?rd=` | confirm it's you (TOTP code, or password without one) |
//! | POST | `/.dalea/api/elevate` | the same as JSON |
//! | GET | `/.dalea/settings/security/totp` | authenticator app: status, set-up QR code |
//! | POST | `/.dalea/settings/security/totp/{enroll,confirm,disable}` | its forms |
//! | GET, DELETE | `/.dalea/api/totp` | status; remove (sensitive) |
//! | POST | `/.dalea/api/totp/enroll`, `/.dalea/api/totp/confirm` | set up as JSON |
//! | GET, POST | `/.dalea/settings/security/password` | change password (sensitive) |
//! | POST | `/.dalea/api/password` | the same as JSON |
//! | GET | `/.dalea/settings/security/audit-log` | audit log (sensitive) |
//! | GET | `/.dalea/api/audit-log?before=&limit=` | the same as JSON |
//! | GET, POST | `/.dalea/settings/security/api-keys` | API keys tab: list; create (secret shown once) |
//! | POST | `/.dalea/settings/security/api-keys/{id}/revoke` | the tab's × |
//! | GET, POST | `/.dalea/api/api-keys` | list; create → 201 `{"id","key",…}` |
//! | DELETE | `/.dalea/api/api-keys/{id}` | revoke → 204 |
//! | GET | `/.dalea/settings/security/passkeys` | Passkeys tab: list; add (with JavaScript) |
//! | POST | `/.dalea/settings/security/passkeys/{id}/{rename,remove}` | its forms (remove: sensitive) |
//! | GET | `/.dalea/api/passkeys` | list |
//! | PATCH, DELETE | `/.dalea/api/passkeys/{id}` | rename `{"name"}`; remove → 204 (sensitive) |
//! | POST | `/.dalea/api/passkeys/register/{begin,finish}` | add a passkey (recent sign-in) |
//! | POST | `/.dalea/api/passkeys/signin/{begin,finish}` | sign in with a passkey |
//! | POST | `/.dalea/api/elevate/passkey/{begin,finish}` | confirm it's you with a passkey |
//! | GET | `/.dalea/assets/passkeys.js` | the passkey pages' script (cacheable) |
//!
//! Requests carrying an API key are refused here: keys are for the upstream apps' routes.
//!
//! A GET of a page the client may not see yet is sent to sign in or to confirm it's you, and
//! back afterwards; API calls get 401 with the URL to go to.

mod api_keys;
mod audit_log;
pub mod body;
pub mod csrf;
mod elevate;
mod guard;
mod names;
mod oauth;
mod passkeys;
mod password;
pub mod redirect;
mod sessions;
mod signin;
pub mod templates;
mod totp;

use http::Method;
use pingora::proxy::Session;

use crate::api_keys::request::{presented, Presented};
use crate::error::GatewayError;
use crate::proxy::authenticate;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::respond::Reply;
use crate::state::AppState;

pub const PREFIX: &str = "/.dalea";
pub const SIGNIN_PATH: &str = "/.dalea/signin";
pub const SESSIONS_PATH: &str = "/.dalea/settings/security/sessions";
pub const ELEVATE_PATH: &str = "/.dalea/elevate";
pub const TOTP_PATH: &str = "/.dalea/settings/security/totp";
pub const PASSWORD_PATH: &str = "/.dalea/settings/security/password";
pub const AUDIT_LOG_PATH: &str = "/.dalea/settings/security/audit-log";
pub const API_KEYS_PATH: &str = "/.dalea/settings/security/api-keys";
pub const PASSKEYS_PATH: &str = "/.dalea/settings/security/passkeys";

/// The person as the page header shows them.
#[derive(serde::Serialize)]
struct UserView<'a> {
    display_name: &'a str,
    email: &'a str,
}

impl<'a> UserView<'a> {
    fn of(user: &'a crate::auth::User) -> Self {
        UserView { display_name: &user.display_name, email: &user.email }
    }
}

pub fn is_builtin(path: &str) -> bool {
    path == PREFIX || path.starts_with("/.dalea/")
}

/// The sign-in page URL that comes back to `rd` afterwards.
pub fn signin_url(rd: &str) -> String {
    let rd = redirect::safe_redirect(Some(rd));
    let encoded: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{SIGNIN_PATH}?rd={encoded}")
}

/// The elevation page URL that comes back to `rd` afterwards.
pub fn elevate_url(rd: &str) -> String {
    let rd = redirect::safe_redirect(Some(rd));
    let encoded: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{ELEVATE_PATH}?rd={encoded}")
}

/// Answers a `/.dalea/*` request. Always writes a response.
pub async fn handle(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> pingora::Result<bool> {
    let path = session.req_header().uri.path().to_string();
    let api = path.starts_with("/.dalea/api/");
    let reply = match dispatch(state, session, ctx, &path).await {
        Ok(reply) => reply,
        Err(err @ (GatewayError::SignInRequired | GatewayError::ElevationRequired { .. }))
            if !api && is_read(session) =>
        {
            // A page (not the API) this client may not see yet: go and fix that, then come back.
            let here = session.req_header().uri.path_and_query().map_or(path.as_str(), |pq| pq.as_str()).to_string();
            match err {
                GatewayError::ElevationRequired { .. } => Reply::see_other(&elevate_url(&here)),
                _ => Reply::see_other(&signin_url(&here)).header("set-cookie", state.cookies.clear_session()),
            }
        }
        Err(err) => {
            if has_body(session) {
                // The body may be half read (too large, malformed, never sent): never let its
                // remains be parsed as the next request on this connection.
                session.set_keepalive(None);
            }
            let html = !api && authenticate::accepts_html(session.req_header());
            let link = match err {
                GatewayError::SignInRequired => Some(("signin_url", SIGNIN_PATH)),
                GatewayError::ElevationRequired { .. } => Some(("elevate_url", ELEVATE_PATH)),
                _ => None,
            };
            Reply::error(&err, html.then(|| state.templates.error_page(&err)), link)
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
    // API keys never reach the gateway's own pages or API (they could create more keys).
    match presented(session.req_header()) {
        Presented::None => {}
        Presented::Misplaced(keys) => {
            if authenticate::any_real(state, &keys).await {
                return Err(GatewayError::ApiKeyMisplaced);
            }
        }
        Presented::Key(_) | Presented::Malformed => {
            return Err(GatewayError::ApiKeyNotAccepted(
                "The gateway's own pages and API do not accept API keys: use a signed-in session.",
            ))
        }
    }
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
        ELEVATE_PATH if read => elevate::page(state, session, ctx).await,
        ELEVATE_PATH if method == Method::POST => elevate::form(state, session, ctx).await,
        ELEVATE_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD, POST")),
        "/.dalea/api/elevate" if method == Method::POST => elevate::json(state, session, ctx).await,
        "/.dalea/api/elevate" => Err(GatewayError::MethodNotAllowed("POST")),
        TOTP_PATH if read => totp::page(state, session, ctx).await,
        TOTP_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        "/.dalea/settings/security/totp/enroll" if method == Method::POST => {
            totp::enroll_form(state, session, ctx).await
        }
        "/.dalea/settings/security/totp/confirm" if method == Method::POST => {
            totp::confirm_form(state, session, ctx).await
        }
        "/.dalea/settings/security/totp/disable" if method == Method::POST => {
            totp::disable_form(state, session, ctx).await
        }
        "/.dalea/settings/security/totp/enroll"
        | "/.dalea/settings/security/totp/confirm"
        | "/.dalea/settings/security/totp/disable" => Err(GatewayError::MethodNotAllowed("POST")),
        "/.dalea/api/totp" if read => totp::status_json(state, session, ctx).await,
        "/.dalea/api/totp" if method == Method::DELETE => totp::disable_json(state, session, ctx).await,
        "/.dalea/api/totp" => Err(GatewayError::MethodNotAllowed("GET, HEAD, DELETE")),
        "/.dalea/api/totp/enroll" if method == Method::POST => totp::enroll_json(state, session, ctx).await,
        "/.dalea/api/totp/confirm" if method == Method::POST => totp::confirm_json(state, session, ctx).await,
        "/.dalea/api/totp/enroll" | "/.dalea/api/totp/confirm" => Err(GatewayError::MethodNotAllowed("POST")),
        PASSWORD_PATH if read => password::page(state, session, ctx).await,
        PASSWORD_PATH if method == Method::POST => password::form(state, session, ctx).await,
        PASSWORD_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD, POST")),
        "/.dalea/api/password" if method == Method::POST => password::json(state, session, ctx).await,
        "/.dalea/api/password" => Err(GatewayError::MethodNotAllowed("POST")),
        AUDIT_LOG_PATH if read => audit_log::page(state, session, ctx).await,
        AUDIT_LOG_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        "/.dalea/api/audit-log" if read => audit_log::json(state, session, ctx).await,
        "/.dalea/api/audit-log" => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        API_KEYS_PATH if read => api_keys::page(state, session, ctx).await,
        API_KEYS_PATH if method == Method::POST => api_keys::create_form(state, session, ctx).await,
        API_KEYS_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD, POST")),
        "/.dalea/api/api-keys" if read => api_keys::list_json(state, session, ctx).await,
        "/.dalea/api/api-keys" if method == Method::POST => api_keys::create_json(state, session, ctx).await,
        "/.dalea/api/api-keys" => Err(GatewayError::MethodNotAllowed("GET, HEAD, POST")),
        PASSKEYS_PATH if read => passkeys::page(state, session, ctx).await,
        PASSKEYS_PATH => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        "/.dalea/api/passkeys" if read => passkeys::list_json(state, session, ctx).await,
        "/.dalea/api/passkeys" => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        "/.dalea/api/passkeys/signin/begin" if method == Method::POST => {
            passkeys::signin_begin(state, session, ctx).await
        }
        "/.dalea/api/passkeys/signin/finish" if method == Method::POST => {
            passkeys::signin_finish(state, session, ctx).await
        }
        "/.dalea/api/passkeys/register/begin" if method == Method::POST => {
            passkeys::register_begin(state, session, ctx).await
        }
        "/.dalea/api/passkeys/register/finish" if method == Method::POST => {
            passkeys::register_finish(state, session, ctx).await
        }
        "/.dalea/api/elevate/passkey/begin" if method == Method::POST => {
            passkeys::elevate_begin(state, session, ctx).await
        }
        "/.dalea/api/elevate/passkey/finish" if method == Method::POST => {
            passkeys::elevate_finish(state, session, ctx).await
        }
        "/.dalea/api/passkeys/signin/begin"
        | "/.dalea/api/passkeys/signin/finish"
        | "/.dalea/api/passkeys/register/begin"
        | "/.dalea/api/passkeys/register/finish"
        | "/.dalea/api/elevate/passkey/begin"
        | "/.dalea/api/elevate/passkey/finish" => Err(GatewayError::MethodNotAllowed("POST")),
        "/.dalea/assets/passkeys.js" if read => passkeys::script(session),
        "/.dalea/assets/passkeys.js" => Err(GatewayError::MethodNotAllowed("GET, HEAD")),
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
            if let Some(id) = path.strip_prefix("/.dalea/api/api-keys/") {
                return match method {
                    Method::DELETE => api_keys::revoke_json(state, session, ctx, id).await,
                    _ => Err(GatewayError::MethodNotAllowed("DELETE")),
                };
            }
            if let Some(id) = path.strip_prefix("/.dalea/api/passkeys/") {
                return match method {
                    Method::PATCH => passkeys::rename_json(state, session, ctx, id).await,
                    Method::DELETE => passkeys::remove_json(state, session, ctx, id).await,
                    _ => Err(GatewayError::MethodNotAllowed("PATCH, DELETE")),
                };
            }
            if let Some(rest) = path.strip_prefix("/.dalea/settings/security/passkeys/") {
                return match (rest.rsplit_once('/'), method) {
                    (Some((id, "rename")), Method::POST) => passkeys::rename_form(state, session, ctx, id).await,
                    (Some((id, "remove")), Method::POST) => passkeys::remove_form(state, session, ctx, id).await,
                    (Some((_, "rename" | "remove")), _) => Err(GatewayError::MethodNotAllowed("POST")),
                    _ => Err(GatewayError::NotFound),
                };
            }
            if let Some(rest) = path.strip_prefix("/.dalea/oauth/") {
                return match (rest.split_once('/'), method) {
                    (Some((provider, "start")), Method::GET | Method::POST) => {
                        oauth::start(state, session, ctx, provider).await
                    }
                    (Some((_, "start")), _) => Err(GatewayError::MethodNotAllowed("GET, POST")),
                    (Some((provider, "callback")), Method::GET) => oauth::callback(state, session, ctx, provider).await,
                    (Some((_, "callback")), _) => Err(GatewayError::MethodNotAllowed("GET")),
                    _ => Err(GatewayError::NotFound),
                };
            }
            let key_revoke =
                path.strip_prefix("/.dalea/settings/security/api-keys/").and_then(|r| r.strip_suffix("/revoke"));
            if let Some(id) = key_revoke {
                return match method {
                    Method::POST => api_keys::revoke_form(state, session, ctx, id).await,
                    _ => Err(GatewayError::MethodNotAllowed("POST")),
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

fn is_read(session: &Session) -> bool {
    let method = &session.req_header().method;
    method == Method::GET || method == Method::HEAD
}

pub(super) fn has_body(session: &Session) -> bool {
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
