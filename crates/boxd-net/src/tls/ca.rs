//! boxd's certificate authority: an ECDSA P-256 key and a self-signed CA
//! certificate (`CA:true`, path length 0, key usage keyCertSign + cRLSign,
//! ten years), made once at the daemon's first start and signing every
//! leaf certificate the proxy presents to a box.
//!
//! Owns: the CA key pair in memory and signing leaves with it. Never:
//! writes the key anywhere or encrypts it (the daemon stores the bytes of
//! [`BoxdCa::to_parts`] encrypted with its own store crypto and hands them
//! back to [`BoxdCa::from_parts`]), and never lets the key into anything a
//! box receives — only [`BoxdCa::cert_pem`] goes into a box.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::ring::sign::any_ecdsa_type;
use rustls::sign::SigningKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::{NetError, Result};

/// How long a new CA certificate is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far a new CA certificate's validity starts in the past (clock skew).
const CA_BACKDATE: Duration = Duration::from_secs(3600);
/// Longest accepted common name (RFC 5280's upper bound for the attribute).
const MAX_COMMON_NAME: usize = 64;
/// The name of the throw-away leaf [`BoxdCa::from_parts`] signs to check a
/// stored CA (`.invalid` never resolves, RFC 6761).
const PROBE_NAME: &str = "ca-check.boxd.invalid";

/// boxd's CA: the certificate and its signing key. Cheap to share behind
/// an `Arc`; `Debug` never prints the key.
pub struct BoxdCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

impl fmt::Debug for BoxdCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxdCa")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"[secret key elided]")
            .finish()
    }
}

impl BoxdCa {
    /// Makes a new CA: a fresh P-256 key and a self-signed certificate with
    /// subject `CN=<common_name>`, valid from an hour ago for ten years.
    pub fn generate(common_name: &str) -> Result<BoxdCa> {
        check_common_name(common_name)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(cert_err("generate the CA key"))?;
        let now = whole_seconds(SystemTime::now());
        let mut params = ca_params(common_name);
        params.not_before = (now - CA_BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("sign the CA certificate"))?;
        let cert_der = cert.der().clone();
        let not_after = params.not_after.into();
        Ok(BoxdCa {
            cert_pem: cert.pem(),
            cert_der,
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// The CA as bytes for the daemon to store: the certificate (PEM, not
    /// secret) and the private key (PKCS#8 DER, secret: zeroed when the
    /// returned buffer is dropped).
    pub fn to_parts(&self) -> (String, Zeroizing<Vec<u8>>) {
        (
            self.cert_pem.clone(),
            Zeroizing::new(self.issuer.key().serialized_der().to_vec()),
        )
    }

    /// Rebuilds a CA from what [`BoxdCa::to_parts`] gave. Refuses anything
    /// that is not one P-256 PKCS#8 key and one certificate boxd made, and
    /// checks the pair works before returning it: a leaf signed with the
    /// key must verify against the certificate (so a mismatched key, a
    /// certificate that is not a CA, or an expired CA is an error here,
    /// not a failed handshake later).
    pub fn from_parts(cert_pem: &str, key_der: &[u8]) -> Result<BoxdCa> {
        let mut certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes());
        let cert_der = match (certs.next(), certs.next()) {
            (Some(Ok(cert)), None) => cert,
            (None, _) => return Err(invalid("no certificate in the stored CA PEM")),
            (Some(Err(e)), _) => return Err(invalid(format!("stored CA PEM: {e}"))),
            (Some(Ok(_)), Some(_)) => {
                return Err(invalid("more than one certificate in the stored CA PEM"))
            }
        };
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key_der),
            &PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| invalid(format!("stored CA key is not a P-256 PKCS#8 key: {e}")))?;

        let facts = ca_facts(&cert_der).ok_or_else(|| {
            invalid("stored CA certificate is not a well-formed X.509 certificate")
        })?;
        if !facts.is_ca || !facts.key_cert_sign {
            return Err(invalid(
                "stored certificate is not a CA (basicConstraints cA and keyUsage keyCertSign required)",
            ));
        }
        let now = SystemTime::now();
        if now < facts.not_before || now >= facts.not_after {
            return Err(invalid(format!(
                "stored CA certificate is valid from {} to {} only",
                OffsetDateTime::from(facts.not_before),
                OffsetDateTime::from(facts.not_after)
            )));
        }
        let common_name = subject_common_name(facts.subject).ok_or_else(|| {
            invalid(
                "stored CA certificate's subject is not a single common name (not made by boxd)",
            )
        })?;
        check_common_name(&common_name)?;
        let not_after = facts.not_after;

        let mut roots = RootCertStore::empty();
        roots
            .add(cert_der.clone())
            .map_err(|e| invalid(format!("stored CA certificate: {e}")))?;
        let ca = BoxdCa {
            cert_pem: pem_of(&cert_der),
            cert_der,
            issuer: Issuer::new(ca_params(&common_name), key),
            not_after,
        };
        ca.self_check(Arc::new(roots))?;
        Ok(ca)
    }

    /// The CA certificate, PEM: what goes into a box's trust stores.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the CA certificate expires (the daemon makes a new CA before).
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs a leaf certificate for exactly `dns_name` (one dNSName in the
    /// subject alternative names, empty subject, serverAuth, not a CA) on a
    /// fresh P-256 key, valid from `not_before` to `not_after`. The key is
    /// returned only as a rustls signing key, never as bytes.
    pub(crate) fn issue_leaf(
        &self,
        dns_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(CertificateDer<'static>, Arc<dyn SigningKey>)> {
        let what = || format!("mint a leaf certificate for {dns_name}");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err(what()))?;
        let san = dns_name.try_into().map_err(cert_err(what()))?;
        let mut params = CertificateParams::default();
        // Empty subject: the name is in the SAN only (which rcgen then
        // marks critical, as RFC 5280 asks).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::DnsName(san)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err(what()))?;
        // The TLS signing key is made from a borrow of the key pair's own
        // bytes: no further copy of the private key is made.
        let signing_key = any_ecdsa_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialized_der(),
        )))
        .map_err(|source| NetError::Tls {
            context: format!("leaf key for {dns_name}"),
            source,
        })?;
        Ok((cert.der().clone(), signing_key))
    }

    /// Signs a short-lived leaf and verifies it against the certificate
    /// alone, as a box's client would.
    fn self_check(&self, roots: Arc<RootCertStore>) -> Result<()> {
        let now = SystemTime::now();
        let (leaf, _key) = self.issue_leaf(
            PROBE_NAME,
            now - Duration::from_secs(60),
            now + Duration::from_secs(60),
        )?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, super::provider())
            .build()
            .map_err(|e| invalid(format!("cannot build a verifier for the stored CA: {e}")))?;
        let name =
            ServerName::try_from(PROBE_NAME).map_err(|e| invalid(format!("probe name: {e}")))?;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map_err(|e| {
                invalid(format!(
                    "stored certificate and key do not form a working CA: {e}"
                ))
            })?;
        Ok(())
    }
}

/// The parameters of a boxd CA certificate (and of its issuer: the
/// subject and key usages leaves are signed under).
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// `t` without its fraction of a second: certificates carry whole seconds,
/// so the times boxd reports match the ones in its certificates.
pub(crate) fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(_) => t,
    }
}

fn check_common_name(common_name: &str) -> Result<()> {
    if common_name.is_empty()
        || common_name.len() > MAX_COMMON_NAME
        || common_name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "CA common name {common_name:?} must be 1-{MAX_COMMON_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// What [`BoxdCa::from_parts`] checks in a stored certificate.
struct CaFacts<'a> {
    subject: &'a [u8],
    not_before: SystemTime,
    not_after: SystemTime,
    is_ca: bool,
    key_cert_sign: bool,
}

/// Reads the subject, validity, basicConstraints cA and keyUsage
/// keyCertSign of a DER certificate (RFC 5280 §4.1). `None` if it does not
/// parse. The signature is not checked here (the self-check does that).
fn ca_facts(cert: &[u8]) -> Option<CaFacts<'_>> {
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    let (0x30, cert, b"") = der_tlv(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_tlv(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = der_tlv(tbs)?.2; // version
    }
    let mut next = |want: u8| -> Option<&[u8]> {
        let (tag, value, rest) = der_tlv(tbs)?;
        tbs = rest;
        (tag == want).then_some(value)
    };
    next(0x02)?; // serialNumber
    next(0x30)?; // signature
    next(0x30)?; // issuer
    let validity = next(0x30)?;
    let subject = next(0x30)?;
    next(0x30)?; // subjectPublicKeyInfo
    let (tag, first, rest) = der_tlv(validity)?;
    let not_before = der_time(tag, first)?;
    let (tag, second, b"") = der_tlv(rest)? else {
        return None;
    };
    let not_after = der_time(tag, second)?;

    let (mut is_ca, mut key_cert_sign) = (false, false);
    while !tbs.is_empty() {
        let (tag, value, rest) = der_tlv(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue; // issuerUniqueID, subjectUniqueID
        }
        let (0x30, mut exts, b"") = der_tlv(value)? else {
            return None;
        };
        while !exts.is_empty() {
            let (0x30, ext, rest) = der_tlv(exts)? else {
                return None;
            };
            exts = rest;
            let (0x06, oid, mut ext) = der_tlv(ext)? else {
                return None;
            };
            if ext.first() == Some(&0x01) {
                ext = der_tlv(ext)?.2; // critical
            }
            let (0x04, inner, b"") = der_tlv(ext)? else {
                return None;
            };
            if oid == BASIC_CONSTRAINTS {
                let (0x30, bc, b"") = der_tlv(inner)? else {
                    return None;
                };
                is_ca = matches!(der_tlv(bc), Some((0x01, [v], _)) if *v != 0);
            } else if oid == KEY_USAGE {
                let (0x03, bits, b"") = der_tlv(inner)? else {
                    return None;
                };
                key_cert_sign = bits.get(1).is_some_and(|b| b & 0x04 != 0);
            }
        }
    }
    Some(CaFacts {
        subject,
        not_before,
        not_after,
        is_ca,
        key_cert_sign,
    })
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// two forms RFC 5280 allows.
fn der_time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |n, b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let part = |i: usize| digits(&rest[i..i + 2]).and_then(|n| u8::try_from(n).ok());
    let date = time::Date::from_calendar_date(
        i32::try_from(year).ok()?,
        time::Month::try_from(part(0)?).ok()?,
        part(2)?,
    )
    .ok()?;
    let at = time::Time::from_hms(part(4)?, part(6)?, part(8)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, at).assume_utc().into())
}

/// The common name of a subject that holds exactly one attribute, a
/// common name (what [`BoxdCa::generate`] writes). `subject` is the Name,
/// with or without its outer SEQUENCE header.
fn subject_common_name(subject: &[u8]) -> Option<String> {
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = match der_tlv(subject) {
        Some((0x30, inner, b"")) => inner,
        _ => subject,
    };
    let mut cn = None;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_tlv(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let (0x30, atv, rest) = der_tlv(set)? else {
            return None;
        };
        let (0x06, oid, value) = der_tlv(atv)? else {
            return None;
        };
        let (vtag, text, end) = der_tlv(value)?;
        if !rest.is_empty() || !end.is_empty() || oid != CN_OID || cn.is_some() {
            return None;
        }
        // UTF8String or PrintableString.
        if vtag != 0x0c && vtag != 0x13 {
            return None;
        }
        cn = Some(String::from_utf8(text.to_vec()).ok()?);
    }
    cn
}

/// One DER tag-length-value: (tag, value, what follows). Single-byte tags,
/// lengths up to four bytes.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, b| len << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn invalid(reason: impl Into<String>) -> NetError {
    NetError::InvalidCa(reason.into())
}

fn cert_err(op: impl Into<String>) -> impl FnOnce(rcgen::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Certificate { op, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_of_matches_rcgen() {
        let ca = BoxdCa::generate("boxd test CA").expect("generate");
        assert_eq!(pem_of(ca.cert_der()), ca.cert_pem());
    }

    #[test]
    fn common_name_of_generated_subject() {
        let ca = BoxdCa::generate("boxd test CA").expect("generate");
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).expect("anchor");
        let subject = roots.roots[0].subject.as_ref().to_vec();
        assert_eq!(
            subject_common_name(&subject).as_deref(),
            Some("boxd test CA")
        );
        // Truncated or padded subjects are refused, never misread.
        assert_eq!(subject_common_name(&subject[..subject.len() - 1]), None);
        let mut padded = subject.clone();
        padded.push(0);
        assert_eq!(subject_common_name(&padded), None);
    }

    #[test]
    fn facts_of_a_generated_ca() {
        let ca = BoxdCa::generate("boxd test CA").expect("generate");
        let facts = ca_facts(ca.cert_der()).expect("parses");
        assert!(facts.is_ca && facts.key_cert_sign);
        assert_eq!(facts.not_after, ca.not_after());
        let now = SystemTime::now();
        assert!(facts.not_before < now && now < facts.not_before + CA_BACKDATE * 2);
        let ten_years = now + CA_LIFETIME;
        assert!(facts.not_after <= ten_years && facts.not_after + CA_BACKDATE > ten_years);
        assert_eq!(
            subject_common_name(facts.subject).as_deref(),
            Some("boxd test CA")
        );
        assert!(ca_facts(&ca.cert_der()[..ca.cert_der().len() - 1]).is_none());
    }

    #[test]
    fn from_parts_refuses_an_expired_ca() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = ca_params("boxd old CA");
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2011, 1, 1);
        let cert = params.self_signed(&key).expect("self-signed");
        let e =
            BoxdCa::from_parts(&cert.pem(), key.serialized_der()).expect_err("expired accepted");
        assert!(e.to_string().contains("valid from"), "{e}");
    }

    #[test]
    fn bad_common_names_refused() {
        for cn in ["", "a\nb", &"x".repeat(65)] {
            assert!(
                matches!(BoxdCa::generate(cn), Err(NetError::InvalidCa(_))),
                "{cn:?}"
            );
        }
    }

    #[test]
    fn from_parts_refuses_wrong_key_and_bad_pem() {
        let a = BoxdCa::generate("boxd CA a").expect("a");
        let b = BoxdCa::generate("boxd CA a").expect("b");
        let (a_pem, _) = a.to_parts();
        let (_, b_key) = b.to_parts();
        let e = BoxdCa::from_parts(&a_pem, &b_key).expect_err("mismatched key accepted");
        assert!(matches!(e, NetError::InvalidCa(_)), "{e}");
        let (_, a_key) = a.to_parts();
        assert!(matches!(
            BoxdCa::from_parts("not pem", &a_key),
            Err(NetError::InvalidCa(_))
        ));
        assert!(matches!(
            BoxdCa::from_parts(&format!("{a_pem}{a_pem}"), &a_key),
            Err(NetError::InvalidCa(_))
        ));
        assert!(matches!(
            BoxdCa::from_parts(&a_pem, &a_key[1..]),
            Err(NetError::InvalidCa(_))
        ));
    }

    #[test]
    fn from_parts_refuses_a_leaf_as_ca() {
        // A non-CA certificate whose subject is a single CN, with its key.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "not a CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        let cert = params.self_signed(&key).expect("self-signed");
        let e = BoxdCa::from_parts(&cert.pem(), key.serialized_der()).expect_err("non-CA accepted");
        assert!(matches!(e, NetError::InvalidCa(_)), "{e}");
    }
}
