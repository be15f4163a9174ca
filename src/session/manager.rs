//! Session operations the proxy and the pages share: look a cookie up (cache, then store),
//! sign in, record activity, list one person's sessions, revoke and sign out.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::activity::ActivityBuffer;
use super::cache::{CachedSession, SessionCache};
use super::store::{SessionStore, StoreError};
use super::{Elevation, ElevationMethod, Liveness, NewSession, PublicId, Session, Token, TokenHash};
use crate::clock::{Clock, Millis};

/// What a request's cookies resolved to.
#[derive(Debug)]
pub enum Lookup {
    /// A live session.
    Found(Arc<CachedSession>),
    /// No live session. `stale_cookie`: the request carried a session cookie that is revoked,
    /// expired or unknown, so the response should clear it.
    Missing { stale_cookie: bool },
}

/// Result of revoking a session from the sessions list.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoke {
    Revoked,
    /// It is the caller's own session: that is what Sign out is for.
    IsCurrent,
    /// Not one of the caller's sessions (or already gone).
    NotFound,
}

/// What a person proved to pass sensitive actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A code from their authenticator app: an elevation, shown in the sessions list.
    Totp,
    /// One of their passkeys (its credential id): an elevation, shown in the sessions list,
    /// that lasts only as long as the passkey.
    Passkey(String),
    /// The password, by someone with no second factor: passes, but is no elevation.
    Password,
}

impl Proof {
    /// `totp`, `passkey` or `password` (audit events, logs, metrics).
    pub fn method(&self) -> &'static str {
        match self {
            Proof::Totp => ElevationMethod::Totp.as_str(),
            Proof::Passkey(_) => ElevationMethod::Passkey.as_str(),
            Proof::Password => "password",
        }
    }
}

/// A session as the sessions page shows it: the record with its freshest activity.
#[derive(Debug, Clone)]
pub struct Listed {
    pub session: Session,
    pub last_active_at: Millis,
    pub last_ip: Option<IpAddr>,
}

pub struct SessionManager {
    pub store: Arc<dyn SessionStore>,
    pub cache: Arc<SessionCache>,
    pub activity: Arc<ActivityBuffer>,
    pub clock: Arc<dyn Clock>,
    pub idle_timeout: Millis,
    pub absolute_timeout: Millis,
    /// How long a cached copy is used without asking the store again (unbounded for the
    /// embedded store, which no one else writes; short for shared stores).
    pub cache_ttl: Millis,
    /// How long a cached copy keeps working while the store cannot be reached.
    pub outage_grace: Millis,
    /// When the current store outage began (0: the store is answering).
    pub outage_since: AtomicI64,
    /// Tokens this process replaced by rotation, and when. A request still carrying one (sent
    /// before the new cookie arrived) is refused like any dead token, but its answer does not
    /// clear the cookie: by then the browser holds the new token under the same name.
    pub rotated: dashmap::DashMap<TokenHash, Millis>,
}

/// How long a rotated token's requests leave the cookie alone.
const ROTATION_GRACE: Millis = 60_000;
/// Bound on remembered rotations (pruned by age beyond it).
const MAX_ROTATED: usize = 10_000;

impl SessionManager {
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Resolves the request's session tokens (several if the browser sent duplicates): the
    /// first live one wins. Expired sessions found on the way are deleted.
    ///
    /// A cached copy is used without I/O while the cache is trusted (revocation notices are
    /// flowing) and fresh enough. Otherwise the store decides; if the store cannot answer, a
    /// cached copy confirmed within the outage grace period still works, and anything else is
    /// an error (503), never a sign-out. A copy that looks expired is re-read before anything
    /// is deleted: another replica may have seen newer activity.
    pub async fn lookup(&self, tokens: &[Token]) -> Result<Lookup, StoreError> {
        let now = self.now();
        for token in tokens {
            let hash = token.hash();
            let cached = self.cache.get(&hash);
            if let Some(c) = &cached {
                let alive = c.session.liveness(c.last_active(), now, self.idle_timeout) == Liveness::Alive;
                if alive && self.cache.is_trusted() && now - c.loaded_at() < self.cache_ttl {
                    self.cache.counters.hits.inc();
                    return Ok(Lookup::Found(c.clone()));
                }
            }
            self.cache.counters.misses.inc();
            // Read before the store: a revocation handled while the read is in flight must win.
            let epoch = self.cache.epoch();
            let stored = match self.store.get(&hash).await {
                Ok(stored) => {
                    self.outage_since.store(0, Ordering::Relaxed);
                    stored
                }
                Err(e) => {
                    // The grace period runs from the start of the outage, not from when a copy
                    // was last confirmed: every session cached when the store went away gets it.
                    let since = match self.outage_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => now,
                        Err(earlier) => earlier,
                    };
                    match cached {
                        Some(c)
                            if now - since <= self.outage_grace
                                && c.session.liveness(c.last_active(), now, self.idle_timeout) == Liveness::Alive =>
                        {
                            return Ok(Lookup::Found(c));
                        }
                        _ => return Err(e),
                    }
                }
            };
            let Some(session) = stored else {
                self.cache.remove(&hash);
                self.activity.forget(&hash);
                continue;
            };
            let pending = self.activity.pending(&hash).map_or(0, |a| a.at);
            let local = cached.as_ref().map_or(0, |c| c.last_active());
            if session.liveness(pending.max(local), now, self.idle_timeout) == Liveness::Alive {
                let fresh = self.cache.insert_read(session, now, epoch);
                fresh.touch(pending.max(local));
                return Ok(Lookup::Found(fresh));
            }
            self.expire(&hash).await;
        }
        let stale_cookie =
            tokens.iter().any(|t| self.rotated.get(&t.hash()).is_none_or(|at| now - *at > ROTATION_GRACE));
        Ok(Lookup::Missing { stale_cookie })
    }

    async fn expire(&self, hash: &TokenHash) {
        self.cache.remove(hash);
        self.activity.forget(hash);
        // Best effort: the sweeper removes it later if the store is unavailable now.
        if let Err(e) = self.store.remove(hash).await {
            tracing::debug!(error = %e, "could not delete an expired session yet");
        }
    }

    /// Records a request's activity in memory (flushed to the store in the background).
    pub fn touch(&self, cached: &CachedSession, ip: Option<IpAddr>) {
        let now = self.now();
        cached.touch(now);
        self.activity.record(cached.session.token_hash, now, ip);
    }

    /// Starts a session: always a fresh token. Returns the session and its cookie token.
    pub async fn sign_in(&self, new: NewSession) -> Result<(Session, Token), StoreError> {
        let (session, token) = Session::start(new, self.now(), self.absolute_timeout);
        self.store.insert(&session).await?;
        self.cache.insert(session.clone(), self.now());
        Ok((session, token))
    }

    /// Ends the caller's own session (Sign out).
    pub async fn sign_out(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.store.remove(hash).await?;
        self.cache.remove(hash);
        self.activity.forget(hash);
        Ok(())
    }

    /// Ends every session of `user_id` (they left the users file), as [`Self::sign_out`] ends
    /// one: gone from the store, and from every replica's cache. How many were ended.
    pub async fn end_all(&self, user_id: &str) -> Result<usize, StoreError> {
        let sessions = self.store.list_for_user(user_id).await?;
        for s in &sessions {
            self.sign_out(&s.token_hash).await?;
        }
        Ok(sessions.len())
    }

    /// Revokes one of `user_id`'s sessions by public id; returns once the record is gone. A
    /// session whose token is rotated while this runs is looked up again, so the revocation
    /// never reports success while the session lives on.
    pub async fn revoke(&self, user_id: &str, id: &PublicId, current: &PublicId) -> Result<Revoke, StoreError> {
        const ROUNDS: usize = 5;
        if id == current {
            return Ok(Revoke::IsCurrent);
        }
        for _ in 0..ROUNDS {
            let Some(session) = self.store.find_for_user(user_id, id).await? else {
                return Ok(Revoke::NotFound);
            };
            let removed = self.store.remove(&session.token_hash).await?;
            self.cache.remove(&session.token_hash);
            self.activity.forget(&session.token_hash);
            if removed && self.store.find_for_user(user_id, id).await?.is_none() {
                tracing::info!(user.id = %user_id, session.id = %id, "session revoked");
                return Ok(Revoke::Revoked);
            }
        }
        Err(StoreError::Unavailable("the session kept changing while being revoked".into()))
    }

    /// Records a re-authentication on the caller's session and gives it a new token (a new
    /// cookie; the old token stops working at once, everywhere; the public id, creation time and
    /// hard expiry stay). `None` when the session ended meanwhile.
    pub async fn elevate(&self, cached: &CachedSession, proof: Proof) -> Result<Option<(Session, Token)>, StoreError> {
        let now = self.now();
        let token = Token::generate();
        // From the stored record, not the copy cached when the request began: a credential
        // removed meanwhile must not bring its elevation back.
        let Some(mut new) = self.store.get(&cached.session.token_hash).await? else {
            return Ok(None);
        };
        new.token_hash = token.hash();
        new.last_active_at = new.last_active_at.max(cached.last_active());
        match proof {
            Proof::Totp => {
                new.elevation = Some(Elevation { method: ElevationMethod::Totp, at: now });
                new.ever_elevated = true;
                new.passkey_id = None;
            }
            Proof::Passkey(credential) => {
                new.elevation = Some(Elevation { method: ElevationMethod::Passkey, at: now });
                new.ever_elevated = true;
                new.passkey_id = Some(credential);
            }
            Proof::Password => new.reauthenticated_at = Some(now),
        }
        let old = cached.session.token_hash;
        let rotated = self.store.rotate(&old, &new).await?;
        self.cache.remove(&old);
        let pending = self.activity.pending(&old);
        self.activity.forget(&old);
        if !rotated {
            return Ok(None);
        }
        if let Some(p) = pending {
            self.activity.record(new.token_hash, p.at, p.ip);
        }
        if self.rotated.len() >= MAX_ROTATED {
            self.rotated.retain(|_, at| now - *at <= ROTATION_GRACE);
        }
        self.rotated.insert(old, now);
        self.cache.insert(new.clone(), now);
        Ok(Some((new, token)))
    }

    /// Applies `change` to every session of `user_id` (a credential was added or removed);
    /// `change` returns whether it changed anything. Changed sessions are rewritten in the
    /// store and dropped from every replica's cache. A session whose token was rotated while
    /// this ran is read again and changed too, so no session keeps what was taken away.
    pub async fn update_all(&self, user_id: &str, change: impl Fn(&mut Session) -> bool) -> Result<(), StoreError> {
        const ROUNDS: usize = 5;
        for _ in 0..ROUNDS {
            let mut missed = false;
            for mut session in self.store.list_for_user(user_id).await? {
                if change(&mut session) {
                    missed |= !self.store.update(&session).await?;
                    self.cache.remove(&session.token_hash);
                }
            }
            if !missed {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable("sessions kept changing while being updated".into()))
    }

    /// One person's live sessions, most recently active first, with unflushed activity applied.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Listed>, StoreError> {
        let now = self.now();
        let mut out: Vec<Listed> = self
            .store
            .list_for_user(user_id)
            .await?
            .into_iter()
            .map(|session| {
                let hash = session.token_hash;
                let mut listed = Listed { last_active_at: session.last_active_at, last_ip: session.last_ip, session };
                if let Some(p) = self.activity.pending(&hash) {
                    listed.last_active_at = listed.last_active_at.max(p.at);
                    listed.last_ip = p.ip.or(listed.last_ip);
                }
                if let Some(c) = self.cache.get(&hash) {
                    listed.last_active_at = listed.last_active_at.max(c.last_active());
                }
                listed
            })
            .filter(|l| l.session.liveness(l.last_active_at, now, self.idle_timeout) == Liveness::Alive)
            .collect();
        out.sort_by(|a, b| {
            b.last_active_at.cmp(&a.last_active_at).then(b.session.created_at.cmp(&a.session.created_at))
        });
        Ok(out)
    }
}
