//! Settings → Security → Audit log: the person's own account events, newest first, a page at a
//! time (a sensitive page). HTML and `GET /.dalea/api/audit-log?before=&limit=`.

use pingora::proxy::Session;
use serde::Serialize;

use super::{guard, query_param, UserView, AUDIT_LOG_PATH};
use crate::account::audit_log;
use crate::audit::AuditRecord;
use crate::clock::{ago, rfc3339};
use crate::error::GatewayError;
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::state::AppState;

const PAGE_SIZE: usize = 50;
const MAX_LIMIT: usize = 200;

/// `before` and `limit` from the query: absent is fine, garbage is a 400.
fn paging(session: &Session) -> Result<(Option<u64>, usize), GatewayError> {
    let before = match query_param(session, "before") {
        None => None,
        Some(b) => Some(b.parse::<u64>().map_err(|_| GatewayError::BadRequest("before must be an event id.".into()))?),
    };
    let limit = match query_param(session, "limit") {
        None => PAGE_SIZE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| GatewayError::BadRequest(format!("limit must be a number from 1 to {MAX_LIMIT}.")))?,
    };
    Ok((before, limit))
}

/// One page of events, and the cursor of the next (older) page if there may be one.
async fn load(
    state: &AppState,
    identity: &Identity,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<(u64, AuditRecord)>, Option<u64>), GatewayError> {
    let events = audit_log::page(state, &identity.user.id, before, limit).await?;
    let next = (events.len() == limit).then(|| events.last().map(|(seq, _)| *seq)).flatten();
    Ok((events, next))
}

/// GET /.dalea/api/audit-log → `{"events": […], "next_before": id | null}`
pub async fn json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    guard::elevated(state, &identity)?;
    let (before, limit) = paging(session)?;
    let (events, next) = load(state, &identity, before, limit).await?;
    let events: Vec<serde_json::Value> = events.iter().map(|(seq, r)| r.view(*seq)).collect();
    let body = serde_json::json!({ "events": events, "next_before": next });
    Ok(Reply::json(200, body.to_string().into_bytes()))
}

#[derive(Serialize)]
struct Row {
    description: String,
    kind: &'static str,
    at: String,
    ago: String,
    ip: Option<String>,
    device: Option<String>,
    session_id: Option<String>,
    this_session: bool,
    warning: bool,
}

#[derive(Serialize)]
struct AuditPage<'a> {
    user: UserView<'a>,
    csrf_token: &'a str,
    tab: &'static str,
    tab_label: &'static str,
    rows: Vec<Row>,
    older_url: Option<String>,
    newest_url: Option<&'static str>,
}

/// GET /.dalea/settings/security/audit-log?before= (sensitive)
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    guard::elevated(state, &identity)?;
    let (before, _) = paging(session)?;
    let (events, next) = load(state, &identity, before, PAGE_SIZE).await?;
    let now = state.sessions.now();
    let current = identity.session.session.id.to_string();
    let rows = events
        .into_iter()
        .map(|(_, r)| Row {
            description: r.event.describe(),
            kind: r.event.kind(),
            at: rfc3339(r.at),
            ago: ago(r.at, now),
            ip: r.ip.map(|ip| ip.to_string()),
            device: r.device,
            this_session: r.session_id.as_deref() == Some(current.as_str()),
            session_id: r.session_id,
            warning: matches!(r.event.kind(), "sign_in_failed" | "elevation_failed" | "sign_in_warning"),
        })
        .collect();
    let page = AuditPage {
        user: UserView::of(&identity.user),
        csrf_token: identity.session.session.csrf.expose(),
        tab: "audit-log",
        tab_label: "Audit log",
        rows,
        older_url: next.map(|n| format!("{AUDIT_LOG_PATH}?before={n}")),
        newest_url: before.map(|_| AUDIT_LOG_PATH),
    };
    Ok(Reply::html(200, state.templates.render("audit_log.html", &page)))
}
