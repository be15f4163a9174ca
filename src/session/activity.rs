//! Last-active time and client IP: recorded in memory on every request (no I/O on the hot
//! path) and written to the store in batches by [`ActivityFlusher`], at most one flush
//! interval behind. SIGTERM keeps flushing through the grace period, then flushes once more.
//! The same writer carries sessions' activity and API keys' last use, each buffer to its own
//! [`ActivitySink`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::store::{Activity, SessionStore, StoreError};
use super::TokenHash;
use crate::api_keys::ApiKeyStore;
use crate::clock::{Clock, Millis};
use crate::metrics::Metrics;

/// Pending activity, one entry per session (later requests overwrite earlier ones).
#[derive(Debug)]
pub struct ActivityBuffer {
    pending: DashMap<TokenHash, (Millis, Option<IpAddr>)>,
    /// Upper bound on pending entries if the store is down for long: beyond it the oldest
    /// information is simply not recorded (sessions still work; only last-active lags).
    max_pending: usize,
}

impl ActivityBuffer {
    pub fn new(max_pending: usize) -> Self {
        ActivityBuffer { pending: DashMap::new(), max_pending }
    }

    pub fn record(&self, hash: TokenHash, at: Millis, ip: Option<IpAddr>) {
        if self.pending.len() >= self.max_pending && !self.pending.contains_key(&hash) {
            return;
        }
        self.pending.insert(hash, (at, ip));
    }

    /// Activity not yet written, for showing fresh data on the sessions page.
    pub fn pending(&self, hash: &TokenHash) -> Option<Activity> {
        self.pending.get(hash).map(|e| Activity { token_hash: *hash, at: e.0, ip: e.1 })
    }

    /// Forgets a session's pending activity (it was revoked).
    pub fn forget(&self, hash: &TokenHash) {
        self.pending.remove(hash);
    }

    pub fn take_all(&self) -> Vec<Activity> {
        let keys: Vec<TokenHash> = self.pending.iter().map(|e| *e.key()).collect();
        keys.into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .map(|(token_hash, (at, ip))| Activity { token_hash, at, ip })
            .collect()
    }

    /// Puts back a batch the store refused, unless newer activity arrived meanwhile.
    fn restore(&self, batch: Vec<Activity>) {
        for a in batch {
            if self.pending.len() >= self.max_pending {
                break;
            }
            self.pending.entry(a.token_hash).or_insert((a.at, a.ip));
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Where a buffer's batches are written.
#[async_trait]
pub trait ActivitySink: Send + Sync {
    /// What the entries are, for logs ("sessions", "api_keys").
    fn what(&self) -> &'static str;
    async fn write(&self, batch: &[Activity]) -> Result<(), StoreError>;
}

/// Sessions' last-active time and IP.
pub struct SessionActivity(pub Arc<dyn SessionStore>);

#[async_trait]
impl ActivitySink for SessionActivity {
    fn what(&self) -> &'static str {
        "sessions"
    }

    async fn write(&self, batch: &[Activity]) -> Result<(), StoreError> {
        self.0.record_activity(batch).await
    }
}

/// API keys' last-used time and IP.
pub struct KeyUse(pub Arc<dyn ApiKeyStore>);

#[async_trait]
impl ActivitySink for KeyUse {
    fn what(&self) -> &'static str {
        "api_keys"
    }

    async fn write(&self, batch: &[Activity]) -> Result<(), StoreError> {
        self.0.record_key_use(batch).await
    }
}

/// One buffer and where it goes.
pub struct Lane {
    pub buffer: Arc<ActivityBuffer>,
    pub sink: Arc<dyn ActivitySink>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

impl Lane {
    /// Writes everything pending. On failure the batch goes back into the buffer.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let batch = self.buffer.take_all();
        if batch.is_empty() {
            return Ok(0);
        }
        let metrics = self.metrics.lane(self.sink.what());
        match self.sink.write(&batch).await {
            Ok(()) => {
                if let Some(m) = metrics {
                    m.batch_size.observe(batch.len() as f64);
                    let oldest = batch.iter().map(|a| a.at).min().unwrap_or_default();
                    m.lag.observe((self.clock.now() - oldest).max(0) as f64 / 1_000.0);
                }
                Ok(batch.len())
            }
            Err(e) => {
                if let Some(m) = metrics {
                    m.errors.inc();
                }
                self.buffer.restore(batch);
                Err(e)
            }
        }
    }
}

/// Background service writing every lane to the store every `interval`.
pub struct ActivityFlusher {
    pub lanes: Vec<Lane>,
    pub interval: Duration,
    /// How long requests may still run after SIGTERM (the server's grace period).
    pub grace_period: Duration,
}

impl ActivityFlusher {
    /// Writes everything pending; what fails is kept for the next flush.
    pub async fn flush(&self) {
        for lane in &self.lanes {
            if let Err(e) = lane.flush().await {
                tracing::warn!(error = %e, what = lane.sink.what(), pending = lane.buffer.len(), "activity flush failed; will retry");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ActivityFlusher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        super::periodic::every(self.interval, &mut shutdown, || self.flush()).await;
        // Requests still finishing during the grace period keep recording activity; the last
        // flush lands just before the runtime is shut down at the end of the grace period.
        let deadline = tokio::time::Instant::now() + self.grace_period.saturating_sub(Duration::from_millis(300));
        let mut tick = tokio::time::interval(self.interval);
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => self.flush().await,
            }
        }
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Token;

    #[test]
    fn later_activity_overwrites_and_take_all_empties() {
        let buf = ActivityBuffer::new(10);
        let h = Token::generate().hash();
        buf.record(h, 1, None);
        buf.record(h, 2, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(buf.pending(&h).map(|a| a.at), Some(2));
        let all = buf.take_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].ip, Some(IpAddr::from([10, 0, 0, 1])));
        assert!(buf.is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let buf = ActivityBuffer::new(3);
        for i in 0..10 {
            buf.record(Token::generate().hash(), i, None);
        }
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn restore_keeps_newer_activity() {
        let buf = ActivityBuffer::new(10);
        let h = Token::generate().hash();
        buf.record(h, 1, None);
        let batch = buf.take_all();
        buf.record(h, 5, None);
        buf.restore(batch);
        assert_eq!(buf.pending(&h).map(|a| a.at), Some(5));
    }
}
