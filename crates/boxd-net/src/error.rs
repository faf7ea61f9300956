//! The error type of the network plumbing: what went wrong planning
//! addresses, making or removing a box's veth, or installing the host
//! ruleset — phrased so an operator can act on it.
//!
//! Owns: `NetError` and the crate's `Result`. Never: logs secrets or box
//! traffic (errors carry names, addresses and kernel messages only).

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid address pool {pool}: {reason}")]
    InvalidPool { pool: String, reason: &'static str },
    #[error("box slot {slot} is outside the address plan (capacity {capacity} boxes)")]
    SlotOutOfRange { slot: u32, capacity: u32 },
    #[error("invalid network setting: {0}")]
    InvalidSetting(String),
    #[error("invalid ruleset config: {0}")]
    InvalidRuleset(String),
    #[error("netlink {op} ({target}): {source}")]
    Netlink {
        op: &'static str,
        target: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("network interface {0} not found")]
    NoSuchLink(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Upstream resolution failed (no answer, timeout, SERVFAIL, no
    /// upstream servers): whether the name exists is unknown.
    #[error("cannot resolve {name}: {reason}")]
    Resolve { name: String, reason: String },
    /// Upstream DNS answered: the name does not exist (NXDOMAIN) or has
    /// no IPv4 or IPv6 address.
    #[error("{name} {reason}")]
    NameNotFound { name: String, reason: &'static str },
    #[error("nft {action} failed ({status}): {stderr}")]
    Nft {
        action: &'static str,
        status: String,
        stderr: String,
    },
    /// Making a certificate (boxd's CA or a leaf) failed in the
    /// certificate generator.
    #[error("cannot {op}: {source}")]
    Certificate {
        op: String,
        #[source]
        source: rcgen::Error,
    },
    /// A stored CA certificate or key cannot be read, or the two do not
    /// form a working CA (wrong key, not a CA, expired).
    #[error("boxd CA unusable: {0}")]
    InvalidCa(String),
    /// The TLS stack refused a configuration boxd built (a leaf's server
    /// config, a verifier).
    #[error("TLS setup for {context}: {source}")]
    Tls {
        context: String,
        #[source]
        source: rustls::Error,
    },
}

impl NetError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
        let context = context.into();
        move |source| NetError::Io { context, source }
    }

    pub(crate) fn netlink(
        op: &'static str,
        target: impl Into<String>,
    ) -> impl FnOnce(rtnetlink::Error) -> NetError {
        let target = target.into();
        move |source| NetError::Netlink { op, target, source }
    }

    /// True when upstream DNS said the name does not exist or has no
    /// addresses (the resolver answers NXDOMAIN), false for every other
    /// error, including failed resolution (SERVFAIL).
    pub fn is_name_not_found(&self) -> bool {
        matches!(self, NetError::NameNotFound { .. })
    }

    /// The errno of a failed netlink request, if the kernel sent one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => msg.code.map(|c| -c.get()),
            NetError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;
