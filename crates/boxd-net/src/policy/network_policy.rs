//! Upstash's `network_policy`:
//! `{"mode": "allow-all" | "deny-all" | "custom", "allowed_domains": [..], "allowed_cidrs": [..], "denied_cidrs": [..]}`.
//!
//! - `allow-all`: every public destination, except `denied_cidrs`; `allowed_*` must be empty.
//! - `deny-all`: nothing; every list must be empty.
//! - `custom`: `denied_cidrs` first (they win over everything), then a name matching
//!   `allowed_domains` or an address in `allowed_cidrs`; nothing else.
//!
//! Domain entries use the [`DomainPattern`] grammar (no ports); CIDRs are strict
//! ([`parse_cidr`]). CIDR rules match the address boxd connects to, whatever name led there;
//! denied CIDRs also match the IPv4 address embedded in an IPv6 form (NAT64, 6to4, …).
//! `null` lists are empty lists; unknown fields are an error (a typo must not silently widen).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use super::cidr::parse_cidr;
use super::decision::{Decision, Destination};
use super::host::HostName;
use super::pattern::DomainPattern;
use super::reserved::embedded_ipv4;
use super::PolicyError;

/// The policy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// Every public destination.
    AllowAll,
    /// Nothing.
    DenyAll,
    /// The lists decide.
    Custom,
}

impl NetworkMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::AllowAll => "allow-all",
            NetworkMode::DenyAll => "deny-all",
            NetworkMode::Custom => "custom",
        }
    }
}

/// The wire shape, as strings (what the API receives and stores).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// The mode.
    pub mode: NetworkMode,
    /// Domain patterns (`example.com`, `*.example.com`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub allowed_domains: Vec<String>,
    /// Allowed networks.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub allowed_cidrs: Vec<String>,
    /// Denied networks (win over everything allowed).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub denied_cidrs: Vec<String>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// A validated network policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    mode: NetworkMode,
    allowed_domains: Vec<DomainPattern>,
    allowed_cidrs: Vec<IpNet>,
    denied_cidrs: Vec<IpNet>,
}

impl NetworkPolicy {
    /// `allow-all` with no exceptions.
    pub fn allow_all() -> Self {
        NetworkPolicy {
            mode: NetworkMode::AllowAll,
            allowed_domains: Vec::new(),
            allowed_cidrs: Vec::new(),
            denied_cidrs: Vec::new(),
        }
    }

    /// `deny-all`.
    pub fn deny_all() -> Self {
        NetworkPolicy {
            mode: NetworkMode::DenyAll,
            ..Self::allow_all()
        }
    }

    /// Validates the wire shape. Errors name the list and index of the bad entry.
    pub fn from_spec(spec: &NetworkPolicySpec) -> Result<Self, PolicyError> {
        let mode = spec.mode;
        let contradiction = |list: &str| PolicyError::InvalidPolicy {
            why: format!("mode {} takes no {list}; use mode custom", mode.as_str()),
        };
        match mode {
            NetworkMode::DenyAll if !spec.denied_cidrs.is_empty() => {
                return Err(contradiction("denied_cidrs"))
            }
            NetworkMode::AllowAll | NetworkMode::DenyAll if !spec.allowed_domains.is_empty() => {
                return Err(contradiction("allowed_domains"))
            }
            NetworkMode::AllowAll | NetworkMode::DenyAll if !spec.allowed_cidrs.is_empty() => {
                return Err(contradiction("allowed_cidrs"))
            }
            _ => {}
        }
        let allowed_domains = spec
            .allowed_domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                DomainPattern::parse(d).map_err(|e| {
                    let e = match e {
                        PolicyError::NotAName { input, .. } => PolicyError::NotAName {
                            input,
                            hint: "; put addresses in allowed_cidrs",
                        },
                        other => other,
                    };
                    PolicyError::entry("allowed_domains", i, e)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cidrs = |field: &'static str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, c)| parse_cidr(c).map_err(|e| PolicyError::entry(field, i, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(NetworkPolicy {
            mode,
            allowed_domains,
            allowed_cidrs: cidrs("allowed_cidrs", &spec.allowed_cidrs)?,
            denied_cidrs: cidrs("denied_cidrs", &spec.denied_cidrs)?,
        })
    }

    /// Validates a JSON value as stored by the API (`null` = no policy given = allow-all).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, PolicyError> {
        if value.is_null() {
            return Ok(Self::allow_all());
        }
        let spec = NetworkPolicySpec::deserialize(value)
            .map_err(|e| PolicyError::InvalidPolicy { why: e.to_string() })?;
        Self::from_spec(&spec)
    }

    /// The wire shape again (canonical strings).
    pub fn to_spec(&self) -> NetworkPolicySpec {
        NetworkPolicySpec {
            mode: self.mode,
            allowed_domains: self.allowed_domains.iter().map(|d| d.to_string()).collect(),
            allowed_cidrs: self.allowed_cidrs.iter().map(|c| c.to_string()).collect(),
            denied_cidrs: self.denied_cidrs.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> NetworkMode {
        self.mode
    }

    /// Decide one connection.
    pub fn allows(&self, dest: &Destination) -> Decision {
        if self.mode == NetworkMode::DenyAll {
            return Decision::deny("network_policy deny-all");
        }
        let ip = dest.canonical_ip();
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(|(v4, _)| IpAddr::V4(v4)),
            IpAddr::V4(_) => None,
        };
        if let Some(net) = self
            .denied_cidrs
            .iter()
            .find(|n| n.contains(&ip) || embedded.is_some_and(|e| n.contains(&e)))
        {
            return Decision::deny(format!("network_policy denied_cidrs \"{net}\""));
        }
        if self.mode == NetworkMode::AllowAll {
            return Decision::allow("network_policy allow-all");
        }
        if let Some(name) = &dest.name {
            if let Some(p) = self.allowed_domains.iter().find(|p| p.matches(name)) {
                return Decision::allow(format!("network_policy allowed_domains \"{p}\""));
            }
        }
        if let Some(net) = self.allowed_cidrs.iter().find(|n| n.contains(&ip)) {
            return Decision::allow(format!("network_policy allowed_cidrs \"{net}\""));
        }
        Decision::deny("network_policy custom: no rule matches")
    }

    /// For the resolver: may `name` be answered? (CIDR rules are checked after resolution.)
    pub fn allows_name(&self, name: &HostName) -> Decision {
        match self.mode {
            NetworkMode::DenyAll => Decision::deny("network_policy deny-all"),
            NetworkMode::AllowAll => Decision::allow("network_policy allow-all"),
            NetworkMode::Custom => match self.allowed_domains.iter().find(|p| p.matches(name)) {
                Some(p) => Decision::allow(format!("network_policy allowed_domains \"{p}\"")),
                None => Decision::deny(
                    "network_policy custom: no allowed_domains entry matches the name",
                ),
            },
        }
    }
}
