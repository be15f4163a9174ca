//! Cost of what the sessions page works out per session row, and of setting it up:
//! - `describe_device/*`: the device label ("Chrome on macOS") from a User-Agent alone, for
//!   realistic browsers, a bot, curl, an empty, a garbage and an oversized UA;
//! - `describe_device_hinted/*`: the same with the client hints Chromium browsers send
//!   (`Sec-CH-UA-Platform`, `-Platform-Version`, `-Mobile`), as stored with the session;
//! - `client_hints_from_headers`: reading those hints from request headers (done at sign-in);
//! - `ua_rules_cold/*`: the one-time compile of the User-Agent rules and the first label after
//!   it, each measured in a fresh process (this binary re-run as a child) since the compiled
//!   rules are shared by the whole process once built;
//! - `geoip_fixture/*`: `locate` on a tiny City database written by `tests/support/mmdb.rs`:
//!   IPv4 and IPv6 addresses with a record, a public address without one, a private address;
//! - `geoip_real/*`: the same addresses on a real-format database, when one is there:
//!   `$DALEA_GEOIP_DB`, else `GeoLite2-City-Test.mmdb` under `$DALEA_SHARED_DATA/geoip`
//!   (default `../shared/data` next to the crate); skipped otherwise.
//!
//! Client-IP resolution from `X-Forwarded-For` is measured in `hot_path.rs`
//! (`client_ip_trusted_chain`).
//!
//! Run: `cargo bench --bench client_info` (numbers are machine-specific; compare runs made side
//! by side on one machine, never across machines).

use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dalea_gateway::client_info::{ClientHints, ClientInfoResolver};
use http::{HeaderMap, HeaderValue};

#[path = "../tests/support/mmdb.rs"]
mod mmdb;

use mmdb::{City, MmdbWriter};

const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const CHROME_ANDROID: &str =
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const CURL: &str = "curl/8.5.0";
const GARBAGE: &str = "()();;// %%%% \u{1F600} not a user agent \u{0}\u{7f}";

/// Set in the child process the cold benchmarks start; names what the child measures.
const CHILD_ENV: &str = "DALEA_BENCH_CLIENT_INFO_COLD";

fn hints(platform: &str, version: &str, mobile: bool) -> ClientHints {
    ClientHints {
        platform: Some(platform.to_owned()),
        platform_version: Some(version.to_owned()),
        mobile: Some(mobile),
        ..ClientHints::default()
    }
}

/// In the child process: compile the rules (and label one UA) from cold, print the nanoseconds
/// the measured step took and exit. Does nothing in the parent.
fn cold_child() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start = Instant::now();
    let resolver = ClientInfoResolver::new(Vec::new(), None).expect("resolver");
    let build = start.elapsed();
    let start = Instant::now();
    let device = resolver.describe_device(black_box(CHROME_MAC), &ClientHints::default());
    let first = start.elapsed();
    assert_eq!(device.device, "Chrome on macOS");
    let took = match what.as_str() {
        "rules" => build,
        "first_describe" => first,
        other => panic!("unknown cold measurement {other:?}"),
    };
    println!("{}", took.as_nanos());
    std::process::exit(0);
}

/// Total time of `iters` cold measurements of `what`, each in a fresh child process.
fn cold_in_children(what: &str, iters: u64) -> Duration {
    let exe = std::env::current_exe().expect("this bench binary");
    (0..iters)
        .map(|_| {
            let out = Command::new(&exe).env(CHILD_ENV, what).stderr(Stdio::inherit()).output().expect("child");
            assert!(out.status.success(), "cold child for {what} failed: {}", out.status);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let nanos: u64 = stdout.lines().last().and_then(|l| l.trim().parse().ok()).expect("child's nanoseconds");
            Duration::from_nanos(nanos)
        })
        .sum()
}

fn user_agents(c: &mut Criterion) {
    cold_child();

    let mut cold = c.benchmark_group("ua_rules_cold");
    cold.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    cold.bench_function("compile_rules", |b| b.iter_custom(|iters| cold_in_children("rules", iters)));
    cold.bench_function("first_describe", |b| b.iter_custom(|iters| cold_in_children("first_describe", iters)));
    cold.finish();

    let resolver = ClientInfoResolver::new(Vec::new(), None).expect("resolver");
    let long = format!("{CHROME_MAC} {}", "\u{e9}".repeat(5000));
    let plain: [(&str, &str, &str); 10] = [
        ("chrome_macos", CHROME_MAC, "Chrome on macOS"),
        ("firefox_windows", FIREFOX_WIN, "Firefox on Windows"),
        ("safari_ios", SAFARI_IPHONE, "Safari on iOS 18"),
        ("chrome_android", CHROME_ANDROID, "Chrome on Android"),
        ("edge_windows", EDGE_WIN, "Edge on Windows"),
        ("googlebot", GOOGLEBOT, "Googlebot on Unknown OS"),
        ("curl", CURL, "curl on Unknown OS"),
        ("empty", "", "Unknown browser on Unknown OS"),
        ("garbage", GARBAGE, "Unknown browser on Unknown OS"),
        ("oversized_10k", &long, "Chrome on macOS"),
    ];
    let mut group = c.benchmark_group("describe_device");
    let none = ClientHints::default();
    for (name, ua, label) in plain {
        group.bench_function(name, |b| {
            b.iter(|| {
                let d = resolver.describe_device(black_box(ua), black_box(&none));
                assert_eq!(d.device, label);
            })
        });
    }
    group.finish();

    // Only Chromium-based browsers send client hints.
    let hinted = [
        ("chrome_macos", CHROME_MAC, hints("macOS", "14.6.1", false), "Chrome on macOS 14"),
        ("chrome_android", CHROME_ANDROID, hints("Android", "14.0.0", true), "Chrome on Android 14"),
        ("edge_windows", EDGE_WIN, hints("Windows", "19.0.0", false), "Edge on Windows 11"),
    ];
    let mut group = c.benchmark_group("describe_device_hinted");
    for (name, ua, hints, label) in &hinted {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let d = resolver.describe_device(black_box(ua), black_box(hints));
                assert_eq!(d.device, *label);
            })
        });
    }
    group.finish();

    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("user-agent", CHROME_MAC),
        ("sec-ch-ua", "\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"macOS\""),
        ("sec-ch-ua-platform-version", "\"14.6.1\""),
        ("accept-language", "en-GB,en;q=0.9"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    c.bench_function("client_hints_from_headers", |b| {
        b.iter(|| {
            let h = ClientHints::from_headers(black_box(&headers));
            assert_eq!((h.platform_version.as_deref(), h.mobile), (Some("14.6.1"), Some(false)));
        })
    });
}

/// An address to locate and the country code the MaxMind test databases (and the fixture) give.
struct Probe {
    name: &'static str,
    ip: IpAddr,
    country_code: Option<&'static str>,
}

fn probes() -> [Probe; 4] {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    [
        Probe { name: "ipv4_city", ip: ip("81.2.69.160"), country_code: Some("GB") },
        Probe { name: "ipv6_city", ip: ip("2001:480:10::1"), country_code: Some("US") },
        Probe { name: "ipv4_no_record", ip: ip("8.8.8.8"), country_code: None },
        Probe { name: "private", ip: ip("10.1.2.3"), country_code: None },
    ]
}

/// Benchmarks `locate` for every probe. With `known_answers` the answers must be the test
/// databases'; otherwise (an operator's database) whatever the database says is checked for.
fn bench_locate(c: &mut Criterion, group: &str, resolver: &ClientInfoResolver, known_answers: bool) {
    let mut group = c.benchmark_group(group);
    for probe in probes() {
        let found = resolver.locate(probe.ip).and_then(|l| l.country_code);
        if known_answers {
            assert_eq!(found.as_deref(), probe.country_code, "{}", probe.ip);
        }
        let want = found.as_deref();
        group.bench_function(probe.name, |b| {
            b.iter(|| {
                let location = resolver.locate(black_box(probe.ip));
                assert_eq!(location.as_ref().and_then(|l| l.country_code.as_deref()), want);
            })
        });
    }
    group.finish();
}

/// `$DALEA_GEOIP_DB` (any database; answers not checked), else MaxMind's GeoLite2 test database
/// under the shared data directory (answers checked), if it exists.
fn real_database() -> Option<(PathBuf, bool)> {
    if let Some(path) = std::env::var_os("DALEA_GEOIP_DB").filter(|p| !p.is_empty()) {
        return Some((path.into(), false));
    }
    let shared = match std::env::var_os("DALEA_SHARED_DATA") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    let path = shared.join("geoip/GeoLite2-City-Test.mmdb");
    path.is_file().then_some((path, true))
}

fn geoip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("city.mmdb");
    let london = City { city_en: Some("London"), country_en: Some("United Kingdom"), iso: Some("GB") };
    MmdbWriter::new("GeoIP2-City")
        .insert("81.2.69.0/24".parse().expect("net"), london)
        .insert(
            "81.2.0.0/16".parse().expect("net"),
            City { country_en: Some("United Kingdom"), iso: Some("GB"), ..City::default() },
        )
        .insert(
            "89.160.20.128/25".parse().expect("net"),
            City { city_en: Some("Linköping"), country_en: Some("Sweden"), iso: Some("SE") },
        )
        .insert(
            "2001:480:10::/48".parse().expect("net"),
            City { city_en: Some("San Diego"), country_en: Some("United States"), iso: Some("US") },
        )
        .insert(
            "2a02:ff40::/29".parse().expect("net"),
            City { country_en: Some("Isle of Man"), iso: Some("IM"), ..City::default() },
        )
        // Private space with a record: still never located.
        .insert("10.0.0.0/8".parse().expect("net"), london)
        .write(&path)
        .expect("fixture database");
    let fixture = ClientInfoResolver::new(Vec::new(), Some(&path)).expect("fixture resolver");
    bench_locate(c, "geoip_fixture", &fixture, true);

    match real_database() {
        Some((path, known_answers)) => {
            let real = ClientInfoResolver::new(Vec::new(), Some(&path)).expect("GeoIP database");
            bench_locate(c, "geoip_real", &real, known_answers);
        }
        None => eprintln!("SKIPPED geoip_real: set DALEA_GEOIP_DB or provide ../shared/data/geoip"),
    }
}

criterion_group!(benches, user_agents, geoip);
criterion_main!(benches);
