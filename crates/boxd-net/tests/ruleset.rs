//! The `inet boxd` table applied for real — in a throwaway namespace that
//! stands in for the host, never the real host's — and the traffic it
//! lets through or drops between boxes and that "host".

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use boxd_net::{AddressPlan, Ruleset, RulesetConfig, Veths};
use common::skip_unless_capable;
use socket2::Socket;

const PROXY: u16 = 15001;
const RESOLVER: u16 = 15053;
const QUICK: Duration = Duration::from_millis(300);
const PATIENT: Duration = Duration::from_secs(3);

fn ruleset() -> Ruleset {
    Ruleset::new(RulesetConfig::new(PROXY, RESOLVER)).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn install_replace_remove() {
    skip_unless_capable!();
    let host = common::netns();
    let rs = ruleset();
    assert_eq!(rs.current(Some(host.as_fd())).await.unwrap(), None);
    rs.install(Some(host.as_fd())).await.expect("install");
    let listed = rs
        .current(Some(host.as_fd()))
        .await
        .unwrap()
        .expect("installed");
    for needle in [
        "table inet boxd",
        "redirect to :15001",
        "redirect to :15053",
        "ct status dnat accept",
        "fib saddr . iif oif missing",
        "oifname \"bx*\"",
    ] {
        assert!(listed.contains(needle), "{needle:?} missing in:\n{listed}");
    }
    // Start after a crash: the table is there, install replaces it whole
    // (no duplicated rules).
    rs.install(Some(host.as_fd())).await.expect("reinstall");
    let again = rs.current(Some(host.as_fd())).await.unwrap().unwrap();
    assert_eq!(again.matches("redirect to :15001").count(), 1);
    rs.remove(Some(host.as_fd())).await.expect("remove");
    assert_eq!(rs.current(Some(host.as_fd())).await.unwrap(), None);
    rs.remove(Some(host.as_fd()))
        .await
        .expect("remove is idempotent");
    // A broken nft binary is a clear error, not a panic.
    let mut cfg = RulesetConfig::new(PROXY, RESOLVER);
    cfg.nft = "/nonexistent/nft".into();
    let err = Ruleset::new(cfg)
        .unwrap()
        .install(Some(host.as_fd()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nftables"), "{err}");
}

/// The host-side sockets of the traffic test.
struct HostSide {
    proxy4: Socket,
    proxy6: Socket,
    dns_udp4: Socket,
    dns_udp6: Socket,
    dns_tcp4: Socket,
    service_tcp: Socket,
    service_udp: Socket,
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Connects from `ns` to `to` and expects the proxy to get it, with `to`
/// as the original destination; returns the accepted socket's local
/// address (the host end of the box's veth).
fn lands_on_proxy(ns: &OwnedFd, proxy: &Socket, to: SocketAddr) -> SocketAddr {
    let _client = common::connect_from(ns, to, PATIENT)
        .unwrap_or_else(|e| panic!("connect to {to} was not redirected: {e}"));
    let (conn, _) = common::accept_within(proxy, PATIENT)
        .unwrap_or_else(|| panic!("connect to {to} did not land on the proxy"));
    let orig = match to {
        SocketAddr::V4(_) => conn.original_dst_v4(),
        SocketAddr::V6(_) => conn.original_dst_v6(),
    }
    .expect("SO_ORIGINAL_DST")
    .as_socket()
    .unwrap();
    assert_eq!(orig, to, "original destination");
    conn.local_addr().unwrap().as_socket().unwrap()
}

fn nothing_pending(l: &Socket, what: &str) {
    assert!(
        common::accept_within(l, Duration::ZERO).is_none(),
        "{what} got a connection"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn box_traffic_goes_to_proxy_and_resolver_only() {
    skip_unless_capable!();
    let host = common::netns();
    // Routing on, so every drop below is the ruleset's doing.
    common::sysctl_in(&host, "/proc/sys/net/ipv4/ip_forward", "1");
    common::sysctl_in(&host, "/proc/sys/net/ipv6/conf/all/forwarding", "1");
    let plan = AddressPlan::default();
    let veths = Veths::new_in(plan, host.as_fd()).expect("veths");
    let (ns_a, ns_b) = (common::netns(), common::netns());
    let a = veths.create(1, ns_a.as_fd()).await.expect("box a").addrs;
    let b = veths.create(2, ns_b.as_fd()).await.expect("box b").addrs;

    let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let h = HostSide {
        proxy4: common::tcp_listener(&host, sa(any4, PROXY)),
        proxy6: common::tcp_listener(&host, sa(any6, PROXY)),
        dns_udp4: common::udp_socket(&host, sa(any4, RESOLVER)),
        dns_udp6: common::udp_socket(&host, sa(any6, RESOLVER)),
        dns_tcp4: common::tcp_listener(&host, sa(any4, RESOLVER)),
        service_tcp: common::tcp_listener(&host, sa(any4, 2222)),
        service_udp: common::udp_socket(&host, sa(any4, 9999)),
    };
    let b_tcp = common::tcp_listener(&ns_b, sa(any4, 8080));
    let b_udp = common::udp_socket(&ns_b, sa(any4, 9999));
    let a_udp = common::udp_socket(&ns_a, sa(any4, 0));

    // Control, before the ruleset: the host service, box B, UDP and ICMP
    // are all reachable — so what fails later fails because of the rules.
    common::connect_from(&ns_a, sa(a.host_v4, 2222), PATIENT).expect("control: host service");
    assert!(common::accept_within(&h.service_tcp, PATIENT).is_some());
    common::connect_from(&ns_a, sa(b.box_v4, 8080), PATIENT).expect("control: box b");
    assert!(common::accept_within(&b_tcp, PATIENT).is_some());
    a_udp.send_to(b"hi", &sa(a.host_v4, 9999).into()).unwrap();
    assert!(
        common::recv_within(&h.service_udp, PATIENT).is_some(),
        "control: udp"
    );
    a_udp.send_to(b"hi", &sa(b.box_v4, 9999).into()).unwrap();
    assert!(
        common::recv_within(&b_udp, PATIENT).is_some(),
        "control: udp to box b"
    );
    assert!(
        common::ping_from(&ns_a, IpAddr::V4(a.host_v4), PATIENT),
        "control: ping"
    );
    assert!(
        common::ping_from(&ns_a, IpAddr::V6(a.host_v6), PATIENT),
        "control: ping6"
    );

    ruleset()
        .install(Some(host.as_fd()))
        .await
        .expect("install");

    // TCP anywhere lands on the proxy, which sees the original
    // destination and knows the box from the local address.
    let local = lands_on_proxy(&ns_a, &h.proxy4, sa([1, 2, 3, 4], 80));
    assert_eq!(local, sa(a.host_v4, PROXY));
    assert_eq!(plan.slot_of_host_addr(local.ip()), Some(1));
    let local = lands_on_proxy(&ns_b, &h.proxy4, sa([1, 2, 3, 4], 443));
    assert_eq!(plan.slot_of_host_addr(local.ip()), Some(2));
    let to6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let local = lands_on_proxy(&ns_a, &h.proxy6, sa(to6, 443));
    assert_eq!(local, sa(a.host_v6, PROXY));

    // A host service on another port: the connection reaches the proxy,
    // never the service.
    lands_on_proxy(&ns_a, &h.proxy4, sa(a.host_v4, 2222));
    nothing_pending(&h.service_tcp, "host service on :2222");
    // Box B's address: the proxy, never box B.
    lands_on_proxy(&ns_a, &h.proxy4, sa(b.box_v4, 8080));
    nothing_pending(&b_tcp, "box b");

    // DNS, UDP and TCP, to any resolver: boxd's resolver.
    a_udp
        .send_to(b"query", &sa([8, 8, 8, 8], 53).into())
        .unwrap();
    let (data, from) = common::recv_within(&h.dns_udp4, PATIENT).expect("udp 53 redirected");
    assert_eq!(
        (data.as_slice(), from),
        (&b"query"[..], sa(a.box_v4, a_udp_port(&a_udp)))
    );
    // The answer comes back as if from 8.8.8.8 (conntrack un-NATs it).
    h.dns_udp4.send_to(b"answer", &from.into()).unwrap();
    let (data, from) = common::recv_within(&a_udp, PATIENT).expect("dns answer");
    assert_eq!(
        (data.as_slice(), from),
        (&b"answer"[..], sa([8, 8, 8, 8], 53))
    );
    let a_udp6 = common::udp_socket(&ns_a, sa(any6, 0));
    a_udp6
        .send_to(
            b"q6",
            &sa("2001:4860:4860::8888".parse::<Ipv6Addr>().unwrap(), 53).into(),
        )
        .unwrap();
    let (_, from) = common::recv_within(&h.dns_udp6, PATIENT).expect("udp6 53 redirected");
    assert_eq!(from.ip(), IpAddr::V6(a.box_v6));
    common::connect_from(&ns_a, sa([9, 9, 9, 9], 53), PATIENT).expect("tcp 53");
    let (conn, _) = common::accept_within(&h.dns_tcp4, PATIENT).expect("tcp 53 on the resolver");
    assert_eq!(
        conn.original_dst_v4().unwrap().as_socket(),
        Some(sa([9, 9, 9, 9], 53))
    );
    nothing_pending(&h.proxy4, "proxy (tcp 53 must go to the resolver)");

    // Spoofing: box A sending DNS as box B (a hand-made IPv4 header on a
    // raw socket) fails the reverse-path check before any redirect; the
    // same packet with A's own source gets through, so the check is what
    // drops it.
    let raw = common::socket_in(
        &ns_a,
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    );
    let udp_packet = |src: Ipv4Addr| {
        let payload = b"spoofed";
        let total = (20 + 8 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]); // id, frag, ttl, udp, csum (kernel fills)
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[8, 8, 8, 8]);
        p.extend_from_slice(&5555u16.to_be_bytes());
        p.extend_from_slice(&53u16.to_be_bytes());
        p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed in IPv4)
        p.extend_from_slice(payload);
        p
    };
    let to = sa([8, 8, 8, 8], 0).into();
    raw.send_to(&udp_packet(b.box_v4), &to)
        .expect("send spoofed");
    raw.send_to(&udp_packet(Ipv4Addr::new(192, 0, 2, 1)), &to)
        .expect("send spoofed");
    assert!(
        common::recv_within(&h.dns_udp4, QUICK).is_none(),
        "spoofed source let through"
    );
    raw.send_to(&udp_packet(a.box_v4), &to)
        .expect("send genuine");
    let (_, from) =
        common::recv_within(&h.dns_udp4, PATIENT).expect("raw udp with the box's own source");
    assert_eq!(from, sa(a.box_v4, 5555));

    // Everything else is dropped: UDP to the host, to box B, QUIC, the
    // resolver port addressed directly (not redirected), ICMP and ICMPv6.
    for to in [
        sa(a.host_v4, 9999),
        sa(a.host_v4, 443),
        sa(b.box_v4, 9999),
        sa([1, 1, 1, 1], 443),
    ] {
        a_udp.send_to(b"leak", &to.into()).unwrap();
    }
    a_udp
        .send_to(b"direct", &sa(a.host_v4, RESOLVER).into())
        .unwrap();
    assert!(
        common::recv_within(&h.service_udp, QUICK).is_none(),
        "udp to host service"
    );
    assert!(common::recv_within(&b_udp, QUICK).is_none(), "udp to box b");
    // The direct datagram to the resolver port is not DNAT'ed: dropped.
    assert!(
        common::recv_within(&h.dns_udp4, QUICK).is_none(),
        "udp to resolver port direct"
    );
    assert!(
        !common::ping_from(&ns_a, IpAddr::V4(a.host_v4), QUICK),
        "ping host"
    );
    assert!(
        !common::ping_from(&ns_a, IpAddr::V6(a.host_v6), QUICK),
        "ping6 host"
    );
    assert!(
        !common::ping_from(&ns_a, IpAddr::V4(b.box_v4), QUICK),
        "ping box b"
    );
    assert!(
        !common::ping_from(&ns_a, IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)), QUICK),
        "ping out"
    );

    // Clean shutdown: the table goes, boxes are unfiltered again (and
    // would be torn down with it in the daemon).
    ruleset().remove(Some(host.as_fd())).await.expect("remove");
    assert!(
        common::ping_from(&ns_a, IpAddr::V4(a.host_v4), PATIENT),
        "ping after removal"
    );
}

fn a_udp_port(s: &Socket) -> u16 {
    s.local_addr().unwrap().as_socket().unwrap().port()
}

#[tokio::test(flavor = "current_thread")]
async fn lockdown_lets_boxes_reach_nothing_while_boxd_is_stopped() {
    skip_unless_capable!();
    let host = common::netns();
    common::sysctl_in(&host, "/proc/sys/net/ipv4/ip_forward", "1");
    let veths = Veths::new_in(AddressPlan::default(), host.as_fd()).expect("veths");
    let ns_a = common::netns();
    let a = veths.create(1, ns_a.as_fd()).await.expect("box a").addrs;
    let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let proxy = common::tcp_listener(&host, sa(any4, PROXY));
    let service = common::tcp_listener(&host, sa(any4, 2222));
    let rs = ruleset();
    rs.install(Some(host.as_fd())).await.expect("install");
    lands_on_proxy(&ns_a, &proxy, sa(Ipv4Addr::new(192, 0, 2, 1), 80));

    rs.lock_down(Some(host.as_fd())).await.expect("lock down");
    let text = rs
        .current(Some(host.as_fd()))
        .await
        .unwrap()
        .expect("table");
    assert!(!text.contains("redirect"), "{text}");
    for to in [
        sa(Ipv4Addr::new(192, 0, 2, 1), 80),
        sa(a.host_v4, 2222),
        sa(a.host_v4, PROXY),
    ] {
        assert!(
            common::connect_from(&ns_a, to, QUICK).is_err(),
            "{to} reachable in lockdown"
        );
    }
    nothing_pending(&proxy, "the proxy");
    nothing_pending(&service, "the host service");
    // The next start replaces the lockdown table whole.
    rs.install(Some(host.as_fd())).await.expect("reinstall");
    lands_on_proxy(&ns_a, &proxy, sa(Ipv4Addr::new(192, 0, 2, 1), 80));
    rs.remove(Some(host.as_fd())).await.expect("remove");
}
