//! Session store operations counted and timed: [`MeteredStore`] wraps whichever store the
//! config chose and records every call by operation, so the store's own code stays free of
//! metrics.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::{Histogram, IntCounter, Registry};

use super::{counter_vec, histogram_vec, FAST_BUCKETS};
use crate::clock::Millis;
use crate::session::store::{Activity, SessionStore, StoreError};
use crate::session::{PublicId, Session, TokenHash};

/// The `op` label values, one per [`SessionStore`] method.
#[derive(Debug, Clone, Copy)]
enum Op {
    Insert,
    Get,
    ListForUser,
    FindForUser,
    Rotate,
    Update,
    Remove,
    RecordActivity,
    RemoveExpired,
}

const OPS: [&str; 9] = [
    "insert",
    "get",
    "list_for_user",
    "find_for_user",
    "rotate",
    "update",
    "remove",
    "record_activity",
    "remove_expired",
];

struct OpMetrics {
    calls: IntCounter,
    errors: IntCounter,
    duration: Histogram,
}

/// Per-operation counters and latency, resolved once.
pub(super) struct StoreMetrics {
    ops: Vec<OpMetrics>,
}

impl StoreMetrics {
    pub(super) fn register(r: &Registry) -> Arc<Self> {
        let calls = counter_vec(r, "dalea_store_operations_total", "Session store operations by op.", &["op"]);
        let errors = counter_vec(
            r,
            "dalea_store_errors_total",
            "Session store operations that failed (unreachable, timed out, corrupt record).",
            &["op"],
        );
        let duration = histogram_vec(
            r,
            "dalea_store_operation_duration_seconds",
            "Session store operation latency by op.",
            &["op"],
            &FAST_BUCKETS,
        );
        let ops = OPS
            .iter()
            .map(|op| OpMetrics {
                calls: calls.with_label_values(&[op]),
                errors: errors.with_label_values(&[op]),
                duration: duration.with_label_values(&[op]),
            })
            .collect();
        Arc::new(StoreMetrics { ops })
    }

    fn record<T>(&self, op: Op, started: Instant, result: &Result<T, StoreError>) {
        let m = &self.ops[op as usize];
        m.calls.inc();
        m.duration.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            m.errors.inc();
        }
    }
}

/// A [`SessionStore`] whose every call is counted and timed.
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<StoreMetrics>,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn SessionStore>, metrics: &super::Metrics) -> Arc<dyn SessionStore> {
        Arc::new(MeteredStore { inner, metrics: metrics.store.clone() })
    }
}

/// Runs one store call and records it.
macro_rules! metered {
    ($self:ident, $op:expr, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.metrics.record($op, started, &result);
        result
    }};
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        metered!(self, Op::Insert, self.inner.insert(session))
    }

    async fn get(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        metered!(self, Op::Get, self.inner.get(hash))
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        metered!(self, Op::ListForUser, self.inner.list_for_user(user_id))
    }

    async fn find_for_user(&self, user_id: &str, id: &PublicId) -> Result<Option<Session>, StoreError> {
        metered!(self, Op::FindForUser, self.inner.find_for_user(user_id, id))
    }

    async fn rotate(&self, old: &TokenHash, new: &Session) -> Result<bool, StoreError> {
        metered!(self, Op::Rotate, self.inner.rotate(old, new))
    }

    async fn update(&self, session: &Session) -> Result<bool, StoreError> {
        metered!(self, Op::Update, self.inner.update(session))
    }

    async fn remove(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        metered!(self, Op::Remove, self.inner.remove(hash))
    }

    async fn record_activity(&self, batch: &[Activity]) -> Result<(), StoreError> {
        metered!(self, Op::RecordActivity, self.inner.record_activity(batch))
    }

    async fn remove_expired(&self, now: Millis, idle_timeout: Millis) -> Result<usize, StoreError> {
        metered!(self, Op::RemoveExpired, self.inner.remove_expired(now, idle_timeout))
    }
}
