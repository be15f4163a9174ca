//! Sign-in with GitHub: plain OAuth2 (GitHub is not an OpenID Provider for people), the
//! authorization-code flow with PKCE (S256, supported by GitHub since July 2025) and `state`,
//! then who the access token belongs to from GitHub's REST API: `GET /user` (the numeric `id`
//! is the subject: logins can be renamed and reused, ids cannot) and `GET /user/emails`.
//!
//! Only the address GitHub marks both `primary` and `verified` is taken: a person may add any
//! address to their account without proving it, so any other one — a verified secondary, or
//! the public `email` of `/user` — could be someone else's. If the primary address is not
//! verified, or the emails cannot be listed (the `user:email` scope was not granted), the
//! identity has no email.

use reqwest::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{bearer, error_code, Http, USER_AGENT as OUR_USER_AGENT};
use super::{ExternalIdentity, OAuthError, PendingFlow};
use crate::clock::Millis;
use crate::config::{ClientSecret, ProviderConfig, ProviderKind};

/// GitHub's REST API media type.
const GITHUB_JSON: &str = "application/vnd.github+json";
/// The REST API version asked for.
const API_VERSION: &str = "2022-11-28";
/// Codes longer than this are not sent anywhere.
const MAX_CODE_LEN: usize = 4096;

/// One entry of `GET /user/emails`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GitHubEmail {
    pub email: String,
    #[serde(default)]
    pub primary: bool,
    #[serde(default)]
    pub verified: bool,
}

/// The address to use: the one both primary and verified, if there is one.
pub fn chosen_email(emails: &[GitHubEmail]) -> Option<&str> {
    emails.iter().find(|e| e.primary && e.verified && !e.email.is_empty()).map(|e| e.email.as_str())
}

/// `GET /user`, the parts used.
#[derive(Debug, Deserialize)]
struct GitHubUser {
    id: u64,
    login: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

pub(crate) struct GitHubProvider {
    name: String,
    display_name: String,
    client_id: String,
    client_secret: ClientSecret,
    scopes: Vec<String>,
    authorize_url: String,
    token_url: String,
    api_url: String,
}

impl GitHubProvider {
    /// `None` unless `config` is a GitHub provider.
    pub fn new(config: &ProviderConfig) -> Option<GitHubProvider> {
        let ProviderKind::GitHub { authorize_url, token_url, api_url } = &config.kind else { return None };
        Some(GitHubProvider {
            name: config.name.clone(),
            display_name: config.display_name.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            authorize_url: authorize_url.clone(),
            token_url: token_url.clone(),
            api_url: api_url.trim_end_matches('/').to_string(),
        })
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

    /// The sign-in URL (no network needed) and the flow to keep.
    pub fn start(&self, redirect_uri: &str, now: Millis) -> Result<(String, PendingFlow), OAuthError> {
        let scope = self.scopes.join(" ");
        let params = [("client_id", self.client_id.as_str()), ("redirect_uri", redirect_uri), ("scope", &scope)];
        PendingFlow::begin(&self.name, &self.authorize_url, &params, false, now)
            .map_err(|e| self.unexpected("authorize_url is not a URL", e))
    }

    pub async fn finish(
        &self,
        http: &Http,
        flow: &PendingFlow,
        redirect_uri: &str,
        code: &str,
    ) -> Result<ExternalIdentity, OAuthError> {
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Err(OAuthError::Refused(format!("{} sent no usable code", self.display_name)));
        }
        let access_token = self.exchange(http, flow, redirect_uri, code).await?;
        let user: GitHubUser = match self.api(http, "/user", &access_token).await? {
            Some(user) => user,
            None => return Err(self.unexpected("GET /user refused", "no user")),
        };
        // Without the user:email scope GitHub answers 404 (or 403): no email then.
        let emails: Vec<GitHubEmail> = self.api(http, "/user/emails", &access_token).await?.unwrap_or_default();
        let email = chosen_email(&emails).map(str::to_string);
        let name = user.name.filter(|n| !n.trim().is_empty()).unwrap_or(user.login);
        Ok(ExternalIdentity {
            provider: self.name.clone(),
            subject: user.id.to_string(),
            email_verified: email.is_some(),
            email,
            name: Some(name),
        })
    }

    /// The token request: the access token.
    async fn exchange(
        &self,
        http: &Http,
        flow: &PendingFlow,
        redirect_uri: &str,
        code: &str,
    ) -> Result<String, OAuthError> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", flow.pkce_verifier.as_str()),
        ];
        let req = http.post(&self.token_url).header(ACCEPT, "application/json").form(&form);
        let answer = http.send(req).await.map_err(|e| self.failed("token request failed", e))?;
        if answer.status.is_server_error() {
            return Err(self.unreachable("token endpoint failed", answer.status));
        }
        // GitHub answers errors with 200 and an `error` field.
        match answer.json::<TokenAnswer>() {
            Some(TokenAnswer { error: Some(error), .. }) => {
                Err(OAuthError::token_refused(&self.name, &self.display_name, error_code(Some(&error))))
            }
            Some(TokenAnswer { access_token: Some(token), .. }) if answer.status.is_success() && !token.is_empty() => {
                Ok(token)
            }
            _ => Err(self.unexpected("token endpoint answer unusable", answer.status)),
        }
    }

    /// `GET {api_url}{path}` as JSON; `None` when GitHub answers 403 or 404 to it.
    async fn api<T: serde::de::DeserializeOwned>(
        &self,
        http: &Http,
        path: &str,
        access_token: &str,
    ) -> Result<Option<T>, OAuthError> {
        let req = http
            .get(&format!("{}{path}", self.api_url))
            .header(ACCEPT, GITHUB_JSON)
            .header(AUTHORIZATION, bearer(access_token))
            .header(USER_AGENT, OUR_USER_AGENT)
            .header("x-github-api-version", API_VERSION);
        let answer = http.send(req).await.map_err(|e| self.failed("API request failed", e))?;
        match answer.status {
            s if s.is_success() => answer.json().map(Some).ok_or_else(|| self.unexpected("API answer unusable", path)),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                tracing::info!(oauth.provider = %self.name, status = answer.status.as_u16(), path, "GitHub API refused");
                Ok(None)
            }
            StatusCode::UNAUTHORIZED => {
                tracing::info!(oauth.provider = %self.name, path, "GitHub did not accept its own access token");
                Err(OAuthError::Refused(format!("{} refused the sign-in", self.display_name)))
            }
            s if s.is_server_error() => Err(self.unreachable("API request failed", s)),
            s => Err(self.unexpected("API request failed", s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(email: &str, primary: bool, verified: bool) -> GitHubEmail {
        GitHubEmail { email: email.into(), primary, verified }
    }

    #[test]
    fn only_the_verified_primary_address_is_taken() {
        assert_eq!(
            chosen_email(&[email("second@example.com", false, true), email("first@example.com", true, true)]),
            Some("first@example.com")
        );
        assert_eq!(chosen_email(&[email("first@example.com", true, false)]), None, "primary, not verified");
        assert_eq!(
            chosen_email(&[email("first@example.com", true, false), email("second@example.com", false, true)]),
            None,
            "a verified secondary is not taken instead"
        );
        assert_eq!(chosen_email(&[]), None);
    }

    #[test]
    fn the_emails_list_parses_as_github_sends_it() {
        let list: Vec<GitHubEmail> = serde_json::from_str(
            r#"[{"email":"octocat@github.com","verified":true,"primary":true,"visibility":"public"},
                {"email":"o@example.com","verified":false,"primary":false,"visibility":null}]"#,
        )
        .unwrap();
        assert_eq!(chosen_email(&list), Some("octocat@github.com"));
    }
}
