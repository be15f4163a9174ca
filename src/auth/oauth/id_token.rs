//! Checking an ID token: signature, issuer, audience, nonce, expiry (OpenID Connect Core 3.1.3.7).
//!
//! **The ID token** must be signed with one of the provider's published keys by an asymmetric
//! algorithm (`alg: none` and HMAC — which would let anyone who knows the public key forge a
//! token — are refused), name this provider as `iss` and this client in `aud` (any other
//! audience is refused; `azp`, when present, must be this client), carry the flow's `nonce`,
//! and not be expired, with 60 s of clock skew allowed (also for `iat` in the future).

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IssuerUrl, Nonce, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::microsoft;
use crate::clock::Millis;

/// Clock skew allowed when checking `exp` and `iat`.
pub const CLOCK_SKEW: Millis = 60 * 1000;

/// How a refused `iat` starts its error.
const ISSUED_IN_THE_FUTURE: &str = "issued in the future";

/// The signature algorithms an ID token may use: all asymmetric ones `openidconnect` verifies.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The claims read beyond the standard ones (Microsoft's).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ExtraClaims {
    /// Microsoft: the person's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// Microsoft: "email domain owner verified".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_edov: Option<Value>,
}

impl AdditionalClaims for ExtraClaims {}

type ProviderIdToken =
    IdToken<ExtraClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// A provider's signing keys (its JWK Set).
#[derive(Clone, Debug)]
pub struct KeySet(CoreJsonWebKeySet);

impl KeySet {
    /// Parses a JWK Set document. Keys of types this crate cannot use are skipped.
    pub fn from_json(json: &[u8]) -> Result<KeySet, serde_json::Error> {
        serde_json::from_slice(json).map(KeySet)
    }
}

/// What an ID token is checked against.
#[derive(Debug, Clone)]
pub struct IdTokenCheck<'a> {
    /// The `issuer` of the provider's discovery document (for Microsoft multi-tenant, the
    /// `{tenantid}` template).
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent in the authorization request.
    pub nonce: &'a str,
    pub now: Millis,
    /// `Some` for Microsoft: the allowed tenants (empty: any), and Microsoft's rule for a
    /// verified email.
    pub microsoft: Option<&'a [String]>,
}

/// What a valid ID token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdToken {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// Microsoft's `tid`, if the token has one.
    pub tenant: Option<String>,
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// Signed with a key the set does not have: fetch the set again (once) and retry.
    #[error("no key of the provider's key set matches the ID token")]
    UnknownKey,
    /// `reason` is short and safe to show ("expired", "nonce"...); `detail` is for the log.
    #[error("{reason}: {detail}")]
    Invalid { reason: &'static str, detail: String },
}

fn invalid(reason: &'static str, detail: impl std::fmt::Display) -> IdTokenError {
    IdTokenError::Invalid { reason, detail: detail.to_string() }
}

/// Checks the ID token `token` (compact JWS) against `keys` and `check`: see the module docs.
pub fn verify_id_token(token: &str, keys: &KeySet, check: &IdTokenCheck<'_>) -> Result<VerifiedIdToken, IdTokenError> {
    let id_token: ProviderIdToken =
        token.parse().map_err(|e| invalid("unreadable", format!("not an ID token this gateway can read: {e}")))?;
    let issuer = IssuerUrl::new(check.issuer.to_string()).map_err(|e| invalid("issuer", e))?;
    let template = check.microsoft.is_some() && microsoft::is_issuer_template(check.issuer);
    let at = |ms: Millis| DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| invalid("expired", "bad clock"));
    // `exp` is compared with a clock set back by the skew allowed, `iat` with one set forward.
    let (skewed_now, latest_iat) = (at(check.now - CLOCK_SKEW)?, at(check.now + CLOCK_SKEW)?);
    let verifier =
        CoreIdTokenVerifier::new_public_client(ClientId::new(check.client_id.to_string()), issuer, keys.0.clone())
            .set_allowed_algs(ALLOWED_ALGS)
            .require_issuer_match(!template)
            .set_time_fn(move || skewed_now)
            .set_issue_time_verifier_fn(move |iat| {
                if iat > latest_iat {
                    Err(format!("{ISSUED_IN_THE_FUTURE} ({iat})"))
                } else {
                    Ok(())
                }
            });
    let nonce = Nonce::new(check.nonce.to_string());
    let claims = id_token.claims(&verifier, &nonce).map_err(|e| match e {
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => {
            IdTokenError::UnknownKey
        }
        ClaimsVerificationError::SignatureVerification(e) => invalid("signature", e),
        // `openidconnect` reports a refused `iat` as `Expired` too.
        ClaimsVerificationError::Expired(e) if e.starts_with(ISSUED_IN_THE_FUTURE) => {
            invalid("issued in the future", e)
        }
        ClaimsVerificationError::Expired(e) => invalid("expired", e),
        ClaimsVerificationError::InvalidAudience(e) => invalid("audience", e),
        ClaimsVerificationError::InvalidIssuer(e) => invalid("issuer", e),
        ClaimsVerificationError::InvalidNonce(e) => invalid("nonce", e),
        ClaimsVerificationError::InvalidSubject(e) => invalid("subject", e),
        other => invalid("unsupported", other),
    })?;
    if let Some(azp) = claims.authorized_party() {
        if azp.as_str() != check.client_id {
            return Err(invalid("audience", format!("azp is {:?}, not this client", azp.as_str())));
        }
    }
    let extra = claims.additional_claims();
    if template {
        microsoft::check_tenant_issuer(
            check.issuer,
            claims.issuer().as_str(),
            extra.tid.as_deref(),
            check.microsoft.unwrap_or_default(),
        )
        .map_err(|e| invalid(if e == microsoft::TenantError::TenantNotAllowed { "tenant" } else { "issuer" }, e))?;
    }
    let subject = claims.subject().as_str().to_string();
    if subject.is_empty() {
        return Err(invalid("subject", "empty sub"));
    }
    let email = claims.email().map(|e| e.as_str().to_string()).filter(|e| !e.is_empty());
    let email_verified = email.is_some()
        && match check.microsoft {
            Some(_) => microsoft::email_verified(claims.email_verified(), extra.xms_edov.as_ref()),
            None => claims.email_verified() == Some(true),
        };
    let name = claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string()).filter(|n| !n.is_empty());
    Ok(VerifiedIdToken { subject, email, email_verified, name, tenant: extra.tid.clone() })
}
