//! A session store that stops answering: nobody is signed out, nothing fails open, nothing is
//! deleted, and service resumes when the store does. The real embedded store sits underneath;
//! only its availability is switched off and on (it cannot fail on command by itself).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dalea_gateway::clock::Millis;
use dalea_gateway::session::store::{Activity, SessionStore, StoreError};
use dalea_gateway::session::{PublicId, Session, TokenHash};

use crate::support::*;

struct Switchable {
    inner: Arc<dyn SessionStore>,
    down: Arc<AtomicBool>,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("switched off by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for Switchable {
    async fn insert(&self, s: &Session) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert(s).await
    }
    async fn get(&self, h: &TokenHash) -> Result<Option<Session>, StoreError> {
        self.check()?;
        self.inner.get(h).await
    }
    async fn list_for_user(&self, u: &str) -> Result<Vec<Session>, StoreError> {
        self.check()?;
        self.inner.list_for_user(u).await
    }
    async fn find_for_user(&self, u: &str, id: &PublicId) -> Result<Option<Session>, StoreError> {
        self.check()?;
        self.inner.find_for_user(u, id).await
    }
    async fn rotate(&self, old: &TokenHash, new: &Session) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.rotate(old, new).await
    }
    async fn update(&self, s: &Session) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.update(s).await
    }
    async fn remove(&self, h: &TokenHash) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.remove(h).await
    }
    async fn record_activity(&self, b: &[Activity]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_activity(b).await
    }
    async fn remove_expired(&self, now: Millis, idle: Millis) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.remove_expired(now, idle).await
    }
}

fn gateway() -> (TestGateway, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let gw = Setup::default()
        .wrap_store(move |inner| Arc::new(Switchable { inner, down: flag }) as Arc<dyn SessionStore>)
        .start();
    (gw, down)
}

#[tokio::test]
async fn an_outage_answers_503_signs_nobody_out_and_deletes_nothing() {
    let (gw, down) = gateway();
    let cached = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let uncached = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    // Forget every cached copy, as after a restart: the next lookup must go to the store.
    gw.state.sessions.cache.retain(|_| false);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &cached).send().await.unwrap().status(), 200);

    down.store(true, Ordering::SeqCst);
    // A session already in the cache keeps working without the store.
    assert_eq!(client().get(gw.url("/app")).header("cookie", &cached).send().await.unwrap().status(), 200);
    // One that is not: 503 with Retry-After — not a sign-in redirect, not a cleared cookie.
    let resp =
        client().get(gw.url("/app")).header("cookie", &uncached).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert!(resp.headers().get("location").is_none());
    assert!(set_cookies(&resp).is_empty(), "the cookie is kept");
    // Sign-in and the sessions list say so too.
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, PASSWORD).await.status(), 503);
    assert_eq!(sessions(&gw, &cached).await.0, 503);
    // Public routes do not depend on the store at all.
    assert_eq!(client().get(gw.url("/public/x")).header("cookie", &uncached).send().await.unwrap().status(), 200);
    // Let the activity flusher fail at least once.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    down.store(false, Ordering::SeqCst);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &uncached).send().await.unwrap().status(), 200);
    let (status, v) = sessions(&gw, &cached).await;
    assert_eq!(status, 200);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2, "both sessions survived: {v}");
}

/// Confirming it's you needs the store to give the session its new token: while the store is
/// down that answers 503, and the session stays exactly as it was (same cookie, not elevated).
#[tokio::test]
async fn an_elevation_during_an_outage_answers_503_and_changes_nothing() {
    use crate::support::account::*;

    let (gw, down) = gateway();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&gw, &cookie).await;
    // Setting up TOTP rewrote the session; one request puts it back in the cache.
    assert_eq!(get_json(&gw, "/app", &cookie).await.status(), 200);

    down.store(true, Ordering::SeqCst);
    let resp = elevate_with_code(&gw, &cookie, &app.next_code(&gw.clock)).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert!(set_cookies(&resp).is_empty(), "no new cookie, the old one is not cleared");
    assert_eq!(get_json(&gw, "/app", &cookie).await.status(), 200, "still signed in (cached)");
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 401, "not elevated");

    down.store(false, Ordering::SeqCst);
    assert_eq!(get_json(&gw, "/app", &cookie).await.status(), 200);
    let cookie = elevate(&gw, &cookie, &app).await;
    assert_eq!(get_json(&gw, "/admin", &cookie).await.status(), 200);
}

/// `/readyz` tells the load balancer to send traffic elsewhere while the store is down, and
/// says which check failed; `/healthz` (the process) stays 200 so nothing restarts it.
#[tokio::test]
async fn readiness_fails_while_the_store_is_down_and_names_it() {
    let (gw, down) = gateway();
    let admin = |path: &str| format!("http://{}{path}", gw.admin);
    assert_eq!(client().get(admin("/readyz")).send().await.unwrap().status(), 200);
    down.store(true, Ordering::SeqCst);
    let resp = client().get(admin("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.unwrap();
    assert!(body.contains("store: unavailable") && body.contains("proxy listener: ok"), "{body}");
    assert_eq!(client().get(admin("/healthz")).send().await.unwrap().status(), 200);
    let metrics = client().get(admin("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("dalea_store_errors_total{op=\"get\"} 1"), "the failed check is counted:\n{metrics}");
    down.store(false, Ordering::SeqCst);
    assert_eq!(client().get(admin("/readyz")).send().await.unwrap().status(), 200);
}
