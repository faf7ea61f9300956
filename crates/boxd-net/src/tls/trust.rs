//! What makes a box trust boxd's CA: a PEM bundle of the image's own roots
//! plus boxd's CA certificate, the places distributions keep their bundle
//! (where that file is put, read-only), and the environment variables
//! clients read a CA file from (all pointed at the same bundle).
//!
//! Owns: building the bundle bytes and the two lists. Never: reads or
//! writes a box's files or environment (the runtime does, with these), or
//! touches the CA key.

/// Where distributions keep their system CA bundle (the list Go's
/// `crypto/x509` searches): Debian/Ubuntu/Gentoo/Alpine, Fedora/RHEL 6,
/// openSUSE, OpenELEC, CentOS/RHEL 7+, Alpine/macOS-style `cert.pem`.
pub const BUNDLE_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Environment variables naming a CA file, read by OpenSSL-based tools
/// (`SSL_CERT_FILE`), Node (`NODE_EXTRA_CA_CERTS`, added to its built-in
/// roots), Python requests, curl, git, cargo, pip and Deno.
pub const CA_ENV_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
    "PIP_CERT",
    "DENO_CERT",
];

/// The image's bundle (`system_bundle`, possibly empty) followed by boxd's
/// CA certificate: every root the image trusted stays trusted. A bundle
/// that already ends with the CA (built before) is returned unchanged, so
/// building twice adds the CA once.
pub fn bundle_with(system_bundle: &[u8], ca_pem: &str) -> Vec<u8> {
    let ca = ca_pem.trim().as_bytes();
    let system = trim_end(system_bundle);
    if ca.is_empty() || system.ends_with(ca) {
        let mut out = system.to_vec();
        if !out.is_empty() {
            out.push(b'\n');
        }
        return out;
    }
    let mut out = Vec::with_capacity(system.len() + ca.len() + 2);
    out.extend_from_slice(system);
    if !out.is_empty() {
        out.push(b'\n');
    }
    out.extend_from_slice(ca);
    out.push(b'\n');
    out
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n";
    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nWFla\n-----END CERTIFICATE-----";

    #[test]
    fn appends_after_a_bundle_without_final_newline() {
        let out = bundle_with(ROOT.as_bytes(), CA);
        assert_eq!(out, format!("{ROOT}\n{CA}").into_bytes());
    }

    #[test]
    fn empty_system_bundle_gives_the_ca_alone() {
        assert_eq!(bundle_with(b"", CA), CA.as_bytes());
        assert_eq!(bundle_with(b"\n\n", CA), CA.as_bytes());
    }

    #[test]
    fn building_twice_adds_the_ca_once() {
        let once = bundle_with(ROOT.as_bytes(), CA);
        assert_eq!(bundle_with(&once, CA), once);
    }

    #[test]
    fn lists_have_no_duplicates() {
        for list in [BUNDLE_PATHS, CA_ENV_VARS] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len());
        }
        assert!(BUNDLE_PATHS.iter().all(|p| p.starts_with("/etc/")));
    }
}
