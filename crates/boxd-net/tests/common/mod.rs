//! Test scaffolding: throwaway network namespaces that stand in for the
//! host and for boxes. Every namespace lives only as long as the fds
//! (and sockets) the test holds, so veths, addresses and the nftables
//! table inside disappear when the test ends, also on panic. The real
//! host's network namespace is never modified.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use boxd_net::netns::{new_netns, run_in};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The workspace's one skip helper (`tests/common/skip.rs`).
#[path = "../../../../tests/common/skip.rs"]
mod skip_helper;
pub use skip_helper::skip;

/// Why the test cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, veths, nftables)".into());
    }
    match std::process::Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("the nft binary is missing (apt-get install nftables)".into()),
    }
    let ns = match new_netns() {
        Ok(ns) => ns,
        Err(e) => return Some(format!("cannot make a network namespace: {e}")),
    };
    // nf_tables support in this kernel: list the (empty) ruleset there.
    let ok = std::process::Command::new("nft")
        .arg("list")
        .arg("ruleset")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    drop(ns);
    if !ok {
        return Some("nftables (nf_tables netlink) not usable".into());
    }
    None
}

macro_rules! skip_unless_capable {
    () => {
        if let Some(reason) = common::skip_reason() {
            return common::skip(&reason);
        }
    };
}
pub(crate) use skip_unless_capable;

pub fn netns() -> OwnedFd {
    new_netns().expect("new network namespace")
}

/// Makes a socket inside `ns`.
pub fn socket_in(ns: &OwnedFd, domain: Domain, ty: Type, proto: Option<Protocol>) -> Socket {
    run_in(ns.as_fd(), move || Socket::new(domain, ty, proto))
        .expect("enter netns")
        .expect("socket")
}

/// A listening TCP socket in `ns` on `addr` (IPv6 sockets are v6-only).
pub fn tcp_listener(ns: &OwnedFd, addr: SocketAddr) -> Socket {
    let s = socket_in(ns, Domain::for_address(addr), Type::STREAM, None);
    if addr.is_ipv6() {
        s.set_only_v6(true).unwrap();
    }
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into()).expect("bind listener");
    s.listen(16).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

pub fn udp_socket(ns: &OwnedFd, addr: SocketAddr) -> Socket {
    let s = socket_in(ns, Domain::for_address(addr), Type::DGRAM, None);
    if addr.is_ipv6() {
        s.set_only_v6(true).unwrap();
    }
    s.bind(&addr.into()).expect("bind udp");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Waits up to `timeout` for a connection on a non-blocking listener.
pub fn accept_within(l: &Socket, timeout: Duration) -> Option<(Socket, SockAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok(c) => return Some(c),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Connects from inside `ns` to `to`, bounded by `timeout`.
pub fn connect_from(ns: &OwnedFd, to: SocketAddr, timeout: Duration) -> std::io::Result<Socket> {
    let s = socket_in(ns, Domain::for_address(to), Type::STREAM, None);
    s.connect_timeout(&to.into(), timeout)?;
    Ok(s)
}

/// Receives one datagram within `timeout`.
pub fn recv_within(s: &Socket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    loop {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => {
                // SAFETY: recv_from initialised the first n bytes.
                let data = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                return Some((data, from.as_socket().expect("inet peer")));
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return None;
                }
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends an ICMP (or ICMPv6) echo request from inside `ns` to `to` and
/// says whether an echo reply came back within `timeout`.
pub fn ping_from(ns: &OwnedFd, to: std::net::IpAddr, timeout: Duration) -> bool {
    let (domain, proto, req, reply) = match to {
        std::net::IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        std::net::IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let s = socket_in(ns, domain, Type::RAW, Some(proto));
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut pkt = vec![req, 0, 0, 0, 0x12, 0x34, 0, 1, b'b', b'o', b'x', b'd'];
    if to.is_ipv4() {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // The kernel fills in the ICMPv6 checksum.
    s.send_to(&pkt, &SocketAddr::new(to, 0).into())
        .expect("send echo");
    let deadline = Instant::now() + timeout;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    while Instant::now() < deadline {
        match s.recv_from(&mut buf) {
            Ok((n, _)) => {
                // SAFETY: recv_from initialised the first n bytes.
                let data: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                // Raw IPv4 sockets see the IP header; IPv6 ones do not.
                let icmp = if to.is_ipv4() {
                    &data[(data[0] & 0x0f) as usize * 4..]
                } else {
                    &data[..]
                };
                if icmp.first() == Some(&reply) && icmp.get(4..6) == Some(&[0x12, 0x34]) {
                    return true;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv echo: {e}"),
        }
    }
    false
}

/// Writes a sysctl as seen from inside `ns`.
pub fn sysctl_in(ns: &OwnedFd, path: &str, value: &str) {
    let path = path.to_string();
    let value = value.to_string();
    run_in(ns.as_fd(), move || std::fs::write(&path, value))
        .expect("enter netns")
        .expect("write sysctl");
}

/// Brings the loopback interface of `ns` up, so 127.0.0.1 and ::1 work
/// there (a new namespace's `lo` is down).
pub fn lo_up(ns: &OwnedFd) {
    run_in(ns.as_fd(), || -> std::io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
        unsafe {
            if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .expect("enter netns")
    .expect("bring lo up");
}

/// A multi-thread tokio runtime whose every thread lives in `ns`: sockets
/// its tasks open (a proxy's upstream connections, test servers) belong
/// to that namespace. Only *spawned* tasks run there: `block_on` runs its
/// future on the calling thread, in the caller's namespace.
pub fn runtime_in(ns: &OwnedFd) -> tokio::runtime::Runtime {
    let fd = std::sync::Arc::new(ns.try_clone().expect("dup netns fd"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("runtime thread joins the network namespace");
        })
        .build()
        .expect("tokio runtime")
}
