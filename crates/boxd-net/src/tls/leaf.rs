//! Leaf certificates for intercepted names and the rustls server
//! configuration that presents one to a box.
//!
//! A leaf names exactly one host (one dNSName in the subject alternative
//! names — never a wildcard, never the apex or a sibling), is valid from a
//! minute ago for [`DEFAULT_LEAF_LIFETIME`] unless told otherwise, has its
//! own P-256 key, and is signed by [`BoxdCa`]. Leaves are cached per name
//! (at most [`DEFAULT_LEAF_CAPACITY`], least recently used evicted first)
//! and minted again once within an hour of expiry.
//!
//! The server configuration toward the box: TLS 1.2 and 1.3, ALPN
//! `http/1.1` only (a client offering `h2` and `http/1.1` gets HTTP/1.1;
//! one offering only `h2` fails the handshake), no 0-RTT, no session
//! resumption (every connection is a full handshake, so no ticket or
//! session state outlives a connection or crosses boxes), no client
//! authentication; the chain sent is leaf + CA.
//!
//! Owns: the cache and the leaf keys in it. Never: writes a key anywhere,
//! decides which names are intercepted, or reads box traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;

use super::ca::{whole_seconds, BoxdCa};
use crate::error::{NetError, Result};
use crate::policy::HostName;

/// How long a leaf is valid unless [`LeafCache::new`] is told otherwise.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How many leaves a cache holds unless told otherwise.
pub const DEFAULT_LEAF_CAPACITY: usize = 4096;
/// A leaf this close to its expiry is minted again (half the lifetime if
/// that is shorter).
const REFRESH_BEFORE: Duration = Duration::from_secs(3600);
/// How far a leaf's validity starts in the past (clock skew).
const BACKDATE: Duration = Duration::from_secs(60);
/// Shortest accepted leaf lifetime.
const MIN_LIFETIME: Duration = Duration::from_secs(120);
/// The one application protocol offered to a box.
const HTTP_1_1: &[u8] = b"http/1.1";

/// One minted leaf: the certificate and the server configuration that
/// presents it (its key lives only inside that configuration).
pub struct Leaf {
    name: HostName,
    cert: CertificateDer<'static>,
    not_after: SystemTime,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("name", &self.name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Leaf {
    /// The one name the certificate is for.
    pub fn name(&self) -> &HostName {
        &self.name
    }

    /// The leaf certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The server configuration presenting this leaf (chain leaf + CA).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }
}

/// Mints and caches leaves signed by one CA. Shared by all boxes: a leaf
/// holds no box-specific state.
pub struct LeafCache {
    ca: Arc<BoxdCa>,
    lifetime: Duration,
    refresh_before: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<HostName, Slot>,
    tick: u64,
}

struct Slot {
    leaf: Arc<Leaf>,
    used: u64,
}

impl LeafCache {
    /// A cache of up to [`DEFAULT_LEAF_CAPACITY`] leaves valid for
    /// `lifetime` each (at least two minutes; shorter is raised).
    pub fn new(ca: Arc<BoxdCa>, lifetime: Duration) -> Self {
        Self::with_capacity(ca, lifetime, DEFAULT_LEAF_CAPACITY)
    }

    /// As [`LeafCache::new`], holding at most `capacity` leaves (at least
    /// one).
    pub fn with_capacity(ca: Arc<BoxdCa>, lifetime: Duration, capacity: usize) -> Self {
        let lifetime = lifetime.max(MIN_LIFETIME);
        LeafCache {
            ca,
            lifetime,
            refresh_before: REFRESH_BEFORE.min(lifetime / 2),
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The server configuration for `name`: a cached leaf if it has more
    /// than an hour left, else a newly minted one.
    pub fn server_config(&self, name: &HostName) -> Result<Arc<ServerConfig>> {
        Ok(self.leaf(name)?.server_config())
    }

    /// The leaf for `name` (see [`LeafCache::server_config`]).
    pub fn leaf(&self, name: &HostName) -> Result<Arc<Leaf>> {
        self.leaf_at(name, SystemTime::now())
    }

    /// How many leaves are cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no leaf is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CA the leaves are signed by.
    pub fn ca(&self) -> &Arc<BoxdCa> {
        &self.ca
    }

    fn leaf_at(&self, name: &HostName, now: SystemTime) -> Result<Arc<Leaf>> {
        if let Some(leaf) = self.cached(name, now) {
            return Ok(leaf);
        }
        // Minted outside the lock: signing takes a while and other names
        // need not wait. Two callers racing for one name both mint; the
        // later insert wins and both leaves are valid.
        let leaf = Arc::new(self.mint(name, now)?);
        let mut inner = self.lock();
        inner.tick += 1;
        let used = inner.tick;
        if !inner.entries.contains_key(name) && inner.entries.len() >= self.capacity {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, slot)| slot.used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(
            name.clone(),
            Slot {
                leaf: Arc::clone(&leaf),
                used,
            },
        );
        Ok(leaf)
    }

    fn cached(&self, name: &HostName, now: SystemTime) -> Option<Arc<Leaf>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let slot = inner.entries.get_mut(name)?;
        if now + self.refresh_before >= slot.leaf.not_after {
            return None;
        }
        slot.used = tick;
        Some(Arc::clone(&slot.leaf))
    }

    fn mint(&self, name: &HostName, now: SystemTime) -> Result<Leaf> {
        let now = whole_seconds(now);
        let not_after = now + self.lifetime;
        let (cert, key) = self
            .ca
            .issue_leaf(name.as_str(), now - BACKDATE, not_after)?;
        let tls_err = |source| NetError::Tls {
            context: format!("leaf for {name}"),
            source,
        };
        let certified = CertifiedKey::new(vec![cert.clone(), self.ca.cert_der().clone()], key);
        certified.keys_match().map_err(tls_err)?;
        let mut config = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![HTTP_1_1.to_vec()];
        config.max_early_data_size = 0;
        config.send_half_rtt_data = false;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Leaf {
            name: name.clone(),
            cert,
            not_after,
            config: Arc::new(config),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent whatever panicked while holding it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> HostName {
        HostName::parse(s).expect("name")
    }

    fn cache(capacity: usize) -> LeafCache {
        let ca = Arc::new(BoxdCa::generate("boxd leaf test CA").expect("CA"));
        LeafCache::with_capacity(ca, DEFAULT_LEAF_LIFETIME, capacity)
    }

    #[test]
    fn reminted_within_an_hour_of_expiry() {
        let cache = cache(8);
        let n = name("api.example.com");
        let now = SystemTime::now();
        let first = cache.leaf_at(&n, now).expect("mint");
        let later = now + DEFAULT_LEAF_LIFETIME - Duration::from_secs(3601);
        let same = cache.leaf_at(&n, later).expect("cached");
        assert_eq!(same.cert_der(), first.cert_der());
        let near_expiry = now + DEFAULT_LEAF_LIFETIME - Duration::from_secs(3599);
        let renewed = cache.leaf_at(&n, near_expiry).expect("renew");
        assert_ne!(renewed.cert_der(), first.cert_der());
        assert!(renewed.not_after() > first.not_after());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn bounded_least_recently_used_evicted() {
        let cache = cache(2);
        let (a, b, c) = (name("a.example"), name("b.example"), name("c.example"));
        let leaf_a = cache.leaf(&a).expect("a");
        cache.leaf(&b).expect("b");
        // a used again: b is now the least recently used.
        assert_eq!(cache.leaf(&a).expect("a").cert_der(), leaf_a.cert_der());
        cache.leaf(&c).expect("c");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.leaf(&a).expect("a").cert_der(), leaf_a.cert_der());
        let entries = &cache.lock().entries;
        assert!(entries.contains_key(&a) && entries.contains_key(&c));
        assert!(!entries.contains_key(&b));
    }

    #[test]
    fn short_lifetimes_still_cache() {
        let ca = Arc::new(BoxdCa::generate("boxd leaf test CA").expect("CA"));
        let cache = LeafCache::new(ca, Duration::from_secs(1));
        let n = name("short.example");
        let a = cache.leaf(&n).expect("mint");
        let b = cache.leaf(&n).expect("cached");
        assert_eq!(a.cert_der(), b.cert_der());
    }

    #[test]
    fn server_config_settings() {
        let cache = cache(4);
        let config = cache.server_config(&name("x.example")).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(config.max_early_data_size, 0);
        assert_eq!(config.send_tls13_tickets, 0);
        assert!(!config.session_storage.can_cache());
    }
}
