//! The Redis session store: sessions, the per-person index and revocation notices in Redis, so
//! many gateway replicas share them. Runs unchanged on a standalone server, on a Sentinel-managed
//! master (found through the sentinels and followed across failovers, see `sentinel.rs`) and on
//! Redis Cluster.
//!
//! # Key layout (`P` = `RedisConfig::key_prefix`)
//!
//! | key | type | content |
//! |---|---|---|
//! | `P:s:{<hex of token hash>}` | HASH | `rec` = record (`[version byte] ++ JSON`, as in the embedded store), `la` = last-active millis, `ip` = last IP (`""` = unchanged), `exp` = absolute expiry millis |
//! | `P:u:{<user id>}` | HASH | public id → token-hash hex (the per-person index) |
//! | channel `P:revocations` | pub/sub | payload = token-hash hex of a removed session; `~<hex>` = a changed session; `k:<hex of key hash>` = a removed API key |
//! | `P:totp:{<id>}` | HASH | `secret`, `enrolled_at`, `last_step` (the active TOTP credential), `pending`, `pending_exp` (an enrolment in progress); secrets are the encrypted bytes; no TTL |
//! | `P:pw:{<id>}` | HASH | `hash` (PHC string), `replaces`, `changed_at`: the password set on the settings page; no TTL |
//! | `P:audit:{<id>}` | ZSET | score = sequence number, member = `<seq>:<event JSON>`; the newest `keep` only |
//! | `P:audit:{<id>}:n` | STRING | the last sequence number given out (INCR) |
//! | `P:k:{<hex of key hash>}` | HASH | an API key: `rec` = record (`[version byte] ++ JSON`, as in the embedded store), `lu` = last-used millis, `ip` = last IP; no TTL, or, with an expiry, a TTL ending 30 days after it (`api_keys.rs`) |
//! | `P:ku:{<id>}` | HASH | key id → key-hash hex (the per-person API key index); no TTL |
//! | `P:pend:{<kind>:<pid>}` | STRING | a sign-in ceremony in progress (`pending.rs`): `[version byte] ++ expires_at (8 bytes, big-endian) ++ value`; TTL until `expires_at` (at most a day); taken with `GETDEL` |
//! | `P:ext:{<provider>:<sid>}` | STRING | an external identity's link (`links.rs`), the truth: `[version byte] ++ JSON` of the `Link`; created with `SET NX`; no TTL |
//! | `P:exu:{<id>}` | HASH | `<provider>:<subject>` → `linked_at` millis (the per-person link index, repaired from the `P:ext` keys); no TTL |
//! | `P:person:{<id>}` | STRING | a created person (`people.rs`): `[version byte] ++ JSON` of the `Person`; created with `SET NX`, before its email claim; no TTL |
//! | `P:pk:{<credential id>}` | STRING | a registered passkey (`passkeys.rs`), the truth: `[version byte] ++ JSON` of the `PasskeyRecord`; created with `SET NX`, changed by compare-and-set; no TTL |
//! | `P:pku:{<id>}` | HASH | credential id → `created_at` millis (the per-person passkey index, repaired from the `P:pk` keys); no TTL |
//! | `P:hist:{<id>}` | STRING | a person's sign-in history for the warning flags (`history.rs`): `[version byte] ++ JSON` of the `History`; changed by compare-and-set; 400-day TTL, refreshed by each sign-in |
//! | `P:pmail:{<email>}` | STRING | the id of the created person with this lower-case email, the arbiter: created with `SET NX`; a person exists only when their record's email claim names them; no TTL |
//!
//! `<id>` is the person's id with `%`, `{` and `}` escaped as `%25`, `%7B`, `%7D` (the empty id
//! as `%`; `account.rs`), so the hash tag is always the whole id; `<sid>` is a provider's subject
//! escaped the same way. `<kind>`, `<pid>` and `<provider>` cannot hold braces (`[A-Za-z0-9_-]`,
//! `[A-Za-z0-9_.-]` for providers), nor can a `<credential id>` (base64url). Both audit keys get
//! a 400-day TTL, refreshed by every append, so an abandoned account's log goes away; the
//! credential and password keys never expire (an abandoned enrolment stays in `P:totp` until
//! the next enrolment or removal, and is refused once past `pending_exp`).
//!
//! The `{…}` parts are Redis Cluster hash tags, so every command touches one hash slot; nothing
//! needs a cross-slot transaction (the only command with two keys, the audit append, touches one
//! person's two audit keys, which share the tag). An identity link and its person's index entry
//! are in different slots: the `P:ext` key decides, and the index is checked against it; the
//! same for a passkey (`P:pk`) and its person's passkey index (`P:pku`).
//! Only SHA-256 hashes of tokens and API keys are stored.
//! The account records' check-and-set operations (confirming an enrolment, using a TOTP step,
//! appending to the audit log) are single Lua scripts, atomic on the server.
//!
//! - Validating a request on a cache miss is one round trip: `HGETALL P:s:{hash}`.
//! - Last-active and IP live in their own fields, so the activity flusher never rewrites the
//!   record; it runs one small Lua script per session (pipelined, one round trip per node)
//!   that does nothing when the key is gone, so activity never resurrects a removed session.
//! - Expiry is by key TTL: the session key lives until
//!   `min(last active + idle timeout, expires_at)`, refreshed by each activity write; the
//!   index key's TTL is raised to at least the longest absolute lifetime of its sessions.
//! - An index entry whose session key is gone (expired) is dropped by `list_for_user`.
//! - `remove` deletes the session key, then the index entry, then publishes the hash on
//!   `P:revocations`; it returns only after the delete and the publish succeeded.
//! - API keys work the same way (`api_keys.rs`): a key is one `HGETALL P:k:{hash}`, last use
//!   is a per-key script writing `lu`/`ip`, and `remove_key` publishes `k:<hex>`.
//!
//! TLS: `rediss://` URLs connect over TLS (rustls, ring provider); the server certificate is
//! always verified, against the system roots or, when `RedisConfig::tls_ca_file` is set, against
//! the CA certificates in that file (standalone, cluster, sentinels and the Sentinel-named
//! master, and the revocation listener's subscription, which gets the same CA from [`read_ca`]).
//!
//! Connections are made lazily on first use (redis-rs drivers bind to the runtime that creates
//! them, and the gateway builds its state before pingora's runtimes exist); a failed connect
//! is retried by the next call. Every call is bounded by `RedisConfig::timeout`; a timeout or a
//! connection error is `StoreError::Unavailable`.

mod account;
mod api_keys;
mod conn;
mod fields;
mod history;
mod links;
mod passkeys;
mod pending;
mod people;
mod records;
#[cfg(test)]
#[path = "../../../tests/support/redis.rs"]
mod redis_server;
mod scripts;
mod sentinel;
mod store_impl;
mod sweep;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_outage;
#[cfg(test)]
mod tests_reshard;
#[cfg(test)]
mod tests_sentinel;
#[cfg(test)]
mod tests_tls;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::store::StoreError;
use super::TokenHash;
use crate::clock::{millis, Clock, Millis, SystemClock};
use crate::config::{RedisConfig, RedisMode};
use conn::{Conn, Target};
pub use sentinel::SentinelResolver;

/// Redis-backed [`SessionStore`](super::store::SessionStore).
pub struct RedisStore {
    target: Target,
    conn: OnceCell<Conn>,
    prefix: String,
    timeout: Duration,
    idle_timeout: Millis,
    clock: Arc<dyn Clock>,
    /// Notices published through this store (metrics: sent count, fan-out lag).
    pub notices: Arc<super::revocation::NoticeLog>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the settings without connecting (the connection is made on first use).
    /// `idle_timeout` is the session idle timeout, used for key TTLs.
    pub fn new(config: RedisConfig, idle_timeout: Duration) -> Result<RedisStore, StoreError> {
        Self::with_clock(config, idle_timeout, Arc::new(SystemClock))
    }

    /// As [`new`](Self::new), with the clock TTLs are computed from (tests pin it).
    pub fn with_clock(
        config: RedisConfig,
        idle_timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisStore, StoreError> {
        if config.key_prefix.contains(['{', '}']) {
            // Braces would turn the prefix into the hash tag and put every key in one slot.
            return Err(StoreError::Unavailable("redis key_prefix must not contain '{' or '}'".into()));
        }
        install_crypto_provider();
        let timeout = config.timeout.max(Duration::from_millis(1));
        let ca = read_ca(&config)?;
        let ca_ref = ca.as_deref().map(Vec::as_slice);
        let target = match &config.mode {
            RedisMode::Standalone { url } => Target::standalone(url, timeout, ca_ref)?,
            RedisMode::Cluster { nodes } => Target::cluster(nodes, timeout, ca_ref)?,
            RedisMode::Sentinel { master, sentinels } => Target::sentinel(master, sentinels, timeout, ca_ref)?,
        };
        Ok(RedisStore {
            target,
            conn: OnceCell::new(),
            prefix: config.key_prefix,
            timeout,
            idle_timeout: millis(idle_timeout).max(1),
            clock,
            notices: Arc::default(),
        })
    }

    /// The pub/sub channel revocation notices are published on.
    pub fn revocation_channel(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    /// The token hash carried by a revocation notice, if the payload is one.
    pub fn parse_revocation(payload: &[u8]) -> Option<TokenHash> {
        if payload.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in payload.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(TokenHash(out))
    }

    fn session_key(&self, hash: &TokenHash) -> String {
        format!("{}:s:{{{}}}", self.prefix, hex(hash))
    }

    fn index_key(&self, user_id: &str) -> String {
        format!("{}:u:{{{}}}", self.prefix, user_id)
    }

    /// The connection, made on first use; a failed attempt leaves the cell empty so the next
    /// call tries again.
    async fn conn(&self) -> Result<&Conn, StoreError> {
        self.conn.get_or_try_init(|| self.target.connect()).await
    }

    /// Runs `f` within the configured timeout; running out of time is `Unavailable`.
    async fn bounded<T, F>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!("redis {what} did not answer within {:?}", self.timeout))),
        }
    }
}

/// Lower-case hex of a token hash (the form used in keys, the index and notices).
pub(crate) fn hex(hash: &TokenHash) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in hash.0 {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Makes ring the process-wide rustls crypto provider (redis-rs's TLS needs one; only ring is
/// compiled in). Idempotent: "already installed" is ignored. `main` calls it at start-up; the
/// store calls it too, so library users and tests need not.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA certificates (PEM) of `tls_ca_file`, which verify the `rediss://` servers instead of
/// the system roots (for the store and for the revocation listener alike).
pub fn read_ca(config: &RedisConfig) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
    match &config.tls_ca_file {
        None => Ok(None),
        Some(path) => std::fs::read(path)
            .map(|pem| Some(Arc::new(pem)))
            .map_err(|e| unavailable(format!("cannot read tls_ca_file {}: {e}", path.display()))),
    }
}

/// The certificates redis-rs verifies servers with: `ca` (PEM) instead of the system roots.
pub(crate) fn tls_certificates(ca: &[u8]) -> ::redis::TlsCertificates {
    ::redis::TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) }
}

/// A client for `url`: over TLS verified by `ca` when `url` is `rediss://` and `ca` is given,
/// otherwise as the URL says (`rediss://` = TLS verified by the system roots).
pub(crate) fn client_for(url: &str, ca: Option<&[u8]>) -> ::redis::RedisResult<::redis::Client> {
    match ca {
        Some(ca) if is_tls_url(url) => ::redis::Client::build_with_tls(url, tls_certificates(ca)),
        _ => ::redis::Client::open(url),
    }
}

pub(crate) fn is_tls_url(url: &str) -> bool {
    url.trim_start().get(..9).is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}
