//! The one place errors become HTTP: status, a stable machine-readable code and a message a
//! person can act on. Causes are logged where they happen and never sent to the client.

/// Everything a request can fail with, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Sign in to continue.")]
    SignInRequired,
    #[error("Email or password is incorrect.")]
    BadCredentials,
    #[error("This request did not come from this site's own page. Reload the page and try again.")]
    CsrfRejected,
    #[error("{0}")]
    Forbidden(String),
    #[error("Not found.")]
    NotFound,
    #[error("Method not allowed.")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("The request body is too large.")]
    PayloadTooLarge,
    #[error("Send this request as {0}.")]
    UnsupportedMediaType(&'static str),
    #[error("Too many failed sign-in attempts. Try again in {} minutes.", .0.div_ceil(60))]
    TooManyAttempts(u64),
    #[error("Too many wrong codes. Try again in {} minutes.", .0.div_ceil(60))]
    TooManyCodes(u64),
    /// The client's network started more sign-ins (provider, passkey) than `[rate_limit]` allows.
    #[error("Too many sign-ins started from your network. Try again in {}.", minutes(*.0))]
    TooManySignInStarts(u64),
    /// A sensitive route or action and no re-authentication within `max_age` (seconds).
    #[error(
        "This needs you to confirm it's you again: with a passkey or your authenticator app if you have set one up, otherwise with your password."
    )]
    ElevationRequired { max_age: u64 },
    #[error("That code is not right, or it was already used. Wait for the next code and try again.")]
    BadCode,
    /// A passkey ceremony that did not prove anything (the message says why, safe to show).
    #[error("{0}")]
    PasskeyRefused(String),
    /// `[passkeys]` is not configured.
    #[error("Passkeys are not enabled on this gateway.")]
    PasskeysNotEnabled,
    /// A malformed, unknown, revoked or expired API key (the message says which).
    #[error("{0}")]
    BadApiKey(&'static str),
    /// An API key where keys are not accepted (the message says where).
    #[error("{0}")]
    ApiKeyNotAccepted(&'static str),
    #[error("Send API keys only in the Authorization header (Authorization: Bearer dalea_…), never in a cookie or the URL. Treat this key as leaked: revoke it and create a new one.")]
    ApiKeyMisplaced,
    #[error("Sessions are temporarily unavailable. Nothing was lost; try again in a moment.")]
    StoreUnavailable,
    /// The pending store is full (`pending::TOO_MANY`): no sign-in through a provider or with a
    /// passkey can start until some finish or expire.
    #[error("Too many sign-ins are in progress right now. Try again in a few minutes, or sign in with your password.")]
    SignInsInProgress,
    #[error("The application behind the gateway is not answering. Try again in a moment.")]
    UpstreamUnavailable,
    #[error("The application behind the gateway took too long to answer.")]
    UpstreamTimeout,
    #[error("Something went wrong on our side.")]
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_) => 400,
            GatewayError::SignInRequired
            | GatewayError::BadCredentials
            | GatewayError::ElevationRequired { .. }
            | GatewayError::BadCode
            | GatewayError::PasskeyRefused(_)
            | GatewayError::BadApiKey(_)
            | GatewayError::ApiKeyNotAccepted(_)
            | GatewayError::ApiKeyMisplaced => 401,
            GatewayError::CsrfRejected | GatewayError::Forbidden(_) => 403,
            GatewayError::NotFound | GatewayError::PasskeysNotEnabled => 404,
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::Conflict(_) => 409,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::UnsupportedMediaType(_) => 415,
            GatewayError::TooManyAttempts(_) | GatewayError::TooManyCodes(_) | GatewayError::TooManySignInStarts(_) => {
                429
            }
            GatewayError::StoreUnavailable | GatewayError::SignInsInProgress => 503,
            GatewayError::UpstreamUnavailable => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::Internal => 500,
        }
    }

    /// Stable code for the JSON `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::SignInRequired => "signin_required",
            GatewayError::BadCredentials => "invalid_credentials",
            GatewayError::CsrfRejected => "csrf_rejected",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::TooManyAttempts(_) | GatewayError::TooManyCodes(_) | GatewayError::TooManySignInStarts(_) => {
                "too_many_attempts"
            }
            GatewayError::ElevationRequired { .. } => "elevation_required",
            GatewayError::BadCode => "invalid_code",
            GatewayError::PasskeyRefused(_) => "passkey_refused",
            GatewayError::PasskeysNotEnabled => "passkeys_not_enabled",
            GatewayError::BadApiKey(_) => "invalid_api_key",
            GatewayError::ApiKeyNotAccepted(_) => "api_key_not_accepted",
            GatewayError::ApiKeyMisplaced => "api_key_misplaced",
            GatewayError::StoreUnavailable => "store_unavailable",
            GatewayError::SignInsInProgress => "too_many_signins_in_progress",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::Internal => "internal",
        }
    }

    /// Extra headers the status needs (`Allow`, `Retry-After`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            GatewayError::MethodNotAllowed(allow) => vec![("allow", allow.to_string())],
            GatewayError::StoreUnavailable => vec![("retry-after", "2".to_string())],
            // Records expire within minutes (passkeys 5, providers 10).
            GatewayError::SignInsInProgress => vec![("retry-after", "60".to_string())],
            GatewayError::TooManyAttempts(secs)
            | GatewayError::TooManyCodes(secs)
            | GatewayError::TooManySignInStarts(secs) => {
                vec![("retry-after", secs.to_string())]
            }
            // RFC 6750: the token presented is no good.
            GatewayError::BadApiKey(why) => {
                vec![("www-authenticate", format!("Bearer error=\"invalid_token\", error_description=\"{why}\""))]
            }
            // RFC 9470 step-up challenge.
            GatewayError::ElevationRequired { max_age } => vec![(
                "www-authenticate",
                format!(
                    "Bearer error=\"insufficient_user_authentication\", error_description=\"A recent \
                     re-authentication is required\", max_age={max_age}"
                ),
            )],
            _ => Vec::new(),
        }
    }

    /// The JSON body: `{"error": code, "message": text}` plus any extra fields.
    pub fn json(&self, extra: Option<(&str, &str)>) -> Vec<u8> {
        let mut body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        if let (Some((k, v)), Some(map)) = (extra, body.as_object_mut()) {
            map.insert(k.to_string(), serde_json::Value::String(v.to_string()));
        }
        body.to_string().into_bytes()
    }
}

impl GatewayError {
    /// What a failed proxy attempt means to the client; `None` when the client connection
    /// itself is gone (nothing left to answer).
    pub fn from_proxy_failure(e: &pingora::Error) -> Option<Self> {
        use pingora::{ErrorSource, ErrorType};
        match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) if *code >= 500 => Some(GatewayError::UpstreamUnavailable),
            (_, ErrorType::HTTPStatus(_)) => {
                Some(GatewayError::BadRequest("The request could not be processed.".into()))
            }
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(GatewayError::UpstreamTimeout),
            (ErrorSource::Upstream, _) => Some(GatewayError::UpstreamUnavailable),
            (ErrorSource::Downstream, ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed) => {
                None
            }
            (ErrorSource::Downstream, _) => Some(GatewayError::BadRequest("The request could not be read.".into())),
            _ => Some(GatewayError::Internal),
        }
    }
}

impl GatewayError {
    /// A sign-in start that could not keep its record in the pending store, logged here once at
    /// warn (`method`: `passkey`, `oauth:<provider>`): a full store is [`SignInsInProgress`]
    /// (trying again in a moment cannot help), anything else a store outage.
    ///
    /// [`SignInsInProgress`]: GatewayError::SignInsInProgress
    pub fn from_pending_put(e: crate::session::store::StoreError, method: &str) -> Self {
        match e {
            crate::session::store::StoreError::Unavailable(m) if m == crate::pending::TOO_MANY => {
                tracing::warn!(
                    method,
                    limit = crate::pending::MAX_RECORDS,
                    "sign-in refused: the pending store is full of sign-ins in progress"
                );
                GatewayError::SignInsInProgress
            }
            other => {
                tracing::warn!(method, error = %other, "sign-in could not start: session store error");
                GatewayError::StoreUnavailable
            }
        }
    }
}

/// `1 minute`, `15 minutes`: whole minutes, rounded up, for `secs` seconds.
fn minutes(secs: u64) -> String {
    match secs.div_ceil(60) {
        1 => "1 minute".to_string(),
        n => format!("{n} minutes"),
    }
}

impl From<crate::session::store::StoreError> for GatewayError {
    fn from(e: crate::session::store::StoreError) -> Self {
        tracing::warn!(error = %e, "session store error");
        GatewayError::StoreUnavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_outages_are_retryable_503s_not_sign_outs() {
        let e = GatewayError::StoreUnavailable;
        assert_eq!(e.status(), 503);
        assert!(e.headers().iter().any(|(k, _)| *k == "retry-after"));
    }

    #[test]
    fn missing_elevation_is_an_rfc_9470_step_up_challenge() {
        let e = GatewayError::ElevationRequired { max_age: 600 };
        assert_eq!(e.status(), 401);
        let (name, value) = e.headers().into_iter().next().unwrap_or_default();
        assert_eq!(name, "www-authenticate");
        assert!(value.starts_with(r#"Bearer error="insufficient_user_authentication", error_description=""#));
        assert!(value.ends_with(", max_age=600"), "{value}");
    }

    #[test]
    fn a_full_pending_store_is_its_own_503_and_other_store_errors_stay_outages() {
        use crate::session::store::StoreError;
        let full = GatewayError::from_pending_put(StoreError::Unavailable(crate::pending::TOO_MANY.into()), "passkey");
        assert_eq!(full, GatewayError::SignInsInProgress);
        assert_eq!((full.status(), full.code()), (503, "too_many_signins_in_progress"));
        assert_eq!(
            full.to_string(),
            "Too many sign-ins are in progress right now. Try again in a few minutes, or sign in with your password."
        );
        assert_eq!(full.headers(), vec![("retry-after", "60".to_string())]);
        let down = GatewayError::from_pending_put(StoreError::Unavailable("connection refused".into()), "oauth:corp");
        assert_eq!(down, GatewayError::StoreUnavailable);
        let bad = GatewayError::from_pending_put(StoreError::Corrupt("pending record refused".into()), "passkey");
        assert_eq!(bad, GatewayError::StoreUnavailable);
    }

    #[test]
    fn too_many_starts_say_how_long_in_whole_minutes() {
        let e = GatewayError::TooManySignInStarts(61);
        assert_eq!((e.status(), e.code()), (429, "too_many_attempts"));
        assert_eq!(e.to_string(), "Too many sign-ins started from your network. Try again in 2 minutes.");
        assert_eq!(e.headers(), vec![("retry-after", "61".to_string())]);
        let soon = GatewayError::TooManySignInStarts(1);
        assert_eq!(soon.to_string(), "Too many sign-ins started from your network. Try again in 1 minute.");
    }

    #[test]
    fn json_bodies_carry_code_and_message() {
        let body = GatewayError::SignInRequired.json(Some(("signin_url", "/.dalea/signin?rd=%2F")));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error"], "signin_required");
        assert_eq!(v["signin_url"], "/.dalea/signin?rd=%2F");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}
