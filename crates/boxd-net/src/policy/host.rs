//! Host names and IP literals: normalisation and strict parsing.
//!
//! A [`HostName`] is always in one canonical form: ASCII (IDNA/UTS-46 to punycode), lowercase,
//! no trailing dot, labels of `a-z 0-9 - _` of 1-63 characters, at most 253 characters. Two
//! spellings of one name (`BÜCHER.example.`, `xn--bcher-kva.example`) give equal values, so
//! policy comparisons are plain string comparisons.
//!
//! IP literals are accepted only in canonical form: dotted-quad IPv4 with exactly four decimal
//! parts and no leading zeros, IPv6 as [`std::net::Ipv6Addr`] reads it, without zone id. Anything a
//! URL parser or `inet_aton` would read as an IPv4 address in another form (`0177.0.0.1`,
//! `2130706433`, `127.1`, `0x7f.0.0.1`) is an error, never a name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use super::PolicyError;

/// Longest label, in octets.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest name, in octets, without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;

/// A normalised DNS host name (never an IP address). See the module docs for the form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    /// Normalises `input` into a host name. IP addresses (canonical or not) are refused: a
    /// canonical one with [`PolicyError::NotAName`], another with [`PolicyError::NonCanonicalIpv4`].
    pub fn parse(input: &str) -> Result<Self, PolicyError> {
        match Host::parse_unbracketed(input)? {
            Host::Name(name) => Ok(name),
            Host::Ip(_) => Err(PolicyError::NotAName {
                input: input.to_owned(),
                hint: "",
            }),
        }
    }

    /// The canonical ASCII form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The labels, left to right.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// Number of labels.
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// True if `self` is a strict subdomain of `base` (one or more labels more; never `base`
    /// itself, never `evilbase`).
    pub fn is_strict_subdomain_of(&self, base: &HostName) -> bool {
        let (s, b) = (self.0.as_str(), base.0.as_str());
        s.len() > b.len() + 1 && s.ends_with(b) && s.as_bytes()[s.len() - b.len() - 1] == b'.'
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostName::parse(s)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A host as written in a URL, a Host header or a rule: a name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A normalised host name.
    Name(HostName),
    /// An IP address (IPv6 was written in brackets).
    Ip(IpAddr),
}

impl Host {
    /// Parses a host: a name, a canonical IPv4 address, or an IPv6 address in brackets
    /// (`[::1]`). A bare IPv6 address is refused (its colons are ambiguous with a port).
    pub fn parse(input: &str) -> Result<Self, PolicyError> {
        if let Some(inner) = input.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                return Err(PolicyError::InvalidIpv6 {
                    input: input.to_owned(),
                    why: "missing closing bracket",
                });
            };
            return parse_ipv6(inner).map(IpAddr::V6).map(Host::Ip);
        }
        Host::parse_unbracketed(input)
    }

    fn parse_unbracketed(input: &str) -> Result<Self, PolicyError> {
        check_raw(input)?;
        let err_input = || input.to_owned();
        let ascii = Uts46::new()
            .to_ascii(
                input.as_bytes(),
                AsciiDenyList::URL,
                Hyphens::Allow,
                DnsLength::Ignore,
            )
            .map_err(|_| PolicyError::Idna { input: err_input() })?;
        // Strip exactly one trailing dot (the root label); more is an empty label below.
        let name = ascii.strip_suffix('.').unwrap_or(&ascii);
        if name.is_empty() {
            return Err(PolicyError::EmptyLabel { input: err_input() });
        }
        let last = name.rsplit('.').next().unwrap_or(name);
        if ends_in_number(last) {
            // WHATWG "ends in a number": a URL parser would treat this as IPv4. Accept only
            // the canonical dotted-quad, and only if it was written in ASCII as such.
            let written = input.strip_suffix('.').unwrap_or(input);
            return match parse_ipv4(name) {
                Some(v4) if written == name => Ok(Host::Ip(IpAddr::V4(v4))),
                _ => Err(PolicyError::NonCanonicalIpv4 { input: err_input() }),
            };
        }
        if name.len() > MAX_NAME_LEN {
            return Err(PolicyError::NameTooLong {
                input: err_input(),
                len: name.len(),
            });
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(PolicyError::EmptyLabel { input: err_input() });
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(PolicyError::LabelTooLong {
                    input: err_input(),
                    label: label.to_owned(),
                    len: label.len(),
                });
            }
            if let Some(ch) = label
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
            {
                return Err(PolicyError::ForbiddenChar {
                    input: err_input(),
                    ch,
                    why: "host names are letters, digits, '-' and '_' (after IDNA mapping)",
                });
            }
        }
        Ok(Host::Name(HostName(name.to_owned())))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => n.fmt(f),
            Host::Ip(IpAddr::V4(v4)) => v4.fmt(f),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

impl FromStr for Host {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Host::parse(s)
    }
}

/// Refuses, before any IDNA mapping, the characters that are never part of a host and that
/// are the usual tools of parser-confusion attacks.
fn check_raw(input: &str) -> Result<(), PolicyError> {
    if input.is_empty() {
        return Err(PolicyError::Empty { what: "host name" });
    }
    for ch in input.chars() {
        let why = match ch {
            '\0' => "NUL",
            c if c.is_control() => "control character",
            c if c.is_whitespace() => "whitespace",
            '%' => "percent-encoding and zone ids are not allowed",
            '@' => "userinfo is not allowed",
            '/' | '\\' => "paths are not allowed",
            ':' => "a port or an IPv6 address does not belong here (IPv6 goes in brackets)",
            '[' | ']' => "brackets only around a whole IPv6 address",
            '*' => "a wildcard is only allowed as a leading '*.' of a rule",
            // Invisible and bidi-formatting characters: UTS-46 would silently drop some of them.
            '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{feff}' => "invisible or bidi formatting character",
            _ => continue,
        };
        return Err(PolicyError::ForbiddenChar {
            input: input.to_owned(),
            ch,
            why,
        });
    }
    Ok(())
}

/// WHATWG URL "ends in a number": all ASCII digits, or `0x`/`0X` followed by hex digits.
fn ends_in_number(label: &str) -> bool {
    if !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Canonical dotted-quad only: four parts, each `0` or 1-3 digits without a leading zero, ≤ 255.
pub(crate) fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// An IPv6 address without brackets; zone ids refused.
fn parse_ipv6(s: &str) -> Result<Ipv6Addr, PolicyError> {
    let input = || format!("[{s}]");
    if s.contains('%') {
        return Err(PolicyError::ZoneId { input: input() });
    }
    if s.is_empty() {
        return Err(PolicyError::InvalidIpv6 {
            input: input(),
            why: "empty",
        });
    }
    // The embedded-IPv4 tail of `::ffff:1.2.3.4` must be canonical too (std already refuses
    // leading zeros; this keeps the rule in one place).
    if let Some((_, tail)) = s.rsplit_once(':') {
        if tail.contains('.') && parse_ipv4(tail).is_none() {
            return Err(PolicyError::InvalidIpv6 {
                input: input(),
                why: "the embedded IPv4 part is not canonical dotted-quad",
            });
        }
    }
    s.parse().map_err(|_| PolicyError::InvalidIpv6 {
        input: input(),
        why: "not an IPv6 address",
    })
}

/// Parses an IP literal in canonical form: dotted-quad IPv4, or IPv6 with or without brackets
/// (no zone id). For CIDRs and operator ranges, where no port follows.
pub fn parse_ip_literal(input: &str) -> Result<IpAddr, PolicyError> {
    if input.is_empty() {
        return Err(PolicyError::Empty { what: "IP address" });
    }
    if let Some(inner) = input.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return parse_ipv6(inner).map(IpAddr::V6);
    }
    if input.contains(':') {
        return parse_ipv6(input).map(IpAddr::V6);
    }
    parse_ipv4(input)
        .map(IpAddr::V4)
        .ok_or_else(|| PolicyError::NonCanonicalIpv4 {
            input: input.to_owned(),
        })
}

/// A port: decimal 1-65535, no sign, no leading zeros.
pub fn parse_port(input: &str) -> Result<u16, PolicyError> {
    let bad = |why| PolicyError::InvalidPort {
        input: input.to_owned(),
        why,
    };
    if input.is_empty() {
        return Err(bad("empty (write host:port or just host)"));
    }
    if !input.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a decimal number"));
    }
    if input.len() > 1 && input.starts_with('0') {
        return Err(bad("leading zeros are not allowed"));
    }
    match input.parse::<u16>() {
        Ok(0) => Err(bad("port 0 is not a destination")),
        Ok(p) => Ok(p),
        Err(_) => Err(bad("out of range 1-65535")),
    }
}

/// The address a connection really goes to: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4
/// address; everything else is itself.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
