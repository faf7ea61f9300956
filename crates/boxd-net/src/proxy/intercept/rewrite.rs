//! What an intercepted request becomes on its way upstream: the attach
//! headers of the host's rule (replacing every case-variant the box sent),
//! placeholders of secrets approved for the host replaced by their values
//! (header values, `Authorization: Basic` credentials; the query and the
//! body only for secrets that opted in), and placeholders of secrets *not*
//! approved for the host left as they are and reported as violations.
//!
//! Placeholders are matched byte for byte as the box wrote them
//! (alphanumeric and `_`, so URL and JSON encodings leave them as they
//! are unless a client escapes plain letters). Violations are also looked
//! for in the percent-decoded path and query; escaped letters in header
//! values or bodies (`\u0042`, `%42`) are not decoded, so such a
//! placeholder to an unapproved host goes unreported — it is still only
//! the placeholder that leaves, never the value. Substitution itself is
//! exact-match only.
//!
//! Owns: the outgoing request head (built in a [`Zeroizing`] buffer), the
//! body substitution, and the rolling scan of streamed bodies. Never:
//! returns a value anywhere but in the outgoing bytes, puts one in an
//! error, or substitutes for a host the secret is not approved for.

use std::collections::BTreeSet;

use base64::Engine;
use zeroize::Zeroizing;

use super::http::{split_target, Body, Header, RequestHead};
use crate::events::Violation;
use crate::policy::HostName;
use crate::secrets::{PlaceholderSecret, SecretRules};

/// The secrets of a box split for one host.
pub struct ForHost<'a> {
    /// Approved for the host: substituted.
    pub approved: Vec<&'a PlaceholderSecret>,
    /// Not approved: their placeholders are violations.
    pub others: Vec<&'a PlaceholderSecret>,
}

impl<'a> ForHost<'a> {
    pub fn new(rules: &'a SecretRules, host: &HostName) -> Self {
        let (approved, others) = rules.secrets().iter().partition(|s| s.approved_for(host));
        ForHost { approved, others }
    }

    /// Does a request to this host need its body buffered?
    pub fn body_substitution(&self) -> bool {
        self.approved.iter().any(|s| s.in_body)
    }
}

/// Names found so far for one request.
#[derive(Debug, Default)]
pub struct Findings {
    pub substituted: BTreeSet<String>,
    violations: BTreeSet<(String, &'static str)>,
}

impl Findings {
    pub fn violation(&mut self, secret: &str, location: &'static str) {
        self.violations.insert((secret.to_owned(), location));
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.violations
            .iter()
            .map(|(secret, location)| Violation {
                secret: secret.clone(),
                location: (*location).to_owned(),
            })
            .collect()
    }
}

/// Substring search in linear time (a box chooses the haystack).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

/// `hay` with every occurrence of each secret's placeholder replaced by
/// `value_of(secret)`; `None` when nothing was replaced. Records the
/// substituted names.
fn replace_all<'s>(
    hay: &[u8],
    secrets: impl Iterator<Item = &'s PlaceholderSecret>,
    value_of: impl Fn(&PlaceholderSecret) -> Zeroizing<Vec<u8>>,
    found: &mut Findings,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut current: Option<Zeroizing<Vec<u8>>> = None;
    for s in secrets {
        let needle = s.placeholder.as_bytes();
        let src: &[u8] = current.as_deref().map_or(hay, |v| v.as_slice());
        if !contains(src, needle) {
            continue;
        }
        let value = value_of(s);
        let mut out = Zeroizing::new(Vec::with_capacity(src.len() + value.len()));
        let mut rest = src;
        while let Some(at) = memchr::memmem::find(rest, needle) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(&value);
            rest = &rest[at + needle.len()..];
        }
        out.extend_from_slice(rest);
        found.substituted.insert(s.name.clone());
        current = Some(out);
    }
    current
}

fn raw_value(s: &PlaceholderSecret) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(s.value.as_bytes().to_vec())
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encoded(s: &PlaceholderSecret) -> Zeroizing<Vec<u8>> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Zeroizing::new(Vec::with_capacity(s.value.len() * 3));
    for &b in s.value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out
}

/// Reports each of `others` whose placeholder is in `hay`.
fn scan(hay: &[u8], others: &[&PlaceholderSecret], location: &'static str, found: &mut Findings) {
    for s in others {
        if contains(hay, s.placeholder.as_bytes()) {
            found.violation(&s.name, location);
        }
    }
}

/// A header value with placeholders handled (`Authorization: Basic`
/// credentials decoded, handled, and encoded again).
fn header_value(h: &Header, secrets: &ForHost<'_>, found: &mut Findings) -> Zeroizing<Vec<u8>> {
    scan(&h.value, &secrets.others, "header", found);
    if h.is("authorization") && h.value.len() > 6 && h.value[..6].eq_ignore_ascii_case(b"basic ") {
        let encoded = h.value[6..].trim_ascii();
        let engine = base64::engine::general_purpose::STANDARD;
        if let Ok(decoded) = engine.decode(encoded) {
            let decoded = Zeroizing::new(decoded);
            scan(&decoded, &secrets.others, "basic_auth", found);
            if let Some(new) =
                replace_all(&decoded, secrets.approved.iter().copied(), raw_value, found)
            {
                let mut out = Zeroizing::new(h.value[..6].to_vec());
                out.extend_from_slice(Zeroizing::new(engine.encode(new.as_slice())).as_bytes());
                return out;
            }
        }
    }
    replace_all(&h.value, secrets.approved.iter().copied(), raw_value, found)
        .unwrap_or_else(|| Zeroizing::new(h.value.clone()))
}

/// `%XX` sequences decoded (others kept as they are).
fn percent_decoded(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// [`scan`] of a URL component as written and percent-decoded.
fn scan_url_part(part: &str, secrets: &ForHost<'_>, location: &'static str, found: &mut Findings) {
    scan(part.as_bytes(), &secrets.others, location, found);
    if part.contains('%') {
        scan(
            &percent_decoded(part.as_bytes()),
            &secrets.others,
            location,
            found,
        );
    }
}

/// The request target to send, with the query handled.
fn target(req: &RequestHead, secrets: &ForHost<'_>, found: &mut Findings) -> Zeroizing<Vec<u8>> {
    let (path, query) = split_target(&req.target);
    scan_url_part(path, secrets, "path", found);
    let mut out = Zeroizing::new(path.as_bytes().to_vec());
    if let Some(q) = query {
        scan_url_part(q, secrets, "query", found);
        out.push(b'?');
        let opted = secrets.approved.iter().copied().filter(|s| s.in_query);
        match replace_all(q.as_bytes(), opted, percent_encoded, found) {
            Some(new) => out.extend_from_slice(&new),
            None => out.extend_from_slice(q.as_bytes()),
        }
    }
    out
}

/// The outgoing head and what was done to it.
pub struct Outgoing {
    pub head: Zeroizing<Vec<u8>>,
    /// Names of the headers the attach-header rule set.
    pub injected: Vec<String>,
}

/// Builds the head sent upstream for `req` to `host`. `Expect` is dropped
/// (the proxy answers `100 Continue` itself). The box's framing headers
/// are replaced by boxd's canonical ones for the checked framing
/// (`Content-Length: 5, 5` goes as `Content-Length: 5`); with
/// `fixed_length` the body was buffered (and possibly changed) and is
/// sent with that length.
pub fn outgoing_head(
    req: &RequestHead,
    rules: &SecretRules,
    host: &HostName,
    secrets: &ForHost<'_>,
    fixed_length: Option<usize>,
    found: &mut Findings,
) -> Outgoing {
    let rule = rules.header_rule(host);
    let injected_names: Vec<String> = rule
        .map(|r| r.headers.iter().map(|h| h.name.clone()).collect())
        .unwrap_or_default();
    let mut head = Zeroizing::new(Vec::with_capacity(1024));
    head.extend_from_slice(req.method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(&target(req, secrets, found));
    head.extend_from_slice(if req.minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for h in &req.headers {
        if injected_names.iter().any(|n| h.is(n)) || h.is("expect") {
            continue;
        }
        if h.is("content-length") || h.is("transfer-encoding") {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&header_value(h, secrets, found));
        head.extend_from_slice(b"\r\n");
    }
    // The framing, written by boxd in its one canonical form: the upstream
    // reads exactly the message boundaries the proxy checked.
    let framing = match (fixed_length, req.body) {
        (Some(n), _) => Some(format!("Content-Length: {n}\r\n")),
        (None, Body::Length(n)) => Some(format!("Content-Length: {n}\r\n")),
        (None, Body::Chunked) => Some("Transfer-Encoding: chunked\r\n".to_owned()),
        (None, Body::None) if req.headers.iter().any(|h| h.is("content-length")) => {
            Some("Content-Length: 0\r\n".to_owned())
        }
        (None, Body::None) => None,
    };
    if let Some(f) = framing {
        head.extend_from_slice(f.as_bytes());
    }
    if let Some(rule) = rule {
        for h in &rule.headers {
            head.extend_from_slice(h.name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(h.value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    Outgoing {
        head,
        injected: injected_names,
    }
}

/// A buffered body with the placeholders of secrets that opted into body
/// substitution replaced (and the others reported).
pub fn body(body: &[u8], secrets: &ForHost<'_>, found: &mut Findings) -> Zeroizing<Vec<u8>> {
    scan(body, &secrets.others, "body", found);
    let opted = secrets.approved.iter().copied().filter(|s| s.in_body);
    replace_all(body, opted, raw_value, found).unwrap_or_else(|| Zeroizing::new(body.to_vec()))
}

/// Looks for placeholders in a body that streams through in pieces: the
/// last `longest - 1` bytes of what was seen are kept, so a placeholder
/// split across pieces is still found.
pub struct Scanner {
    needles: Vec<(String, Vec<u8>)>,
    keep: usize,
    tail: Vec<u8>,
    found: BTreeSet<String>,
}

impl Scanner {
    /// Scans for the placeholders of `secrets`.
    pub fn new(secrets: &[&PlaceholderSecret]) -> Self {
        let needles: Vec<(String, Vec<u8>)> = secrets
            .iter()
            .map(|s| (s.name.clone(), s.placeholder.as_bytes().to_vec()))
            .collect();
        let keep = needles
            .iter()
            .map(|(_, n)| n.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        Scanner {
            needles,
            keep,
            tail: Vec::new(),
            found: BTreeSet::new(),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.needles.is_empty() || data.is_empty() {
            return;
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(data);
        for (name, needle) in &self.needles {
            if !self.found.contains(name) && contains(&window, needle) {
                self.found.insert(name.clone());
            }
        }
        let from = window.len().saturating_sub(self.keep);
        window.drain(..from);
        self.tail = window;
    }

    /// Names of the secrets whose placeholder was seen.
    pub fn found(&self) -> impl Iterator<Item = &str> {
        self.found.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::intercept::http::parse_request;
    use crate::secrets::AttachHeaderRule;
    use proptest::prelude::*;

    const PH_A: &str = "BOXD_PLACEHOLDER_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const PH_B: &str = "BOXD_PLACEHOLDER_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn host(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    fn rules(in_query: bool, in_body: bool) -> SecretRules {
        let secret = |name: &str, h: &str, ph: &str, v: &str| {
            PlaceholderSecret::new(
                name,
                &[h.to_owned()],
                ph.to_owned(),
                Zeroizing::new(v.to_owned()),
                in_query,
                in_body,
            )
            .unwrap()
        };
        let rule = AttachHeaderRule::new(
            "api.example.test",
            vec![("X-Api-Key".into(), Zeroizing::new("injected-key".into()))],
        )
        .unwrap();
        SecretRules::new(
            vec![],
            vec![rule],
            vec![
                secret("A", "api.example.test", PH_A, "value a&b"),
                secret("B", "other.example.test", PH_B, "value-b"),
            ],
        )
        .unwrap()
    }

    fn rewrite(
        raw: &str,
        rules: &SecretRules,
        fixed: Option<usize>,
    ) -> (String, Findings, Outgoing) {
        let h = host("api.example.test");
        let (req, _) = parse_request(raw.as_bytes(), &h).unwrap().unwrap();
        let secrets = ForHost::new(rules, &h);
        let mut found = Findings::default();
        let out = outgoing_head(&req, rules, &h, &secrets, fixed, &mut found);
        (String::from_utf8(out.head.to_vec()).unwrap(), found, out)
    }

    #[test]
    fn injected_headers_replace_every_case_variant() {
        let r = rules(false, false);
        let (head, _, out) = rewrite(
            "GET / HTTP/1.1\r\nHost: api.example.test\r\nx-api-key: box1\r\nX-API-KEY: box2\r\nExpect: 100-continue\r\n\r\n",
            &r,
            None,
        );
        assert!(!head.contains("box1") && !head.contains("box2"), "{head}");
        assert_eq!(head.matches("injected-key").count(), 1);
        assert!(head.ends_with("X-Api-Key: injected-key\r\n\r\n"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("expect"));
        assert_eq!(out.injected, vec!["X-Api-Key".to_owned()]);
    }

    #[test]
    fn framing_is_rewritten_canonically() {
        let r = rules(false, false);
        let (head, _, _) = rewrite(
            "POST / HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 05, 5\r\ncontent-length: 5\r\n\r\n",
            &r,
            None,
        );
        assert_eq!(
            head.to_ascii_lowercase().matches("content-length").count(),
            1
        );
        assert!(head.contains("Content-Length: 5\r\n"), "{head}");
        let (head, _, _) = rewrite(
            "POST / HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: Chunked\r\n\r\n",
            &r,
            None,
        );
        assert!(
            head.contains("Transfer-Encoding: chunked\r\n") && !head.contains("Chunked"),
            "{head}"
        );
        let (head, _, _) = rewrite(
            "POST / HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 000\r\n\r\n",
            &r,
            None,
        );
        assert!(
            head.contains("Content-Length: 0\r\n") && !head.contains("000"),
            "{head}"
        );
        let (head, _, _) = rewrite("GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n", &r, None);
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );
    }

    #[test]
    fn placeholders_substituted_for_approved_and_reported_otherwise() {
        let r = rules(false, false);
        let basic = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let raw = format!(
            "GET /p/{PH_B}?k={PH_A}&o={PH_B} HTTP/1.1\r\nHost: api.example.test\r\nX-A: Bearer {PH_A}\r\nX-B: {PH_B}\r\nAuthorization: Basic {}\r\n\r\n",
            basic(&format!("user:{PH_A}"))
        );
        let (head, found, _) = rewrite(&raw, &r, None);
        assert!(head.contains("X-A: Bearer value a&b\r\n"), "{head}");
        assert!(head.contains(&format!("X-B: {PH_B}\r\n")));
        assert!(head.contains(&format!(
            "Authorization: Basic {}\r\n",
            basic("user:value a&b")
        )));
        // No query opt-in: the query keeps the placeholder.
        assert!(
            head.starts_with(&format!("GET /p/{PH_B}?k={PH_A}&o={PH_B} ")),
            "{head}"
        );
        assert_eq!(found.substituted.iter().collect::<Vec<_>>(), vec!["A"]);
        let v: Vec<(String, String)> = found
            .violations()
            .into_iter()
            .map(|v| (v.secret, v.location))
            .collect();
        assert_eq!(
            v,
            vec![
                ("B".into(), "header".into()),
                ("B".into(), "path".into()),
                ("B".into(), "query".into())
            ]
        );
        // Percent-encoded letters in the query are still seen.
        let escaped = format!("%{:02X}{}", PH_B.as_bytes()[0], &PH_B[1..]);
        let raw = format!("GET /?x={escaped} HTTP/1.1\r\nHost: api.example.test\r\n\r\n");
        let (_, found, _) = rewrite(&raw, &r, None);
        assert_eq!(found.violations()[0].location, "query");
        // Basic credentials of an unapproved secret.
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: api.example.test\r\nAuthorization: basic {}\r\n\r\n",
            basic(&format!("{PH_B}:x"))
        );
        let (_, found, _) = rewrite(&raw, &r, None);
        assert_eq!(found.violations()[0].location, "basic_auth");
        assert!(found.substituted.is_empty());
    }

    #[test]
    fn query_and_body_only_when_opted_in() {
        let r = rules(true, true);
        let raw = format!("POST /x?k={PH_A} HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 60\r\nTransfer-Encoding: x\r\n\r\n");
        // Framing refused before anything else; a valid one:
        assert!(parse_request(raw.as_bytes(), &host("api.example.test")).is_err());
        let raw = format!(
            "POST /x?k={PH_A} HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 60\r\n\r\n"
        );
        let (head, found, _) = rewrite(&raw, &r, Some(7));
        assert!(
            head.starts_with("POST /x?k=value%20a%26b HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Content-Length: 7\r\n") && !head.contains("60"),
            "{head}"
        );
        assert!(found.substituted.contains("A"));
        let h = host("api.example.test");
        let secrets = ForHost::new(&r, &h);
        let mut found = Findings::default();
        let b = body(
            format!("{{\"k\":\"{PH_A}\",\"o\":\"{PH_B}\"}}").as_bytes(),
            &secrets,
            &mut found,
        );
        assert_eq!(
            String::from_utf8(b.to_vec()).unwrap(),
            format!("{{\"k\":\"value a&b\",\"o\":\"{PH_B}\"}}")
        );
        assert_eq!(found.violations()[0].location, "body");
        // Not opted in: the body keeps the placeholder.
        let r = rules(false, false);
        let secrets = ForHost::new(&r, &h);
        assert!(!secrets.body_substitution());
        let mut found = Findings::default();
        let b = body(PH_A.as_bytes(), &secrets, &mut found);
        assert_eq!(b.as_slice(), PH_A.as_bytes());
    }

    proptest! {
        #[test]
        fn scanner_finds_placeholders_split_anywhere(
            before in proptest::collection::vec(any::<u8>(), 0..60),
            after in proptest::collection::vec(any::<u8>(), 0..60),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let r = rules(false, false);
            let h = host("api.example.test");
            let secrets = ForHost::new(&r, &h);
            let mut data = before.clone();
            data.extend_from_slice(PH_B.as_bytes());
            data.extend_from_slice(&after);
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            bounds.push(data.len());
            bounds.sort_unstable();
            let mut scanner = Scanner::new(&secrets.others);
            let mut start = 0;
            for end in bounds {
                scanner.push(&data[start..end]);
                start = end;
            }
            prop_assert_eq!(scanner.found().collect::<Vec<_>>(), vec!["B"]);
            // The approved secret's placeholder is no violation.
            let mut clean = Scanner::new(&secrets.others);
            clean.push(PH_A.as_bytes());
            prop_assert_eq!(clean.found().count(), 0);
        }
    }
}
