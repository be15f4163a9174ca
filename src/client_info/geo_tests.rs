//! GeoIP tests on databases written by our own MMDB writer: no MaxMind data needed.

use std::net::IpAddr;
use std::path::Path;

use super::*;

#[path = "../../tests/support/mmdb.rs"]
pub(super) mod mmdb;

use mmdb::{City, Geo, MmdbWriter, Value};

const LONDON: City<'static> = City { city_en: Some("London"), country_en: Some("United Kingdom"), iso: Some("GB") };
const LINKOPING: City<'static> = City { city_en: Some("Linköping"), country_en: Some("Sweden"), iso: Some("SE") };

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn open(path: &Path) -> ClientInfoResolver {
    ClientInfoResolver::new(Vec::new(), Some(path)).unwrap()
}

/// The place the sessions page would show: `r.locate(ip) == place(..)` compares city, country
/// and code only, whatever region and coordinates the record carries as well.
pub(super) fn place(city: Option<&str>, country: &str, code: &str) -> Named {
    Named(Some(Location::named(city, Some(country), Some(code))))
}

/// See [`place`].
#[derive(Debug)]
pub(super) struct Named(Option<Location>);

impl PartialEq<Named> for Option<Location> {
    fn eq(&self, other: &Named) -> bool {
        let shown = |l: &Location| (l.city.clone(), l.country.clone(), l.country_code.clone());
        self.as_ref().map(shown) == other.0.as_ref().map(shown)
    }
}

fn sample_db(record_size: u16) -> MmdbWriter {
    MmdbWriter::new("GeoIP2-City")
        .record_size(record_size)
        .insert("81.2.69.0/24".parse().unwrap(), LONDON)
        // A larger network inserted later: the /24 inside it keeps its city.
        .insert(
            "81.2.0.0/16".parse().unwrap(),
            City { country_en: Some("United Kingdom"), iso: Some("GB"), ..City::default() },
        )
        .insert("89.160.20.128/25".parse().unwrap(), LINKOPING)
        .insert(
            "67.43.156.0/24".parse().unwrap(),
            City { country_en: Some("Bhutan"), iso: Some("BT"), ..City::default() },
        )
        .insert(
            "2a02:ff40::/29".parse().unwrap(),
            City { country_en: Some("Isle of Man"), iso: Some("IM"), ..City::default() },
        )
        .insert(
            "2001:480:10::/48".parse().unwrap(),
            City { city_en: Some("San Diego"), country_en: Some("United States"), iso: Some("US") },
        )
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
        .insert(
            "81.2.69.0/24".parse().unwrap(),
            City { country_en: Some("United Kingdom"), iso: Some("GB"), ..City::default() },
        )
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
        .insert(
            "1.0.3.0/24".parse().unwrap(),
            Value::map([("country", Value::map([("names", Value::map([("de", Value::str("Japan"))]))]))]),
        )
        .insert("1.0.4.0/24".parse().unwrap(), Value::map([("city", names(Value::str("  ")))]))
        .insert(
            "1.0.5.0/24".parse().unwrap(),
            Value::map([
                ("country", Value::map([("iso_code", Value::str("JP")), ("geoname_id", Value::U32(1_861_060))])),
                ("location", Value::map([("latitude", Value::Double(35.6)), ("accuracy_radius", Value::U16(100))])),
            ]),
        )
        .write(&path)
        .unwrap();
    let r = open(&path);
    for n in 0..5 {
        assert_eq!(r.locate(ip(&format!("1.0.{n}.1"))), None, "record {n}");
    }
    // A latitude without a longitude is no coordinates (nor an accuracy radius).
    let code_only = Location::named(None, None, Some("JP"));
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

#[test]
fn regions_and_coordinates_come_with_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.mmdb");
    let sf = City { city_en: Some("San Francisco"), country_en: Some("United States"), iso: Some("US") };
    MmdbWriter::new("GeoIP2-City")
        .insert(
            "2001:480:10::/48".parse().unwrap(),
            Geo { city: sf, region: Some(("ca", "California")), at: Some((37.77, -122.42, 20)) },
        )
        .insert(
            "81.2.69.0/24".parse().unwrap(),
            Geo { city: LONDON, region: Some(("ENG", "England")), at: Some((51.5, -0.12, 100)) },
        )
        // Out-of-range coordinates and an odd subdivision code are dropped, not trusted.
        .insert(
            "1.0.6.0/24".parse().unwrap(),
            Geo { city: LINKOPING, region: Some(("TOO-LONG", "Östergötland")), at: Some((91.0, 15.6, 50)) },
        )
        .write(&path)
        .unwrap();
    let r = open(&path);
    let us = r.locate(ip("2001:480:10::1")).unwrap();
    assert_eq!((us.region_code.as_deref(), us.region.as_deref()), (Some("CA"), Some("California")));
    assert_eq!(us.coordinates(), Some((37.77, -122.42, Some(20))));
    let gb = r.locate(ip("81.2.69.160")).unwrap();
    assert_eq!(gb.coordinates(), Some((51.5, -0.12, Some(100))));
    assert_eq!(gb.region_code.as_deref(), Some("ENG"));
    let se = r.locate(ip("1.0.6.1")).unwrap();
    assert_eq!((se.coordinates(), se.accuracy_radius_km), (None, None));
    assert_eq!((se.region_code.as_deref(), se.region.as_deref()), (None, Some("Östergötland")));
    // The JSON the sessions API shows is unchanged: city and country only.
    let json = serde_json::to_value(&us).unwrap();
    assert_eq!(json, serde_json::json!({"city": "San Francisco", "country": "United States", "country_code": "US"}));
}

#[test]
fn an_optional_database_that_does_not_load_means_no_locations() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"not a database").unwrap();
    let missing = dir.path().join("missing.mmdb");
    for path in [&corrupt, &missing] {
        let r = ClientInfoResolver::new_geoip_optional(Vec::new(), Some(path)).unwrap();
        assert!(!r.has_geoip());
        assert_eq!(r.locate(ip("81.2.69.160")), None);
    }
    let good = dir.path().join("good.mmdb");
    sample_db(28).write(&good).unwrap();
    let r = ClientInfoResolver::new_geoip_optional(Vec::new(), Some(&good)).unwrap();
    assert!(r.has_geoip());
    assert!(!ClientInfoResolver::new_geoip_optional(Vec::new(), None).unwrap().has_geoip());
}

/// MaxMind's own test database, when the sibling `shared/data` directory is present (see `corpus_tests.rs`):
/// the region and coordinates of a real City record.
#[test]
fn maxmind_city_records_carry_regions_and_coordinates_when_present() {
    let dir = match std::env::var_os("DALEA_SHARED_DATA") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    let path = dir.join("geoip/GeoIP2-City-Test.mmdb");
    if !path.exists() {
        eprintln!("SKIPPED: {} not found (set DALEA_SHARED_DATA)", path.display());
        return;
    }
    let london = open(&path).locate(ip("81.2.69.160")).unwrap();
    assert_eq!((london.region_code.as_deref(), london.region.as_deref()), (Some("ENG"), Some("England")));
    assert_eq!(london.coordinates(), Some((51.5142, -0.0931, Some(100))));
}
