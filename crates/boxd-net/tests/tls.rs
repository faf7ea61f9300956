//! boxd's CA and leaf certificates, checked from the outside: by rustls'
//! own verifier, by real TLS handshakes (rustls client against the leaf's
//! server config), and — where the host has it — by curl (OpenSSL).

/// The workspace's one skip helper.
#[path = "../../../tests/common/skip.rs"]
mod skip_helper;

use std::sync::Arc;
use std::time::Duration;

use boxd_net::policy::HostName;
use boxd_net::tls::{bundle_with, BoxdCa, LeafCache, DEFAULT_LEAF_LIFETIME};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn name(s: &str) -> HostName {
    HostName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots_of(ca: &BoxdCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("CA as a root");
    Arc::new(roots)
}

fn verify(
    roots: Arc<RootCertStore>,
    leaf: &CertificateDer<'_>,
    server_name: &str,
) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .expect("verifier");
    let server_name = ServerName::try_from(server_name.to_owned()).expect("server name");
    verifier
        .verify_server_cert(leaf, &[], &server_name, &[], UnixTime::now())
        .map(|_| ())
}

fn client_config(ca: &BoxdCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_with(ca, alpn, rustls::DEFAULT_VERSIONS)
}

fn client_config_with(
    ca: &BoxdCa,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots_of(ca))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

struct Handshake {
    client_alpn: Option<Vec<u8>>,
    server_alpn: Option<Vec<u8>>,
    peer_chain: Vec<CertificateDer<'static>>,
    version: Option<rustls::ProtocolVersion>,
}

/// One TLS handshake over an in-memory pipe, then one byte each way.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
) -> Result<Handshake, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let mut tls = acceptor
            .accept(server_io)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        tls.write_all(&byte)
            .await
            .map_err(|e| format!("server write: {e}"))?;
        tls.shutdown().await.ok();
        Ok::<_, String>(alpn)
    });
    let sni = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let client_result = async {
        let mut tls = TlsConnector::from(client)
            .connect(sni, client_io)
            .await
            .map_err(|e| format!("client: {e}"))?;
        tls.write_all(b"x")
            .await
            .map_err(|e| format!("client write: {e}"))?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        assert_eq!(&byte, b"x");
        let conn = tls.get_ref().1;
        Ok::<_, String>((
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.peer_certificates().unwrap_or_default().to_vec(),
            conn.protocol_version(),
        ))
    }
    .await;
    let server_result = server_task.await.map_err(|e| e.to_string())?;
    let (client_alpn, peer_chain, version) = client_result?;
    let server_alpn = server_result?;
    Ok(Handshake {
        client_alpn,
        server_alpn,
        peer_chain,
        version,
    })
}

#[test]
fn leaf_verifies_for_its_exact_name_only() {
    let ca = Arc::new(BoxdCa::generate("boxd test CA").expect("CA"));
    let cache = LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME);
    let leaf = cache.leaf(&name("api.example.com")).expect("leaf");
    verify(roots_of(&ca), leaf.cert_der(), "api.example.com").expect("exact name verifies");
    for other in [
        "other.example.com",
        "sub.api.example.com",
        "example.com",
        "api.example.co",
    ] {
        let e = verify(roots_of(&ca), leaf.cert_der(), other)
            .expect_err(&format!("leaf for api.example.com accepted for {other}"));
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { .. }
                    )
            ),
            "{other}: {e:?}"
        );
    }
    // Another CA's roots do not accept it.
    let stranger = BoxdCa::generate("boxd test CA").expect("other CA");
    let e = verify(roots_of(&stranger), leaf.cert_der(), "api.example.com")
        .expect_err("leaf accepted under another CA");
    assert!(
        matches!(
            e,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                | rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{e:?}"
    );
}

#[test]
fn cache_returns_one_leaf_per_name() {
    let ca = Arc::new(BoxdCa::generate("boxd test CA").expect("CA"));
    let cache = LeafCache::new(ca, DEFAULT_LEAF_LIFETIME);
    let a1 = cache.leaf(&name("a.example.com")).expect("a");
    let a2 = cache.leaf(&name("A.Example.Com.")).expect("a again");
    let b = cache.leaf(&name("b.example.com")).expect("b");
    assert_eq!(a1.cert_der(), a2.cert_der());
    assert!(Arc::ptr_eq(&a1.server_config(), &a2.server_config()));
    assert_ne!(a1.cert_der(), b.cert_der());
    assert_eq!(cache.len(), 2);
    let lifetime = a1
        .not_after()
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        lifetime <= DEFAULT_LEAF_LIFETIME
            && lifetime > DEFAULT_LEAF_LIFETIME - Duration::from_secs(60)
    );
}

#[test]
fn parts_round_trip_and_sign_verifiable_leaves() {
    let ca = BoxdCa::generate("boxd round-trip CA").expect("CA");
    let (pem, key) = ca.to_parts();
    let restored = Arc::new(BoxdCa::from_parts(&pem, &key).expect("from_parts"));
    assert_eq!(restored.cert_pem(), ca.cert_pem());
    assert_eq!(restored.cert_der(), ca.cert_der());
    assert_eq!(restored.not_after(), ca.not_after());
    let (pem2, key2) = restored.to_parts();
    assert_eq!(pem2, pem);
    assert_eq!(&key2[..], &key[..]);
    // A leaf from the restored CA verifies against the original certificate.
    let cache = LeafCache::new(restored, DEFAULT_LEAF_LIFETIME);
    let leaf = cache.leaf(&name("api.example.com")).expect("leaf");
    verify(roots_of(&ca), leaf.cert_der(), "api.example.com").expect("verifies");
}

#[test]
fn key_never_in_the_certificate() {
    let ca = BoxdCa::generate("boxd secret CA").expect("CA");
    let (pem, key) = ca.to_parts();
    // The private scalar: the 32-byte OCTET STRING of the PKCS#8
    // ECPrivateKey (RFC 5915), `04 20 <d>`, right after `02 01 01`.
    let at = key
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("ECPrivateKey in PKCS#8")
        + 5;
    let scalar = &key[at..at + 32];
    let der = ca.cert_der();
    assert!(!der.windows(32).any(|w| w == scalar), "scalar in the cert");
    assert!(!der.windows(key.len()).any(|w| w == &key[..]));
    assert!(!pem.contains("PRIVATE"));
    assert!(!ca.cert_pem().contains("PRIVATE"));
    let certs: Vec<_> = CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM");
    assert_eq!(certs, vec![der.clone()]);
    let debug = format!("{ca:?}");
    let hex: String = scalar.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!debug.contains(&hex) && debug.contains("elided"));
}

#[tokio::test]
async fn handshake_downgrades_h2_to_http11() {
    let ca = Arc::new(BoxdCa::generate("boxd test CA").expect("CA"));
    let cache = LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME);
    let host = name("api.example.com");
    let leaf = cache.leaf(&host).expect("leaf");

    let done = handshake(
        leaf.server_config(),
        client_config(&ca, &[b"h2", b"http/1.1"]),
        "api.example.com",
    )
    .await
    .expect("handshake");
    assert_eq!(done.client_alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(done.server_alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(done.version, Some(rustls::ProtocolVersion::TLSv1_3));
    // Chain: leaf then CA.
    assert_eq!(done.peer_chain.len(), 2);
    assert_eq!(&done.peer_chain[0], leaf.cert_der());
    assert_eq!(&done.peer_chain[1], ca.cert_der());

    // No ALPN offered: fine, nothing negotiated.
    let done = handshake(
        leaf.server_config(),
        client_config(&ca, &[]),
        "api.example.com",
    )
    .await
    .expect("handshake without ALPN");
    assert_eq!(done.client_alpn, None);

    // TLS 1.2 clients are served too.
    let done = handshake(
        leaf.server_config(),
        client_config_with(&ca, &[b"http/1.1"], &[&rustls::version::TLS12]),
        "api.example.com",
    )
    .await
    .expect("TLS 1.2 handshake");
    assert_eq!(done.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(done.client_alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn h2_only_client_fails() {
    let ca = Arc::new(BoxdCa::generate("boxd test CA").expect("CA"));
    let cache = LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME);
    let config = cache
        .server_config(&name("api.example.com"))
        .expect("config");
    let e = handshake(config, client_config(&ca, &[b"h2"]), "api.example.com")
        .await
        .err()
        .expect("h2-only client got a connection");
    assert!(
        e.to_lowercase().contains("application protocol") || e.contains("NoApplicationProtocol"),
        "{e}"
    );
}

#[tokio::test]
async fn handshake_fails_for_wrong_name_or_ca() {
    let ca = Arc::new(BoxdCa::generate("boxd test CA").expect("CA"));
    let cache = LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME);
    let config = cache
        .server_config(&name("api.example.com"))
        .expect("config");
    let e = handshake(
        Arc::clone(&config),
        client_config(&ca, &[b"http/1.1"]),
        "www.example.com",
    )
    .await
    .err()
    .expect("leaf accepted for another name");
    assert!(e.contains("client:"), "{e}");
    let stranger = BoxdCa::generate("boxd test CA").expect("other CA");
    let e = handshake(
        config,
        client_config(&stranger, &[b"http/1.1"]),
        "api.example.com",
    )
    .await
    .err()
    .expect("leaf accepted by a client trusting another CA");
    assert!(e.contains("client:"), "{e}");
}

#[test]
fn bundle_keeps_system_roots_and_appends_the_ca() {
    let ca = BoxdCa::generate("boxd bundle CA").expect("CA");
    let other = BoxdCa::generate("stand-in system root").expect("root");
    let system = boxd_net::tls::BUNDLE_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| other.cert_pem().as_bytes().to_vec());
    let system_certs: Vec<_> = CertificateDer::pem_slice_iter(&system)
        .collect::<Result<_, _>>()
        .expect("system bundle parses");
    assert!(!system_certs.is_empty());

    let bundle = bundle_with(&system, ca.cert_pem());
    assert!(bundle.starts_with(system.trim_ascii_end()));
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bundle)
        .collect::<Result<_, _>>()
        .expect("bundle parses");
    assert_eq!(certs.len(), system_certs.len() + 1);
    assert_eq!(&certs[..system_certs.len()], &system_certs[..]);
    assert_eq!(certs.last(), Some(ca.cert_der()));
    assert_eq!(bundle_with(&bundle, ca.cert_pem()), bundle);
}

/// curl (OpenSSL) accepts a minted leaf with the bundle and refuses it
/// without. Skipped, loudly, where curl is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_trusts_leaf_with_bundle_only() {
    let curl_ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !curl_ok {
        return skip_helper::skip("curl_trusts_leaf_with_bundle_only: no working `curl` on PATH");
    }
    // A CA restored from its parts, as after a daemon restart: the leaf's
    // authority key identifier must still match the CA for OpenSSL.
    let generated = BoxdCa::generate("boxd curl CA").expect("CA");
    let (pem, key) = generated.to_parts();
    let ca = Arc::new(BoxdCa::from_parts(&pem, &key).expect("restored CA"));
    let cache = LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME);
    let host = "box-curl.example.test";
    let acceptor = TlsAcceptor::from(cache.server_config(&name(host)).expect("config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });

    let dir = TempDir::new("curl");
    let dir = &dir.0;
    let system = boxd_net::tls::BUNDLE_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    let with = dir.join("with-boxd.pem");
    std::fs::write(&with, bundle_with(&system, ca.cert_pem())).expect("write bundle");
    let stranger = BoxdCa::generate("boxd curl CA").expect("other CA");
    let without = dir.join("without-boxd.pem");
    std::fs::write(&without, bundle_with(&system, stranger.cert_pem())).expect("write bundle");

    let curl = |cafile: std::path::PathBuf| {
        let url = format!("https://{host}:{port}/");
        let resolve = format!("{host}:{port}:127.0.0.1");
        async move {
            tokio::process::Command::new("curl")
                .args(["-q", "-sS", "--noproxy", "*", "--max-time", "10"])
                .args(["-w", "\n%{http_version}"])
                .arg("--cacert")
                .arg(&cafile)
                .args(["--resolve", &resolve, &url])
                .env_remove("CURL_CA_BUNDLE")
                .env_remove("SSL_CERT_FILE")
                .env_remove("SSL_CERT_DIR")
                .output()
                .await
                .expect("run curl")
        }
    };

    let ok = curl(with).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "curl with the bundle failed ({}): {}",
        ok.status,
        String::from_utf8_lossy(&ok.stderr)
    );
    // Body, then the HTTP version curl used: 1.1 although curl offers h2.
    assert_eq!(stdout, "ok\n1.1", "{stdout}");

    let refused = curl(without).await;
    // 60: peer certificate cannot be authenticated with known CA certificates.
    assert_eq!(
        refused.status.code(),
        Some(60),
        "curl without boxd's CA: {}",
        String::from_utf8_lossy(&refused.stderr)
    );

    server.abort();
}

/// OpenSSL's strict X.509 checks (what Python 3.13 turns on by default:
/// authority/subject key identifiers, critical SAN with an empty subject,
/// CA key usage) pass for a leaf and the CA, for the leaf's name and the
/// TLS server purpose. Skipped, loudly, where `openssl` is missing.
#[test]
fn openssl_strict_verify_accepts_the_chain() {
    let works = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !works {
        return skip_helper::skip(
            "openssl_strict_verify_accepts_the_chain: no working `openssl` on PATH",
        );
    }
    let ca = Arc::new(BoxdCa::generate("boxd strict CA").expect("CA"));
    let cache = LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME);
    let leaf = cache.leaf(&name("strict.example.test")).expect("leaf");
    let dir = TempDir::new("openssl");
    let dir = &dir.0;
    let (ca_file, der_file, leaf_file) = (
        dir.join("ca.pem"),
        dir.join("leaf.der"),
        dir.join("leaf.pem"),
    );
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
    std::fs::write(&der_file, leaf.cert_der().as_ref()).expect("write leaf");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl")
    };
    let out = run(&[
        "x509".as_ref(),
        "-inform".as_ref(),
        "DER".as_ref(),
        "-in".as_ref(),
        der_file.as_os_str(),
        "-out".as_ref(),
        leaf_file.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = |host: &str| {
        run(&[
            "verify".as_ref(),
            "-x509_strict".as_ref(),
            "-purpose".as_ref(),
            "sslserver".as_ref(),
            "-verify_hostname".as_ref(),
            host.as_ref(),
            "-CAfile".as_ref(),
            ca_file.as_os_str(),
            leaf_file.as_os_str(),
        ])
    };
    let ok = verify("strict.example.test");
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = verify("other.example.test");
    assert!(
        !wrong.status.success(),
        "openssl accepted the leaf for another name"
    );
}

/// A scratch directory removed on drop, also when the test fails.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("boxd-tls-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
