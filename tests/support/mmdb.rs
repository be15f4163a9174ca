//! A tiny MaxMind DB (`.mmdb`) writer for tests, so GeoIP code is tested without shipping
//! MaxMind's data. Self-contained: std + ipnet only.
//!
//! Format (MaxMind DB spec 2.0): a binary search tree of nodes, each two records of 24/28/32
//! bits (a record is a node index, `node_count` for "no data", or `node_count + 16 + offset`
//! into the data section); 16 zero bytes; the data section of typed fields (maps, UTF-8
//! strings, unsigned ints, doubles…); then `\xAB\xCD\xEFMaxMind.com` and the metadata map.
//! IPv4 networks in an IPv6 tree live in the `::/96` subtree, as in MaxMind's own databases.
//!
//! ```ignore
//! MmdbWriter::new("GeoIP2-City")
//!     .insert("81.2.69.0/24".parse().unwrap(), City { city_en: Some("London"), country_en: Some("United Kingdom"), iso: Some("GB") })
//!     .insert("2a02:ff40::/29".parse().unwrap(), City { country_en: Some("Isle of Man"), iso: Some("IM"), ..City::default() })
//!     .write(&path)?;
//! ```
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::path::Path;

use ipnet::IpNet;

/// A MaxMind DB data field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Map(Vec<(String, Value)>),
    Str(String),
    Double(f64),
    Float(f32),
    Bytes(Vec<u8>),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    I32(i32),
    Bool(bool),
    Array(Vec<Value>),
}

impl Value {
    /// A map from string keys, in the given order.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }
}

/// The GeoIP2 City fields the gateway reads, English names only. A record with only a country
/// is what a Country database (or a coarse City record) holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct City<'a> {
    pub city_en: Option<&'a str>,
    pub country_en: Option<&'a str>,
    pub iso: Option<&'a str>,
}

impl From<City<'_>> for Value {
    fn from(c: City<'_>) -> Value {
        let names = |en: &str| Value::map([("en", Value::str(en))]);
        let mut record = Vec::new();
        if let Some(city) = c.city_en {
            record.push(("city".to_owned(), Value::map([("names", names(city))])));
        }
        let mut country = Vec::new();
        if let Some(iso) = c.iso {
            country.push(("iso_code".to_owned(), Value::str(iso)));
        }
        if let Some(name) = c.country_en {
            country.push(("names".to_owned(), names(name)));
        }
        if !country.is_empty() {
            record.push(("country".to_owned(), Value::Map(country)));
        }
        Value::Map(record)
    }
}

/// A City record with what the warning flags read too: the largest subdivision and the
/// coordinates with their accuracy radius.
///
/// ```ignore
/// Geo { city: City { city_en: Some("Sydney"), country_en: Some("Australia"), iso: Some("AU") },
///       region: Some(("NSW", "New South Wales")), at: Some((-33.87, 151.21, 20)) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Geo<'a> {
    pub city: City<'a>,
    /// ISO 3166-2 subdivision code without the country part ("CA") and its English name.
    pub region: Option<(&'a str, &'a str)>,
    /// Latitude, longitude (degrees) and accuracy radius (km).
    pub at: Option<(f64, f64, u16)>,
}

impl From<Geo<'_>> for Value {
    fn from(g: Geo<'_>) -> Value {
        let Value::Map(mut record) = Value::from(g.city) else { unreachable!("a City is a map") };
        if let Some((code, name)) = g.region {
            let subdivision =
                Value::map([("iso_code", Value::str(code)), ("names", Value::map([("en", Value::str(name))]))]);
            record.push(("subdivisions".to_owned(), Value::Array(vec![subdivision])));
        }
        if let Some((latitude, longitude, radius)) = g.at {
            record.push((
                "location".to_owned(),
                Value::map([
                    ("accuracy_radius", Value::U16(radius)),
                    ("latitude", Value::Double(latitude)),
                    ("longitude", Value::Double(longitude)),
                ]),
            ));
        }
        Value::Map(record)
    }
}

/// Builds a database in memory; see the module docs.
#[derive(Debug, Clone)]
pub struct MmdbWriter {
    database_type: String,
    ip_version: u16,
    record_size: u16,
    build_epoch: u64,
    entries: Vec<(IpNet, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

impl MmdbWriter {
    /// An IPv6 tree (IPv4 in `::/96`) with 28-bit records, like MaxMind's City databases.
    pub fn new(database_type: &str) -> Self {
        MmdbWriter {
            database_type: database_type.to_owned(),
            ip_version: 6,
            record_size: 28,
            build_epoch: 1_700_000_000,
            entries: Vec::new(),
        }
    }

    /// An IPv4-only tree (`ip_version` 4); IPv6 networks are then refused.
    pub fn ipv4_only(mut self) -> Self {
        self.ip_version = 4;
        self
    }

    /// 24, 28 or 32.
    pub fn record_size(mut self, bits: u16) -> Self {
        assert!(matches!(bits, 24 | 28 | 32), "record size must be 24, 28 or 32");
        self.record_size = bits;
        self
    }

    /// Adds a network. Where networks overlap, the more specific one wins whatever the order.
    pub fn insert(mut self, network: IpNet, record: impl Into<Value>) -> Self {
        self.entries.push((network.trunc(), record.into()));
        self
    }

    pub fn write(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let (nodes, data_refs) = self.build_tree();
        let node_count = nodes.len();

        // Data section: each record once, in order of first use.
        let mut data = Vec::new();
        let mut offsets: HashMap<usize, usize> = HashMap::new();
        for &d in &data_refs {
            offsets.entry(d).or_insert_with(|| {
                let at = data.len();
                encode(&self.entries[d].1, &mut data);
                at
            });
        }

        let max = (1u64 << self.record_size) - 1;
        let value = |r: Rec| -> u64 {
            let v = match r {
                Rec::Empty => node_count as u64,
                Rec::Node(n) => n as u64,
                Rec::Data(d) => (node_count + 16 + offsets[&d]) as u64,
            };
            assert!(v <= max, "record value {v} does not fit in {} bits", self.record_size);
            v
        };

        let mut out = Vec::new();
        for node in &nodes {
            let (l, r) = (value(node[0]), value(node[1]));
            match self.record_size {
                24 => {
                    out.extend_from_slice(&l.to_be_bytes()[5..]);
                    out.extend_from_slice(&r.to_be_bytes()[5..]);
                }
                28 => {
                    out.extend_from_slice(&(l & 0xff_ffff).to_be_bytes()[5..]);
                    out.push((((l >> 24) & 0x0f) << 4 | ((r >> 24) & 0x0f)) as u8);
                    out.extend_from_slice(&(r & 0xff_ffff).to_be_bytes()[5..]);
                }
                _ => {
                    out.extend_from_slice(&(l as u32).to_be_bytes());
                    out.extend_from_slice(&(r as u32).to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let metadata = Value::map([
            ("node_count", Value::U32(node_count as u32)),
            ("record_size", Value::U16(self.record_size)),
            ("ip_version", Value::U16(self.ip_version)),
            ("database_type", Value::str(&self.database_type)),
            ("languages", Value::Array(vec![Value::str("en")])),
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(self.build_epoch)),
            ("description", Value::map([("en", Value::str("Dalea test database"))])),
        ]);
        encode(&metadata, &mut out);
        out
    }

    /// The search tree, renumbered so only reachable nodes remain (root first), and the data
    /// records it points at.
    fn build_tree(&self) -> (Vec<[Rec; 2]>, Vec<usize>) {
        let depth: u32 = if self.ip_version == 4 { 32 } else { 128 };
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        let key = |net: &IpNet| -> (u128, u32) {
            match (net, self.ip_version) {
                (IpNet::V4(n), 4) => (u32::from(n.addr()) as u128, n.prefix_len() as u32),
                (IpNet::V4(n), _) => (u32::from(n.addr()) as u128, 96 + n.prefix_len() as u32),
                (IpNet::V6(n), 6) => (u128::from(n.addr()), n.prefix_len() as u32),
                (IpNet::V6(n), _) => panic!("IPv6 network {n} in an IPv4-only database"),
            }
        };
        // Less specific first, so more specific networks split and override them.
        order.sort_by_key(|&i| key(&self.entries[i].0).1);

        let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
        for i in order {
            let (bits, prefix) = key(&self.entries[i].0);
            assert!(prefix > 0, "a /0 network cannot be stored in the tree");
            let mut node = 0;
            for level in 0..prefix {
                let bit = ((bits >> (depth - 1 - level)) & 1) as usize;
                if level == prefix - 1 {
                    nodes[node][bit] = Rec::Data(i);
                    break;
                }
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    // Empty, or a larger network's data that now needs a subtree.
                    fill => {
                        nodes.push([fill, fill]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }

        // Breadth-first renumbering drops nodes orphaned by overriding inserts.
        let mut new_index = vec![usize::MAX; nodes.len()];
        let mut queue = std::collections::VecDeque::from([0usize]);
        let mut reachable = Vec::new();
        new_index[0] = 0;
        while let Some(old) = queue.pop_front() {
            reachable.push(old);
            for rec in nodes[old] {
                if let Rec::Node(child) = rec {
                    if new_index[child] == usize::MAX {
                        new_index[child] = reachable.len() + queue.len();
                        queue.push_back(child);
                    }
                }
            }
        }
        let mut data_refs = Vec::new();
        let renumbered = reachable
            .iter()
            .map(|&old| {
                nodes[old].map(|rec| match rec {
                    Rec::Node(child) => Rec::Node(new_index[child]),
                    Rec::Data(d) => {
                        data_refs.push(d);
                        Rec::Data(d)
                    }
                    Rec::Empty => Rec::Empty,
                })
            })
            .collect();
        (renumbered, data_refs)
    }
}

/// Type numbers from the spec.
const UTF8: u8 = 2;
const DOUBLE: u8 = 3;
const BYTES: u8 = 4;
const UINT16: u8 = 5;
const UINT32: u8 = 6;
const MAP: u8 = 7;
const INT32: u8 = 8;
const UINT64: u8 = 9;
const UINT128: u8 = 10;
const ARRAY: u8 = 11;
const BOOLEAN: u8 = 14;
const FLOAT: u8 = 15;

/// Control byte(s): type in the top 3 bits (0 + an extra byte for types above 7), size in the
/// low 5 bits (29, 30, 31 announce 1, 2, 3 more size bytes).
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (low, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else if size < 285 + 65_536 {
        (30, ((size - 285) as u16).to_be_bytes().to_vec())
    } else {
        assert!(size < 65_821 + (1 << 24), "field too large");
        (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec())
    };
    if kind <= 7 {
        out.push(kind << 5 | low);
    } else {
        out.push(low);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

/// Big-endian without leading zero bytes (zero is no bytes at all).
fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    let uint = |out: &mut Vec<u8>, kind: u8, be: &[u8]| {
        let b = minimal(be);
        control(out, kind, b.len());
        out.extend_from_slice(b);
    };
    match value {
        Value::Map(pairs) => {
            control(out, MAP, pairs.len());
            for (k, v) in pairs {
                encode(&Value::Str(k.clone()), out);
                encode(v, out);
            }
        }
        Value::Str(s) => {
            control(out, UTF8, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Double(d) => {
            control(out, DOUBLE, 8);
            out.extend_from_slice(&d.to_be_bytes());
        }
        Value::Float(f) => {
            control(out, FLOAT, 4);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => {
            control(out, BYTES, b.len());
            out.extend_from_slice(b);
        }
        Value::U16(n) => uint(out, UINT16, &n.to_be_bytes()),
        Value::U32(n) => uint(out, UINT32, &n.to_be_bytes()),
        Value::U64(n) => uint(out, UINT64, &n.to_be_bytes()),
        Value::U128(n) => uint(out, UINT128, &n.to_be_bytes()),
        // Negative numbers need all four bytes (two's complement).
        Value::I32(n) if *n < 0 => {
            control(out, INT32, 4);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::I32(n) => uint(out, INT32, &n.to_be_bytes()),
        Value::Bool(b) => control(out, BOOLEAN, usize::from(*b)),
        Value::Array(items) => {
            control(out, ARRAY, items.len());
            for item in items {
                encode(item, out);
            }
        }
    }
}

#[cfg(test)]
mod self_tests {
    #[test]
    fn control_bytes_follow_the_spec() {
        use super::*;
        let mut out = Vec::new();
        control(&mut out, UTF8, 3);
        assert_eq!(out, [0x43]);
        out.clear();
        control(&mut out, UTF8, 300);
        assert_eq!(out, [0x5e, 0x00, 0x0f]);
        out.clear();
        control(&mut out, UINT64, 2);
        assert_eq!(out, [0x02, 0x02]);
        out.clear();
        encode(&Value::U32(0), &mut out);
        assert_eq!(out, [0xc0]);
    }
}
