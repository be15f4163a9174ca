//! The `[oauth]` section: sign-in providers (`[[oauth.providers]]`: Google, Microsoft, GitHub,
//! any OpenID Connect provider by discovery) and what a first sign-in through one may do —
//! link to an existing person by verified email, be refused or create a person — limited to
//! allowed email domains or addresses.
//!
//! Client secrets come from a file or an environment variable (inline only for trials) and are
//! never shown by `Debug` or in messages.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct OAuthFile {
    pub(super) public_url: Option<String>,
    pub(super) link_by_verified_email: bool,
    pub(super) unknown_people: Option<String>,
    pub(super) allowed_domains: Vec<String>,
    pub(super) allowed_emails: Vec<String>,
    pub(super) providers: Vec<ProviderFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderFile {
    kind: String,
    name: Option<String>,
    display_name: Option<String>,
    client_id: String,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    client_secret_env: Option<String>,
    scopes: Option<Vec<String>>,
    issuer: Option<String>,
    tenant: Option<String>,
    #[serde(default)]
    allowed_tenants: Vec<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    api_url: Option<String>,
}

impl std::fmt::Debug for ProviderFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderFile").field("kind", &self.kind).field("name", &self.name).finish_non_exhaustive()
    }
}

/// What happens when someone signs in through a provider and matches no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownPeople {
    /// They are told they have no account here (the default).
    Refuse,
    /// A person is created for them (email from the provider, verified only).
    Create,
}

/// A provider's client secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(…)")
    }
}

/// How a provider is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenID Connect by discovery at `issuer` (Google, and any `kind = "oidc"` provider).
    Oidc { issuer: String },
    /// Microsoft identity platform v2.0. `tenant` is `common`, `organizations`, `consumers` or a
    /// tenant id; for the first three the issuer names the person's tenant (`{tenantid}` in
    /// `issuer`), checked against `allowed_tenants` when that is not empty.
    Microsoft { tenant: String, issuer: String, allowed_tenants: Vec<String> },
    /// GitHub: OAuth2 plus its user API; only a verified primary email counts.
    GitHub { authorize_url: String, token_url: String, api_url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The URL segment and `oauth:<name>` sign-in method: `[a-z0-9-]`, unique.
    pub name: String,
    /// The sign-in button's label ("Google").
    pub display_name: String,
    pub kind: ProviderKind,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The gateway's public origin as browsers and providers see it (`https://app.example.com`,
    /// no path): redirect URIs are `<public_url>/.dalea/oauth/<name>/callback`. Required with
    /// providers.
    pub public_url: Option<String>,
    pub providers: Vec<ProviderConfig>,
    pub link_by_verified_email: bool,
    pub unknown_people: UnknownPeople,
    /// Lower-case email domains allowed to sign in through a provider (empty: any).
    pub allowed_domains: Vec<String>,
    /// Lower-case addresses allowed besides those domains.
    pub allowed_emails: Vec<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            public_url: None,
            providers: Vec::new(),
            link_by_verified_email: false,
            unknown_people: UnknownPeople::Refuse,
            allowed_domains: Vec::new(),
            allowed_emails: Vec::new(),
        }
    }
}

impl OAuthConfig {
    /// Whether the allow-lists admit `email` (both empty: everyone).
    pub fn allows(&self, email: &str) -> bool {
        if self.allowed_domains.is_empty() && self.allowed_emails.is_empty() {
            return true;
        }
        let email = email.trim().to_ascii_lowercase();
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        self.allowed_emails.contains(&email) || self.allowed_domains.iter().any(|d| d == domain)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The origins the sign-in page's provider buttons lead to (for its `form-action`): each
    /// provider's issuer, or GitHub's authorize URL, as `scheme://host[:port]`.
    pub fn form_targets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.providers {
            let url = match &p.kind {
                ProviderKind::Oidc { issuer } | ProviderKind::Microsoft { issuer, .. } => issuer,
                ProviderKind::GitHub { authorize_url, .. } => authorize_url,
            };
            if let Ok(u) = url::Url::parse(url) {
                let origin = u.origin().ascii_serialization();
                if origin != "null" && !out.contains(&origin) {
                    out.push(origin);
                }
            }
        }
        out
    }

    /// The redirect URI to register with provider `name`.
    pub fn redirect_uri(&self, name: &str) -> String {
        format!("{}/.dalea/oauth/{name}/callback", self.public_url.as_deref().unwrap_or_default())
    }
}

const GOOGLE_ISSUER: &str = "https://accounts.google.com";
const MICROSOFT_ISSUER: &str = "https://login.microsoftonline.com/{tenant}/v2.0";
const GITHUB_AUTHORIZE: &str = "https://github.com/login/oauth/authorize";
const GITHUB_TOKEN: &str = "https://github.com/login/oauth/access_token";
const GITHUB_API: &str = "https://api.github.com";
const MULTI_TENANT: [&str; 3] = ["common", "organizations", "consumers"];

pub(super) fn oauth(f: OAuthFile, base: &Path) -> Result<OAuthConfig, ConfigError> {
    let unknown_people = match f.unknown_people.as_deref().unwrap_or("refuse") {
        "refuse" => UnknownPeople::Refuse,
        "create" => UnknownPeople::Create,
        other => {
            return Err(ConfigError::new(
                "oauth.unknown_people",
                format!("{other:?} is not one of \"refuse\", \"create\""),
            ))
        }
    };
    let allowed_domains = lower_list("oauth.allowed_domains", f.allowed_domains, |d| {
        !d.is_empty() && !d.contains('@') && !d.contains(char::is_whitespace)
    })?;
    let allowed_emails =
        lower_list("oauth.allowed_emails", f.allowed_emails, |e| e.contains('@') && !e.contains(char::is_whitespace))?;
    let mut providers: Vec<ProviderConfig> = Vec::new();
    for (i, p) in f.providers.into_iter().enumerate() {
        let p = provider(i, p, base)?;
        if providers.iter().any(|q| q.name == p.name) {
            return Err(ConfigError::new(
                format!("oauth.providers[{i}].name"),
                format!("{:?} is used by an earlier provider; give each a unique name", p.name),
            ));
        }
        providers.push(p);
    }
    let public_url = match f.public_url {
        Some(url) => Some(origin("oauth.public_url", &url)?),
        None if !providers.is_empty() => return Err(ConfigError::new(
            "oauth.public_url",
            "is required with [[oauth.providers]]: the gateway's public origin (e.g. \"https://app.example.com\"), \
                 from which each provider's redirect URI <public_url>/.dalea/oauth/<name>/callback is made",
        )),
        None => None,
    };
    Ok(OAuthConfig {
        public_url,
        providers,
        link_by_verified_email: f.link_by_verified_email,
        unknown_people,
        allowed_domains,
        allowed_emails,
    })
}

fn lower_list(key: &str, items: Vec<String>, ok: impl Fn(&str) -> bool) -> Result<Vec<String>, ConfigError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item.trim().to_ascii_lowercase();
            if ok(&item) {
                Ok(item)
            } else {
                Err(ConfigError::new(format!("{key}[{i}]"), format!("{item:?} is not valid here")))
            }
        })
        .collect()
}

fn provider(i: usize, p: ProviderFile, base: &Path) -> Result<ProviderConfig, ConfigError> {
    let key = |field: &str| format!("oauth.providers[{i}].{field}");
    let known = ["google", "microsoft", "github", "oidc"];
    if !known.contains(&p.kind.as_str()) {
        return Err(ConfigError::new(key("kind"), format!("{:?} is not one of {known:?}", p.kind)));
    }
    let name = p.name.clone().unwrap_or_else(|| p.kind.clone());
    if name.is_empty()
        || name.len() > 32
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(ConfigError::new(key("name"), format!("{name:?} must be 1 to 32 of a-z, 0-9 and -")));
    }
    if p.client_id.trim().is_empty() {
        return Err(ConfigError::new(key("client_id"), "must not be empty"));
    }
    let client_secret = client_secret(&key, &p, base)?;
    let only_for = |field: &str, value: bool, kinds: &str| {
        if value {
            Err(ConfigError::new(key(field), format!("only applies to kind {kinds}")))
        } else {
            Ok(())
        }
    };
    let github_urls = p.authorize_url.is_some() || p.token_url.is_some() || p.api_url.is_some();
    // The GitHub-only key that was set, for the message.
    let github_key = [("authorize_url", &p.authorize_url), ("token_url", &p.token_url), ("api_url", &p.api_url)]
        .into_iter()
        .find_map(|(k, v)| v.is_some().then_some(k))
        .unwrap_or("authorize_url");
    let kind = match p.kind.as_str() {
        "github" => {
            only_for("issuer", p.issuer.is_some(), "\"google\", \"microsoft\" or \"oidc\"")?;
            let url = |field: &str, v: &Option<String>, default: &str| match v {
                Some(v) => endpoint(&key(field), v),
                None => Ok(default.to_string()),
            };
            ProviderKind::GitHub {
                authorize_url: url("authorize_url", &p.authorize_url, GITHUB_AUTHORIZE)?,
                token_url: url("token_url", &p.token_url, GITHUB_TOKEN)?,
                api_url: url("api_url", &p.api_url, GITHUB_API)?,
            }
        }
        "microsoft" => {
            only_for(github_key, github_urls, "\"github\"")?;
            let tenant = p.tenant.clone().unwrap_or_else(|| "common".into());
            if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                return Err(ConfigError::new(key("tenant"), format!("{tenant:?} is not a tenant id or name")));
            }
            if !p.allowed_tenants.is_empty() && !MULTI_TENANT.contains(&tenant.as_str()) {
                return Err(ConfigError::new(
                    key("allowed_tenants"),
                    "only applies with tenant = \"common\", \"organizations\" or \"consumers\"",
                ));
            }
            let issuer = match &p.issuer {
                Some(i) => endpoint(&key("issuer"), i)?,
                None => MICROSOFT_ISSUER.replace("{tenant}", &tenant),
            };
            ProviderKind::Microsoft { tenant, issuer, allowed_tenants: p.allowed_tenants.clone() }
        }
        kind => {
            only_for(github_key, github_urls, "\"github\"")?;
            only_for("tenant", p.tenant.is_some() || !p.allowed_tenants.is_empty(), "\"microsoft\"")?;
            let issuer = match (&p.issuer, kind) {
                (Some(i), _) => endpoint(&key("issuer"), i)?,
                (None, "google") => GOOGLE_ISSUER.to_string(),
                (None, _) => return Err(ConfigError::new(key("issuer"), "is required for kind \"oidc\"")),
            };
            ProviderKind::Oidc { issuer }
        }
    };
    let scopes = match p.scopes {
        Some(s) => s,
        None if p.kind == "github" => vec!["read:user".into(), "user:email".into()],
        None => vec!["openid".into(), "email".into(), "profile".into()],
    };
    if !matches!(kind, ProviderKind::GitHub { .. }) && !scopes.iter().any(|s| s == "openid") {
        return Err(ConfigError::new(key("scopes"), "must include \"openid\" for an OpenID Connect provider"));
    }
    if let Some(s) = scopes.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
        return Err(ConfigError::new(key("scopes"), format!("{s:?} is not a scope")));
    }
    let display_name = p.display_name.clone().unwrap_or_else(|| match p.kind.as_str() {
        "google" => "Google".into(),
        "microsoft" => "Microsoft".into(),
        "github" => "GitHub".into(),
        _ => name.clone(),
    });
    Ok(ProviderConfig { name, display_name, kind, client_id: p.client_id.trim().to_string(), client_secret, scopes })
}

/// Exactly one of `client_secret_file`, `client_secret_env`, `client_secret`.
fn client_secret(key: &dyn Fn(&str) -> String, p: &ProviderFile, base: &Path) -> Result<ClientSecret, ConfigError> {
    let secret = match (&p.client_secret_file, &p.client_secret_env, &p.client_secret) {
        (Some(file), None, None) => {
            let path = base.join(file.trim());
            std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(key("client_secret_file"), format!("cannot read {}: {e}", path.display()))
            })?
        }
        (None, Some(var), None) => std::env::var(var).map_err(|_| {
            ConfigError::new(key("client_secret_env"), format!("the environment variable {var} is not set"))
        })?,
        (None, None, Some(inline)) => inline.clone(),
        (None, None, None) => {
            return Err(ConfigError::new(
                key("client_secret_file"),
                "is required (or client_secret_env naming an environment variable)",
            ))
        }
        _ => {
            return Err(ConfigError::new(
                key("client_secret_file"),
                "set only one of client_secret_file, client_secret_env and client_secret",
            ))
        }
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(ConfigError::new(key("client_secret_file"), "the client secret is empty"));
    }
    Ok(ClientSecret(secret.to_string()))
}

/// The gateway's public origin: an [`endpoint`] with no path.
fn origin(key: &str, value: &str) -> Result<String, ConfigError> {
    let url = endpoint(key, value)?;
    let parsed = url::Url::parse(&url).map_err(|e| ConfigError::new(key, e.to_string()))?;
    if parsed.path() != "/" || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::new(key, format!("{value:?} must be an origin only: scheme, host and port")));
    }
    Ok(url)
}

/// Whether `url`'s host is this machine (`localhost` or a loopback address): the only hosts a
/// provider may be reached on over plain `http://`.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A provider URL: `https://`, or `http://` to a loopback host (a provider on this machine,
/// e.g. in tests). No trailing slash.
fn endpoint(key: &str, value: &str) -> Result<String, ConfigError> {
    let url =
        url::Url::parse(value.trim()).map_err(|e| ConfigError::new(key, format!("{value:?} is not a URL: {e}")))?;
    let loopback = is_loopback(&url);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(ConfigError::new(key, format!("{value:?} must be an https:// URL"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(key, format!("{value:?} must not have a query or fragment")));
    }
    Ok(value.trim().trim_end_matches('/').to_string())
}
