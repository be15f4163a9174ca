//! Attempt throttling for sign-in and TOTP codes: attempts are counted per account and per
//! client network in fixed windows, and past the limit refused with 429 and `Retry-After`
//! before any password or code is checked. An attempt is counted *before* it is checked
//! (atomically, so concurrent guesses cannot slip past the limit) and given back when it
//! succeeds. Each [`Rule`] (sign-in, TOTP) has its own counters and limits (`[rate_limit]`).
//!
//! Memory: known accounts are counted exactly (their number is bounded by the users file). Unknown
//! emails (counted the same way, so throttling reveals nothing about who exists) and networks
//! live in bounded tables; if one is full of live windows, new keys there go uncounted — the
//! per-account limit of every real account still holds. In memory, so per process: the Redis
//! store provides the same [`AttemptLimiter`] shared by every replica.
//!
//! Sign-in *starts* (through a provider, or a passkey ceremony) are counted too, with the same
//! limiter, by [`reserve_start`]: per client network only, and never given back.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;

use crate::clock::Millis;
use crate::config::RateLimitConfig;
use crate::session::store::StoreError;

/// What is being counted and how much of it one window allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `signin` or `totp`: each kind has its own counters.
    pub kind: &'static str,
    /// Attempts per account (guessing one person's secret).
    pub per_account: u32,
    /// Attempts per client network (spraying many accounts).
    pub per_network: u32,
    pub window: Duration,
}

impl Rule {
    pub fn sign_in(c: &RateLimitConfig) -> Rule {
        Rule { kind: "signin", per_account: c.signin_per_account, per_network: c.signin_per_network, window: c.window }
    }

    pub fn totp(c: &RateLimitConfig) -> Rule {
        Rule { kind: "totp", per_account: c.totp_per_account, per_network: c.totp_per_network, window: c.window }
    }

    /// Sign-ins started (see [`reserve_start`]): only a per-network count, kept as the "account"
    /// counter of the network's key, so both limits are the same number.
    pub fn signin_start(c: &RateLimitConfig) -> Rule {
        let n = c.signin_starts_per_network;
        Rule { kind: "signin_start", per_account: n, per_network: n, window: c.window }
    }

    fn window_ms(&self) -> Millis {
        self.window.as_millis() as Millis
    }
}

/// Counts attempts per account and per client network.
#[async_trait]
pub trait AttemptLimiter: Send + Sync {
    /// Counts an attempt under `rule` for `account` (an email for sign-in, a user id for TOTP;
    /// `known`: a real account) from `ip`. `Ok(Err(retry_after))` when either has used up its
    /// window (nothing is counted then); `Err` when the counter cannot be reached (503).
    async fn reserve(
        &self,
        rule: &Rule,
        account: &str,
        known: bool,
        ip: Option<IpAddr>,
        now: Millis,
    ) -> Result<Result<(), Duration>, StoreError>;

    /// The attempt succeeded: the account starts afresh and the network gets its attempt back.
    async fn succeeded(&self, rule: &Rule, account: &str, ip: Option<IpAddr>);
}
/// An [`AttemptLimiter`] whose refusals are counted (`dalea_rate_limit_rejections_total`).
pub struct CountedRejections {
    pub inner: std::sync::Arc<dyn AttemptLimiter>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

#[async_trait]
impl AttemptLimiter for CountedRejections {
    async fn reserve(
        &self,
        rule: &Rule,
        account: &str,
        known: bool,
        ip: Option<IpAddr>,
        now: Millis,
    ) -> Result<Result<(), Duration>, StoreError> {
        let verdict = self.inner.reserve(rule, account, known, ip, now).await;
        if matches!(verdict, Ok(Err(_))) {
            self.metrics.auth.rate_limited(rule.kind);
        }
        verdict
    }

    async fn succeeded(&self, rule: &Rule, account: &str, ip: Option<IpAddr>) {
        self.inner.succeeded(rule, account, ip).await
    }
}

/// Bound on the unknown-email and network tables.
const MAX_KEYS: usize = 100_000;

type Windows<K> = DashMap<K, (Millis, u32)>;

/// The in-memory [`AttemptLimiter`] (one process).
#[derive(Debug, Default)]
pub struct SignInThrottle {
    accounts: Windows<(&'static str, String)>,
    unknown: Windows<(&'static str, String)>,
    networks: Windows<(&'static str, IpAddr)>,
}

/// IPv6 clients are counted per /64, the smallest network one customer usually gets.
pub fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::from(s)
        }
    }
}

/// The network a sign-in start is counted against, as a counter key: IPv4 per /24, IPv6 per
/// /64. Coarser than [`network`] for IPv4, because a start costs a stored record whether or not
/// anyone finishes it, so one client holding a few addresses must not get a budget per address.
pub fn start_network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(_) => format!("{}/64", network(ip)),
    }
}

/// Counts a sign-in start from `ip` under [`Rule::signin_start`]: `Ok(Err(retry_after))` when
/// its network has used up the window (nothing counted), `Err` when the counter cannot be
/// reached. A client whose address is unknown is not counted. One counter per start, in the
/// bounded table for unknown keys (in memory) or `<prefix>:t:{signin_start:a:<network>}`
/// (Redis, shared by every replica); refusals are counted in
/// `dalea_rate_limit_rejections_total{limit="signin_start"}` like the other rules'.
pub async fn reserve_start(
    limiter: &dyn AttemptLimiter,
    rule: &Rule,
    ip: Option<IpAddr>,
    now: Millis,
) -> Result<Result<(), Duration>, StoreError> {
    match ip {
        Some(ip) => limiter.reserve(rule, &start_network(ip), false, None, now).await,
        None => Ok(Ok(())),
    }
}

/// The account key as counted: emails compare case-insensitively.
pub fn account_key(account: &str) -> String {
    account.trim().to_ascii_lowercase()
}

/// Counts one attempt for `key` unless its window is used up (then `Err(retry_after)`).
fn take<K: Hash + Eq + Clone>(
    map: &Windows<K>,
    key: &K,
    limit: u32,
    window: Millis,
    now: Millis,
    bounded: bool,
) -> Result<bool, Duration> {
    if bounded && map.len() >= MAX_KEYS && !map.contains_key(key) {
        map.retain(|_, (start, _)| now < *start + window);
        if map.len() >= MAX_KEYS {
            return Ok(false); // full of live windows: this key goes uncounted
        }
    }
    let mut entry = map.entry(key.clone()).or_insert((now, 0));
    if now >= entry.0 + window {
        *entry = (now, 0);
    }
    if entry.1 >= limit {
        return Err(Duration::from_millis((entry.0 + window - now).max(1000) as u64));
    }
    entry.1 += 1;
    Ok(true)
}

fn give_back<K: Hash + Eq>(map: &Windows<K>, key: &K) {
    if let Some(mut e) = map.get_mut(key) {
        e.1 = e.1.saturating_sub(1);
    }
}

impl SignInThrottle {
    /// Counts an attempt for this account (`known`: it is a real one) and client.
    /// `Err(retry_after)` when either has used up its window; nothing is counted then.
    pub fn reserve(
        &self,
        rule: &Rule,
        account: &str,
        known: bool,
        ip: Option<IpAddr>,
        now: Millis,
    ) -> Result<(), Duration> {
        let key = (rule.kind, account_key(account));
        let accounts = if known { &self.accounts } else { &self.unknown };
        let counted = take(accounts, &key, rule.per_account, rule.window_ms(), now, !known)?;
        if let Some(ip) = ip {
            let net = (rule.kind, network(ip));
            if let Err(retry) = take(&self.networks, &net, rule.per_network, rule.window_ms(), now, true) {
                if counted {
                    give_back(accounts, &key);
                }
                return Err(retry);
            }
        }
        Ok(())
    }

    /// The attempt succeeded: the account starts afresh and the network gets its attempt back.
    pub fn succeeded(&self, rule: &Rule, account: &str, ip: Option<IpAddr>) {
        self.accounts.remove(&(rule.kind, account_key(account)));
        if let Some(ip) = ip {
            give_back(&self.networks, &(rule.kind, network(ip)));
        }
    }
}

#[async_trait]
impl AttemptLimiter for SignInThrottle {
    async fn reserve(
        &self,
        rule: &Rule,
        account: &str,
        known: bool,
        ip: Option<IpAddr>,
        now: Millis,
    ) -> Result<Result<(), Duration>, StoreError> {
        Ok(SignInThrottle::reserve(self, rule, account, known, ip, now))
    }

    async fn succeeded(&self, rule: &Rule, account: &str, ip: Option<IpAddr>) {
        SignInThrottle::succeeded(self, rule, account, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));
    const ACCOUNT_LIMIT: u32 = 10;
    const NETWORK_LIMIT: u32 = 50;
    const WINDOW: Duration = Duration::from_secs(15 * 60);
    const SIGNIN: Rule =
        Rule { kind: "signin", per_account: ACCOUNT_LIMIT, per_network: NETWORK_LIMIT, window: WINDOW };

    fn window() -> Millis {
        WINDOW.as_millis() as Millis
    }

    #[test]
    fn the_defaults_are_the_documented_ones_and_kinds_count_separately() {
        let config = RateLimitConfig::default();
        assert_eq!(Rule::sign_in(&config), SIGNIN);
        let totp = Rule::totp(&config);
        let t = SignInThrottle::default();
        for _ in 0..ACCOUNT_LIMIT {
            assert!(t.reserve(&SIGNIN, "u1", true, IP, 0).is_ok());
        }
        assert!(t.reserve(&SIGNIN, "u1", true, IP, 0).is_err());
        assert!(t.reserve(&totp, "u1", true, IP, 0).is_ok(), "TOTP codes have their own counter");
    }

    #[test]
    fn an_account_is_locked_after_its_limit_until_the_window_ends() {
        let t = SignInThrottle::default();
        for _ in 0..ACCOUNT_LIMIT {
            assert!(t.reserve(&SIGNIN, "A@x", true, IP, 0).is_ok());
        }
        let retry = t.reserve(&SIGNIN, "a@x", true, None, 1_000).unwrap_err();
        assert_eq!(retry, WINDOW - Duration::from_secs(1));
        assert!(t.reserve(&SIGNIN, "b@x", true, None, 1_000).is_ok(), "other accounts are unaffected");
        assert!(t.reserve(&SIGNIN, "a@x", true, None, window()).is_ok(), "a new window starts afresh");
    }

    #[test]
    fn unknown_emails_are_throttled_exactly_like_real_ones() {
        let t = SignInThrottle::default();
        for _ in 0..ACCOUNT_LIMIT {
            assert!(t.reserve(&SIGNIN, "ghost@x", false, None, 0).is_ok());
        }
        assert!(t.reserve(&SIGNIN, "ghost@x", false, None, 0).is_err());
    }

    #[test]
    fn concurrent_attempts_cannot_exceed_the_limit() {
        let t = std::sync::Arc::new(SignInThrottle::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..10).filter(|_| t.reserve(&SIGNIN, "a@x", true, None, 0).is_ok()).count())
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(allowed, ACCOUNT_LIMIT as usize);
    }

    #[test]
    fn a_network_spraying_many_accounts_is_stopped() {
        let t = SignInThrottle::default();
        for i in 0..NETWORK_LIMIT {
            assert!(t.reserve(&SIGNIN, &format!("user{i}@x"), false, IP, 0).is_ok());
        }
        assert!(t.reserve(&SIGNIN, "fresh@x", true, IP, 10).is_err());
        assert!(t.reserve(&SIGNIN, "fresh@x", true, Some("198.51.100.1".parse().unwrap()), 10).is_ok());
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let t = SignInThrottle::default();
        for i in 0..NETWORK_LIMIT {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert!(t.reserve(&SIGNIN, &format!("u{i}@x"), false, Some(ip), 0).is_ok());
        }
        assert!(t.reserve(&SIGNIN, "z@x", false, Some("2001:db8:1:2:ffff::1".parse().unwrap()), 1).is_err());
        assert!(t.reserve(&SIGNIN, "z@x", false, Some("2001:db8:1:3::1".parse().unwrap()), 1).is_ok());
    }

    #[test]
    fn success_clears_the_account_and_refunds_the_network() {
        let t = SignInThrottle::default();
        for _ in 0..ACCOUNT_LIMIT {
            t.reserve(&SIGNIN, "a@x", true, IP, 0).unwrap();
        }
        t.succeeded(&SIGNIN, "a@x", IP);
        assert!(t.reserve(&SIGNIN, "a@x", true, IP, 0).is_ok());
        assert_eq!(t.networks.get(&("signin", network(IP.unwrap()))).map(|e| e.1), Some(ACCOUNT_LIMIT));
    }

    /// A start's verdict from the in-memory limiter (which is never unreachable).
    async fn start(t: &SignInThrottle, rule: &Rule, ip: Option<&str>, now: Millis) -> Result<(), Duration> {
        let ip = ip.map(|s| s.parse::<IpAddr>().unwrap());
        reserve_start(t, rule, ip, now).await.unwrap_or_else(|e| panic!("in memory: {e}"))
    }

    #[tokio::test]
    async fn sign_in_starts_are_counted_per_ipv4_24_and_ipv6_64() {
        let config = RateLimitConfig { signin_starts_per_network: 3, ..RateLimitConfig::default() };
        let rule = Rule::signin_start(&config);
        assert_eq!((rule.kind, rule.per_account, rule.per_network), ("signin_start", 3, 3));
        assert_eq!(Rule::signin_start(&RateLimitConfig::default()).per_network, 450);
        let t = SignInThrottle::default();
        for host in ["192.0.2.1", "192.0.2.2", "192.0.2.254"] {
            assert_eq!(start(&t, &rule, Some(host), 0).await, Ok(()));
        }
        let refused = start(&t, &rule, Some("192.0.2.77"), 1_000).await;
        assert_eq!(refused, Err(WINDOW - Duration::from_secs(1)), "the whole /24 has used its 3");
        assert_eq!(start(&t, &rule, Some("192.0.3.1"), 1_000).await, Ok(()), "the next /24 has not");
        assert_eq!(start(&t, &rule, None, 1_000).await, Ok(()), "unknown clients are not counted");
        assert_eq!(start(&t, &rule, Some("192.0.2.1"), window()).await, Ok(()), "a new window starts afresh");

        for i in 0..3 {
            assert_eq!(start(&t, &rule, Some(&format!("2001:db8:1:2::{i}")), 0).await, Ok(()));
        }
        assert!(start(&t, &rule, Some("2001:db8:1:2:ffff::1"), 0).await.is_err(), "the same /64");
        assert_eq!(start(&t, &rule, Some("2001:db8:1:3::1"), 0).await, Ok(()), "another /64");
        assert_eq!(start_network("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(start_network("198.51.100.200".parse().unwrap()), "198.51.100.0/24");
        let ip = Some(IpAddr::from([192, 0, 2, 1]));
        assert!(t.reserve(&Rule::sign_in(&config), "a@x", true, ip, 1_000).is_ok(), "sign-in attempts count apart");
    }

    #[test]
    fn real_accounts_stay_protected_when_the_bounded_tables_are_full() {
        let t = SignInThrottle::default();
        for i in 0..MAX_KEYS {
            t.unknown.insert(("signin", format!("junk{i}")), (0, 1));
            t.networks.insert(("signin", IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])), (0, 1));
        }
        for _ in 0..ACCOUNT_LIMIT {
            assert!(t.reserve(&SIGNIN, "a@x", true, IP, 5).is_ok());
        }
        assert!(
            t.reserve(&SIGNIN, "a@x", true, IP, 5).is_err(),
            "the account limit holds however full the other tables are"
        );
    }
}
