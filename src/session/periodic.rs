//! Runs a background job every interval until shutdown: the loop the activity flusher and the
//! expiry sweeper share.

use std::future::Future;
use std::time::Duration;

use pingora::server::ShutdownWatch;

/// Calls `job` every `interval` (delayed, never bunched up) until the shutdown watch fires.
pub async fn every<F, Fut>(interval: Duration, shutdown: &mut ShutdownWatch, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => job().await,
        }
    }
}
