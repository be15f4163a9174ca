//! Sign-in throttling: failed attempts are counted per account and per client network in fixed
//! windows; past the limit, attempts are refused with 429 and `Retry-After` before any
//! password is checked. In memory, so per process (the embedded store is single-node anyway).

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;

use crate::clock::Millis;

/// Failed attempts allowed per account in one window (guessing one person's password).
pub const ACCOUNT_LIMIT: u32 = 10;
/// Failed attempts allowed per client network in one window (spraying many accounts).
pub const NETWORK_LIMIT: u32 = 50;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Bound on tracked keys; past it, expired windows are dropped, then the oldest.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Network(IpAddr),
}

#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: DashMap<Key, (Millis, u32)>,
}

/// IPv6 clients are counted per /64, the smallest network one customer usually gets.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::from(s)
        }
    }
}

impl SignInThrottle {
    fn keys(email: &str, ip: Option<IpAddr>) -> Vec<(Key, u32)> {
        let mut keys = vec![(Key::Account(email.trim().to_ascii_lowercase()), ACCOUNT_LIMIT)];
        if let Some(ip) = ip {
            keys.push((Key::Network(network(ip)), NETWORK_LIMIT));
        }
        keys
    }

    /// `Err(retry_after)` when this account or network has used up its failures.
    pub fn check(&self, email: &str, ip: Option<IpAddr>, now: Millis) -> Result<(), Duration> {
        let window = WINDOW.as_millis() as Millis;
        for (key, limit) in Self::keys(email, ip) {
            if let Some(entry) = self.failures.get(&key) {
                let (start, count) = *entry;
                if now < start + window && count >= limit {
                    return Err(Duration::from_millis((start + window - now).max(1000) as u64));
                }
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, email: &str, ip: Option<IpAddr>, now: Millis) {
        let window = WINDOW.as_millis() as Millis;
        if self.failures.len() >= MAX_KEYS {
            self.failures.retain(|_, (start, _)| now < *start + window);
        }
        if self.failures.len() >= MAX_KEYS {
            return; // still full of live windows: counting stops growing, checks keep working
        }
        for (key, _) in Self::keys(email, ip) {
            let mut entry = self.failures.entry(key).or_insert((now, 0));
            if now >= entry.0 + window {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }

    /// A successful sign-in clears the account's count (not the network's).
    pub fn record_success(&self, email: &str) {
        self.failures.remove(&Key::Account(email.trim().to_ascii_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    #[test]
    fn an_account_is_locked_after_its_limit_until_the_window_ends() {
        let t = SignInThrottle::default();
        for _ in 0..ACCOUNT_LIMIT {
            assert!(t.check("a@x", IP, 0).is_ok());
            t.record_failure("A@x", IP, 0);
        }
        let retry = t.check("a@x", None, 1_000).unwrap_err();
        assert_eq!(retry, WINDOW - Duration::from_secs(1));
        assert!(t.check("b@x", None, 1_000).is_ok(), "other accounts are unaffected");
        assert!(t.check("a@x", None, WINDOW.as_millis() as Millis).is_ok(), "a new window starts afresh");
    }

    #[test]
    fn a_network_spraying_many_accounts_is_stopped() {
        let t = SignInThrottle::default();
        for i in 0..NETWORK_LIMIT {
            t.record_failure(&format!("user{i}@x"), IP, 0);
        }
        assert!(t.check("fresh@x", IP, 10).is_err());
        assert!(t.check("fresh@x", Some("198.51.100.1".parse().unwrap()), 10).is_ok());
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let t = SignInThrottle::default();
        for i in 0..NETWORK_LIMIT {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            t.record_failure(&format!("u{i}@x"), Some(ip), 0);
        }
        assert!(t.check("z@x", Some("2001:db8:1:2:ffff::1".parse().unwrap()), 1).is_err());
        assert!(t.check("z@x", Some("2001:db8:1:3::1".parse().unwrap()), 1).is_ok());
    }

    #[test]
    fn success_clears_the_account_count() {
        let t = SignInThrottle::default();
        for _ in 0..ACCOUNT_LIMIT - 1 {
            t.record_failure("a@x", None, 0);
        }
        t.record_success("a@x");
        t.record_failure("a@x", None, 0);
        assert!(t.check("a@x", None, 0).is_ok());
    }
}
