//! Redis outages with real `redis-server` processes and gateway replicas on real sockets (issue 3,
//! "Outages"): killing Redis signs nobody out and never fails open, cached sessions keep working
//! for a bounded grace period, uncached ones get 503 + Retry-After within the store timeout,
//! service and buffered activity come back by themselves when Redis does; a pub/sub disconnect
//! racing a revoke cannot leave the revoked session usable; a revoke that cannot reach Redis
//! says so instead of pretending.
//!
//! The gateways' clock is a `ManualClock` moved forward in step with real time by a ticker
//! thread, so `outage_grace` is measured in real seconds, as in production.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dalea_gateway::clock::{Clock, ManualClock, Millis};
use dalea_gateway::session::store::{Activity, SessionStore, StoreError};
use dalea_gateway::session::{PublicId, Session, Token, TokenHash};

use crate::support::redis::{resp_command, RedisServer};
use crate::support::*;

/// The store timeout every gateway here is configured with.
const STORE_TIMEOUT: &str = "500ms";
/// What "answered within the store timeout" is allowed to take, margin included.
const ANSWER_LIMIT: Duration = Duration::from_secs(2);
/// How long recovery after Redis comes back may take.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

/// Moves a `ManualClock` forward with real time until dropped.
struct RealTime {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RealTime {
    fn start(clock: &ManualClock) -> RealTime {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, clock) = (stop.clone(), clock.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut advanced: u128 = 0;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
                let total = started.elapsed().as_millis();
                clock.advance(Duration::from_millis((total - advanced) as u64));
                advanced = total;
            }
        });
        RealTime { stop, thread: Some(thread) }
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Redis that keeps its data across `kill()` + `restart()` (every write is fsynced to the
/// append-only file in its directory), like a production Redis that crashes and comes back.
fn durable_redis() -> RedisServer {
    RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
}

fn replica(redis: &RedisServer, clock: &ManualClock, outage_grace: &str) -> TestGateway {
    Setup::default()
        .clock(clock.clone())
        .toml(&format!(
            "[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"{STORE_TIMEOUT}\"\noutage_grace = \"{outage_grace}\"\n\
             [client_info]\ntrusted_proxies = [\"127.0.0.1/32\"]",
            redis.url()
        ))
        .start()
}

/// The token of a `dalea_session=…` cookie.
fn token(cookie: &str) -> Token {
    let value = cookie.strip_prefix("dalea_session=").expect("a session cookie");
    Token::parse(value).expect("a well-formed token")
}

/// The Redis key of a session (`dalea:s:{<hex of token hash>}`, see src/session/redis/mod.rs).
fn session_key(cookie: &str) -> String {
    let hex: String = token(cookie).hash().0.iter().map(|b| format!("{b:02x}")).collect();
    format!("dalea:s:{{{hex}}}")
}

/// The public id of the session `cookie` belongs to, from the sessions API.
async fn public_id(gw: &TestGateway, cookie: &str) -> String {
    let (status, v) = sessions(gw, cookie).await;
    assert_eq!(status, 200, "{v}");
    v["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"].as_str().unwrap().to_string()
}

/// One answered request, with the gateway-clock window it was sent in.
#[derive(Debug)]
struct Answer {
    #[allow(dead_code)] // read in failure messages (Debug)
    who: &'static str,
    sent: Millis,
    done: Millis,
    took: Duration,
    status: u16,
    retry_after: bool,
    location: Option<String>,
    set_cookies: Vec<String>,
}

impl Answer {
    /// A response that would sign the person out: a redirect to sign in, a 401, or a
    /// `Set-Cookie` touching the session cookie (clearing it).
    fn signs_out(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 401)
            || self.location.is_some()
            || self.set_cookies.iter().any(|c| c.starts_with("dalea_session="))
    }
}

/// GET /app as a browser would (HTML wanted, so a sign-out would be a redirect), forwarded by a
/// trusted proxy for `client_ip`.
async fn browse(gw: &TestGateway, who: &'static str, cookie: &str, client_ip: &str) -> Answer {
    let sent = gw.clock.now();
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/app"))
        .header("cookie", cookie)
        .header("accept", "text/html")
        .header("x-forwarded-for", client_ip)
        .send()
        .await
        .expect("the gateway answers");
    let took = started.elapsed();
    Answer {
        who,
        sent,
        done: gw.clock.now(),
        took,
        status: resp.status().as_u16(),
        retry_after: resp.headers().get("retry-after").is_some(),
        location: resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string),
        set_cookies: set_cookies(&resp),
    }
}

/// A 503 that says "try again", without signing anyone out, within the store timeout.
fn assert_retryable_503(a: &Answer) {
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.retry_after, "503 without Retry-After: {a:?}");
    assert!(!a.signs_out(), "{a:?}");
    assert!(a.took < ANSWER_LIMIT, "answered after {:?}: {a:?}", a.took);
}

/// Kill Redis under steady traffic on two replicas. A is cached on replica 1 (it browsed
/// there); B's cookie is valid but only replica 2 has ever seen it.
#[tokio::test(flavor = "multi_thread")]
async fn killing_redis_signs_nobody_out_and_service_and_activity_come_back() {
    const GRACE: Millis = 5_000;
    const BEFORE_IP: &str = "198.51.100.10";
    const OUTAGE_IP: &str = "203.0.113.77";

    let mut redis = durable_redis();
    let clock = ManualClock::starting_now();
    let _real_time = RealTime::start(&clock);
    let r1 = replica(&redis, &clock, "5s");
    let r2 = replica(&redis, &clock, "5s");
    subscribed(&r1, RECOVERY_LIMIT).await;
    subscribed(&r2, RECOVERY_LIMIT).await;

    let a = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;
    let b = sign_in(&r2, DEMO_EMAIL, FIREFOX_WIN).await;
    for _ in 0..5 {
        assert_eq!(browse(&r1, "A", &a, BEFORE_IP).await.status, 200);
        assert_eq!(browse(&r2, "B", &b, BEFORE_IP).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_hash = token(&a).hash();
    let b_hash = token(&b).hash();
    let a_cached = r1.state.sessions.cache.get(&a_hash).expect("A is in replica 1's cache");
    assert!(r1.state.sessions.cache.get(&b_hash).is_none(), "B must not be in replica 1's cache");
    assert!(a_cached.loaded_at() > 0);
    // Activity written before the outage, so that what arrives later is provably the outage's.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(redis.command(&["HGET", &session_key(&a), "ip"]), BEFORE_IP, "activity is flushed while Redis is up");

    redis.kill();
    let killed_at = clock.now();
    // The grace period runs from the start of the outage: the replica's first failed store
    // call, which B's traffic makes within moments of the kill.
    let grace_end = killed_at + GRACE;
    const SLACK: Millis = 700; // timeout (500 ms) + scheduling: when exactly the first call failed

    // Steady traffic through replica 1 until well past A's grace period: A and B concurrently.
    let until = grace_end + 2_000;
    let traffic = |who: &'static str, cookie: String| {
        let r1 = &r1;
        let clock = clock.clone();
        async move {
            let mut answers = Vec::new();
            while clock.now() < until {
                answers.push(browse(r1, who, &cookie, OUTAGE_IP).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        }
    };
    let (a_answers, b_answers) = tokio::join!(traffic("A", a.clone()), traffic("B", b.clone()));

    // A: inside the grace period every request works; after it, 503 (the grace is bounded);
    // never a sign-out, never slow.
    let mut a_ok_in_outage = 0;
    let mut a_503_after_grace = 0;
    for ans in &a_answers {
        assert!(!ans.signs_out(), "the outage signed A out: {ans:?}");
        assert!(ans.took < ANSWER_LIMIT, "A answered after {:?}: {ans:?}", ans.took);
        if ans.done < grace_end {
            assert_eq!(ans.status, 200, "A is cached and inside the grace period: {ans:?}");
            a_ok_in_outage += 1;
        } else if ans.sent > grace_end + SLACK {
            assert_retryable_503(ans);
            a_503_after_grace += 1;
        } else {
            assert!(ans.status == 200 || ans.status == 503, "{ans:?}");
        }
    }
    assert!(a_ok_in_outage >= 3, "too little traffic inside the grace period: {a_answers:?}");
    assert!(a_503_after_grace >= 2, "too little traffic after the grace period: {a_answers:?}");
    // B: never in replica 1's cache, so every request needs Redis: 503 + Retry-After throughout.
    assert!(b_answers.len() >= 5, "{b_answers:?}");
    for ans in &b_answers {
        assert_retryable_503(ans);
    }
    let last_ok = a_answers.iter().rev().find(|a| a.status == 200).expect("A worked during the outage");
    eprintln!(
        "outage: A {} answers ({} ok, {} 503 after grace), B {} answers, slowest {:?}",
        a_answers.len(),
        a_ok_in_outage,
        a_503_after_grace,
        b_answers.len(),
        a_answers.iter().chain(&b_answers).map(|a| a.took).max().unwrap_or_default()
    );

    redis.restart();
    let restarted = Instant::now();

    // The activity buffered during the outage arrives by itself (no request for A is sent
    // meanwhile, so nothing newer can overwrite it): last-active = A's last answered request
    // during the outage, IP = the one that request came from.
    let key = session_key(&a);
    loop {
        let la: Millis = redis.command(&["HGET", &key, "la"]).parse().unwrap_or(0);
        let ip = redis.command(&["HGET", &key, "ip"]);
        if la >= last_ok.sent && ip == OUTAGE_IP {
            assert!(la <= last_ok.done, "last-active {la} is later than A's last request ({last_ok:?})");
            break;
        }
        assert!(
            restarted.elapsed() < RECOVERY_LIMIT,
            "activity buffered during the outage did not reach Redis: la = {la}, ip = {ip:?}, expected the request {last_ok:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both sessions work again by themselves; nobody is signed out on the way.
    for (who, cookie) in [("B", &b), ("A", &a)] {
        loop {
            let ans = browse(&r1, who, cookie, OUTAGE_IP).await;
            assert!(!ans.signs_out(), "{who} signed out after Redis came back: {ans:?}");
            if ans.status == 200 {
                break;
            }
            assert_retryable_503(&ans);
            assert!(restarted.elapsed() < RECOVERY_LIMIT, "{who} did not recover within {RECOVERY_LIMIT:?}: {ans:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    // Revocation notices flow again, and both sessions are still listed on both replicas.
    subscribed(&r1, RECOVERY_LIMIT).await;
    subscribed(&r2, RECOVERY_LIMIT).await;
    // Replica 2 had no traffic during the outage; its first calls may still find the dead
    // connection (redis-rs reconnects on use), so it gets the same bounded poll.
    for (name, gw) in [("replica 1", &r1), ("replica 2", &r2)] {
        let mut unavailable = 0;
        loop {
            let (status, v) = sessions(gw, &a).await;
            if status == 200 {
                assert_eq!(v["sessions"].as_array().unwrap().len(), 2, "{v}");
                break;
            }
            assert_eq!(status, 503, "{v}");
            unavailable += 1;
            assert!(restarted.elapsed() < RECOVERY_LIMIT, "{name}'s sessions list did not come back: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{name}: sessions list answered 503 {unavailable} time(s) after Redis was back");
    }
}

/// Kill replica 2's revocation subscription at the same moment replica 1 revokes a session
/// replica 2 has cached. Whichever wins, replica 2 rejects the session shortly after the
/// revoke returns: either the notice arrives, or the disconnect makes it re-check with Redis
/// (and clear its cache when it resubscribes).
#[tokio::test(flavor = "multi_thread")]
async fn a_pubsub_disconnect_during_a_revoke_cannot_leave_the_session_usable() {
    const TRIALS: u64 = 12;
    const BOUND: Duration = Duration::from_secs(2);

    let redis = RedisServer::start();
    let clock = ManualClock::starting_now();
    let _real_time = RealTime::start(&clock);
    let r1 = replica(&redis, &clock, "5s");
    let r2 = replica(&redis, &clock, "5s");
    subscribed(&r1, RECOVERY_LIMIT).await;
    let mine = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;

    let mut killed_total = 0;
    for trial in 0..TRIALS {
        let s = sign_in(&r1, DEMO_EMAIL, FIREFOX_WIN).await;
        let id = public_id(&r1, &s).await;
        // Let the previous trial's disconnect be noticed, then wait for the resubscription
        // (which clears the cache) before caching S on replica 2.
        tokio::time::sleep(Duration::from_millis(300)).await;
        subscribed(&r2, RECOVERY_LIMIT).await;
        assert_eq!(browse(&r2, "S", &s, "127.0.0.1").await.status, 200);
        assert!(r2.state.sessions.cache.get(&token(&s).hash()).is_some(), "S is cached on replica 2");
        assert!(r2.state.sessions.cache.is_trusted(), "replica 2 trusts its cache before the race");

        // The race: the kill lands a little before, during, or after the revoke's DEL + PUBLISH.
        let port = redis.port;
        let kill_delay = Duration::from_micros(trial * 500);
        let kill = tokio::task::spawn_blocking(move || {
            std::thread::sleep(kill_delay);
            resp_command(port, &["CLIENT", "KILL", "TYPE", "pubsub"]).expect("CLIENT KILL")
        });
        let revoke = client().delete(r1.url(&format!("/.dalea/api/sessions/{id}"))).header("cookie", &mine).send();
        let (killed, revoked) = tokio::join!(kill, revoke);
        let returned = Instant::now();
        let revoked = revoked.expect("revoke request");
        assert_eq!(revoked.status(), 204, "trial {trial}: the revoke itself works");
        let killed = killed.expect("kill task");
        killed_total += killed.trim_start_matches(':').parse::<u32>().unwrap_or(0);

        // Never a 200 once the bound has passed; rejected (not an error) as soon as it is seen.
        let mut seen_200 = 0;
        loop {
            let ans = browse(&r2, "S", &s, "127.0.0.1").await;
            match ans.status {
                401 | 302 | 303 => break,
                200 => {
                    seen_200 += 1;
                    assert!(
                        returned.elapsed() < BOUND,
                        "trial {trial}: replica 2 still accepts S {:?} after the revoke returned",
                        returned.elapsed()
                    );
                }
                _ => panic!("trial {trial}: unexpected answer for the revoked session: {ans:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // And it stays rejected, including across replica 2's resubscription.
        for _ in 0..3 {
            let ans = browse(&r2, "S", &s, "127.0.0.1").await;
            assert!(matches!(ans.status, 401 | 302 | 303), "trial {trial}: a revoked session came back: {ans:?}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        eprintln!("trial {trial}: kill after {kill_delay:?}, {seen_200} requests still answered 200 after the revoke returned");
    }
    // The race was real: the kills hit live subscriptions (both replicas', each trial).
    assert!(killed_total >= TRIALS as u32, "CLIENT KILL TYPE pubsub killed only {killed_total} connections");
}

/// A revoke that cannot reach Redis answers 503 (not a pretend 204), and the session it was
/// meant to revoke is still there, and still listed, once Redis is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_while_redis_is_down_is_an_error_and_revokes_nothing() {
    let mut redis = durable_redis();
    let clock = ManualClock::starting_now();
    let _real_time = RealTime::start(&clock);
    let gw = replica(&redis, &clock, "30s");
    subscribed(&gw, RECOVERY_LIMIT).await;
    let mine = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let other = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let other_id = public_id(&gw, &other).await;

    redis.kill();
    // The caller is still signed in (cached, inside the grace period), so the answer below is
    // the revoke's own, not the authentication's.
    assert_eq!(browse(&gw, "mine", &mine, "127.0.0.1").await.status, 200);
    let started = Instant::now();
    let resp = client()
        .delete(gw.url(&format!("/.dalea/api/sessions/{other_id}")))
        .header("cookie", &mine)
        .send()
        .await
        .expect("revoke request");
    let took = started.elapsed();
    assert_eq!(resp.status(), 503, "a revoke that cannot reach Redis must not pretend to succeed");
    assert!(resp.headers().get("retry-after").is_some());
    assert!(set_cookies(&resp).is_empty(), "{:?}", set_cookies(&resp));
    assert!(took < ANSWER_LIMIT, "the revoke answered after {took:?}");
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["error"], "store_unavailable", "{body}");
    // The revoke touched nothing locally either: the session still works from the cache.
    assert_eq!(browse(&gw, "other", &other, "127.0.0.1").await.status, 200);

    redis.restart();
    let restarted = Instant::now();
    loop {
        let (status, v) = sessions(&gw, &mine).await;
        if status == 200 {
            let ids: Vec<&str> = v["sessions"].as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
            assert!(ids.contains(&other_id.as_str()), "the session was revoked after all: {v}");
            assert_eq!(ids.len(), 2, "{v}");
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(restarted.elapsed() < RECOVERY_LIMIT, "the sessions list did not come back: {status} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ans = browse(&gw, "other", &other, "127.0.0.1").await;
    assert_eq!(ans.status, 200, "{ans:?}");
    // A revoke once Redis answers works as usual.
    let resp = client()
        .delete(gw.url(&format!("/.dalea/api/sessions/{other_id}")))
        .header("cookie", &mine)
        .send()
        .await
        .expect("revoke request");
    assert_eq!(resp.status(), 204);
    let ans = browse(&gw, "other", &other, "127.0.0.1").await;
    assert!(matches!(ans.status, 302 | 303 | 401), "{ans:?}");
}

/// The real Redis store, with `get` optionally held back after it has read from Redis: a slow
/// reply, as when Redis or the network is struggling (exactly when subscriptions drop).
struct SlowGets {
    inner: Arc<dyn SessionStore>,
    /// The session whose reads are held back, and for how long.
    slow: Arc<std::sync::Mutex<Option<(TokenHash, Duration)>>>,
    /// Set once a held-back read has its answer from Redis.
    read_done: Arc<AtomicBool>,
}

#[async_trait]
impl SessionStore for SlowGets {
    async fn insert(&self, s: &Session) -> Result<(), StoreError> {
        self.inner.insert(s).await
    }
    async fn get(&self, h: &TokenHash) -> Result<Option<Session>, StoreError> {
        let r = self.inner.get(h).await;
        let delay = self.slow.lock().unwrap().filter(|(slow, _)| slow == h).map(|(_, d)| d);
        if let Some(d) = delay {
            self.read_done.store(true, Ordering::SeqCst);
            tokio::time::sleep(d).await;
        }
        r
    }
    async fn list_for_user(&self, u: &str) -> Result<Vec<Session>, StoreError> {
        self.inner.list_for_user(u).await
    }
    async fn find_for_user(&self, u: &str, id: &PublicId) -> Result<Option<Session>, StoreError> {
        self.inner.find_for_user(u, id).await
    }
    async fn rotate(&self, old: &TokenHash, new: &Session) -> Result<bool, StoreError> {
        self.inner.rotate(old, new).await
    }
    async fn update(&self, s: &Session) -> Result<bool, StoreError> {
        self.inner.update(s).await
    }
    async fn remove(&self, h: &TokenHash) -> Result<bool, StoreError> {
        self.inner.remove(h).await
    }
    async fn record_activity(&self, b: &[Activity]) -> Result<(), StoreError> {
        self.inner.record_activity(b).await
    }
    async fn remove_expired(&self, now: Millis, idle: Millis) -> Result<usize, StoreError> {
        self.inner.remove_expired(now, idle).await
    }
}

/// A read of S that started before S was revoked, but whose answer arrives after the
/// revocation notice was handled (case 1) or after the subscription dropped and came back,
/// clearing the cache (case 2), must not put S back into the trusted cache: S is rejected on
/// replica 2 shortly after the revoke returned, not served from the cache for `cache_ttl`.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_raced_a_revoke_does_not_put_the_session_back_in_the_cache() {
    const BOUND: Duration = Duration::from_secs(2);

    let redis = RedisServer::start();
    let clock = ManualClock::starting_now();
    let _real_time = RealTime::start(&clock);
    let r1 = replica(&redis, &clock, "5s");
    let slow = Arc::new(std::sync::Mutex::new(None));
    let read_done = Arc::new(AtomicBool::new(false));
    let (s2, d2) = (slow.clone(), read_done.clone());
    let r2 = Setup::default()
        .clock(clock.clone())
        .toml(&format!("[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"{STORE_TIMEOUT}\"", redis.url()))
        .wrap_store(move |inner| Arc::new(SlowGets { inner, slow: s2, read_done: d2 }) as Arc<dyn SessionStore>)
        .start();
    subscribed(&r1, RECOVERY_LIMIT).await;
    subscribed(&r2, RECOVERY_LIMIT).await;
    let mine = sign_in(&r1, DEMO_EMAIL, CHROME_MAC).await;

    for (case, drop_subscription) in [("notice during the read", false), ("resubscription during the read", true)] {
        let s = sign_in(&r1, DEMO_EMAIL, FIREFOX_WIN).await;
        let id = public_id(&r1, &s).await;
        subscribed(&r2, RECOVERY_LIMIT).await;
        if drop_subscription {
            resp_command(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]).expect("CLIENT KILL");
            while r2.state.sessions.cache.is_trusted() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // Replica 2 has never seen S: this request reads it from Redis, and the answer is late.
        read_done.store(false, Ordering::SeqCst);
        *slow.lock().unwrap() = Some((token(&s).hash(), Duration::from_millis(1500)));
        let in_flight = {
            let (url, cookie) = (r2.url("/app"), s.clone());
            tokio::spawn(async move { client().get(url).header("cookie", cookie).send().await.map(|r| r.status()) })
        };
        while !read_done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let resp = client()
            .delete(r1.url(&format!("/.dalea/api/sessions/{id}")))
            .header("cookie", &mine)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{case}");
        let returned = Instant::now();
        if drop_subscription {
            // The notice was missed; replica 2 resubscribes (clearing its cache) before the read returns.
            subscribed(&r2, RECOVERY_LIMIT).await;
        }
        // The request that was already reading may answer either way: it started before the revoke.
        let _ = in_flight.await.unwrap();
        *slow.lock().unwrap() = None;
        loop {
            let ans = browse(&r2, "S", &s, "127.0.0.1").await;
            if matches!(ans.status, 401 | 302 | 303) {
                break;
            }
            assert_eq!(ans.status, 200, "{case}: {ans:?}");
            assert!(
                returned.elapsed() < BOUND,
                "{case}: replica 2 still accepts S {:?} after the revoke returned (served from its cache)",
                returned.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
