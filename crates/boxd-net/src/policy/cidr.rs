//! Strict CIDR parsing: canonical IP literal, decimal prefix without leading zeros, host bits
//! clear (`10.0.0.1/8` is refused, naming `10.0.0.0/8`, rather than silently widened).
//! A bare address is a host route (`/32`, `/128`).
//! Never widens a range the user wrote or resolves a name.

use std::net::IpAddr;

use ipnet::IpNet;

use super::host::parse_ip_literal;
use super::PolicyError;

/// Parses `addr/len` or a bare `addr`.
pub fn parse_cidr(input: &str) -> Result<IpNet, PolicyError> {
    let invalid = |why: &str| PolicyError::InvalidCidr {
        input: input.to_owned(),
        why: why.to_owned(),
    };
    if input.is_empty() {
        return Err(PolicyError::Empty { what: "CIDR" });
    }
    let (addr, len) = match input.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (input, None),
    };
    let ip = parse_ip_literal(addr).map_err(|e| invalid(&e.to_string()))?;
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len {
        None => max,
        Some(l) => {
            if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("the prefix length is not a decimal number"));
            }
            if l.len() > 1 && l.starts_with('0') {
                return Err(invalid("the prefix length has leading zeros"));
            }
            match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(invalid(if max == 32 {
                        "the prefix length of an IPv4 network is 0-32"
                    } else {
                        "the prefix length of an IPv6 network is 0-128"
                    }))
                }
            }
        }
    };
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() && len >= 96 {
            return Err(invalid(
                "IPv4-mapped IPv6 network; write the IPv4 network (connections to ::ffff:a.b.c.d are matched as IPv4)",
            ));
        }
    }
    let net = IpNet::new(ip, len).map_err(|_| invalid("bad prefix length"))?;
    if net.trunc() != net {
        return Err(PolicyError::NonCanonicalCidr {
            input: input.to_owned(),
            canonical: net.trunc(),
        });
    }
    Ok(net)
}
