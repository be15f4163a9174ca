//! Settings → Security → Sessions: the list (HTML and JSON) with each session's warning flags,
//! revocation (the page's × and `DELETE /.dalea/api/sessions/{id}`), and what a sign-in tells
//! the flags' history ([`after_sign_in`]).

use std::net::IpAddr;

use pingora::proxy::Session;
use serde::Serialize;

use super::{body, csrf, guard, query_param, signin_url, trusted_forwarded_host, UserView, SESSIONS_PATH};
use crate::account::audit_log::{self, Actor};
use crate::audit::AuditEvent;
use crate::auth::User;
use crate::client_info::Location;
use crate::clock::{ago, rfc3339, Millis};
use crate::error::GatewayError;
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::session::manager::Revoke;
use crate::session::{PublicId, Session as GwSession, SignInMethod};
use crate::state::AppState;
use crate::vigilance::{Fingerprint, Flag, History, NoticeKind, Place, SessionFacts, SignInFacts, NO_GEOIP_NOTE};

#[derive(Debug, Serialize)]
pub struct AuthStrength {
    pub elevated: bool,
    pub method: Option<&'static str>,
    pub elevated_at: Option<String>,
}

/// One row of the sessions list: the JSON object, plus a few display-only fields the page uses.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub browser: String,
    pub browser_version: Option<String>,
    pub os: String,
    pub device: String,
    pub ip: Option<String>,
    pub location: Option<Location>,
    pub last_active: String,
    pub created_at: String,
    pub expires_at: String,
    pub sign_in_method: String,
    pub auth_strength: AuthStrength,
    pub remember_me: bool,
    pub current: bool,
    /// The warning flags, `[{"kind","reason"}]`: in the sessions list always (`[]` when none);
    /// absent where a single session is shown without the person's history (sign-in answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<Flag>>,
    #[serde(skip)]
    pub page: PageExtras,
}

/// What only the HTML page needs.
#[derive(Debug, Default, Serialize)]
pub struct PageExtras {
    /// Phone icon instead of a laptop.
    mobile: bool,
    location_label: Option<String>,
    last_active_ago: String,
    last_active_exact: String,
    created_ago: String,
    created_at_exact: String,
    sign_in_label: String,
    strength_label: String,
    /// How this session ends: remembered until a date, or with the browser.
    ends_label: String,
    /// The flags as the row shows them (empty: an ordinary row).
    flag_lines: Vec<FlagLine>,
}

/// One warning on a row: its badge and, in words, why.
#[derive(Debug, Serialize)]
struct FlagLine {
    kind: &'static str,
    title: &'static str,
    reason: String,
}

impl SessionView {
    pub fn new(state: &AppState, s: &GwSession, last_active: Millis, ip: Option<IpAddr>, current: bool) -> Self {
        let now = state.sessions.now();
        let device = state.client_info.describe_device(&s.user_agent, &s.client_hints);
        let location = ip.and_then(|ip| state.client_info.locate(ip));
        let strength_label = match s.elevation {
            Some(e) => format!("Elevated ({})", e.method.as_str().to_uppercase().replace("PASSKEY", "passkey")),
            None => "Signed in, not elevated".to_string(),
        };
        let location_label = location
            .as_ref()
            .map(|l| [l.city.as_deref(), l.country.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", "));
        let exact = |t: Millis| {
            chrono::DateTime::from_timestamp_millis(t)
                .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default()
        };
        SessionView {
            page: PageExtras {
                mobile: s.client_hints.mobile == Some(true)
                    || ["iOS", "Android", "iPadOS"].iter().any(|m| device.os.starts_with(m)),
                location_label: location_label.filter(|l| !l.is_empty()),
                last_active_ago: ago(last_active, now),
                last_active_exact: exact(last_active),
                created_ago: ago(s.created_at, now),
                created_at_exact: exact(s.created_at),
                sign_in_label: s.sign_in_method.label(match &s.sign_in_method {
                    SignInMethod::OAuth(p) => state.config.oauth.provider(p).map(|c| c.display_name.as_str()),
                    _ => None,
                }),
                ends_label: if s.remember_me {
                    let day = chrono::DateTime::from_timestamp_millis(s.expires_at)
                        .map(|d| d.format("%-d %b %Y").to_string());
                    format!("Remembered on this device, until {} at the latest", day.unwrap_or_default())
                } else {
                    "When the browser is closed".to_string()
                },
                strength_label,
                flag_lines: Vec::new(),
            },
            id: s.id.to_string(),
            browser: device.browser,
            browser_version: device.browser_version,
            os: device.os,
            device: device.device,
            ip: ip.map(|i| i.to_string()),
            location,
            last_active: rfc3339(last_active),
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            sign_in_method: s.sign_in_method.as_string(),
            auth_strength: AuthStrength {
                elevated: s.ever_elevated,
                method: s.elevation.map(|e| e.method.as_str()),
                elevated_at: s.elevation.map(|e| rfc3339(e.at)),
            },
            remember_me: s.remember_me,
            current,
            flags: None,
        }
    }

    /// Adds the session's warning flags, given its owner's sign-in history: its device as
    /// fingerprinted from its User-Agent and hints, its place where its latest IP is (the row's
    /// location).
    fn with_flags(mut self, state: &AppState, s: &GwSession, history: &History, now: Millis) -> Self {
        let fingerprint = Fingerprint::of(&state.client_info, &s.user_agent, &s.client_hints);
        let place = self.location.as_ref().and_then(Place::from_location);
        let id = s.id.to_string();
        let facts = SessionFacts {
            session_id: &id,
            created_at: s.created_at,
            fingerprint: &fingerprint,
            place: place.as_ref(),
        };
        let flags = state.vigilance.flags(&facts, history, state.client_info.has_geoip(), now);
        self.page.flag_lines = flags
            .iter()
            .map(|f| FlagLine { kind: f.kind.as_str(), title: f.kind.title(), reason: f.reason.clone() })
            .collect();
        self.flags = Some(flags);
        self
    }
}

/// Every session of the person, most recently active first, with their flags. The person's
/// history is read once; if the store cannot give it the list is still shown, without flags.
async fn views(state: &AppState, identity: &Identity) -> Result<Vec<SessionView>, GatewayError> {
    let current = &identity.session.session.id;
    let user_id = &identity.user.id;
    let listed = state.sessions.list(user_id).await?;
    let history = match state.vigilance.history(user_id).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, user.id = %user_id, "sessions list without warning flags: no sign-in history");
            History::default()
        }
    };
    let now = state.sessions.now();
    Ok(listed
        .into_iter()
        .map(|l| {
            SessionView::new(state, &l.session, l.last_active_at, l.last_ip, &l.session.id == current)
                .with_flags(state, &l.session, &history, now)
        })
        .collect())
}

/// Right after a sign-in (password, OAuth or passkey) has started session `s`: records it in
/// the person's sign-in history (which queues the webhook's notices), and for each new-device or
/// unusual-place warning puts a `sign_in_warning` event in their audit log. Never fails the
/// sign-in: `Vigilance::on_sign_in` logs a store error and gives nothing.
pub(super) async fn after_sign_in(state: &AppState, ctx: &RequestCtx, user: &User, s: &GwSession) {
    let location = ctx.client_ip.and_then(|ip| state.client_info.locate(ip));
    let facts = SignInFacts {
        session: s,
        email: Some(user.email.as_str()).filter(|e| !e.is_empty()),
        ip: ctx.client_ip,
        fingerprint: Fingerprint::of(&state.client_info, &s.user_agent, &s.client_hints),
        location: location.as_ref(),
    };
    let Some(novelty) = state.vigilance.on_sign_in(&facts).await else { return };
    for flag in &novelty.flags {
        let Some(kind) = NoticeKind::for_flag(flag.kind) else { continue };
        tracing::info!(
            user.id = %user.id,
            session.id = %s.id,
            client.ip = %ctx.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            warning = kind.as_str(),
            "sign-in warning"
        );
        let event = AuditEvent::SignInWarning { event: kind.as_str().to_string(), reason: flag.reason.clone() };
        audit_log::record(state, &user.id, Actor::session(state, s, ctx.client_ip), event).await;
    }
}

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    view: &'a SessionView,
    #[serde(flatten)]
    page: &'a PageExtras,
}

#[derive(Serialize)]
struct SessionsPage<'a> {
    user: UserView<'a>,
    sessions: Vec<Row<'a>>,
    csrf_token: &'a str,
    notice: Option<&'static str>,
    error: Option<&'static str>,
    /// How many rows carry a warning.
    flagged: usize,
    /// Said once on the page without a GeoIP database ([`NO_GEOIP_NOTE`]).
    no_geoip_note: Option<&'static str>,
}

/// GET /.dalea/settings/security/sessions
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let user = identity.user.clone();
    let views = views(state, &identity).await?;
    // Only fixed messages: nothing from the query string reaches the page as text.
    let notice = match query_param(session, "done").as_deref() {
        Some("revoked") => Some("The session was signed out."),
        Some("gone") => Some("That session had already ended."),
        Some("password") => Some(
            "Your password was changed. Your other sessions are still signed in: sign out any you don't recognise with ×.",
        ),
        _ => None,
    };
    let error = match query_param(session, "error").as_deref() {
        Some("current") => Some("That is this session. To end it, use Sign out at the top of the page."),
        _ => None,
    };
    let page = SessionsPage {
        user: UserView::of(&user),
        sessions: views.iter().map(|v| Row { view: v, page: &v.page }).collect(),
        csrf_token: identity.session.session.csrf.expose(),
        notice,
        error,
        flagged: views.iter().filter(|v| !v.page.flag_lines.is_empty()).count(),
        no_geoip_note: (!state.client_info.has_geoip()).then_some(NO_GEOIP_NOTE),
    };
    Ok(Reply::html(200, state.templates.render("sessions.html", &page)))
}

/// GET /.dalea/api/sessions
pub async fn list_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let views = views(state, &identity).await?;
    let body = serde_json::to_vec(&serde_json::json!({ "sessions": views })).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body))
}

async fn revoke(state: &AppState, identity: &Identity, ctx: &RequestCtx, raw_id: &str) -> Result<Revoke, GatewayError> {
    let Some(id) = PublicId::parse(raw_id) else { return Ok(Revoke::NotFound) };
    let outcome = state.sessions.revoke(&identity.user.id, &id, &identity.session.session.id).await?;
    if outcome == Revoke::Revoked {
        let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
        let event = AuditEvent::SessionRevoked { revoked_session_id: id.to_string() };
        audit_log::record(state, &identity.user.id, actor, event).await;
    }
    Ok(outcome)
}

/// DELETE /.dalea/api/sessions/{id}: 204, 409 for the caller's own session, 404 otherwise.
pub async fn revoke_json(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let identity = guard::api_call(state, session, ctx).await?;
    match revoke(state, &identity, ctx, id).await? {
        Revoke::Revoked => Ok(Reply::empty(204)),
        Revoke::IsCurrent => Err(GatewayError::Conflict(
            "This is the session making the request. To end it, sign out (POST /.dalea/signout).".into(),
        )),
        Revoke::NotFound => Err(GatewayError::NotFound),
    }
}

/// POST /.dalea/settings/security/sessions/{id}/revoke: the × on the page.
pub async fn revoke_form(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    body::require_content_type(session, body::FORM)?;
    let identity = match guard::identity(state, session, ctx).await {
        Err(GatewayError::SignInRequired) => return Ok(Reply::see_other(&signin_url(SESSIONS_PATH))),
        other => other?,
    };
    let fields = body::form(&body::read(session, state.config.server.max_form_bytes).await?);
    csrf::check_token(&identity.session.session.csrf, fields.get("csrf_token"))?;
    let outcome = match revoke(state, &identity, ctx, id).await? {
        Revoke::Revoked => "?done=revoked",
        Revoke::IsCurrent => "?error=current",
        Revoke::NotFound => "?done=gone",
    };
    Ok(Reply::see_other(&format!("{SESSIONS_PATH}{outcome}")))
}
