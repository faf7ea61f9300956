//! Where the outside is: turning an allowed name into the addresses the
//! proxy connects to — the operator's test-only overrides first
//! (`api.example.test = "127.0.0.1:9443"`), else upstream DNS.
//!
//! Upstream DNS is a `hickory-resolver` stub resolver over UDP and TCP,
//! to the operator's servers (`[network] dns`) or, when none are given,
//! the `nameserver`s of the host's `/etc/resolv.conf`. Short timeouts
//! (2 s per try, 2 tries, and a hard deadline over the whole lookup) so
//! a dead upstream turns into a quick SERVFAIL rather than a hung box;
//! answers are cached (positive and negative, by their TTLs).
//!
//! Exactly the name the caller passes is asked, as a fully qualified
//! name: no search list, no `ndots`, no `domain` suffix from
//! `resolv.conf`, no host `/etc/hosts` — so nothing but a name that the
//! caller (after its policy check) passed ever reaches upstream.
//!
//! Owns: upstream name resolution for the proxy and the resolver, and the
//! difference between "the name does not exist or has no address"
//! ([`NetError::NameNotFound`]) and "upstream failed"
//! ([`NetError::Resolve`]). Never: decides policy (callers check every
//! address it returns), or resolves a name the box was not allowed to
//! ask for.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError as DnsNetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::error::{NetError, Result};
use crate::policy::HostName;

/// How long one try at one upstream server may take.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per lookup.
pub const UPSTREAM_ATTEMPTS: usize = 2;
/// The hard bound on one [`Upstreams::resolve`] (A and AAAA together),
/// whatever the retry logic inside the stub resolver does.
pub const UPSTREAM_DEADLINE: Duration = Duration::from_secs(5);

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
    /// `None` when no upstream server is known (no `dns` given and no
    /// usable `/etc/resolv.conf`): every non-override lookup fails.
    dns: Option<TokioResolver>,
    /// The servers asked, for logs and errors.
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("servers", &self.servers)
            .field("overrides", &self.config.overrides.len())
            .finish()
    }
}

/// What one record type's lookup said.
enum Outcome {
    Addrs(Vec<IpAddr>),
    /// NXDOMAIN: the name does not exist (for any type).
    NxDomain,
    /// The name exists, without records of this type.
    NoData,
    /// No usable answer: timeout, SERVFAIL, REFUSED, network error.
    Failed(String),
}

impl Upstreams {
    /// Upstream DNS from `config.dns`, or the host's `/etc/resolv.conf`
    /// when that is empty. A host without a usable `resolv.conf` is not
    /// an error here (overrides still work, a warning is logged); its
    /// lookups fail with [`NetError::Resolve`].
    pub fn new(config: UpstreamConfig) -> Result<Self> {
        let servers = if config.dns.is_empty() {
            match hickory_resolver::system_conf::read_system_conf() {
                Ok((sys, _)) => sys
                    .name_servers()
                    .iter()
                    .map(|ns| SocketAddr::new(ns.ip, 53))
                    .collect(),
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "no upstream DNS: /etc/resolv.conf is unusable and no [network] dns servers are configured"
                    );
                    Vec::new()
                }
            }
        } else {
            config.dns.clone()
        };
        let dns = if servers.is_empty() {
            None
        } else {
            Some(build_resolver(&servers)?)
        };
        tracing::debug!(servers = ?servers, overrides = config.overrides.len(), "upstream DNS configured");
        Ok(Upstreams {
            config,
            dns,
            servers,
        })
    }

    /// The upstream DNS servers asked (empty: none known).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Whether `name` is answered by an override.
    pub fn is_overridden(&self, name: &HostName) -> bool {
        self.config.overrides.contains_key(name)
    }

    /// The addresses to connect to for `name` on `port`, in preference
    /// order (IPv4 first, then IPv6, each in upstream order, without
    /// duplicates). An override gives exactly one.
    ///
    /// Errors: [`NetError::NameNotFound`] when upstream says the name
    /// does not exist or has neither an A nor an AAAA record;
    /// [`NetError::Resolve`] when upstream could not be asked or did not
    /// answer usefully (see [`NetError::is_name_not_found`]).
    pub async fn resolve(&self, name: &HostName, port: u16) -> Result<Vec<SocketAddr>> {
        if let Some(t) = self.config.overrides.get(name) {
            return Ok(vec![SocketAddr::new(t.ip, t.port.unwrap_or(port))]);
        }
        let failed = |reason: String| NetError::Resolve {
            name: name.to_string(),
            reason,
        };
        let Some(dns) = &self.dns else {
            return Err(failed(
                "no upstream DNS servers (configure [network] dns or fix /etc/resolv.conf)".into(),
            ));
        };
        // Fully qualified: the stub resolver asks exactly this name.
        let fqdn = Name::from_ascii(format!("{}.", name.as_str()))
            .map_err(|e| failed(format!("not a DNS name: {e}")))?;
        let lookups = futures_util::future::join(
            lookup(dns, fqdn.clone(), RecordType::A),
            lookup(dns, fqdn, RecordType::AAAA),
        );
        let (v4, v6) = tokio::time::timeout(UPSTREAM_DEADLINE, lookups)
            .await
            .map_err(|_| {
                failed(format!(
                    "upstream DNS did not answer within {}s",
                    UPSTREAM_DEADLINE.as_secs()
                ))
            })?;
        match combine(name, v4, v6) {
            Ok(ips) => {
                tracing::debug!(%name, addrs = ?ips, "resolved upstream");
                Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect())
            }
            Err(e) => {
                tracing::debug!(%name, error = %e, "upstream resolution gave no address");
                Err(e)
            }
        }
    }
}

fn build_resolver(servers: &[SocketAddr]) -> Result<TokioResolver> {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ResolverConfig::from_name_servers(name_servers);
    let mut opts = ResolverOpts::default();
    opts.timeout = UPSTREAM_TIMEOUT;
    opts.attempts = UPSTREAM_ATTEMPTS;
    // Only the name asked: names are always passed fully qualified, and
    // the host's /etc/hosts has no say over what boxes reach.
    opts.ndots = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    // Boxes share this resolver: room for many lookups at once on one
    // upstream connection (the default, 32, answers "busy" beyond that).
    opts.max_active_requests = 512;
    opts.try_tcp_on_error = true;
    // The cache (explicit, though it is the default) is why the box
    // resolver's per-query existence checks are cheap.
    opts.cache_size = 8_192;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| NetError::Resolve {
            name: String::new(),
            reason: format!("cannot set up the upstream DNS resolver: {e}"),
        })
}

async fn lookup(dns: &TokioResolver, name: Name, rtype: RecordType) -> Outcome {
    match dns.lookup(name, rtype).await {
        Ok(found) => {
            let ips: Vec<IpAddr> = found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) if rtype == RecordType::A => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) if rtype == RecordType::AAAA => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            if ips.is_empty() {
                Outcome::NoData
            } else {
                Outcome::Addrs(ips)
            }
        }
        Err(e) => classify(&e),
    }
}

fn classify(e: &DnsNetError) -> Outcome {
    if e.is_nx_domain() {
        Outcome::NxDomain
    } else if e.is_no_records_found() {
        Outcome::NoData
    } else {
        Outcome::Failed(e.to_string())
    }
}

/// Addresses if either family has some; else [`NetError::NameNotFound`]
/// when upstream says so for both families (or NXDOMAIN for one), or
/// [`NetError::Resolve`] when upstream failed for a family that might
/// have had addresses.
fn combine(name: &HostName, v4: Outcome, v6: Outcome) -> Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for o in [&v4, &v6] {
        if let Outcome::Addrs(found) = o {
            for ip in found {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
        }
    }
    if !ips.is_empty() {
        return Ok(ips);
    }
    let not_found = |reason| NetError::NameNotFound {
        name: name.to_string(),
        reason,
    };
    match (v4, v6) {
        (Outcome::NxDomain, _) | (_, Outcome::NxDomain) => {
            Err(not_found("does not exist (NXDOMAIN)"))
        }
        (Outcome::NoData, Outcome::NoData) => Err(not_found("has no IPv4 or IPv6 address")),
        (Outcome::Failed(reason), _) | (_, Outcome::Failed(reason)) => Err(NetError::Resolve {
            name: name.to_string(),
            reason: format!("upstream DNS failed: {reason}"),
        }),
        // Addresses were handled above.
        (Outcome::Addrs(_), _) | (_, Outcome::Addrs(_)) => Ok(ips),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::dns::testdns::FakeUpstream;

    fn name(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    async fn upstreams(fake: &FakeUpstream) -> Upstreams {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            name("pinned.example.test"),
            UpstreamTarget {
                ip: Ipv4Addr::LOCALHOST.into(),
                port: None,
            },
        );
        Upstreams::new(UpstreamConfig {
            dns: vec![fake.addr],
            overrides,
        })
        .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn resolves_exactly_the_name_asked() {
        let ip = Ipv4Addr::new(93, 184, 216, 34);
        let fake = FakeUpstream::start(&[("www.example.com", ip)]).await;
        let up = upstreams(&fake).await;
        assert_eq!(up.servers(), [fake.addr]);
        let got = up.resolve(&name("WWW.example.com."), 443).await.unwrap();
        assert_eq!(got, [SocketAddr::new(ip.into(), 443)]);
        // A and AAAA for that one name, nothing with a search suffix.
        assert_eq!(fake.names(), ["www.example.com"]);
        let mut types: Vec<RecordType> = fake.asked().into_iter().map(|(_, t)| t).collect();
        types.sort_by_key(|t| u16::from(*t));
        assert_eq!(types, [RecordType::A, RecordType::AAAA]);
        // Cached: no second round trip.
        up.resolve(&name("www.example.com"), 80).await.unwrap();
        assert_eq!(fake.asked().len(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn not_found_is_not_a_failure() {
        let fake = FakeUpstream::start(&[]).await;
        let up = upstreams(&fake).await;
        let e = up
            .resolve(&name("nope.example.com"), 443)
            .await
            .unwrap_err();
        assert!(e.is_name_not_found(), "{e}");
        assert!(matches!(e, NetError::NameNotFound { .. }));
        let e = up
            .resolve(&name("servfail.example.com"), 443)
            .await
            .unwrap_err();
        assert!(!e.is_name_not_found(), "{e}");
        assert!(matches!(e, NetError::Resolve { .. }), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn overrides_come_first_and_never_go_upstream() {
        let fake = FakeUpstream::start(&[]).await;
        let up = upstreams(&fake).await;
        assert!(up.is_overridden(&name("pinned.example.test")));
        let got = up
            .resolve(&name("pinned.example.test"), 8443)
            .await
            .unwrap();
        assert_eq!(got, [SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 8443)]);
        assert!(fake.asked().is_empty());
    }

    /// On tokio's paused clock (it jumps to the next timer whenever the
    /// runtime is idle), so the waits are measured exactly, however slow
    /// the machine: no timing threshold on the wall clock.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_silent_upstream_fails_after_waiting_for_an_answer_within_the_deadline() {
        // A socket that never answers (bound, never read).
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let up = Upstreams::new(UpstreamConfig {
            dns: vec![silent.local_addr().unwrap()],
            overrides: BTreeMap::new(),
        })
        .unwrap();
        let start = tokio::time::Instant::now();
        let e = up.resolve(&name("www.example.com"), 443).await.unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, NetError::Resolve { .. }), "{e}");
        assert!(
            took >= UPSTREAM_TIMEOUT,
            "it did wait for an answer: {took:?}"
        );
        assert!(took <= UPSTREAM_DEADLINE, "past the deadline: {took:?}");
    }

    #[test]
    fn no_servers_is_an_error_per_lookup_not_at_start() {
        let up = Upstreams {
            config: UpstreamConfig::default(),
            dns: None,
            servers: Vec::new(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(up.resolve(&name("www.example.com"), 443))
            .unwrap_err();
        assert!(e.to_string().contains("no upstream DNS servers"), "{e}");
    }
}
