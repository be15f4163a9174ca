//! Writing and reading a person's audit log: every event goes through [`record`], which adds
//! the context (time, client IP, acting session, device) and never fails the action it records.

use std::net::IpAddr;

use crate::audit::{AuditEvent, AuditRecord, KEEP_PER_PERSON};
use crate::client_info::ClientHints;
use crate::session::store::StoreError;
use crate::session::Session;
use crate::state::AppState;

/// Who did it: the client IP, the acting session (if any) and a device description.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub ip: Option<IpAddr>,
    pub session_id: Option<String>,
    pub device: Option<String>,
}

impl Actor {
    /// A signed-in session acting from `ip`.
    pub fn session(state: &AppState, session: &Session, ip: Option<IpAddr>) -> Actor {
        let device = state.client_info.describe_device(&session.user_agent, &session.client_hints).device;
        Actor { ip, session_id: Some(session.id.to_string()), device: Some(device) }
    }

    /// No session (a failed sign-in): the device from the request's own headers.
    pub fn anonymous(state: &AppState, ip: Option<IpAddr>, user_agent: &str, hints: &ClientHints) -> Actor {
        let device = state.client_info.describe_device(user_agent, hints).device;
        Actor { ip, session_id: None, device: Some(device) }
    }
}

/// Appends `event` to `user_id`'s audit log and logs it. A store failure is logged, not
/// returned: the action itself already happened (or was refused) and must say so.
pub async fn record(state: &AppState, user_id: &str, actor: Actor, event: AuditEvent) {
    let kind = event.kind();
    let entry = AuditRecord {
        at: state.sessions.now(),
        ip: actor.ip,
        session_id: actor.session_id,
        device: actor.device,
        event,
    };
    tracing::info!(
        audit = kind,
        user.id = %user_id,
        session.id = entry.session_id.as_deref().unwrap_or("-"),
        client.ip = %entry.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
        "audit event"
    );
    if let Err(e) = state.accounts.append_audit(user_id, &entry.to_json(), KEEP_PER_PERSON).await {
        tracing::warn!(error = %e, audit = kind, user.id = %user_id, "could not store an audit event");
    }
}

/// One page of the log, newest first: `(seq, record)` pairs; records that no longer decode
/// are skipped.
pub async fn page(
    state: &AppState,
    user_id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
    let entries = state.accounts.audit_page(user_id, before, limit).await?;
    Ok(entries.into_iter().filter_map(|e| AuditRecord::from_json(&e.json).map(|r| (e.seq, r))).collect())
}
