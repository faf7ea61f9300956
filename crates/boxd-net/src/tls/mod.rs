//! The certificate side of TLS interception: boxd's own certificate
//! authority, the short-lived leaf certificates it mints for intercepted
//! names (with the rustls server configuration that presents them to a
//! box), and the trust material put into a box so its clients accept them.
//!
//! Owns: the CA key pair while the daemon runs, minting and caching leaf
//! certificates, the server-side TLS settings toward a box (HTTP/1.1 only,
//! no 0-RTT, no client auth), and the combined PEM bundle a box trusts.
//! Never: writes keys to disk or encrypts them (the daemon persists the
//! CA key with its own store crypto; this module only hands over and takes
//! back bytes), puts key material into a box, decides which connections
//! are intercepted (the proxy does), or talks to upstream servers (it only
//! builds the client configuration the proxy verifies them with).

pub mod ca;
pub mod leaf;
pub mod trust;
pub mod upstream;

pub use ca::BoxdCa;
pub use leaf::{Leaf, LeafCache, DEFAULT_LEAF_CAPACITY, DEFAULT_LEAF_LIFETIME};
pub use trust::{bundle_with, BUNDLE_PATHS, CA_ENV_VARS};
pub use upstream::{client_config_with_roots, upstream_client_config};

/// The crypto provider every TLS object of this module is built with
/// (`ring`: no cmake or Go toolchain needed to build boxd).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
