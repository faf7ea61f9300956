//! Deno's `allowNet`: `host`, `host:port`, `*.host`, IPv4, IPv4:port, `[IPv6]`, `[IPv6]:port`.
//!
//! Name rules match the name the box used; IP rules match the address boxd connects to
//! (IPv4-mapped IPv6 read as IPv4), whatever name led there. A rule without a port matches
//! every port. An empty list allows nothing; an omitted list (no [`AllowNet`] at all) allows
//! every public destination — that is [`super::EgressPolicy`]'s business.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::decision::{Decision, Destination};
use super::host::{parse_port, HostName};
use super::pattern::DomainPattern;
use super::{Host, PolicyError};

/// What a rule names: a domain pattern or one IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleTarget {
    /// `example.com` or `*.example.com`.
    Domain(DomainPattern),
    /// `1.2.3.4` or `[2001:db8::1]`.
    Ip(IpAddr),
}

/// One `allowNet` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetRule {
    /// Host part.
    pub target: RuleTarget,
    /// `None`: every port.
    pub port: Option<u16>,
}

impl NetRule {
    /// Parses one Deno `allowNet` entry.
    pub fn parse(input: &str) -> Result<Self, PolicyError> {
        let invalid = |why: &str| PolicyError::InvalidRule {
            input: input.to_owned(),
            why: why.to_owned(),
        };
        if input.is_empty() {
            return Err(PolicyError::Empty {
                what: "allow_net rule",
            });
        }
        if input.contains("://") {
            return Err(invalid("a rule is a host or host:port, not a URL"));
        }
        // Bracketed IPv6, optionally with a port.
        if input.starts_with('[') {
            let Some(close) = input.find(']') else {
                return Err(invalid("missing ']' after the IPv6 address"));
            };
            let (host, rest) = input.split_at(close + 1);
            let port = match rest {
                "" => None,
                _ => match rest.strip_prefix(':') {
                    Some(p) => Some(parse_port(p)?),
                    None => return Err(invalid("only ':port' may follow ']'")),
                },
            };
            let Host::Ip(ip) = Host::parse(host)? else {
                return Err(invalid("brackets hold an IPv6 address"));
            };
            return Ok(NetRule {
                target: RuleTarget::Ip(refuse_mapped(input, ip)?),
                port,
            });
        }
        let (host, port) = match input.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(PolicyError::InvalidIpv6 {
                    input: input.to_owned(),
                    why: "IPv6 addresses go in brackets: [2001:db8::1] or [2001:db8::1]:443",
                })
            }
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (input, None),
        };
        if host.is_empty() {
            return Err(PolicyError::Empty {
                what: "host of an allow_net rule",
            });
        }
        let target = if host.starts_with('*') {
            RuleTarget::Domain(DomainPattern::parse(host)?)
        } else {
            match Host::parse(host)? {
                Host::Name(name) => RuleTarget::Domain(DomainPattern::Exact(name)),
                Host::Ip(ip) => RuleTarget::Ip(ip),
            }
        };
        Ok(NetRule { target, port })
    }

    /// Does this rule allow `dest`?
    pub fn matches(&self, dest: &Destination) -> bool {
        if self.port.is_some_and(|p| p != dest.port) {
            return false;
        }
        match &self.target {
            RuleTarget::Domain(pattern) => dest.name.as_ref().is_some_and(|n| pattern.matches(n)),
            RuleTarget::Ip(ip) => *ip == dest.canonical_ip(),
        }
    }

    /// Could this rule allow a connection to `name` (on `port`, or on some port if `None`)?
    /// For the resolver, which decides before any address is known: IP rules never match.
    pub fn matches_name(&self, name: &HostName, port: Option<u16>) -> bool {
        if let (Some(rule_port), Some(port)) = (self.port, port) {
            if rule_port != port {
                return false;
            }
        }
        match &self.target {
            RuleTarget::Domain(pattern) => pattern.matches(name),
            RuleTarget::Ip(_) => false,
        }
    }
}

fn refuse_mapped(input: &str, ip: IpAddr) -> Result<IpAddr, PolicyError> {
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(PolicyError::MappedIpv6 {
                input: input.to_owned(),
                v4,
            });
        }
    }
    Ok(ip)
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            RuleTarget::Domain(p) => p.fmt(f)?,
            RuleTarget::Ip(IpAddr::V4(v4)) => v4.fmt(f)?,
            RuleTarget::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl FromStr for NetRule {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetRule::parse(s)
    }
}

/// A parsed `allowNet` list. Empty = nothing allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowNet {
    rules: Vec<NetRule>,
}

impl AllowNet {
    /// Parses every entry; the first bad one is reported with its index.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, PolicyError> {
        let rules = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                NetRule::parse(e.as_ref()).map_err(|err| PolicyError::entry("allow_net", i, err))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowNet { rules })
    }

    /// From already parsed rules.
    pub fn from_rules(rules: Vec<NetRule>) -> Self {
        AllowNet { rules }
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[NetRule] {
        &self.rules
    }

    /// The first matching rule allows; no match denies.
    pub fn allows(&self, dest: &Destination) -> Decision {
        match self.rules.iter().find(|r| r.matches(dest)) {
            Some(rule) => Decision::allow(format!("allow_net \"{rule}\"")),
            None => Decision::deny("allow_net: no rule matches"),
        }
    }

    /// For the resolver: may `name` be answered?
    pub fn allows_name(&self, name: &HostName, port: Option<u16>) -> Decision {
        match self.rules.iter().find(|r| r.matches_name(name, port)) {
            Some(rule) => Decision::allow(format!("allow_net \"{rule}\"")),
            None => Decision::deny("allow_net: no rule matches the name"),
        }
    }
}
