//! Sign-in with a passkey: `begin` binds a discoverable-credential ceremony to this browser, `finish`
//! checks the answer and starts the session (elevated by that passkey).
//!
//! Anyone may begin, and each begin keeps a record: begins are counted per client network
//! (`[rate_limit] signin_starts_per_network`) before anything is kept, and a full pending store
//! is answered with its own 503.

use super::*;
use crate::auth::throttle::reserve_start;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInBegin {
    #[serde(default)]
    remember_me: bool,
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
    let rule = Rule::signin_start(&state.config.rate_limit);
    let now = state.sessions.now();
    if let Err(retry) = reserve_start(state.throttle.as_ref(), &rule, ctx.client_ip, now).await? {
        state.metrics.auth.signin("passkey", "throttled");
        let ip = ip_field(ctx);
        tracing::info!(outcome = "throttled", client.ip = %ip, "passkey sign-in start refused: too many from its network");
        return Err(GatewayError::TooManySignInStarts(retry.as_secs().max(1)));
    }
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
    let id = keep_or(state, &ceremony, |e| {
        state.metrics.auth.signin("passkey", "error");
        GatewayError::from_pending_put(e, "passkey")
    })
    .await?;
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
