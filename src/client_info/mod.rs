//! Who is on the other end: the client IP behind trusted proxies, "Chrome on macOS 14" from the
//! User-Agent and client hints, and an approximate place from a GeoIP database.
//!
//! [`ClientInfoResolver::client_ip`] runs on every request and does not allocate; describing
//! the device and locating the IP run only when the sessions page is rendered.

#[cfg(test)]
mod corpus_tests;
mod device;
mod geo;
#[cfg(test)]
mod geo_tests;
mod hints;
mod ip;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

pub use device::Device;
pub use geo::Location;
pub use hints::{ClientHints, ACCEPT_CH, CRITICAL_CH};

/// Why client information cannot be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ClientInfoError {
    #[error("cannot open GeoIP database {}: {source}", path.display())]
    GeoIpOpen {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    #[error("the built-in User-Agent rules do not load: {0}")]
    UserAgentRules(String),
}

/// Client IP, device and location resolution; built once at start-up and shared.
pub struct ClientInfoResolver {
    trusted_proxies: Vec<IpNet>,
    ua_rules: &'static device::UaRules,
    geoip: Option<geo::GeoDb>,
}

impl fmt::Debug for ClientInfoResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInfoResolver")
            .field("trusted_proxies", &self.trusted_proxies)
            .field("has_geoip", &self.has_geoip())
            .finish_non_exhaustive()
    }
}

impl ClientInfoResolver {
    /// Compiles the User-Agent rules (once per process) and opens the GeoIP database, if any.
    pub fn new(trusted_proxies: Vec<IpNet>, geoip_database: Option<&Path>) -> Result<Self, ClientInfoError> {
        let ua_rules = device::rules()?;
        let geoip = geoip_database.map(geo::GeoDb::open).transpose()?;
        Ok(ClientInfoResolver { trusted_proxies, ua_rules, geoip })
    }

    /// True when `peer` is inside one of the trusted proxy CIDRs (IPv4-mapped IPv6 peers are
    /// compared as IPv4).
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        ip::is_trusted(&self.trusted_proxies, peer)
    }

    /// The client IP: the TCP peer unless it is trusted; then `X-Forwarded-For` (all the
    /// header's values, in order, comma-separated) is walked right to left past trusted hops
    /// and the first untrusted address returned; if every hop is trusted, the leftmost. An
    /// unparseable entry stops the walk and the good hop to its right is used (the peer when
    /// the rightmost entry is unparseable). Entries may carry ports (`1.2.3.4:5678`,
    /// `[2001:db8::1]:443`) or quotes; IPv4-mapped IPv6 is returned as IPv4. `peer` None → None.
    pub fn client_ip<'a>(&self, peer: Option<IpAddr>, forwarded_for: impl Iterator<Item = &'a [u8]>) -> Option<IpAddr> {
        ip::client_ip(&self.trusted_proxies, peer, forwarded_for)
    }

    /// Browser/OS labels for the sessions page, from the User-Agent (uap-core rules) refined by
    /// client hints. Never fails: an unparseable UA gives "Unknown browser on Unknown OS".
    pub fn describe_device(&self, user_agent: &str, hints: &ClientHints) -> Device {
        self.ua_rules.describe(user_agent, hints)
    }

    /// Approximate location of an IP. None without a database, for private, reserved or
    /// loopback addresses, or when the database has no usable record.
    pub fn locate(&self, ip: IpAddr) -> Option<Location> {
        self.geoip.as_ref()?.locate(ip)
    }

    /// Whether a GeoIP database is loaded (the page shows the data's attribution then).
    pub fn has_geoip(&self) -> bool {
        self.geoip.is_some()
    }
}
