//! The seam where TLS interception will hook in: once an allowed
//! connection's first bytes are known (SNI in hand) and before a single
//! client byte goes upstream, the proxy asks [`handling`] what to do with
//! it.
//!
//! Today the answer is always [`Handling::Splice`]: bytes pass through
//! untouched. The next step (DESIGN §6, "Interception") makes it answer
//! `Intercept` for port-443 TLS whose verified SNI matches one of the
//! box's attach-header rules or a secret's hosts — never for a connection
//! without SNI, with an SNI that is not a name, or on another port — and
//! the proxy then terminates TLS with a leaf minted from boxd's CA instead
//! of splicing.
//!
//! Owns: that one decision. Never: reads payload bytes beyond the parsed
//! ClientHello, or changes the policy verdict (it only sees connections
//! the policy already allowed).

use crate::policy::HostName;
use crate::registry::BoxNet;

use super::sniff::FirstBytes;

/// What the proxy does with an allowed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handling {
    /// Pass the bytes through both ways, untouched.
    Splice,
}

/// Decides how to carry an allowed connection to `name` (the synthetic
/// address's name, `None` for a literal IP) on `port`, given its first
/// bytes. Called after the SNI/Host checks, before anything is sent
/// upstream.
pub(crate) fn handling(
    _net: &BoxNet,
    _name: Option<&HostName>,
    _port: u16,
    _first: &FirstBytes,
) -> Handling {
    Handling::Splice
}
