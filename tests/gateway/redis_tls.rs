//! Two replicas on a TLS-only Redis (`rediss://`, a throwaway private CA given as
//! `[store] tls_ca_file`): sign in, list sessions on both, and a revoke on one reaches the other
//! through the revocation subscription, which verifies the server with the same CA.

use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::*;

fn replica(redis: &RedisServer) -> TestGateway {
    let ca = &redis.tls_files().expect("a TLS redis").ca_cert;
    assert!(redis.url().starts_with("rediss://"));
    Setup::default()
        .toml(&format!(
            "[store]\nkind = \"redis\"\nurl = \"{}\"\ntls_ca_file = \"{}\"\ntimeout = \"1s\"",
            redis.url(),
            ca.display()
        ))
        .start()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_sessions_and_revocations_through_a_tls_redis() {
    let redis = RedisServer::start_tls();
    let r1 = replica(&redis);
    let r2 = replica(&redis);
    subscribed(&r1, SUBSCRIBE_WITHIN).await;
    subscribed(&r2, SUBSCRIBE_WITHIN).await;

    let mine = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    let other = sign_in(&r1, DEMO_EMAIL, FIREFOX_WIN).await;
    // The sessions are in Redis (reached over TLS), so replica 2 knows them.
    assert_eq!(client().get(r2.url("/app")).header("cookie", &other).send().await.unwrap().status(), 200);
    let (status, v) = sessions(&r2, &mine).await;
    assert_eq!(status, 200);
    let list = v["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let id = list.iter().find(|s| s["current"] != true).unwrap()["id"].as_str().unwrap().to_string();
    let keys = redis.command(&["DBSIZE"]);
    assert_ne!(keys, "0", "nothing written to the TLS redis");

    // Revoke through replica 1; replica 2 (which has the session cached) learns it from the
    // notice it receives over its TLS subscription.
    let resp =
        client().delete(r1.url(&format!("/.dalea/api/sessions/{id}"))).header("cookie", &mine).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let revoked_at = Instant::now();
    loop {
        let status = client().get(r2.url("/app")).header("cookie", &other).send().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "replica 2 still accepts the revoked session");
    }
    assert!(r2.state.sessions.cache.is_trusted(), "the subscription over TLS must still be up");
    let (_, v1) = sessions(&r1, &mine).await;
    let (_, v2) = sessions(&r2, &mine).await;
    assert_eq!(v1["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(v2["sessions"].as_array().unwrap().len(), 1);
}
