//! boxd's networking: the egress policy model, the address plan, one veth
//! pair per box, and the host nftables ruleset that forces every box's
//! traffic through boxd's egress proxy and resolver. The DNS resolver and
//! the egress proxy come as further modules.
//!
//! Owns: kernel network objects boxd creates on the host (`bx<slot>` veths
//! with their peers inside box network namespaces, the `inet boxd`
//! nftables table) and the decisions of the policy model. The egress
//! proxy also intercepts the TLS of names a box's secret rules cover, to
//! inject attach headers and substitute placeholder secrets. Never: decides
//! who a box belongs to (it is told), touches network objects it did not
//! create, or installs anything in a namespace other than the one it is
//! pointed at.

pub mod addr;
pub mod dns;
pub mod error;
pub mod events;
pub mod local;
pub mod netns;
pub mod policy;
pub mod proxy;
pub mod registry;
pub mod ruleset;
pub mod secrets;
pub mod service;
pub mod synth;
pub mod tls;
pub mod upstream;
pub mod veth;

/// The workspace's one skip helper, for unit tests.
#[cfg(test)]
#[path = "../../../tests/common/skip.rs"]
mod test_skip;

pub use addr::{AddressPlan, SlotAddrs};
pub use dns::Resolver;
pub use error::{NetError, Result};
pub use events::{ConnEvent, DnsEvent, EventSink, EventStream, HttpEvent, NetEvent, Violation};
pub use proxy::{Interception, Proxy};
pub use registry::{BoxNet, Registry};
pub use ruleset::{Ruleset, RulesetConfig};
pub use service::{Network, NetworkConfig, NetworkSettings};
pub use upstream::{UpstreamConfig, UpstreamTarget, Upstreams};
pub use veth::{BoxLink, Veths};
