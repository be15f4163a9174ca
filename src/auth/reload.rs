//! Keeps the users file current without a restart: it is re-read when its modification time
//! changes (checked every few seconds) and on SIGHUP. A file that fails to load is reported and
//! the previous list stays in force. Removing a person ends their sessions at their next request.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::UserDirectory;

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

pub struct UsersReloader {
    pub users: Arc<Users>,
    pub path: PathBuf,
    pub interval: Duration,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl UsersReloader {
    /// Loads the file now; keeps the old list if it does not load.
    pub fn reload(&self) {
        match UserDirectory::load(&self.path) {
            Ok(dir) => {
                tracing::info!(users = dir.len(), file = %self.path.display(), "users file loaded");
                self.users.replace(dir);
            }
            Err(e) => tracing::error!(error = %e, "users file not reloaded; the previous list stays in force"),
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
                    self.reload();
                }
                _ = tick.tick() => {
                    let now = modified(&self.path);
                    if now != seen {
                        seen = now;
                        self.reload();
                    }
                }
            }
        }
    }
}
