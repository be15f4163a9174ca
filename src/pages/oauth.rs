//! Sign-in through a provider (`[[oauth.providers]]`): `/.dalea/oauth/{provider}/start` sends
//! the browser to the provider, `/.dalea/oauth/{provider}/callback` brings it back.
//!
//! Start keeps the flow (state, nonce, PKCE verifier, where to return, remember-me) in the
//! pending store under its `state`, for [`OAUTH_MAX_AGE`], together with the hash of a random
//! value in a cookie of this browser; the callback takes it once and only from that browser.
//! So the callback may land on any replica, a replayed or forged `state` finds nothing, and a
//! `state` carried into another browser (login CSRF) is refused. A callback whose flow is gone —
//! expired, already used, a gateway restart with the embedded store's file lost, or a second tab —
//! goes back to the sign-in page with a note to choose again: never a bare 400.
//!
//! Start answers GET (links from apps: `?rd=`, `&remember_me=on`) and POST (the sign-in page's
//! form, with its CSRF token and remember-me checkbox). Each start keeps a record, so starts are
//! counted per client network (`[rate_limit] signin_starts_per_network`) before anything else is
//! done; past the limit, and when the pending store is full, the sign-in page says so.

use pingora::proxy::Session;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::signin::{self, render_form, RESTART_NOTICE};
use super::{body, csrf, query_param, redirect, trusted_forwarded_host, SIGNIN_PATH};
use crate::auth::external::{self, Resolution};
use crate::auth::oauth::{OAuthError, PendingFlow};
use crate::auth::throttle::{reserve_start, Rule};
use crate::error::GatewayError;
use crate::proxy::authenticate;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::respond::Reply;
use crate::session::cookie::OAUTH_MAX_AGE;
use crate::session::token::random_string;
use crate::session::SignInMethod;
use crate::state::AppState;

/// The pending-store kind of these flows.
const KIND: &str = "oauth";

/// What the callback needs from the start, kept in the pending store.
#[derive(Serialize, Deserialize)]
struct PendingSignIn {
    flow: PendingFlow,
    rd: String,
    remember_me: bool,
    /// SHA-256 (hex) of the browser's binding cookie.
    binding: String,
}

fn binding_hash(value: &str) -> String {
    Sha256::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn metric_method(provider: &str) -> String {
    format!("oauth:{provider}")
}

/// GET or POST `/.dalea/oauth/{provider}/start`.
pub async fn start(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    provider: &str,
) -> Result<Reply, GatewayError> {
    let display = state.config.oauth.provider(provider).ok_or(GatewayError::NotFound)?.display_name.clone();
    let (rd, remember_me) = if session.req_header().method == http::Method::POST {
        csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
        body::require_content_type(session, body::FORM)?;
        let fields = body::form(&body::read(session, state.config.server.max_form_bytes).await?);
        let rd = redirect::safe_redirect(fields.get("rd").map(String::as_str));
        let cookies = session.req_header().headers.get_all(http::header::COOKIE);
        let expected = state.cookies.csrf_value(cookies.iter().map(|v| v.as_bytes()));
        let csrf_ok = expected
            .is_some_and(|e| csrf::check_token(&crate::session::Secret::from(e), fields.get("csrf_token")).is_ok());
        if !csrf_ok {
            let msg = "This sign-in form had expired. Please sign in again.";
            return Ok(render_form(state, session, 403, &rd, "", Some(msg)));
        }
        (rd, fields.get("remember_me").is_some_and(|v| is_on(v)))
    } else {
        let rd = redirect::safe_redirect(query_param(session, "rd").as_deref());
        (rd, query_param(session, "remember_me").is_some_and(|v| is_on(&v)))
    };

    // Already signed in: go straight on, as the sign-in page does (a store outage just goes on
    // to the provider).
    if let Ok((Some(_), _)) = authenticate::identify(state, session.req_header(), ctx.client_ip).await {
        return Ok(Reply::see_other(&rd));
    }
    let now = state.sessions.now();
    let method = metric_method(provider);
    let rule = Rule::signin_start(&state.config.rate_limit);
    if let Err(retry) = reserve_start(state.throttle.as_ref(), &rule, ctx.client_ip, now).await? {
        state.metrics.auth.signin(&method, "throttled");
        let ip = ip_field(ctx);
        tracing::info!(provider, outcome = "throttled", client.ip = %ip, "sign-in start refused: too many from its network");
        return Ok(refusal(state, session, &rd, &GatewayError::TooManySignInStarts(retry.as_secs().max(1))));
    }
    let redirect_uri = state.config.oauth.redirect_uri(provider);
    let (url, flow) = match state.oauth.start(provider, &redirect_uri, now).await {
        Ok(started) => started,
        Err(e) => {
            state.metrics.auth.signin(&method, "error");
            tracing::warn!(provider, error = %e, "sign-in through a provider could not start");
            return Ok(render_form(state, session, 502, &rd, "", Some(&unreachable_message(&display))));
        }
    };
    // One binding per browser, shared by its tabs: a second tab's sign-in does not break the first.
    let cookies = session.req_header().headers.get_all(http::header::COOKIE);
    let binding = state.cookies.oauth_binding(cookies.iter().map(|v| v.as_bytes())).unwrap_or_else(random_string::<32>);
    let id = flow.state.clone();
    let pending = PendingSignIn { flow, rd, remember_me, binding: binding_hash(&binding) };
    let value = serde_json::to_vec(&pending).map_err(|_| GatewayError::Internal)?;
    let expires_at = now + OAUTH_MAX_AGE.as_millis() as i64;
    if let Err(e) = state.pending.put_pending(KIND, &id, &value, expires_at).await {
        state.metrics.auth.signin(&method, "error");
        return match GatewayError::from_pending_put(e, &method) {
            full @ GatewayError::SignInsInProgress => Ok(refusal(state, session, &pending.rd, &full)),
            other => Err(other),
        };
    }
    Ok(Reply::see_other(&url).header("set-cookie", state.cookies.set_oauth_binding(&binding)))
}

/// The sign-in page again, saying why this sign-in could not start (`err`'s status, message and
/// `Retry-After`).
fn refusal(state: &AppState, session: &Session, rd: &str, err: &GatewayError) -> Reply {
    let page = render_form(state, session, err.status(), rd, "", Some(&err.to_string()));
    err.headers().into_iter().fold(page, |page, (name, value)| page.header(name, value))
}

fn ip_field(ctx: &RequestCtx) -> String {
    ctx.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

fn is_on(v: &str) -> bool {
    matches!(v, "on" | "true" | "1")
}

fn unreachable_message(display: &str) -> String {
    format!("{display} could not be reached just now. Try again in a moment, or sign in another way.")
}

/// GET `/.dalea/oauth/{provider}/callback?code=&state=` (or `?error=&state=`).
pub async fn callback(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    provider: &str,
) -> Result<Reply, GatewayError> {
    let display = state.config.oauth.provider(provider).ok_or(GatewayError::NotFound)?.display_name.clone();
    let restart = || Reply::see_other(&format!("{SIGNIN_PATH}?notice={RESTART_NOTICE}"));
    let Some(pending) = take_flow(state, session, provider).await? else {
        return Ok(restart());
    };
    let rd = pending.rd.clone();
    let method = metric_method(provider);

    if let Some(error) = query_param(session, "error") {
        let cancelled = error == "access_denied";
        let outcome = if cancelled { "cancelled" } else { "failure" };
        state.metrics.auth.signin(&method, outcome);
        tracing::info!(provider, outcome, error = %safe_code(&error), "sign-in through a provider did not complete");
        let msg = if cancelled {
            format!("Signing in with {display} was cancelled. Choose how to sign in.")
        } else {
            let code = safe_code(&error);
            let code = if code.is_empty() { String::new() } else { format!(" ({code})") };
            format!("{display} could not sign you in{code}. Try again, or sign in another way.")
        };
        return Ok(render_form(state, session, 401, &rd, "", Some(&msg)));
    }
    // Its length is the provider client's to judge: it says so, and the log has it.
    let Some(code) = query_param(session, "code").filter(|c| !c.is_empty()) else {
        state.metrics.auth.signin(&method, "failure");
        let msg = format!("{display} sent no sign-in code back. Please try again.");
        return Ok(render_form(state, session, 400, &rd, "", Some(&msg)));
    };

    let now = state.sessions.now();
    let redirect_uri = state.config.oauth.redirect_uri(provider);
    let identity = match state.oauth.finish(&pending.flow, &redirect_uri, &code, now).await {
        Ok(identity) => identity,
        Err(e) => {
            let (status, outcome) = match &e {
                OAuthError::Unreachable(_) | OAuthError::Misconfigured(_) => (502, "error"),
                _ => (401, "failure"),
            };
            state.metrics.auth.signin(&method, outcome);
            tracing::warn!(provider, outcome, error = %e, "sign-in through a provider failed");
            let msg = match e {
                OAuthError::Unreachable(_) => unreachable_message(&display),
                OAuthError::Misconfigured(why) => {
                    format!("{why} on this site just now. Sign in another way, and tell the site's administrators.")
                }
                other => format!("Signing in with {display} did not work: {other}. Please try again."),
            };
            return Ok(render_form(state, session, status, &rd, "", Some(&msg)));
        }
    };

    let user = match external::resolve(state, &identity, now).await? {
        Resolution::Person(user, how) => {
            tracing::debug!(provider, user.id = %user.id, ?how, "provider identity resolved");
            user
        }
        Resolution::Refused(refusal) => {
            state.metrics.auth.signin(&method, "refused");
            tracing::info!(
                provider,
                outcome = "refused",
                reason = refusal.reason(),
                "sign-in through a provider refused"
            );
            return Ok(render_form(state, session, 403, &rd, "", Some(&refusal.message(&display))));
        }
    };
    let method_used = SignInMethod::OAuth(provider.to_string());
    let started = signin::start_session(state, session, ctx, &user, method_used, pending.remember_me).await;
    let (_, cookie) = match started {
        Ok(s) => s,
        Err(e) => {
            state.metrics.auth.signin(&method, "error");
            return Err(e);
        }
    };
    state.metrics.auth.signin(&method, "success");
    Ok(Reply::see_other(&rd).header("set-cookie", cookie).header("set-cookie", state.cookies.clear_csrf()))
}

/// The flow this callback belongs to: taken from the store (so it never works twice) and only
/// if this browser started it. `None` for anything else — missing, malformed, unknown, expired
/// or used `state`, another provider's flow, another browser.
async fn take_flow(state: &AppState, session: &Session, provider: &str) -> Result<Option<PendingSignIn>, GatewayError> {
    let Some(id) = query_param(session, "state").filter(|s| crate::pending::is_valid_id(s)) else {
        tracing::info!(provider, "provider callback without a usable state: sign-in restarted");
        return Ok(None);
    };
    let now = state.sessions.now();
    let Some(raw) = state.pending.take_pending(KIND, &id, now).await? else {
        tracing::info!(provider, "provider callback for an unknown or finished sign-in: restarted");
        return Ok(None);
    };
    let Ok(pending) = serde_json::from_slice::<PendingSignIn>(&raw) else {
        tracing::warn!(provider, "unreadable pending sign-in record: restarted");
        return Ok(None);
    };
    let cookies = session.req_header().headers.get_all(http::header::COOKIE);
    let binding = state.cookies.oauth_binding(cookies.iter().map(|v| v.as_bytes()));
    let same_browser =
        binding.is_some_and(|b| bool::from(binding_hash(&b).as_bytes().ct_eq(pending.binding.as_bytes())));
    if !same_browser || pending.flow.provider != provider {
        tracing::warn!(provider, "provider callback from another browser or for another provider: refused");
        return Ok(None);
    }
    Ok(Some(pending))
}

/// A provider's error code as shown and logged: its first 64 characters of `[A-Za-z0-9_.-]`.
fn safe_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_codes_are_cut_to_safe_characters() {
        assert_eq!(safe_code("access_denied"), "access_denied");
        assert_eq!(safe_code("<script>alert(1)</script>"), "scriptalert1script");
        assert_eq!(safe_code(&"x".repeat(500)).len(), 64);
    }

    #[test]
    fn the_binding_is_kept_only_as_a_hash() {
        let h = binding_hash("value");
        assert_eq!(h.len(), 64);
        assert_ne!(h, "value");
    }
}
