//! Address ranges a box never reaches, whatever its policy says, unless the operator config
//! allows the range: the DNS-rebinding and SSRF defence, applied to the address boxd is about
//! to connect to (after resolution, never to a name).
//!
//! IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//! `::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
//! are classified by the IPv4 address they embed, so `::ffff:7f00:1` is loopback.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The named kinds of reserved range, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservedKind {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 0.0.0.0, ::.
    Unspecified,
    /// 0.0.0.0/8 ("this network").
    ThisNetwork,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), unique-local fc00::/7, site-local fec0::/10,
    /// local-use NAT64 64:ff9b:1::/48.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Cloud instance metadata endpoints (169.254.169.254, fd00:ec2::254, …).
    Metadata,
    /// 100.64.0.0/10, carrier-grade NAT shared space.
    Cgnat,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 198.18.0.0/15: benchmarking space, where boxd's resolver hands out synthetic addresses.
    Benchmarking,
    /// 192.0.0.0/24, IETF protocol assignments.
    IetfProtocol,
    /// 240.0.0.0/4, reserved for future use.
    FutureUse,
    /// 100::/64, discard-only.
    DiscardOnly,
    /// `::a.b.c.d` with a public IPv4 (deprecated IPv4-compatible form, never routed).
    Ipv4Compatible,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32 (RFC 5737, RFC 3849):
    /// documentation, never a public destination (hosts and labs number their own links
    /// from them).
    Documentation,
}

impl ReservedKind {
    /// A short stable name (`loopback`, `private`, `metadata`, …).
    pub fn name(self) -> &'static str {
        match self {
            ReservedKind::Loopback => "loopback",
            ReservedKind::Unspecified => "unspecified",
            ReservedKind::ThisNetwork => "this-network",
            ReservedKind::Private => "private",
            ReservedKind::LinkLocal => "link-local",
            ReservedKind::Metadata => "metadata",
            ReservedKind::Cgnat => "cgnat",
            ReservedKind::Multicast => "multicast",
            ReservedKind::Broadcast => "broadcast",
            ReservedKind::Benchmarking => "benchmarking",
            ReservedKind::IetfProtocol => "ietf-protocol",
            ReservedKind::FutureUse => "future-use",
            ReservedKind::DiscardOnly => "discard-only",
            ReservedKind::Ipv4Compatible => "ipv4-compatible",
            ReservedKind::Documentation => "documentation",
        }
    }
}

/// How an IPv6 address embedded the IPv4 address that was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`.
    Ipv4Mapped,
    /// `::a.b.c.d` (deprecated).
    Ipv4Compatible,
    /// `::ffff:0:a.b.c.d` (SIIT).
    Ipv4Translated,
    /// `64:ff9b::a.b.c.d` (RFC 6052 well-known prefix).
    Nat64,
    /// `2002:AABB:CCDD::/48` (6to4).
    SixToFour,
}

impl Embedding {
    /// A short stable name.
    pub fn name(self) -> &'static str {
        match self {
            Embedding::Ipv4Mapped => "IPv4-mapped IPv6",
            Embedding::Ipv4Compatible => "IPv4-compatible IPv6",
            Embedding::Ipv4Translated => "IPv4-translated IPv6",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
        }
    }
}

/// The reserved range an address falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservedRange {
    /// Which kind.
    pub kind: ReservedKind,
    /// The range (for embedded addresses: the IPv4 range of the embedded address).
    pub net: IpNet,
    /// Set when the address was an IPv6 form embedding an IPv4 address.
    pub via: Option<Embedding>,
}

impl fmt::Display for ReservedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.net)?;
        if let Some(via) = self.via {
            write!(f, " (via {})", via.name())?;
        }
        Ok(())
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6n(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// IPv4 table, most specific first.
const V4: &[(ReservedKind, Ipv4Net)] = &[
    (ReservedKind::Metadata, v4(169, 254, 169, 254, 32)),
    (ReservedKind::Metadata, v4(169, 254, 170, 2, 32)),
    (ReservedKind::Metadata, v4(100, 100, 100, 200, 32)),
    (ReservedKind::Metadata, v4(192, 0, 0, 192, 32)),
    (ReservedKind::Broadcast, v4(255, 255, 255, 255, 32)),
    (ReservedKind::Unspecified, v4(0, 0, 0, 0, 32)),
    (ReservedKind::ThisNetwork, v4(0, 0, 0, 0, 8)),
    (ReservedKind::Loopback, v4(127, 0, 0, 0, 8)),
    (ReservedKind::Private, v4(10, 0, 0, 0, 8)),
    (ReservedKind::Private, v4(172, 16, 0, 0, 12)),
    (ReservedKind::Private, v4(192, 168, 0, 0, 16)),
    (ReservedKind::LinkLocal, v4(169, 254, 0, 0, 16)),
    (ReservedKind::Cgnat, v4(100, 64, 0, 0, 10)),
    (ReservedKind::Benchmarking, v4(198, 18, 0, 0, 15)),
    (ReservedKind::IetfProtocol, v4(192, 0, 0, 0, 24)),
    (ReservedKind::Documentation, v4(192, 0, 2, 0, 24)),
    (ReservedKind::Documentation, v4(198, 51, 100, 0, 24)),
    (ReservedKind::Documentation, v4(203, 0, 113, 0, 24)),
    (ReservedKind::Multicast, v4(224, 0, 0, 0, 4)),
    (ReservedKind::FutureUse, v4(240, 0, 0, 0, 4)),
];

/// IPv6 table (after the embedded-IPv4 forms), most specific first.
const V6: &[(ReservedKind, Ipv6Net)] = &[
    (
        ReservedKind::Metadata,
        v6n([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
    ),
    (
        ReservedKind::Private,
        v6n([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    ),
    (ReservedKind::Private, v6n([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)),
    (
        ReservedKind::LinkLocal,
        v6n([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    ),
    (
        ReservedKind::Private,
        v6n([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    ),
    (
        ReservedKind::Multicast,
        v6n([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
    ),
    (
        ReservedKind::DiscardOnly,
        v6n([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    ),
    (
        ReservedKind::Documentation,
        v6n([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    ),
];

/// The IPv4 address an IPv6 address embeds, and how; `None` for `::`, `::1` and ordinary
/// IPv6 addresses.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((tail, Embedding::Ipv4Mapped)),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some((tail, Embedding::Ipv4Translated)),
        [0, 0, 0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0, 0, 0, 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some((tail, Embedding::Ipv4Compatible)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some((tail, Embedding::Nat64)),
        [0x2002, _, _, ..] => Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), Embedding::SixToFour)),
        _ => None,
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<(ReservedKind, IpNet)> {
    V4.iter()
        .find(|(_, net)| net.contains(&ip))
        .map(|(kind, net)| (*kind, IpNet::V4(*net)))
}

/// The reserved range `ip` falls in, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<ReservedRange> {
    let v6 = match ip {
        IpAddr::V4(v4) => {
            return classify_v4(v4).map(|(kind, net)| ReservedRange {
                kind,
                net,
                via: None,
            })
        }
        IpAddr::V6(v6) => v6,
    };
    if v6.is_unspecified() {
        return Some(ReservedRange {
            kind: ReservedKind::Unspecified,
            net: IpNet::V6(v6_net(v6, 128)),
            via: None,
        });
    }
    if v6.is_loopback() {
        return Some(ReservedRange {
            kind: ReservedKind::Loopback,
            net: IpNet::V6(v6_net(v6, 128)),
            via: None,
        });
    }
    if let Some((inner, via)) = embedded_ipv4(v6) {
        if let Some((kind, net)) = classify_v4(inner) {
            return Some(ReservedRange {
                kind,
                net,
                via: Some(via),
            });
        }
        if via == Embedding::Ipv4Compatible {
            return Some(ReservedRange {
                kind: ReservedKind::Ipv4Compatible,
                net: IpNet::V6(v6n([0, 0, 0, 0, 0, 0, 0, 0], 96)),
                via: None,
            });
        }
    }
    V6.iter()
        .find(|(_, net)| net.contains(&v6))
        .map(|(kind, net)| ReservedRange {
            kind: *kind,
            net: IpNet::V6(*net),
            via: None,
        })
}

fn v6_net(ip: Ipv6Addr, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(ip, len)
}
