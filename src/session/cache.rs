//! The in-memory session cache in front of the store: token hash → session, bounded. A
//! cached session is checked without any I/O; revocation removes it here at once.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::{PublicId, Session, TokenHash};
use crate::clock::Millis;
use crate::metrics::CacheCounters;

/// A cached session plus its freshest activity time (newer than the stored one between flushes).
#[derive(Debug)]
pub struct CachedSession {
    pub session: Session,
    last_active: AtomicI64,
    /// When the store last confirmed this copy.
    loaded_at: Millis,
}

impl CachedSession {
    pub fn loaded_at(&self) -> Millis {
        self.loaded_at
    }

    pub fn last_active(&self) -> Millis {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Moves last-active forward (never backwards).
    pub fn touch(&self, at: Millis) {
        self.last_active.fetch_max(at, Ordering::Relaxed);
    }
}

/// Bounded map of live sessions. When full, an arbitrary eighth is dropped: they are only
/// cached copies, so the next request for them reads through to the store.
#[derive(Debug)]
pub struct SessionCache {
    map: DashMap<TokenHash, Arc<CachedSession>>,
    capacity: usize,
    /// False while revocation notices may be missed (a shared store's subscription is down):
    /// cached copies are then re-checked with the store on every use.
    trusted: AtomicBool,
    /// Bumped before entries are dropped (revoked, signed out, cache cleared). A store read that
    /// began at an older epoch may predate the drop, so its copy is not kept (see `insert_read`).
    epoch: AtomicU64,
    /// Hits, misses (counted by the session manager) and evictions.
    pub counters: CacheCounters,
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        Self::with_counters(capacity, CacheCounters::default())
    }

    pub fn with_counters(capacity: usize, counters: CacheCounters) -> Self {
        SessionCache {
            map: DashMap::new(),
            capacity: capacity.max(8),
            trusted: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            counters,
        }
    }

    pub fn get(&self, hash: &TokenHash) -> Option<Arc<CachedSession>> {
        self.map.get(hash).map(|e| e.value().clone())
    }

    pub fn insert(&self, session: Session, now: Millis) -> Arc<CachedSession> {
        if self.map.len() >= self.capacity {
            self.evict_some();
        }
        let entry =
            Arc::new(CachedSession { last_active: AtomicI64::new(session.last_active_at), session, loaded_at: now });
        self.map.insert(entry.session.token_hash, entry.clone());
        entry
    }

    /// The current epoch; read it before a store read whose result will be cached.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches `session` as read from the store while the cache was at `epoch`. If anything was
    /// dropped since (a revocation notice, a cleared cache), the read may predate that drop: the
    /// copy is returned for this request but not kept, so the next request reads the store.
    pub fn insert_read(&self, session: Session, now: Millis, epoch: u64) -> Arc<CachedSession> {
        let entry = self.insert(session, now);
        // Drops bump the epoch before removing, so a drop either sees this entry or is seen here.
        if self.epoch() != epoch {
            self.map.remove_if(&entry.session.token_hash, |_, v| Arc::ptr_eq(v, &entry));
        }
        entry
    }

    pub fn remove(&self, hash: &TokenHash) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.remove(hash);
    }

    /// Drops one person's session by public id (used when only the id is known).
    pub fn remove_by_id(&self, user_id: &str, id: &PublicId) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.retain(|_, v| !(v.session.user_id == user_id && &v.session.id == id));
    }

    /// Keeps only the entries `keep` approves (the sweeper drops expired ones).
    pub fn retain(&self, keep: impl Fn(&CachedSession) -> bool) {
        self.map.retain(|_, v| keep(v));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// How many cached sessions `pred` approves (a scan: for metrics, not per request).
    pub fn count(&self, pred: impl Fn(&CachedSession) -> bool) -> usize {
        self.map.iter().filter(|e| pred(e.value())).count()
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::SeqCst)
    }

    /// Marks whether revocation notices are arriving. Becoming trusted again clears the cache
    /// first: a notice missed meanwhile must not keep a revoked session alive.
    pub fn set_trusted(&self, trusted: bool) {
        if trusted {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.map.clear();
        }
        self.trusted.store(trusted, Ordering::SeqCst);
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn evict_some(&self) {
        let victims: Vec<TokenHash> = self.map.iter().take(self.capacity / 8 + 1).map(|e| *e.key()).collect();
        for v in victims {
            if self.map.remove(&v).is_some() {
                self.counters.evictions.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_info::ClientHints;
    use crate::session::{NewSession, SignInMethod};

    fn session() -> Session {
        let new = NewSession {
            user_id: "u".into(),
            method: SignInMethod::Password,
            remember_me: false,
            ip: None,
            user_agent: String::new(),
            client_hints: ClientHints::default(),
            reauthenticated: false,
            passkey: None,
        };
        Session::start(new, 1_000, 10_000).0
    }

    #[test]
    fn touch_only_moves_forward() {
        let cache = SessionCache::new(16);
        let e = cache.insert(session(), 0);
        e.touch(5_000);
        e.touch(3_000);
        assert_eq!(e.last_active(), 5_000);
    }

    #[test]
    fn stays_within_capacity() {
        let cache = SessionCache::new(16);
        for _ in 0..100 {
            cache.insert(session(), 0);
        }
        assert!(cache.len() <= 16, "{}", cache.len());
    }

    #[test]
    fn a_read_older_than_a_drop_is_not_kept() {
        let cache = SessionCache::new(16);
        let s = session();
        let before = cache.epoch();
        cache.remove(&s.token_hash); // e.g. a revocation notice while the read was in flight
        let e = cache.insert_read(s.clone(), 0, before);
        assert_eq!(e.session.id, s.id, "the read is still answered");
        assert!(cache.get(&s.token_hash).is_none(), "but not cached");
        let e = cache.insert_read(s.clone(), 0, cache.epoch());
        assert!(cache.get(&e.session.token_hash).is_some());
    }

    #[test]
    fn remove_by_id_drops_only_that_session() {
        let cache = SessionCache::new(16);
        let a = cache.insert(session(), 0);
        let b = cache.insert(session(), 0);
        cache.remove_by_id("u", &a.session.id);
        assert!(cache.get(&a.session.token_hash).is_none());
        assert!(cache.get(&b.session.token_hash).is_some());
    }
}
