//! The rustls client configuration the egress proxy uses toward the real
//! upstream of an intercepted connection: the host's system roots (what
//! `rustls-native-certs` finds: the distribution bundle, or the file and
//! directory `SSL_CERT_FILE` / `SSL_CERT_DIR` name) plus any extra PEM
//! files the operator trusts (a test CA), ALPN `http/1.1` only, and no
//! TLS session resumption (no ticket or session state is kept, so nothing
//! carries over between connections, let alone between boxes).
//!
//! Owns: building that configuration. Never: disables verification,
//! trusts boxd's own CA for upstreams (unless an operator passes it as an
//! extra root), or opens a connection.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{NetError, Result};

/// The one application protocol offered upstream.
const HTTP_1_1: &[u8] = b"http/1.1";

/// The system roots plus every certificate in each of `extra_roots` (PEM
/// files). An extra file that cannot be read, or holds no certificate, is
/// an error naming it; a system bundle with unreadable entries is used
/// for what it holds (logged). No root at all is an error: such a proxy
/// could verify nothing.
pub fn upstream_client_config(extra_roots: &[PathBuf]) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "some system CA certificates could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(
            added,
            ignored,
            "system CA certificates skipped as unparsable"
        );
    }
    for path in extra_roots {
        let bad = |why: String| {
            NetError::InvalidSetting(format!("upstream CA file {}: {why}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(NetError::InvalidSetting(
            "no trusted CA certificate for upstream TLS: the system bundle is empty or missing \
             and no extra CA file was given"
                .into(),
        ));
    }
    client_config_with_roots(roots)
}

/// A client configuration trusting exactly `roots`, with the settings of
/// [`upstream_client_config`] (tests build one from their own CA).
pub fn client_config_with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| NetError::Tls {
            context: "upstream client config".into(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "boxd-upstream-tls-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn extra_roots_are_checked_and_named_in_errors() {
        let dir = scratch("extra");
        let ca = crate::tls::BoxdCa::generate("upstream test CA").expect("CA");
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.cert_pem()).expect("write CA");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let missing = dir.join("missing.pem");

        let with_roots = |paths: &[PathBuf]| upstream_client_config(paths);
        let ok = with_roots(std::slice::from_ref(&good));
        let e_empty = with_roots(std::slice::from_ref(&empty)).err();
        let e_missing = with_roots(std::slice::from_ref(&missing)).err();
        let _ = std::fs::remove_dir_all(&dir);

        let config = ok.expect("config with an extra root");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let e = e_empty.expect("no certificate is an error").to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = e_missing.expect("missing file is an error").to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn no_resumption_and_only_http_1_1() {
        let ca = crate::tls::BoxdCa::generate("upstream test CA").expect("CA");
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).expect("root");
        let config = client_config_with_roots(roots).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(!config.enable_early_data);
        assert_eq!(
            format!("{:?}", config.resumption),
            format!("{:?}", Resumption::disabled())
        );
    }
}
