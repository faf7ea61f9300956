//! Synthetic addresses: the resolver answers a box's queries with an
//! address from 198.18.0.0/15 (A) or `fd42:b0c5:ff::/64` (AAAA), one per
//! name per box, never reused for another name while the box lives. The
//! proxy maps the destination of a connection back to the name, so
//! name-based policy works for any TCP protocol and the box never learns
//! real upstream addresses.
//!
//! Owns: the per-box name ⇄ address table. Never: resolves anything
//! upstream or decides policy.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::policy::HostName;

/// The IPv4 synthetic range, 198.18.0.0/15 (RFC 2544 benchmarking space:
/// never a real destination).
pub const SYNTH_V4_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub const SYNTH_V4_LEN: u8 = 15;
/// The IPv6 synthetic prefix (boxd's ULA, outside the box address pool).
pub const SYNTH_V6_NET: Ipv6Addr = Ipv6Addr::new(0xfd42, 0xb0c5, 0xff, 0, 0, 0, 0, 0);
pub const SYNTH_V6_LEN: u8 = 64;
/// Names one box may have addresses for at a time.
pub const MAX_NAMES_PER_BOX: u32 = 16_384;
/// The first 256 indexes (198.18.0.0/24, `fd42:b0c5:ff::/120`) are boxd's
/// service addresses, never a name's.
const FIRST_NAME_INDEX: u32 = 256;
/// boxd's resolver as boxes see it (every box's `/etc/resolv.conf`): any
/// DNS packet from a box is redirected to the resolver whatever its
/// destination, and this address names that on purpose.
pub const RESOLVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);
pub const RESOLVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd42, 0xb0c5, 0xff, 0, 0, 0, 0, 0x53);

/// The pair of synthetic addresses of one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticAddrs {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// Whether `ip` is in either synthetic range (IPv4-mapped IPv6 counts as IPv4).
pub fn is_synthetic(ip: IpAddr) -> bool {
    index_of(ip).is_some()
}

fn index_of(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => {
            let a = u32::from(v4);
            let net = u32::from(SYNTH_V4_NET);
            (a & (u32::MAX << (32 - SYNTH_V4_LEN)) == net).then(|| a - net)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return index_of(IpAddr::V4(v4));
            }
            let a = u128::from(v6);
            let net = u128::from(SYNTH_V6_NET);
            if a & (u128::MAX << (128 - SYNTH_V6_LEN)) != net {
                return None;
            }
            u32::try_from(a - net).ok()
        }
    }
}

fn addrs_of(index: u32) -> SyntheticAddrs {
    SyntheticAddrs {
        v4: Ipv4Addr::from(u32::from(SYNTH_V4_NET) + index),
        v6: Ipv6Addr::from(u128::from(SYNTH_V6_NET) + u128::from(index)),
    }
}

/// One box's table. Indexes below 256 are never handed out.
#[derive(Debug, Default)]
pub struct SyntheticNames {
    by_name: HashMap<HostName, u32>,
    by_index: Vec<HostName>,
}

impl SyntheticNames {
    /// The addresses of `name`, assigning new ones on first use; `None`
    /// once the box has [`MAX_NAMES_PER_BOX`] names.
    pub fn assign(&mut self, name: &HostName) -> Option<SyntheticAddrs> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(addrs_of(i));
        }
        let n = u32::try_from(self.by_index.len()).ok()?;
        if n >= MAX_NAMES_PER_BOX {
            return None;
        }
        let next = FIRST_NAME_INDEX + n;
        self.by_name.insert(name.clone(), next);
        self.by_index.push(name.clone());
        Some(addrs_of(next))
    }

    /// The name a synthetic address was assigned to, if any.
    pub fn name_of(&self, ip: IpAddr) -> Option<&HostName> {
        let i = index_of(ip)?;
        self.by_index
            .get(usize::try_from(i.checked_sub(FIRST_NAME_INDEX)?).ok()?)
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    #[test]
    fn one_stable_address_pair_per_name() {
        let mut t = SyntheticNames::default();
        let a = t.assign(&name("a.example.com")).unwrap();
        let b = t.assign(&name("b.example.com")).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.assign(&name("A.Example.com.")).unwrap(), a);
        assert_eq!(a.v4, Ipv4Addr::new(198, 18, 1, 0));
        assert_eq!(a.v6, "fd42:b0c5:ff::100".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            t.name_of(IpAddr::V4(a.v4)).unwrap().as_str(),
            "a.example.com"
        );
        assert_eq!(
            t.name_of(IpAddr::V6(b.v6)).unwrap().as_str(),
            "b.example.com"
        );
        let mapped = IpAddr::V6(a.v4.to_ipv6_mapped());
        assert_eq!(t.name_of(mapped).unwrap().as_str(), "a.example.com");
        assert!(t.name_of("198.18.0.0".parse().unwrap()).is_none());
        assert!(t.name_of("198.18.0.9".parse().unwrap()).is_none());
        assert!(t.name_of(IpAddr::V4(RESOLVER_V4)).is_none());
        assert!(t.name_of("198.18.1.2".parse().unwrap()).is_none());
        assert!(t.name_of("10.0.0.1".parse().unwrap()).is_none());
        assert!(is_synthetic("198.19.255.255".parse().unwrap()));
        assert!(!is_synthetic("198.20.0.0".parse().unwrap()));
        assert!(!is_synthetic("fd42:b0c5:fe::1".parse().unwrap()));
    }

    #[test]
    fn table_is_bounded() {
        let mut t = SyntheticNames::default();
        for i in 0..MAX_NAMES_PER_BOX {
            assert!(t.assign(&name(&format!("n{i}.example.com"))).is_some());
        }
        assert!(t.assign(&name("one-more.example.com")).is_none());
        assert!(t.assign(&name("n7.example.com")).is_some());
        assert_eq!(t.len(), MAX_NAMES_PER_BOX as usize);
    }
}
