//! The combined policy of one box: its `allowNet`, its `network_policy`, and the operator's
//! ranges, in one [`EgressPolicy::decide`].
//!
//! Order, first word wins:
//! 1. the operator's `deny_ranges`;
//! 2. reserved ranges ([`classify`]) unless an operator `allow_ranges` entry contains the
//!    address boxd connects to (IPv4-mapped IPv6 read as IPv4);
//! 3. `network_policy` (if given), then `allowNet` (if given): each one given must allow.
//!
//! Neither given = every public destination.
//!
//! Never resolves names or touches the network: it is given addresses.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::allow_net::AllowNet;
use super::cidr::parse_cidr;
use super::decision::{Decision, Destination};
use super::host::HostName;
use super::network_policy::{NetworkMode, NetworkPolicy};
use super::reserved::{classify, embedded_ipv4};

/// The operator's network ranges (from `boxd serve --config`, `[network]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorNet {
    /// Reserved ranges boxes may reach anyway (tests: `127.0.0.0/8`). Strict CIDRs. Never
    /// opens the host's own addresses (the proxy refuses those whatever the policy says).
    #[serde(default, deserialize_with = "strict_cidrs")]
    pub allow_ranges: Vec<IpNet>,
    /// Ranges no box may reach, whatever its policy or `allow_ranges` say.
    #[serde(default, deserialize_with = "strict_cidrs")]
    pub deny_ranges: Vec<IpNet>,
}

fn strict_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let raw = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
    raw.iter()
        .map(|s| parse_cidr(s).map_err(serde::de::Error::custom))
        .collect()
}

/// One box's egress policy plus the operator's ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// `None`: `allow_net` omitted.
    pub allow_net: Option<AllowNet>,
    /// `None`: `network_policy` omitted (same as `allow-all`).
    pub network_policy: Option<NetworkPolicy>,
    /// The operator's ranges.
    pub operator: OperatorNet,
}

impl EgressPolicy {
    /// Combines the parts.
    pub fn new(
        allow_net: Option<AllowNet>,
        network_policy: Option<NetworkPolicy>,
        operator: OperatorNet,
    ) -> Self {
        EgressPolicy {
            allow_net,
            network_policy,
            operator,
        }
    }

    /// True when the box restricts names (so the resolver must answer allowed names only).
    pub fn restricts_names(&self) -> bool {
        self.allow_net.is_some()
            || self
                .network_policy
                .as_ref()
                .is_some_and(|p| p.mode() != NetworkMode::AllowAll)
    }

    /// Decides one connection, after resolution.
    pub fn decide(&self, dest: &Destination) -> Decision {
        let ip = dest.canonical_ip();
        let embedded = match ip {
            std::net::IpAddr::V6(v6) => embedded_ipv4(v6).map(|(v4, _)| std::net::IpAddr::V4(v4)),
            std::net::IpAddr::V4(_) => None,
        };
        if let Some(net) = self
            .operator
            .deny_ranges
            .iter()
            .find(|n| n.contains(&ip) || embedded.is_some_and(|e| n.contains(&e)))
        {
            return Decision::deny(format!("operator deny_ranges \"{net}\""));
        }
        let mut operator_allow = None;
        if let Some(range) = classify(ip) {
            match self.operator.allow_ranges.iter().find(|n| n.contains(&ip)) {
                Some(net) => operator_allow = Some(*net),
                None => return Decision::deny(format!("reserved range {range}")),
            }
        }
        let mut allowed_by = Vec::new();
        if let Some(policy) = &self.network_policy {
            let d = policy.allows(dest);
            if !d.is_allowed() {
                return d;
            }
            allowed_by.push(d.rule);
        }
        if let Some(allow_net) = &self.allow_net {
            let d = allow_net.allows(dest);
            if !d.is_allowed() {
                return d;
            }
            allowed_by.push(d.rule);
        }
        if allowed_by.is_empty() {
            allowed_by.push("no policy: every public destination".to_owned());
        }
        if let Some(net) = operator_allow {
            allowed_by.push(format!("operator allow_ranges \"{net}\""));
        }
        Decision::allow(allowed_by.join("; "))
    }

    /// For the resolver: may `name` be answered (on `port`, or on any port if `None`)?
    /// Addresses are checked again at connect time by [`EgressPolicy::decide`].
    pub fn allows_name(&self, name: &HostName, port: Option<u16>) -> Decision {
        let mut allowed_by = Vec::new();
        if let Some(policy) = &self.network_policy {
            let d = policy.allows_name(name);
            if !d.is_allowed() {
                return d;
            }
            allowed_by.push(d.rule);
        }
        if let Some(allow_net) = &self.allow_net {
            let d = allow_net.allows_name(name, port);
            if !d.is_allowed() {
                return d;
            }
            allowed_by.push(d.rule);
        }
        if allowed_by.is_empty() {
            allowed_by.push("no policy: every public destination".to_owned());
        }
        Decision::allow(allowed_by.join("; "))
    }
}
