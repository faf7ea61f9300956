//! Network audit events: what the resolver answered, what the egress
//! proxy decided and carried, and each HTTP request it intercepted, per
//! box.
//!
//! Owns: the event shapes and the channel they travel on to whoever
//! records them (the server writes them to the store as audit events).
//! Never: carries a payload byte, a header value or a secret — names,
//! addresses, ports, decisions, counts and durations only.

use std::net::IpAddr;

use serde::Serialize;
use tokio::sync::mpsc;

/// One DNS question from a box and how it was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsEvent {
    pub box_id: String,
    /// The question's name as asked (lowercased; kept even when invalid,
    /// truncated to 255 bytes).
    pub name: String,
    /// Record type (`A`, `AAAA`, `HTTPS`, …).
    pub qtype: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// The rule that decided (e.g. `allow_net:*.example.com`).
    pub rule: String,
    /// DNS response code sent (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`).
    pub rcode: String,
    /// The (synthetic) addresses answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<IpAddr>,
}

/// One TCP connection from a box through the egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnEvent {
    pub box_id: String,
    /// The destination name: from the synthetic address the box resolved,
    /// else the TLS SNI / HTTP Host the box sent (informational).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address the box connected to (synthetic or literal).
    pub dest_ip: IpAddr,
    /// The upstream address the proxy connected to (after resolution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ip: Option<IpAddr>,
    pub port: u16,
    /// `tls`, `http` or `tcp`: what the first bytes looked like.
    pub protocol: String,
    /// SNI or Host the box sent, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni_or_host: Option<String>,
    /// `allow` or `deny`.
    pub decision: String,
    pub rule: String,
    /// Bytes box → upstream and upstream → box.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// Why the connection failed or was cut, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Placeholders of the box's secrets seen in the first bytes of a
    /// spliced (not intercepted) connection: they went out unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// A placeholder of a secret seen in a request to a host the secret is
/// not approved for. The placeholder went out unchanged; the value never
/// did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The secret's name.
    pub secret: String,
    /// Where it was seen: `header`, `basic_auth`, `query`, `path`, `body`
    /// (an intercepted request) or `first_bytes` (a spliced connection).
    #[serde(rename = "where")]
    pub location: String,
}

/// One HTTP request on an intercepted connection (also one that was
/// refused or failed before it reached the upstream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpEvent {
    pub box_id: String,
    /// The verified TLS server name the request was bound to.
    pub host: String,
    /// Empty when the request head could not be parsed.
    pub method: String,
    /// The request target's path, never its query string.
    pub path: String,
    /// The status sent to the box (0: none was sent).
    pub status: u16,
    pub latency_ms: u64,
    /// Names of the headers an attach-header rule set.
    pub injected_headers: Vec<String>,
    /// Names of the secrets whose values were substituted.
    pub substituted_secrets: Vec<String>,
    pub violations: Vec<Violation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ip: Option<IpAddr>,
    /// Why the request was refused or failed, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A network audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    Dns(DnsEvent),
    Connection(ConnEvent),
    Http(HttpEvent),
}

impl NetEvent {
    /// The audit kind: `net.dns`, `net.connect` or `net.http`.
    pub fn kind(&self) -> &'static str {
        match self {
            NetEvent::Dns(_) => "net.dns",
            NetEvent::Connection(_) => "net.connect",
            NetEvent::Http(_) => "net.http",
        }
    }

    pub fn box_id(&self) -> &str {
        match self {
            NetEvent::Dns(e) => &e.box_id,
            NetEvent::Connection(e) => &e.box_id,
            NetEvent::Http(e) => &e.box_id,
        }
    }

    /// The event's fields as JSON (the audit event's data).
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            NetEvent::Dns(e) => serde_json::to_value(e),
            NetEvent::Connection(e) => serde_json::to_value(e),
            NetEvent::Http(e) => serde_json::to_value(e),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// Where events go. Bounded: when the recorder falls behind, the proxy
/// and resolver wait rather than drop an audit event.
#[derive(Debug, Clone)]
pub struct EventSink(mpsc::Sender<NetEvent>);

/// The receiving end of an [`EventSink`].
pub type EventStream = mpsc::Receiver<NetEvent>;

impl EventSink {
    /// A sink and its stream, holding up to `capacity` pending events.
    pub fn channel(capacity: usize) -> (EventSink, EventStream) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (EventSink(tx), rx)
    }

    /// Records `event`; waits while the recorder is behind. Dropped only
    /// when nobody records any more (shutdown).
    pub async fn emit(&self, event: NetEvent) {
        if self.0.send(event).await.is_err() {
            tracing::debug!("network event dropped: recorder gone");
        }
    }
}
