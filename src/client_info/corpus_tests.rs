//! Checks against other people's corpora: uap-core's tests for the embedded User-Agent rules
//! (bundled in the `ua-parser` package, always available) and, when the sibling `shared/data` directory is
//! present (`$DALEA_SHARED_DATA`, default `../shared/data`), the newer uap-core corpus and
//! MaxMind's GeoIP test databases. Absent data is reported with "SKIPPED".

use std::path::{Path, PathBuf};

use super::geo_tests::mmdb::{MmdbWriter, Value};
use super::geo_tests::{ip, open, place};
use super::*;

/// `$DALEA_SHARED_DATA`, else `../shared/data` next to the crate.
fn shared_data() -> PathBuf {
    match std::env::var_os("DALEA_SHARED_DATA") {
        Some(dir) if !dir.is_empty() => dir.into(),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// The flat `test_cases:` lists of uap-core's test YAML: `- key: 'value'` items, one scalar
/// per line (single-quoted, double-quoted, plain or empty).
fn yaml_cases(text: &str) -> Vec<Vec<(String, Option<String>)>> {
    let mut cases: Vec<Vec<(String, Option<String>)>> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t == "test_cases:" {
            continue;
        }
        let t = match t.strip_prefix("- ") {
            Some(rest) => {
                cases.push(Vec::new());
                rest
            }
            None => t,
        };
        let (key, value) = t.split_once(':').unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let v = value.trim();
        let value = if v.is_empty() || v == "~" || v == "null" {
            None
        } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            Some(inner.replace("''", "'"))
        } else if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
        } else {
            Some(v.to_owned())
        };
        cases.last_mut().expect("a key before the first item").push((key.trim().to_owned(), value));
    }
    cases
}

fn field<'c>(case: &'c [(String, Option<String>)], key: &str) -> Option<&'c str> {
    case.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref()).filter(|v| !v.is_empty())
}

/// One uap-core test case: which extractor, the UA, and the expected (family, major).
#[derive(PartialEq, Eq, Hash, Debug)]
struct Case {
    os: bool,
    ua: String,
    family: String,
    major: Option<String>,
}

/// `test_ua.yaml` + `test_os.yaml` from `dir`, None when either is missing.
fn corpus(dir: &Path) -> Option<Vec<Case>> {
    let mut cases = Vec::new();
    for (file, os) in [("test_ua.yaml", false), ("test_os.yaml", true)] {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        let parsed = yaml_cases(&text);
        assert!(parsed.len() > 100, "{file} parsed short");
        cases.extend(parsed.iter().map(|c| Case {
            os,
            ua: field(c, "user_agent_string").unwrap_or("").to_owned(),
            family: field(c, "family").unwrap_or("Other").to_owned(),
            major: field(c, "major").map(str::to_owned),
        }));
    }
    Some(cases)
}

/// The cases where uap's raw answer (before our renaming) differs from the expectation.
fn mismatches(cases: &[Case]) -> Vec<&Case> {
    let rules = device::rules().unwrap();
    cases
        .iter()
        .filter(|case| {
            let (ua, os) = rules.raw(&case.ua);
            let (family, major) = match (case.os, ua, os) {
                (false, Some(v), _) => (v.family, v.major),
                (true, _, Some(v)) => (v.os, v.major),
                _ => ("Other".to_owned(), None),
            };
            (family.as_str(), major.as_deref().filter(|m| !m.is_empty()))
                != (case.family.as_str(), case.major.as_deref())
        })
        .collect()
}

/// The tests that ship with the rules we embed (in the `ua-parser` package, found by
/// build.rs) must all pass: this checks the build.rs → JSON → extractor pipeline.
fn bundled_corpus() -> Option<Vec<Case>> {
    let dir = option_env!("DALEA_UAP_TESTS_DIR").filter(|d| !d.is_empty())?;
    corpus(Path::new(dir))
}

#[test]
fn bundled_uap_corpus_passes() {
    let Some(cases) = bundled_corpus() else {
        eprintln!("SKIPPED: the ua-parser package's uap-core tests are not available");
        return;
    };
    let bad = mismatches(&cases);
    assert!(bad.is_empty(), "{} of {} cases differ: {bad:#?}", bad.len(), cases.len());
}

/// The sibling `shared/data` holds a newer uap-core corpus than the rules ua-parser 0.2.2 ships; cases the
/// bundled corpus does not have (with the same expectation) may legitimately fail until a
/// newer regexes.yaml is embedded. Every other case must pass.
#[test]
fn shared_uap_corpus_when_present() {
    let dir = shared_data().join("uap-core");
    let Some(cases) = corpus(&dir) else {
        eprintln!("SKIPPED: uap-core corpus not found under {} (set DALEA_SHARED_DATA)", dir.display());
        return;
    };
    let bad = mismatches(&cases);
    let (newer, unexplained): (Vec<&Case>, Vec<&Case>) = match bundled_corpus() {
        Some(bundled) => {
            let known: std::collections::HashSet<&Case> = bundled.iter().collect();
            bad.into_iter().partition(|c| !known.contains(c))
        }
        None => (bad, Vec::new()),
    };
    eprintln!(
        "uap-core corpus at {}: {} cases, {} pass, {} fail only because they are newer than the embedded rules",
        dir.display(),
        cases.len(),
        cases.len() - newer.len() - unexplained.len(),
        newer.len()
    );
    assert!(unexplained.is_empty(), "{unexplained:#?}");
    assert!(newer.len() * 10 < cases.len(), "more than 10% of the corpus fails: {newer:#?}");
}

fn maxmind_test_db(name: &str) -> Option<PathBuf> {
    let path = shared_data().join("geoip").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} not found (set DALEA_SHARED_DATA)", path.display());
        None
    }
}

/// The lookups listed in geoip/expected-lookups.md.
fn check_expected_lookups(r: &ClientInfoResolver, city_db: bool) {
    assert_eq!(r.locate(ip("81.2.69.160")), place(Some("London"), "United Kingdom", "GB"));
    assert_eq!(r.locate(ip("81.2.69.142")), place(Some("London"), "United Kingdom", "GB"));
    assert_eq!(r.locate(ip("2.125.160.216")), place(Some("Boxford"), "United Kingdom", "GB"));
    assert_eq!(r.locate(ip("89.160.20.128")), place(Some("Linköping"), "Sweden", "SE"));
    assert_eq!(r.locate(ip("175.16.199.0")), place(Some("Changchun"), "China", "CN"));
    assert_eq!(r.locate(ip("67.43.156.1")), place(None, "Bhutan", "BT"));
    assert_eq!(r.locate(ip("202.196.224.1")), place(None, "Philippines", "PH"));
    assert_eq!(r.locate(ip("2001:218::1")), place(None, "Japan", "JP"));
    assert_eq!(r.locate(ip("2a02:ff40::1")), place(None, "Isle of Man", "IM"));
    assert_eq!(r.locate(ip("2001:480:10::1")), place(Some("San Diego"), "United States", "US"));
    if city_db {
        assert_eq!(r.locate(ip("214.78.120.5")), place(Some("San Diego"), "United States", "US"));
    }
    for none in ["8.8.8.8", "1.1.1.1", "127.0.0.1", "::1"] {
        assert_eq!(r.locate(ip(none)), None, "{none}");
    }
}

#[test]
fn maxmind_test_databases_when_present() {
    if let Some(path) = maxmind_test_db("GeoIP2-City-Test.mmdb") {
        check_expected_lookups(&open(&path), true);
    }
    if let Some(path) = maxmind_test_db("GeoLite2-City-Test.mmdb") {
        let r = open(&path);
        check_expected_lookups(&r, false);
        assert_eq!(r.locate(ip("214.78.120.5")), None);
    }
}

/// MaxMind's source JSON carries no types; the reader is strict about them, so the GeoIP2
/// schema's types are restored by key.
fn json_to_value(key: &str, v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Object(m) => Value::map(m.iter().map(|(k, v)| (k.clone(), json_to_value(k, v)))),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(|v| json_to_value(key, v)).collect()),
        serde_json::Value::String(s) => Value::str(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match key {
            "latitude" | "longitude" => Value::Double(n.as_f64().unwrap()),
            "accuracy_radius" | "metro_code" => Value::U16(n.as_u64().unwrap().try_into().unwrap()),
            _ => match n.as_u64() {
                Some(u) => u32::try_from(u).map_or(Value::U64(u), Value::U32),
                None => Value::Double(n.as_f64().unwrap()),
            },
        },
        serde_json::Value::Null => panic!("null in MaxMind source data"),
    }
}

/// Our writer, fed MaxMind's own source JSON, must give the answers MaxMind's database gives.
#[test]
fn writer_reproduces_maxmind_test_database_when_present() {
    let Some(official) = maxmind_test_db("GeoIP2-City-Test.mmdb") else {
        return;
    };
    let Ok(json) = std::fs::read_to_string(shared_data().join("geoip/GeoIP2-City-Test.json")) else {
        eprintln!("SKIPPED: GeoIP2-City-Test.json not found");
        return;
    };
    let source: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&json).unwrap();
    let mut writer = MmdbWriter::new("GeoIP2-City");
    let mut probes = Vec::new();
    for entry in &source {
        for (network, record) in entry {
            let net: ipnet::IpNet = network.parse().unwrap();
            probes.push(net.network());
            probes.push(net.broadcast());
            writer = writer.insert(net, json_to_value("", record));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.mmdb");
    writer.write(&ours).unwrap();
    let (ours, official) = (open(&ours), open(&official));
    check_expected_lookups(&ours, true);
    for probe in probes {
        assert_eq!(ours.locate(probe), official.locate(probe), "{probe}");
    }
}
