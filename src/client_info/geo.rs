//! Approximate location of an IP from a MaxMind-format database (GeoIP2/GeoLite2 City or
//! Country, or any database with the same record layout), with English names.
//!
//! The database is supplied by the operator (its licence forbids shipping it). It is read into
//! memory once; lookups run only when a page is rendered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use maxminddb::{geoip2, Reader};
use serde::Serialize;

use super::ClientInfoError;

/// Where an IP address approximately is. Each part may be missing (a Country database has no
/// cities, regions or coordinates; some records carry only a country).
///
/// Only city and country are serialised (the sessions JSON); the region and coordinates are for
/// the warning flags (`crate::vigilance`), which compare places and distances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Location {
    /// "London".
    pub city: Option<String>,
    /// "United Kingdom".
    pub country: Option<String>,
    /// ISO 3166-1 alpha-2, "GB".
    pub country_code: Option<String>,
    /// The largest subdivision's ISO 3166-2 code without the country part: "CA" for
    /// California (US-CA), "ENG" for England (GB-ENG). Upper case, 1 to 3 letters or digits.
    #[serde(skip)]
    pub region_code: Option<String>,
    /// The largest subdivision's English name: "California".
    #[serde(skip)]
    pub region: Option<String>,
    /// Approximate coordinates, in degrees (both or neither; always in range).
    #[serde(skip)]
    pub latitude: Option<f64>,
    #[serde(skip)]
    pub longitude: Option<f64>,
    /// The database's accuracy radius around the coordinates, in km (MaxMind: the device is
    /// within it with 67% confidence). None when the record has no coordinates.
    #[serde(skip)]
    pub accuracy_radius_km: Option<u16>,
}

impl Location {
    /// A location with only the parts the sessions page shows (no region, no coordinates).
    pub fn named(city: Option<&str>, country: Option<&str>, country_code: Option<&str>) -> Location {
        Location {
            city: city.map(str::to_owned),
            country: country.map(str::to_owned),
            country_code: country_code.map(str::to_owned),
            region_code: None,
            region: None,
            latitude: None,
            longitude: None,
            accuracy_radius_km: None,
        }
    }

    /// The coordinates and accuracy radius (km), when the record has coordinates.
    pub fn coordinates(&self) -> Option<(f64, f64, Option<u16>)> {
        Some((self.latitude?, self.longitude?, self.accuracy_radius_km))
    }
}

pub(super) struct GeoDb {
    reader: Reader<Vec<u8>>,
}

impl GeoDb {
    pub(super) fn open(path: &Path) -> Result<Self, ClientInfoError> {
        let reader = Reader::open_readfile(path)
            .map_err(|source| ClientInfoError::GeoIpOpen { path: path.to_path_buf(), source })?;
        let kind = reader.metadata().database_type.to_ascii_lowercase();
        if !(kind.contains("city") || kind.contains("country")) {
            tracing::warn!(
                geoip.path = %path.display(),
                geoip.database_type = %reader.metadata().database_type,
                "GeoIP database is neither a City nor a Country database; locations may be empty"
            );
        }
        Ok(GeoDb { reader })
    }

    pub(super) fn locate(&self, ip: IpAddr) -> Option<Location> {
        let ip = super::ip::canonical(ip);
        if !is_public(ip) {
            return None;
        }
        let found = match self.reader.lookup(ip) {
            Ok(found) => found,
            Err(e) => {
                // e.g. an IPv6 address in an IPv4-only database
                tracing::debug!(error = %e, "GeoIP lookup failed");
                return None;
            }
        };
        let record = match found.decode::<geoip2::City<'_>>() {
            Ok(record) => record?,
            Err(e) => {
                tracing::debug!(error = %e, "GeoIP record does not decode");
                return None;
            }
        };
        let text = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let region = record.subdivisions.first();
        let (latitude, longitude) = coordinates(record.location.latitude, record.location.longitude).unzip();
        let location = Location {
            city: text(record.city.names.english),
            country: text(record.country.names.english),
            country_code: text(record.country.iso_code),
            region_code: region.and_then(|r| region_code(r.iso_code)),
            region: region.and_then(|r| text(r.names.english)),
            latitude,
            longitude,
            accuracy_radius_km: latitude.and(record.location.accuracy_radius),
        };
        let empty = location.city.is_none() && location.country.is_none() && location.country_code.is_none();
        (!empty).then_some(location)
    }
}

/// Latitude and longitude when both are present, finite and in range.
fn coordinates(latitude: Option<f64>, longitude: Option<f64>) -> Option<(f64, f64)> {
    let (lat, lon) = (latitude?, longitude?);
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// An ISO 3166-2 subdivision code as MaxMind stores it ("CA", "ENG"): 1 to 3 ASCII letters or
/// digits, upper-cased. Anything else is dropped.
fn region_code(code: Option<&str>) -> Option<String> {
    let code = code?.trim();
    let ok = (1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| code.to_ascii_uppercase())
}

impl super::ClientInfoResolver {
    /// As [`ClientInfoResolver::new`](super::ClientInfoResolver::new), for a GeoIP database the
    /// operator marked optional (`client_info.geoip_optional`): when it cannot be opened, the
    /// reason is logged and the resolver runs without locations (no location is shown and no
    /// location warning is raised) instead of failing start-up.
    pub fn new_geoip_optional(
        trusted_proxies: Vec<ipnet::IpNet>,
        geoip_database: Option<&Path>,
    ) -> Result<Self, ClientInfoError> {
        match Self::new(trusted_proxies.clone(), geoip_database) {
            Err(e @ ClientInfoError::GeoIpOpen { .. }) => {
                tracing::warn!(error = %e, "running without locations: the optional GeoIP database did not load");
                Self::new(trusted_proxies, None)
            }
            other => other,
        }
    }
}

/// Whether `ip` is a globally routed unicast address (no private, loopback, link-local,
/// shared, documentation, benchmarking, multicast or reserved ranges).
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                    // "this network"
        || a == 10                              // private
        || (a == 100 && (64..128).contains(&b)) // shared (CGNAT)
        || a == 127                             // loopback
        || (a == 169 && b == 254)               // link-local
        || (a == 172 && (16..32).contains(&b))  // private
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // TEST-NET-1
        || (a == 192 && b == 168)               // private
        || (a == 198 && (b == 18 || b == 19))   // benchmarking
        || (a == 198 && b == 51 && c == 100)    // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)     // TEST-NET-3
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Global unicast is 2000::/3; everything else (loopback, ULA, link-local, multicast,
    // IPv4-compatible, discard…) has no location. 2001:db8::/32 is documentation.
    (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_and_region_codes_are_checked() {
        assert_eq!(coordinates(Some(51.5), Some(-0.12)), Some((51.5, -0.12)));
        assert_eq!(coordinates(Some(-90.0), Some(180.0)), Some((-90.0, 180.0)));
        for (lat, lon) in [(Some(91.0), Some(0.0)), (Some(0.0), Some(-180.5)), (Some(f64::NAN), Some(0.0))] {
            assert_eq!(coordinates(lat, lon), None, "{lat:?} {lon:?}");
        }
        assert_eq!(coordinates(Some(10.0), None), None);
        assert_eq!(coordinates(None, Some(10.0)), None);
        assert_eq!(region_code(Some("ca")).as_deref(), Some("CA"));
        assert_eq!(region_code(Some(" ENG ")).as_deref(), Some("ENG"));
        for odd in ["", "CALI", "C-A", "é", " "] {
            assert_eq!(region_code(Some(odd)), None, "{odd:?}");
        }
    }

    #[test]
    fn public_and_non_public_addresses() {
        for ip in ["81.2.69.160", "8.8.8.8", "1.1.1.1", "100.128.0.1", "2001:480:10::1", "2a02:ff40::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.5",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
    }
}
