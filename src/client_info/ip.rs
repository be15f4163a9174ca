//! The client IP behind trusted proxies (DESIGN §4): the TCP peer, unless the peer is a trusted
//! proxy; then `X-Forwarded-For` is walked right to left past trusted hops.
//!
//! This runs on every request, so it walks the header in one left-to-right pass without
//! collecting the hops: the state after each hop is the answer a right-to-left walk over the
//! hops seen so far would give.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// True when `ip` is inside one of `trusted`.
pub(super) fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// See [`super::ClientInfoResolver::client_ip`].
pub(super) fn client_ip<'a>(
    trusted: &[IpNet],
    peer: Option<IpAddr>,
    forwarded_for: impl Iterator<Item = &'a [u8]>,
) -> Option<IpAddr> {
    let peer = canonical(peer?);
    if !is_trusted(trusted, peer) {
        return Some(peer);
    }
    let mut walk = Walk::Empty;
    for line in forwarded_for {
        for entry in line.split(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue; // empty list members are ignored (RFC 9110 §5.6.1)
            }
            walk = match parse_hop(entry) {
                None => Walk::Garbage(None),
                Some(ip) if !is_trusted(trusted, ip) => Walk::Found(ip),
                Some(ip) => match walk {
                    Walk::Empty => Walk::AllTrusted(ip),
                    Walk::Garbage(None) => Walk::Garbage(Some(ip)),
                    other => other,
                },
            };
        }
    }
    Some(match walk {
        Walk::Found(ip) | Walk::AllTrusted(ip) | Walk::Garbage(Some(ip)) => ip,
        // No hops at all, or the rightmost hop is garbage: the hop to its right is the peer.
        Walk::Empty | Walk::Garbage(None) => peer,
    })
}

/// What a right-to-left walk over the hops seen so far would return.
#[derive(Clone, Copy)]
enum Walk {
    /// No hops yet.
    Empty,
    /// An untrusted hop with only trusted hops to its right: the client.
    Found(IpAddr),
    /// Every hop is trusted; holds the leftmost.
    AllTrusted(IpAddr),
    /// The walk stops at an unparseable hop; holds the good hop to its right, once seen.
    Garbage(Option<IpAddr>),
}

/// One `X-Forwarded-For` member: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`, optionally in double quotes. IPv4-mapped IPv6 becomes IPv4.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let entry = match entry {
        [b'"', inner @ .., b'"'] => inner.trim_ascii(),
        _ => entry,
    };
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return addr.parse::<Ipv6Addr>().ok().map(|v6| canonical(IpAddr::V6(v6)));
    }
    // `a.b.c.d:port` (a bare IPv6 address has more than one colon and parsed above).
    let (addr, port) = text.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack listener reports) as plain IPv4.
pub(super) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Client IP with trusted proxies 10.0.0.0/8 and fd00::/8, peer 10.0.0.1.
    fn walk(lines: &[&str]) -> Option<IpAddr> {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        client_ip(&trusted, Some(ip("10.0.0.1")), lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(&trusted, Some(ip("203.0.113.9")), [&b"1.2.3.4"[..]].into_iter());
        assert_eq!(got, Some(ip("203.0.113.9")));
    }

    #[test]
    fn no_peer_is_none() {
        assert_eq!(client_ip(&nets(&["0.0.0.0/0"]), None, [&b"1.2.3.4"[..]].into_iter()), None);
    }

    #[test]
    fn trusted_peer_without_header_is_the_peer() {
        assert_eq!(walk(&[]), Some(ip("10.0.0.1")));
        assert_eq!(walk(&[""]), Some(ip("10.0.0.1")));
        assert_eq!(walk(&[" , ,"]), Some(ip("10.0.0.1")));
    }

    #[test]
    fn trusted_peer_walks_right_to_left_past_trusted_hops() {
        assert_eq!(walk(&["1.1.1.1"]), Some(ip("1.1.1.1")));
        // A client-supplied spoof on the left is not believed.
        assert_eq!(walk(&["6.6.6.6, 1.1.1.1, 10.0.0.7"]), Some(ip("1.1.1.1")));
        assert_eq!(walk(&["6.6.6.6,1.1.1.1,10.0.0.7,10.9.9.9"]), Some(ip("1.1.1.1")));
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        assert_eq!(walk(&["10.0.0.5, 10.0.0.6, 10.0.0.7"]), Some(ip("10.0.0.5")));
        assert_eq!(walk(&["10.0.0.5", "10.0.0.6"]), Some(ip("10.0.0.5")));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_hop_to_its_right() {
        assert_eq!(walk(&["1.1.1.1, nonsense, 10.0.0.7"]), Some(ip("10.0.0.7")));
        assert_eq!(walk(&["1.1.1.1, unknown, 10.0.0.7, 10.0.0.8"]), Some(ip("10.0.0.7")));
        // Garbage as the rightmost hop: the hop to its right is the peer itself.
        assert_eq!(walk(&["1.1.1.1, 999.1.1.1"]), Some(ip("10.0.0.1")));
        // Garbage to the left of the client does not matter.
        assert_eq!(walk(&["junk, 1.1.1.1, 10.0.0.7"]), Some(ip("1.1.1.1")));
        assert_eq!(walk(&["1.1.1.1:notaport, 10.0.0.7"]), Some(ip("10.0.0.7")));
        assert_eq!(walk(&["\u{e9}t\u{e9}, 10.0.0.7"]), Some(ip("10.0.0.7")));
    }

    #[test]
    fn non_utf8_entry_is_garbage() {
        let trusted = nets(&["10.0.0.0/8"]);
        let lines: [&[u8]; 1] = [b"1.1.1.1, \xff\xfe, 10.0.0.7"];
        assert_eq!(client_ip(&trusted, Some(ip("10.0.0.1")), lines.into_iter()), Some(ip("10.0.0.7")));
    }

    #[test]
    fn entries_with_ports_and_quotes() {
        assert_eq!(walk(&["1.2.3.4:5678, 10.0.0.7:80"]), Some(ip("1.2.3.4")));
        assert_eq!(walk(&["[2001:db8::1]:443"]), Some(ip("2001:db8::1")));
        assert_eq!(walk(&["[2001:db8::1]"]), Some(ip("2001:db8::1")));
        assert_eq!(walk(&["\"1.2.3.4\""]), Some(ip("1.2.3.4")));
        assert_eq!(walk(&["\"[2001:db8::2]:8080\", 10.0.0.7"]), Some(ip("2001:db8::2")));
        assert_eq!(walk(&["[2001:db8::1]:https, 10.0.0.7"]), Some(ip("10.0.0.7")));
    }

    #[test]
    fn ipv6_hops_and_trusted_ipv6_proxies() {
        assert_eq!(walk(&["2001:db8::5, fd00::1, fd12::2"]), Some(ip("2001:db8::5")));
        assert_eq!(walk(&["fd00::1"]), Some(ip("fd00::1")));
    }

    #[test]
    fn ipv4_mapped_addresses_become_ipv4() {
        assert_eq!(walk(&["::ffff:1.2.3.4"]), Some(ip("1.2.3.4")));
        // A mapped trusted hop is still trusted.
        assert_eq!(walk(&["5.5.5.5, ::ffff:10.0.0.9"]), Some(ip("5.5.5.5")));
        // A dual-stack listener reports IPv4 peers as mapped addresses.
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = Some(ip("::ffff:10.0.0.1"));
        assert_eq!(client_ip(&trusted, peer, [&b"7.7.7.7"[..]].into_iter()), Some(ip("7.7.7.7")));
        let peer = Some(ip("::ffff:8.8.8.8"));
        assert_eq!(client_ip(&trusted, peer, std::iter::empty()), Some(ip("8.8.8.8")));
        assert!(is_trusted(&trusted, ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn multiple_header_lines_are_one_list_in_order() {
        assert_eq!(walk(&["6.6.6.6, 1.1.1.1", "10.0.0.7"]), Some(ip("1.1.1.1")));
        assert_eq!(walk(&["1.1.1.1", "2.2.2.2", "10.0.0.7"]), Some(ip("2.2.2.2")));
        assert_eq!(walk(&["1.1.1.1", "garbage", "10.0.0.7"]), Some(ip("10.0.0.7")));
    }

    #[test]
    fn no_trusted_proxies_means_the_peer() {
        let got = client_ip(&[], Some(ip("10.0.0.1")), [&b"1.2.3.4"[..]].into_iter());
        assert_eq!(got, Some(ip("10.0.0.1")));
    }
}
