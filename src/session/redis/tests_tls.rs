//! `rediss://`: the contract over a real TLS-only `redis-server` whose certificate a throwaway
//! CA signed, verified through `tls_ca_file`; and without that CA (system roots only) or with
//! another CA, every call is `StoreError::Unavailable` — verification is never skipped.

use std::sync::Arc;
use std::time::Duration;

use super::redis_server::{RedisServer, TlsFiles};
use super::tests::config;
use super::RedisStore;
use crate::clock::ManualClock;
use crate::config::{RedisConfig, RedisMode};
use crate::session::store::{SessionStore, StoreError};
use crate::session::store_contract::{run_all, session_at};

const DAY: Duration = Duration::from_secs(86_400);

fn tls_config(server: &RedisServer, ca: Option<std::path::PathBuf>) -> RedisConfig {
    let url = server.url();
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
    RedisConfig { tls_ca_file: ca, ..config(RedisMode::Standalone { url }, Duration::from_secs(2)) }
}

#[tokio::test]
async fn standalone_store_fulfils_the_contract_over_tls_with_a_private_ca() {
    let server = RedisServer::start_tls();
    let ca = server.tls_files().expect("tls server").ca_cert.clone();
    let clock = Arc::new(ManualClock::new(0));
    let store = RedisStore::with_clock(tls_config(&server, Some(ca)), 30 * DAY, clock).expect("store");
    run_all(&store).await;
}

/// The sessions below live near the epoch: the store's clock is pinned there, so they are live.
fn refusing_store(cfg: RedisConfig) -> RedisStore {
    RedisStore::with_clock(cfg, 30 * DAY, Arc::new(ManualClock::new(0))).expect("store")
}

async fn assert_refused(store: &RedisStore) {
    let (session, _) = session_at("ann", 0, DAY.as_millis() as i64);
    for _ in 0..2 {
        match store.insert(&session).await {
            Err(StoreError::Unavailable(msg)) => {
                assert!(msg.contains("certificate"), "not a verification failure: {msg}");
            }
            other => panic!("an unverifiable server must be unavailable, got {other:?}"),
        }
        match store.list_for_user("ann").await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("an unverifiable server must be unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn without_the_private_ca_the_server_is_not_trusted() {
    let server = RedisServer::start_tls();
    // System roots only: the throwaway CA is not among them, so the handshake must fail.
    let store = refusing_store(tls_config(&server, None));
    assert_refused(&store).await;
    // Nothing was written through some unverified connection.
    assert_eq!(server.command(&["DBSIZE"]), "0");
}

#[tokio::test]
async fn another_ca_does_not_verify_the_server() {
    let server = RedisServer::start_tls();
    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = TlsFiles::generate(other.path()).ca_cert;
    let store = refusing_store(tls_config(&server, Some(other_ca)));
    assert_refused(&store).await;
    assert_eq!(server.command(&["DBSIZE"]), "0");
}
