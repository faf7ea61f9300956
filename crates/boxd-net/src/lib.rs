//! boxd's networking: the egress policy model today; the per-box netns and veth, the host
//! nftables ruleset, the DNS resolver and the egress proxy come as further modules.
//!
//! This crate decides nothing about who a box belongs to: it is told.

#![deny(missing_docs)]

pub mod policy;
