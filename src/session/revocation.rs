//! Revocation fan-out for shared stores: every replica subscribes to the store's revocation
//! channel and drops a revoked session from its cache the moment the notice arrives. While the
//! subscription is down the cache is not trusted (cached sessions are re-checked with the store
//! on every use), and each time it is (re)established the cache is cleared first, so a notice
//! missed during a disconnect can never keep a revoked session alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::activity::ActivityBuffer;
use super::cache::SessionCache;
use super::redis::{client_for, SentinelResolver};
use super::TokenHash;
use crate::api_keys::keyring::KeyCache;
use crate::metrics::Metrics;

/// Notices this process published, remembered until they come back on its own subscription:
/// the time between is the fan-out lag every replica sees (same channel, same servers), with
/// no clock shared between machines needed.
#[derive(Debug, Default)]
pub struct NoticeLog {
    sent: AtomicU64,
    in_flight: Mutex<HashMap<Vec<u8>, Instant>>,
}

/// Bound on remembered notices (a subscription that is down would otherwise grow it).
const MAX_IN_FLIGHT: usize = 1_024;

impl NoticeLog {
    /// Called just before `payload` is published.
    pub fn publishing(&self, payload: &[u8]) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.clear();
        }
        in_flight.insert(payload.to_vec(), Instant::now());
    }

    /// How long ago this process published `payload`, if it did.
    pub fn arrived(&self, payload: &[u8]) -> Option<Duration> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.remove(payload).map(|at| at.elapsed())
    }

    /// Notices published so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct RevocationListener {
    pub cache: Arc<SessionCache>,
    pub activity: Arc<ActivityBuffer>,
    /// API keys are revoked through the same channel (`k:<hash>` notices).
    pub key_cache: Arc<KeyCache>,
    pub key_activity: Arc<ActivityBuffer>,
    /// Where to subscribe.
    pub via: SubscribeVia,
    pub channel: String,
    pub timeout: Duration,
    /// CA certificates (PEM) for `rediss://` servers, instead of the system roots.
    pub ca: Option<Arc<Vec<u8>>>,
    /// What this process published (for the fan-out lag).
    pub notices: Arc<NoticeLog>,
    pub metrics: Arc<Metrics>,
}

/// How the listener finds the server to subscribe on.
pub enum SubscribeVia {
    /// Servers to subscribe through, tried in order (any node of a cluster sees every PUBLISH).
    Servers(Vec<String>),
    /// The current master of `master`, asked of the sentinels on every (re)subscription, so
    /// after a failover the listener resubscribes on the promoted replica.
    Sentinel { master: String, sentinels: Vec<String> },
}

/// A notice's payload: the revoked session's token hash as 64 hex digits.
pub fn parse_notice(payload: &[u8]) -> Option<TokenHash> {
    if payload.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in payload.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(TokenHash(out))
}

impl RevocationListener {
    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let urls = match &self.via {
            SubscribeVia::Servers(urls) => urls,
            SubscribeVia::Sentinel { master, sentinels } => {
                return self.subscribe_via_sentinels(master, sentinels).await
            }
        };
        let mut last = String::from("no server to subscribe through");
        for url in urls {
            let attempt = async {
                // `rediss://` is TLS, verified by the store's `tls_ca_file` or the system roots.
                let client = client_for(url, self.ca.as_deref().map(Vec::as_slice)).map_err(|e| e.to_string())?;
                self.subscribe_on(&client).await
            };
            match tokio::time::timeout(self.attempt_timeout(), attempt).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = e,
                Err(_) => last = "timed out".to_string(),
            }
        }
        Err(last)
    }

    /// Asks the sentinels for the current master (never a remembered address) and subscribes
    /// there.
    async fn subscribe_via_sentinels(&self, master: &str, sentinels: &[String]) -> Result<redis::aio::PubSub, String> {
        let attempt = async {
            let mut resolver = SentinelResolver::new(master, sentinels, self.ca.as_deref().map(Vec::as_slice))
                .map_err(|e| e.to_string())?;
            let client = resolver.master().await.map_err(|e| format!("no master from the sentinels: {e}"))?;
            self.subscribe_on(&client).await
        };
        match tokio::time::timeout(self.attempt_timeout(), attempt).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_string()),
        }
    }

    async fn subscribe_on(&self, client: &redis::Client) -> Result<redis::aio::PubSub, String> {
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub.subscribe(&self.channel).await.map_err(|e| e.to_string())?;
        Ok(pubsub)
    }

    fn attempt_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_secs(1))
    }

    fn on_notice(&self, payload: &[u8]) {
        let kind = self.apply(payload);
        self.metrics.revocation.received(kind);
        if let Some(lag) = self.notices.arrived(payload) {
            self.metrics.revocation.fanout_lag.observe(lag.as_secs_f64());
        }
    }

    /// Drops what the notice names from memory; returns its kind (metrics label).
    fn apply(&self, payload: &[u8]) -> &'static str {
        // "k:<hash>": an API key was revoked.
        if let Some(hash) = payload.strip_prefix(b"k:").and_then(parse_notice) {
            self.key_cache.remove(&hash);
            self.key_activity.forget(&hash);
            return "api_key_revoked";
        }
        // "~<hash>": the session changed (elevation removed, …): re-read it, keep its activity.
        if let Some(hash) = payload.strip_prefix(b"~").and_then(parse_notice) {
            self.cache.remove(&hash);
            return "changed";
        }
        match parse_notice(payload) {
            Some(hash) => {
                self.cache.remove(&hash);
                self.activity.forget(&hash);
                "revoked"
            }
            None => {
                tracing::warn!("ignored a malformed revocation notice");
                "malformed"
            }
        }
    }
}

#[async_trait]
impl BackgroundService for RevocationListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = RETRY_MIN;
        loop {
            match self.subscribe().await {
                Ok(pubsub) => {
                    self.cache.set_trusted(true);
                    self.key_cache.clear();
                    self.metrics.revocation.subscribed.set(1);
                    tracing::info!(channel = %self.channel, "revocation notices subscribed; session cache cleared");
                    backoff = RETRY_MIN;
                    let mut notices = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            msg = notices.next() => match msg {
                                Some(m) => self.on_notice(m.get_payload_bytes()),
                                None => break,
                            },
                        }
                    }
                    self.cache.set_trusted(false);
                    self.metrics.revocation.subscribed.set(0);
                    tracing::warn!(
                        "revocation subscription lost; cached sessions are re-checked with the store until it is back"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to revocation notices; will retry"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_carry_a_token_hash_in_hex() {
        let h = super::super::Token::generate().hash();
        let hex: String = h.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_notice(hex.as_bytes()), Some(h));
        assert_eq!(parse_notice(b"zz"), None);
        assert_eq!(parse_notice(&[b'g'; 64]), None);
    }
}
