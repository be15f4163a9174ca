//! TOTP for a person: enrolment (a pending secret confirmed by a first code), checking a code
//! for elevation (throttled, each time step accepted once), and removal. Secrets are encrypted
//! with the gateway's key before they reach the store, bound to the person they belong to.

use std::net::IpAddr;

use crate::auth::throttle::Rule;
use crate::auth::totp::{self, TotpSecret};
use crate::clock::Millis;
use crate::error::GatewayError;
use crate::secrets::SecretKey;
use crate::session::ElevationMethod;
use crate::state::AppState;

use super::PendingTotp;

/// How long an enrolment may wait for its first code.
pub const ENROLMENT_TTL: Millis = 15 * 60 * 1000;

/// What a submitted code turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeCheck {
    Accepted,
    /// Wrong, malformed, or a step already used.
    Refused,
}

fn purpose(user_id: &str) -> String {
    format!("totp:{user_id}")
}

fn key(state: &AppState) -> Result<&SecretKey, GatewayError> {
    state.secret_key.as_ref().ok_or_else(|| {
        GatewayError::Conflict(
            "Authenticator apps are not available: the operator has not configured an encryption key \
             ([secrets] encryption_key)."
                .into(),
        )
    })
}

fn decrypt(state: &AppState, user_id: &str, sealed: &[u8]) -> Result<TotpSecret, GatewayError> {
    let plain = key(state)?.decrypt(&purpose(user_id), sealed).ok_or_else(|| {
        tracing::error!(user.id = %user_id, "a stored TOTP secret does not decrypt with the configured key");
        GatewayError::Internal
    })?;
    Ok(TotpSecret::from_bytes(plain.to_vec()))
}

/// Whether the person has an active TOTP credential.
pub async fn is_enrolled(state: &AppState, user_id: &str) -> Result<bool, GatewayError> {
    Ok(state.accounts.totp(user_id).await?.active.is_some())
}

/// Starts (or restarts) an enrolment and returns the new secret to show once.
pub async fn start_enrolment(state: &AppState, user_id: &str) -> Result<TotpSecret, GatewayError> {
    let secret = TotpSecret::generate();
    let sealed = key(state)?.encrypt(&purpose(user_id), secret.as_bytes());
    let pending = PendingTotp { secret: sealed, expires_at: state.sessions.now() + ENROLMENT_TTL };
    state.accounts.set_pending_totp(user_id, &pending).await?;
    Ok(secret)
}

/// The enrolment in progress, if any and not expired.
pub async fn pending(state: &AppState, user_id: &str) -> Result<Option<TotpSecret>, GatewayError> {
    let now = state.sessions.now();
    match state.accounts.totp(user_id).await?.pending {
        Some(p) if p.expires_at > now => Ok(Some(decrypt(state, user_id, &p.secret)?)),
        _ => Ok(None),
    }
}

/// Counts a code attempt against the TOTP limits; `Err(TooManyCodes)` past them.
async fn reserve(state: &AppState, user_id: &str, ip: Option<IpAddr>) -> Result<Rule, GatewayError> {
    let rule = Rule::totp(&state.config.rate_limit);
    let now = state.sessions.now();
    if let Err(retry) = state.throttle.reserve(&rule, user_id, true, ip, now).await? {
        return Err(GatewayError::TooManyCodes(retry.as_secs().max(1)));
    }
    Ok(rule)
}

/// Confirms the enrolment with a first code: the credential becomes active with that step used.
/// Sessions that passed sensitive actions by password alone stop doing so (the person now has
/// a second factor to use instead).
pub async fn confirm(
    state: &AppState,
    user_id: &str,
    code: &str,
    ip: Option<IpAddr>,
) -> Result<CodeCheck, GatewayError> {
    let rule = reserve(state, user_id, ip).await?;
    let now = state.sessions.now();
    let Some(pending) = state.accounts.totp(user_id).await?.pending.filter(|p| p.expires_at > now) else {
        return Err(GatewayError::Conflict(
            "There is no set-up in progress (it may have expired). Start again to get a new QR code.".into(),
        ));
    };
    let secret = decrypt(state, user_id, &pending.secret)?;
    let Some(step) = totp::verify(&secret, code, now) else {
        return Ok(CodeCheck::Refused);
    };
    // Only the secret this code was checked against is promoted (not one a second tab
    // started meanwhile).
    if !state.accounts.confirm_totp(user_id, &pending.secret, step, now).await? {
        return Ok(CodeCheck::Refused);
    }
    state.throttle.succeeded(&rule, user_id, ip).await;
    state
        .sessions
        .update_all(user_id, |s| {
            let had = s.reauthenticated_at.is_some();
            s.reauthenticated_at = None;
            had
        })
        .await?;
    Ok(CodeCheck::Accepted)
}

/// Checks a code for elevation: throttled, and each time step is accepted at most once.
pub async fn check(state: &AppState, user_id: &str, code: &str, ip: Option<IpAddr>) -> Result<CodeCheck, GatewayError> {
    let rule = reserve(state, user_id, ip).await?;
    let Some(active) = state.accounts.totp(user_id).await?.active else {
        return Err(GatewayError::Conflict("You have no authenticator app set up.".into()));
    };
    let secret = decrypt(state, user_id, &active.secret)?;
    let Some(step) = totp::verify(&secret, code, state.sessions.now()) else {
        return Ok(CodeCheck::Refused);
    };
    if !state.accounts.use_totp_step(user_id, step).await? {
        return Ok(CodeCheck::Refused); // replayed
    }
    state.throttle.succeeded(&rule, user_id, ip).await;
    Ok(CodeCheck::Accepted)
}

/// Removes the credential; sessions elevated with it lose that elevation.
pub async fn disable(state: &AppState, user_id: &str) -> Result<bool, GatewayError> {
    let removed = state.accounts.remove_totp(user_id).await?;
    state
        .sessions
        .update_all(user_id, |s| match s.elevation {
            Some(e) if e.method == ElevationMethod::Totp => {
                s.elevation = None;
                s.ever_elevated = false;
                true
            }
            _ => false,
        })
        .await?;
    Ok(removed)
}

/// `dalea-gateway reset-totp`: the operator removes a person's authenticator app (a lost
/// phone). Their sessions elevated with it lose that elevation; the audit log records it.
/// With the embedded store the gateway must be stopped first (one process owns the file).
pub fn operator_reset(config: crate::config::Config, email: &str) -> anyhow::Result<bool> {
    // Check what can be checked before opening (and so creating) anything.
    let people =
        crate::auth::UserDirectory::load(&config.users.file).map_err(|e| anyhow::anyhow!("users file: {e}"))?;
    if people.by_email(email).is_none() {
        anyhow::bail!("no one with email {email:?} in the users file");
    }
    let store_file = config.store.path.join(crate::session::embedded::FILE_NAME);
    if config.store.kind == crate::config::StoreKind::Embedded && !store_file.exists() {
        anyhow::bail!("no gateway data at {} (check --data-dir or [store] path)", store_file.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Routes to the built-in demo app need an address; nothing is served here.
    let unused = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let state = AppState::build(config, std::sync::Arc::new(crate::clock::SystemClock), Some(unused))
        .map_err(|e| anyhow::anyhow!("{e} (with the embedded store, stop the gateway first)"))?;
    let user = state.users.current().by_email(email).ok_or_else(|| anyhow::anyhow!("no one with email {email:?}"))?;
    runtime.block_on(async {
        let removed = disable(&state, &user.id).await.map_err(|e| match e {
            GatewayError::StoreUnavailable => anyhow::anyhow!("the store cannot be reached; nothing was changed"),
            other => anyhow::anyhow!("{other}"),
        })?;
        if removed {
            let actor = super::audit_log::Actor { device: Some("operator (reset-totp)".into()), ..Default::default() };
            super::audit_log::record(&state, &user.id, actor, crate::audit::AuditEvent::TotpDisabled).await;
        }
        Ok(removed)
    })
}
