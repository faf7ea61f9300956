//! TLS interception (DESIGN §6): for an allowed connection whose first
//! bytes are known (SNI in hand and checked against the synthetic name)
//! and before a single client byte goes upstream, the proxy asks
//! [`handling`] whether to splice it or to intercept it.
//!
//! A connection is intercepted only when an [`Interception`] is
//! configured, the port is 443, the first bytes are a TLS ClientHello
//! whose SNI is a host name equal to the synthetic address's name (never
//! a literal IP, never a connection without SNI), and the box's secret
//! rules intercept that name (an attach-header rule or a secret's hosts).
//! Everything else is spliced untouched: plaintext HTTP, port 8443,
//! other names — pinned and mTLS clients keep working there.
//!
//! An intercepted connection ([`exchange`]) terminates the box's TLS with
//! a leaf minted for exactly that name, opens TLS upstream over the
//! already connected, policy-checked socket (verified against the real
//! roots for that name), and carries HTTP/1.1 requests one by one,
//! injecting attach headers and substituting placeholder secrets
//! ([`rewrite`]) after the framing and identity checks of [`http`].
//!
//! Limits (what interception does not do):
//! - HTTP/2 is never spoken: ALPN offers `http/1.1` only, both ways (an
//!   h2-only client fails the handshake);
//! - after a `101` WebSocket upgrade the frames are carried, not
//!   inspected: only the upgrade request is injected and audited (other
//!   upgrades, e.g. h2c, are refused);
//! - placeholders are found byte for byte (and in the percent-decoded
//!   path and query); escaped letters elsewhere go unreported, though
//!   only the placeholder ever leaves for an unapproved host;
//! - a buffered (substituted) body is sent with a fixed length, its
//!   trailers dropped;
//! - responses are forwarded as they come: an approved host that echoes
//!   the request hands the substituted value to the box (the documented
//!   reflection limit, THREATS 8), which is why body and query
//!   substitution are opt-in.
//!
//! The daemon builds the [`Interception`] from its stored CA and the
//! operator's extra roots; putting the CA into boxes is the runtime's.
//!
//! Owns: the decision and the configuration. Never: reads payload bytes
//! beyond the parsed ClientHello to decide, or changes the policy verdict
//! (it only sees connections the policy already allowed).

pub(crate) mod exchange;
pub(crate) mod http;
pub(crate) mod prefixed;
pub(crate) mod rewrite;

use std::sync::Arc;

use crate::policy::{Host, HostName};
use crate::registry::BoxNet;
use crate::tls::LeafCache;

use super::sniff::FirstBytes;

/// What the proxy needs to intercept: the leaves it presents to boxes and
/// the client configuration it verifies upstreams with (see
/// [`crate::tls::upstream_client_config`]).
#[derive(Clone)]
pub struct Interception {
    pub leaves: Arc<LeafCache>,
    pub upstream_tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Interception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interception").finish_non_exhaustive()
    }
}

/// What the proxy does with an allowed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handling {
    /// Pass the bytes through both ways, untouched.
    Splice,
    /// Terminate TLS and carry HTTP/1.1 requests with the box's rules.
    Intercept,
}

/// Decides how to carry an allowed connection to `name` (the synthetic
/// address's name, `None` for a literal IP) on `port`, given its first
/// bytes. Called after the SNI/Host checks, before anything is sent
/// upstream.
pub(crate) fn handling(
    interception: Option<&Interception>,
    net: &BoxNet,
    name: Option<&HostName>,
    port: u16,
    first: &FirstBytes,
) -> Handling {
    let (Some(_), Some(name)) = (interception, name) else {
        return Handling::Splice;
    };
    if port != 443 {
        return Handling::Splice;
    }
    let FirstBytes::Tls(hello) = first else {
        return Handling::Splice;
    };
    let sni = hello
        .sni
        .as_deref()
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| Host::parse(s).ok());
    match sni {
        Some(Host::Name(n)) if &n == name && net.secrets.intercepts(name) => Handling::Intercept,
        _ => Handling::Splice,
    }
}

#[cfg(test)]
mod tests {
    use super::super::sniff::{ClientHello, HttpHead};
    use super::*;
    use crate::addr::AddressPlan;
    use crate::policy::{EgressPolicy, OperatorNet};
    use crate::secrets::{AttachHeaderRule, SecretRules};
    use zeroize::Zeroizing;

    fn name(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    fn setup() -> (Interception, BoxNet) {
        let ca = Arc::new(crate::tls::BoxdCa::generate("handling test CA").unwrap());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let ix = Interception {
            leaves: Arc::new(LeafCache::new(ca, crate::tls::DEFAULT_LEAF_LIFETIME)),
            upstream_tls: crate::tls::client_config_with_roots(roots).unwrap(),
        };
        let rule = AttachHeaderRule::new(
            "api.example.test",
            vec![("X-Key".into(), Zeroizing::new("v".into()))],
        )
        .unwrap();
        let rules = SecretRules::new(vec![], vec![rule], vec![]).unwrap();
        let addrs = AddressPlan::default().slot(1).unwrap();
        let policy = EgressPolicy::new(None, None, OperatorNet::default());
        let net = BoxNet::new("b", addrs, policy).with_secrets(Arc::new(rules));
        (ix, net)
    }

    fn tls(sni: Option<&str>) -> FirstBytes {
        FirstBytes::Tls(ClientHello {
            sni: sni.map(|s| s.as_bytes().to_vec()),
            ech: false,
        })
    }

    #[test]
    fn only_port_443_tls_to_a_ruled_name_is_intercepted() {
        let (ix, net) = setup();
        let api = name("api.example.test");
        let other = name("other.example.test");
        let h = |ix: Option<&Interception>, n: Option<&HostName>, port: u16, f: &FirstBytes| {
            handling(ix, &net, n, port, f)
        };
        let hello = tls(Some("api.example.test"));
        assert_eq!(h(Some(&ix), Some(&api), 443, &hello), Handling::Intercept);
        assert_eq!(h(None, Some(&api), 443, &hello), Handling::Splice);
        assert_eq!(h(Some(&ix), Some(&api), 8443, &hello), Handling::Splice);
        assert_eq!(h(Some(&ix), None, 443, &hello), Handling::Splice);
        assert_eq!(h(Some(&ix), Some(&api), 443, &tls(None)), Handling::Splice);
        assert_eq!(
            h(
                Some(&ix),
                Some(&other),
                443,
                &tls(Some("other.example.test"))
            ),
            Handling::Splice
        );
        assert_eq!(
            h(Some(&ix), Some(&api), 443, &tls(Some("192.0.2.1"))),
            Handling::Splice
        );
        let http = FirstBytes::Http(HttpHead::default());
        assert_eq!(h(Some(&ix), Some(&api), 443, &http), Handling::Splice);
        assert_eq!(
            h(Some(&ix), Some(&api), 443, &FirstBytes::Other),
            Handling::Splice
        );
    }
}
