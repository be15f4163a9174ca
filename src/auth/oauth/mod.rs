//! Sign-in through another provider: Google, Microsoft, GitHub and any OpenID Connect issuer
//! (`[[oauth.providers]]`). This module is the client side only — the sign-in URL to send a
//! person to, and, when they come back with a code, who they are — without deciding who may
//! sign in (the pages do that with [`crate::config::OAuthConfig`]).
//!
//! A sign-in is two calls: [`OAuthClients::start`] gives the provider's URL and a
//! [`PendingFlow`] (`state`, `nonce`, PKCE verifier) that the caller keeps server-side, keyed
//! by `state`, until the person returns; [`OAuthClients::finish`] exchanges the code with that
//! flow and checks everything the provider says ([`oidc`] for OpenID Connect and Microsoft,
//! [`github`] for GitHub). Checking the returned `state` against the kept flow is the caller's
//! job.
//!
//! Every error is short, names the provider by its display name and is safe to show a person:
//! no client secret, code, token or verifier ever goes into one (nor into the log).

pub mod github;
pub mod http;
pub mod id_token;
pub mod microsoft;
pub mod oidc;

use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::config::OAuthConfig;

use self::github::GitHubProvider;
use self::http::Http;
use self::oidc::OidcProvider;

/// Why a sign-in through a provider did not work.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// No configured provider has that name.
    #[error("no such sign-in provider")]
    UnknownProvider,
    /// A provider endpoint could not be reached, failed (5xx) or answered with something
    /// unusable: "Google could not be reached". Worth trying again later.
    #[error("{0}")]
    Unreachable(String),
    /// The provider refused the code exchange (`invalid_grant`: a used or expired code...).
    #[error("{0}")]
    Refused(String),
    /// The ID token (or what the provider says about the person) failed validation.
    #[error("{0}")]
    InvalidToken(String),
    /// The provider refused the gateway itself (its client id, secret or callback URL): no
    /// retry by the person can help until the operator fixes the configuration.
    #[error("{0}")]
    Misconfigured(String),
}

/// Token-endpoint errors that blame the client's own registration, not the person's sign-in
/// (RFC 6749 5.2; GitHub's names for the same).
const CLIENT_SETUP_ERRORS: [&str; 5] = [
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "incorrect_client_credentials",
    "redirect_uri_mismatch",
];

impl OAuthError {
    /// The provider could not be reached or failed; `detail` goes to the log only.
    pub(crate) fn unreachable(provider: &str, display_name: &str, what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::warn!(oauth.provider = %provider, error = %detail, "sign-in provider unavailable: {what}");
        OAuthError::Unreachable(format!("{display_name} could not be reached"))
    }

    /// A request that got no usable answer: unreachable, or unexpected when it was too large.
    pub(crate) fn failed(provider: &str, display_name: &str, what: &str, failure: http::Failure) -> Self {
        match failure {
            http::Failure::Network(_) => Self::unreachable(provider, display_name, what, failure),
            http::Failure::TooLarge(_) => Self::unexpected(provider, display_name, what, failure),
        }
    }

    /// The token endpoint refused the code exchange with OAuth error `code` (already checked by
    /// `http::error_code`). An error that blames the gateway's client registration is logged
    /// as an error for the operator and is [`OAuthError::Misconfigured`]; anything else is the
    /// person's sign-in being refused.
    pub(crate) fn token_refused(provider: &str, display_name: &str, code: Option<&str>) -> Self {
        match code {
            Some(code) if CLIENT_SETUP_ERRORS.contains(&code) => {
                tracing::error!(oauth.provider = %provider, oauth.error = code,
                    "the provider refused this gateway's client settings: check the provider's client_id, \
                     client secret and the callback URL registered with it");
                OAuthError::Misconfigured(format!("Signing in with {display_name} is not set up correctly"))
            }
            _ => {
                tracing::info!(oauth.provider = %provider, oauth.error = code.unwrap_or("-"),
                    "sign-in refused by the provider's token endpoint");
                OAuthError::Refused(match code {
                    Some(code) => format!("{display_name} refused the sign-in ({code})"),
                    None => format!("{display_name} refused the sign-in"),
                })
            }
        }
    }

    /// The provider answered with something unusable; `detail` goes to the log only.
    pub(crate) fn unexpected(provider: &str, display_name: &str, what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::warn!(oauth.provider = %provider, error = %detail, "sign-in provider answered unusably: {what}");
        OAuthError::Unreachable(format!("{display_name} answered with something unexpected"))
    }
}

/// What is kept server-side between [`OAuthClients::start`] and [`OAuthClients::finish`].
/// `state` (≤ 128 characters of `[A-Za-z0-9_-]`) is what the person brings back, the key to
/// find it by. `Debug` shows none of the secrets.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct PendingFlow {
    /// The provider's configured name.
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub created_at: Millis,
}

impl PendingFlow {
    /// A new flow (fresh `state`, `nonce` and PKCE verifier) and the URL that starts it at
    /// `endpoint`: `params`, then `state`, the `nonce` when `send_nonce` (GitHub has no ID
    /// token to carry it back) and the S256 code challenge.
    pub(crate) fn begin(
        provider: &str,
        endpoint: &str,
        params: &[(&str, &str)],
        send_nonce: bool,
        now: Millis,
    ) -> Result<(String, PendingFlow), url::ParseError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (state, nonce) = (CsrfToken::new_random(), Nonce::new_random());
        let mut url = url::Url::parse(endpoint)?;
        {
            let mut query = url.query_pairs_mut();
            query.extend_pairs(params).append_pair("state", state.secret());
            if send_nonce {
                query.append_pair("nonce", nonce.secret());
            }
            query
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", challenge.method().as_str());
        }
        let flow = PendingFlow {
            provider: provider.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            created_at: now,
        };
        Ok((url.into(), flow))
    }
}

impl std::fmt::Debug for PendingFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingFlow")
            .field("provider", &self.provider)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Who signed in at a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's configured name.
    pub provider: String,
    /// The provider's stable id for the person (`sub`; GitHub's numeric user id).
    pub subject: String,
    pub email: Option<String>,
    /// Whether the provider vouches that the address is the person's (never true without an
    /// email).
    pub email_verified: bool,
    pub name: Option<String>,
}

enum Provider {
    Oidc(OidcProvider),
    GitHub(GitHubProvider),
}

struct Configured {
    name: String,
    display_name: String,
    provider: Provider,
}

/// All configured providers' clients, built at start-up from config without network I/O.
pub struct OAuthClients {
    /// In config order.
    providers: Vec<Configured>,
    http: Http,
}

impl std::fmt::Debug for OAuthClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClients").field("providers", &self.providers().collect::<Vec<_>>()).finish()
    }
}

impl OAuthClients {
    /// One client per configured provider, sharing one HTTP client (no redirects followed,
    /// 5 s to connect, 10 s in all, answers up to 1 MiB). Installs the process's rustls
    /// crypto provider (ring) if none is.
    pub fn new(config: &OAuthConfig) -> anyhow::Result<OAuthClients> {
        let http = Http::new()?;
        let providers = config
            .providers
            .iter()
            .map(|p| {
                let provider = match OidcProvider::new(p) {
                    Some(oidc) => Provider::Oidc(oidc),
                    None => GitHubProvider::new(p)
                        .map(Provider::GitHub)
                        .ok_or_else(|| anyhow::anyhow!("provider {:?}: unknown kind", p.name))?,
                };
                Ok(Configured { name: p.name.clone(), display_name: p.display_name.clone(), provider })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(OAuthClients { providers, http })
    }

    /// True when no provider is configured (no sign-in buttons).
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// `(name, display name)` of each provider, in config order.
    pub fn providers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.providers.iter().map(|p| (p.name.as_str(), p.display_name.as_str()))
    }

    /// The display name ("Google") of the provider named `provider`.
    pub fn display_name(&self, provider: &str) -> Option<&str> {
        self.get(provider).map(|p| p.display_name.as_str())
    }

    fn get(&self, provider: &str) -> Option<&Configured> {
        self.providers.iter().find(|p| p.name == provider)
    }

    /// The sign-in URL at the provider, and what must be kept server-side until the callback.
    /// For an OpenID Connect provider this may fetch its discovery document (cached).
    pub async fn start(
        &self,
        provider: &str,
        redirect_uri: &str,
        now: Millis,
    ) -> Result<(String, PendingFlow), OAuthError> {
        match &self.get(provider).ok_or(OAuthError::UnknownProvider)?.provider {
            Provider::Oidc(p) => p.start(&self.http, redirect_uri, now).await,
            Provider::GitHub(p) => p.start(redirect_uri, now),
        }
    }

    /// Exchanges the code (PKCE verifier, same redirect_uri), validates everything, returns
    /// who signed in. The provider is `flow.provider`.
    pub async fn finish(
        &self,
        flow: &PendingFlow,
        redirect_uri: &str,
        code: &str,
        now: Millis,
    ) -> Result<ExternalIdentity, OAuthError> {
        match &self.get(&flow.provider).ok_or(OAuthError::UnknownProvider)?.provider {
            Provider::Oidc(p) => p.finish(&self.http, flow, redirect_uri, code, now).await,
            Provider::GitHub(p) => p.finish(&self.http, flow, redirect_uri, code).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> PendingFlow {
        PendingFlow {
            provider: "google".into(),
            state: "STATE-secret-value".into(),
            nonce: "NONCE-secret-value".into(),
            pkce_verifier: "VERIFIER-secret-value".into(),
            created_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn debug_of_a_pending_flow_shows_no_secret() {
        let shown = format!("{:?} {:#?}", flow(), flow());
        for secret in ["STATE", "NONCE", "VERIFIER"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("google") && shown.contains("1700000000000"), "{shown}");
    }

    #[test]
    fn a_pending_flow_round_trips_as_json() {
        let json = serde_json::to_string(&flow()).unwrap();
        assert_eq!(serde_json::from_str::<PendingFlow>(&json).unwrap(), flow());
    }

    /// A whole gateway config with these `[[oauth.providers]]`, as the config module parses it.
    fn config(providers: &str) -> OAuthConfig {
        let text = format!(
            "[[upstreams]]\nname = \"app\"\nbuiltin = \"whoami\"\n[[routes]]\nupstream = \"app\"\n\
             [users]\nfile = \"users.toml\"\n[oauth]\npublic_url = \"https://gw.example\"\n{providers}"
        );
        let overrides = crate::config::Overrides::default();
        crate::config::Config::from_toml_str(&text, std::path::Path::new("/nonexistent"), &[], &overrides)
            .unwrap()
            .oauth
    }

    const PROVIDERS: &str = "[[oauth.providers]]\nkind = \"github\"\nclient_id = \"gh-client\"\n\
        client_secret = \"s3cret\"\n[[oauth.providers]]\nkind = \"oidc\"\nname = \"corp\"\n\
        display_name = \"Corp SSO\"\nissuer = \"https://127.0.0.1:9\"\nclient_id = \"corp-client\"\n\
        client_secret = \"s3cret\"\n";

    #[tokio::test]
    async fn providers_are_listed_in_config_order_and_github_starts_without_network() {
        let clients = OAuthClients::new(&config(PROVIDERS)).unwrap();
        assert!(!clients.is_empty());
        assert_eq!(clients.providers().collect::<Vec<_>>(), [("github", "GitHub"), ("corp", "Corp SSO")]);
        assert_eq!(clients.display_name("corp"), Some("Corp SSO"));
        assert_eq!(clients.display_name("nope"), None);
        assert!(matches!(clients.start("nope", "https://gw/cb", 0).await, Err(OAuthError::UnknownProvider)));

        let (url, flow) = clients.start("github", "https://gw.example/.dalea/oauth/github/callback", 42).await.unwrap();
        assert_eq!(flow.provider, "github");
        assert_eq!(flow.created_at, 42);
        for value in [&flow.state, &flow.nonce, &flow.pkce_verifier] {
            assert!(value.len() >= 22 && value.len() <= 128, "{value}");
            assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{value}");
        }
        let url = url::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], flow.state);
        assert_eq!(q["client_id"], "gh-client");
        assert_eq!(q["scope"], "read:user user:email");
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(!url.as_str().contains(&flow.pkce_verifier));
        assert!(!url.as_str().contains("s3cret"));
        assert!(format!("{clients:?}").contains("github") && !format!("{clients:?}").contains("s3cret"));
    }
}
