//! One log line per security decision (target `dalea::decision`): what was decided for which
//! route, for whom, and what the client got. Refusals (sign-in or elevation required, denied)
//! are logged at `info`; allowed requests — the bulk of traffic, an access log — at `debug`
//! (`RUST_LOG=info,dalea::decision=debug` turns them on). Query strings are never logged: they
//! can carry secrets.

use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::metrics::{DecisionKind, NO_ROUTE};
use crate::state::AppState;

/// Longest path logged; longer ones are cut (a crafted path cannot flood the log). The URI
/// parser admits only visible ASCII in paths, so a path cannot break a log line either.
const MAX_PATH: usize = 256;

pub fn log(state: &AppState, session: &Session, ctx: &RequestCtx, error: Option<&pingora::Error>) {
    let Some(decision) = ctx.decision else { return }; // built-in pages log their own events
    let refused = !matches!(decision, DecisionKind::Allowed | DecisionKind::ApiKey);
    if refused {
        if !tracing::enabled!(target: "dalea::decision", tracing::Level::INFO) {
            return;
        }
    } else if !tracing::enabled!(target: "dalea::decision", tracing::Level::DEBUG) {
        return;
    }
    let req = session.req_header();
    let path: String = req.uri.path().chars().take(MAX_PATH).collect();
    let route = ctx.route.and_then(|i| state.config.routes.get(i)).map_or(NO_ROUTE, |r| r.name.as_str());
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let user = ctx.identity.as_ref().map(|i| i.user.id.as_str()).or(ctx.api_key.as_ref().map(|k| k.user.id.as_str()));
    let session_id = ctx.identity.as_ref().map(|i| i.session.session.id.as_str());
    let api_key = ctx.api_key.as_ref().map(|k| k.key.id.as_str());
    let client_ip = ctx.client_ip.map(|ip| ip.to_string());
    let duration_ms = ctx.started.elapsed().as_secs_f64() * 1_000.0;
    let error = error.map(|e| e.to_string());
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "dalea::decision",
                $level,
                decision = decision.as_str(),
                route,
                method = %req.method,
                path = %path,
                status,
                user.id = user,
                session.id = session_id,
                api_key.id = api_key,
                client.ip = client_ip.as_deref().unwrap_or("-"),
                duration_ms,
                error,
                "request decided"
            )
        };
    }
    if refused {
        line!(tracing::Level::INFO);
    } else {
        line!(tracing::Level::DEBUG);
    }
}
