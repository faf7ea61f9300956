//! The egress **policy** model: which destinations a box may reach, as pure data and pure
//! functions.
//!
//! Owns: host-name normalisation ([`HostName`]: lowercase, one trailing dot stripped,
//! IDNA/UTS-46 to punycode, length and character checks), strict IP literal and CIDR parsing
//! (canonical forms only), Deno `allowNet` rules ([`AllowNet`]), the Upstash `network_policy`
//! ([`NetworkPolicy`]), the always-refused address ranges ([`classify`]) and their combination
//! with the operator's ranges ([`EgressPolicy`]). Every answer is a [`Decision`] that names
//! the rule that decided, for the audit trail.
//!
//! Never does: resolve names, open sockets, read files or the clock, log, or keep state
//! between calls. The resolver, the proxy and the server call into it with names and
//! addresses they already have. Parsing never panics on input: every refusal is a
//! [`PolicyError`] naming the input and the reason.

mod allow_net;
mod cidr;
mod decision;
mod egress;
mod error;
mod host;
mod network_policy;
mod pattern;
mod reserved;

#[cfg(test)]
mod tests;

pub use allow_net::{AllowNet, NetRule, RuleTarget};
pub use cidr::parse_cidr;
pub use decision::{Decision, Destination, Verdict};
pub use egress::{EgressPolicy, OperatorNet};
pub use error::PolicyError;
pub use host::{
    canonical_ip, parse_ip_literal, parse_port, Host, HostName, MAX_LABEL_LEN, MAX_NAME_LEN,
};
pub use network_policy::{NetworkMode, NetworkPolicy, NetworkPolicySpec};
pub use pattern::DomainPattern;
pub use reserved::{classify, embedded_ipv4, Embedding, ReservedKind, ReservedRange};
