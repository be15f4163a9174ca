//! `AppState`: everything shared by the proxy, the built-in pages and the background
//! services, built once at start-up and handed around as one `Arc`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::account::links::LinkStore;
use crate::account::people::{check_id, email_key, PeopleStore, PersonCache};
use crate::account::AccountStore;
use crate::api_keys::keyring::{ApiKeys, KeyCache};
use crate::api_keys::ApiKeyStore;
use crate::auth::oauth::OAuthClients;
use crate::auth::password::PasswordVerifierPool;
use crate::auth::reload::Users;
use crate::auth::throttle::{AttemptLimiter, CountedRejections, SignInThrottle};
use crate::auth::{User, UserDirectory};
use crate::client_info::ClientInfoResolver;
use crate::clock::{millis, Clock, Millis};
use crate::config::{Config, KeySource, StoreKind};
use crate::metrics::{MeteredStore, Metrics, Snapshot};
use crate::pages::templates::Templates;
use crate::passkeys::{PasskeyService, PasskeyStore};
use crate::pending::PendingStore;
use crate::proxy::routes::RouteTable;
use crate::secrets::SecretKey;
use crate::session::activity::{ActivityBuffer, KeyUse, Lane, SessionActivity};
use crate::session::cache::SessionCache;
use crate::session::cookie::CookieJar;
use crate::session::embedded::EmbeddedStore;
use crate::session::manager::SessionManager;
use crate::session::redis::RedisStore;
use crate::session::revocation::NoticeLog;
use crate::session::store::{SessionStore, StoreError};
use crate::vigilance::{HistoryStore, Notifier, Vigilance};

/// The store the config asks for, seen through its traits.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Arc<dyn SessionStore>,
    /// TOTP credentials, changed passwords, the audit log.
    pub accounts: Arc<dyn AccountStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Sign-in ceremonies in progress (OAuth, passkeys), taken once.
    pub pending: Arc<dyn PendingStore>,
    /// External identities (sign-in providers) linked to people.
    pub links: Arc<dyn LinkStore>,
    /// People the gateway created (sign-in providers, `unknown_people = "create"`).
    pub people: Arc<dyn PeopleStore>,
    /// Registered passkeys.
    pub passkeys: Arc<dyn PasskeyStore>,
    /// People's sign-in histories (devices and places seen), for the warning flags.
    pub history: Arc<dyn HistoryStore>,
    /// Notices published through a shared store (`None` for the embedded store).
    pub notices: Option<Arc<NoticeLog>>,
}

impl Stores {
    /// One store that keeps everything.
    fn all_in<S>(store: Arc<S>, notices: Option<Arc<NoticeLog>>) -> Stores
    where
        S: SessionStore
            + AccountStore
            + ApiKeyStore
            + PendingStore
            + LinkStore
            + PeopleStore
            + PasskeyStore
            + HistoryStore
            + 'static,
    {
        Stores {
            sessions: store.clone(),
            accounts: store.clone(),
            api_keys: store.clone(),
            pending: store.clone(),
            links: store.clone(),
            people: store.clone(),
            passkeys: store.clone(),
            history: store,
            notices,
        }
    }
}

/// The store the config asks for.
pub fn open_store(config: &Config) -> anyhow::Result<Stores> {
    Ok(match config.store.kind {
        StoreKind::Embedded => Stores::all_in(Arc::new(EmbeddedStore::open(&config.store.path)?), None),
        StoreKind::Redis => {
            let redis =
                config.store.redis.clone().ok_or_else(|| anyhow::anyhow!("store.url: Redis settings missing"))?;
            let store = Arc::new(RedisStore::new(redis, config.session.idle_timeout)?);
            let notices = Some(store.notices.clone());
            Stores::all_in(store, notices)
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
/// How long a created person read from the store is used before it is read again.
const CREATED_PEOPLE_TTL: Millis = 60_000;
/// How many sessions' unflushed activity is kept while the store is unavailable.
const MAX_PENDING_ACTIVITY: usize = 200_000;

pub struct AppState {
    pub config: Config,
    pub sessions: SessionManager,
    /// TOTP credentials, changed passwords and the audit log (same store as the sessions).
    pub accounts: Arc<dyn AccountStore>,
    /// API keys (same store, separate records and cache).
    pub api_keys: ApiKeys,
    /// Sign-in ceremonies in progress (same store), taken once.
    pub pending: Arc<dyn PendingStore>,
    /// External identities linked to people (same store).
    pub links: Arc<dyn LinkStore>,
    /// People the gateway created (same store); look people up with [`AppState::person`].
    pub people: Arc<dyn PeopleStore>,
    /// Created people recently read from `people`, for [`AppState::person`].
    pub created_people: PersonCache,
    /// Registered passkeys (same store).
    pub passkey_store: Arc<dyn PasskeyStore>,
    /// Passkey ceremonies (`[passkeys]`); `None` when passkeys are not configured.
    pub passkeys: Option<PasskeyService>,
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
    /// Sign-in providers' clients (`[[oauth.providers]]`).
    pub oauth: OAuthClients,
    pub metrics: Arc<Metrics>,
    /// Notices this process published through a shared store.
    pub notices: Option<Arc<NoticeLog>>,
    /// The sessions list's warning flags and the sign-in notices (`[vigilance]`, `[notify]`).
    pub vigilance: Arc<Vigilance>,
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
        let info = &config.client_info;
        let client_info = if info.geoip_optional {
            ClientInfoResolver::new_geoip_optional(info.trusted_proxies.clone(), info.geoip_database.as_deref())
        } else {
            ClientInfoResolver::new(info.trusted_proxies.clone(), info.geoip_database.as_deref())
        };
        // Said once, under the key to fix (as `check-config` says it).
        let client_info = client_info.map_err(|e| anyhow::anyhow!("client_info.geoip_database: {e}"))?;
        let routes = RouteTable::new(&config, whoami).map_err(anyhow::Error::msg)?;
        let route_names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        let metrics = Arc::new(Metrics::new(&route_names));
        let providers: Vec<String> = config.oauth.providers.iter().map(|p| format!("oauth:{}", p.name)).collect();
        metrics.auth.declare_signin_methods(&providers);
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
        let oauth = OAuthClients::new(&config.oauth)?;
        let passkeys = config.passkeys.as_ref().map(PasskeyService::new).transpose()?;
        let notifier = config.notify.clone().map(Notifier::new).transpose()?;
        let vigilance = Arc::new(Vigilance::new(stores.history, &config.vigilance, notifier));
        Ok(Arc::new(AppState {
            sessions,
            accounts: stores.accounts,
            api_keys,
            pending: stores.pending,
            links: stores.links,
            people: stores.people,
            created_people: PersonCache::new(CACHE_CAPACITY),
            passkey_store: stores.passkeys,
            passkeys,
            secret_key,
            users,
            passwords: PasswordVerifierPool::new(4),
            throttle,
            client_info,
            cookies,
            routes,
            templates: Templates::new()?,
            oauth,
            config,
            metrics,
            notices: stores.notices,
            vigilance,
        }))
    }
}

impl AppState {
    /// Who the person with this id is: someone in the users file (no I/O), or else a person
    /// the gateway created (from a cache refreshed every minute, then the store).
    /// `Ok(None)` only when there definitely is no such person; a store failure is an
    /// error, never "nobody" (callers must not sign anyone out for it). While the store is
    /// unavailable, a cached person keeps working for the store's outage grace.
    pub async fn person(&self, id: &str) -> Result<Option<Arc<User>>, StoreError> {
        if let Some(user) = self.users.current().by_id(id) {
            return Ok(Some(user));
        }
        if check_id(id).is_err() {
            return Ok(None); // no created person can have it
        }
        let now = self.sessions.now();
        let cached = self.created_people.get(id);
        if let Some((user, fetched)) = &cached {
            if (0..CREATED_PEOPLE_TTL).contains(&(now - fetched)) {
                return Ok(Some(user.clone()));
            }
        }
        match self.people.person(id).await {
            Ok(Some(person)) => {
                let user = Arc::new(person.to_user());
                self.created_people.put(user.clone(), now);
                Ok(Some(user))
            }
            Ok(None) => {
                self.created_people.remove(id);
                Ok(None)
            }
            Err(e @ StoreError::Unavailable(_)) => match cached {
                // Created people never change, so a copy read before the outage is still right.
                Some((user, fetched))
                    if now - fetched <= CREATED_PEOPLE_TTL.saturating_add(self.sessions.outage_grace) =>
                {
                    tracing::debug!(error = %e, user.id = %id, "people store unavailable: using the cached person");
                    Ok(Some(user))
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Who has this email (case-insensitive): someone in the users file, or else a person the
    /// gateway created (read from the store, uncached). `Ok(None)` for an email that cannot be
    /// anyone's. A created person has an empty password hash, which never verifies.
    pub async fn person_by_email(&self, email: &str) -> Result<Option<Arc<User>>, StoreError> {
        if let Some(user) = self.users.current().by_email(email) {
            return Ok(Some(user));
        }
        if email_key(email).is_err() {
            return Ok(None);
        }
        Ok(self.people.person_by_email(email).await?.map(|p| Arc::new(p.to_user())))
    }

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
            webhook: self.vigilance.notifier().map(Notifier::counts).unwrap_or_default(),
        };
        self.metrics.scrape(&snap)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::account::people::Person;
    use crate::clock::ManualClock;
    use crate::config::Overrides;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$jmzT0iIzTUyZwE7xN4DUJ0JHUFeXTn2nkAmVdMKv+oY";

    /// The real people store, counting reads, and unavailable when told.
    struct Watched {
        inner: Arc<dyn PeopleStore>,
        reads: AtomicUsize,
        down: AtomicBool,
    }

    impl Watched {
        fn read(&self) -> Result<(), StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            match self.down.load(Ordering::SeqCst) {
                true => Err(StoreError::Unavailable("down for the test".into())),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl PeopleStore for Watched {
        async fn create_person(&self, person: &Person) -> Result<Person, StoreError> {
            self.inner.create_person(person).await
        }

        async fn person(&self, id: &str) -> Result<Option<Person>, StoreError> {
            self.read()?;
            self.inner.person(id).await
        }

        async fn person_by_email(&self, email: &str) -> Result<Option<Person>, StoreError> {
            self.read()?;
            self.inner.person_by_email(email).await
        }
    }

    fn state(dir: &std::path::Path, clock: &ManualClock) -> (Arc<AppState>, Arc<Watched>) {
        let users = format!("[[users]]\nid = \"ann\"\nemail = \"ann@example.com\"\npassword_hash = \"{HASH}\"\n");
        std::fs::write(dir.join("users.toml"), users).expect("users file");
        let text = "[[upstreams]]\nname = \"app\"\nbuiltin = \"whoami\"\n[[routes]]\nupstream = \"app\"\n\
                    [users]\nfile = \"users.toml\"\n";
        let overrides = Overrides { data_dir: Some(dir.join("data")), ..Overrides::default() };
        let config = Config::from_toml_str(text, dir, &[], &overrides).expect("config");
        let mut stores = open_store(&config).expect("store");
        let watched = Arc::new(Watched {
            inner: stores.people.clone(),
            reads: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        stores.people = watched.clone();
        let unused = SocketAddr::from(([127, 0, 0, 1], 9));
        let state = AppState::with_store(config, Arc::new(clock.clone()), Some(unused), stores).expect("state");
        (state, watched)
    }

    fn bea() -> Person {
        Person {
            id: "p-bea".into(),
            email: "bea@example.com".into(),
            display_name: "Bea".into(),
            created_at: 1,
            created_via: "oauth:google".into(),
        }
    }

    #[tokio::test]
    async fn the_users_file_answers_first_without_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (state, watched) = state(dir.path(), &ManualClock::new(1_000));
        watched.down.store(true, Ordering::SeqCst);
        let ann = state.person("ann").await.expect("person").expect("ann");
        assert_eq!((ann.email.as_str(), ann.password_hash.as_str()), ("ann@example.com", HASH));
        let by_email = state.person_by_email(" ANN@example.com").await.expect("by email").expect("ann");
        assert_eq!(by_email.id, "ann");
        // Ids and emails no created person can have are nobody, without asking either.
        assert!(state.person("not an id").await.expect("person").is_none());
        assert!(state.person_by_email("no-at-sign").await.expect("by email").is_none());
        assert_eq!(watched.reads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn created_people_are_read_from_the_store_and_cached_for_a_minute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000);
        let (state, watched) = state(dir.path(), &clock);
        assert!(state.person("p-bea").await.expect("person").is_none(), "nobody yet");
        state.people.create_person(&bea()).await.expect("create");
        let reads = || watched.reads.load(Ordering::SeqCst);
        let user = state.person("p-bea").await.expect("person").expect("bea");
        assert_eq!(*user, bea().to_user());
        assert_eq!(user.password_hash, "", "no password");
        assert_eq!(reads(), 2);
        clock.advance(Duration::from_millis(59_999));
        assert!(state.person("p-bea").await.expect("person").is_some());
        assert_eq!(reads(), 2, "cached");
        clock.advance(Duration::from_millis(1));
        assert!(state.person("p-bea").await.expect("person").is_some());
        assert_eq!(reads(), 3, "re-read after a minute");
        let by_email = state.person_by_email("Bea@Example.com").await.expect("by email").expect("bea");
        assert_eq!(by_email.id, "p-bea");
    }

    #[tokio::test]
    async fn an_unavailable_store_is_an_error_never_nobody() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000);
        let (state, watched) = state(dir.path(), &clock);
        state.people.create_person(&bea()).await.expect("create");
        assert!(state.person("p-bea").await.expect("person").is_some());
        watched.down.store(true, Ordering::SeqCst);
        clock.advance(Duration::from_secs(61));
        // A person read before the outage keeps working (created people never change) …
        assert!(state.person("p-bea").await.expect("cached copy").is_some());
        // … and one not cached is an error, not "no such person".
        assert!(matches!(state.person("p-cal").await, Err(StoreError::Unavailable(_))));
        assert!(matches!(state.person_by_email("cal@example.com").await, Err(StoreError::Unavailable(_))));
    }
}
