//! Where the outside is: turning an allowed name into the addresses the
//! proxy connects to — the operator's test-only overrides first
//! (`api.example.test = "127.0.0.1:9443"`), else upstream DNS.
//!
//! Owns: upstream name resolution for the proxy and the resolver. Never:
//! decides policy (callers check every address it returns), or resolves a
//! name the box was not allowed to ask for.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::error::{NetError, Result};
use crate::policy::HostName;

/// An override target: an address, with or without a port (without: the
/// port the box asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// How to reach the outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Upstream DNS servers; empty = the host's `/etc/resolv.conf`.
    pub dns: Vec<SocketAddr>,
    /// Test-only: names answered from this map instead of DNS.
    pub overrides: BTreeMap<HostName, UpstreamTarget>,
}

/// Resolves names for the proxy and the resolver.
pub struct Upstreams {
    config: UpstreamConfig,
}

impl Upstreams {
    pub fn new(config: UpstreamConfig) -> Result<Self> {
        Ok(Upstreams { config })
    }

    /// Whether `name` is answered by an override.
    pub fn is_overridden(&self, name: &HostName) -> bool {
        self.config.overrides.contains_key(name)
    }

    /// The addresses to connect to for `name` on `port`, in preference
    /// order. An override gives exactly one.
    pub async fn resolve(&self, name: &HostName, port: u16) -> Result<Vec<SocketAddr>> {
        if let Some(t) = self.config.overrides.get(name) {
            return Ok(vec![SocketAddr::new(t.ip, t.port.unwrap_or(port))]);
        }
        Err(NetError::Resolve {
            name: name.to_string(),
            reason: "upstream DNS is not wired yet".into(),
        })
    }
}
