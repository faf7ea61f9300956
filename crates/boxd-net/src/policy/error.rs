//! The one error type of the policy model.
//!
//! Every message names the offending input (Debug-escaped, so a NUL or a control character
//! shows as `\0` / `\u{1b}` and never reaches a log raw) and says why it was refused.

use thiserror::Error;

/// Why a host name, IP literal, `allowNet` rule, CIDR or network policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// Nothing to parse.
    #[error("{what} is empty")]
    Empty {
        /// What was expected ("host name", "port", "allow_net rule", …).
        what: &'static str,
    },
    /// A character that never belongs in a host name.
    #[error("host {input:?}: character {ch:?} is not allowed ({why})")]
    ForbiddenChar {
        /// The whole input.
        input: String,
        /// The first offending character.
        ch: char,
        /// Why it is refused.
        why: &'static str,
    },
    /// UTS-46 (IDNA) processing refused the name (bad punycode, disallowed code point, …).
    #[error(
        "host {input:?}: not a valid internationalised domain name (UTS-46 processing failed)"
    )]
    Idna {
        /// The whole input.
        input: String,
    },
    /// `a..b`, `.a`, `a..`.
    #[error("host {input:?}: empty label (two dots in a row, a leading dot, or more than one trailing dot)")]
    EmptyLabel {
        /// The whole input.
        input: String,
    },
    /// A label longer than 63 octets (after IDNA).
    #[error("host {input:?}: label {label:?} is {len} characters long, the limit is 63")]
    LabelTooLong {
        /// The whole input.
        input: String,
        /// The label (ASCII form).
        label: String,
        /// Its length.
        len: usize,
    },
    /// A name longer than 253 octets (after IDNA, without the trailing dot).
    #[error("host {input:?}: name is {len} characters long, the limit is 253")]
    NameTooLong {
        /// The whole input.
        input: String,
        /// Its length.
        len: usize,
    },
    /// Something that a URL parser or `inet_aton` would read as an IPv4 address, written in a
    /// form other than canonical dotted-quad (`0177.0.0.1`, `2130706433`, `127.1`, `0x7f.0.0.1`).
    #[error("host {input:?}: not a canonical IPv4 address (exactly four decimal parts 0-255 without leading zeros, e.g. 127.0.0.1); octal, hex, short and single-number forms are refused")]
    NonCanonicalIpv4 {
        /// The whole input.
        input: String,
    },
    /// A bracketed IPv6 literal that does not parse, or an unbracketed one in a rule.
    #[error("host {input:?}: invalid IPv6 address ({why})")]
    InvalidIpv6 {
        /// The whole input.
        input: String,
        /// Why.
        why: &'static str,
    },
    /// `fe80::1%eth0`: a scope makes sense only on the host that wrote it.
    #[error("host {input:?}: IPv6 zone ids (`%…`) are not allowed")]
    ZoneId {
        /// The whole input.
        input: String,
    },
    /// `::ffff:1.2.3.4` written where an address is a rule; say it as IPv4.
    #[error("host {input:?}: IPv4-mapped or IPv4-compatible IPv6 address; write the IPv4 address {v4} instead")]
    MappedIpv6 {
        /// The whole input.
        input: String,
        /// The IPv4 address it stands for.
        v4: std::net::Ipv4Addr,
    },
    /// A host name was expected, an IP address was given.
    #[error("{input:?} is an IP address, not a host name{hint}")]
    NotAName {
        /// The whole input.
        input: String,
        /// A hint where IPs belong (may be empty).
        hint: &'static str,
    },
    /// A port that is not a decimal number 1-65535 without leading zeros.
    #[error("port {input:?}: {why}")]
    InvalidPort {
        /// The port text.
        input: String,
        /// Why.
        why: &'static str,
    },
    /// A malformed `allowNet` rule or domain pattern.
    #[error("rule {input:?}: {why}")]
    InvalidRule {
        /// The whole rule.
        input: String,
        /// Why.
        why: String,
    },
    /// `*.com`, `*.co.uk`: a wildcard over a public suffix allows every registrable domain below it.
    #[error("rule {input:?}: a wildcard over the public suffix {suffix:?} would allow every domain registered under it; list the domains instead")]
    WildcardOverPublicSuffix {
        /// The whole rule.
        input: String,
        /// The public suffix.
        suffix: String,
    },
    /// A CIDR that does not parse.
    #[error("CIDR {input:?}: {why}")]
    InvalidCidr {
        /// The whole input.
        input: String,
        /// Why.
        why: String,
    },
    /// `10.0.0.1/8`: host bits set. Refused rather than silently widened or narrowed.
    #[error("CIDR {input:?}: host bits are set; the network is {canonical}")]
    NonCanonicalCidr {
        /// The whole input.
        input: String,
        /// The network address with the same prefix.
        canonical: ipnet::IpNet,
    },
    /// A policy whose lists contradict its mode.
    #[error("network_policy: {why}")]
    InvalidPolicy {
        /// Why.
        why: String,
    },
    /// One entry of a list was refused.
    #[error("{field}[{index}]: {source}")]
    Entry {
        /// The list (`allow_net`, `allowed_domains`, …).
        field: &'static str,
        /// Zero-based position in the list.
        index: usize,
        /// What was wrong with it.
        #[source]
        source: Box<PolicyError>,
    },
}

impl PolicyError {
    pub(crate) fn entry(field: &'static str, index: usize, source: PolicyError) -> Self {
        PolicyError::Entry {
            field,
            index,
            source: Box::new(source),
        }
    }
}
