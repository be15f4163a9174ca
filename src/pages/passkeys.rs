//! Passkeys for people: Settings → Security → Passkeys (list, add, rename, remove; HTML and
//! JSON), sign-in with a passkey, and confirming it's you with one. The ceremonies themselves
//! run in the browser (`assets/passkeys.js`) between a `begin` and a `finish` call here.
//!
//! Each `begin` keeps the ceremony's state in the pending store (kind [`KIND`], under a random
//! id, for [`PASSKEY_MAX_AGE`]) with what it is for and who may finish it: a sign-in only from
//! the browser that began it (the hash of a binding cookie), a registration or a confirmation
//! only from the session that began it. `finish` takes the record once, so an answer replayed,
//! sent to another replica after it was used, or finished from elsewhere finds nothing; an
//! answer is checked against the passkeys as stored *now*, so a passkey removed on any replica
//! stops working at once. Refusals change nothing stored (beyond using up the ceremony).
//!
//! Adding a passkey needs a recent sign-in or confirmation; removing one needs a recent
//! confirmation with a second factor (it is one), and takes away the elevation of every session
//! that rests on it. A passkey sign-in is an elevation by that passkey from its first moment.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use pingora::proxy::Session;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sessions::SessionView;
use super::{
    body, csrf, elevate, elevate_url, guard, query_param, redirect, signin, trusted_forwarded_host, UserView,
    PASSKEYS_PATH,
};
use crate::account::audit_log::{self, Actor};
use crate::audit::AuditEvent;
use crate::auth::throttle::Rule;
use crate::clock::{ago, millis, rfc3339};
use crate::error::GatewayError;
use crate::passkeys::{
    name_is_valid, DiscoverableAuthentication, PasskeyAuthentication, PasskeyError, PasskeyRecord, PasskeyRegistration,
    PasskeyService, PublicKeyCredential, RegisterPublicKeyCredential, MAX_NAME_CHARS, MAX_PASSKEYS_PER_PERSON,
    TOO_MANY_PASSKEYS,
};
use crate::proxy::ctx::{Identity, RequestCtx};
use crate::proxy::respond::Reply;
use crate::session::cookie::PASSKEY_MAX_AGE;
use crate::session::manager::Proof;
use crate::session::store::StoreError;
use crate::session::token::random_string;
use crate::state::AppState;

const SCRIPT: &[u8] = include_bytes!("assets/passkeys.js");
/// The pending-store kind of passkey ceremonies.
const KIND: &str = "passkey";

// What people are told. Constants so the tests can hold the pages to them.
pub const NOT_REGISTERED: &str =
    "That passkey is not registered here. It may have been removed: sign in another way, or use another passkey.";
pub const ANOTHER_ACCOUNT: &str = "This passkey belongs to another account. Use one of your own passkeys.";
pub const NOT_VERIFIED: &str = "Your device did not verify it's you (user verification). Use the passkey with your \
     fingerprint, face, PIN or screen lock.";
pub const CEREMONY_OVER: &str = "This passkey request is over: it was already used, took more than 5 minutes, or was \
     started in another browser or session. Please try again.";
const MALFORMED: &str = "The browser's passkey answer is not in the expected form. Please try again.";

// === ceremonies in the pending store ===

/// A ceremony between `begin` and `finish`, as kept in the pending store.
#[derive(Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
enum Ceremony {
    SignIn {
        state: DiscoverableAuthentication,
        /// SHA-256 (hex) of the browser's binding cookie.
        binding: String,
        remember_me: bool,
        rd: String,
    },
    Register {
        state: PasskeyRegistration,
        /// The public id of the session that began it, and its person.
        session: String,
        user_id: String,
        name: String,
    },
    Elevate {
        state: PasskeyAuthentication,
        session: String,
        user_id: String,
    },
}

fn binding_hash(value: &str) -> String {
    Sha256::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps a ceremony for [`PASSKEY_MAX_AGE`]; returns its id.
async fn keep(state: &AppState, ceremony: &Ceremony) -> Result<String, GatewayError> {
    let id = random_string::<32>();
    let value = serde_json::to_vec(ceremony).map_err(|e| {
        tracing::warn!(error = %e, "could not serialise a passkey ceremony");
        GatewayError::Internal
    })?;
    let expires_at = state.sessions.now() + millis(PASSKEY_MAX_AGE);
    state.pending.put_pending(KIND, &id, &value, expires_at).await?;
    Ok(id)
}

/// Takes the ceremony `id` once; `None` when there is no such (live) ceremony.
async fn take(state: &AppState, id: &str) -> Result<Option<Ceremony>, GatewayError> {
    if !crate::pending::is_valid_id(id) {
        return Ok(None);
    }
    let Some(raw) = state.pending.take_pending(KIND, id, state.sessions.now()).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&raw) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable passkey ceremony record");
            Ok(None)
        }
    }
}

fn over() -> GatewayError {
    GatewayError::BadRequest(CEREMONY_OVER.into())
}

/// The passkey service, or 404 when `[passkeys]` is not configured.
fn service(state: &AppState) -> Result<&PasskeyService, GatewayError> {
    state.passkeys.as_ref().ok_or(GatewayError::PasskeysNotEnabled)
}

/// Whether the person has a passkey they can use here (passkeys on, and at least one).
pub(super) async fn has_passkeys(state: &AppState, user_id: &str) -> Result<bool, GatewayError> {
    if state.passkeys.is_none() {
        return Ok(false);
    }
    Ok(!state.passkey_store.passkeys_of(user_id).await?.is_empty())
}

/// A failed ceremony as the person is told. `Unavailable` is our problem, not theirs.
fn refused(e: PasskeyError) -> GatewayError {
    match e {
        PasskeyError::UnknownPasskey => GatewayError::PasskeyRefused(NOT_REGISTERED.into()),
        PasskeyError::NotVerified => GatewayError::PasskeyRefused(NOT_VERIFIED.into()),
        PasskeyError::NoPasskeys => {
            GatewayError::Conflict("You have no passkeys: confirm it's you another way, or add a passkey first.".into())
        }
        PasskeyError::Unavailable(why) => {
            tracing::warn!(error = %why, "passkey ceremony could not start");
            GatewayError::Internal
        }
        other => GatewayError::PasskeyRefused(sentence(&other.to_string())),
    }
}

/// "this passkey answer is for another site" → "This passkey answer is for another site."
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
    let mut out = format!("{first}{}", chars.as_str());
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// The browser's answer, parsed; 400 with a plain message when it is not one.
fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, GatewayError> {
    serde_json::from_value(value).map_err(|e| {
        tracing::debug!(error = %e, "malformed passkey answer");
        GatewayError::BadRequest(MALFORMED.into())
    })
}

/// The JSON `begin` answers with: the ceremony id and the options for `navigator.credentials`.
fn begun(id: &str, public_key: impl Serialize) -> Result<Reply, GatewayError> {
    let body = serde_json::json!({ "ceremony": id, "publicKey": public_key });
    Ok(Reply::json(200, body.to_string().into_bytes()))
}

// === the script ===

/// GET /.dalea/assets/passkeys.js: the ceremonies' script (cacheable; `ETag` revalidation).
pub fn script(session: &Session) -> Result<Reply, GatewayError> {
    let digest = Sha256::digest(SCRIPT);
    let etag = format!("\"{}\"", digest[..12].iter().map(|b| format!("{b:02x}")).collect::<String>());
    let unchanged = session
        .req_header()
        .headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    if unchanged {
        return Ok(Reply::not_modified(&etag));
    }
    Ok(Reply::asset("text/javascript; charset=utf-8", SCRIPT, &etag))
}

// === sign-in ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInBegin {
    #[serde(default)]
    remember_me: bool,
    #[serde(default)]
    rd: Option<String>,
}

/// Finishing any ceremony: its id and the browser's answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Finish {
    ceremony: String,
    credential: serde_json::Value,
    /// Where to go afterwards (confirmation only; sign-in keeps it from `begin`).
    #[serde(default)]
    rd: Option<String>,
}

/// A JSON call anyone may make: same origin, `application/json`, the parsed body.
async fn anonymous_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
) -> Result<T, GatewayError> {
    body::require_content_type(session, body::JSON)?;
    csrf::check_origin(session.req_header(), trusted_forwarded_host(session, ctx))?;
    body::json(&body::read(session, state.config.server.max_form_bytes).await?)
}

/// POST /.dalea/api/passkeys/signin/begin `{"remember_me", "rd"}` → `{"ceremony","publicKey"}`
/// and the cookie binding the ceremony to this browser.
pub async fn signin_begin(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let req: SignInBegin = anonymous_json(state, session, ctx).await?;
    let (rcr, auth) = service.start_signin().map_err(refused)?;
    // One binding per browser, shared by its tabs.
    let cookies = session.req_header().headers.get_all(http::header::COOKIE);
    let binding =
        state.cookies.passkey_binding(cookies.iter().map(|v| v.as_bytes())).unwrap_or_else(random_string::<32>);
    let ceremony = Ceremony::SignIn {
        state: auth,
        binding: binding_hash(&binding),
        remember_me: req.remember_me,
        rd: redirect::safe_redirect(req.rd.as_deref()),
    };
    let id = keep(state, &ceremony).await?;
    Ok(begun(&id, rcr.public_key)?.header("set-cookie", state.cookies.set_passkey_binding(&binding)))
}

/// POST /.dalea/api/passkeys/signin/finish `{"ceremony","credential"}` → 200
/// `{"session":{…},"redirect":rd}` and the session cookie (remembered only if asked at begin).
pub async fn signin_finish(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let req: Finish = anonymous_json(state, session, ctx).await?;
    let credential: PublicKeyCredential = parse(req.credential)?;
    let result = sign_in(state, service, session, ctx, &req.ceremony, &credential).await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(GatewayError::TooManyAttempts(_)) => "throttled",
        Err(GatewayError::PasskeyRefused(_) | GatewayError::BadRequest(_)) => "failure",
        Err(_) => "error",
    };
    state.metrics.auth.signin("passkey", outcome);
    let (s, cookie, rd) = result?;
    let view = SessionView::new(state, &s, s.last_active_at, s.last_ip, true);
    let body = serde_json::to_vec(&serde_json::json!({ "session": view, "redirect": rd }))
        .map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body)
        .header("set-cookie", cookie)
        .header("set-cookie", state.cookies.clear_passkey_binding())
        .header("set-cookie", state.cookies.clear_csrf()))
}

/// Checks a sign-in answer and starts the session: the ceremony (this browser's, once), the
/// passkey (registered, to the person its user handle names), the person (still here), the
/// attempt budget, then the signature and the rest, and the passkey's new counter.
async fn sign_in(
    state: &AppState,
    service: &PasskeyService,
    session: &Session,
    ctx: &RequestCtx,
    ceremony: &str,
    credential: &PublicKeyCredential,
) -> Result<(crate::session::Session, String, String), GatewayError> {
    let Some(Ceremony::SignIn { state: auth, binding, remember_me, rd }) = take(state, ceremony).await? else {
        tracing::info!(outcome = "failure", "passkey sign-in for an unknown or finished ceremony");
        return Err(over());
    };
    let cookies = session.req_header().headers.get_all(http::header::COOKIE);
    let presented = state.cookies.passkey_binding(cookies.iter().map(|v| v.as_bytes()));
    if !presented.is_some_and(|b| bool::from(binding_hash(&b).as_bytes().ct_eq(binding.as_bytes()))) {
        tracing::warn!(outcome = "failure", "passkey sign-in finished from another browser: refused");
        return Err(over());
    }
    let now = state.sessions.now();
    let rule = Rule::sign_in(&state.config.rate_limit);
    let (handle, id) = service.identify(credential).map_err(refused)?;
    let record = state.passkey_store.passkey(&id).await?;
    let owner = match &record {
        Some(r) if PasskeyService::user_handle(&r.user_id) == handle => state.person(&r.user_id).await?,
        _ => None,
    };
    let Some(user) = owner else {
        // Unknown credentials count against the client's network like unknown emails do.
        let key = format!("passkey:{}", &binding_hash(&id)[..32]);
        if let Err(retry) = state.throttle.reserve(&rule, &key, false, ctx.client_ip, now).await? {
            return Err(GatewayError::TooManyAttempts(retry.as_secs()));
        }
        tracing::info!(outcome = "failure", client.ip = %ip_field(ctx), "passkey sign-in with an unregistered passkey");
        return Err(GatewayError::PasskeyRefused(NOT_REGISTERED.into()));
    };
    if let Err(retry) = state.throttle.reserve(&rule, &user.email, true, ctx.client_ip, now).await? {
        tracing::info!(outcome = "throttled", user.id = %user.id, "passkey sign-in refused: too many failures");
        signin::audit_failure(state, session, ctx, &user, "throttled").await;
        return Err(GatewayError::TooManyAttempts(retry.as_secs()));
    }
    let theirs = state.passkey_store.passkeys_of(&user.id).await?;
    let checked = service.finish_signin(credential, &auth, &theirs);
    let used = match checked {
        Ok((id, passkey)) => state.passkey_store.passkey_used(&user.id, &id, &passkey, now).await?.then_some(id),
        Err(e) => {
            tracing::info!(outcome = "failure", user.id = %user.id, reason = %e, "passkey sign-in refused");
            signin::audit_failure(state, session, ctx, &user, "passkey").await;
            return Err(refused(e));
        }
    };
    let Some(id) = used else {
        tracing::info!(outcome = "failure", user.id = %user.id, "passkey removed during its sign-in");
        return Err(GatewayError::PasskeyRefused(NOT_REGISTERED.into()));
    };
    state.throttle.succeeded(&rule, &user.email, ctx.client_ip).await;
    let (s, cookie) = signin::start_passkey_session(state, session, ctx, &user, id, remember_me).await?;
    Ok((s, cookie, rd))
}

fn ip_field(ctx: &RequestCtx) -> String {
    ctx.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

// === confirming it's you ===

/// POST /.dalea/api/elevate/passkey/begin (`{}`) → `{"ceremony","publicKey"}` for one of the
/// caller's passkeys.
pub async fn elevate_begin(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    // Always JSON, even though nothing in it is needed: no HTML form elsewhere can send that.
    let (identity, _): (_, serde_json::Map<String, serde_json::Value>) =
        json_post_or_empty(state, session, ctx).await?;
    let theirs = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let (rcr, auth) = service.start_elevation(&theirs).map_err(refused)?;
    let s = &identity.session.session;
    let id =
        keep(state, &Ceremony::Elevate { state: auth, session: s.id.to_string(), user_id: s.user_id.clone() }).await?;
    begun(&id, rcr.public_key)
}

/// [`guard::json_post`], with an empty body read as `{}`.
async fn json_post_or_empty<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
) -> Result<(Identity, T), GatewayError> {
    if super::has_body(session) {
        return guard::json_post(state, session, ctx).await;
    }
    body::require_content_type(session, body::JSON)?;
    Ok((guard::api_call(state, session, ctx).await?, T::default()))
}

/// POST /.dalea/api/elevate/passkey/finish `{"ceremony","credential","rd"?}` → 200 like
/// `/.dalea/api/elevate` (plus `redirect`), with the rotated session cookie.
pub async fn elevate_finish(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let (identity, req): (_, Finish) = guard::json_post(state, session, ctx).await?;
    let credential: PublicKeyCredential = parse(req.credential)?;
    let user = &identity.user;
    let s = &identity.session.session;
    let Some(Ceremony::Elevate { state: auth, session: began_in, .. }) = take(state, &req.ceremony).await? else {
        return Err(over());
    };
    if began_in != s.id.as_str() {
        tracing::warn!(user.id = %user.id, "passkey confirmation finished from another session: refused");
        return Err(over());
    }
    let id = match prove(state, service, &identity, ctx, &credential, &auth).await {
        Ok(id) => id,
        Err(e) => {
            let (reason, counted) = match &e {
                GatewayError::TooManyAttempts(_) => ("throttled", "throttled"),
                GatewayError::PasskeyRefused(why) => (why.as_str(), "failure"),
                _ => return Err(e),
            };
            state.metrics.auth.elevation("passkey", counted);
            let actor = Actor::session(state, s, ctx.client_ip);
            let event =
                AuditEvent::ElevationFailed { method: "passkey".into(), reason: reason.chars().take(120).collect() };
            audit_log::record(state, &user.id, actor, event).await;
            return Err(e);
        }
    };
    let (s, cookie) = elevate::elevate(state, &identity, ctx, Proof::Passkey(id)).await?;
    let rd = redirect::safe_redirect(req.rd.as_deref());
    let at = s.elevation.map(|e| e.at).unwrap_or_default();
    let body = serde_json::json!({
        "method": "passkey",
        "elevated": true,
        "elevated_at": rfc3339(at),
        "expires_at": rfc3339(at + millis(state.config.elevation.max_age)),
        "redirect": rd,
    });
    Ok(Reply::json(200, body.to_string().into_bytes()).header("set-cookie", cookie))
}

/// Checks a confirmation answer: one of the caller's passkeys as stored now (someone else's is
/// named as such), within the attempt budget for confirming, then signature, user verification
/// and counter; records the use. Returns the passkey's credential id.
async fn prove(
    state: &AppState,
    service: &PasskeyService,
    identity: &Identity,
    ctx: &RequestCtx,
    credential: &PublicKeyCredential,
    auth: &PasskeyAuthentication,
) -> Result<String, GatewayError> {
    let user = &identity.user;
    let now = state.sessions.now();
    let rule = Rule::totp(&state.config.rate_limit);
    if let Err(retry) = state.throttle.reserve(&rule, &user.id, true, ctx.client_ip, now).await? {
        return Err(GatewayError::TooManyAttempts(retry.as_secs()));
    }
    let theirs = state.passkey_store.passkeys_of(&user.id).await?;
    let id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
    if !theirs.iter().any(|r| r.id == id) {
        let someone_else = match crate::passkeys::check_credential_id(&id) {
            Ok(()) => state.passkey_store.passkey(&id).await?.is_some_and(|r| r.user_id != user.id),
            Err(_) => false,
        };
        tracing::info!(user.id = %user.id, someone_else, "passkey confirmation with a passkey not theirs: refused");
        let why = if someone_else { ANOTHER_ACCOUNT } else { NOT_REGISTERED };
        return Err(GatewayError::PasskeyRefused(why.into()));
    }
    let (id, passkey) = service.finish_elevation(credential, auth, &theirs).map_err(|e| {
        tracing::info!(user.id = %user.id, reason = %e, "passkey confirmation refused");
        refused(e)
    })?;
    if !state.passkey_store.passkey_used(&user.id, &id, &passkey, now).await? {
        return Err(GatewayError::PasskeyRefused(NOT_REGISTERED.into()));
    }
    state.throttle.succeeded(&rule, &user.id, ctx.client_ip).await;
    Ok(id)
}

// === registering ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBegin {
    name: String,
}

/// A passkey name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, nothing invisible.
fn check_name(raw: &str) -> Result<String, GatewayError> {
    let name = raw.trim();
    // No invisible or direction-changing characters that could make one name look like another.
    let hidden =
        |c: char| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}');
    if !name_is_valid(name) || name.chars().any(hidden) {
        return Err(GatewayError::BadRequest(format!(
            "Give the passkey a name of 1 to {MAX_NAME_CHARS} characters, e.g. \"Work laptop\"."
        )));
    }
    Ok(name.to_string())
}

fn too_many() -> GatewayError {
    GatewayError::Conflict(format!(
        "You already have {MAX_PASSKEYS_PER_PERSON} passkeys. Remove one you no longer use first."
    ))
}

/// POST /.dalea/api/passkeys/register/begin `{"name"}` → `{"ceremony","publicKey"}`. Needs a
/// sign-in or confirmation within `elevation.max_age` (else 401 `elevation_required`).
pub async fn register_begin(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let (identity, req): (_, RegisterBegin) = guard::json_post(state, session, ctx).await?;
    guard::recently_authenticated(state, &identity)?;
    let name = check_name(&req.name)?;
    let user = &identity.user;
    let existing = state.passkey_store.passkeys_of(&user.id).await?;
    if existing.len() >= MAX_PASSKEYS_PER_PERSON {
        return Err(too_many());
    }
    let (ccr, reg) =
        service.start_registration(&user.id, &user.email, &user.display_name, &existing).map_err(refused)?;
    let s = &identity.session.session;
    let ceremony = Ceremony::Register { state: reg, session: s.id.to_string(), user_id: user.id.clone(), name };
    begun(&keep(state, &ceremony).await?, ccr.public_key)
}

/// POST /.dalea/api/passkeys/register/finish `{"ceremony","credential"}` → 201 with the new
/// passkey (as the list shows it); audited.
pub async fn register_finish(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let service = service(state)?;
    let (identity, req): (_, Finish) = guard::json_post(state, session, ctx).await?;
    let credential: RegisterPublicKeyCredential = parse(req.credential)?;
    let user = &identity.user;
    let s = &identity.session.session;
    let Some(Ceremony::Register { state: reg, session: began_in, name, .. }) = take(state, &req.ceremony).await? else {
        return Err(over());
    };
    if began_in != s.id.as_str() {
        tracing::warn!(user.id = %user.id, "passkey registration finished from another session: refused");
        return Err(over());
    }
    let passkey = service.finish_registration(&credential, &reg).map_err(|e| {
        tracing::info!(user.id = %user.id, reason = %e, "passkey registration refused");
        refused(e)
    })?;
    let record = PasskeyRecord::new(&user.id, &name, passkey, state.sessions.now());
    match state.passkey_store.add_passkey(&record).await {
        Ok(true) => {}
        Ok(false) => return Err(GatewayError::Conflict("That passkey is already registered here.".into())),
        Err(StoreError::Unavailable(m)) if m == TOO_MANY_PASSKEYS => return Err(too_many()),
        Err(e) => return Err(e.into()),
    }
    // A second factor now exists: re-entering the password no longer passes sensitive actions.
    state
        .sessions
        .update_all(&user.id, |s| {
            let had = s.reauthenticated_at.is_some();
            s.reauthenticated_at = None;
            had
        })
        .await?;
    tracing::info!(user.id = %user.id, passkey.id = %short(&record.id), "passkey added");
    let actor = Actor::session(state, s, ctx.client_ip);
    audit_log::record(state, &user.id, actor, AuditEvent::PasskeyAdded { name: record.name.clone() }).await;
    let body = serde_json::to_vec(&view(state, &record)).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(201, body))
}

/// The start of a credential id, for log lines.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

// === the list, renaming, removing ===

/// One passkey as the list shows it (never the key).
#[derive(Debug, Serialize)]
struct PasskeyView {
    id: String,
    name: String,
    created_at: String,
    last_used_at: Option<String>,
    #[serde(skip)]
    created_ago: String,
    #[serde(skip)]
    last_used_ago: Option<String>,
}

fn view(state: &AppState, r: &PasskeyRecord) -> PasskeyView {
    let now = state.sessions.now();
    PasskeyView {
        id: r.id.clone(),
        name: r.name.clone(),
        created_at: rfc3339(r.created_at),
        last_used_at: r.last_used_at.map(rfc3339),
        created_ago: ago(r.created_at, now),
        last_used_ago: r.last_used_at.map(|t| ago(t, now)),
    }
}

/// A row of the page: the view with its display-only fields.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    view: &'a PasskeyView,
    created_ago: &'a str,
    last_used_ago: Option<&'a str>,
}

#[derive(Serialize)]
struct PasskeysPage<'a> {
    user: UserView<'a>,
    csrf_token: &'a str,
    tab: &'static str,
    tab_label: &'static str,
    enabled: bool,
    /// The origin passkeys work at (the script says so on any other address).
    origin: &'a str,
    passkeys: Vec<Row<'a>>,
    may_add: bool,
    may_remove: bool,
    full: bool,
    elevate_url: String,
    done_url: String,
    notice: Option<&'static str>,
    error: Option<String>,
    max_passkeys: usize,
    max_name_chars: usize,
    max_age_minutes: u64,
}

async fn render(
    state: &AppState,
    session: &Session,
    identity: &Identity,
    status: u16,
    error: Option<String>,
) -> Result<Reply, GatewayError> {
    let records = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let views: Vec<PasskeyView> = records.iter().map(|r| view(state, r)).collect();
    let notice = match query_param(session, "done").as_deref() {
        Some("added") => Some("Your passkey was added. You can now sign in with it and use it to confirm it's you."),
        Some("renamed") => Some("The passkey was renamed."),
        Some("removed") => Some("The passkey was removed. It no longer signs in or confirms anything, anywhere."),
        Some("gone") => Some("That passkey had already been removed."),
        _ => None,
    };
    let page = PasskeysPage {
        user: UserView::of(&identity.user),
        csrf_token: identity.session.session.csrf.expose(),
        tab: "passkeys",
        tab_label: "Passkeys",
        enabled: state.passkeys.is_some(),
        origin: state.config.passkeys.as_ref().map_or("", |p| p.origin.as_str()),
        passkeys: views
            .iter()
            .map(|v| Row { view: v, created_ago: &v.created_ago, last_used_ago: v.last_used_ago.as_deref() })
            .collect(),
        may_add: guard::recently_authenticated(state, identity).is_ok(),
        may_remove: guard::elevated_by_second_factor(state, identity).is_ok(),
        full: records.len() >= MAX_PASSKEYS_PER_PERSON,
        elevate_url: elevate_url(PASSKEYS_PATH),
        done_url: format!("{PASSKEYS_PATH}?done=added"),
        notice,
        error,
        max_passkeys: MAX_PASSKEYS_PER_PERSON,
        max_name_chars: MAX_NAME_CHARS,
        max_age_minutes: state.config.elevation.max_age.as_secs().div_ceil(60),
    };
    let reply = Reply::html(status, state.templates.render("passkeys.html", &page));
    Ok(if page.enabled { reply.with_script() } else { reply })
}

/// GET /.dalea/settings/security/passkeys
pub async fn page(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    render(state, session, &identity, 200, None).await
}

/// GET /.dalea/api/passkeys → `{"passkeys":[{"id","name","created_at","last_used_at"}]}`
pub async fn list_json(state: &AppState, session: &mut Session, ctx: &RequestCtx) -> Result<Reply, GatewayError> {
    let identity = guard::identity(state, session, ctx).await?;
    let records = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let views: Vec<PasskeyView> = records.iter().map(|r| view(state, r)).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "passkeys": views })).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body))
}

/// Whether `id` could be a credential id at all (else the caller answers 404 without asking the store).
fn plausible_id(id: &str) -> bool {
    crate::passkeys::check_credential_id(id).is_ok()
}

/// Renames one of the caller's passkeys; audited. `false`: no such passkey of theirs.
async fn rename(
    state: &AppState,
    identity: &Identity,
    ctx: &RequestCtx,
    id: &str,
    name: &str,
) -> Result<bool, GatewayError> {
    let name = check_name(name)?;
    let user = &identity.user;
    if !plausible_id(id) {
        return Ok(false);
    }
    let Some(old) = state.passkey_store.passkeys_of(&user.id).await?.into_iter().find(|r| r.id == id) else {
        return Ok(false);
    };
    if !state.passkey_store.rename_passkey(&user.id, id, &name).await? {
        return Ok(false);
    }
    tracing::info!(user.id = %user.id, passkey.id = %short(id), "passkey renamed");
    if old.name != name {
        let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
        audit_log::record(state, &user.id, actor, AuditEvent::PasskeyRenamed { old_name: old.name, name }).await;
    }
    Ok(true)
}

/// Removes one of the caller's passkeys (needs a recent confirmation with a second factor);
/// sessions elevated by it lose that elevation on every replica; audited. `false`: no such
/// passkey of theirs.
async fn remove(state: &AppState, identity: &Identity, ctx: &RequestCtx, id: &str) -> Result<bool, GatewayError> {
    guard::elevated_by_second_factor(state, identity)?;
    let user = &identity.user;
    if !plausible_id(id) {
        return Ok(false);
    }
    let Some(old) = state.passkey_store.passkeys_of(&user.id).await?.into_iter().find(|r| r.id == id) else {
        return Ok(false);
    };
    if !state.passkey_store.remove_passkey(&user.id, id).await? {
        return Ok(false);
    }
    drop_elevations(state, &user.id, id).await?;
    tracing::info!(user.id = %user.id, passkey.id = %short(id), "passkey removed");
    let actor = Actor::session(state, &identity.session.session, ctx.client_ip);
    audit_log::record(state, &user.id, actor, AuditEvent::PasskeyRemoved { name: old.name }).await;
    Ok(true)
}

/// Every session of the person whose elevation rests on passkey `id` loses it (rewritten in the
/// store, dropped from every replica's cache).
async fn drop_elevations(state: &AppState, user_id: &str, id: &str) -> Result<(), GatewayError> {
    use crate::session::ElevationMethod;
    state
        .sessions
        .update_all(user_id, |s| {
            if s.passkey_id.as_deref() != Some(id) {
                return false;
            }
            s.passkey_id = None;
            if s.elevation.is_some_and(|e| e.method == ElevationMethod::Passkey) {
                s.elevation = None;
                s.ever_elevated = false;
            }
            true
        })
        .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRename {
    name: String,
}

/// PATCH /.dalea/api/passkeys/{id} `{"name"}` → 200 with the passkey; 404 when the caller has
/// no such passkey.
pub async fn rename_json(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let (identity, req): (_, JsonRename) = guard::json_post(state, session, ctx).await?;
    if !rename(state, &identity, ctx, id, &req.name).await? {
        return Err(GatewayError::NotFound);
    }
    let records = state.passkey_store.passkeys_of(&identity.user.id).await?;
    let record = records.iter().find(|r| r.id == id).ok_or(GatewayError::NotFound)?;
    let body = serde_json::to_vec(&view(state, record)).map_err(|_| GatewayError::Internal)?;
    Ok(Reply::json(200, body))
}

/// DELETE /.dalea/api/passkeys/{id} → 204 (sensitive); 404 when the caller has no such passkey.
pub async fn remove_json(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let identity = guard::api_call(state, session, ctx).await?;
    if remove(state, &identity, ctx, id).await? {
        Ok(Reply::empty(204))
    } else {
        Err(GatewayError::NotFound)
    }
}

/// POST /.dalea/settings/security/passkeys/{id}/rename (form: csrf_token, name)
pub async fn rename_form(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let (identity, fields): (_, HashMap<String, String>) = guard::form_post(state, session, ctx).await?;
    let name = fields.get("name").map(String::as_str).unwrap_or_default();
    match rename(state, &identity, ctx, id, name).await {
        Ok(true) => Ok(Reply::see_other(&format!("{PASSKEYS_PATH}?done=renamed"))),
        Ok(false) => Ok(Reply::see_other(&format!("{PASSKEYS_PATH}?done=gone"))),
        Err(err @ GatewayError::BadRequest(_)) => {
            render(state, session, &identity, err.status(), Some(err.to_string())).await
        }
        Err(err) => Err(err),
    }
}

/// POST /.dalea/settings/security/passkeys/{id}/remove (form: csrf_token)
pub async fn remove_form(
    state: &AppState,
    session: &mut Session,
    ctx: &RequestCtx,
    id: &str,
) -> Result<Reply, GatewayError> {
    let (identity, _) = guard::form_post(state, session, ctx).await?;
    let done = if remove(state, &identity, ctx, id).await? { "removed" } else { "gone" };
    Ok(Reply::see_other(&format!("{PASSKEYS_PATH}?done={done}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_messages_read_as_sentences() {
        assert_eq!(sentence("this passkey answer is for another site"), "This passkey answer is for another site.");
        assert_eq!(sentence("Done."), "Done.");
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(check_name("  Work laptop ").ok().as_deref(), Some("Work laptop"));
        for bad in ["", "   ", "a\u{202E}b", "tab\there", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_say_what_went_wrong() {
        assert_eq!(binding_hash("v").len(), 64);
        let not_verified = refused(PasskeyError::NotVerified);
        assert_eq!(not_verified.status(), 401);
        assert_eq!(not_verified.to_string(), NOT_VERIFIED);
        assert_eq!(refused(PasskeyError::UnknownPasskey).to_string(), NOT_REGISTERED);
    }
}
