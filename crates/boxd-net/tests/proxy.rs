//! The egress proxy for real: a throwaway "host" namespace with the
//! `inet boxd` ruleset, a box namespace behind a veth, the proxy bound in
//! the host namespace, and local upstream servers on the host's
//! 127.0.0.1 that the operator's test overrides point names at (with
//! `allow_ranges 127.0.0.0/8`, as the operator would for tests). The box
//! side connects to the synthetic addresses its resolver would have
//! answered (taken from `BoxNet::synthetic` directly).

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxd_net::netns::run_in;
use boxd_net::policy::{AllowNet, EgressPolicy, HostName, NetworkPolicy, OperatorNet};
use boxd_net::proxy::ProxyTimeouts;
use boxd_net::{
    AddressPlan, BoxNet, ConnEvent, EventSink, EventStream, NetEvent, Proxy, Registry, Ruleset,
    RulesetConfig, SlotAddrs, UpstreamConfig, UpstreamTarget, Upstreams, Veths,
};
use common::skip_unless_capable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENT: Duration = Duration::from_secs(5);
/// The first-bytes timeout the test proxy runs with.
const FIRST_BYTES: Duration = Duration::from_millis(600);
const BANNER: &[u8] = b"220 banner.example.test ESMTP ready\r\n";

fn name(s: &str) -> HostName {
    HostName::parse(s).unwrap()
}

fn allow_net(rules: &[&str]) -> Option<AllowNet> {
    Some(AllowNet::parse(rules).unwrap())
}

fn operator(ranges: &[&str]) -> OperatorNet {
    OperatorNet {
        allow_ranges: ranges
            .iter()
            .map(|r| boxd_net::policy::parse_cidr(r).unwrap())
            .collect(),
        deny_ranges: Vec::new(),
    }
}

/// The policy most tests use: a few names, loopback opened by the operator.
fn named_policy() -> EgressPolicy {
    EgressPolicy::new(
        allow_net(&[
            "api.example.test",
            "banner.example.test",
            "*.wild.test",
            "rebind.example.test",
            "rebind6.example.test",
            "pool.example.test",
        ]),
        None,
        operator(&["127.0.0.0/8"]),
    )
}

/// Test upstream servers on the host namespace's loopback.
struct Upstream {
    echo: u16,
    banner: u16,
    /// Bytes the upstream servers have received, all connections together.
    received: Arc<AtomicU64>,
}

/// Everything one test needs; dropping it removes all of it (the
/// namespaces go with their last fd and socket).
struct World {
    rt: Option<tokio::runtime::Runtime>,
    host: OwnedFd,
    box_ns: OwnedFd,
    net: Arc<BoxNet>,
    addrs: SlotAddrs,
    events: EventStream,
    proxy_port: u16,
    up: Upstream,
    _veths: Veths,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

async fn echo_conn(mut s: tokio::net::TcpStream, received: Arc<AtomicU64>, banner: bool) {
    if banner && s.write_all(BANNER).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::SeqCst);
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown().await;
}

fn spawn_server(
    rt: &tokio::runtime::Runtime,
    host: &OwnedFd,
    received: Arc<AtomicU64>,
    banner: bool,
) -> u16 {
    let l = common::tcp_listener(host, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let port = l.local_addr().unwrap().as_socket().unwrap().port();
    let l: std::net::TcpListener = l.into();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(echo_conn(s, received.clone(), banner));
        }
    });
    port
}

impl World {
    fn new(policy: EgressPolicy) -> World {
        let host = common::netns();
        common::lo_up(&host);
        let rt = common::runtime_in(&host);
        let received = Arc::new(AtomicU64::new(0));
        let up = Upstream {
            echo: spawn_server(&rt, &host, received.clone(), false),
            banner: spawn_server(&rt, &host, received.clone(), true),
            received,
        };
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let to = |ip: IpAddr, port: Option<u16>| UpstreamTarget { ip, port };
        let mut overrides = BTreeMap::new();
        for n in [
            "api.example.test",
            "evil.example.test",
            "a.wild.test",
            "deep.a.wild.test",
            "wild.test",
            "evilwild.test",
        ] {
            overrides.insert(name(n), to(lo, Some(up.echo)));
        }
        overrides.insert(name("banner.example.test"), to(lo, Some(up.banner)));
        let metadata = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));
        overrides.insert(name("rebind.example.test"), to(metadata, None));
        let ula: IpAddr = "fd00:ec2::254".parse().unwrap();
        overrides.insert(name("rebind6.example.test"), to(ula, None));
        let plan = AddressPlan::default();
        // A name pointed at another box's address (slot 2's box end).
        let other_box = IpAddr::V4(plan.slot(2).unwrap().box_v4);
        overrides.insert(name("pool.example.test"), to(other_box, None));
        let upstreams = Arc::new(
            Upstreams::new(UpstreamConfig {
                dns: Vec::new(),
                overrides,
            })
            .unwrap(),
        );

        let registry = Arc::new(Registry::new(plan));
        let box_ns = common::netns();
        let (veths, link) = rt.block_on(async {
            let veths = Veths::new_in(plan, host.as_fd()).expect("veths");
            let link = veths.create(1, box_ns.as_fd()).await.expect("box veth");
            (veths, link)
        });
        let net = Arc::new(BoxNet::new("box-1", link.addrs, policy));
        registry.insert(net.clone());

        let (sink, events) = EventSink::channel(256);
        let proxy = Arc::new(
            Proxy::new(registry, upstreams, sink).with_timeouts(ProxyTimeouts {
                first_bytes: FIRST_BYTES,
                refusal: FIRST_BYTES,
                ..ProxyTimeouts::default()
            }),
        );
        let (l4, l6, proxy_port) = run_in(host.as_fd(), || Proxy::bind_pair(0))
            .unwrap()
            .expect("bind the proxy");
        rt.spawn(proxy.clone().serve(l4));
        rt.spawn(proxy.serve(l6));
        let resolver = if proxy_port == 15053 { 15054 } else { 15053 };
        let rules = Ruleset::new(RulesetConfig::new(proxy_port, resolver)).unwrap();
        rt.block_on(rules.install(Some(host.as_fd())))
            .expect("install the ruleset");
        World {
            rt: Some(rt),
            host,
            box_ns,
            net,
            addrs: link.addrs,
            events,
            proxy_port,
            up,
            _veths: veths,
        }
    }

    /// Gives the "host" namespace's loopback one more address, as a host
    /// interface has its main address (the proxy serves that namespace).
    fn add_host_addr(&self, ip: IpAddr) {
        let rt = self.rt.as_ref().expect("runtime");
        let handle = rt.handle().clone();
        let (conn, nl, _) = run_in(self.host.as_fd(), move || {
            let _entered = handle.enter();
            rtnetlink::new_connection()
        })
        .expect("enter the host namespace")
        .expect("netlink socket");
        rt.spawn(conn);
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        // The loopback link of a new namespace is index 1.
        rt.block_on(nl.address().add(1, ip, prefix).execute())
            .unwrap_or_else(|e| panic!("add {ip} to the host namespace: {e}"));
        // The kernel inserts an address's `local` route a moment after it
        // acknowledges the address (IPv6: from a work queue): wait for it,
        // asking from the namespace's own threads.
        rt.block_on(rt.spawn(async move {
            let local = boxd_net::local::HostLocal::new();
            while !matches!(local.is_local(ip).await, Ok(true)) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }))
        .expect("the address became local");
    }

    /// The synthetic IPv4 address of `n` for this box, on `port`.
    fn synth(&self, n: &str, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.net.synthetic(&name(n)).unwrap().v4), port)
    }

    fn synth6(&self, n: &str, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.net.synthetic(&name(n)).unwrap().v6), port)
    }

    /// A connection from inside the box.
    fn connect(&self, to: SocketAddr) -> TcpStream {
        self.try_connect(to)
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"))
    }

    /// A connection from inside the box; a refusal can be so fast that
    /// the reset is already there when the connect completes.
    fn try_connect(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        let s: TcpStream = common::connect_from(&self.box_ns, to, PATIENT)?.into();
        s.set_read_timeout(Some(PATIENT)).unwrap();
        s.set_write_timeout(Some(PATIENT)).unwrap();
        s.set_nodelay(true).unwrap();
        Ok(s)
    }

    /// Sends `parts` (one write each, a pause between them so they travel
    /// as separate segments), half-closes, and reads to the end.
    fn exchange(&self, to: SocketAddr, parts: &[&[u8]]) -> Outcome {
        let mut s = match self.try_connect(to) {
            Ok(s) => s,
            Err(e) => return Outcome::from_err(e),
        };
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
            if let Err(e) = s.write_all(p) {
                return Outcome::from_err(e);
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        read_to_end(&mut s)
    }

    /// `exchange` must end in a reset (how fast is `bench/net.rs`'s
    /// business, not a test's).
    fn refused(&self, to: SocketAddr, parts: &[&[u8]]) {
        let out = self.exchange(to, parts);
        assert_eq!(out, Outcome::Reset, "{to}: expected a reset");
    }

    fn event(&mut self) -> ConnEvent {
        let rt = self.rt.as_ref().expect("runtime");
        let events = &mut self.events;
        match rt.block_on(async { tokio::time::timeout(PATIENT, events.recv()).await }) {
            Ok(Some(NetEvent::Connection(e))) => e,
            Ok(other) => panic!("expected a connection event, got {other:?}"),
            Err(_) => panic!("no connection event"),
        }
    }

    /// The next event is a denial whose rule contains `rule`.
    fn denied(&mut self, to: SocketAddr, rule: &str) -> ConnEvent {
        let e = self.event();
        assert_eq!(e.decision, "deny", "{e:?}");
        assert!(e.rule.contains(rule), "rule {:?} lacks {rule:?}", e.rule);
        assert_eq!((e.dest_ip, e.port), (to.ip(), to.port()), "{e:?}");
        assert_eq!((e.bytes_up, e.bytes_down), (0, 0), "{e:?}");
        e
    }

    fn no_more_events(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
        match self.events.try_recv() {
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
            other => panic!("unexpected extra event: {other:?}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Everything the peer sent, then an orderly end.
    Data(Vec<u8>),
    Reset,
    TimedOut,
}

impl Outcome {
    fn from_err(e: std::io::Error) -> Outcome {
        match e.kind() {
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                Outcome::Reset
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::TimedOut,
            _ => panic!("unexpected error: {e}"),
        }
    }
}

fn read_to_end(s: &mut TcpStream) -> Outcome {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => Outcome::Data(got),
        Err(e) => Outcome::from_err(e),
    }
}

/// A TLS 1.3-style ClientHello for `sni`, cut into records of at most
/// `chunk` bytes (same layout as the unit tests' builder).
fn client_hello(sni: &str, chunk: usize) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    let mut sni_ext = vec![0];
    sni_ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(sni.as_bytes());
    let mut sni_data = (sni_ext.len() as u16).to_be_bytes().to_vec();
    sni_data.extend_from_slice(&sni_ext);
    let mut exts = Vec::new();
    for (ty, data) in [
        (0u16, sni_data),
        (10, vec![0, 2, 0, 29]),
        (21, vec![0; 600]),
    ] {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(&data);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut out = Vec::new();
    for part in msg.chunks(chunk) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn assert_allowed(e: &ConnEvent, n: &str, protocol: &str, up: usize, down: usize) {
    assert_eq!(e.decision, "allow", "{e:?}");
    assert_eq!(e.name.as_deref(), Some(n), "{e:?}");
    assert_eq!(e.protocol, protocol, "{e:?}");
    assert_eq!(
        (e.bytes_up, e.bytes_down),
        (up as u64, down as u64),
        "{e:?}"
    );
    assert_eq!(e.box_id, "box-1");
    assert_eq!(e.error, None, "{e:?}");
}

#[test]
fn allowed_names_reach_their_upstreams() {
    skip_unless_capable!();
    let mut w = World::new(named_policy());
    let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    // Plain TCP, echoed through the proxy, half-close passed on.
    let to = w.synth("api.example.test", 5432);
    let payload = vec![0x5a; 300_000];
    assert_eq!(w.exchange(to, &[&payload]), Outcome::Data(payload.clone()));
    let e = w.event();
    assert_allowed(&e, "api.example.test", "tcp", payload.len(), payload.len());
    assert_eq!((e.dest_ip, e.port, e.upstream_ip), (to.ip(), 5432, lo));
    assert!(e.rule.contains("allow_net \"api.example.test\""), "{e:?}");
    assert!(e.rule.contains("operator allow_ranges"), "{e:?}");

    // HTTP, Host in another case, with a trailing dot and a port, the
    // head split across two segments: forwarded byte for byte.
    let to = w.synth("api.example.test", 80);
    let head: &[u8] = b"GET /v1/x HTTP/1.1\r\nHost: API.Example.Test.:80\r\nX-A: b\r\n";
    let rest: &[u8] = b"\r\nbody";
    let mut whole = head.to_vec();
    whole.extend_from_slice(rest);
    assert_eq!(w.exchange(to, &[head, rest]), Outcome::Data(whole.clone()));
    let e = w.event();
    assert_allowed(&e, "api.example.test", "http", whole.len(), whole.len());
    assert_eq!(e.sni_or_host.as_deref(), Some("api.example.test"));

    // TLS: a ClientHello in three records, sent as two segments cut inside
    // a record, reaches the upstream intact.
    let to = w.synth("api.example.test", 443);
    let hello = client_hello("api.example.test", 200);
    assert!(hello.len() > 600);
    let (a, b) = hello.split_at(250);
    assert_eq!(w.exchange(to, &[a, b]), Outcome::Data(hello.clone()));
    let e = w.event();
    assert_allowed(&e, "api.example.test", "tls", hello.len(), hello.len());
    assert_eq!(e.sni_or_host.as_deref(), Some("api.example.test"));

    // `*.wild.test` matches one or more labels below wild.test.
    for n in ["a.wild.test", "deep.a.wild.test"] {
        assert_eq!(
            w.exchange(w.synth(n, 7), &[b"hi"]),
            Outcome::Data(b"hi".to_vec())
        );
        assert_allowed(&w.event(), n, "tcp", 2, 2);
    }

    // IPv6: the box connects to the name's v6 synthetic address.
    let to = w.synth6("api.example.test", 443);
    assert_eq!(w.exchange(to, &[&hello]), Outcome::Data(hello.clone()));
    let e = w.event();
    assert_allowed(&e, "api.example.test", "tls", hello.len(), hello.len());
    assert_eq!(e.dest_ip, to.ip());

    // A kept-alive connection: request/response rounds over one
    // connection, the way interactive protocols use it.
    let mut s = w.connect(w.synth("api.example.test", 6379));
    let mut buf = [0u8; 64];
    for i in 0..50u8 {
        let msg = [b'P', b'I', b'N', b'G', i, b'\r', b'\n'];
        s.write_all(&msg).unwrap();
        s.read_exact(&mut buf[..msg.len()]).unwrap();
        assert_eq!(&buf[..msg.len()], &msg);
    }
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s), Outcome::Data(Vec::new()));
    assert_allowed(&w.event(), "api.example.test", "tcp", 350, 350);

    w.no_more_events();
}

#[test]
fn server_first_protocols_do_not_stall() {
    skip_unless_capable!();
    let mut w = World::new(named_policy());
    for to in [
        w.synth("banner.example.test", 25),
        w.synth6("banner.example.test", 25),
    ] {
        let mut s = w.connect(to);
        // The client sends nothing until it has the banner (a stalled
        // proxy fails the read at the socket's timeout).
        let mut got = vec![0u8; BANNER.len()];
        s.read_exact(&mut got).expect("banner");
        assert_eq!(got, BANNER);
        s.write_all(b"QUIT\r\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut s), Outcome::Data(b"QUIT\r\n".to_vec()));
        let e = w.event();
        assert_allowed(&e, "banner.example.test", "tcp", 6, BANNER.len() + 6);
    }
    // A client that half-closes at once, sending nothing, still gets the
    // banner.
    let to = w.synth("banner.example.test", 25);
    assert_eq!(w.exchange(to, &[]), Outcome::Data(BANNER.to_vec()));
    assert_allowed(&w.event(), "banner.example.test", "tcp", 0, BANNER.len());
    w.no_more_events();
}

#[test]
fn denied_names_fail_in_their_protocol_without_going_upstream() {
    skip_unless_capable!();
    let mut w = World::new(named_policy());
    let before = w.up.received.load(Ordering::SeqCst);
    // TLS: a fatal access_denied alert, the handshake fails. Not in
    // allow_net at all; the apex and a look-alike of `*.wild.test`.
    for n in ["evil.example.test", "wild.test", "evilwild.test"] {
        let to = w.synth(n, 443);
        let out = w.exchange(to, &[&client_hello(n, 16384)]);
        assert_eq!(
            out,
            Outcome::Data(vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49]),
            "{n}"
        );
        let e = w.denied(to, "allow_net");
        assert_eq!(e.name.as_deref(), Some(n));
        assert_eq!(e.upstream_ip, None);
        assert_eq!(e.protocol, "tls");
        assert_eq!(e.sni_or_host.as_deref(), Some(n));
    }
    // HTTP: a 403 naming the policy and the rule; the wildcard allows
    // subdomains only, on the IPv6 side too.
    let to = w.synth6("wild.test", 80);
    let out = w.exchange(to, &[b"GET / HTTP/1.1\r\nHost: wild.test\r\n\r\n"]);
    let Outcome::Data(answer) = out else {
        panic!("no answer: {out:?}")
    };
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            "\r\n\r\nboxd: egress to wild.test is denied by this box's network policy \
             (rule: allow_net: no rule matches the name)\n"
        ),
        "{answer}"
    );
    let e = w.denied(to, "allow_net: no rule matches");
    assert_eq!(e.protocol, "http");
    // Anything else, or nothing at all, is reset.
    let to = w.synth("evil.example.test", 5432);
    w.refused(to, &[b"\x00\x00\x00\x08\x04\xd2\x16\x2f"]);
    w.denied(to, "allow_net");
    let silent = w.connect(to);
    assert_eq!(read_to_end(&mut { silent }), Outcome::Reset);
    w.denied(to, "allow_net");
    // A synthetic address the box was never given.
    let to = SocketAddr::from(([198, 18, 200, 7], 443));
    w.refused(to, &[b"x"]);
    w.denied(to, "synthetic address the box was not given");
    // Another box's synthetic address is unknown to this one.
    let to = SocketAddr::new("fd42:b0c5:ff::2:1".parse().unwrap(), 443);
    w.refused(to, &[b"x"]);
    w.denied(to, "synthetic address the box was not given");
    assert_eq!(
        w.up.received.load(Ordering::SeqCst),
        before,
        "bytes leaked upstream"
    );
    w.no_more_events();
}

#[test]
fn deny_all_and_policy_changes_apply_to_the_next_connection() {
    skip_unless_capable!();
    let mut w = World::new(named_policy());
    let to = w.synth("api.example.test", 22);
    // A long-lived connection opened under the old policy.
    let mut s = w.connect(to);
    // (A line: a bare "one" could still become an HTTP request line, and
    // the proxy would wait for the rest before forwarding anything.)
    s.write_all(b"one\n").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();

    let mut deny_all = named_policy();
    deny_all.network_policy = Some(NetworkPolicy::deny_all());
    w.net.set_policy(deny_all);
    // New connections: refused, on both families.
    w.refused(to, &[b"two"]);
    w.denied(to, "network_policy deny-all");
    let to6 = w.synth6("api.example.test", 22);
    w.refused(to6, &[b"two"]);
    w.denied(to6, "network_policy deny-all");
    // The open one keeps its decision (policy read once per connection).
    s.write_all(b"two\n").unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"two\n");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s), Outcome::Data(Vec::new()));
    assert_allowed(&w.event(), "api.example.test", "tcp", 8, 8);

    // And back.
    w.net.set_policy(named_policy());
    assert_eq!(
        w.exchange(to, &[b"three"]),
        Outcome::Data(b"three".to_vec())
    );
    assert_allowed(&w.event(), "api.example.test", "tcp", 5, 5);
    w.no_more_events();
}

#[test]
fn rebinding_and_domain_fronting_are_refused() {
    skip_unless_capable!();
    let mut w = World::new(named_policy());
    let before = w.up.received.load(Ordering::SeqCst);
    // Allowed names that resolve to metadata / link-local / another box.
    for (n, rule) in [
        ("rebind.example.test", "reserved range"),
        ("rebind6.example.test", "reserved range"),
    ] {
        let to = w.synth(n, 80);
        let req = format!("GET / HTTP/1.1\r\nHost: {n}\r\n\r\n");
        w.refused(to, &[req.as_bytes()]);
        w.denied(to, rule);
    }
    // Even with the operator opening 10/8, another box's address stays
    // closed.
    let mut open10 = named_policy();
    open10.operator = operator(&["127.0.0.0/8", "10.0.0.0/8"]);
    w.net.set_policy(open10);
    let to = w.synth("pool.example.test", 80);
    w.refused(to, &[b"x"]);
    w.denied(to, "boxd address pool");
    w.net.set_policy(named_policy());

    // Fronting: a name other than the synthetic address's, by SNI, by
    // Host, by absolute-form target, by CONNECT.
    let to = w.synth("api.example.test", 443);
    let evil_hello = client_hello("evil.example.test", 16384);
    w.refused(to, &[&evil_hello]);
    let e = w.denied(to, "domain fronting: SNI");
    assert_eq!(e.protocol, "tls");
    assert_eq!(e.sni_or_host.as_deref(), Some("evil.example.test"));
    // The same, split across records and segments.
    let split = client_hello("evil.example.test", 100);
    let (a, b) = split.split_at(120);
    w.refused(to, &[a, b]);
    w.denied(to, "domain fronting: SNI");
    let to80 = w.synth("api.example.test", 80);
    for req in [
        &b"GET / HTTP/1.1\r\nHost: evil.example.test\r\n\r\n"[..],
        b"GET http://evil.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
        b"CONNECT evil.example.test:443 HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: evil.example.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: api.example.test\r\nHost: evil.example.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: api.example.test\x00.evil.test\r\n\r\n",
    ] {
        w.refused(to80, &[req]);
        let e = w.denied(to80, "");
        assert_eq!(e.protocol, "http", "{e:?}");
    }
    // Nothing of any of it reached the upstream.
    assert_eq!(
        w.up.received.load(Ordering::SeqCst),
        before,
        "bytes leaked upstream"
    );
    w.no_more_events();
}

#[test]
fn literal_ips_are_decided_on_the_ip_alone() {
    skip_unless_capable!();
    // No allow_net, no operator ranges: every public destination.
    let mut w = World::new(EgressPolicy::default());
    // Let the box route 127/8 out of eth0 (its root could do this).
    for conf in ["all", "eth0"] {
        common::sysctl_in(
            &w.box_ns,
            &format!("/proc/sys/net/ipv4/conf/{conf}/route_localnet"),
            "1",
        );
    }
    let host_v4 = IpAddr::V4(w.addrs.host_v4);
    let host_v6 = IpAddr::V6(w.addrs.host_v6);
    let echo = w.up.echo;
    for (ip, rule) in [
        (IpAddr::V4(Ipv4Addr::LOCALHOST), "reserved range"),
        (host_v4, "reserved range"),
        (IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), "reserved range"),
        (
            IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
            "reserved range",
        ),
        (host_v6, "reserved range"),
        ("fd00:ec2::254".parse().unwrap(), "reserved range"),
    ] {
        let to = SocketAddr::new(ip, echo);
        // An SNI naming an allowed-looking host changes nothing.
        w.refused(to, &[&client_hello("api.example.test", 16384)]);
        w.denied(to, rule);
    }
    // The operator opens loopback: the host's own loopback is still
    // never reached from a box by address (only a name the operator's
    // upstream override points there reaches a host service).
    w.net
        .set_policy(EgressPolicy::new(None, None, operator(&["127.0.0.0/8"])));
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, echo));
    let hello = client_hello("whatever.example.test", 16384);
    w.refused(to, &[&hello]);
    w.denied(to, "host address 127.0.0.1");
    // Still not the host's veth address, whatever the operator says about 10/8.
    w.net.set_policy(EgressPolicy::new(
        None,
        None,
        operator(&["127.0.0.0/8", "10.0.0.0/8"]),
    ));
    let to = SocketAddr::new(host_v4, echo);
    w.refused(to, &[b"x"]);
    w.denied(to, "boxd address pool");
    w.no_more_events();
}

#[test]
fn the_hosts_own_addresses_are_refused_whatever_the_policy() {
    skip_unless_capable!();
    // The "host" gets a main address of each family (documentation
    // ranges, as on hosts that number their links from them). No box
    // policy, and the operator even opens both ranges (as one opening a
    // LAN would): only the host-address check stands between the box and
    // the host's services, which listen on every address.
    let open = || EgressPolicy::new(None, None, operator(&["203.0.113.0/24", "2001:db8::/32"]));
    let mut w = World::new(open());
    let main4: IpAddr = "203.0.113.7".parse().unwrap();
    let main6: IpAddr = "2001:db8:1::7".parse().unwrap();
    w.add_host_addr(main4);
    w.add_host_addr(main6);
    let before = w.up.received.load(Ordering::SeqCst);
    let echo = w.up.echo;
    for ip in [main4, main6] {
        let to = SocketAddr::new(ip, echo);
        w.refused(to, &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
        let e = w.denied(to, &format!("host address {ip}: local to the host"));
        assert_eq!(e.upstream_ip, None);
    }
    // The IPv4-mapped IPv6 form is the same address.
    let IpAddr::V4(v4) = main4 else {
        unreachable!()
    };
    let mapped = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), echo);
    assert_eq!(w.exchange(mapped, &[b"x\n"]), Outcome::Reset);
    let e = w.event();
    assert_eq!(e.decision, "deny", "{e:?}");
    assert!(e.rule.contains("host address 203.0.113.7"), "{e:?}");
    // Without the operator's ranges, documentation addresses are not
    // public destinations to begin with.
    w.net.set_policy(EgressPolicy::default());
    let to = SocketAddr::new(main4, echo);
    w.refused(to, &[b"x\n"]);
    w.denied(to, "reserved range documentation 203.0.113.0/24");
    assert_eq!(
        w.up.received.load(Ordering::SeqCst),
        before,
        "a host service received bytes"
    );
    w.no_more_events();
}

#[test]
fn slow_garbage_and_excess_connections_are_cut() {
    skip_unless_capable!();
    let mut w = World::new(named_policy());
    let to = w.synth("api.example.test", 443);

    // Slowloris: a TLS record header, then silence. Reset once the
    // first-bytes timeout passes, not before (a lower bound the proxy's
    // own timer guarantees, however slow the machine; no upper bound).
    let started = Instant::now();
    let mut s = w.connect(to);
    s.write_all(&[22, 3, 1, 0x02, 0x00, 1]).unwrap();
    assert_eq!(read_to_end(&mut s), Outcome::Reset);
    let took = started.elapsed();
    assert!(
        took >= FIRST_BYTES,
        "reset before the first-bytes timeout: {took:?}"
    );
    let e = w.denied(to, "first bytes incomplete");
    assert_eq!(e.protocol, "tls");

    // A request line dribbled a byte at a time past the timeout.
    let mut s = w.connect(w.synth("api.example.test", 80));
    let mut out = Outcome::TimedOut;
    for b in b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if let Err(e) = s.write_all(&[*b]) {
            out = Outcome::from_err(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    if out == Outcome::TimedOut {
        out = read_to_end(&mut s);
    }
    assert_eq!(out, Outcome::Reset);
    w.denied(w.synth("api.example.test", 80), "first bytes incomplete");

    // Garbage that claims to be TLS; an oversized ClientHello.
    w.refused(to, &[&[22, 3, 1, 0, 8, 9, 9, 9, 9, 9, 9, 9, 9]]);
    w.denied(to, "unreadable first bytes");
    w.refused(to, &[&[22, 3, 1, 0, 8, 1, 0xff, 0xff, 0xff, 0, 0, 0, 0]]);
    w.denied(to, "unreadable first bytes");

    // No connection permits left for the box: refused.
    let held = w
        .net
        .conns
        .clone()
        .try_acquire_many_owned(512)
        .expect("permits");
    w.refused(to, &[b"x"]);
    w.denied(to, "connection limit");
    drop(held);
    assert_eq!(w.exchange(to, &[b"ok"]), Outcome::Data(b"ok".to_vec()));
    assert_allowed(&w.event(), "api.example.test", "tcp", 2, 2);

    // A connection on an address that is no box's (the host's own
    // loopback) is closed at once, and is no box's event.
    let direct = common::connect_from(
        &w.host,
        SocketAddr::from((Ipv4Addr::LOCALHOST, w.proxy_port)),
        PATIENT,
    );
    let out = match direct {
        Ok(s) => {
            let mut s: TcpStream = s.into();
            s.set_read_timeout(Some(PATIENT)).unwrap();
            read_to_end(&mut s)
        }
        Err(e) => Outcome::from_err(e),
    };
    assert_eq!(out, Outcome::Reset);
    w.no_more_events();

    // The proxy is still serving.
    assert_eq!(
        w.exchange(to, &[b"still"]),
        Outcome::Data(b"still".to_vec())
    );
    assert_allowed(&w.event(), "api.example.test", "tcp", 5, 5);
    w.no_more_events();
}

#[test]
fn bind_pair_shares_one_port() {
    skip_unless_capable!();
    let ns = common::netns();
    let (l4, l6, port) = run_in(ns.as_fd(), || Proxy::bind_pair(0))
        .unwrap()
        .expect("bind");
    assert_ne!(port, 0);
    assert_eq!(
        l4.local_addr().unwrap(),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    );
    assert_eq!(
        l6.local_addr().unwrap(),
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
    );
    // The port is taken: a fixed-port bind of the same pair fails clearly.
    let err = run_in(ns.as_fd(), || Proxy::bind_pair(port))
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("bind the proxy"), "{err}");
    drop((l4, l6));
    let (_a, _b, again) = run_in(ns.as_fd(), || Proxy::bind_pair(port))
        .unwrap()
        .expect("rebind");
    assert_eq!(again, port);
}
