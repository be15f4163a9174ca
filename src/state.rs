//! `AppState`: everything shared by the proxy, the built-in pages and the background
//! services, built once at start-up and handed around as one `Arc`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::password::PasswordVerifierPool;
use crate::auth::reload::Users;
use crate::auth::throttle::{AttemptLimiter, SignInThrottle};
use crate::auth::UserDirectory;
use crate::client_info::ClientInfoResolver;
use crate::clock::{millis, Clock, Millis};
use crate::config::{Config, StoreKind};
use crate::pages::templates::Templates;
use crate::proxy::routes::RouteTable;
use crate::session::activity::ActivityBuffer;
use crate::session::cache::SessionCache;
use crate::session::cookie::CookieJar;
use crate::session::embedded::EmbeddedStore;
use crate::session::manager::SessionManager;
use crate::session::redis::RedisStore;
use crate::session::store::SessionStore;

/// The store the config asks for.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn SessionStore>> {
    Ok(match config.store.kind {
        StoreKind::Embedded => Arc::new(EmbeddedStore::open(&config.store.path)?),
        StoreKind::Redis => {
            let redis =
                config.store.redis.clone().ok_or_else(|| anyhow::anyhow!("store.url: Redis settings missing"))?;
            Arc::new(RedisStore::new(redis, config.session.idle_timeout)?)
        }
    })
}

/// With a shared store, how long a cached session is used before it is re-read (bounds what a
/// change made elsewhere — other than revocation, which is pushed — takes to be seen).
const SHARED_CACHE_TTL: Millis = 30_000;

/// How many sessions the in-memory cache holds before it drops some (they are re-read from the
/// store on their next request).
const CACHE_CAPACITY: usize = 100_000;
/// How many sessions' unflushed activity is kept while the store is unavailable.
const MAX_PENDING_ACTIVITY: usize = 200_000;

pub struct AppState {
    pub config: Config,
    pub sessions: SessionManager,
    /// The users file, reloaded when it changes.
    pub users: Arc<Users>,
    pub passwords: PasswordVerifierPool,
    /// Sign-in attempt counting: in memory, or in Redis (shared by every replica).
    pub throttle: Arc<dyn AttemptLimiter>,
    pub client_info: ClientInfoResolver,
    pub cookies: CookieJar,
    pub routes: RouteTable,
    pub templates: Templates,
}

impl AppState {
    /// Opens the store, loads users, GeoIP and templates. `whoami` is the address of the
    /// built-in demo upstream when the config uses it.
    pub fn build(config: Config, clock: Arc<dyn Clock>, whoami: Option<SocketAddr>) -> anyhow::Result<Arc<Self>> {
        let store = open_store(&config)?;
        Self::with_store(config, clock, whoami, store)
    }

    /// Like [`AppState::build`] with the session store given (tests inject faults this way).
    pub fn with_store(
        config: Config,
        clock: Arc<dyn Clock>,
        whoami: Option<SocketAddr>,
        store: Arc<dyn SessionStore>,
    ) -> anyhow::Result<Arc<Self>> {
        let users = Arc::new(Users::new(
            UserDirectory::load(&config.users.file).map_err(|e| anyhow::Error::msg(config.users.annotate(e)))?,
        ));
        let client_info = ClientInfoResolver::new(
            config.client_info.trusted_proxies.clone(),
            config.client_info.geoip_database.as_deref(),
        )?;
        let routes = RouteTable::new(&config, whoami).map_err(anyhow::Error::msg)?;
        let sessions = SessionManager {
            store,
            cache: Arc::new(SessionCache::new(CACHE_CAPACITY)),
            activity: Arc::new(ActivityBuffer::new(MAX_PENDING_ACTIVITY)),
            clock,
            idle_timeout: millis(config.session.idle_timeout),
            absolute_timeout: millis(config.session.absolute_timeout),
            cache_ttl: match &config.store.redis {
                Some(_) => SHARED_CACHE_TTL,
                None => Millis::MAX,
            },
            outage_grace: config.store.redis.as_ref().map_or(Millis::MAX, |r| millis(r.outage_grace)),
            outage_since: Default::default(),
        };
        // A second connection of its own: the session store may be wrapped (tests) or swapped.
        let throttle: Arc<dyn AttemptLimiter> = match &config.store.redis {
            Some(redis) => Arc::new(RedisStore::new(redis.clone(), config.session.idle_timeout)?),
            None => Arc::new(SignInThrottle::default()),
        };
        let cookies = CookieJar::new(&config.session.cookie_name, config.session.cookie_secure);
        Ok(Arc::new(AppState {
            sessions,
            users,
            passwords: PasswordVerifierPool::new(4),
            throttle,
            client_info,
            cookies,
            routes,
            templates: Templates::new()?,
            config,
        }))
    }
}
