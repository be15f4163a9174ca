//! Sign-in through an OpenID Connect provider (Google, Microsoft, any issuer with discovery):
//! the authorization-code flow with PKCE (S256), `state` and `nonce`, then the ID token the
//! token endpoint returns, checked with `openidconnect`'s verifier.
//!
//! **Discovery** (`<issuer>/.well-known/openid-configuration`) is fetched on first use, kept
//! for an hour, and fetched again after that or whenever the last fetch failed: a failure is
//! never remembered, so a provider that was down works again as soon as it is back. Its
//! `issuer` must be the configured one (OpenID Connect Discovery 4.3), except for Microsoft,
//! whose configured URL names a tenant alias (`common`) and whose discovery `issuer` is the
//! real issuer or the `{tenantid}` template (see [`super::microsoft`]). Every endpoint it names
//! must be `https://` (or `http://` on loopback).
//!
//! **Keys** (the `jwks_uri` set) are fetched with discovery's lifetime, and again when an ID
//! token is signed with a key the set does not have (the provider rotated its keys), at most
//! once every 30 s per provider.
//!
//! **The ID token** is checked by [`super::id_token`].

use std::sync::{Arc, Mutex, PoisonError};

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use serde_json::Value;

use super::http::{allowed_url, bearer, error_code, with_basic_auth, Answer, Http};
use super::id_token::{verify_id_token, IdTokenCheck, IdTokenError, KeySet, VerifiedIdToken};
use super::{microsoft, ExternalIdentity, OAuthError, PendingFlow};
use crate::clock::Millis;
use crate::config::{ClientSecret, ProviderConfig, ProviderKind};

/// How long a discovery document (and the key set fetched with it) is used.
pub const DISCOVERY_TTL: Millis = 60 * 60 * 1000;
/// The least time between two key-set fetches caused by an unknown key.
pub const JWKS_REFETCH_INTERVAL: Millis = 30 * 1000;

/// The parts of a discovery document used here.
#[derive(Debug, Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// A provider's discovery document, checked.
#[derive(Debug)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
    /// `client_secret_post` instead of `client_secret_basic` (only when the provider
    /// supports post and not basic).
    secret_in_body: bool,
}

#[derive(Default)]
struct Cache {
    /// The document and when it was fetched.
    discovery: Option<(Arc<Discovery>, Millis)>,
    /// The key set, the URI it came from and when it was fetched.
    keys: Option<(Arc<KeySet>, String, Millis)>,
    /// When an unknown key last caused a fetch of the key set (successful or not).
    keys_refetched_at: Option<Millis>,
}

/// An OpenID Connect provider (also Microsoft) and what is cached about it.
pub(crate) struct OidcProvider {
    name: String,
    display_name: String,
    client_id: String,
    client_secret: ClientSecret,
    scopes: Vec<String>,
    /// The configured issuer: where discovery is fetched from.
    issuer: String,
    /// `Some(allowed tenants)` for Microsoft.
    microsoft: Option<Vec<String>>,
    cache: Mutex<Cache>,
}

/// Codes longer than this are not sent anywhere.
const MAX_CODE_LEN: usize = 4096;

impl OidcProvider {
    /// `None` unless `config` is an OpenID Connect or Microsoft provider.
    pub fn new(config: &ProviderConfig) -> Option<OidcProvider> {
        let (issuer, microsoft) = match &config.kind {
            ProviderKind::Oidc { issuer } => (issuer.clone(), None),
            ProviderKind::Microsoft { issuer, allowed_tenants, .. } => (issuer.clone(), Some(allowed_tenants.clone())),
            ProviderKind::GitHub { .. } => return None,
        };
        Some(OidcProvider {
            name: config.name.clone(),
            display_name: config.display_name.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            issuer,
            microsoft,
            cache: Mutex::default(),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unreachable(&self, what: &str, detail: impl std::fmt::Display) -> OAuthError {
        OAuthError::unreachable(&self.name, &self.display_name, what, detail)
    }

    fn failed(&self, what: &str, failure: super::http::Failure) -> OAuthError {
        OAuthError::failed(&self.name, &self.display_name, what, failure)
    }

    fn unexpected(&self, what: &str, detail: impl std::fmt::Display) -> OAuthError {
        OAuthError::unexpected(&self.name, &self.display_name, what, detail)
    }

    /// The sign-in URL and the flow to keep.
    pub async fn start(
        &self,
        http: &Http,
        redirect_uri: &str,
        now: Millis,
    ) -> Result<(String, PendingFlow), OAuthError> {
        let discovery = self.discovery(http, now).await?;
        let scope = self.scopes.join(" ");
        let params = [
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", &scope),
        ];
        PendingFlow::begin(&self.name, &discovery.authorization_endpoint, &params, true, now)
            .map_err(|e| self.unexpected("authorization_endpoint is not a URL", e))
    }

    /// Exchanges `code`, checks the ID token, returns who signed in.
    pub async fn finish(
        &self,
        http: &Http,
        flow: &PendingFlow,
        redirect_uri: &str,
        code: &str,
        now: Millis,
    ) -> Result<ExternalIdentity, OAuthError> {
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Err(OAuthError::Refused(format!("{} sent no usable code", self.display_name)));
        }
        let discovery = self.discovery(http, now).await?;
        let (id_token, access_token) = self.exchange(http, &discovery, flow, redirect_uri, code).await?;
        let Some(id_token) = id_token else {
            tracing::info!(oauth.provider = %self.name, "sign-in refused: the token response has no id_token");
            return Err(OAuthError::InvalidToken(format!("{} sent no ID token", self.display_name)));
        };
        let check = IdTokenCheck {
            issuer: &discovery.issuer,
            client_id: &self.client_id,
            nonce: &flow.nonce,
            now,
            microsoft: self.microsoft.as_deref(),
        };
        let keys = self.keys(http, &discovery, now, false).await?;
        let verified = match verify_id_token(&id_token, &keys, &check) {
            Err(IdTokenError::UnknownKey) if self.may_refetch_keys(now) => {
                tracing::info!(oauth.provider = %self.name, "ID token signed with an unknown key: fetching the keys again");
                let keys = self.keys(http, &discovery, now, true).await?;
                verify_id_token(&id_token, &keys, &check)
            }
            other => other,
        };
        let mut verified = verified.map_err(|e| {
            tracing::info!(oauth.provider = %self.name, error = %e, "sign-in refused: ID token not valid");
            let reason = match &e {
                IdTokenError::UnknownKey => "signature",
                IdTokenError::Invalid { reason, .. } => reason,
            };
            OAuthError::InvalidToken(format!("The sign-in from {} could not be verified ({reason})", self.display_name))
        })?;
        if verified.email.is_none() {
            if let (Some(endpoint), Some(access_token)) = (&discovery.userinfo_endpoint, access_token) {
                self.userinfo(http, endpoint, &access_token, &mut verified).await?;
            }
        }
        Ok(ExternalIdentity {
            provider: self.name.clone(),
            subject: verified.subject,
            email: verified.email,
            email_verified: verified.email_verified,
            name: verified.name,
        })
    }

    /// The token request: `(id_token, access_token)`.
    async fn exchange(
        &self,
        http: &Http,
        discovery: &Discovery,
        flow: &PendingFlow,
        redirect_uri: &str,
        code: &str,
    ) -> Result<(Option<String>, Option<String>), OAuthError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", flow.pkce_verifier.as_str()),
        ];
        let mut req = http.post(&discovery.token_endpoint).header(ACCEPT, "application/json");
        if discovery.secret_in_body {
            form.extend([("client_id", self.client_id.as_str()), ("client_secret", self.client_secret.expose())]);
        } else {
            req = with_basic_auth(req, &self.client_id, self.client_secret.expose());
        }
        let answer = http.send(req.form(&form)).await.map_err(|e| self.failed("token request failed", e))?;
        token_answer(&answer).map_err(|e| match e {
            TokenFailure::Refused(code) => OAuthError::token_refused(&self.name, &self.display_name, code.as_deref()),
            TokenFailure::ServerError => self.unreachable("token endpoint failed", answer.status),
            TokenFailure::Garbage => self.unexpected("token endpoint answer unusable", answer.status),
        })
    }

    /// Fills in email (and name) from the userinfo endpoint, when the ID token had no email.
    async fn userinfo(
        &self,
        http: &Http,
        endpoint: &str,
        access_token: &str,
        verified: &mut VerifiedIdToken,
    ) -> Result<(), OAuthError> {
        let req = http.get(endpoint).header(ACCEPT, "application/json").header(AUTHORIZATION, bearer(access_token));
        let answer = http.send(req).await.map_err(|e| self.failed("userinfo request failed", e))?;
        if answer.status.is_server_error() {
            return Err(self.unreachable("userinfo endpoint failed", answer.status));
        }
        // A signed or encrypted userinfo answer (application/jwt) is not used: no email then.
        let info = match (answer.status.is_success(), answer.media_type.as_str()) {
            (true, "application/json") => answer.json::<Value>().unwrap_or(Value::Null),
            _ => {
                tracing::info!(oauth.provider = %self.name, status = answer.status.as_u16(),
                    media_type = %answer.media_type, "userinfo not used");
                return Ok(());
            }
        };
        // OpenID Connect Core 5.3.2: the userinfo sub must be the ID token's.
        if info.get("sub").and_then(Value::as_str) != Some(verified.subject.as_str()) {
            tracing::info!(oauth.provider = %self.name, "sign-in refused: userinfo is about someone else");
            return Err(OAuthError::InvalidToken(format!(
                "The sign-in from {} could not be verified (subject)",
                self.display_name
            )));
        }
        let email = info.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()).map(str::to_string);
        let claimed = info.get("email_verified").and_then(Value::as_bool);
        verified.email_verified = email.is_some()
            && match self.microsoft {
                Some(_) => microsoft::email_verified(claimed, info.get("xms_edov")),
                None => claimed == Some(true),
            };
        verified.email = email;
        if verified.name.is_none() {
            verified.name = info.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string);
        }
        Ok(())
    }

    /// The discovery document: cached for [`DISCOVERY_TTL`], fetched when missing or stale.
    async fn discovery(&self, http: &Http, now: Millis) -> Result<Arc<Discovery>, OAuthError> {
        if let Some((discovery, at)) = &self.cache().discovery {
            if fresh(*at, now, DISCOVERY_TTL) {
                return Ok(discovery.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let answer = http
            .send(http.get(&url).header(ACCEPT, "application/json"))
            .await
            .map_err(|e| self.failed("discovery request failed", e))?;
        if answer.status.is_server_error() {
            return Err(self.unreachable("discovery failed", answer.status));
        }
        if !answer.status.is_success() {
            return Err(self.unexpected("discovery failed", answer.status));
        }
        let doc: DiscoveryDocument =
            serde_json::from_slice(&answer.body).map_err(|e| self.unexpected("discovery document unusable", e))?;
        let discovery = Arc::new(self.check_discovery(doc)?);
        self.cache().discovery = Some((discovery.clone(), now));
        Ok(discovery)
    }

    fn check_discovery(&self, doc: DiscoveryDocument) -> Result<Discovery, OAuthError> {
        if self.microsoft.is_none() && doc.issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
            return Err(self.unexpected("discovery names another issuer", format!("issuer {:?}", doc.issuer)));
        }
        for (field, url) in [
            ("authorization_endpoint", Some(&doc.authorization_endpoint)),
            ("token_endpoint", Some(&doc.token_endpoint)),
            ("jwks_uri", Some(&doc.jwks_uri)),
            ("userinfo_endpoint", doc.userinfo_endpoint.as_ref()),
        ] {
            if let Some(url) = url {
                if !allowed_url(url) {
                    return Err(self.unexpected("discovery names an endpoint that is not https", field));
                }
            }
        }
        let methods = doc.token_endpoint_auth_methods_supported.unwrap_or_default();
        let secret_in_body = !methods.is_empty()
            && !methods.iter().any(|m| m == "client_secret_basic")
            && methods.iter().any(|m| m == "client_secret_post");
        Ok(Discovery {
            issuer: doc.issuer,
            authorization_endpoint: doc.authorization_endpoint,
            token_endpoint: doc.token_endpoint,
            jwks_uri: doc.jwks_uri,
            userinfo_endpoint: doc.userinfo_endpoint,
            secret_in_body,
        })
    }

    /// Whether an unknown key may cause another fetch of the key set now (and if so, that
    /// fetch is counted from now).
    fn may_refetch_keys(&self, now: Millis) -> bool {
        let mut cache = self.cache();
        let allowed = match cache.keys_refetched_at {
            Some(at) => !fresh(at, now, JWKS_REFETCH_INTERVAL),
            None => true,
        };
        if allowed {
            cache.keys_refetched_at = Some(now);
        }
        allowed
    }

    /// The key set: the cached one unless `refetch`, it is stale or came from another URI.
    async fn keys(
        &self,
        http: &Http,
        discovery: &Discovery,
        now: Millis,
        refetch: bool,
    ) -> Result<Arc<KeySet>, OAuthError> {
        if !refetch {
            if let Some((keys, uri, at)) = &self.cache().keys {
                if *uri == discovery.jwks_uri && fresh(*at, now, DISCOVERY_TTL) {
                    return Ok(keys.clone());
                }
            }
        }
        let answer = http
            .send(http.get(&discovery.jwks_uri).header(ACCEPT, "application/json, application/jwk-set+json"))
            .await
            .map_err(|e| self.failed("key set request failed", e))?;
        if answer.status.is_server_error() {
            return Err(self.unreachable("key set request failed", answer.status));
        }
        if !answer.status.is_success() {
            return Err(self.unexpected("key set request failed", answer.status));
        }
        let keys = Arc::new(KeySet::from_json(&answer.body).map_err(|e| self.unexpected("key set unusable", e))?);
        self.cache().keys = Some((keys.clone(), discovery.jwks_uri.clone(), now));
        Ok(keys)
    }
}

/// Whether something from `at` is still within `ttl` of `now` (a clock that went back counts
/// as stale, so it is fetched again rather than kept forever).
fn fresh(at: Millis, now: Millis, ttl: Millis) -> bool {
    now >= at && now - at < ttl
}

/// How a token endpoint said no.
#[derive(Debug, PartialEq, Eq)]
enum TokenFailure {
    /// 4xx with an OAuth error (the code, if it looks like one).
    Refused(Option<String>),
    ServerError,
    Garbage,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// `(id_token, access_token)` from a token endpoint's answer (RFC 6749 5.1, 5.2).
fn token_answer(answer: &Answer) -> Result<(Option<String>, Option<String>), TokenFailure> {
    if answer.status.is_success() {
        if let Some(error) = answer.json::<ErrorAnswer>() {
            return Err(TokenFailure::Refused(error_code(Some(&error.error)).map(str::to_string)));
        }
        let ok: TokenAnswer = answer.json().ok_or(TokenFailure::Garbage)?;
        if ok.access_token.is_none() && ok.id_token.is_none() {
            return Err(TokenFailure::Garbage);
        }
        return Ok((ok.id_token, ok.access_token));
    }
    if answer.status.is_server_error() {
        return Err(TokenFailure::ServerError);
    }
    match answer.json::<ErrorAnswer>() {
        Some(error) if answer.status.is_client_error() => {
            Err(TokenFailure::Refused(error_code(Some(&error.error)).map(str::to_string)))
        }
        _ => Err(TokenFailure::Garbage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::StatusCode;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            media_type: "application/json".into(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn token_answers_are_sorted_into_refused_server_error_and_garbage() {
        assert_eq!(
            token_answer(&answer(200, r#"{"access_token":"a","id_token":"i","token_type":"Bearer"}"#)),
            Ok((Some("i".into()), Some("a".into())))
        );
        assert_eq!(
            token_answer(&answer(400, r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#)),
            Err(TokenFailure::Refused(Some("invalid_grant".into())))
        );
        assert_eq!(
            token_answer(&answer(401, r#"{"error":"<b>x</b>"}"#)),
            Err(TokenFailure::Refused(None)),
            "an odd error code is not repeated"
        );
        assert_eq!(token_answer(&answer(503, "down")), Err(TokenFailure::ServerError));
        assert_eq!(token_answer(&answer(200, "<html>")), Err(TokenFailure::Garbage));
        assert_eq!(token_answer(&answer(200, "{}")), Err(TokenFailure::Garbage));
        assert_eq!(token_answer(&answer(302, "")), Err(TokenFailure::Garbage));
    }

    #[test]
    fn cached_things_expire_and_a_clock_that_went_back_refetches() {
        assert!(fresh(1_000, 1_000, DISCOVERY_TTL));
        assert!(fresh(1_000, 1_000 + DISCOVERY_TTL - 1, DISCOVERY_TTL));
        assert!(!fresh(1_000, 1_000 + DISCOVERY_TTL, DISCOVERY_TTL));
        assert!(!fresh(1_000, 999, DISCOVERY_TTL));
    }

    #[test]
    fn garbage_is_not_an_id_token() {
        let keys = KeySet::from_json(br#"{"keys":[]}"#).unwrap();
        let check = IdTokenCheck {
            issuer: "https://issuer.example",
            client_id: "c",
            nonce: "n",
            now: 1_700_000_000_000,
            microsoft: None,
        };
        for token in ["", "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(
                matches!(
                    verify_id_token(token, &keys, &check),
                    Err(IdTokenError::Invalid { reason: "unreadable", .. })
                ),
                "{token:?}"
            );
        }
    }
}
