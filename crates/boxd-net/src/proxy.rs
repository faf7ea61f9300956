//! The egress proxy: every TCP connection a box opens lands here (the host
//! ruleset `redirect`s it), is matched to its box and its original
//! destination, decided by the box's egress policy, and — if allowed —
//! connected upstream and spliced both ways.
//!
//! Per connection:
//! 1. The box is the one whose host-side veth address the connection
//!    arrived on ([`Registry::by_host_addr`]); an address of no box is
//!    closed at once. The original destination comes from
//!    `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`. One of the box's
//!    connection permits is taken (none left: refused).
//! 2. A synthetic destination ([`crate::synth`]) stands for the name the
//!    box's resolver answered; one the box was never given is refused. Any
//!    other destination is a literal IP and is decided on the IP alone —
//!    SNI or Host never grant access to an IP.
//! 3. The policy (read once: a change applies to the next connection)
//!    decides the name and port, the name is resolved by boxd
//!    ([`Upstreams`]), and each address is decided again (DNS rebinding
//!    to loopback, private, link-local or metadata ranges is refused unless
//!    the operator allows the range). Addresses of boxd's own pools (box
//!    veths, synthetic ranges) are never connected to, nor — whatever the
//!    policy or the operator's `allow_ranges` say — any address the kernel
//!    would deliver to the host itself ([`HostLocal`], asked at connect
//!    time for each address): only a name the operator's upstream
//!    override points at a host service reaches one.
//!    A name the policy denies is refused in the client's protocol,
//!    before anything is resolved or connected: a TLS ClientHello gets a
//!    fatal `access_denied` alert (the handshake fails), an HTTP/1.x
//!    request a 403 naming the policy and the rule, anything else (or
//!    nothing within [`ProxyTimeouts::refusal`]) a reset.
//! 4. While the upstream connection is being opened, the first client
//!    bytes are read — never forwarded before they are inspected. A TLS
//!    ClientHello (reassembled across records and segments) gives the SNI,
//!    an HTTP/1.x request head gives the Host and the request target's
//!    authority; any of them naming another host than the synthetic
//!    address's name is refused (domain fronting). If the upstream speaks
//!    first (SMTP, MySQL, SSH banners) the connection is plain TCP and is
//!    spliced at once, so server-first protocols never stall.
//! 5. Other refused or failed connections are reset (`SO_LINGER` 0): a client
//!    sees "connection reset" at once, never a hang. Allowed ones are
//!    spliced with byte counts, half-closes passed on, and no idle timeout
//!    (WebSockets and SSH sessions live as long as their peers want).
//! 6. Each connection that reached a box's address emits exactly one
//!    [`ConnEvent`] when it ends.
//!
//! Owns: the listeners, the per-connection state machine above, and its
//! timeouts and caps (first bytes: [`sniff::MAX_BUFFERED`] and
//! [`ProxyTimeouts::first_bytes`] from the first byte on; resolution and
//! connection: [`ProxyTimeouts`]). Never: forwards a client byte before
//! the decision, logs or emits payload bytes or header values (names,
//! addresses, ports, counts only), trusts a name the box supplies over the
//! synthetic address, or panics on anything a box or an upstream sends.
//!
//! TLS interception (DESIGN §6) hooks in at `intercept::handling`,
//! called once the SNI is known and checked: with an [`Interception`]
//! configured, port-443 TLS to a name the box's secret rules cover is
//! terminated and carried request by request (the `intercept` module);
//! its connection event says `https-intercepted` and counts the box's
//! bytes.
//! Spliced connections of a box with placeholder secrets have their
//! buffered first bytes scanned: a placeholder there is a violation on the
//! connection event (it goes out unchanged; the value never does).
//!
//! Limits of first-bytes inspection (what a splice cannot see):
//! - only the *first* request of a plaintext HTTP/1.x connection is
//!   checked; later requests on a kept-alive connection pass unseen
//!   (checking each one means parsing the stream, which is the
//!   interception path's job);
//! - inside TLS, the HTTP Host / `:authority` is encrypted: only the SNI
//!   is checked. With ECH the SNI is the client-facing (outer) name;
//! - HTTP/2 with prior knowledge (`PRI * HTTP/2.0`, h2c) is plain TCP here;
//! - bytes that could still become an HTTP request line (a bare token such
//!   as `PING` with no space or line end yet) are held until the line is
//!   complete or [`ProxyTimeouts::first_bytes`] passes; forwarding them
//!   early would let `GET`, a pause, then ` / HTTP/1.1 … Host: other`
//!   skip the check. Client-first protocols that send a bare token and
//!   wait for an answer are therefore cut. Line-based and binary ones are
//!   not: a line end, or any byte that cannot continue a request line
//!   (`METHOD SP target SP HTTP/1.x`), decides at once.

mod intercept;
pub mod sniff;

pub use intercept::Interception;
mod splice;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};
use socket2::{Domain, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::error::{NetError, Result};
use crate::events::{ConnEvent, EventSink, NetEvent, Violation};
use crate::local::HostLocal;
use crate::policy::{canonical_ip, Decision, Destination, EgressPolicy, Host, HostName};
use crate::registry::{BoxNet, Registry, MAX_CONNS_PER_BOX};
use crate::synth;
use crate::upstream::Upstreams;

use intercept::Handling;
use sniff::{FirstBytes, Progress, Sniffer};

/// Copy buffer per direction when `splice(2)` cannot be used.
pub const COPY_BUFFER: usize = 64 * 1024;
/// Listen backlog of each proxy listener.
const BACKLOG: i32 = 1024;
/// Longest SNI/Host kept for the audit event.
const MAX_SHOWN_NAME: usize = 255;

/// How long each step before the splice may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTimeouts {
    /// Resolving an allowed name upstream.
    pub resolve: Duration,
    /// Opening the upstream connection (all addresses together).
    pub connect: Duration,
    /// From the client's first byte to a complete ClientHello or request
    /// head (slowloris bound).
    pub first_bytes: Duration,
    /// Intercepted connections: each TLS handshake (box and upstream).
    pub handshake: Duration,
    /// Intercepted connections: from a request head's first byte to its
    /// end (slowloris bound).
    pub request_head: Duration,
    /// Intercepted connections: idle time allowed between requests.
    pub idle: Duration,
    /// Intercepted connections: from a request's end to the upstream's
    /// response head.
    pub response_head: Duration,
    /// A connection to a name the policy denies: how long its first bytes
    /// may take to arrive (to be refused in their protocol), from accept.
    pub refusal: Duration,
}

impl Default for ProxyTimeouts {
    fn default() -> Self {
        ProxyTimeouts {
            resolve: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            first_bytes: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            request_head: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            response_head: Duration::from_secs(120),
            refusal: Duration::from_secs(3),
        }
    }
}

/// The egress proxy. Share it as an `Arc` between its listeners.
pub struct Proxy {
    registry: Arc<Registry>,
    upstreams: Arc<Upstreams>,
    /// Whether an upstream address is the host's own.
    local: HostLocal,
    events: EventSink,
    timeouts: ProxyTimeouts,
    interception: Option<Interception>,
}

/// Where the box wanted to go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A name, through its synthetic address.
    Name(HostName),
    /// A literal address.
    Ip(IpAddr),
}

impl Target {
    fn name(&self) -> Option<&HostName> {
        match self {
            Target::Name(n) => Some(n),
            Target::Ip(_) => None,
        }
    }
}

/// An open upstream connection and the decision that allowed its address.
struct Connected {
    stream: TcpStream,
    addr: SocketAddr,
    decision: Decision,
}

/// Why a connection ends before (or instead of) being spliced to its end.
#[derive(Debug)]
struct Stop {
    decision: Decision,
    error: Option<String>,
    /// The client was answered in its protocol (TLS alert, HTTP 403) and
    /// its side closed in order: no reset.
    answered: bool,
}

impl Stop {
    /// Refused by policy or inspection.
    fn denied(decision: Decision) -> Self {
        Stop {
            decision,
            error: None,
            answered: false,
        }
    }

    fn deny(rule: impl Into<String>) -> Self {
        Stop::denied(Decision::deny(rule))
    }

    /// Refused because something could not be read or checked.
    fn deny_err(rule: impl Into<String>, error: impl ToString) -> Self {
        Stop {
            decision: Decision::deny(rule),
            error: Some(error.to_string()),
            answered: false,
        }
    }

    /// Allowed, but the network failed.
    fn failed(decision: Decision, error: impl ToString) -> Self {
        Stop {
            decision,
            error: Some(error.to_string()),
            answered: false,
        }
    }
}

/// What the connection's audit event will say, filled in as it goes.
struct Record {
    box_id: String,
    name: Option<String>,
    dest_ip: IpAddr,
    upstream_ip: Option<IpAddr>,
    port: u16,
    protocol: &'static str,
    sni_or_host: Option<String>,
    bytes_up: u64,
    bytes_down: u64,
    violations: Vec<Violation>,
    /// A failure noted on a connection that still ended in order.
    note: Option<String>,
}

impl Record {
    fn event(self, decision: &Decision, error: Option<String>, started: Instant) -> ConnEvent {
        ConnEvent {
            box_id: self.box_id,
            name: self.name.or_else(|| self.sni_or_host.clone()),
            dest_ip: self.dest_ip,
            upstream_ip: self.upstream_ip,
            port: self.port,
            protocol: self.protocol.to_owned(),
            sni_or_host: self.sni_or_host,
            decision: if decision.is_allowed() {
                "allow"
            } else {
                "deny"
            }
            .to_owned(),
            rule: decision.rule.clone(),
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
            violations: self.violations,
        }
    }
}

/// One step of the first-bytes phase.
enum Step {
    Connected(Result<Connected, Stop>),
    Read(io::Result<usize>),
    ServerSpoke,
    TimedOut,
}

impl Proxy {
    pub fn new(registry: Arc<Registry>, upstreams: Arc<Upstreams>, events: EventSink) -> Self {
        Proxy {
            registry,
            upstreams,
            local: HostLocal::new(),
            events,
            timeouts: ProxyTimeouts::default(),
            interception: None,
        }
    }

    /// The same proxy intercepting port-443 TLS to the names the boxes'
    /// secret rules cover (without it, every connection is spliced).
    pub fn with_interception(mut self, interception: Interception) -> Self {
        self.interception = Some(interception);
        self
    }

    /// The same proxy with other timeouts (tests shorten them).
    pub fn with_timeouts(mut self, timeouts: ProxyTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Binds the proxy's two listeners, `0.0.0.0:port` and `[::]:port`
    /// (IPv6-only, so the two never overlap), on one port; `0` picks a
    /// port free for both. Returns them and the port. Bound in the calling
    /// thread's network namespace.
    pub fn bind_pair(port: u16) -> Result<(std::net::TcpListener, std::net::TcpListener, u16)> {
        const TRIES: usize = 16;
        let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let mut last = io::Error::from(io::ErrorKind::AddrInUse);
        for _ in 0..(if port == 0 { TRIES } else { 1 }) {
            let v4 = listen(any4).map_err(NetError::io(format!("bind the proxy on {any4}")))?;
            let chosen = v4
                .local_addr()
                .map_err(NetError::io("read the proxy's IPv4 listener address"))?
                .port();
            let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), chosen);
            match listen(any6) {
                Ok(v6) => return Ok((v4, v6, chosen)),
                Err(e) if port == 0 && e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(NetError::io(format!("bind the proxy on {any6}"))(e)),
            }
        }
        Err(NetError::io(
            "bind the proxy's IPv4 and IPv6 listeners on one free port",
        )(last))
    }

    /// Accepts and serves connections on `listener` until the returned
    /// future is dropped (aborting the task that runs it). Connections in
    /// flight belong to this future and end with it.
    pub async fn serve(self: Arc<Self>, listener: std::net::TcpListener) {
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "egress proxy listener unusable");
                return;
            }
        };
        let local = listener.local_addr().ok();
        tracing::info!(listen = ?local, "egress proxy serving");
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        conns.spawn(self.clone().handle(stream));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "egress proxy accept failed");
                        if is_resource_exhaustion(&e) {
                            // Out of fds or memory: let connections end
                            // rather than spin on accept.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                },
                Some(done) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(error = %e, "egress proxy connection task panicked");
                        }
                    }
                }
            }
        }
    }

    /// One connection, from accept to its audit event.
    async fn handle(self: Arc<Self>, mut client: TcpStream) {
        let started = Instant::now();
        let local = match client.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "egress connection without a local address");
                reset(client);
                return;
            }
        };
        let Some(net) = self.registry.by_host_addr(local.ip()) else {
            tracing::debug!(local = %local, "egress connection on an address of no box: closed");
            reset(client);
            return;
        };
        let mut rec = Record {
            box_id: net.box_id.clone(),
            name: None,
            dest_ip: local.ip(),
            upstream_ip: None,
            port: local.port(),
            protocol: "tcp",
            sni_or_host: None,
            bytes_up: 0,
            bytes_down: 0,
            violations: Vec::new(),
            note: None,
        };
        let (decision, error) = match self.run(&net, &mut client, &mut rec).await {
            Ok(decision) => (decision, rec.note.take()),
            Err(stop) => {
                if !stop.answered {
                    reset(client);
                }
                (stop.decision, stop.error)
            }
        };
        // Every connection is an audit event; the log stays at debug so a
        // box opening refused connections in a loop cannot flood it.
        tracing::debug!(
            box_id = %rec.box_id,
            name = rec.name.as_deref(),
            dest = %rec.dest_ip,
            port = rec.port,
            protocol = rec.protocol,
            bytes_up = rec.bytes_up,
            bytes_down = rec.bytes_down,
            decision = %decision,
            error = error.as_deref(),
            "egress connection closed"
        );
        let event = rec.event(&decision, error, started);
        self.events.emit(NetEvent::Connection(event)).await;
    }

    /// Decides, connects and splices; returns the deciding rule of an
    /// allowed connection that ended normally.
    async fn run(
        &self,
        net: &BoxNet,
        client: &mut TcpStream,
        rec: &mut Record,
    ) -> std::result::Result<Decision, Stop> {
        let orig = original_dst(client, rec.dest_ip)
            .map_err(|e| Stop::deny_err("original destination unknown", e))?;
        rec.dest_ip = orig.ip();
        rec.port = orig.port();
        let port = orig.port();
        let _permit = net.conns.clone().try_acquire_owned().map_err(|_| {
            Stop::deny(format!(
                "box connection limit ({MAX_CONNS_PER_BOX} concurrent connections)"
            ))
        })?;
        let policy = net.policy();
        let dest = canonical_ip(orig.ip());
        let target = if synth::is_synthetic(dest) {
            match net.name_of(dest) {
                Some(name) => Target::Name(name),
                None => return Err(Stop::deny("synthetic address the box was not given")),
            }
        } else {
            Target::Ip(dest)
        };
        rec.name = target.name().map(|n| n.to_string());

        // What the policy says before a byte is read or a name resolved.
        let early = match &target {
            Target::Name(name) => policy.allows_name(name, Some(port)),
            Target::Ip(ip) => self.decide(&policy, Destination::ip(*ip, port)),
        };
        if !early.is_allowed() {
            return Err(match &target {
                // Resolved for the box (a synthetic address) and refused
                // here, in the client's protocol: nothing goes upstream.
                Target::Name(name) => self.refuse(client, name, early, rec).await,
                Target::Ip(_) => Stop::denied(early),
            });
        }
        let _ = client.set_nodelay(true);

        let connect = self.open_upstream(&target, port, &policy, early.clone());
        tokio::pin!(connect);
        let (first, buffered, upstream) = self
            .first_bytes(client, connect.as_mut(), &early, &mut rec.protocol)
            .await?;
        let checked = check_first_bytes(&target, &first);
        rec.sni_or_host = checked.shown;
        if let Some(deny) = checked.deny {
            return Err(Stop::denied(deny));
        }
        let Connected {
            stream: mut upstream,
            addr,
            decision,
        } = match upstream {
            Some(c) => c,
            None => connect.await?,
        };
        rec.upstream_ip = Some(addr.ip());

        let handling =
            intercept::handling(self.interception.as_ref(), net, target.name(), port, &first);
        if let (Handling::Intercept, Some(ix), Some(name)) =
            (handling, self.interception.as_ref(), target.name())
        {
            rec.protocol = "https-intercepted";
            let ctx = intercept::exchange::Ctx {
                net,
                name,
                upstream_ip: addr.ip(),
                events: &self.events,
                timeouts: self.timeouts,
            };
            let outcome = intercept::exchange::serve(ix, &ctx, client, buffered, upstream).await;
            rec.bytes_up = outcome.from_box;
            rec.bytes_down = outcome.to_box;
            return match outcome.error {
                None => Ok(decision),
                Some(e) if outcome.answered => {
                    rec.note = Some(e);
                    Ok(decision)
                }
                Some(e) => Err(Stop::failed(decision, e)),
            };
        }
        rec.violations = first_bytes_violations(net, &buffered);
        if !buffered.is_empty() {
            upstream
                .write_all(&buffered)
                .await
                .map_err(|e| Stop::failed(decision.clone(), format!("write upstream: {e}")))?;
            rec.bytes_up = buffered.len() as u64;
        }
        let (up, down, err) = carry(client, &mut upstream).await;
        rec.bytes_up += up;
        rec.bytes_down = down;
        match err {
            None => Ok(decision),
            Some(e) => {
                // Pass an abort on: the upstream sees a reset too.
                reset(upstream);
                Err(Stop::failed(decision, format!("splice: {e}")))
            }
        }
    }

    /// The first client bytes, read while `connect` runs: returns them
    /// classified, the bytes themselves, and the upstream connection if it
    /// is already open. Returns as soon as the upstream speaks first.
    /// Keeps `protocol` up to date with what the bytes look like.
    async fn first_bytes<F>(
        &self,
        client: &mut TcpStream,
        mut connect: Pin<&mut F>,
        early: &Decision,
        protocol: &mut &'static str,
    ) -> std::result::Result<(FirstBytes, Vec<u8>, Option<Connected>), Stop>
    where
        F: Future<Output = std::result::Result<Connected, Stop>>,
    {
        let mut sniffer = Sniffer::new();
        let mut upstream: Option<Connected> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut chunk = vec![0u8; 16 * 1024];
        let bad_bytes = |e: sniff::SniffError| Stop::deny_err("unreadable first bytes", e);
        loop {
            let room = sniffer.room().min(chunk.len());
            if room == 0 {
                return Err(bad_bytes(sniff::SniffError::TooLarge("first bytes")));
            }
            let server_first = upstream.is_some() && sniffer.buffered().is_empty();
            let step = tokio::select! {
                r = connect.as_mut(), if upstream.is_none() => Step::Connected(r),
                r = client.read(&mut chunk[..room]) => Step::Read(r),
                () = server_speaks(upstream.as_ref()), if server_first => Step::ServerSpoke,
                () = sleep_until(deadline) => Step::TimedOut,
            };
            match step {
                Step::Connected(r) => upstream = Some(r?),
                Step::ServerSpoke => return Ok((FirstBytes::Other, Vec::new(), upstream)),
                Step::TimedOut => {
                    return Err(Stop::deny(format!(
                        "first bytes incomplete after {:?} (slow or stalled client)",
                        self.timeouts.first_bytes
                    )))
                }
                Step::Read(Err(e)) => {
                    return Err(Stop::failed(early.clone(), format!("read client: {e}")));
                }
                Step::Read(Ok(0)) => {
                    let first = sniffer.finish();
                    *protocol = sniffer.protocol();
                    let first = first.map_err(bad_bytes)?;
                    *protocol = first.protocol();
                    return Ok((first, sniffer.into_buffered(), upstream));
                }
                Step::Read(Ok(n)) => {
                    deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + self.timeouts.first_bytes
                    });
                    let progress = sniffer.push(&chunk[..n]);
                    *protocol = sniffer.protocol();
                    if let Progress::Done(first) = progress.map_err(bad_bytes)? {
                        *protocol = first.protocol();
                        return Ok((first, sniffer.into_buffered(), upstream));
                    }
                }
            }
        }
    }

    /// Refuses a connection to `name`, which the policy denies, before any
    /// upstream connection or lookup: a TLS ClientHello gets a fatal
    /// `access_denied` alert (the handshake fails), an HTTP/1.x request a
    /// `403 Forbidden` whose body names the policy and the rule. Anything
    /// else, or no complete first bytes within [`ProxyTimeouts::refusal`],
    /// is reset.
    async fn refuse(
        &self,
        client: &mut TcpStream,
        name: &HostName,
        decision: Decision,
        rec: &mut Record,
    ) -> Stop {
        let deadline = tokio::time::Instant::now() + self.timeouts.refusal;
        let mut sniffer = Sniffer::new();
        let mut chunk = vec![0u8; 16 * 1024];
        let first = loop {
            let room = sniffer.room().min(chunk.len());
            if room == 0 {
                break None;
            }
            match tokio::time::timeout_at(deadline, client.read(&mut chunk[..room])).await {
                Err(_) | Ok(Err(_)) => break None,
                Ok(Ok(0)) => break sniffer.finish().ok(),
                Ok(Ok(n)) => match sniffer.push(&chunk[..n]) {
                    Ok(Progress::NeedMore) => {}
                    Ok(Progress::Done(first)) => break Some(first),
                    Err(_) => break None,
                },
            }
        };
        rec.protocol = sniffer.protocol();
        let answer = match &first {
            Some(first) => {
                rec.protocol = first.protocol();
                rec.sni_or_host = check_first_bytes(&Target::Name(name.clone()), first).shown;
                refusal_answer(first, name, &decision)
            }
            None => None,
        };
        let Some(answer) = answer else {
            return Stop::denied(decision);
        };
        let sent = tokio::time::timeout_at(deadline, async {
            client.write_all(&answer).await?;
            client.shutdown().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return Stop::denied(decision);
        }
        // Read what the client still sends until it closes, so closing
        // our side is orderly (unread data would make it a reset, which
        // may discard the answer before the client reads it).
        let _ = tokio::time::timeout_at(deadline, async {
            while matches!(client.read(&mut chunk).await, Ok(n) if n > 0) {}
        })
        .await;
        // (`bytes_down` stays 0: nothing came from upstream.)
        Stop {
            decision,
            error: None,
            answered: true,
        }
    }

    /// `policy.decide`, plus boxd's own address pools, which no policy
    /// opens: box veths and synthetic addresses.
    fn decide(&self, policy: &EgressPolicy, dest: Destination) -> Decision {
        let d = policy.decide(&dest);
        if d.is_allowed() && self.is_boxd_address(dest.canonical_ip()) {
            return Decision::deny("boxd address pool (box veths, synthetic addresses)");
        }
        d
    }

    fn is_boxd_address(&self, ip: IpAddr) -> bool {
        let plan = self.registry.plan();
        synth::is_synthetic(ip)
            || match canonical_ip(ip) {
                IpAddr::V4(v4) => {
                    let (net, len) = plan.v4_pool();
                    Ipv4Net::new(net, len).is_ok_and(|n| n.contains(&v4))
                }
                IpAddr::V6(v6) => {
                    let (net, len) = plan.v6_pool();
                    Ipv6Net::new(net, len).is_ok_and(|n| n.contains(&v6))
                }
            }
    }

    /// Resolves (for a name), decides every address, and connects to the
    /// first allowed one that answers.
    async fn open_upstream(
        &self,
        target: &Target,
        port: u16,
        policy: &EgressPolicy,
        early: Decision,
    ) -> std::result::Result<Connected, Stop> {
        let candidates: Vec<(SocketAddr, Decision)> = match target {
            Target::Ip(ip) => vec![(SocketAddr::new(*ip, port), early)],
            Target::Name(name) => {
                let resolved =
                    tokio::time::timeout(self.timeouts.resolve, self.upstreams.resolve(name, port))
                        .await
                        .map_err(|_| {
                            Stop::failed(early.clone(), format!("resolve {name}: timed out"))
                        })?
                        .map_err(|e| Stop::failed(early.clone(), e))?;
                let mut allowed = Vec::new();
                let mut first_denial = None;
                for addr in resolved {
                    let d = self.decide(policy, Destination::named(name.clone(), addr.ip(), port));
                    if d.is_allowed() {
                        allowed.push((addr, d));
                    } else if first_denial.is_none() {
                        first_denial = Some(d);
                    }
                }
                if allowed.is_empty() {
                    return Err(match first_denial {
                        Some(d) => Stop::denied(d),
                        None => Stop::failed(early, format!("resolve {name}: no addresses")),
                    });
                }
                allowed
            }
        };
        // The host's own addresses, whatever the policy said: only an
        // operator's override may point a name at a host service.
        let exempt = target
            .name()
            .is_some_and(|n| self.upstreams.is_overridden(n));
        let deadline = tokio::time::Instant::now() + self.timeouts.connect;
        let mut last = None;
        let mut refused = None;
        for (addr, decision) in candidates {
            if !exempt {
                match self.local.is_local(addr.ip()).await {
                    Ok(false) => {}
                    Ok(true) => {
                        refused.get_or_insert(Stop::deny(format!(
                            "host address {}: local to the host",
                            canonical_ip(addr.ip())
                        )));
                        continue;
                    }
                    Err(e) => {
                        refused.get_or_insert(Stop::deny_err(
                            format!("host address check of {} failed", addr.ip()),
                            e,
                        ));
                        continue;
                    }
                }
            }
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                // Asked again once connected: an address the host gained
                // while the SYN was in flight (its local route appears a
                // moment after the address) is caught before any byte.
                Ok(Ok(stream))
                    if !exempt && !matches!(self.local.is_local(addr.ip()).await, Ok(false)) =>
                {
                    reset(stream);
                    refused.get_or_insert(Stop::deny(format!(
                        "host address {}: local to the host",
                        canonical_ip(addr.ip())
                    )));
                }
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Connected {
                        stream,
                        addr,
                        decision,
                    });
                }
                Ok(Err(e)) => last = Some((decision, format!("connect {addr}: {e}"))),
                Err(_) => {
                    last = Some((decision, format!("connect {addr}: timed out")));
                    break;
                }
            }
        }
        match (refused, last) {
            (Some(stop), _) => Err(stop),
            (None, Some((decision, error))) => Err(Stop::failed(decision, error)),
            (None, None) => Err(Stop::deny("no upstream address")),
        }
    }
}

/// A TLS alert record: fatal (2), `access_denied` (49), in the TLS 1.2
/// record version every client accepts before a ServerHello.
const TLS_ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// What a client whose destination name is denied is told, in its
/// protocol; `None`: nothing (the connection is reset).
fn refusal_answer(first: &FirstBytes, name: &HostName, decision: &Decision) -> Option<Vec<u8>> {
    match first {
        FirstBytes::Tls(_) => Some(TLS_ACCESS_DENIED.to_vec()),
        FirstBytes::Http(_) => {
            let body = format!(
                "boxd: egress to {name} is denied by this box's network policy (rule: {})\n",
                decision.rule
            );
            Some(
                format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        }
        FirstBytes::Other => None,
    }
}

/// Placeholders of the box's secrets in the first bytes of a connection
/// that is spliced: whatever host it goes to, they leave unsubstituted.
fn first_bytes_violations(net: &BoxNet, buffered: &[u8]) -> Vec<Violation> {
    net.secrets
        .secrets()
        .iter()
        .filter(|s| {
            let needle = s.placeholder.as_bytes();
            !needle.is_empty() && memchr::memmem::find(buffered, needle).is_some()
        })
        .map(|s| Violation {
            secret: s.name.clone(),
            location: "first_bytes".into(),
        })
        .collect()
}

/// Resolves once the upstream has sent a byte (or closed, or failed):
/// `peek` only returns on real data, never on a spurious readiness, so a
/// client's first bytes are never let through uninspected by mistake.
async fn server_speaks(upstream: Option<&Connected>) {
    match upstream {
        Some(c) => {
            let mut one = [0u8; 1];
            let _ = c.stream.peek(&mut one).await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Closes with a reset (`SO_LINGER` 0), so the peer sees "connection
/// reset" at once instead of an orderly end it might wait on.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The destination the box connected to, before the redirect.
fn original_dst(stream: &TcpStream, local: IpAddr) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = match local {
        IpAddr::V4(_) => sock.original_dst_v4()?,
        IpAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("original destination is not an inet address"))
}

/// What the first bytes claim about the destination.
#[derive(Debug, Default, PartialEq, Eq)]
struct Checked {
    /// The SNI or Host, for the audit event (normalised when it parses).
    shown: Option<String>,
    /// Set when the claim refuses the connection.
    deny: Option<Decision>,
}

/// Checks every name the first bytes carry (SNI; Host header and the
/// request target's authority) against the synthetic address's name. A
/// literal-IP destination is never checked: its claims are informational.
fn check_first_bytes(target: &Target, first: &FirstBytes) -> Checked {
    let claims: Vec<(&'static str, &[u8], bool)> = match first {
        FirstBytes::Tls(hello) => hello
            .sni
            .iter()
            .map(|s| ("SNI", s.as_slice(), false))
            .collect(),
        FirstBytes::Http(head) => head
            .host
            .iter()
            .map(|h| ("Host", h.as_slice(), true))
            .chain(
                head.target_authority
                    .iter()
                    .map(|a| ("request target", a.as_slice(), true)),
            )
            .collect(),
        FirstBytes::Other => Vec::new(),
    };
    let mut out = Checked::default();
    for (what, raw, with_port) in claims {
        let parsed = if with_port {
            authority_host(raw)
        } else {
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| Host::parse(s).ok())
        };
        let shown = match &parsed {
            Some(h) => h.to_string(),
            None => escape_shown(raw),
        };
        if out.shown.is_none() {
            out.shown = Some(shown.clone());
        }
        let Target::Name(name) = target else {
            continue;
        };
        let verdict = match parsed {
            Some(Host::Name(n)) if &n == name => continue,
            Some(_) => format!("domain fronting: {what} {shown:?} is not {name}"),
            None => format!("invalid {what} {shown:?}"),
        };
        out.deny.get_or_insert(Decision::deny(verdict));
    }
    out
}

/// The host of an authority (`host`, `host:port`, `[v6]`, `[v6]:port`).
fn authority_host(raw: &[u8]) -> Option<Host> {
    let s = std::str::from_utf8(raw).ok()?;
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        let (h, rest) = s.split_at(close + 1);
        match rest {
            "" => (h, None),
            _ => (h, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        // RFC 3986: port = *DIGIT (empty allowed).
        let ok = p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !ok || (!p.is_empty() && p.parse::<u16>().is_err()) {
            return None;
        }
    }
    Host::parse(host).ok()
}

/// A box-supplied name as it may appear in an audit event: printable
/// ASCII, escaped otherwise, bounded.
fn escape_shown(raw: &[u8]) -> String {
    let mut s = String::new();
    for b in raw {
        for c in std::ascii::escape_default(*b) {
            if s.len() >= MAX_SHOWN_NAME {
                return s;
            }
            s.push(char::from(c));
        }
    }
    s
}

/// A stream that counts the bytes written to it.
struct Counted<S> {
    inner: S,
    written: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.written += n as u64;
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Carries bytes both ways until both sides have closed (a half-close is
/// passed on as a shutdown of the other side's write half). No idle
/// timeout. `splice(2)` when pipes can be had, a userspace copy
/// otherwise. Returns the bytes delivered upstream and to the client, and
/// the error that cut the connection, if one did.
async fn carry(client: &mut TcpStream, upstream: &mut TcpStream) -> (u64, u64, Option<io::Error>) {
    match splice::pipes() {
        Ok(pipes) => splice::bidirectional(client, upstream, pipes).await,
        Err(e) => {
            tracing::debug!(error = %e, "no pipes for splice(2): copying through userspace");
            copy_both(client, upstream).await
        }
    }
}

async fn copy_both(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
) -> (u64, u64, Option<io::Error>) {
    let mut c = Counted {
        inner: client,
        written: 0,
    };
    let mut u = Counted {
        inner: upstream,
        written: 0,
    };
    let r =
        tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, COPY_BUFFER, COPY_BUFFER).await;
    (u.written, c.written, r.err())
}

#[cfg(test)]
mod tests {
    use super::sniff::{ClientHello, HttpHead};
    use super::*;

    fn name(s: &str) -> Target {
        Target::Name(HostName::parse(s).unwrap())
    }

    fn tls(sni: &[u8]) -> FirstBytes {
        FirstBytes::Tls(ClientHello {
            sni: Some(sni.to_vec()),
            ech: false,
        })
    }

    fn http(host: Option<&[u8]>, target: Option<&[u8]>) -> FirstBytes {
        FirstBytes::Http(HttpHead {
            method: "GET".into(),
            host: host.map(<[u8]>::to_vec),
            target_authority: target.map(<[u8]>::to_vec),
        })
    }

    #[test]
    fn sni_and_host_must_name_the_synthetic_name() {
        let t = name("api.example.test");
        for ok in [
            tls(b"api.example.test"),
            tls(b"API.Example.TEST."),
            http(Some(b"api.example.test"), None),
            http(Some(b"Api.Example.Test.:8443"), None),
            http(Some(b"api.example.test:"), Some(b"api.example.test:80")),
            http(None, None),
            FirstBytes::Tls(ClientHello::default()),
            FirstBytes::Other,
        ] {
            let c = check_first_bytes(&t, &ok);
            assert_eq!(c.deny, None, "{ok:?}");
        }
        let c = check_first_bytes(&t, &tls(b"Api.Example.Test"));
        assert_eq!(c.shown.as_deref(), Some("api.example.test"));
        for bad in [
            tls(b"evil.example.test"),
            tls(b"example.test"),
            tls(b"xapi.example.test"),
            tls(b"api.example.test\0.evil.test"),
            tls(b"127.0.0.1"),
            tls(b"\xff\xfe"),
            http(Some(b"evil.example.test"), None),
            http(Some(b"api.example.test"), Some(b"evil.example.test")),
            http(Some(b"api.example.test:99999"), None),
            http(Some(b"api.example.test:8a"), None),
            http(Some(b"[::1]:80"), None),
            http(Some(b"10.0.0.1"), None),
            http(Some(b"2130706433"), None),
            http(Some(b""), None),
            http(Some(b"api.example.test@evil.test"), None),
            http(None, Some(b"evil.example.test:443")),
        ] {
            let c = check_first_bytes(&t, &bad);
            assert!(c.deny.is_some(), "{bad:?} allowed");
            assert!(!c.deny.unwrap().is_allowed());
        }
        let c = check_first_bytes(&t, &tls(b"evil.example.test"));
        assert!(c.deny.unwrap().rule.contains("domain fronting"));
    }

    #[test]
    fn claims_never_matter_for_a_literal_ip() {
        let t = Target::Ip("192.0.2.7".parse().unwrap());
        let c = check_first_bytes(&t, &tls(b"anything.example.test"));
        assert_eq!(c.deny, None);
        assert_eq!(c.shown.as_deref(), Some("anything.example.test"));
        let c = check_first_bytes(&t, &http(Some(b"\x01bad\xff"), None));
        assert_eq!(c.deny, None);
        assert_eq!(c.shown.as_deref(), Some("\\x01bad\\xff"));
    }

    #[test]
    fn authority_forms() {
        let n = |s: &str| Some(Host::Name(HostName::parse(s).unwrap()));
        assert_eq!(authority_host(b"a.example.test"), n("a.example.test"));
        assert_eq!(authority_host(b"a.example.test:443"), n("a.example.test"));
        assert_eq!(
            authority_host(b"[2001:db8::1]:443"),
            Some(Host::Ip("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(authority_host(b"[2001:db8::1]x"), None);
        assert_eq!(authority_host(b"2001:db8::1"), None);
        assert_eq!(authority_host(b"a.test:1:2"), None);
        assert_eq!(escape_shown(&[b'a'; 600]).len(), MAX_SHOWN_NAME);
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// A box app, the proxy's two sockets, and a server; the carrier in
    /// between. Returns what the carrier reported.
    async fn carry_with(spliced: bool, reset_by_server: bool) -> (u64, u64, Option<io::Error>) {
        let (mut app, mut from_box) = tcp_pair().await;
        let (mut to_server, mut server) = tcp_pair().await;
        let carrier = tokio::spawn(async move {
            if spliced {
                let pipes = splice::pipes().unwrap();
                splice::bidirectional(&from_box, &to_server, pipes).await
            } else {
                copy_both(&mut from_box, &mut to_server).await
            }
        });
        let up = vec![7u8; 3 << 20];
        let sent = up.clone();
        let app_side = tokio::spawn(async move {
            app.write_all(&sent).await.unwrap();
            // Half-close: the answer must still come back.
            app.shutdown().await.unwrap();
            let mut back = Vec::new();
            let r = app.read_to_end(&mut back).await;
            (r.is_ok(), back.len())
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, up, "upload passed intact, then EOF");
        if reset_by_server {
            server.write_all(&[1; 1000]).await.unwrap();
            server.set_zero_linger().unwrap();
            drop(server);
        } else {
            server.write_all(&vec![9u8; 1 << 20]).await.unwrap();
            server.shutdown().await.unwrap();
        }
        let (clean, back) = app_side.await.unwrap();
        let result = carrier.await.unwrap();
        if !reset_by_server {
            assert!(clean);
            assert_eq!(back, 1 << 20);
        }
        result
    }

    #[tokio::test]
    async fn splice_and_copy_count_bytes_and_pass_half_closes_on() {
        for spliced in [true, false] {
            let (up, down, err) = carry_with(spliced, false).await;
            assert_eq!((up, down), (3 << 20, 1 << 20), "spliced: {spliced}");
            assert!(err.is_none(), "spliced: {spliced}: {err:?}");
        }
    }

    #[tokio::test]
    async fn a_reset_cuts_the_carried_connection() {
        for spliced in [true, false] {
            let (up, down, err) = carry_with(spliced, true).await;
            assert_eq!(up, 3 << 20);
            assert!(down <= 1000);
            assert!(
                err.is_some(),
                "spliced: {spliced}: the reset went unnoticed"
            );
        }
    }
}
