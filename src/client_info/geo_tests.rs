//! GeoIP tests on databases written by our own MMDB writer (no MaxMind data needed), plus
//! MaxMind's test databases when /work/shared's data is present.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::tests::shared_data;
use super::*;

#[path = "../../tests/support/mmdb.rs"]
mod mmdb;

use mmdb::{City, MmdbWriter, Value};

const LONDON: City<'static> =
    City { city_en: Some("London"), country_en: Some("United Kingdom"), iso: Some("GB") };
const LINKOPING: City<'static> =
    City { city_en: Some("Linköping"), country_en: Some("Sweden"), iso: Some("SE") };

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn open(path: &Path) -> ClientInfoResolver {
    ClientInfoResolver::new(Vec::new(), Some(path)).unwrap()
}

fn place(city: Option<&str>, country: &str, code: &str) -> Option<Location> {
    Some(Location {
        city: city.map(str::to_owned),
        country: Some(country.to_owned()),
        country_code: Some(code.to_owned()),
    })
}

fn sample_db(record_size: u16) -> MmdbWriter {
    MmdbWriter::new("GeoIP2-City")
        .record_size(record_size)
        .insert("81.2.69.0/24".parse().unwrap(), LONDON)
        // A larger network inserted later: the /24 inside it keeps its city.
        .insert("81.2.0.0/16".parse().unwrap(), City { country_en: Some("United Kingdom"), iso: Some("GB"), ..City::default() })
        .insert("89.160.20.128/25".parse().unwrap(), LINKOPING)
        .insert("67.43.156.0/24".parse().unwrap(), City { country_en: Some("Bhutan"), iso: Some("BT"), ..City::default() })
        .insert("2a02:ff40::/29".parse().unwrap(), City { country_en: Some("Isle of Man"), iso: Some("IM"), ..City::default() })
        .insert("2001:480:10::/48".parse().unwrap(), City { city_en: Some("San Diego"), country_en: Some("United States"), iso: Some("US") })
        // Private space with a record: must still not be "located".
        .insert("10.0.0.0/8".parse().unwrap(), LONDON)
}

#[test]
fn locates_from_a_written_city_database_with_every_record_size() {
    let dir = tempfile::tempdir().unwrap();
    for size in [24, 28, 32] {
        let path = dir.path().join(format!("city-{size}.mmdb"));
        sample_db(size).write(&path).unwrap();
        let r = open(&path);
        assert!(r.has_geoip());
        assert_eq!(r.locate(ip("81.2.69.160")), place(Some("London"), "United Kingdom", "GB"), "size {size}");
        assert_eq!(r.locate(ip("81.2.70.1")), place(None, "United Kingdom", "GB"));
        assert_eq!(r.locate(ip("89.160.20.200")), place(Some("Linköping"), "Sweden", "SE"));
        assert_eq!(r.locate(ip("89.160.20.127")), None, "just outside the /25");
        assert_eq!(r.locate(ip("67.43.156.1")), place(None, "Bhutan", "BT"));
        assert_eq!(r.locate(ip("2a02:ff40::1")), place(None, "Isle of Man", "IM"));
        assert_eq!(r.locate(ip("2001:480:10::1")), place(Some("San Diego"), "United States", "US"));
        assert_eq!(r.locate(ip("::ffff:81.2.69.160")), place(Some("London"), "United Kingdom", "GB"));
        for nowhere in ["8.8.8.8", "1.1.1.1", "2001:4860::8888"] {
            assert_eq!(r.locate(ip(nowhere)), None, "{nowhere} has no record");
        }
        for private in ["10.1.2.3", "127.0.0.1", "192.168.0.1", "::1", "fe80::1", "fd00::1"] {
            assert_eq!(r.locate(ip(private)), None, "{private} is not public");
        }
    }
}

#[test]
fn country_database_and_ipv4_only_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    MmdbWriter::new("GeoIP2-Country")
        .ipv4_only()
        .insert("81.2.69.0/24".parse().unwrap(), City { country_en: Some("United Kingdom"), iso: Some("GB"), ..City::default() })
        .write(&path)
        .unwrap();
    let r = open(&path);
    assert_eq!(r.locate(ip("81.2.69.1")), place(None, "United Kingdom", "GB"));
    // An IPv6 address in an IPv4-only database is a lookup error: no location, no panic.
    assert_eq!(r.locate(ip("2a02:ff40::1")), None);
}

#[test]
fn odd_records_give_no_location_and_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mmdb");
    let names = |v: Value| Value::map([("names", Value::map([("en", v)]))]);
    MmdbWriter::new("GeoIP2-City")
        .insert("1.0.0.0/24".parse().unwrap(), Value::map(Vec::<(String, Value)>::new()))
        .insert("1.0.1.0/24".parse().unwrap(), Value::map([("city", names(Value::U32(7)))]))
        .insert("1.0.2.0/24".parse().unwrap(), Value::str("not a map"))
        .insert("1.0.3.0/24".parse().unwrap(), Value::map([("country", Value::map([("names", Value::map([("de", Value::str("Japan"))]))]))]))
        .insert("1.0.4.0/24".parse().unwrap(), Value::map([("city", names(Value::str("  ")))]))
        .insert("1.0.5.0/24".parse().unwrap(), Value::map([("country", Value::map([("iso_code", Value::str("JP")), ("geoname_id", Value::U32(1_861_060))])), ("location", Value::map([("latitude", Value::Double(35.6)), ("accuracy_radius", Value::U16(100))]))]))
        .write(&path)
        .unwrap();
    let r = open(&path);
    for n in 0..5 {
        assert_eq!(r.locate(ip(&format!("1.0.{n}.1"))), None, "record {n}");
    }
    let code_only = Location { city: None, country: None, country_code: Some("JP".into()) };
    assert_eq!(r.locate(ip("1.0.5.1")), Some(code_only));

    // Damage every byte of the data section in turn: opening or looking up may fail, but
    // must never panic.
    let good = std::fs::read(&path).unwrap();
    let marker = good.windows(14).rposition(|w| w == b"\xab\xcd\xefMaxMind.com").unwrap();
    let broken_path = dir.path().join("broken.mmdb");
    for pos in (marker.saturating_sub(200)..marker).step_by(3) {
        let mut bytes = good.clone();
        bytes[pos] ^= 0xff;
        std::fs::write(&broken_path, &bytes).unwrap();
        if let Ok(r) = ClientInfoResolver::new(Vec::new(), Some(&broken_path)) {
            for n in 0..6 {
                let _ = r.locate(ip(&format!("1.0.{n}.1")));
            }
        }
    }
}

#[test]
fn unopenable_databases_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"this is not a MaxMind database").unwrap();
    let truncated = dir.path().join("truncated.mmdb");
    let bytes = sample_db(28).to_bytes();
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).unwrap();
    for path in [&missing, &corrupt, &truncated] {
        let err = ClientInfoResolver::new(Vec::new(), Some(path)).unwrap_err();
        assert!(matches!(err, ClientInfoError::GeoIpOpen { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
}

// ---- MaxMind's test databases, when /work/shared is around ----------------------------------

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

fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Object(m) => Value::map(m.iter().map(|(k, v)| (k.clone(), json_to_value(v)))),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(json_to_value).collect()),
        serde_json::Value::String(s) => Value::str(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u32::try_from(u).map_or(Value::U64(u), Value::U32),
            (None, Some(i)) => Value::I32(i as i32),
            _ => Value::Double(n.as_f64().unwrap()),
        },
        serde_json::Value::Null => panic!("null in MaxMind source data"),
    }
}

/// Our writer, fed MaxMind's own source JSON, must give the answers MaxMind's database gives.
#[test]
fn writer_reproduces_maxmind_test_database_when_present() {
    let Some(official) = maxmind_test_db("GeoIP2-City-Test.mmdb") else { return };
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
            writer = writer.insert(net, json_to_value(record));
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
