//! What is asked ([`Destination`]) and what is answered ([`Decision`]).
//! Owns the vocabulary of a policy answer; never decides one itself.

use std::fmt;
use std::net::IpAddr;

use super::host::{canonical_ip, HostName};

/// One outbound connection as the proxy sees it after resolution: the name the box used (if
/// it used one), the address boxd will actually connect to, and the port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The normalised name, `None` when the box connected to an IP literal.
    pub name: Option<HostName>,
    /// The address boxd connects to (already resolved by boxd, never by the box).
    pub ip: IpAddr,
    /// The destination port.
    pub port: u16,
}

impl Destination {
    /// A destination reached by name.
    pub fn named(name: HostName, ip: IpAddr, port: u16) -> Self {
        Destination {
            name: Some(name),
            ip,
            port,
        }
    }

    /// A destination reached by IP literal.
    pub fn ip(ip: IpAddr, port: u16) -> Self {
        Destination {
            name: None,
            ip,
            port,
        }
    }

    /// The address rules compare against: IPv4-mapped IPv6 is read as IPv4.
    pub fn canonical_ip(&self) -> IpAddr {
        canonical_ip(self.ip)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name} ")?;
        }
        match self.ip {
            IpAddr::V4(v4) => write!(f, "{v4}:{}", self.port),
            IpAddr::V6(v6) => write!(f, "[{v6}]:{}", self.port),
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The connection (or DNS answer) may go ahead.
    Allow,
    /// It may not.
    Deny,
}

/// A verdict and the rule that decided it, as a string for the audit trail
/// (`allow_net "*.example.com"`, `reserved range loopback 127.0.0.0/8`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The deciding rule, human-readable, stable enough to grep audit logs for.
    pub rule: String,
}

impl Decision {
    /// An allow decided by `rule`.
    pub fn allow(rule: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Allow,
            rule: rule.into(),
        }
    }

    /// A deny decided by `rule`.
    pub fn deny(rule: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Deny,
            rule: rule.into(),
        }
    }

    /// True for [`Verdict::Allow`].
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Verdict::Allow => write!(f, "allow ({})", self.rule),
            Verdict::Deny => write!(f, "deny ({})", self.rule),
        }
    }
}
