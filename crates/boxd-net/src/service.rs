//! The network layer as the daemon runs it: the operator's `[network]`
//! settings, and one [`Network`] that owns the host ruleset, the egress
//! proxy and resolver listeners, the veth of every box and the registry
//! they all read.
//!
//! Owns: the order of start-up (listeners bound first, so the ruleset is
//! written with their real ports; the ruleset installed — atomically
//! replacing one a crash left — before any box can send a packet),
//! attaching a box (veth + registry entry) and detaching it, removing
//! leftover links at start, and removing the ruleset at clean shutdown.
//! Never: decides who a box belongs to, or which policy a box has (the
//! server tells it).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::addr::{AddressPlan, SlotAddrs};
use crate::error::{NetError, Result};
use crate::events::EventSink;
use crate::policy::{parse_cidr, AllowNet, EgressPolicy, HostName, NetworkPolicy, OperatorNet};
use crate::registry::{BoxNet, Registry};
use crate::ruleset::{Ruleset, RulesetConfig};
use crate::secrets::SecretRules;
use crate::upstream::{UpstreamConfig, UpstreamTarget, Upstreams};
use crate::veth::Veths;

/// The `[network]` table of `boxd serve --config` (every key optional).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// Give boxes a network at all (`false`: loopback only, no egress).
    pub enabled: bool,
    /// Resolvers the proxy and the box resolver use (`ip` or `ip:port`,
    /// `[v6]:port`); empty = the host's `/etc/resolv.conf`.
    pub upstream_dns: Vec<String>,
    /// Reserved ranges (loopback, private, …) boxes may reach anyway —
    /// never the host's own addresses, which only an `upstreams` override
    /// reaches.
    pub allow_ranges: Vec<String>,
    /// Ranges no box may ever reach.
    pub deny_ranges: Vec<String>,
    /// Test-only: name → address (`ip:port`, or `ip` to keep the box's
    /// port) the proxy connects to instead of resolving the name.
    pub upstreams: BTreeMap<String, String>,
    /// The nftables table boxd owns (family `inet`).
    pub table: String,
    /// Host-side box interface names are `<prefix><slot>`.
    pub interface_prefix: String,
    /// Box addresses: one /31 per box from this IPv4 pool...
    pub ipv4_pool: String,
    /// ...and one /64 per box from this IPv6 prefix.
    pub ipv6_pool: String,
    /// Host ports of the proxy and the resolver (0 = any free port; boxes
    /// never see them, the ruleset redirects to them).
    pub proxy_port: u16,
    pub resolver_port: u16,
    /// The `nft` binary.
    pub nft: String,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            enabled: true,
            upstream_dns: Vec::new(),
            allow_ranges: Vec::new(),
            deny_ranges: Vec::new(),
            upstreams: BTreeMap::new(),
            table: "boxd".into(),
            interface_prefix: crate::addr::IFNAME_PREFIX.into(),
            ipv4_pool: "10.88.0.0/16".into(),
            ipv6_pool: "fd42:b0c5::/48".into(),
            proxy_port: 0,
            resolver_port: 0,
            nft: "nft".into(),
        }
    }
}

/// Settings checked and parsed: what [`Network::start`] needs.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub plan: AddressPlan,
    pub operator: OperatorNet,
    pub upstream: UpstreamConfig,
    pub table: String,
    pub proxy_port: u16,
    pub resolver_port: u16,
    pub nft: String,
}

fn invalid(key: &str, value: &str, why: impl std::fmt::Display) -> NetError {
    NetError::InvalidSetting(format!("[network] {key} {value:?}: {why}"))
}

/// `ip`, `ip:port` or `[v6]:port`; `default_port` when none is given.
fn parse_socket_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

fn parse_pool<T: std::str::FromStr>(key: &str, s: &str) -> Result<(T, u8)> {
    let (net, len) = s
        .split_once('/')
        .ok_or_else(|| invalid(key, s, "write it as address/prefix-length"))?;
    let net = net
        .parse::<T>()
        .map_err(|_| invalid(key, s, "not an address"))?;
    let len = len
        .parse::<u8>()
        .map_err(|_| invalid(key, s, "bad prefix length"))?;
    Ok((net, len))
}

impl NetworkSettings {
    /// Checks every value; the error names the key and the problem.
    pub fn validate(&self) -> Result<NetworkConfig> {
        let (v4, v4_len) = parse_pool::<Ipv4Addr>("ipv4_pool", &self.ipv4_pool)?;
        let (v6, v6_len) = parse_pool::<Ipv6Addr>("ipv6_pool", &self.ipv6_pool)?;
        let plan =
            AddressPlan::new(v4, v4_len, v6, v6_len)?.with_ifname_prefix(&self.interface_prefix)?;
        let ranges = |key: &str, list: &[String]| -> Result<Vec<ipnet::IpNet>> {
            list.iter()
                .map(|s| parse_cidr(s).map_err(|e| invalid(key, s, e)))
                .collect()
        };
        let operator = OperatorNet {
            allow_ranges: ranges("allow_ranges", &self.allow_ranges)?,
            deny_ranges: ranges("deny_ranges", &self.deny_ranges)?,
        };
        let dns = self
            .upstream_dns
            .iter()
            .map(|s| {
                parse_socket_addr(s, 53)
                    .ok_or_else(|| invalid("upstream_dns", s, "not an ip or ip:port"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut overrides = BTreeMap::new();
        for (name, target) in &self.upstreams {
            let host = HostName::parse(name).map_err(|e| invalid("upstreams", name, e))?;
            let target = match target.parse::<SocketAddr>() {
                Ok(a) => UpstreamTarget {
                    ip: a.ip(),
                    port: Some(a.port()),
                },
                Err(_) => UpstreamTarget {
                    ip: target
                        .parse()
                        .map_err(|_| invalid("upstreams", target, "not an ip or ip:port"))?,
                    port: None,
                },
            };
            overrides.insert(host, target);
        }
        // Validated by Ruleset::new as well; checked here for a clear key.
        Ruleset::new(RulesetConfig {
            table: self.table.clone(),
            iface_prefix: self.interface_prefix.clone(),
            proxy_port: 1,
            resolver_port: 2,
            nft: self.nft.clone(),
        })?;
        Ok(NetworkConfig {
            plan,
            operator,
            upstream: UpstreamConfig { dns, overrides },
            table: self.table.clone(),
            proxy_port: self.proxy_port,
            resolver_port: self.resolver_port,
            nft: self.nft.clone(),
        })
    }
}

/// The running network layer.
pub struct Network {
    registry: Arc<Registry>,
    veths: Veths,
    ruleset: Ruleset,
    operator: OperatorNet,
    proxy_port: u16,
    resolver_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl Network {
    /// Binds the proxy and the resolver, installs the ruleset (replacing
    /// a leftover one) and starts serving. Needs root and `nft`. With
    /// `interception`, the proxy intercepts port-443 TLS to names the
    /// boxes' secret rules cover; without it every connection is spliced.
    pub async fn start(
        cfg: NetworkConfig,
        events: EventSink,
        interception: Option<crate::proxy::Interception>,
    ) -> Result<Network> {
        let registry = Arc::new(Registry::new(cfg.plan));
        let upstreams = Arc::new(Upstreams::new(cfg.upstream)?);
        let mut tasks = Vec::new();

        let (p4, p6, proxy_port) = crate::proxy::Proxy::bind_pair(cfg.proxy_port)?;
        let mut proxy =
            crate::proxy::Proxy::new(registry.clone(), upstreams.clone(), events.clone());
        if let Some(ix) = interception {
            proxy = proxy.with_interception(ix);
        }
        let proxy = Arc::new(proxy);
        tasks.push(tokio::spawn(proxy.clone().serve(p4)));
        tasks.push(tokio::spawn(proxy.serve(p6)));

        let resolver_sockets = crate::dns::Resolver::bind_pair(cfg.resolver_port)?;
        let resolver_port = resolver_sockets.port();
        let resolver = Arc::new(crate::dns::Resolver::new(
            registry.clone(),
            upstreams,
            events,
        ));
        tasks.push(tokio::spawn(resolver.serve(resolver_sockets)));

        let ruleset = Ruleset::new(RulesetConfig {
            table: cfg.table,
            iface_prefix: cfg.plan.ifname_prefix().to_string(),
            proxy_port,
            resolver_port,
            nft: cfg.nft,
        })?;
        let abort = |tasks: &[JoinHandle<()>]| tasks.iter().for_each(JoinHandle::abort);
        if let Err(e) = ruleset.install(None).await {
            abort(&tasks);
            return Err(e);
        }
        let veths = match Veths::new(cfg.plan) {
            Ok(v) => v,
            Err(e) => {
                abort(&tasks);
                return Err(e);
            }
        };
        tracing::info!(
            proxy_port,
            resolver_port,
            prefix = cfg.plan.ifname_prefix(),
            "box networking up"
        );
        Ok(Network {
            registry,
            veths,
            ruleset,
            operator: cfg.operator,
            proxy_port,
            resolver_port,
            tasks,
        })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn ports(&self) -> (u16, u16) {
        (self.proxy_port, self.resolver_port)
    }

    /// A box's full policy: its own parts plus the operator's ranges.
    pub fn policy(
        &self,
        allow_net: Option<AllowNet>,
        network_policy: Option<NetworkPolicy>,
    ) -> EgressPolicy {
        EgressPolicy::new(allow_net, network_policy, self.operator.clone())
    }

    /// Gives the box whose agent is `pid` its network: the veth pair of
    /// `slot` (replacing a leftover one) and its registry entry.
    pub async fn attach(
        &self,
        box_id: &str,
        slot: u32,
        pid: i32,
        policy: EgressPolicy,
        secrets: Arc<SecretRules>,
    ) -> Result<SlotAddrs> {
        let link = self.veths.create_for_pid(slot, pid).await?;
        self.registry.insert(Arc::new(
            BoxNet::new(box_id, link.addrs, policy).with_secrets(secrets),
        ));
        Ok(link.addrs)
    }

    /// Re-registers a box that kept running while the daemon was down:
    /// its veth is still there when `link_present` (the caller lists the
    /// links once for all boxes: [`Network::link_slots`]), recreated if not.
    pub async fn adopt(
        &self,
        box_id: &str,
        slot: u32,
        pid: i32,
        policy: EgressPolicy,
        secrets: Arc<SecretRules>,
        link_present: bool,
    ) -> Result<SlotAddrs> {
        let addrs = self.registry.plan().slot(slot)?;
        if !link_present {
            return self.attach(box_id, slot, pid, policy, secrets).await;
        }
        self.registry.insert(Arc::new(
            BoxNet::new(box_id, addrs, policy).with_secrets(secrets),
        ));
        Ok(addrs)
    }

    /// Changes a box's policy; the next query and connection use it.
    /// `false` if the box has no network here.
    pub fn set_policy(&self, box_id: &str, slot: u32, policy: EgressPolicy) -> bool {
        match self.registry.by_slot(slot) {
            Some(net) if net.box_id == box_id => {
                net.set_policy(policy);
                true
            }
            _ => false,
        }
    }

    /// Forgets a box before it is destroyed (so its slot can be reused at
    /// once). Its veth pair goes with its network namespace when the
    /// box's processes are gone; a leftover one is replaced by the next
    /// box in the slot and removed at start.
    pub fn detach(&self, box_id: &str, slot: u32) {
        if self
            .registry
            .by_slot(slot)
            .is_some_and(|net| net.box_id == box_id)
        {
            self.registry.remove(slot);
        }
    }

    /// Detaches box `box_id` from `slot` and removes the slot's veth now
    /// (both ends go at once), instead of leaving it to the kernel's
    /// background cleanup of the box's old network namespace: a restart
    /// then makes the slot's new link without racing that cleanup.
    pub async fn release(&self, box_id: &str, slot: u32) -> Result<()> {
        self.detach(box_id, slot);
        self.veths.remove(slot).await.map(|_| ())
    }

    /// Removes `<prefix><slot>` links of boxes that are not running
    /// (left by a crash); returns how many.
    pub async fn remove_leftovers(&self, live: &HashSet<u32>) -> Result<usize> {
        let mut removed = 0;
        for slot in self.veths.host_slots().await? {
            if !live.contains(&slot) && self.veths.remove(slot).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The `<prefix><slot>` links that exist now.
    pub async fn link_slots(&self) -> Result<Vec<u32>> {
        self.veths.host_slots().await
    }

    /// Clean shutdown: stops serving, and removes the ruleset — or, while
    /// boxes keep running (they are adopted by the next start), replaces
    /// it with the lockdown table so they reach nothing in between.
    pub async fn shutdown(&self) -> Result<()> {
        for t in &self.tasks {
            t.abort();
        }
        // Boxes still attached keep running after boxd stops; links of
        // deleted boxes may linger while the kernel reaps their netns.
        if self.registry.is_empty() {
            self.ruleset.remove(None).await
        } else {
            self.ruleset.lock_down(None).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let ok = NetworkSettings {
            upstream_dns: vec!["192.0.2.53".into(), "[2001:db8::1]:5353".into()],
            allow_ranges: vec!["127.0.0.0/8".into()],
            upstreams: [(
                "API.Example.test.".to_string(),
                "127.0.0.1:9443".to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let cfg = ok.validate().unwrap();
        assert_eq!(cfg.upstream.dns[0], "192.0.2.53:53".parse().unwrap());
        assert_eq!(cfg.upstream.dns[1].port(), 5353);
        let name = HostName::parse("api.example.test").unwrap();
        assert_eq!(cfg.upstream.overrides[&name].port, Some(9443));
        for (bad, key) in [
            (
                NetworkSettings {
                    upstream_dns: vec!["dns.google".into()],
                    ..Default::default()
                },
                "upstream_dns",
            ),
            (
                NetworkSettings {
                    allow_ranges: vec!["127.1/8".into()],
                    ..Default::default()
                },
                "allow_ranges",
            ),
            (
                NetworkSettings {
                    ipv4_pool: "8.8.0.0/16".into(),
                    ..Default::default()
                },
                "8.8.0.0/16",
            ),
            (
                NetworkSettings {
                    interface_prefix: "Bx".into(),
                    ..Default::default()
                },
                "Bx",
            ),
            (
                NetworkSettings {
                    table: "bad table".into(),
                    ..Default::default()
                },
                "table",
            ),
            (
                NetworkSettings {
                    upstreams: [("a@b".to_string(), "127.0.0.1".to_string())]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
                "upstreams",
            ),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn settings_parse_from_toml() {
        let s: NetworkSettings = toml_like(
            r#"{"upstream_dns": ["192.0.2.53"], "allow_ranges": ["127.0.0.0/8"],
                "upstreams": {"api.example.test": "127.0.0.1:9443"}}"#,
        );
        assert!(s.enabled);
        assert_eq!(s.upstreams.len(), 1);
        assert!(serde_json::from_str::<NetworkSettings>(r#"{"upstream": []}"#).is_err());
    }

    fn toml_like(json: &str) -> NetworkSettings {
        serde_json::from_str(json).unwrap()
    }
}
