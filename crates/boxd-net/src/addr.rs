//! The address plan: which IPv4 and IPv6 addresses a box slot's veth pair
//! gets, and which slot an address or interface name belongs to.
//!
//! Owns: pure arithmetic over two configurable pools — an IPv4 private pool
//! (default `10.88.0.0/16`) cut into /31 pairs, and an IPv6 ULA prefix
//! (default `fd42:b0c5::/48`) cut into one /64 per box. Slot `n` gets:
//!
//! - IPv4: host end `pool + 2n`, box end `pool + 2n + 1`, prefix /31
//!   (RFC 3021 point-to-point: no network or broadcast address wasted).
//! - IPv6: the /64 `prefix + (n << 64)`, host end `::1`, box end `::2`.
//!   A /64 per box (not a /127) keeps the addresses readable — slot 5 is
//!   `fd42:b0c5:0:5::1` — and is the usual subnet size for a link.
//! - the host-side interface name `bx<n>` (at most 12 of the 15 bytes
//!   Linux allows).
//!
//! Capacity is `min(2^(32 - v4_len) / 2, 2^(64 - v6_len))`: 32768 boxes
//! with the defaults (the IPv4 /16 is the limit; the /48 has 65536 /64s),
//! twice the runtime's 16384 id-map slots.
//!
//! Never: touches the kernel, allocates slots (the runtime does), or
//! hands out an address outside its pool. The mapping is a bijection, so
//! the egress proxy can tell the box from the local address a connection
//! arrived on (`slot_of_host_addr`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{NetError, Result};

/// The default host-side interface name prefix of box veths.
pub const IFNAME_PREFIX: &str = "bx";
/// The longest interface name prefix: leaves room for any slot number in
/// the kernel's 15-byte interface names.
pub const MAX_IFNAME_PREFIX_LEN: usize = 5;

/// Prefix length of a box's IPv4 point-to-point pair.
pub const V4_PAIR_PREFIX_LEN: u8 = 31;
/// Prefix length of a box's IPv6 subnet.
pub const V6_BOX_PREFIX_LEN: u8 = 64;

/// The two pools box addresses come from, and the prefix of the host-side
/// interface names (`bx<slot>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    v4_net: Ipv4Addr,
    v4_len: u8,
    v6_net: Ipv6Addr,
    v6_len: u8,
    prefix: [u8; MAX_IFNAME_PREFIX_LEN],
    prefix_len: u8,
}

/// The addresses of one box slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotAddrs {
    pub slot: u32,
    pub host_v4: Ipv4Addr,
    pub box_v4: Ipv4Addr,
    pub host_v6: Ipv6Addr,
    pub box_v6: Ipv6Addr,
}

impl Default for AddressPlan {
    fn default() -> Self {
        AddressPlan::new(
            Ipv4Addr::new(10, 88, 0, 0),
            16,
            Ipv6Addr::new(0xfd42, 0xb0c5, 0, 0, 0, 0, 0, 0),
            48,
        )
        .expect("the default plan is valid")
    }
}

impl AddressPlan {
    /// A plan over `v4_net/v4_len` and `v6_net/v6_len`. The IPv4 pool must
    /// be private (RFC 1918 or 100.64/10) and hold at least one pair; the
    /// IPv6 prefix must be ULA (fc00::/7) and at most /64. Both must be
    /// written with zero host bits.
    pub fn new(v4_net: Ipv4Addr, v4_len: u8, v6_net: Ipv6Addr, v6_len: u8) -> Result<Self> {
        let v4_pool = format!("{v4_net}/{v4_len}");
        let v6_pool = format!("{v6_net}/{v6_len}");
        let bad = |pool: &str, reason| NetError::InvalidPool {
            pool: pool.to_string(),
            reason,
        };
        if v4_len > V4_PAIR_PREFIX_LEN {
            return Err(bad(&v4_pool, "an IPv4 pool must be /31 or larger"));
        }
        if v4_len < 8 {
            return Err(bad(&v4_pool, "an IPv4 pool must be /8 or smaller"));
        }
        if u32::from(v4_net) & !mask_v4(v4_len) != 0 {
            return Err(bad(&v4_pool, "host bits are set"));
        }
        let o = v4_net.octets();
        let shared = o[0] == 100 && (o[1] & 0xc0) == 64 && v4_len >= 10;
        let private = (o[0] == 10 && v4_len >= 8)
            || (o[0] == 172 && (o[1] & 0xf0) == 16 && v4_len >= 12)
            || (o[0] == 192 && o[1] == 168 && v4_len >= 16);
        if !(private || shared) {
            return Err(bad(
                &v4_pool,
                "not inside 10/8, 172.16/12, 192.168/16 or 100.64/10",
            ));
        }
        if v6_len > V6_BOX_PREFIX_LEN {
            return Err(bad(&v6_pool, "an IPv6 prefix must be /64 or larger"));
        }
        if v6_len < 7 {
            return Err(bad(&v6_pool, "an IPv6 prefix must be inside fc00::/7"));
        }
        if u128::from(v6_net) & !mask_v6(v6_len) != 0 {
            return Err(bad(&v6_pool, "host bits are set"));
        }
        if v6_net.segments()[0] & 0xfe00 != 0xfc00 {
            return Err(bad(&v6_pool, "not a ULA prefix (fc00::/7)"));
        }
        let mut prefix = [0; MAX_IFNAME_PREFIX_LEN];
        prefix[..IFNAME_PREFIX.len()].copy_from_slice(IFNAME_PREFIX.as_bytes());
        Ok(AddressPlan {
            v4_net,
            v4_len,
            v6_net,
            v6_len,
            prefix,
            prefix_len: IFNAME_PREFIX.len() as u8,
        })
    }

    /// The same plan with host-side interfaces named `<prefix><slot>`:
    /// 1-5 of `a-z`, `0-9` starting with a letter (so two daemons on one
    /// host, e.g. test daemons, never touch each other's links).
    pub fn with_ifname_prefix(mut self, prefix: &str) -> Result<Self> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_IFNAME_PREFIX_LEN
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(NetError::InvalidPool {
                pool: prefix.to_string(),
                reason: "an interface prefix is 1-5 of a-z, 0-9, starting with a letter",
            });
        }
        self.prefix = [0; MAX_IFNAME_PREFIX_LEN];
        self.prefix[..prefix.len()].copy_from_slice(prefix.as_bytes());
        self.prefix_len = prefix.len() as u8;
        Ok(self)
    }

    /// The host-side interface name prefix (`bx`).
    pub fn ifname_prefix(&self) -> &str {
        // Checked ASCII on the way in.
        std::str::from_utf8(&self.prefix[..usize::from(self.prefix_len)]).unwrap_or("bx")
    }

    /// `<prefix><slot>`, e.g. `bx7`.
    pub fn host_ifname(&self, slot: u32) -> String {
        format!("{}{slot}", self.ifname_prefix())
    }

    /// The slot of a host-side interface name made by [`Self::host_ifname`].
    pub fn slot_of_ifname(&self, name: &str) -> Option<u32> {
        let digits = name.strip_prefix(self.ifname_prefix())?;
        // Only the canonical spelling: no sign, no leading zeros.
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// How many box slots the plan has addresses for (slots `0..capacity`).
    pub fn capacity(&self) -> u32 {
        let v4_pairs: u64 = 1u64 << (32 - u32::from(self.v4_len) - 1);
        let v6_nets: u64 = 1u64
            .checked_shl(64 - u32::from(self.v6_len))
            .unwrap_or(u64::MAX);
        v4_pairs.min(v6_nets).min(u64::from(u32::MAX)) as u32
    }

    /// The IPv4 pool as `(network, prefix length)`.
    pub fn v4_pool(&self) -> (Ipv4Addr, u8) {
        (self.v4_net, self.v4_len)
    }

    /// The IPv6 prefix as `(network, prefix length)`.
    pub fn v6_pool(&self) -> (Ipv6Addr, u8) {
        (self.v6_net, self.v6_len)
    }

    /// The addresses of `slot`.
    pub fn slot(&self, slot: u32) -> Result<SlotAddrs> {
        let capacity = self.capacity();
        if slot >= capacity {
            return Err(NetError::SlotOutOfRange { slot, capacity });
        }
        let host4 = u32::from(self.v4_net) + 2 * slot;
        let net6 = u128::from(self.v6_net) | (u128::from(slot) << 64);
        Ok(SlotAddrs {
            slot,
            host_v4: Ipv4Addr::from(host4),
            box_v4: Ipv4Addr::from(host4 + 1),
            host_v6: Ipv6Addr::from(net6 | 1),
            box_v6: Ipv6Addr::from(net6 | 2),
        })
    }

    /// The slot whose *host-side* address is `addr` (IPv4-mapped IPv6
    /// addresses count as IPv4), or `None`. This is how the egress proxy
    /// knows the box from the local address of a redirected connection.
    pub fn slot_of_host_addr(&self, addr: IpAddr) -> Option<u32> {
        self.slot_of(addr).filter(|&(_, host)| host).map(|(s, _)| s)
    }

    /// The slot whose *box-side* address is `addr`, or `None`.
    pub fn slot_of_box_addr(&self, addr: IpAddr) -> Option<u32> {
        self.slot_of(addr)
            .filter(|&(_, host)| !host)
            .map(|(s, _)| s)
    }

    /// `(slot, is_host_end)` of an address in the plan.
    fn slot_of(&self, addr: IpAddr) -> Option<(u32, bool)> {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        let found = match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                if a & mask_v4(self.v4_len) != u32::from(self.v4_net) {
                    return None;
                }
                let off = a - u32::from(self.v4_net);
                (off / 2, off % 2 == 0)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                if a & mask_v6(self.v6_len) != u128::from(self.v6_net) {
                    return None;
                }
                let slot = (a >> 64) as u64
                    & !(u64::MAX
                        .checked_shl(64 - u32::from(self.v6_len))
                        .unwrap_or(0));
                let iid = a as u64;
                let host = match iid {
                    1 => true,
                    2 => false,
                    _ => return None,
                };
                (u32::try_from(slot).ok()?, host)
            }
        };
        (found.0 < self.capacity()).then_some(found)
    }
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn default_plan() {
        let plan = AddressPlan::default();
        assert_eq!(plan.capacity(), 32768);
        let s0 = plan.slot(0).unwrap();
        assert_eq!(s0.host_v4, Ipv4Addr::new(10, 88, 0, 0));
        assert_eq!(s0.box_v4, Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s0.host_v6, "fd42:b0c5::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(s0.box_v6, "fd42:b0c5::2".parse::<Ipv6Addr>().unwrap());
        let s = plan.slot(300).unwrap();
        assert_eq!(s.host_v4, Ipv4Addr::new(10, 88, 2, 88));
        assert_eq!(s.box_v4, Ipv4Addr::new(10, 88, 2, 89));
        assert_eq!(s.host_v6, "fd42:b0c5:0:12c::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(plan.host_ifname(s.slot), "bx300");
        let last = plan.slot(32767).unwrap();
        assert_eq!(last.box_v4, Ipv4Addr::new(10, 88, 255, 255));
        assert_eq!(
            last.host_v6,
            "fd42:b0c5:0:7fff::1".parse::<Ipv6Addr>().unwrap()
        );
        assert!(matches!(
            plan.slot(32768),
            Err(NetError::SlotOutOfRange {
                slot: 32768,
                capacity: 32768
            })
        ));
    }

    #[test]
    fn no_overlap_and_inside_pools() {
        let plan = AddressPlan::default();
        let mut seen = HashSet::new();
        for slot in 0..plan.capacity() {
            let s = plan.slot(slot).unwrap();
            for a in [
                IpAddr::V4(s.host_v4),
                IpAddr::V4(s.box_v4),
                IpAddr::V6(s.host_v6),
                IpAddr::V6(s.box_v6),
            ] {
                assert!(seen.insert(a), "{a} handed out twice");
            }
            assert_eq!(s.host_v4.octets()[..2], [10, 88]);
            assert_eq!(s.host_v6.segments()[..3], [0xfd42, 0xb0c5, 0]);
            // Both ends of the /31 share the pair.
            assert_eq!(u32::from(s.host_v4) >> 1, u32::from(s.box_v4) >> 1);
            // The reverse mapping is exact.
            assert_eq!(plan.slot_of_host_addr(IpAddr::V4(s.host_v4)), Some(slot));
            assert_eq!(plan.slot_of_box_addr(IpAddr::V4(s.box_v4)), Some(slot));
            assert_eq!(plan.slot_of_host_addr(IpAddr::V6(s.host_v6)), Some(slot));
            assert_eq!(plan.slot_of_box_addr(IpAddr::V6(s.box_v6)), Some(slot));
            assert_eq!(plan.slot_of_host_addr(IpAddr::V4(s.box_v4)), None);
        }
        assert_eq!(seen.len(), 4 * 32768);
    }

    #[test]
    fn reverse_mapping_rejects_foreign_addresses() {
        let plan = AddressPlan::default();
        for a in [
            "10.89.0.0",
            "127.0.0.1",
            "fd42:b0c5:0:5::3",
            "fd42:b0c6::1",
            "::1",
        ] {
            assert_eq!(plan.slot_of_host_addr(a.parse().unwrap()), None, "{a}");
            assert_eq!(plan.slot_of_box_addr(a.parse().unwrap()), None, "{a}");
        }
        // IPv6 subnets past the IPv4 capacity are not slots.
        assert_eq!(
            plan.slot_of_host_addr("fd42:b0c5:0:8000::1".parse().unwrap()),
            None
        );
        // A v4-mapped local address (dual-stack listener) still maps.
        assert_eq!(
            plan.slot_of_host_addr("::ffff:10.88.0.10".parse().unwrap()),
            Some(5)
        );
    }

    #[test]
    fn small_and_odd_pools() {
        let plan = AddressPlan::new(
            Ipv4Addr::new(192, 168, 7, 0),
            24,
            "fd00:1:2:4::".parse().unwrap(),
            62,
        )
        .unwrap();
        // 128 IPv4 pairs, but only 4 /64s in a /62.
        assert_eq!(plan.capacity(), 4);
        assert_eq!(
            plan.slot(3).unwrap().host_v6,
            "fd00:1:2:7::1".parse::<Ipv6Addr>().unwrap()
        );
        assert!(plan.slot(4).is_err());
        let one = AddressPlan::new(
            Ipv4Addr::new(10, 0, 0, 8),
            31,
            "fd00::".parse().unwrap(),
            64,
        )
        .unwrap();
        assert_eq!(one.capacity(), 1);
        assert_eq!(one.slot(0).unwrap().box_v4, Ipv4Addr::new(10, 0, 0, 9));
        // A /8 of IPv4 with a /32 of IPv6 is capped by u32.
        let big =
            AddressPlan::new(Ipv4Addr::new(10, 0, 0, 0), 8, "fd00::".parse().unwrap(), 8).unwrap();
        assert_eq!(big.capacity(), 1 << 23);
    }

    #[test]
    fn invalid_pools() {
        let v6: Ipv6Addr = "fd42:b0c5::".parse().unwrap();
        let v4 = Ipv4Addr::new(10, 88, 0, 0);
        for (a, l) in [
            (Ipv4Addr::new(10, 88, 0, 1), 16),   // host bits
            (Ipv4Addr::new(8, 8, 0, 0), 16),     // public
            (Ipv4Addr::new(172, 0, 0, 0), 8),    // wider than 172.16/12
            (Ipv4Addr::new(192, 168, 0, 0), 15), // wider than 192.168/16
            (v4, 32),
            (v4, 4),
        ] {
            assert!(AddressPlan::new(a, l, v6, 48).is_err(), "{a}/{l}");
        }
        for (a, l) in [
            ("2001:db8::", 48),
            ("fd42:b0c5::1", 48),
            ("fd42:b0c5::", 96),
            ("fc00::", 6),
        ] {
            assert!(
                AddressPlan::new(v4, 16, a.parse().unwrap(), l).is_err(),
                "{a}/{l}"
            );
        }
        assert!(AddressPlan::new(Ipv4Addr::new(100, 64, 0, 0), 10, v6, 48).is_ok());
    }

    #[test]
    fn ifnames() {
        let plan = AddressPlan::default();
        assert_eq!(plan.host_ifname(u32::MAX), "bx4294967295");
        assert_eq!(plan.slot_of_ifname("bx0"), Some(0));
        assert_eq!(plan.slot_of_ifname("bx42"), Some(42));
        for bad in ["bx", "bx01", "bx-1", "bx+1", "eth0", "bx4294967296", "bx1a"] {
            assert_eq!(plan.slot_of_ifname(bad), None, "{bad}");
        }
        let t = plan.with_ifname_prefix("tq12a").unwrap();
        assert!(t.host_ifname(u32::MAX).len() <= 15);
        assert_eq!(t.slot_of_ifname("tq12a9"), Some(9));
        assert_eq!(t.slot_of_ifname("bx9"), None);
        for bad in ["", "toolong", "1ab", "a-b", "AB"] {
            assert!(plan.with_ifname_prefix(bad).is_err(), "{bad}");
        }
    }
}
