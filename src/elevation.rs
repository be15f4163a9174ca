//! Sensitive-action policy: whether a session has re-authenticated recently enough for a
//! sensitive route or built-in action, and whether it may create new credentials.
//!
//! - A session *passes* when its latest elevation (TOTP, later passkey) or — for people with
//!   no second factor — its latest password proof is at most `max_age` old. Exactly `max_age`
//!   old still passes; one millisecond more does not.
//! - Creating a credential (enrolling TOTP with none active) also accepts a sign-in within
//!   `max_age`, because the built-in pages share an origin with the upstream apps.

use crate::clock::Millis;
use crate::session::Session;

/// Whether `at` is within `max_age` of `now` (inclusive).
fn within(at: Millis, now: Millis, max_age: Millis) -> bool {
    now.saturating_sub(at) <= max_age
}

/// Whether the session may perform a sensitive action at `now`.
pub fn passes(session: &Session, now: Millis, max_age: Millis) -> bool {
    session.elevation.is_some_and(|e| within(e.at, now, max_age))
        || session.reauthenticated_at.is_some_and(|at| within(at, now, max_age))
}

/// Whether the session may change or remove a second factor at `now`: only an elevation *with
/// a second factor* counts (a password proof never does once a second factor exists).
pub fn passes_with_second_factor(session: &Session, now: Millis, max_age: Millis) -> bool {
    session.elevation.is_some_and(|e| within(e.at, now, max_age))
}

/// Whether the session may create a credential at `now`: a sign-in or a re-authentication
/// within `max_age`.
pub fn recently_authenticated(session: &Session, now: Millis, max_age: Millis) -> bool {
    within(session.created_at, now, max_age) || passes(session, now, max_age)
}

/// Seconds left before the session stops passing (0 when it does not pass).
pub fn seconds_left(session: &Session, now: Millis, max_age: Millis) -> u64 {
    let latest = session.elevation.map(|e| e.at).into_iter().chain(session.reauthenticated_at).max();
    latest.map_or(0, |at| (at.saturating_add(max_age).saturating_sub(now)).max(0) as u64 / 1000)
}

/// `X-Dalea-Auth-Strength` and the sessions list: `elevated:<method>` while the session's
/// second-factor elevation stands, else `basic`.
pub fn auth_strength(session: &Session) -> String {
    match session.elevation {
        Some(e) => format!("elevated:{}", e.method.as_str()),
        None => "basic".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store_contract::session_at;
    use crate::session::{Elevation, ElevationMethod};

    const MIN: Millis = 60_000;
    const MAX_AGE: Millis = 10 * MIN;

    #[test]
    fn an_elevation_passes_up_to_exactly_max_age() {
        let (mut s, _) = session_at("u", 0, 90 * 86_400_000);
        assert!(!passes(&s, 5 * MIN, MAX_AGE), "a plain sign-in is no elevation");
        s.elevation = Some(Elevation { method: ElevationMethod::Totp, at: 20 * MIN });
        assert!(passes(&s, 20 * MIN, MAX_AGE));
        assert!(passes(&s, 30 * MIN, MAX_AGE), "exactly max_age old still passes");
        assert!(!passes(&s, 30 * MIN + 1, MAX_AGE), "one millisecond later it does not");
        assert_eq!(seconds_left(&s, 25 * MIN, MAX_AGE), 300);
        assert_eq!(seconds_left(&s, 31 * MIN, MAX_AGE), 0);
        assert_eq!(auth_strength(&s), "elevated:totp");
    }

    #[test]
    fn a_password_proof_passes_but_is_not_an_elevation() {
        let (mut s, _) = session_at("u", 0, 90 * 86_400_000);
        s.reauthenticated_at = Some(MIN);
        assert!(passes(&s, 11 * MIN, MAX_AGE));
        assert!(!passes_with_second_factor(&s, 2 * MIN, MAX_AGE), "never enough to change a second factor");
        assert!(!passes(&s, 11 * MIN + 1, MAX_AGE));
        assert_eq!(auth_strength(&s), "basic");
    }

    #[test]
    fn creating_credentials_accepts_a_recent_sign_in() {
        let (s, _) = session_at("u", 0, 90 * 86_400_000);
        assert!(recently_authenticated(&s, MAX_AGE, MAX_AGE));
        assert!(!recently_authenticated(&s, MAX_AGE + 1, MAX_AGE));
    }
}
