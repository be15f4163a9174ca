//! Background removal of expired sessions from the store and the cache.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::cache::SessionCache;
use super::store::SessionStore;
use super::Liveness;
use crate::clock::{Clock, Millis};

const SWEEP_MARGIN: Millis = 60_000;

pub struct ExpirySweeper {
    pub store: Arc<dyn SessionStore>,
    pub cache: Arc<SessionCache>,
    pub clock: Arc<dyn Clock>,
    pub idle_timeout: Millis,
    pub interval: Duration,
}

impl ExpirySweeper {
    /// One sweep. Store errors are logged and retried next time; nothing else is touched.
    pub async fn sweep(&self) {
        let now = self.clock.now();
        let idle = self.idle_timeout;
        self.cache.retain(|c| c.session.liveness(c.last_active(), now, idle) == Liveness::Alive);
        // The store may lag the activity buffer by a flush interval; sweeping a minute behind
        // `now` means a session used in the last moments is never deleted from under it.
        match self.store.remove_expired(now - SWEEP_MARGIN, idle).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired sessions swept"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed; will retry"),
        }
    }
}

#[async_trait]
impl BackgroundService for ExpirySweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        super::periodic::every(self.interval, &mut shutdown, || self.sweep()).await;
    }
}
