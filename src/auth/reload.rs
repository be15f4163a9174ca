//! Keeps the users file current without a restart: it is re-read when its modification time
//! changes (checked every few seconds) and on SIGHUP. A file that fails to load is reported and
//! the previous list stays in force.
//!
//! People who leave the file are refused at once (every request looks its person up), and
//! [`PeopleRemoved`] is told about them so their sessions and API keys end in the store too —
//! but only once the file has settled: a file caught half-written by an editor can look as if
//! everyone left, so it is read again [`SETTLE`] later and only people still missing count.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::UserDirectory;

/// How long after a reload that lost people the file is read again to confirm it.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The current users, swapped whole on reload.
#[derive(Debug, Default)]
pub struct Users(RwLock<Arc<UserDirectory>>);

impl Users {
    pub fn new(dir: UserDirectory) -> Self {
        Users(RwLock::new(Arc::new(dir)))
    }

    pub fn current(&self) -> Arc<UserDirectory> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, dir: UserDirectory) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(dir),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(dir),
        }
    }
}

/// What to do about people who left the users file (their ids, confirmed missing).
#[async_trait]
pub trait PeopleRemoved: Send + Sync {
    async fn removed(&self, ids: &[String]);
}

pub struct UsersReloader {
    pub users: Arc<Users>,
    pub path: PathBuf,
    pub interval: Duration,
    pub on_removed: Arc<dyn PeopleRemoved>,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl UsersReloader {
    /// Loads the file now; keeps the old list if it does not load. The ids of the people who
    /// were in the old list and are not in the new one.
    pub fn reload(&self) -> Vec<String> {
        match UserDirectory::load(&self.path) {
            Ok(dir) => {
                tracing::info!(users = dir.len(), file = %self.path.display(), "users file loaded");
                let gone = self.users.current().missing_from(&dir);
                self.users.replace(dir);
                gone
            }
            Err(e) => {
                tracing::error!(error = %e, "users file not reloaded; the previous list stays in force");
                Vec::new()
            }
        }
    }

    /// Reloads; when people left, reads the file again after [`SETTLE`] and tells
    /// `on_removed` about those still missing. People that second read loses are confirmed the
    /// same way, until a read loses nobody.
    async fn reload_and_confirm(&self, shutdown: &mut ShutdownWatch) {
        let mut gone = self.reload();
        while !gone.is_empty() {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
            let lost_since = self.reload();
            let settled = self.users.current();
            let confirmed: Vec<String> = gone.into_iter().filter(|id| settled.by_id(id).is_none()).collect();
            if !confirmed.is_empty() {
                self.on_removed.removed(&confirmed).await;
            }
            gone = lost_since;
        }
    }
}

#[async_trait]
impl BackgroundService for UsersReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = modified(&self.path);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup => {
                    seen = modified(&self.path);
                    self.reload_and_confirm(&mut shutdown).await;
                }
                _ = tick.tick() => {
                    let now = modified(&self.path);
                    if now != seen {
                        seen = now;
                        self.reload_and_confirm(&mut shutdown).await;
                    }
                }
            }
        }
    }
}
