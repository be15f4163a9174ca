//! Per-request cost of the gateway's hot path, step by step and whole:
//! cookie parse → token hash → cache hit → liveness → decision, plus client-IP resolution and
//! the device label the sessions page computes; and the decision with the metrics the proxy
//! records for it (`decision_with_metrics`).
//!
//! Run: `cargo bench --bench hot_path` (numbers are machine-specific; compare runs made side by
//! side on one machine, never across machines).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use dalea_gateway::client_info::{ClientHints, ClientInfoResolver};
use dalea_gateway::clock::SystemClock;
use dalea_gateway::config::{Access, Config, Overrides};
use dalea_gateway::proxy::authenticate::{decide, Decision};
use dalea_gateway::session::cookie::CookieJar;
use dalea_gateway::session::{NewSession, SignInMethod, Token};
use dalea_gateway::state::AppState;
use pingora::http::RequestHeader;

const UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$II00VqDU3gUAWcBe4VuR5g$4k5so/kEu4nZSUQRaTvKME1UHS1AyiQFOQGI1Ah1UMM";

fn state(dir: &std::path::Path) -> Arc<AppState> {
    std::fs::write(
        dir.join("users.toml"),
        format!("[[users]]\nid = \"demo\"\nemail = \"demo@example.com\"\npassword_hash = \"{HASH}\"\n"),
    )
    .expect("users file");
    let text = "[users]\nfile = \"users.toml\"\n[[upstreams]]\nname = \"a\"\naddress = \"127.0.0.1:9\"\n[[routes]]\nupstream = \"a\"\n";
    let overrides = Overrides { data_dir: Some(dir.join("data")), ..Overrides::default() };
    let config = Config::from_toml_str(text, dir, &[], &overrides).expect("config");
    AppState::build(config, Arc::new(SystemClock), None).expect("state")
}

fn hot_path(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let new = NewSession {
        user_id: "demo".into(),
        method: SignInMethod::Password,
        remember_me: true,
        ip: None,
        user_agent: UA.into(),
        client_hints: ClientHints::default(),
        reauthenticated: false,
        passkey: None,
    };
    let (_, token) = rt.block_on(state.sessions.sign_in(new)).expect("sign in");
    let cookie = format!("_ga=GA1.1.123; theme=dark; __Host-dalea_session={}; lang=en", token.as_str());
    let jar = CookieJar::new("dalea_session", true);
    let mut req = RequestHeader::build("GET", b"/app/dashboard", None).expect("request");
    req.insert_header("cookie", cookie.as_str()).expect("cookie");
    req.insert_header("user-agent", UA).expect("ua");

    c.bench_function("cookie_parse", |b| {
        b.iter(|| {
            let tokens = jar.session_tokens(black_box([cookie.as_bytes()]).into_iter());
            assert_eq!(tokens.len(), 1);
        })
    });
    c.bench_function("token_hash", |b| b.iter(|| black_box(&token).hash()));
    let hash = token.hash();
    c.bench_function("cache_hit_and_liveness", |b| {
        b.iter(|| {
            let cached = state.sessions.cache.get(black_box(&hash)).expect("cached");
            let now = state.sessions.now();
            assert!(
                cached.session.liveness(cached.last_active(), now, state.sessions.idle_timeout)
                    == dalea_gateway::session::Liveness::Alive
            );
        })
    });
    let route = state.routes.lookup(None, &http::Method::GET, "/").ok().flatten().expect("the session route");
    assert_eq!(route.access, Access::Session);
    c.bench_function("decision_cached_session", |b| {
        b.iter(|| {
            let d = rt.block_on(decide(&state, black_box(&req), None, route));
            assert!(matches!(d, Decision::Allow { identity: Some(_), .. }));
        })
    });

    // What request_filter does per request on top of the decision: time it and count it.
    c.bench_function("decision_with_metrics", |b| {
        b.iter(|| {
            let started = std::time::Instant::now();
            let d = rt.block_on(decide(&state, black_box(&req), None, route));
            state.metrics.auth_check.observe(started.elapsed().as_secs_f64());
            state.metrics.route(route.index).expect("route metrics").decided(d.kind());
            assert!(matches!(d, Decision::Allow { identity: Some(_), .. }));
        })
    });

    let resolver = ClientInfoResolver::new(vec!["10.0.0.0/8".parse().expect("net")], None).expect("resolver");
    let xff = b"203.0.113.9, 10.1.2.3".as_slice();
    c.bench_function("client_ip_trusted_chain", |b| {
        b.iter(|| resolver.client_ip(Some("10.0.0.1".parse().expect("ip")), black_box([xff]).into_iter()))
    });
    let hints = ClientHints {
        platform: Some("macOS".into()),
        platform_version: Some("14.6.1".into()),
        ..ClientHints::default()
    };
    c.bench_function("device_label_ua_and_hints", |b| {
        b.iter(|| {
            let d = resolver.describe_device(black_box(UA), &hints);
            assert_eq!(d.device, "Chrome on macOS 14");
        })
    });
    let _ = Token::generate();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
