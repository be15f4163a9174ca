//! The sign-in notice webhook: when someone signs in from a new device or an unusual place, the
//! operator's app is told (so it can email the person).
//!
//! [`Notifier::notify`] never blocks and never fails a request: it puts the notice in a bounded
//! in-memory queue and returns; when the queue is full the notice is dropped, counted and
//! logged. A background task ([`Notifier::run`], a pingora `BackgroundService`) posts each
//! notice as JSON, signed:
//!
//! - `X-Dalea-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` — the timestamp
//!   is bound in so a captured request cannot be replayed later with a fresh timestamp;
//! - `X-Dalea-Timestamp: <Unix seconds of this attempt>`;
//! - `X-Dalea-Delivery: <id>`, the same on every attempt of one notice (receivers deduplicate);
//! - `X-Dalea-Event: new_device | unusual_location`.
//!
//! An attempt that fails on the network, times out, or gets 408, 429 or 5xx is retried after
//! `retry_backoff`, then twice as long each time, up to `max_attempts`; any other answer ends it
//! (2xx delivered; other 4xx and 3xx refused: retrying cannot help, and redirects are not
//! followed). The secret is never logged, nor the webhook's path or query (they may be tokens).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Semaphore;

use super::{FlagKind, SignInFacts};
use crate::clock::{rfc3339, Millis};
use crate::config::NotifyConfig;
use crate::session::token::random_bytes;

/// Notices waiting for delivery; beyond this they are dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Notices being delivered (or waiting to retry) at once.
const MAX_IN_FLIGHT: usize = 8;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long shutdown waits for deliveries under way (within the server's grace period).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
const USER_AGENT: &str = concat!("dalea-gateway/", env!("CARGO_PKG_VERSION"), " (webhook)");

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    NewDevice,
    UnusualLocation,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::NewDevice => "new_device",
            NoticeKind::UnusualLocation => "unusual_location",
        }
    }

    /// The notice a sign-in flag deserves, if any.
    pub fn for_flag(kind: FlagKind) -> Option<NoticeKind> {
        match kind {
            FlagKind::NewDevice => Some(NoticeKind::NewDevice),
            FlagKind::UnusualLocation => Some(NoticeKind::UnusualLocation),
            FlagKind::ImpossibleTravel | FlagKind::LongLived => None,
        }
    }
}

/// One notice about one sign-in.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The delivery id: 32 hex digits, random, the same on every attempt.
    pub id: String,
    pub kind: NoticeKind,
    /// The flag's reason: "First sign-in from Firefox on Windows".
    pub reason: String,
    pub user_id: String,
    pub email: Option<String>,
    /// The new session's public id.
    pub session_id: String,
    /// "Firefox on Windows".
    pub device: String,
    pub ip: Option<IpAddr>,
    /// "London, United Kingdom".
    pub location: Option<String>,
    /// When the person signed in.
    pub at: Millis,
}

#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    event: NoticeKind,
    reason: &'a str,
    user: UserPart<'a>,
    session: SessionPart<'a>,
    at: String,
}

#[derive(Serialize)]
struct UserPart<'a> {
    id: &'a str,
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct SessionPart<'a> {
    id: &'a str,
    device: &'a str,
    ip: Option<String>,
    location: Option<&'a str>,
}

impl Notice {
    /// A notice about the sign-in `facts` describe.
    pub fn new(kind: NoticeKind, facts: &SignInFacts<'_>, reason: &str, location: Option<String>) -> Notice {
        Notice {
            id: random_bytes::<16>().iter().map(|b| format!("{b:02x}")).collect(),
            kind,
            reason: reason.to_string(),
            user_id: facts.session.user_id.clone(),
            email: facts.email.map(str::to_string),
            session_id: facts.session.id.to_string(),
            device: facts.fingerprint.label.clone(),
            ip: facts.ip,
            location,
            at: facts.session.created_at,
        }
    }

    /// The JSON body posted.
    pub fn body(&self) -> Vec<u8> {
        let payload = Payload {
            id: &self.id,
            event: self.kind,
            reason: &self.reason,
            user: UserPart { id: &self.user_id, email: self.email.as_deref() },
            session: SessionPart {
                id: &self.session_id,
                device: &self.device,
                ip: self.ip.map(|ip| ip.to_string()),
                location: self.location.as_deref(),
            },
            at: rfc3339(self.at),
        };
        serde_json::to_vec(&payload).unwrap_or_default()
    }
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`: the part of `X-Dalea-Signature` after
/// `sha256=`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    mac(secret, timestamp, body)
        .map(|m| m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

/// Whether `header` (`sha256=<hex>`) is the signature of `timestamp` and `body`, compared in
/// constant time: what a receiver does (the tests' receiver does it too).
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else { return false };
    let Some(expected) = unhex(hex) else { return false };
    mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(&expected).is_ok())
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    // HMAC takes keys of any length; the error case cannot happen.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// How notices fared since start-up (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCounts {
    /// Accepted into the queue.
    pub queued: u64,
    /// Dropped because the queue was full (or the notifier had stopped).
    pub dropped: u64,
    /// Answered 2xx.
    pub delivered: u64,
    /// Given up on: refused, or out of attempts.
    pub failed: u64,
    /// Attempts after the first.
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
}

/// The webhook client and its queue. Cheap to clone (shared).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: NotifyConfig,
    client: reqwest::Client,
    tx: mpsc::Sender<Notice>,
    /// Taken by the one delivery loop.
    rx: Mutex<Option<mpsc::Receiver<Notice>>>,
    counters: Counters,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("config", &self.inner.config).field("counts", &self.counts()).finish()
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Not retried (a 4xx other than 408/429, or a 3xx).
    Refused(u16),
    /// Worth another try: why.
    Retry(String),
}

impl Notifier {
    /// Builds the HTTP client (no request is made until a notice is delivered).
    pub fn new(config: NotifyConfig) -> anyhow::Result<Notifier> {
        Self::with_capacity(config, QUEUE_CAPACITY)
    }

    /// As [`Notifier::new`] with another queue size.
    pub fn with_capacity(config: NotifyConfig, capacity: usize) -> anyhow::Result<Notifier> {
        crate::session::redis::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for the notify webhook: {e}"))?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let inner = Inner { config, client, tx, rx: Mutex::new(Some(rx)), counters: Counters::default() };
        Ok(Notifier { inner: Arc::new(inner) })
    }

    /// Queues `notice` for delivery and returns at once; `false` when it was dropped (the queue
    /// is full, or the notifier stopped), which is counted and logged.
    pub fn notify(&self, notice: Notice) -> bool {
        let c = &self.inner.counters;
        match self.inner.tx.try_send(notice) {
            Ok(()) => {
                c.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(n) | TrySendError::Closed(n)) => {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    notify.event = n.kind.as_str(),
                    notify.id = %n.id,
                    user.id = %n.user_id,
                    "webhook notice dropped: the queue is full"
                );
                false
            }
        }
    }

    /// Takes every queued notice without delivering it (tests of what gets queued).
    #[cfg(test)]
    pub(crate) fn drain(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Ok(mut rx) = self.inner.rx.lock() {
            if let Some(rx) = rx.as_mut() {
                while let Ok(n) = rx.try_recv() {
                    out.push(n);
                }
            }
        }
        out
    }

    pub fn counts(&self) -> NotifyCounts {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NotifyCounts {
            queued: get(&c.queued),
            dropped: get(&c.dropped),
            delivered: get(&c.delivered),
            failed: get(&c.failed),
            retries: get(&c.retries),
        }
    }

    /// Delivers queued notices until `shutdown` fires (at most `MAX_IN_FLIGHT` at once, each
    /// with its retries). Only the first call runs; later calls return at once. At shutdown,
    /// deliveries under way get `SHUTDOWN_WAIT` to finish; notices still queued or still being
    /// delivered then are lost — they live in memory only — and counted as dropped and logged.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let taken = self.inner.rx.lock().map(|mut rx| rx.take()).unwrap_or(None);
        let Some(mut rx) = taken else {
            tracing::warn!("the notify webhook's delivery loop is already running");
            return;
        };
        let origin = self.inner.config.webhook_origin();
        tracing::info!(notify.webhook = %origin, "delivering sign-in notices");
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        // A notice taken from the queue but not yet handed to a delivery.
        let mut in_hand = 0u64;
        loop {
            let notice = tokio::select! {
                _ = shutdown.changed() => break,
                next = rx.recv() => match next {
                    Some(notice) => notice,
                    None => break,
                },
            };
            // Every delivery slot may be held by a slow webhook: shutdown must still be seen.
            let permit = tokio::select! {
                _ = shutdown.changed() => {
                    in_hand = 1;
                    break;
                }
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.deliver(notice).await;
                drop(permit);
            });
        }
        rx.close();
        let mut queued = in_hand;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        // Deliveries under way get a moment to finish; those still going end with the process.
        let all = MAX_IN_FLIGHT as u32;
        let unfinished = match tokio::time::timeout(SHUTDOWN_WAIT, permits.clone().acquire_many_owned(all)).await {
            Ok(_) => 0,
            Err(_) => (MAX_IN_FLIGHT - permits.available_permits()) as u64,
        };
        if queued + unfinished > 0 {
            self.inner.counters.dropped.fetch_add(queued + unfinished, Ordering::Relaxed);
            tracing::warn!(
                notify.lost = queued + unfinished,
                notify.queued = queued,
                notify.unfinished = unfinished,
                "shutting down with sign-in notices not yet delivered"
            );
        }
    }

    /// Every attempt at one notice; counts the outcome.
    async fn deliver(&self, notice: Notice) {
        let cfg = &self.inner.config;
        let c = &self.inner.counters;
        let body = notice.body();
        let mut wait = cfg.retry_backoff.min(MAX_BACKOFF);
        for attempt in 1..=cfg.max_attempts.max(1) {
            match self.attempt(&notice, &body).await {
                Attempt::Delivered => {
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        notify.event = notice.kind.as_str(),
                        notify.id = %notice.id,
                        notify.attempt = attempt,
                        user.id = %notice.user_id,
                        "webhook notice delivered"
                    );
                    return;
                }
                Attempt::Refused(status) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        notify.event = notice.kind.as_str(),
                        notify.id = %notice.id,
                        http.status = status,
                        user.id = %notice.user_id,
                        "the webhook refused a notice; not retried"
                    );
                    return;
                }
                Attempt::Retry(why) if attempt < cfg.max_attempts => {
                    c.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        notify.id = %notice.id,
                        notify.attempt = attempt,
                        error = %why,
                        "webhook attempt failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                Attempt::Retry(why) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        notify.event = notice.kind.as_str(),
                        notify.id = %notice.id,
                        notify.attempts = attempt,
                        user.id = %notice.user_id,
                        error = %why,
                        "gave up on a webhook notice"
                    );
                    return;
                }
            }
        }
    }

    async fn attempt(&self, notice: &Notice, body: &[u8]) -> Attempt {
        let cfg = &self.inner.config;
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).to_string();
        let signature = signature(cfg.secret.expose(), &timestamp, body);
        let request = self
            .inner
            .client
            .post(&cfg.webhook)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-Dalea-Event", notice.kind.as_str())
            .header("X-Dalea-Delivery", &notice.id)
            .header("X-Dalea-Timestamp", &timestamp)
            .header("X-Dalea-Signature", format!("sha256={signature}"))
            .body(body.to_vec());
        match request.send().await {
            Err(e) => Attempt::Retry(send_failure(e)),
            Ok(resp) => {
                let status = resp.status().as_u16();
                match status {
                    200..=299 => Attempt::Delivered,
                    408 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {status}")),
                    _ => Attempt::Refused(status),
                }
            }
        }
    }
}

/// Why a request got no answer, in words an operator can act on: a slow endpoint and a down
/// one read differently. Without the URL: its path or query may be a token.
fn send_failure(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer within the timeout"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let detail = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
    let e = e.without_url();
    if detail.is_empty() {
        format!("{what} ({e})")
    } else {
        format!("{what} ({e}: {detail})")
    }
}

#[async_trait]
impl BackgroundService for Notifier {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
