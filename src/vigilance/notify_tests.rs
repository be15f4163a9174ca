//! The webhook against a real HTTP receiver on a loopback port: signature, payload, retries.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::WebhookSecret;

const SECRET: &[u8] = b"an-HMAC-key-for-tests-0123456789";

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Close the connection without answering (a network error for the client).
    Hangup,
    /// Answer 200, but only after this long (longer than the client's timeout).
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    /// Lower-case names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

/// A webhook receiver: answers each request with the next scripted reply (204 once the script
/// runs out) and keeps what it received.
struct Hook {
    addr: SocketAddr,
    received: Arc<StdMutex<Vec<Received>>>,
}

impl Hook {
    async fn start(script: &[Reply]) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(StdMutex::new(Vec::new()));
        let script = Arc::new(StdMutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let seen = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, script) = (seen.clone(), script.clone());
                tokio::spawn(async move { serve(stream, seen, script).await });
            }
        });
        Hook { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/dalea?token=T0KEN", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until `n` requests arrived (panics after 10 s).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "only {} of {n} requests arrived", got.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<StdMutex<Vec<Received>>>, script: Arc<StdMutex<VecDeque<Reply>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, method, path, headers) = loop {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut parsed = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut parsed);
        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
            let headers: HashMap<String, String> = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            break (len, req.method.unwrap_or("").to_string(), req.path.unwrap_or("").to_string(), headers);
        }
    };
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_len + length {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_len..head_len + length].to_vec();
    let reply = script.lock().ok().and_then(|mut s| s.pop_front()).unwrap_or(Reply::Status(204));
    if let Ok(mut seen) = seen.lock() {
        seen.push(Received { method, path, headers, body, at: Instant::now() });
    }
    let status = match reply {
        Reply::Hangup => return,
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            200
        }
        Reply::Status(s) => s,
    };
    let answer = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn config(url: String, max_attempts: u32) -> NotifyConfig {
    NotifyConfig {
        webhook: url,
        secret: WebhookSecret::new(SECRET),
        timeout: Duration::from_millis(500),
        max_attempts,
        retry_backoff: Duration::from_millis(20),
    }
}

fn notice(kind: NoticeKind) -> Notice {
    Notice {
        id: "0123456789abcdef0123456789abcdef".into(),
        kind,
        reason: "First sign-in from Firefox on Windows".into(),
        user_id: "amy".into(),
        email: Some("amy@example.com".into()),
        session_id: "sess-public-id".into(),
        device: "Firefox on Windows".into(),
        ip: Some("81.2.69.160".parse().expect("ip")),
        location: Some("London, United Kingdom".into()),
        at: 1_700_000_000_000,
    }
}

/// A running notifier and the sender that stops it.
fn started(notifier: &Notifier) -> tokio::sync::watch::Sender<bool> {
    let (stop, watch) = tokio::sync::watch::channel(false);
    let n = notifier.clone();
    tokio::spawn(async move { n.run(watch).await });
    stop
}

/// Waits until the notifier has finished with `n` notices (delivered or failed).
async fn settled(notifier: &Notifier, n: u64) -> NotifyCounts {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = notifier.counts();
        if c.delivered + c.failed >= n {
            return c;
        }
        assert!(Instant::now() < deadline, "not settled: {c:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn signed_correctly(r: &Received) -> bool {
    let ts = r.headers.get("x-dalea-timestamp").map(String::as_str).unwrap_or("");
    let sig = r.headers.get("x-dalea-signature").map(String::as_str).unwrap_or("");
    verify(SECRET, ts, &r.body, sig)
}

#[tokio::test]
async fn a_notice_is_posted_signed_with_every_field() {
    let hook = Hook::start(&[]).await;
    let notifier = Notifier::new(config(hook.url(), 5)).expect("notifier");
    let _stop = started(&notifier);
    assert!(notifier.notify(notice(NoticeKind::NewDevice)));
    let got = hook.wait_for(1).await;
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hooks/dalea?token=T0KEN"));
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!(r.headers.get("x-dalea-event").map(String::as_str), Some("new_device"));
    assert_eq!(r.headers.get("x-dalea-delivery").map(String::as_str), Some("0123456789abcdef0123456789abcdef"));
    assert!(signed_correctly(r), "{:?}", r.headers);
    let ts: u64 = r.headers["x-dalea-timestamp"].parse().expect("unix seconds");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    assert!(now.abs_diff(ts) < 60, "{ts} vs {now}");
    // The signature binds the timestamp and every byte of the body, under this secret only.
    let sig = &r.headers["x-dalea-signature"];
    assert!(!verify(SECRET, &(ts + 1).to_string(), &r.body, sig));
    let mut tampered = r.body.clone();
    tampered[5] ^= 1;
    assert!(!verify(SECRET, &r.headers["x-dalea-timestamp"], &tampered, sig));
    assert!(!verify(b"another-secret-entirely-0123456", &r.headers["x-dalea-timestamp"], &r.body, sig));

    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({
            "id": "0123456789abcdef0123456789abcdef",
            "event": "new_device",
            "reason": "First sign-in from Firefox on Windows",
            "user": {"id": "amy", "email": "amy@example.com"},
            "session": {
                "id": "sess-public-id",
                "device": "Firefox on Windows",
                "ip": "81.2.69.160",
                "location": "London, United Kingdom"
            },
            "at": "2023-11-14T22:13:20Z"
        })
    );
    let c = settled(&notifier, 1).await;
    assert_eq!((c.queued, c.delivered, c.failed, c.retries, c.dropped), (1, 1, 0, 0, 0));
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_waits_until_accepted() {
    let hook = Hook::start(&[Reply::Status(500), Reply::Status(503), Reply::Status(200)]).await;
    let notifier = Notifier::new(config(hook.url(), 5)).expect("notifier");
    let _stop = started(&notifier);
    notifier.notify(notice(NoticeKind::UnusualLocation));
    let got = hook.wait_for(3).await;
    let c = settled(&notifier, 1).await;
    assert_eq!((c.delivered, c.failed, c.retries), (1, 0, 2));
    for r in &got {
        assert!(signed_correctly(r), "every attempt is signed afresh");
        assert_eq!(r.headers["x-dalea-delivery"], got[0].headers["x-dalea-delivery"], "one delivery id");
        assert_eq!(r.body, got[0].body, "the same notice");
        assert_eq!(r.headers["x-dalea-event"], "unusual_location");
    }
    // 20 ms, then 40 ms.
    assert!(got[1].at - got[0].at >= Duration::from_millis(20));
    assert!(got[2].at - got[1].at >= Duration::from_millis(40));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.received().len(), 3, "nothing after the success");
}

#[tokio::test]
async fn client_errors_and_redirects_are_not_retried() {
    for status in [400, 401, 404, 301] {
        let hook = Hook::start(&[Reply::Status(status)]).await;
        let notifier = Notifier::new(config(hook.url(), 5)).expect("notifier");
        let _stop = started(&notifier);
        notifier.notify(notice(NoticeKind::NewDevice));
        hook.wait_for(1).await;
        let c = settled(&notifier, 1).await;
        assert_eq!((c.delivered, c.failed, c.retries), (0, 1, 0), "{status}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(hook.received().len(), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn rate_limits_timeouts_and_dropped_connections_are_retried() {
    let script = [Reply::Status(429), Reply::Hangup, Reply::Slow(Duration::from_secs(2)), Reply::Status(408)];
    let hook = Hook::start(&script).await;
    let notifier = Notifier::new(config(hook.url(), 5)).expect("notifier");
    let _stop = started(&notifier);
    notifier.notify(notice(NoticeKind::NewDevice));
    hook.wait_for(5).await;
    let c = settled(&notifier, 1).await;
    assert_eq!((c.delivered, c.failed, c.retries), (1, 0, 4));
}

#[tokio::test]
async fn attempts_are_bounded() {
    let hook = Hook::start(&[Reply::Status(500); 10]).await;
    let notifier = Notifier::new(config(hook.url(), 3)).expect("notifier");
    let _stop = started(&notifier);
    notifier.notify(notice(NoticeKind::NewDevice));
    let c = settled(&notifier, 1).await;
    assert_eq!((c.delivered, c.failed, c.retries), (0, 1, 2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.received().len(), 3);
}

#[tokio::test]
async fn an_unreachable_webhook_never_holds_up_the_caller() {
    // Nothing listens on this port: every attempt fails at once, and notify() never waits.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let notifier = Notifier::new(config(format!("http://127.0.0.1:{port}/"), 2)).expect("notifier");
    let _stop = started(&notifier);
    let start = Instant::now();
    for _ in 0..50 {
        assert!(notifier.notify(notice(NoticeKind::NewDevice)));
    }
    assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
    let c = settled(&notifier, 50).await;
    assert_eq!((c.queued, c.delivered, c.failed, c.retries), (50, 0, 50, 50));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    // No delivery loop: the queue only fills.
    let notifier = Notifier::with_capacity(config("http://127.0.0.1:9/".into(), 1), 2).expect("notifier");
    assert!(notifier.notify(notice(NoticeKind::NewDevice)));
    assert!(notifier.notify(notice(NoticeKind::NewDevice)));
    assert!(!notifier.notify(notice(NoticeKind::UnusualLocation)));
    let c = notifier.counts();
    assert_eq!((c.queued, c.dropped), (2, 1));
}

#[tokio::test]
async fn the_delivery_loop_runs_once_and_stops_on_shutdown() {
    let notifier = Notifier::with_capacity(config("http://127.0.0.1:9/".into(), 1), 8).expect("notifier");
    let (stop, watch) = tokio::sync::watch::channel(false);
    let n = notifier.clone();
    let running = tokio::spawn(async move { n.run(watch).await });
    tokio::time::sleep(Duration::from_millis(50)).await; // the first loop takes the queue
                                                         // A second loop returns at once.
    let (_keep, watch2) = tokio::sync::watch::channel(false);
    tokio::time::timeout(Duration::from_secs(1), notifier.run(watch2)).await.expect("second run returns");
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops").expect("no panic");
    // After shutdown, notices are dropped and counted, never queued forever.
    assert!(!notifier.notify(notice(NoticeKind::NewDevice)));
    assert_eq!(notifier.counts().dropped, 1);
}

#[test]
fn debug_never_shows_the_secret_or_the_webhook_path() {
    let notifier = Notifier::new(config("https://hooks.example.com/T0KEN?sig=abc".into(), 5)).expect("notifier");
    let shown = format!("{notifier:?}");
    assert!(shown.contains("https://hooks.example.com"), "{shown}");
    for hidden in [std::str::from_utf8(SECRET).unwrap_or("?"), "T0KEN", "sig=abc"] {
        assert!(!shown.contains(hidden), "{shown}");
    }
}

#[test]
fn signatures_are_hex_hmac_sha256_of_timestamp_dot_body() {
    // The MAC covers the timestamp, a dot, then the body.
    let sig = signature(b"Jefe", "what do ya want for nothing?", b"");
    let whole = {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").expect("key");
        m.update(b"what do ya want for nothing?.");
        m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(sig, whole);
    assert_eq!(sig.len(), 64);
    assert!(verify(b"Jefe", "what do ya want for nothing?", b"", &format!("sha256={sig}")));
    for bad in ["", "sha256=", "sha256=zz", &sig, "sha1=00", &format!("sha256={}", &sig[..63])] {
        assert!(!verify(b"Jefe", "what do ya want for nothing?", b"", bad), "{bad:?}");
    }
}

#[test]
fn only_new_devices_and_unusual_places_are_notified() {
    assert_eq!(NoticeKind::for_flag(FlagKind::NewDevice), Some(NoticeKind::NewDevice));
    assert_eq!(NoticeKind::for_flag(FlagKind::UnusualLocation), Some(NoticeKind::UnusualLocation));
    assert_eq!(NoticeKind::for_flag(FlagKind::ImpossibleTravel), None);
    assert_eq!(NoticeKind::for_flag(FlagKind::LongLived), None);
}

#[tokio::test]
async fn a_slow_webhook_and_a_down_one_are_told_apart_without_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let down = Notifier::new(config(format!("http://127.0.0.1:{port}/hooks?token=T0KEN"), 1)).expect("notifier");
    let n = notice(NoticeKind::NewDevice);
    let Attempt::Retry(why) = down.attempt(&n, &n.body()).await else { panic!("a closed port is retried") };
    assert!(why.starts_with("could not connect"), "{why}");
    assert!(!why.contains("T0KEN") && !why.contains("/hooks"), "{why}");

    let hook = Hook::start(&[Reply::Slow(Duration::from_secs(2))]).await;
    let slow = Notifier::new(config(hook.url(), 1)).expect("notifier");
    let Attempt::Retry(why) = slow.attempt(&n, &n.body()).await else { panic!("a timeout is retried") };
    assert!(why.starts_with("no answer within the timeout"), "{why}");
    assert!(!why.contains("T0KEN") && !why.contains("/hooks"), "{why}");
}

#[tokio::test]
async fn notices_lost_at_shutdown_are_counted_even_when_every_slot_is_stuck() {
    // The webhook hangs: every delivery slot is taken, more notices wait in the queue.
    let hook = Hook::start(&[Reply::Slow(Duration::from_secs(30)); 32]).await;
    let mut cfg = config(hook.url(), 3);
    cfg.timeout = Duration::from_secs(20);
    let notifier = Notifier::new(cfg).expect("notifier");
    let (stop, watch) = tokio::sync::watch::channel(false);
    let n = notifier.clone();
    let running = tokio::spawn(async move { n.run(watch).await });
    for _ in 0..(MAX_IN_FLIGHT + 4) {
        assert!(notifier.notify(notice(NoticeKind::NewDevice)));
    }
    hook.wait_for(MAX_IN_FLIGHT).await;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops despite the stuck slots")
        .expect("no panic");
    let c = notifier.counts();
    assert_eq!((c.delivered, c.failed), (0, 0));
    assert_eq!(c.dropped, (MAX_IN_FLIGHT + 4) as u64, "every notice not delivered is counted: {c:?}");
}
