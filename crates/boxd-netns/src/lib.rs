//! Host-side plumbing of box networking: the address plan, one veth pair
//! per box, and the host nftables ruleset that forces every box's traffic
//! through boxd's egress proxy and resolver.
//!
//! Owns: kernel network objects boxd creates on the host — `bx<slot>`
//! veths (with their peers inside box network namespaces) and the
//! `inet boxd` nftables table. Never: decides which box a slot belongs
//! to (it is told), decides policy (allowNet lives in the policy module),
//! touches network objects it did not create, or installs anything in a
//! network namespace other than the one it is pointed at.

pub mod addr;
pub mod error;
pub mod netns;
pub mod ruleset;
pub mod veth;

pub use addr::{host_ifname, slot_of_ifname, AddressPlan, SlotAddrs};
pub use error::{NetError, Result};
pub use ruleset::{Ruleset, RulesetConfig};
pub use veth::{BoxLink, Veths};
