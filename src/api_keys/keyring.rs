//! API key operations the proxy and the pages share: resolve a presented key (cache, then
//! store), record its use, create, list and revoke. Independent of sessions: nothing here
//! reads or writes a session.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use super::{ApiKey, ApiKeyStore, KeySecret};
use crate::clock::{Clock, Millis};
use crate::metrics::CacheCounters;
use crate::session::activity::ActivityBuffer;
use crate::session::store::StoreError;
use crate::session::token::random_string;
use crate::session::TokenHash;

/// How many keys one person may hold.
pub const MAX_KEYS_PER_PERSON: usize = 100;

/// Keys recently seen, by hash. Revocation removes them here at once (and on other replicas
/// through the store's notices); a full cache drops an arbitrary eighth.
#[derive(Debug)]
pub struct KeyCache {
    map: DashMap<TokenHash, (Arc<ApiKey>, Millis)>,
    capacity: usize,
    pub counters: CacheCounters,
}

impl KeyCache {
    pub fn new(capacity: usize, counters: CacheCounters) -> Self {
        KeyCache { map: DashMap::new(), capacity: capacity.max(8), counters }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn get(&self, hash: &TokenHash) -> Option<(Arc<ApiKey>, Millis)> {
        self.map.get(hash).map(|e| e.value().clone())
    }

    fn insert(&self, key: ApiKey, now: Millis) -> Arc<ApiKey> {
        if self.map.len() >= self.capacity {
            let drop: Vec<TokenHash> = self.map.iter().take(self.capacity / 8).map(|e| *e.key()).collect();
            for h in drop {
                if self.map.remove(&h).is_some() {
                    self.counters.evictions.inc();
                }
            }
        }
        let key = Arc::new(key);
        self.map.insert(key.key_hash, (key.clone(), now));
        key
    }

    pub fn remove(&self, hash: &TokenHash) {
        self.map.remove(hash);
    }

    pub fn clear(&self) {
        self.map.clear();
    }
}

/// What a presented key turned out to be.
#[derive(Debug)]
pub enum KeyLookup {
    Found(Arc<ApiKey>),
    /// Never issued, or revoked.
    Unknown,
    Expired,
}

pub struct ApiKeys {
    pub store: Arc<dyn ApiKeyStore>,
    pub cache: Arc<KeyCache>,
    /// Last-used time and IP, written by the same flusher as session activity.
    pub activity: Arc<ActivityBuffer>,
    pub clock: Arc<dyn Clock>,
    /// How long a cached key is used without asking the store (see `SessionManager`).
    pub cache_ttl: Millis,
    /// How long a cached key keeps working while the store cannot be reached.
    pub outage_grace: Millis,
}

impl ApiKeys {
    /// Resolves a presented key. `trusted`: revocation notices are flowing, so a cached copy
    /// may be used without asking the store.
    pub async fn lookup(&self, secret: &KeySecret, trusted: bool) -> Result<KeyLookup, StoreError> {
        let now = self.clock.now();
        let hash = secret.hash();
        let cached = self.cache.get(&hash);
        let key = match cached {
            Some((key, loaded)) if trusted && now - loaded < self.cache_ttl => {
                self.cache.counters.hits.inc();
                key
            }
            _ => {
                self.cache.counters.misses.inc();
                match self.store.key_by_hash(&hash).await {
                    Ok(Some(key)) => self.cache.insert(key, now),
                    Ok(None) => {
                        self.cache.remove(&hash);
                        return Ok(KeyLookup::Unknown);
                    }
                    Err(e) => match cached {
                        Some((key, loaded)) if now - loaded <= self.outage_grace => key,
                        _ => return Err(e),
                    },
                }
            }
        };
        Ok(if key.is_expired(now) { KeyLookup::Expired } else { KeyLookup::Found(key) })
    }

    /// Records a request made with `key` (memory only; flushed in the background).
    pub fn touch(&self, key: &ApiKey, ip: Option<IpAddr>) {
        self.activity.record(key.key_hash, self.clock.now(), ip);
    }

    /// Creates a key. The secret is returned this once and never stored.
    pub async fn create(
        &self,
        user_id: &str,
        name: &str,
        expires_at: Option<Millis>,
    ) -> Result<Result<(ApiKey, KeySecret), TooMany>, StoreError> {
        let _one_at_a_time = crate::account::person_lock("api_key", user_id).await;
        if self.store.keys_for_user(user_id).await?.len() >= MAX_KEYS_PER_PERSON {
            return Ok(Err(TooMany));
        }
        let secret = KeySecret::generate();
        let key = ApiKey {
            id: random_string::<16>(),
            user_id: user_id.to_string(),
            name: name.to_string(),
            prefix: secret.shown_prefix(),
            key_hash: secret.hash(),
            created_at: self.clock.now(),
            expires_at,
            last_used_at: None,
            last_ip: None,
        };
        self.store.insert_key(&key).await?;
        Ok(Ok((key, secret)))
    }

    /// One person's keys, newest first, with unflushed use applied.
    pub async fn list(&self, user_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let mut keys = self.store.keys_for_user(user_id).await?;
        for key in &mut keys {
            if let Some(p) = self.activity.pending(&key.key_hash) {
                if key.last_used_at.is_none_or(|at| p.at > at) {
                    key.last_used_at = Some(p.at);
                    key.last_ip = p.ip.or(key.last_ip);
                }
            }
        }
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(keys)
    }

    /// Revokes one of `user_id`'s keys; it stops working at once. Returns the removed key.
    pub async fn revoke(&self, user_id: &str, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let removed = self.store.remove_key(user_id, id).await?;
        if let Some(key) = &removed {
            self.cache.remove(&key.key_hash);
            self.activity.forget(&key.key_hash);
        }
        Ok(removed)
    }
}

/// The person already holds [`MAX_KEYS_PER_PERSON`] keys.
#[derive(Debug, PartialEq, Eq)]
pub struct TooMany;
