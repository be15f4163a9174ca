//! [`PasskeyService`]: webauthn-rs configured from `[passkeys]`, with the gateway's policy.
//!
//! Every ceremony requires user verification (the authenticator checked a PIN, fingerprint or
//! face), and every successful assertion is checked for it again. Registration asks for a
//! discoverable (resident) credential, so people sign in without typing their email. The
//! relying party id and origin come from config; webauthn-rs checks both on every answer.
//!
//! The ceremony states (`PasskeyRegistration`, `DiscoverableAuthentication`,
//! `PasskeyAuthentication`) must stay on the server, be used at most once and for at most
//! [`CEREMONY_TIMEOUT`]: the caller keeps them in the pending store and takes them once.
//! Signature counters back that up only for authenticators that count (synced passkeys report
//! 0): an assertion whose counter is not above the stored one is refused as
//! [`PasskeyError::PossiblyCloned`].

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{AuthenticationResult, CredentialID, Url, Webauthn, WebauthnBuilder, WebauthnError};
use webauthn_rs_proto::ResidentKeyRequirement;

use super::{
    check_credential_id, CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRecord, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse,
    Uuid,
};
use crate::config::PasskeysConfig;

/// How long a browser has to answer a ceremony (the WebAuthn `timeout`); a ceremony's state
/// is of no use after it.
pub const CEREMONY_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a ceremony failed. The messages are safe to show the person; the cause from webauthn-rs
/// is logged at debug level where it is mapped.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The passkey used is not one of the person's registered passkeys (unknown, removed, or
    /// someone else's), or its user handle names someone else.
    #[error("this passkey is not registered here")]
    UnknownPasskey,
    /// Elevation was asked of a person with no passkeys.
    #[error("you have no passkeys")]
    NoPasskeys,
    /// The authenticator did not verify the person (no PIN, fingerprint or face check).
    #[error("your passkey did not check it's you (PIN, fingerprint or face)")]
    NotVerified,
    /// The signature counter did not go up: this answer was used before, or the passkey was copied.
    #[error("this passkey answer was already used, or the passkey was copied")]
    PossiblyCloned,
    /// Any other answer that does not verify (another site's, another request's, malformed).
    #[error("{0}")]
    Rejected(String),
    /// A ceremony could not be started.
    #[error("passkeys are unavailable: {0}")]
    Unavailable(String),
}

/// webauthn-rs configured from `[passkeys]`; built once at start-up (`AppState::passkeys`).
pub struct PasskeyService {
    webauthn: Webauthn,
    config: PasskeysConfig,
}

impl std::fmt::Debug for PasskeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyService").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PasskeyService {
    /// The relying party `config` describes. Fails only for a config validation would refuse.
    pub fn new(config: &PasskeysConfig) -> anyhow::Result<PasskeyService> {
        let origin = Url::parse(&config.origin)
            .map_err(|e| anyhow::anyhow!("passkeys.origin: {:?} is not a URL: {e}", config.origin))?;
        let webauthn = WebauthnBuilder::new(&config.rp_id, &origin)
            .and_then(|b| b.rp_name(&config.rp_name).timeout(CEREMONY_TIMEOUT).build())
            .map_err(|e| {
                anyhow::anyhow!("passkeys: rp_id {:?} does not fit origin {:?}: {e}", config.rp_id, config.origin)
            })?;
        Ok(PasskeyService { webauthn, config: config.clone() })
    }

    /// The settings this service was built from.
    pub fn config(&self) -> &PasskeysConfig {
        &self.config
    }

    /// The WebAuthn user handle of a person: a UUID (version 8) made from a SHA-256 of their
    /// id, so the same person always gets the same handle and no table is needed. It is not a
    /// secret (anyone who knows a person's id can compute it) and need not be: authenticators
    /// return it only to this site, and a sign-in is decided by the signature, never by it.
    pub fn user_handle(user_id: &str) -> Uuid {
        let digest = Sha256::new().chain_update(b"dalea passkey user handle\0").chain_update(user_id).finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // the RFC 9562 variant
        Uuid::from_bytes(bytes)
    }

    /// Starts registering a passkey for a signed-in person: user verification required, a
    /// discoverable (resident) credential required, the person's `existing` passkeys excluded
    /// (their authenticators refuse to register twice). `email` and `display_name` are only
    /// labels the authenticator shows (empty ones fall back to the id and the email).
    pub fn start_registration(
        &self,
        user_id: &str,
        email: &str,
        display_name: &str,
        existing: &[PasskeyRecord],
    ) -> Result<(CreationChallengeResponse, PasskeyRegistration), PasskeyError> {
        let user_name = if email.trim().is_empty() { user_id } else { email.trim() };
        let display_name = if display_name.trim().is_empty() { user_name } else { display_name.trim() };
        let exclude: Vec<CredentialID> = existing.iter().map(|r| r.passkey.cred_id().clone()).collect();
        let (mut ccr, state) = self
            .webauthn
            .start_passkey_registration(Self::user_handle(user_id), user_name, display_name, Some(exclude))
            .map_err(unavailable)?;
        // webauthn-rs leaves residency optional (security keys have little room for resident
        // keys); sign-in without an email needs the credential to be discoverable.
        if let Some(selection) = ccr.public_key.authenticator_selection.as_mut() {
            selection.require_resident_key = true;
            selection.resident_key = Some(ResidentKeyRequirement::Required);
        }
        Ok((ccr, state))
    }

    /// Checks the browser's answer to [`PasskeyService::start_registration`]; the new passkey
    /// (store it with `PasskeyRecord::new`, which refuses a credential id registered before).
    pub fn finish_registration(
        &self,
        credential: &RegisterPublicKeyCredential,
        state: &PasskeyRegistration,
    ) -> Result<Passkey, PasskeyError> {
        let passkey =
            self.webauthn.finish_passkey_registration(credential, state).map_err(|e| refusal(e, "registration"))?;
        if check_credential_id(&super::credential_id(&passkey)).is_err() {
            return Err(PasskeyError::Rejected("this passkey's credential id is too long".into()));
        }
        Ok(passkey)
    }

    /// Starts a sign-in with a discoverable credential (no email typed; the authenticator
    /// offers the passkeys it holds for this site), user verification required. The request is
    /// modal (no `mediation`); set `mediation` to conditional for autofill-style sign-in.
    pub fn start_signin(&self) -> Result<(RequestChallengeResponse, DiscoverableAuthentication), PasskeyError> {
        let (mut rcr, state) = self.webauthn.start_discoverable_authentication().map_err(unavailable)?;
        rcr.mediation = None;
        Ok((rcr, state))
    }

    /// Which person and passkey a sign-in answer claims to be, not yet verified: the user
    /// handle and the credential id (base64url). Look the credential up
    /// (`PasskeyStore::passkey`), then call [`PasskeyService::finish_signin`] with the
    /// claimed person's passkeys. [`PasskeyError::UnknownPasskey`] when the answer carries no
    /// user handle or an id no passkey can have.
    pub fn identify(&self, credential: &PublicKeyCredential) -> Result<(Uuid, String), PasskeyError> {
        let (handle, raw_id) =
            self.webauthn.identify_discoverable_authentication(credential).map_err(|_| PasskeyError::UnknownPasskey)?;
        let id = URL_SAFE_NO_PAD.encode(raw_id);
        check_credential_id(&id).map_err(|_| PasskeyError::UnknownPasskey)?;
        Ok((handle, id))
    }

    /// Verifies a sign-in answer against the claimed person's passkeys as stored now: the
    /// credential must be one of `theirs` and its user handle theirs; signature, challenge,
    /// origin, RP id, user verification and counter are checked. Returns the passkey's id and
    /// its updated credential, to store with `PasskeyStore::passkey_used` (whose `false` must
    /// fail the sign-in).
    pub fn finish_signin(
        &self,
        credential: &PublicKeyCredential,
        state: &DiscoverableAuthentication,
        theirs: &[PasskeyRecord],
    ) -> Result<(String, Passkey), PasskeyError> {
        let (handle, id) = self.identify(credential)?;
        let record = theirs.iter().find(|r| r.id == id).ok_or(PasskeyError::UnknownPasskey)?;
        if Self::user_handle(&record.user_id) != handle {
            return Err(PasskeyError::UnknownPasskey);
        }
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(credential, state.clone(), &record.passkey)
            .map_err(|e| refusal(e, "sign-in"))?;
        used(record, &result)
    }

    /// Starts an elevation (confirm it's you) for a signed-in person: an assertion by one of
    /// `theirs`, user verification required.
    pub fn start_elevation(
        &self,
        theirs: &[PasskeyRecord],
    ) -> Result<(RequestChallengeResponse, PasskeyAuthentication), PasskeyError> {
        if theirs.is_empty() {
            return Err(PasskeyError::NoPasskeys);
        }
        let passkeys: Vec<Passkey> = theirs.iter().map(|r| r.passkey.clone()).collect();
        self.webauthn.start_passkey_authentication(&passkeys).map_err(unavailable)
    }

    /// Verifies an elevation answer against the person's passkeys as stored now (`theirs`:
    /// a passkey removed since the start is refused, and the counter is compared with the
    /// stored one). Returns the passkey's id and updated credential, as `finish_signin`.
    pub fn finish_elevation(
        &self,
        credential: &PublicKeyCredential,
        state: &PasskeyAuthentication,
        theirs: &[PasskeyRecord],
    ) -> Result<(String, Passkey), PasskeyError> {
        let id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
        let record = theirs.iter().find(|r| r.id == id).ok_or(PasskeyError::UnknownPasskey)?;
        // A user handle is optional here; one that is present must be this person's.
        if let Some(handle) = credential.get_user_unique_id() {
            if Uuid::from_slice(handle).ok() != Some(Self::user_handle(&record.user_id)) {
                return Err(PasskeyError::UnknownPasskey);
            }
        }
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(credential, as_single(state)?, &record.passkey)
            .map_err(|e| refusal(e, "elevation"))?;
        used(record, &result)
    }
}

/// The elevation state as one webauthn-rs checks against a single stored credential. Both types
/// wrap the same `AuthenticationState` (challenge, user verification policy, backup rules) under
/// the same field; `finish_passkey_authentication` would compare the answer with the copies of
/// the credentials taken at the start, so a counter stored since would be missed. The unit
/// tests pin that this conversion keeps working.
pub(super) fn as_single(state: &PasskeyAuthentication) -> Result<DiscoverableAuthentication, PasskeyError> {
    serde_json::to_value(state)
        .and_then(serde_json::from_value)
        .map_err(|e| PasskeyError::Unavailable(format!("elevation state: {e}")))
}

/// The outcome of a verified assertion: refused without user verification, otherwise the
/// passkey with its counter and backup flags moved forward.
fn used(record: &PasskeyRecord, result: &AuthenticationResult) -> Result<(String, Passkey), PasskeyError> {
    if !result.user_verified() {
        return Err(PasskeyError::NotVerified);
    }
    let mut passkey = record.passkey.clone();
    if result.needs_update() {
        passkey.update_credential(result);
    }
    Ok((record.id.clone(), passkey))
}

fn unavailable(e: WebauthnError) -> PasskeyError {
    PasskeyError::Unavailable(e.to_string())
}

/// A failed check of a browser's answer, as something to tell the person.
fn refusal(e: WebauthnError, ceremony: &str) -> PasskeyError {
    tracing::debug!(error = %e, ceremony, "passkey answer refused");
    let says = |m: &str| PasskeyError::Rejected(m.to_string());
    match e {
        WebauthnError::UserNotVerified => PasskeyError::NotVerified,
        WebauthnError::CredentialPossibleCompromise => PasskeyError::PossiblyCloned,
        WebauthnError::CredentialNotFound => PasskeyError::UnknownPasskey,
        WebauthnError::MismatchedChallenge | WebauthnError::ChallengeNotFound => {
            says("this passkey answer is for another request; try again")
        }
        WebauthnError::InvalidRPOrigin | WebauthnError::InvalidRPIDHash | WebauthnError::CredentialCrossOrigin => {
            says("this passkey answer is for another site")
        }
        WebauthnError::UserNotPresent => says("the passkey did not confirm someone was there"),
        WebauthnError::CredentialExcludedFromRequest => says("this passkey is already registered"),
        WebauthnError::CredentialInsecureCryptography | WebauthnError::COSEKeyInvalidAlgorithm => {
            says("this kind of passkey is not accepted here")
        }
        _ => says("the passkey answer could not be verified"),
    }
}
