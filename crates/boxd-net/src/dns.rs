//! boxd's DNS resolver for boxes: the host ruleset redirects every UDP
//! and TCP query a box sends to port 53 — whatever address it was sent
//! to — here, and this answers it from policy and the box's synthetic
//! address table.
//!
//! - The box is the query's **source** address ([`Registry::by_box_addr`];
//!   the ruleset drops spoofed sources before NAT). A query from anyone
//!   else gets no answer and nothing is asked upstream.
//! - One question, opcode QUERY, class IN; else FORMERR / NOTIMP /
//!   REFUSED. The name is normalised ([`HostName::parse`]); an invalid
//!   one is NXDOMAIN.
//! - A name the box's policy denies is **never** sent upstream (no
//!   exfiltration through the labels of denied names, no existence
//!   check): A/AAAA get the name's synthetic address all the same, and the
//!   egress proxy refuses a connection to it in the client's protocol (a
//!   failed TLS handshake, an HTTP 403 naming the policy), so clients fail
//!   at the step they would against a filtering proxy, not at resolution.
//!   The query's event says `deny` with the rule.
//! - An allowed name, A or AAAA: upstream must know it
//!   ([`Upstreams::resolve`]: NXDOMAIN / no address → NXDOMAIN, failure →
//!   SERVFAIL); the answer is the box's **synthetic** address of the name
//!   (A → 198.18.0.0/15, AAAA → `fd42:b0c5:ff::/64`), both families
//!   always, never a real upstream address. Every other type (HTTPS,
//!   SVCB, MX, TXT, PTR, …) is NOERROR without answers, so clients fall
//!   back to A/AAAA through the proxy and no ECH keys or alternative
//!   addresses leak; ANY is NOTIMP.
//! - Every query from a box is one [`DnsEvent`] on the [`EventSink`].
//!
//! Replies leave from the address the query arrived on (`IP_PKTINFO` /
//! `IPV6_RECVPKTINFO` on receive, the same address as the source in
//! `sendmsg`), so conntrack matches the reply to the redirected query
//! and un-NATs it: the box sees the answer come from 8.8.8.8 if that is
//! where it sent the query. (The kernel's own source choice would be the
//! same address on a `bx<slot>` link that has only that address, but
//! that would be an accident of the address plan; pktinfo makes it
//! explicit.) TCP replies go back on the accepted connection.
//!
//! Bounds: UDP queries run as tasks, at most [`MAX_UDP_INFLIGHT`] at once
//! ([`MAX_UDP_INFLIGHT_PER_BOX`] per box; excess datagrams are dropped,
//! clients retry); TCP takes [`MAX_TCP_CONNS`] connections
//! ([`MAX_TCP_CONNS_PER_BOX`] per box), several length-prefixed queries
//! each, at most [`MAX_TCP_QUERY`] bytes, closed after [`TCP_IDLE`]
//! without a complete query.
//!
//! Owns: the resolver's sockets (bound by [`Resolver::bind`] /
//! [`Resolver::bind_pair`], possibly on a thread inside another network
//! namespace) and the loops serving them. Never: forwards a box's query
//! upstream as is (upstream only ever sees a name an allowed question
//! carried, asked by [`Upstreams`] itself), answers a real upstream
//! address, answers a host it cannot attribute to a box, or panics on
//! what a box sends.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use nix::errno::Errno;
use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, SockaddrStorage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::task::JoinSet;

use crate::error::{NetError, Result};
use crate::events::{DnsEvent, EventSink, NetEvent};
use crate::policy::HostName;
use crate::registry::{BoxNet, Registry};
use crate::upstream::Upstreams;

#[cfg(test)]
pub(crate) mod testdns;
#[cfg(test)]
mod tests;

/// TTL of synthetic answers. The mapping is stable for the box's life;
/// policy is checked again by the proxy at connect time.
pub const ANSWER_TTL: u32 = 300;
/// UDP queries being answered at once, all boxes together.
pub const MAX_UDP_INFLIGHT: usize = 1024;
/// UDP queries being answered at once for one box.
pub const MAX_UDP_INFLIGHT_PER_BOX: usize = 128;
/// Open TCP connections, all boxes together.
pub const MAX_TCP_CONNS: usize = 256;
/// Open TCP connections of one box.
pub const MAX_TCP_CONNS_PER_BOX: usize = 16;
/// Largest query accepted over TCP (a real query is well under 512).
pub const MAX_TCP_QUERY: usize = 4096;
/// A TCP connection is closed when a whole query (or the write of an
/// answer) takes longer than this.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Receive buffer for one UDP query; a larger datagram is dropped.
const UDP_BUF: usize = 4096;
/// The EDNS payload size announced in answers (RFC 9715 guidance).
const EDNS_PAYLOAD: u16 = 1232;
/// Records per section a query may declare: bounds decoding work.
const MAX_SECTION_RECORDS: u16 = 8;
/// How many times a port-0 bind retries when the port it picked for UDP
/// is taken for TCP (or the other family).
const BIND_RETRIES: usize = 32;

/// The resolver's bound sockets (std, not yet registered with tokio, so
/// they can be made on a thread inside another network namespace). All
/// share one port.
#[derive(Debug, Default)]
pub struct ResolverSockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

impl ResolverSockets {
    /// The port the sockets are bound to (0 if there are none).
    pub fn port(&self) -> u16 {
        self.local_addrs().first().map_or(0, |a| a.port())
    }

    /// Every bound address, UDP then TCP.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let udp = self.udp.iter().filter_map(|s| s.local_addr().ok());
        let tcp = self.tcp.iter().filter_map(|s| s.local_addr().ok());
        udp.chain(tcp).collect()
    }

    /// Both sets of sockets, to be served together.
    pub fn merge(mut self, other: ResolverSockets) -> ResolverSockets {
        self.udp.extend(other.udp);
        self.tcp.extend(other.tcp);
        self
    }
}

/// Answers boxes' DNS queries.
pub struct Resolver {
    registry: Arc<Registry>,
    upstreams: Arc<Upstreams>,
    events: EventSink,
    udp_limit: Arc<Limiter>,
    tcp_limit: Arc<Limiter>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    pub fn new(registry: Arc<Registry>, upstreams: Arc<Upstreams>, events: EventSink) -> Self {
        Resolver {
            registry,
            upstreams,
            events,
            udp_limit: Limiter::new(MAX_UDP_INFLIGHT, MAX_UDP_INFLIGHT_PER_BOX),
            tcp_limit: Limiter::new(MAX_TCP_CONNS, MAX_TCP_CONNS_PER_BOX),
        }
    }

    /// A UDP socket and a TCP listener on `ip:port` in the calling
    /// thread's network namespace (IPv6: `IPV6_V6ONLY`). Port 0 picks one
    /// port free for both; see [`ResolverSockets::port`].
    pub fn bind(ip: IpAddr, port: u16) -> Result<ResolverSockets> {
        bind_all(&[ip], port)
    }

    /// [`Resolver::bind`] on `0.0.0.0` and `::` (v6-only), all four
    /// sockets on one port (port 0: one picked free for all four).
    pub fn bind_pair(port: u16) -> Result<ResolverSockets> {
        bind_all(
            &[
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            port,
        )
    }

    /// Serves `sockets` until the task is aborted (or every socket has
    /// failed for good). Queries in flight are aborted with it.
    pub async fn serve(self: Arc<Self>, sockets: ResolverSockets) {
        let mut loops = JoinSet::new();
        for s in sockets.udp {
            let local = s.local_addr().ok();
            match tokio::net::UdpSocket::from_std(s) {
                Ok(s) => {
                    tracing::info!(local = ?local, "DNS resolver serving UDP");
                    loops.spawn(self.clone().serve_udp(Arc::new(s)));
                }
                Err(error) => {
                    tracing::error!(%error, local = ?local, "DNS resolver: cannot use a UDP socket")
                }
            }
        }
        for l in sockets.tcp {
            let local = l.local_addr().ok();
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    tracing::info!(local = ?local, "DNS resolver serving TCP");
                    loops.spawn(self.clone().serve_tcp(l));
                }
                Err(error) => {
                    tracing::error!(%error, local = ?local, "DNS resolver: cannot use a TCP listener")
                }
            }
        }
        while let Some(done) = loops.join_next().await {
            if let Err(error) = done {
                tracing::error!(%error, "DNS resolver loop ended");
            }
        }
    }

    /// The answer to one query from `net`, as wire bytes; `None` when no
    /// answer is sent (not a query, too short to carry an id). Emits the
    /// query's [`DnsEvent`].
    pub async fn answer(&self, net: &BoxNet, query: &[u8]) -> Option<Vec<u8>> {
        let (reply, outcome) = self.decide(net, query).await;
        let event = DnsEvent {
            box_id: net.box_id.clone(),
            name: outcome.name,
            qtype: outcome.qtype,
            decision: if outcome.allowed { "allow" } else { "deny" }.to_owned(),
            rule: outcome.rule,
            rcode: outcome.rcode.to_owned(),
            answers: outcome.answers,
        };
        tracing::debug!(
            box_id = %event.box_id,
            name = %event.name,
            qtype = %event.qtype,
            decision = %event.decision,
            rule = %event.rule,
            rcode = %event.rcode,
            answers = ?event.answers,
            "dns query"
        );
        self.events.emit(NetEvent::Dns(event)).await;
        let reply = reply?;
        match reply.to_vec() {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::warn!(%error, box_id = %net.box_id, "cannot encode a DNS answer");
                None
            }
        }
    }

    async fn decide(&self, net: &BoxNet, query: &[u8]) -> (Option<Message>, Outcome) {
        // The header, read by hand first: nothing is decoded (or
        // allocated for) before the counts are known to be sane.
        let Some(header) = query.get(..12) else {
            return (
                None,
                Outcome::refused("", "", "malformed: shorter than a DNS header", "-"),
            );
        };
        let id = u16::from_be_bytes([header[0], header[1]]);
        let flags = header[2];
        if flags & 0x80 != 0 {
            return (None, Outcome::refused("", "", "not a query (QR set)", "-"));
        }
        let rd = flags & 0x01 != 0;
        let opcode = (flags >> 3) & 0x0f;
        let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
        if opcode != 0 {
            let reply = error_reply(id, OpCode::from_u8(opcode), rd, ResponseCode::NotImp);
            let rule = format!("opcode {opcode} not supported");
            return (Some(reply), Outcome::refused("", "", &rule, "NOTIMP"));
        }
        let formerr = |why: &str| {
            let reply = error_reply(id, OpCode::Query, rd, ResponseCode::FormErr);
            (
                Some(reply),
                Outcome::refused("", "", &format!("malformed: {why}"), "FORMERR"),
            )
        };
        if qd != 1 {
            return formerr(&format!("{qd} questions"));
        }
        if an > MAX_SECTION_RECORDS || ns > MAX_SECTION_RECORDS || ar > MAX_SECTION_RECORDS {
            return formerr("too many records");
        }
        let msg = match Message::from_vec(query) {
            Ok(m) => m,
            Err(e) => return formerr(&format!("undecodable ({e})")),
        };
        let Some(q) = msg.queries.first().cloned() else {
            return formerr("no question");
        };
        let qtype = qtype_name(q.query_type);
        let shown = display_name(&q.name);
        let mut reply = Message::response(id, OpCode::Query);
        reply.metadata.recursion_desired = rd;
        reply.metadata.recursion_available = true;
        reply.metadata.checking_disabled = msg.metadata.checking_disabled;
        reply.add_query(q.clone());
        if let Some(edns) = &msg.edns {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e.set_version(0);
            reply.set_edns(e);
            if edns.version() > 0 {
                reply.metadata.response_code = ResponseCode::BADVERS;
                let rule = format!("EDNS version {} not supported", edns.version());
                return (
                    Some(reply),
                    Outcome::refused(&shown, &qtype, &rule, "BADVERS"),
                );
            }
        }
        let mut respond = |rcode: ResponseCode, mut outcome: Outcome| {
            reply.metadata.response_code = rcode;
            outcome.rcode = rcode_name(rcode);
            (reply.clone(), outcome)
        };
        if q.query_class != DNSClass::IN {
            let rule = format!("class {} not served", q.query_class);
            let (r, o) = respond(
                ResponseCode::Refused,
                Outcome::refused(&shown, &qtype, &rule, ""),
            );
            return (Some(r), o);
        }

        // The name, then the policy: nothing below runs for a denied one.
        let name = match parse_name(&q.name) {
            Ok(n) => n,
            Err(why) => {
                let rule = format!("invalid name: {why}");
                let (r, o) = respond(
                    ResponseCode::NXDomain,
                    Outcome::refused(&shown, &qtype, &rule, ""),
                );
                return (Some(r), o);
            }
        };
        // A denied name is answered like an allowed one (a synthetic
        // address), but never asked upstream: the proxy refuses the
        // connection to that address in the client's protocol.
        let decision = net.policy().allows_name(&name, None);
        let denied = !decision.is_allowed();
        let allowed = Outcome {
            name: shown,
            qtype,
            allowed: !denied,
            rule: decision.rule,
            rcode: "",
            answers: Vec::new(),
        };
        match q.query_type {
            RecordType::A | RecordType::AAAA => {}
            RecordType::ANY | RecordType::AXFR | RecordType::IXFR => {
                let (r, o) = respond(ResponseCode::NotImp, allowed);
                return (Some(r), o);
            }
            // NODATA: HTTPS/SVCB (no ECH, no alternative endpoints),
            // and everything else the proxy cannot carry.
            _ => {
                let (r, o) = respond(ResponseCode::NoError, allowed);
                return (Some(r), o);
            }
        }

        // A / AAAA: only for allowed names upstream knows.
        let known = if denied {
            Ok(Vec::new())
        } else {
            self.upstreams.resolve(&name, 0).await
        };
        match known {
            Ok(_) => {}
            Err(e) if e.is_name_not_found() => {
                let mut o = allowed;
                o.rule = format!("{}; upstream: {e}", o.rule);
                let (r, o) = respond(ResponseCode::NXDomain, o);
                return (Some(r), o);
            }
            Err(e) => {
                tracing::info!(box_id = %net.box_id, %name, error = %e, "upstream DNS failed");
                let mut o = allowed;
                o.rule = format!("{}; upstream: {e}", o.rule);
                let (r, o) = respond(ResponseCode::ServFail, o);
                return (Some(r), o);
            }
        }
        let Some(synth) = net.synthetic(&name) else {
            tracing::warn!(box_id = %net.box_id, %name, "synthetic address table full");
            let mut o = allowed;
            o.rule = format!("{}; synthetic address table full", o.rule);
            let (r, o) = respond(ResponseCode::ServFail, o);
            return (Some(r), o);
        };
        let (rdata, ip) = if q.query_type == RecordType::A {
            (RData::A(A(synth.v4)), IpAddr::V4(synth.v4))
        } else {
            (RData::AAAA(AAAA(synth.v6)), IpAddr::V6(synth.v6))
        };
        let mut o = allowed;
        o.answers.push(ip);
        let (mut r, o) = respond(ResponseCode::NoError, o);
        // The owner name exactly as asked (0x20-randomising clients check
        // the case). One question of at most 255 bytes, this one record
        // (compressed owner) and an OPT record stay far below 512 bytes:
        // no truncation is ever needed.
        r.add_answer(Record::from_rdata(q.name.clone(), ANSWER_TTL, rdata));
        (Some(r), o)
    }

    async fn serve_udp(self: Arc<Self>, sock: Arc<tokio::net::UdpSocket>) {
        let mut tasks = JoinSet::new();
        let mut buf = vec![0u8; UDP_BUF];
        loop {
            let received = sock
                .async_io(Interest::READABLE, || {
                    recv_query(sock.as_raw_fd(), &mut buf)
                })
                .await;
            let (len, peer, local, truncated) = match received {
                Ok(r) => r,
                Err(error) => {
                    tracing::debug!(%error, "DNS resolver: UDP receive failed");
                    // Never spin on a persistent error.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(net) = self.registry.by_box_addr(peer.ip()) else {
                tracing::debug!(%peer, "DNS query from an address that is no box's: ignored");
                continue;
            };
            if truncated {
                tracing::debug!(box_id = %net.box_id, %peer, "oversized DNS datagram dropped");
                continue;
            }
            let Some(permit) = self.udp_limit.try_acquire(net.addrs.slot) else {
                tracing::debug!(box_id = %net.box_id, "DNS resolver busy: UDP query dropped");
                continue;
            };
            let query = buf.get(..len).unwrap_or_default().to_vec();
            let this = self.clone();
            let sock = sock.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let Some(reply) = this.answer(&net, &query).await else {
                    return;
                };
                let sent = tokio::time::timeout(
                    TCP_IDLE,
                    sock.async_io(Interest::WRITABLE, || {
                        send_reply(sock.as_raw_fd(), &reply, peer, local)
                    }),
                )
                .await;
                match sent {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "DNS resolver: UDP send failed")
                    }
                    Err(_) => tracing::debug!(%peer, "DNS resolver: UDP send timed out"),
                }
            });
            while tasks.try_join_next().is_some() {}
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let mut tasks = JoinSet::new();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "DNS resolver: TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(net) = self.registry.by_box_addr(peer.ip()) else {
                tracing::debug!(%peer, "DNS connection from an address that is no box's: closed");
                continue;
            };
            let Some(permit) = self.tcp_limit.try_acquire(net.addrs.slot) else {
                tracing::debug!(box_id = %net.box_id, "DNS resolver busy: TCP connection closed");
                continue;
            };
            let this = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                this.serve_conn(stream, peer, net).await;
            });
            while tasks.try_join_next().is_some() {}
        }
    }

    /// Length-prefixed queries, answered in order, until the box closes,
    /// stalls, or sends something that is not a query.
    async fn serve_conn(
        &self,
        mut stream: tokio::net::TcpStream,
        peer: SocketAddr,
        net: Arc<BoxNet>,
    ) {
        let mut len = [0u8; 2];
        loop {
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            let n = usize::from(u16::from_be_bytes(len));
            if n == 0 || n > MAX_TCP_QUERY {
                tracing::debug!(box_id = %net.box_id, %peer, len = n, "DNS over TCP: bad length, closing");
                return;
            }
            let mut query = vec![0u8; n];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            // The box behind the address now (a removed box's connection
            // does not outlive it).
            match self.registry.by_box_addr(peer.ip()) {
                Some(now) if Arc::ptr_eq(&now, &net) => {}
                _ => return,
            }
            let Some(reply) = self.answer(&net, &query).await else {
                return;
            };
            let Ok(reply_len) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&reply_len.to_be_bytes());
            framed.extend_from_slice(&reply);
            match tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }
}

/// What the event of one query says.
struct Outcome {
    name: String,
    qtype: String,
    allowed: bool,
    rule: String,
    rcode: &'static str,
    answers: Vec<IpAddr>,
}

impl Outcome {
    fn refused(name: &str, qtype: &str, rule: &str, rcode: &'static str) -> Outcome {
        Outcome {
            name: name.to_owned(),
            qtype: qtype.to_owned(),
            allowed: false,
            rule: rule.to_owned(),
            rcode,
            answers: Vec::new(),
        }
    }
}

fn error_reply(id: u16, op: OpCode, rd: bool, rcode: ResponseCode) -> Message {
    let mut m = Message::error_msg(id, op, rcode);
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_desired = rd;
    m.metadata.recursion_available = true;
    m
}

fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

/// `A`, `AAAA`, `HTTPS`, … or `TYPE<n>` (RFC 3597) for unknown types.
fn qtype_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

/// Longest name kept in an event.
const EVENT_NAME_MAX: usize = 255;

/// The question's name for the audit trail: lowercase, dot-separated, no
/// trailing dot, every byte outside `a-z 0-9 - _` escaped as `\DDD`
/// (so a label holding a dot or a NUL cannot pass for something else),
/// at most 255 bytes.
fn display_name(name: &Name) -> String {
    let mut out = String::new();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            let b = b.to_ascii_lowercase();
            if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        if out.len() > EVENT_NAME_MAX {
            break;
        }
    }
    out.truncate(EVENT_NAME_MAX);
    out
}

/// The question's name as a [`HostName`]: every wire byte must be a
/// letter, digit, `-` or `_` (a label with a dot, NUL, `*`, UTF-8 or
/// anything else is not a host name), then the usual normalisation.
fn parse_name(name: &Name) -> std::result::Result<HostName, String> {
    let mut text = String::new();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("byte {b:#04x} in a label"));
            }
            text.push(char::from(b));
        }
    }
    if text.is_empty() {
        return Err("the root".into());
    }
    HostName::parse(&text).map_err(|e| e.to_string())
}

// ----- sockets -----

fn io_err(context: String) -> impl FnOnce(Errno) -> NetError {
    move |e| NetError::Io {
        context,
        source: io::Error::from(e),
    }
}

fn new_socket(addr: SocketAddr, ty: SockType) -> nix::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = sock::socket(
        family,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if addr.is_ipv6() {
        sock::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    Ok(fd)
}

fn bind_udp(addr: SocketAddr) -> nix::Result<std::net::UdpSocket> {
    let fd = new_socket(addr, SockType::Datagram)?;
    match addr {
        SocketAddr::V4(_) => sock::setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?,
        SocketAddr::V6(_) => sock::setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?,
    }
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(std::net::UdpSocket::from(fd))
}

fn bind_tcp(addr: SocketAddr) -> nix::Result<std::net::TcpListener> {
    let fd = new_socket(addr, SockType::Stream)?;
    // A restarted daemon rebinds its port despite old connections in
    // TIME_WAIT (Linux never lets two listeners share a port for this).
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    sock::listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

/// UDP + TCP on every `ip` at one port; port 0: the first UDP socket
/// picks, the rest follow, and a clash retries with a new pick.
fn bind_all(ips: &[IpAddr], port: u16) -> Result<ResolverSockets> {
    let Some((&first, rest)) = ips.split_first() else {
        return Ok(ResolverSockets::default());
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let addr = SocketAddr::new(first, port);
        let udp0 =
            bind_udp(addr).map_err(io_err(format!("bind the DNS resolver to udp {addr}")))?;
        let chosen = udp0
            .local_addr()
            .map_err(|e| NetError::Io {
                context: "read the DNS resolver's port".into(),
                source: e,
            })?
            .port();
        let mut sockets = ResolverSockets {
            udp: vec![udp0],
            tcp: Vec::new(),
        };
        let mut clash = None;
        for (i, &ip) in std::iter::once(&first).chain(rest).enumerate() {
            let addr = SocketAddr::new(ip, chosen);
            if i > 0 {
                match bind_udp(addr) {
                    Ok(s) => sockets.udp.push(s),
                    Err(e) => {
                        clash = Some((format!("udp {addr}"), e));
                        break;
                    }
                }
            }
            match bind_tcp(addr) {
                Ok(l) => sockets.tcp.push(l),
                Err(e) => {
                    clash = Some((format!("tcp {addr}"), e));
                    break;
                }
            }
        }
        match clash {
            None => {
                tracing::debug!(port = chosen, addrs = ?sockets.local_addrs(), "DNS resolver sockets bound");
                return Ok(sockets);
            }
            Some((_, Errno::EADDRINUSE)) if port == 0 && attempt < BIND_RETRIES => continue,
            Some((what, e)) => return Err(io_err(format!("bind the DNS resolver to {what}"))(e)),
        }
    }
}

/// One datagram: its length, source, the local address it was sent to
/// (from pktinfo; after the ruleset's redirect, the box link's host
/// address), and whether it was truncated.
fn recv_query(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>, bool)> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = sock::recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut local = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    let peer = msg
        .address
        .as_ref()
        .and_then(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(SocketAddr::V4(SocketAddrV4::from(*v4)))
            } else {
                a.as_sockaddr_in6()
                    .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
            }
        })
        .ok_or_else(|| io::Error::other("datagram without an internet source address"))?;
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
    Ok((msg.bytes, peer, local, truncated))
}

/// Sends `reply` to `peer` from `local` (the address the query was sent
/// to), so conntrack recognises the reply of the redirected query.
fn send_reply(fd: i32, reply: &[u8], peer: SocketAddr, local: Option<IpAddr>) -> io::Result<usize> {
    let iov = [IoSlice::new(reply)];
    let to = SockaddrStorage::from(peer);
    let v4_info;
    let v6_info;
    let cmsgs: Vec<ControlMessage<'_>> = match local {
        Some(IpAddr::V4(ip)) => {
            v4_info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            vec![ControlMessage::Ipv4PacketInfo(&v4_info)]
        }
        Some(IpAddr::V6(ip)) => {
            v6_info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            };
            vec![ControlMessage::Ipv6PacketInfo(&v6_info)]
        }
        None => Vec::new(),
    };
    sock::sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(&to)).map_err(io::Error::from)
}

// ----- limits -----

/// A global and a per-box bound on concurrent work.
#[derive(Debug)]
struct Limiter {
    total: usize,
    per_box: usize,
    used: Mutex<(usize, HashMap<u32, usize>)>,
}

struct Permit {
    limiter: Arc<Limiter>,
    slot: u32,
}

impl Limiter {
    fn new(total: usize, per_box: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            total,
            per_box,
            used: Mutex::new((0, HashMap::new())),
        })
    }

    fn try_acquire(self: &Arc<Self>, slot: u32) -> Option<Permit> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let (total, boxes) = &mut *used;
        let mine = boxes.get(&slot).copied().unwrap_or(0);
        if *total >= self.total || mine >= self.per_box {
            return None;
        }
        *total += 1;
        boxes.insert(slot, mine + 1);
        Some(Permit {
            limiter: self.clone(),
            slot,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = self.limiter.used.lock().unwrap_or_else(|p| p.into_inner());
        let (total, boxes) = &mut *used;
        *total = total.saturating_sub(1);
        if let Some(mine) = boxes.get_mut(&self.slot) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                boxes.remove(&self.slot);
            }
        }
    }
}
