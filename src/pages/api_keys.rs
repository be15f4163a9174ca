//! Settings → Security → API keys: list, create (the key is shown exactly once) and revoke the
//! person's API keys. Pages and JSON. Creating a key needs a recent sign-in or confirmation;
//! keys and sessions never touch each other.

use base64::Engine;
use pingora::proxy::Session;
use serde::{Deserialize, Serialize};

use super::{elevate_url, guard, names, query_param, UserView, API_KEYS_PATH};
use crate::account::audit_log::{self, Actor};
use crate::api_keys::keyring::{TooMany, MAX_KEYS_PER_PERSON};
use crate::api_keys::{ApiKey, KeySecret};
use crate::audit::AuditEvent;
use crate::client_info::Location;
use crate::clock::{ago, rfc3339, Millis};
use crate::error::GatewayError;
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::state::AppState;

const DAY: Millis = 86_400_000;
const MAX_NAME_CHARS: usize = 100;
const MAX_DAYS: u32 = 3650;
/// How long after creation the tab still shows a new key carried by the flash cookie.
const FLASH_SHOWN_FOR: Millis = 30_000;

/// One key as the list shows it (never the secret).
#[derive(Debug, Serialize)]
struct KeyView {
    id: String,
    name: String,
    prefix: String,
    created_at: String,
    last_used_at: Option<String>,
    last_ip: Option<String>,
    location: Option<Location>,
    expires_at: Option<String>,
    expired: bool,
    #[serde(skip)]
    page: KeyPageExtras,
}

#[derive(Debug, Default, Serialize)]
struct KeyPageExtras {
    created_ago: String,
    last_used_ago: Option<String>,
    expires_label: String,
}

fn view(state: &AppState, k: &ApiKey) -> KeyView {
    let now = state.sessions.now();
    let day = |t: Millis| chrono::DateTime::from_timestamp_millis(t).map(|d| d.format("%-d %b %Y").to_string());
    KeyView {
        page: KeyPageExtras {
            created_ago: ago(k.created_at, now),
            last_used_ago: k.last_used_at.map(|t| ago(t, now)),
            expires_label: match k.expires_at {
                None => "Never".to_string(),
                Some(e) if k.is_expired(now) => format!("Expired {}", day(e).unwrap_or_default()),
                Some(e) => day(e).unwrap_or_default(),
            },
        },
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: rfc3339(k.created_at),
        last_used_at: k.last_used_at.map(rfc3339),
        last_ip: k.last_ip.map(|ip| ip.to_string()),
        location: k.last_ip.and_then(|ip| state.client_info.locate(ip)),
        expires_at: k.expires_at.map(rfc3339),
        expired: k.is_expired(now),
    }
}

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    view: &'a KeyView,
    #[serde(flatten)]
    page: &'a KeyPageExtras,
}

#[derive(Serialize)]
struct CreatedKey<'a> {
    name: &'a str,
    key: &'a str,
}

#[derive(Serialize)]
struct KeysPage<'a> {
    user: UserView<'a>,
    csrf_token: &'a str,
    tab: &'static str,
    tab_label: &'static str,
    keys: Vec<Row<'a>>,
    may_create: bool,
    elevate_url: String,
    created: Option<CreatedKey<'a>>,
    notice: Option<&'static str>,
    error: Option<String>,
    max_keys: usize,
}

async fn render(
    state: &AppState,
    session: &Session,
    identity: &Identity,
    status: u16,
    created: Option<(&ApiKey, &KeySecret)>,
    error: Option<String>,
) -> Result<Reply, GatewayError> {
    let keys: Vec<KeyView> = state.api_keys.list(&identity.user.id).await?.iter().map(|k| view(state, k)).collect();
    let notice = match query_param(session, "done").as_deref() {
        Some("revoked") => Some("The API key was revoked. Programs using it are refused from now on."),
        Some("gone") => Some("That API key had already been revoked."),
        _ => None,
    };
    let page = KeysPage {
        user: UserView::of(&identity.user),
        csrf_token: identity.session.session.csrf.expose(),
        tab: "api-keys",
        tab_label: "API keys",
        keys: keys.iter().map(|v| Row { view: v, page: &v.page }).collect(),
        may_create: guard::recently_authenticated(state, identity).is_ok(),
        elevate_url: elevate_url(API_KEYS_PATH),
        created: created.map(|(k, s)| CreatedKey { name: &k.name, key: s.expose() }),
        notice,
        error,
        max_keys: MAX_KEYS_PER_PERSON,
    };
    Ok(Reply::html(status, state.templates.render("api_keys.html", &page)))
}

/// What seals a new key in the flash cookie: bound to the session that created it.
fn flash_purpose(identity: &Identity) -> String {
    format!("new-api-key:{}", identity.session.session.id)
}

/// The new key carried from the create form in the flash cookie, if it is this session's.
fn take_flash(state: &AppState, session: &Session, identity: &Identity) -> Option<KeySecret> {
    let cookies = session.req_header().headers.get_all(http::header::COOKIE);
    let sealed = state.cookies.flash_value(cookies.iter().map(|v| v.as_bytes()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed).ok()?;
    let plain = state.secret_key.as_ref()?.decrypt(&flash_purpose(identity), &bytes)?;
    let (sealed_at, key) = std::str::from_utf8(&plain).ok()?.split_once(' ')?;
    // Sealed with the time: a copy of the cookie replayed later shows nothing.
    let age = state.sessions.now() - sealed_at.parse::<Millis>().ok()?;
    (0..=FLASH_SHOWN_FOR).contains(&age).then(|| KeySecret::parse(key)).flatten()
}

/// GET /.dalea/settings/security/api-keys — right after creating a key (a redirect with the
/// key in the one-time flash cookie), the key is shown this once and the cookie cleared.
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let Some(secret) = take_flash(state, session, &identity) else {
        return render(state, session, &identity, 200, None, None).await;
    };
    let keys = state.api_keys.list(&identity.user.id).await?;
    let created = keys.iter().find(|k| k.key_hash == secret.hash());
    let reply = render(state, session, &identity, 200, created.map(|k| (k, &secret)), None).await?;
    Ok(reply.header("set-cookie", state.cookies.clear_flash()))
}

/// A key name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, nothing hidden ([`names::is_hidden`]).
fn check_name(raw: &str) -> Result<String, GatewayError> {
    names::clean(raw, MAX_NAME_CHARS).ok_or_else(|| {
        GatewayError::BadRequest(format!(
            "Give the key a name of 1 to {MAX_NAME_CHARS} characters, without line breaks or invisible characters, e.g. \"backup script\"."
        ))
    })
}

fn check_days(days: Option<u32>) -> Result<Option<u32>, GatewayError> {
    match days {
        Some(d) if d == 0 || d > MAX_DAYS => {
            Err(GatewayError::BadRequest(format!("expires_in_days must be from 1 to {MAX_DAYS}, or left out.")))
        }
        other => Ok(other),
    }
}

/// Creates a key for the caller (needs a recent sign-in or confirmation); audited.
async fn create(
    state: &AppState,
    identity: &Identity,
    ctx: &RequestCtx,
    name: &str,
    days: Option<u32>,
) -> Result<(ApiKey, KeySecret), GatewayError> {
    guard::recently_authenticated(state, identity)?;
    let name = check_name(name)?;
    let expires_at = check_days(days)?.map(|d| state.sessions.now() + Millis::from(d) * DAY);
    let (key, secret) = match state.api_keys.create(&identity.user.id, &name, expires_at).await? {
        Ok(created) => created,
        Err(TooMany) => {
            return Err(GatewayError::Conflict(format!(
                "You already have {MAX_KEYS_PER_PERSON} API keys. Revoke one you no longer use first."
            )))
        }
    };
    tracing::info!(user.id = %identity.user.id, api_key.id = %key.id, "API key created");
    let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
    let event = AuditEvent::ApiKeyCreated { key_id: key.id.clone(), name: key.name.clone() };
    audit_log::record(state, &identity.user.id, actor, event).await;
    Ok((key, secret))
}

/// POST /.dalea/settings/security/api-keys (form: csrf_token, name, expires_in_days): back to
/// the tab (303), which shows the new key this once; reloading it shows nothing and creates
/// nothing. (Without an encryption key to seal the flash cookie, the answer itself shows it.)
pub async fn create_form(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, fields) = guard::form_post(state, session, ctx).await?;
    let name = fields.get("name").map(String::as_str).unwrap_or_default();
    let days = match fields.get("expires_in_days").map(|d| d.trim()).filter(|d| !d.is_empty() && *d != "never") {
        None => None,
        Some(d) => {
            Some(d.parse::<u32>().map_err(|_| GatewayError::BadRequest("Choose an expiry from the list.".into()))?)
        }
    };
    match create(state, &identity, ctx, name, days).await {
        Ok((key, secret)) => match &state.secret_key {
            Some(seal) => {
                let plain = format!("{} {}", state.sessions.now(), secret.expose());
                let sealed = seal.encrypt(&flash_purpose(&identity), plain.as_bytes());
                let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
                Ok(Reply::see_other(API_KEYS_PATH).header("set-cookie", state.cookies.set_flash(&value)))
            }
            None => render(state, session, &identity, 201, Some((&key, &secret)), None).await,
        },
        Err(err) if matches!(err.status(), 400 | 401 | 409) => {
            render(state, session, &identity, err.status(), None, Some(err.to_string())).await
        }
        Err(err) => Err(err),
    }
}

/// Revokes one of the caller's keys; audited. `false`: no such key of theirs.
async fn revoke(state: &AppState, identity: &Identity, ctx: &RequestCtx, id: &str) -> Result<bool, GatewayError> {
    let Some(key) = state.api_keys.revoke(&identity.user.id, id).await? else { return Ok(false) };
    tracing::info!(user.id = %identity.user.id, api_key.id = %key.id, "API key revoked");
    let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
    audit_log::record(state, &identity.user.id, actor, AuditEvent::ApiKeyRevoked { key_id: key.id, name: key.name })
        .await;
    Ok(true)
}

/// POST /.dalea/settings/security/api-keys/{id}/revoke: the tab's ×.
pub async fn revoke_form(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let (identity, _) = guard::form_post(state, session, ctx).await?;
    let done = if revoke(state, &identity, ctx, id).await? { "revoked" } else { "gone" };
    Ok(Reply::see_other(&format!("{API_KEYS_PATH}?done={done}")))
}

/// GET /.dalea/api/api-keys → `{"api_keys": […]}` (newest first, never the secret)
pub async fn list_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let keys: Vec<KeyView> = state.api_keys.list(&identity.user.id).await?.iter().map(|k| view(state, k)).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "api_keys": keys })).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCreate {
    name: String,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// POST /.dalea/api/api-keys `{"name", "expires_in_days"?}` → 201 `{"id","key",…}`; the key
/// is in this answer only.
pub async fn create_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let (identity, req): (_, JsonCreate) = guard::json_post(state, session, ctx).await?;
    let (key, secret) = create(state, &identity, ctx, &req.name, req.expires_in_days).await?;
    let mut body = serde_json::to_value(view(state, &key)).map_err(|_| GatewayError::Internal)?;
    if let Some(map) = body.as_object_mut() {
        map.insert("key".into(), secret.expose().into());
    }
    Ok(Reply::json(201, body.to_string().into_bytes()))
}

/// DELETE /.dalea/api/api-keys/{id} → 204, or 404 when the caller has no such key.
pub async fn revoke_json(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let identity = guard::api_call(state, session, ctx).await?;
    Reply::deleted(revoke(state, &identity, ctx, id).await?)
}
