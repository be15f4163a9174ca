//! A person who left the users file: their sessions and API keys end in the store, on every
//! replica, and their sign-in history (the devices and places behind the warning flags) is
//! forgotten. What they set up — TOTP, passkeys, linked sign-ins, the audit log — stays with
//! the id, so a person put back after a mistaken edit finds it again; an id is never given to
//! someone else (see the README).

use async_trait::async_trait;

use crate::auth::reload::PeopleRemoved;
use crate::state::AppState;

#[async_trait]
impl PeopleRemoved for AppState {
    async fn removed(&self, ids: &[String]) {
        for id in ids {
            end(self, id).await;
        }
    }
}

/// Ends what rests on `user_id`. A store that fails leaves the rest to each session's and key's
/// next use, which is refused anyway (the person is looked up on every request).
async fn end(state: &AppState, user_id: &str) {
    let sessions = match state.sessions.end_all(user_id).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(user.id = %user_id, error = %e, "a person left the users file; their sessions end at their next use");
            0
        }
    };
    let mut keys = 0;
    match state.api_keys.list(user_id).await {
        Ok(list) => {
            for key in list {
                match state.api_keys.revoke(user_id, &key.id).await {
                    Ok(Some(_)) => keys += 1,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(user.id = %user_id, error = %e, "an API key of a removed person was not revoked")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(user.id = %user_id, error = %e, "a person left the users file; their API keys end at their next use")
        }
    }
    if let Err(e) = state.vigilance.forget(user_id).await {
        tracing::warn!(user.id = %user_id, error = %e, "the sign-in history of a removed person was not forgotten");
    }
    tracing::info!(user.id = %user_id, sessions, api_keys = keys, "a person left the users file: their sessions and API keys ended");
}
