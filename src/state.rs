//! `AppState`: everything shared by the proxy, the built-in pages and the background
//! services, built once at start-up and handed around as one `Arc`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::account::AccountStore;
use crate::api_keys::keyring::{ApiKeys, KeyCache};
use crate::api_keys::ApiKeyStore;
use crate::auth::password::PasswordVerifierPool;
use crate::auth::reload::Users;
use crate::auth::throttle::{AttemptLimiter, CountedRejections, SignInThrottle};
use crate::auth::UserDirectory;
use crate::client_info::ClientInfoResolver;
use crate::clock::{millis, Clock, Millis};
use crate::config::{Config, KeySource, StoreKind};
use crate::metrics::{MeteredStore, Metrics, Snapshot};
use crate::pages::templates::Templates;
use crate::proxy::routes::RouteTable;
use crate::secrets::SecretKey;
use crate::session::activity::{ActivityBuffer, KeyUse, Lane, SessionActivity};
use crate::session::cache::SessionCache;
use crate::session::cookie::CookieJar;
use crate::session::embedded::EmbeddedStore;
use crate::session::manager::SessionManager;
use crate::session::redis::RedisStore;
use crate::session::revocation::NoticeLog;
use crate::session::store::SessionStore;

/// The store the config asks for, seen through its two traits.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Arc<dyn SessionStore>,
    /// TOTP credentials, changed passwords, the audit log.
    pub accounts: Arc<dyn AccountStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Notices published through a shared store (`None` for the embedded store).
    pub notices: Option<Arc<NoticeLog>>,
}

/// The store the config asks for.
pub fn open_store(config: &Config) -> anyhow::Result<Stores> {
    Ok(match config.store.kind {
        StoreKind::Embedded => {
            let store = Arc::new(EmbeddedStore::open(&config.store.path)?);
            Stores { sessions: store.clone(), accounts: store.clone(), api_keys: store, notices: None }
        }
        StoreKind::Redis => {
            let redis =
                config.store.redis.clone().ok_or_else(|| anyhow::anyhow!("store.url: Redis settings missing"))?;
            let store = Arc::new(RedisStore::new(redis, config.session.idle_timeout)?);
            let notices = Some(store.notices.clone());
            Stores { sessions: store.clone(), accounts: store.clone(), api_keys: store, notices }
        }
    })
}

/// The key that encrypts TOTP secrets, from wherever the config says. `None`: a Redis store
/// without `[secrets]` — TOTP cannot be enrolled, and the pages say so.
pub fn load_secret_key(source: &KeySource) -> anyhow::Result<Option<SecretKey>> {
    let key = match source {
        KeySource::Inline(text) => {
            SecretKey::from_base64(text).map_err(|e| anyhow::anyhow!("secrets.encryption_key: {e}"))?
        }
        KeySource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("secrets.encryption_key_file: cannot read {}: {e}", path.display()))?;
            SecretKey::from_base64(&text).map_err(|e| anyhow::anyhow!("secrets.encryption_key_file: {e}"))?
        }
        KeySource::Generated(path) => SecretKey::load_or_create(path)
            .map_err(|e| anyhow::anyhow!("the generated encryption key {}: {e}", path.display()))?,
        KeySource::Missing => {
            tracing::warn!(
                "no [secrets] encryption_key is configured: people cannot set up TOTP; set one shared by every replica"
            );
            return Ok(None);
        }
    };
    Ok(Some(key))
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
    /// TOTP credentials, changed passwords and the audit log (same store as the sessions).
    pub accounts: Arc<dyn AccountStore>,
    /// API keys (same store, separate records and cache).
    pub api_keys: ApiKeys,
    /// Encrypts TOTP secrets at rest; `None` when not configured (TOTP unavailable).
    pub secret_key: Option<SecretKey>,
    /// The users file, reloaded when it changes.
    pub users: Arc<Users>,
    pub passwords: PasswordVerifierPool,
    /// Sign-in attempt counting: in memory, or in Redis (shared by every replica).
    pub throttle: Arc<dyn AttemptLimiter>,
    pub client_info: ClientInfoResolver,
    pub cookies: CookieJar,
    pub routes: RouteTable,
    pub templates: Templates,
    pub metrics: Arc<Metrics>,
    /// Notices this process published through a shared store.
    pub notices: Option<Arc<NoticeLog>>,
}

impl AppState {
    /// Opens the store, loads users, GeoIP and templates. `whoami` is the address of the
    /// built-in demo upstream when the config uses it.
    pub fn build(config: Config, clock: Arc<dyn Clock>, whoami: Option<SocketAddr>) -> anyhow::Result<Arc<Self>> {
        let stores = open_store(&config)?;
        Self::with_store(config, clock, whoami, stores)
    }

    /// Like [`AppState::build`] with the stores given (tests inject faults this way).
    pub fn with_store(
        config: Config,
        clock: Arc<dyn Clock>,
        whoami: Option<SocketAddr>,
        stores: Stores,
    ) -> anyhow::Result<Arc<Self>> {
        let secret_key = load_secret_key(&config.secrets)?;
        let users = Arc::new(Users::new(
            UserDirectory::load(&config.users.file).map_err(|e| anyhow::Error::msg(config.users.annotate(e)))?,
        ));
        let client_info = ClientInfoResolver::new(
            config.client_info.trusted_proxies.clone(),
            config.client_info.geoip_database.as_deref(),
        )?;
        let routes = RouteTable::new(&config, whoami).map_err(anyhow::Error::msg)?;
        let route_names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        let metrics = Arc::new(Metrics::new(&route_names));
        let api_keys = ApiKeys {
            store: stores.api_keys,
            cache: Arc::new(KeyCache::new(CACHE_CAPACITY, metrics.key_cache.clone())),
            activity: Arc::new(ActivityBuffer::new(MAX_PENDING_ACTIVITY)),
            clock: clock.clone(),
            cache_ttl: if config.store.redis.is_some() { SHARED_CACHE_TTL } else { Millis::MAX },
            outage_grace: config.store.redis.as_ref().map_or(Millis::MAX, |r| millis(r.outage_grace)),
        };
        let sessions = SessionManager {
            store: MeteredStore::wrap(stores.sessions, &metrics),
            cache: Arc::new(SessionCache::with_counters(CACHE_CAPACITY, metrics.session_cache.clone())),
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
            rotated: Default::default(),
        };
        // A second connection of its own: the session store may be wrapped (tests) or swapped.
        let throttle: Arc<dyn AttemptLimiter> = match &config.store.redis {
            Some(redis) => Arc::new(RedisStore::new(redis.clone(), config.session.idle_timeout)?),
            None => Arc::new(SignInThrottle::default()),
        };
        let throttle = Arc::new(CountedRejections { inner: throttle, metrics: metrics.clone() });
        let cookies = CookieJar::new(&config.session.cookie_name, config.session.cookie_secure);
        Ok(Arc::new(AppState {
            sessions,
            accounts: stores.accounts,
            api_keys,
            secret_key,
            users,
            passwords: PasswordVerifierPool::new(4),
            throttle,
            client_info,
            cookies,
            routes,
            templates: Templates::new()?,
            config,
            metrics,
            notices: stores.notices,
        }))
    }
}

impl AppState {
    /// What the activity flusher writes: sessions' activity and API keys' last use.
    pub fn activity_lanes(&self) -> Vec<Lane> {
        vec![
            Lane {
                buffer: self.sessions.activity.clone(),
                sink: Arc::new(SessionActivity(self.sessions.store.clone())),
                metrics: self.metrics.clone(),
                clock: self.sessions.clock.clone(),
            },
            Lane {
                buffer: self.api_keys.activity.clone(),
                sink: Arc::new(KeyUse(self.api_keys.store.clone())),
                metrics: self.metrics.clone(),
                clock: self.sessions.clock.clone(),
            },
        ]
    }

    /// `/metrics`: the scrape-time values read from where they are kept, then everything.
    pub fn render_metrics(&self) -> String {
        let now = self.sessions.now();
        let window = millis(crate::metrics::ACTIVE_WINDOW);
        let snap = Snapshot {
            session_cache_entries: self.sessions.cache.len(),
            key_cache_entries: self.api_keys.cache.len(),
            pending: [self.sessions.activity.len(), self.api_keys.activity.len()],
            sessions_active: self.sessions.cache.count(|c| now - c.last_active() <= window),
            notices_sent: self.notices.as_ref().map_or(0, |n| n.sent()),
            subscribed: self.config.store.redis.as_ref().map(|_| self.sessions.cache.is_trusted()),
        };
        self.metrics.scrape(&snap)
    }
}
