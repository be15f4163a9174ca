//! Values other parts of the gateway keep themselves (cache sizes, pending activity, notices
//! sent, the webhook's totals), copied into the registry when `/metrics` is scraped.

use prometheus::IntCounter;

use super::{Metrics, CACHES};
use crate::vigilance::notify::NotifyCounts;

/// Values read at scrape time from the parts of the gateway that keep them.
pub struct Snapshot {
    pub session_cache_entries: usize,
    pub key_cache_entries: usize,
    /// Pending activity per lane, in [`LANES`](super::LANES) order.
    pub pending: [usize; 2],
    pub sessions_active: usize,
    /// Notices published so far (a running total kept by the store).
    pub notices_sent: u64,
    /// Whether revocation notices are arriving; `None` without a shared store (nothing to miss).
    pub subscribed: Option<bool>,
    /// The webhook notifier's running totals (all zero without `[notify]`).
    pub webhook: NotifyCounts,
}

impl Metrics {
    /// Brings the scrape-time values up to date and renders everything.
    pub fn scrape(&self, snap: &Snapshot) -> String {
        self.cache_entries.with_label_values(&[CACHES[0]]).set(snap.session_cache_entries as i64);
        self.cache_entries.with_label_values(&[CACHES[1]]).set(snap.key_cache_entries as i64);
        for (lane, n) in self.lanes.iter().zip(snap.pending) {
            lane.pending.set(n as i64);
        }
        self.sessions_active.set(snap.sessions_active as i64);
        let sent = self.revocation.sent.get();
        if snap.notices_sent > sent {
            self.revocation.sent.inc_by(snap.notices_sent - sent);
        }
        self.revocation.subscribed.set(i64::from(snap.subscribed.unwrap_or(true)));
        let w = &snap.webhook;
        for (counter, total) in self.webhook.notices.iter().zip([w.delivered, w.failed, w.dropped]) {
            catch_up(counter, total);
        }
        catch_up(&self.webhook.retries, w.retries);
        self.render()
    }
}

/// Moves `counter` up to `total`, a running total kept elsewhere (never down).
fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}
