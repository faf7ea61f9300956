//! A box's secret rules, as the egress proxy applies them to intercepted
//! requests: attach-header rules (Upstash: `{"api.stripe.com":
//! {"Authorization": "Bearer …"}}`) and placeholder secrets (Deno: the box
//! holds a random placeholder, the proxy substitutes the real value for
//! the secret's hosts only).
//!
//! Patterns are lowercase, an exact name or a `*.` prefix wildcard (one
//! or more labels, never the apex, never over a public suffix) — the same
//! grammar as `allow_net` names. For a host, the most specific matching
//! attach-header rule is the one applied: an exact name beats every
//! wildcard, a longer wildcard base beats a shorter one.
//!
//! Owns: parsing and validating rules (header names, forbidden targets,
//! CR/LF/NUL in values, secret names and hosts), merging team and box
//! rules, and answering "is this host intercepted, and with what". Never:
//! shows a value — not in `Debug`, not in an error message — or decides
//! policy (a rule does not open egress to its host).

use std::fmt;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::policy::{DomainPattern, HostName};

/// Headers a rule may not set: they frame the message or the connection,
/// so injecting them would let a rule (or a box through it) split or
/// smuggle requests. `proxy-*` is refused as a prefix as well.
pub const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "expect",
];

/// Shortest placeholder accepted (hex digits of randomness are checked by
/// whoever makes placeholders; this only refuses obviously weak ones).
pub const MIN_PLACEHOLDER_LEN: usize = 32;

/// Why a rule was refused. Messages name the pattern, header or secret,
/// never a value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretRuleError {
    #[error("host pattern {pattern:?}: {why}")]
    Pattern { pattern: String, why: String },
    #[error("header {header:?} for {pattern:?}: {why}")]
    Header {
        pattern: String,
        header: String,
        why: String,
    },
    #[error("secret {name:?}: {why}")]
    Secret { name: String, why: String },
}

/// Parses a host pattern of a rule: lowercase, exact or `*.` wildcard.
pub fn parse_pattern(pattern: &str) -> Result<DomainPattern, SecretRuleError> {
    let err = |why: String| SecretRuleError::Pattern {
        pattern: pattern.to_owned(),
        why,
    };
    if pattern.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(err("patterns are lowercase".into()));
    }
    let parsed = DomainPattern::parse(pattern).map_err(|e| err(e.to_string()))?;
    // `DomainPattern` accepts IDNA input and stores the ASCII form; a rule
    // must be written as it will be matched, so nothing is rewritten.
    if parsed.to_string() != pattern.trim_end_matches('.') {
        return Err(err(format!("write it as {:?}", parsed.to_string())));
    }
    Ok(parsed)
}

/// How specific a pattern is: exact names first, then wildcards by the
/// length of their base.
fn specificity(p: &DomainPattern) -> (u8, usize) {
    match p {
        DomainPattern::Exact(n) => (1, n.label_count()),
        DomainPattern::Wildcard(b) => (0, b.label_count()),
    }
}

/// Is `name` an HTTP header field name (RFC 9110 token)?
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Can `value` be sent as (part of) a header value: no CR, LF, NUL or
/// other control character but tab.
pub fn is_header_safe(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// One header an attach-header rule sets.
pub struct InjectedHeader {
    /// As configured (sent in this spelling).
    pub name: String,
    pub value: Zeroizing<String>,
}

impl fmt::Debug for InjectedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InjectedHeader")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The headers set on every intercepted request to hosts matching
/// `pattern`.
#[derive(Debug)]
pub struct AttachHeaderRule {
    pub pattern: DomainPattern,
    pub headers: Vec<InjectedHeader>,
}

impl AttachHeaderRule {
    /// Validates `pattern` and each header: a token name that is not a
    /// framing header ([`FORBIDDEN_HEADERS`], `proxy-*`) and appears once
    /// (case-insensitively), a header-safe non-empty value.
    pub fn new(
        pattern: &str,
        headers: Vec<(String, Zeroizing<String>)>,
    ) -> Result<Self, SecretRuleError> {
        let parsed = parse_pattern(pattern)?;
        if headers.is_empty() {
            return Err(SecretRuleError::Pattern {
                pattern: pattern.to_owned(),
                why: "no headers given".into(),
            });
        }
        let mut out: Vec<InjectedHeader> = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let err = |why: &str| SecretRuleError::Header {
                pattern: pattern.to_owned(),
                header: name.clone(),
                why: why.to_owned(),
            };
            if !is_token(&name) {
                return Err(err("not a valid header name"));
            }
            let lower = name.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                return Err(err(
                    "this header frames the request or the connection and cannot be set by a rule",
                ));
            }
            if out.iter().any(|h| h.name.eq_ignore_ascii_case(&name)) {
                return Err(err("given twice (header names are case-insensitive)"));
            }
            if value.is_empty() {
                return Err(err("the value is empty"));
            }
            if !is_header_safe(value.as_bytes()) {
                return Err(err(
                    "the value contains CR, LF, NUL or another control character",
                ));
            }
            out.push(InjectedHeader { name, value });
        }
        Ok(AttachHeaderRule {
            pattern: parsed,
            headers: out,
        })
    }
}

/// A placeholder secret: the box's env var `name` holds `placeholder`;
/// requests to `hosts` get `value` in its place.
pub struct PlaceholderSecret {
    pub name: String,
    pub hosts: Vec<DomainPattern>,
    pub placeholder: String,
    pub value: Zeroizing<String>,
    /// Also substitute in the request target's query string.
    pub in_query: bool,
    /// Also substitute in request bodies (buffered, Content-Length fixed).
    pub in_body: bool,
}

impl fmt::Debug for PlaceholderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaceholderSecret")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("in_query", &self.in_query)
            .field("in_body", &self.in_body)
            .finish_non_exhaustive()
    }
}

/// Is `name` usable as an environment variable name
/// (`[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters)?
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

impl PlaceholderSecret {
    /// Validates the name (an env var name), the host patterns (at least
    /// one), the value (non-empty, header-safe: it is substituted into
    /// header values) and the placeholder (at least
    /// [`MIN_PLACEHOLDER_LEN`] characters, header-safe, not inside the
    /// value).
    pub fn new(
        name: &str,
        hosts: &[String],
        placeholder: String,
        value: Zeroizing<String>,
        in_query: bool,
        in_body: bool,
    ) -> Result<Self, SecretRuleError> {
        let err = |why: &str| SecretRuleError::Secret {
            name: name.to_owned(),
            why: why.to_owned(),
        };
        if !is_env_name(name) {
            return Err(err(
                "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128)",
            ));
        }
        if hosts.is_empty() {
            return Err(err("no hosts given: a secret is only sent to its hosts"));
        }
        let hosts = hosts
            .iter()
            .map(|h| parse_pattern(h))
            .collect::<Result<Vec<_>, _>>()?;
        if value.is_empty() {
            return Err(err("the value is empty"));
        }
        if !is_header_safe(value.as_bytes()) {
            return Err(err(
                "the value contains CR, LF, NUL or another control character",
            ));
        }
        if placeholder.len() < MIN_PLACEHOLDER_LEN
            || !placeholder
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(err("the placeholder is too short or not alphanumeric"));
        }
        Ok(PlaceholderSecret {
            name: name.to_owned(),
            hosts,
            placeholder,
            value,
            in_query,
            in_body,
        })
    }

    /// Is `host` one of this secret's hosts?
    pub fn approved_for(&self, host: &HostName) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }
}

/// Everything a box's intercepted requests get; fixed for the box's life.
#[derive(Debug, Default)]
pub struct SecretRules {
    headers: Vec<AttachHeaderRule>,
    secrets: Vec<PlaceholderSecret>,
}

impl SecretRules {
    /// The team's rules merged with the box's (a box rule replaces the
    /// team rule of the same pattern), and the box's secrets. Two secrets
    /// with the same name or placeholder are refused.
    pub fn new(
        team: Vec<AttachHeaderRule>,
        own: Vec<AttachHeaderRule>,
        secrets: Vec<PlaceholderSecret>,
    ) -> Result<Self, SecretRuleError> {
        let mut headers: Vec<AttachHeaderRule> = Vec::with_capacity(team.len() + own.len());
        for rule in team.into_iter().chain(own) {
            match headers.iter_mut().find(|r| r.pattern == rule.pattern) {
                Some(existing) => *existing = rule,
                None => headers.push(rule),
            }
        }
        for (i, s) in secrets.iter().enumerate() {
            if secrets[..i]
                .iter()
                .any(|o| o.name == s.name || o.placeholder == s.placeholder)
            {
                return Err(SecretRuleError::Secret {
                    name: s.name.clone(),
                    why: "given twice".into(),
                });
            }
        }
        Ok(SecretRules { headers, secrets })
    }

    /// No rules and no secrets: nothing is ever intercepted.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.secrets.is_empty()
    }

    /// Are connections to `host` (port 443 TLS) intercepted: does an
    /// attach-header rule or a secret's hosts match it?
    pub fn intercepts(&self, host: &HostName) -> bool {
        self.header_rule(host).is_some() || self.secrets.iter().any(|s| s.approved_for(host))
    }

    /// The most specific attach-header rule matching `host`.
    pub fn header_rule(&self, host: &HostName) -> Option<&AttachHeaderRule> {
        self.headers
            .iter()
            .filter(|r| r.pattern.matches(host))
            .max_by_key(|r| specificity(&r.pattern))
    }

    pub fn headers(&self) -> &[AttachHeaderRule] {
        &self.headers
    }

    pub fn secrets(&self) -> &[PlaceholderSecret] {
        &self.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: &str, h: &[(&str, &str)]) -> Result<AttachHeaderRule, SecretRuleError> {
        AttachHeaderRule::new(
            p,
            h.iter()
                .map(|(n, v)| (n.to_string(), Zeroizing::new(v.to_string())))
                .collect(),
        )
    }

    fn host(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    #[test]
    fn patterns_are_lowercase_exact_or_wildcard() {
        assert!(rule("api.stripe.com", &[("Authorization", "x")]).is_ok());
        assert!(rule("*.supabase.co", &[("apikey", "x")]).is_ok());
        for bad in [
            "API.stripe.com",
            "*",
            "*.com",
            "a.*.b.com",
            "",
            "1.2.3.4",
            "*.co.uk",
        ] {
            assert!(rule(bad, &[("a", "x")]).is_err(), "{bad}");
        }
    }

    #[test]
    fn framing_headers_bad_names_and_unsafe_values_are_refused_without_the_value() {
        for h in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "Proxy-Authorization",
            "bad name",
            "",
        ] {
            assert!(rule("a.example.com", &[(h, "v")]).is_err(), "{h}");
        }
        for v in ["a\r\nX-Evil: 1", "a\nb", "a\0b", ""] {
            let e = rule("a.example.com", &[("X-Key", v)])
                .unwrap_err()
                .to_string();
            if !v.is_empty() {
                assert!(!e.contains(v), "{e}");
            }
        }
        assert!(rule("a.example.com", &[("X-Key", "a"), ("x-key", "b")]).is_err());
    }

    #[test]
    fn most_specific_rule_wins_and_box_rules_replace_team_rules() {
        let team = vec![
            rule("*.supabase.co", &[("apikey", "team")]).unwrap(),
            rule("api.stripe.com", &[("Authorization", "team")]).unwrap(),
        ];
        let own = vec![
            rule("api.stripe.com", &[("Authorization", "box")]).unwrap(),
            rule("*.eu.supabase.co", &[("apikey", "eu")]).unwrap(),
            rule("db.eu.supabase.co", &[("apikey", "db")]).unwrap(),
        ];
        let rules = SecretRules::new(team, own, vec![]).unwrap();
        let value = |h: &str| {
            rules
                .header_rule(&host(h))
                .map(|r| r.headers[0].value.as_str().to_owned())
        };
        assert_eq!(value("api.stripe.com").as_deref(), Some("box"));
        assert_eq!(value("x.supabase.co").as_deref(), Some("team"));
        assert_eq!(value("x.eu.supabase.co").as_deref(), Some("eu"));
        assert_eq!(value("db.eu.supabase.co").as_deref(), Some("db"));
        assert_eq!(value("supabase.co"), None);
        assert_eq!(value("evilsupabase.co"), None);
        assert!(!rules.intercepts(&host("supabase.co")));
        assert!(rules.intercepts(&host("a.supabase.co")));
    }

    #[test]
    fn secrets_need_hosts_and_safe_values() {
        let ph = "boxd_placeholder_0123456789abcdef0123456789abcdef".to_string();
        let ok = PlaceholderSecret::new(
            "OPENAI_API_KEY",
            &["api.openai.com".into()],
            ph.clone(),
            Zeroizing::new("sk-1".into()),
            false,
            false,
        )
        .unwrap();
        assert!(ok.approved_for(&host("api.openai.com")));
        assert!(!ok.approved_for(&host("openai.com")));
        assert!(!format!("{ok:?}").contains("sk-1"));
        let mk = |name: &str, hosts: &[String], v: &str| {
            PlaceholderSecret::new(
                name,
                hosts,
                ph.clone(),
                Zeroizing::new(v.into()),
                false,
                false,
            )
        };
        assert!(mk("1BAD", &["a.example.com".into()], "v").is_err());
        assert!(mk("OK", &[], "v").is_err());
        assert!(mk("OK", &["a.example.com".into()], "v\r\n").is_err());
        assert!(mk("OK", &["A.example.com".into()], "v").is_err());
        let dup = SecretRules::new(
            vec![],
            vec![],
            vec![
                mk("A", &["a.example.com".into()], "v").unwrap(),
                mk("A", &["b.example.com".into()], "w").unwrap(),
            ],
        );
        assert!(dup.is_err());
    }
}
