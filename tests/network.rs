//! Box networking against a real `boxd serve`: every box reaches the
//! outside only through boxd's egress proxy and resolver, under its
//! allowNet / network policy, and nothing else — not the host, not
//! another box, not private or metadata ranges, not by UDP, ICMP, raw
//! sockets or its own routes. "The outside" is a set of loopback servers
//! this test starts (`common::outside`), reached through the daemon's
//! test-only `[network.upstreams]` names (the only way a name reaches a
//! host service) and a local upstream DNS server.

mod common;

use common::daemon::TestDaemon;
use common::outside::{BannerServer, DnsServer, HttpServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// In-box probes (python3 from the host image): one line of result each.
/// `ok:<bytes read>`, `dns:<error>` (name not resolved) or
/// `err:<exception>` (refused, reset, timed out, not permitted).
const PROBE: &str = r#"
import socket, struct, sys, os
def tcp(host, port, data="", fam="0", src=""):
    fam = {"0": 0, "4": socket.AF_INET, "6": socket.AF_INET6}[fam]
    try:
        af, st, pr, _, sa = socket.getaddrinfo(host, int(port), fam, socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        return "dns:%s" % e
    try:
        s = socket.socket(af, st, pr)
        s.settimeout(8)
        if src:
            s.bind((src, 0))
        s.connect(sa)
        if data:
            s.sendall(data.encode())
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if len(out) > 100000:
                break
        return "ok:" + out.decode(errors="replace")
    except Exception as e:
        return "err:%s:%s" % (type(e).__name__, e)
def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
    return "none"
def myaddr():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("198.18.0.53", 53))
    return s.getsockname()[0]
def udp(host, port, data):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.5)
        s.sendto(data.encode(), (host, int(port)))
        return "ok:%r" % (s.recvfrom(1500)[0],)
    except Exception as e:
        return "err:%s:%s" % (type(e).__name__, e)
def raw(kind):
    try:
        if kind == "packet":
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        else:
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        return "ok:raw socket made"
    except Exception as e:
        return "err:%s:%s" % (type(e).__name__, e)
def icmp(host):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        s.settimeout(1.5)
        s.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01pingpong", (host, 0))
        return "ok:%r" % (s.recvfrom(1500)[0],)
    except Exception as e:
        return "err:%s:%s" % (type(e).__name__, e)
def dnsq(server, name, qtype="1"):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", int(qtype), 1)
    try:
        s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(q, (server, 53))
        r = s.recvfrom(1500)[0]
        rcode = r[3] & 15
        an = struct.unpack(">H", r[6:8])[0]
        addrs = []
        if an and int(qtype) == 1:
            addrs.append(socket.inet_ntoa(r[-4:]))
        return "ok:rcode=%d answers=%d %s" % (rcode, an, " ".join(addrs))
    except Exception as e:
        return "err:%s:%s" % (type(e).__name__, e)
f = globals()[sys.argv[1]]
print(f(*sys.argv[2:]))
"#;

fn probe(d: &TestDaemon, id: &str, args: &[&str]) -> String {
    let mut cmd = vec!["python3", "-c", PROBE];
    cmd.extend_from_slice(args);
    let (status, v) = d.post(&format!("/v2/box/{id}/exec"), json!({ "command": cmd }));
    assert_eq!(status, 200, "exec: {v}");
    let out = v["output"].as_str().unwrap_or_default().trim().to_string();
    assert!(
        !out.is_empty(),
        "probe {args:?} printed nothing: {}",
        v["error"]
    );
    out
}

/// Reached the test server (and got its answer).
fn reached(r: &str) -> bool {
    r.starts_with("ok:") && r.len() > 3
}

/// Refused: never reached, and not by hanging until a timeout.
fn refused(r: &str) -> bool {
    !reached(r) && !r.contains("timed out")
}

struct Outside {
    http: HttpServer,
    banner: BannerServer,
    dns: DnsServer,
}

impl Outside {
    fn start() -> Outside {
        Outside {
            http: HttpServer::start(),
            banner: BannerServer::start(),
            dns: DnsServer::start(&[
                ("dns.example.test", Ipv4Addr::LOCALHOST),
                ("rebind.example.test", Ipv4Addr::new(169, 254, 169, 254)),
                ("private-dns.example.test", Ipv4Addr::new(10, 1, 2, 3)),
            ]),
        }
    }

    /// The daemon's `[network]` keys: loopback allowed (the servers live
    /// there), names pointed at them, the counting DNS server upstream.
    fn network_toml(&self) -> String {
        let http = self.http.addr;
        format!(
            "upstream_dns = [\"{}\"]\nallow_ranges = [\"127.0.0.0/8\"]\n\
             [network.upstreams]\n\
             \"api.example.test\" = \"{http}\"\n\
             \"other.example.test\" = \"{http}\"\n\
             \"allowed.test\" = \"{http}\"\n\
             \"sub.allowed.test\" = \"{http}\"\n\
             \"evilallowed.test\" = \"{http}\"\n\
             \"banner.example.test\" = \"{}\"\n\
             \"metadata.example.test\" = \"169.254.169.254:80\"\n\
             \"private.example.test\" = \"10.1.2.3:80\"\n",
            self.dns.addr, self.banner.addr
        )
    }

    fn daemon(&self) -> Option<TestDaemon> {
        TestDaemon::start_with_network(&self.network_toml())
    }
}

fn curl(d: &TestDaemon, id: &str, args: &str) -> (i64, String) {
    let (code, out, err) = d.sh(id, &format!("curl -sS --max-time 10 {args}"));
    (code, format!("{out}{err}"))
}

/// `url` (plain HTTP to a name the box's policy denies) is answered by
/// boxd's proxy with a 403 naming the policy and `rule`, never by the
/// server behind the name.
fn refused_by_policy(d: &TestDaemon, id: &str, url: &str, rule: &str) {
    let (code, out) = curl(d, id, &format!("-i {url}"));
    assert_eq!(code, 0, "{url}: {out}");
    assert!(out.starts_with("HTTP/1.1 403 Forbidden"), "{url}: {out}");
    assert!(
        out.contains("is denied by this box's network policy")
            && out.contains(&format!("(rule: {rule}")),
        "{url}: {out}"
    );
    assert!(!out.contains("hello"), "{url}: {out}");
}

/// Audit events of `kind` for a box.
fn events(d: &TestDaemon, id: &str, kind: &str) -> Vec<Value> {
    // Network events are written in batches right after the fact.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, v) = d.get(&format!("/v2/audit?box={id}&kind={kind}&limit=1000"));
        assert_eq!(status, 200, "{v}");
        let list = v["events"].as_array().cloned().unwrap_or_default();
        if !list.is_empty() || Instant::now() > deadline {
            return list;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn allowed_names_are_reached_through_the_proxy_and_nothing_else_is() {
    let outside = Outside::start();
    let Some(d) = outside.daemon() else { return };
    let id = d.create(json!({
        "allow_net": ["api.example.test", "*.allowed.test", "banner.example.test",
                      "dns.example.test"]
    }));
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    assert_eq!(
        v["allow_net"],
        json!([
            "api.example.test",
            "*.allowed.test",
            "banner.example.test",
            "dns.example.test"
        ])
    );

    // The box's resolver answers allowed names with synthetic addresses.
    let (code, out, _) = d.sh(&id, "getent ahostsv4 api.example.test | head -1");
    assert_eq!(code, 0);
    assert!(out.starts_with("198.18."), "{out}");
    let (code, out, _) = d.sh(&id, "getent ahostsv6 api.example.test | head -1");
    assert_eq!(code, 0);
    assert!(out.starts_with("fd42:b0c5:ff::"), "{out}");

    // Real clients reach the allowed name.
    let (code, out) = curl(&d, &id, "http://api.example.test/");
    assert_eq!((code, out.as_str()), (0, "hello api.example.test"));
    let (code, out) = curl(&d, &id, "-6 http://api.example.test/x");
    assert_eq!((code, out.as_str()), (0, "hello api.example.test"), "IPv6");
    let (code, out, err) = d.sh(
        &id,
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://api.example.test/', timeout=10).read().decode())\"",
    );
    assert_eq!((code, out.trim()), (0, "hello api.example.test"), "{err}");
    if std::path::Path::new("/usr/bin/node").exists() {
        let (code, out, err) = d.sh(
            &id,
            "node -e \"fetch('http://api.example.test/').then(r => r.text()).then(t => console.log(t))\"",
        );
        assert_eq!((code, out.trim()), (0, "hello api.example.test"), "{err}");
    } else {
        common::skip("(part) node is not installed on this host, so not inside boxes either");
    }

    // `*.allowed.test` is any subdomain, never the apex or a lookalike.
    assert_eq!(curl(&d, &id, "http://sub.allowed.test/").0, 0);
    for denied in ["allowed.test", "evilallowed.test", "other.example.test"] {
        refused_by_policy(
            &d,
            &id,
            &format!("http://{denied}/"),
            "allow_net: no rule matches",
        );
    }
    // A denied name resolves (to a synthetic address, never asked
    // upstream); a connection that is neither TLS nor HTTP is reset, and
    // one to an address the resolver never gave out is reset at once.
    let r = probe(&d, &id, &["tcp", "other.example.test", "80"]);
    assert!(refused(&r), "{r}");
    let r = probe(
        &d,
        &id,
        &["tcp", "198.18.200.1", "80", "GET / HTTP/1.0\r\n\r\n"],
    );
    assert!(refused(&r), "{r}");

    // Any TCP protocol, including ones where the server speaks first.
    let r = probe(&d, &id, &["tcp", "banner.example.test", "25", "HELO\r\n"]);
    assert_eq!(r, "ok:220 banner-first\r\nHELO", "{r}");

    // A name resolved by the upstream DNS server (no override) to a host
    // address: only an operator's override points a name at a host
    // service, so it is refused after resolution.
    let port = outside.http.addr.port().to_string();
    let (code, out) = curl(&d, &id, &format!("http://dns.example.test:{port}/"));
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("hello"), "{out}");
    assert!(outside.dns.asked().iter().any(|n| n == "dns.example.test"));

    // Every connection and DNS answer is audited, allowed and denied.
    let conns = events(&d, &id, "net.connect");
    let allowed = conns
        .iter()
        .find(|e| e["data"]["name"] == "api.example.test" && e["data"]["decision"] == "allow")
        .unwrap_or_else(|| panic!("no allowed connection event: {conns:?}"));
    assert!(allowed["data"]["bytes_down"].as_u64().unwrap_or(0) > 0);
    assert_eq!(allowed["data"]["port"], 80);
    assert!(
        conns.iter().any(|e| e["data"]["decision"] == "deny"),
        "{conns:?}"
    );
    assert!(
        conns.iter().any(|e| e["data"]["name"] == "dns.example.test"
            && e["data"]["decision"] == "deny"
            && e["data"]["rule"] == "host address 127.0.0.1: local to the host"),
        "{conns:?}"
    );
    let dns = events(&d, &id, "net.dns");
    assert!(dns
        .iter()
        .any(|e| e["data"]["name"] == "other.example.test" && e["data"]["decision"] == "deny"));
    let (_, logs) = d.get(&format!("/v2/box/{id}/logs?limit=1000"));
    let text = logs.to_string();
    assert!(
        text.contains("connect api.example.test:80: allow"),
        "{text}"
    );
}

#[test]
fn policies_deny_all_custom_cidrs_and_live_changes() {
    let outside = Outside::start();
    let Some(d) = outside.daemon() else { return };
    let id = d.create(json!({"network_policy": {"mode": "deny-all"}}));
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    assert_eq!(v["network_policy"]["mode"], "deny-all");
    refused_by_policy(
        &d,
        &id,
        "http://api.example.test/",
        "network_policy deny-all",
    );
    let r = probe(&d, &id, &["tcp", "198.18.1.0", "80"]);
    assert!(refused(&r), "{r}");

    let put = |body: Value| {
        d.call(
            Method::PUT,
            &format!("/v2/box/{id}/config/network-policy"),
            Some(body),
        )
    };
    // Custom: only the listed domain.
    let (status, v) = put(
        json!({"mode": "custom", "allowed_domains": ["api.example.test"],
                                 "allowed_cidrs": null, "denied_cidrs": null}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["network_policy"]["mode"], "custom");
    assert_eq!(curl(&d, &id, "http://api.example.test/").0, 0);
    refused_by_policy(
        &d,
        &id,
        "http://other.example.test/",
        "network_policy custom: no allowed_domains entry matches the name",
    );

    // A denied CIDR wins over an allowed name that resolves into it.
    let (status, v) = put(
        json!({"mode": "custom", "allowed_domains": ["api.example.test"],
                                 "denied_cidrs": ["127.0.0.0/8"]}),
    );
    assert_eq!(status, 200, "{v}");
    let (code, out) = curl(&d, &id, "http://api.example.test/");
    assert_ne!(code, 0, "{out}");

    // Bad rules are refused with the reason, and change nothing.
    for bad in [
        json!({"mode": "custom", "allowed_domains": ["0177.0.0.1"]}),
        json!({"mode": "custom", "allowed_domains": ["a%2e.example"]}),
        json!({"mode": "custom", "allowed_cidrs": ["127.1/8"]}),
        json!({"mode": "sometimes"}),
        // A missing or empty policy never reads as allow-all.
        Value::Null,
        json!({}),
        json!({"allowed_domains": ["api.example.test"]}),
    ] {
        let (status, v) = put(bad.clone());
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    assert_eq!(v["network_policy"]["denied_cidrs"], json!(["127.0.0.0/8"]));
    for bad in [
        json!(["127.1"]),
        json!(["2130706433"]),
        json!(["x@evil.test"]),
        json!(["a\u{0}b.test"]),
    ] {
        let (status, v) = d.post("/v2/box", json!({"allow_net": bad}));
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().contains("allow_net"), "{v}");
    }

    // Back to allow-all: the next connection goes through.
    let (status, _) = put(json!({"mode": "allow-all"}));
    assert_eq!(status, 200);
    assert_eq!(curl(&d, &id, "http://other.example.test/").0, 0);
}

#[test]
fn escape_attempts_reach_nothing() {
    let outside = Outside::start();
    let Some(d) = outside.daemon() else { return };
    // A host service on every host address, including the box's gateway.
    let host_tcp = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_tcp.local_addr().unwrap().port().to_string();
    host_tcp.set_nonblocking(true).unwrap();
    let host_udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    let udp_port = host_udp.local_addr().unwrap().port().to_string();
    host_udp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let a = d.create(json!({}));
    let b = d.create(json!({}));
    let restricted = d.create(json!({"allow_net": ["api.example.test"]}));
    let gw = probe(&d, &a, &["gateway"]);
    assert!(gw.starts_with("10."), "{gw}");

    // The host: its veth address and the box's own loopback.
    for (host, port) in [(gw.as_str(), host_port.as_str()), ("127.0.0.1", &host_port)] {
        let r = probe(&d, &a, &["tcp", host, port, "x"]);
        assert!(refused(&r), "{host}:{port} {r}");
    }
    assert!(
        host_tcp.accept().is_err(),
        "the host service saw a connection"
    );
    // Another box, by its address.
    let (code, _, _) = d.sh(
        &b,
        "nohup python3 -m http.server 8080 >/dev/null 2>&1 & sleep 0.5",
    );
    assert_eq!(code, 0);
    let b_addr = probe(&d, &b, &["myaddr"]);
    let r = probe(
        &d,
        &b,
        &["tcp", "127.0.0.1", "8080", "GET / HTTP/1.0\r\n\r\n"],
    );
    assert!(reached(&r), "box b's own server works: {r}");
    let r = probe(&d, &a, &["tcp", &b_addr, "8080", "GET / HTTP/1.0\r\n\r\n"]);
    assert!(refused(&r), "box to box: {r}");
    // Metadata and private ranges, directly and through names resolving
    // into them (an operator override and upstream DNS: rebinding).
    for (host, port) in [
        ("169.254.169.254", "80"),
        ("10.1.2.3", "80"),
        ("192.168.1.1", "80"),
        ("fd00:ec2::254", "80"),
        ("metadata.example.test", "80"),
        ("private.example.test", "80"),
        ("rebind.example.test", "80"),
        ("private-dns.example.test", "80"),
    ] {
        let r = probe(&d, &a, &["tcp", host, port, "GET / HTTP/1.0\r\n\r\n"]);
        assert!(refused(&r), "{host}: {r}");
    }
    // UDP and ICMP go nowhere; raw sockets are not even made.
    let r = probe(&d, &a, &["udp", &gw, &udp_port, "hello"]);
    assert!(!r.starts_with("ok:"), "{r}");
    let mut buf = [0u8; 64];
    assert!(
        host_udp.recv_from(&mut buf).is_err(),
        "UDP reached the host"
    );
    let r = probe(&d, &a, &["udp", "192.0.2.1", "443", "quic"]);
    assert!(!r.starts_with("ok:"), "{r}");
    assert!(!probe(&d, &a, &["icmp", &gw]).starts_with("ok:"));
    assert!(probe(&d, &a, &["raw", "icmp"]).contains("PermissionError"));
    assert!(probe(&d, &a, &["raw", "packet"]).contains("PermissionError"));

    // DNS "to 8.8.8.8" is answered by boxd's resolver (synthetic
    // addresses), under the box's policy: a label under a denied name
    // never leaves the host, and DoT to a public resolver is refused.
    let r = probe(&d, &a, &["dnsq", "8.8.8.8", "api.example.test"]);
    assert!(r.starts_with("ok:rcode=0 answers=1 198.18."), "{r}");
    // (A denied name gets a synthetic address like any other; the
    // connection to it is refused by the proxy.)
    let r = probe(
        &d,
        &restricted,
        &["dnsq", "8.8.8.8", "exfil-c2VjcmV0.other.example.test"],
    );
    assert!(r.starts_with("ok:rcode=0 answers=1 198.18."), "{r}");
    let r = probe(
        &d,
        &restricted,
        &["dnsq", "1.1.1.1", "exfil-2.other.example.test", "65"],
    );
    assert!(r.starts_with("ok:rcode=0 answers=0"), "{r}");
    assert!(
        !outside.dns.asked().iter().any(|n| n.contains("exfil")),
        "a denied name reached upstream DNS: {:?}",
        outside.dns.asked()
    );
    let r = probe(&d, &restricted, &["tcp", "8.8.8.8", "853", "x"]);
    assert!(refused(&r), "DoT: {r}");

    // Root in the box cannot rewrite its network (the box's network
    // namespace belongs to the host's user namespace), and whatever it
    // tries, its traffic still goes only where the policy says.
    if std::path::Path::new("/usr/sbin/ip").exists() || std::path::Path::new("/usr/bin/ip").exists()
    {
        for cmd in [
            "ip route flush table main",
            "ip route replace default dev eth0",
            "ip addr add 10.250.0.9/32 dev eth0",
            "ip link set eth0 down",
            "nft flush ruleset",
        ] {
            let (code, _, err) = d.sh(&restricted, &format!("id -u; {cmd}"));
            assert_ne!(code, 0, "{cmd} succeeded as box root");
            assert!(
                err.contains("not permitted")
                    || err.contains("Permission denied")
                    || err.contains("not found"),
                "{cmd}: {err}"
            );
        }
    } else {
        common::skip(
            "(part) no `ip` binary on this host, so box root cannot try to rewrite its routes",
        );
    }
    let (code, out, _) = d.sh(&restricted, "id -u");
    assert_eq!(
        (code, out.trim()),
        (0, "0"),
        "the box's commands run as its root"
    );
    let r = probe(
        &d,
        &restricted,
        &["tcp", &gw, &host_port, "x", "4", "10.250.0.9"],
    );
    assert!(refused(&r), "a source address the box does not own: {r}");
    refused_by_policy(
        &d,
        &restricted,
        "http://other.example.test/",
        "allow_net: no rule matches",
    );
    let (code, out) = curl(&d, &restricted, "http://api.example.test/");
    assert_eq!((code, out.as_str()), (0, "hello api.example.test"));
    let listed = std::process::Command::new("nft")
        .args(["list", "table", "inet", &d.nft_table])
        .output()
        .unwrap();
    assert!(listed.status.success(), "the host table is intact");
}

fn box_links(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

fn nft_table(table: &str) -> Option<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Rule text without the packet counters.
fn rules(text: &str) -> String {
    text.lines()
        .map(|l| match l.find(" counter packets") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn two_hundred_boxes_created_and_destroyed_leave_nothing_behind() {
    let outside = Outside::start();
    let Some(mut d) = outside.daemon() else {
        return;
    };
    let table_before = rules(&nft_table(&d.nft_table).expect("table installed"));
    let d_ref = &d;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(move || {
                for _ in 0..50 {
                    let id = d_ref.create(json!({"allow_net": ["api.example.test"]}));
                    let (status, v) = d_ref.delete(&format!("/v2/box/{id}"));
                    assert_eq!(status, 200, "{v}");
                }
            });
        }
    });
    // Veths go with their boxes' network namespaces (the kernel reaps
    // those asynchronously).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !box_links(&d.ifname_prefix).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(box_links(&d.ifname_prefix), Vec::<String>::new());
    assert_eq!(
        rules(&nft_table(&d.nft_table).expect("table still there")),
        table_before,
        "no rule was added per box"
    );
    // A box still works after all that churn.
    let id = d.create(json!({"allow_net": ["api.example.test"]}));
    assert_eq!(curl(&d, &id, "http://api.example.test/").0, 0);
    d.delete(&format!("/v2/box/{id}"));
    d.stop();
    assert_eq!(
        nft_table(&d.nft_table),
        None,
        "a clean shutdown with no boxes removes the table"
    );
}

#[test]
fn box_networks_survive_daemon_restarts_and_crashes() {
    let outside = Outside::start();
    let Some(mut d) = outside.daemon() else {
        return;
    };
    let id = d.create(json!({"allow_net": ["api.example.test"]}));
    assert_eq!(curl(&d, &id, "http://api.example.test/").0, 0);

    d.stop();
    // Boxes keep running while boxd is down; they reach nothing.
    let lockdown = nft_table(&d.nft_table).expect("a running box keeps a lockdown table");
    assert!(!lockdown.contains("redirect"), "{lockdown}");
    d.start_again();
    let (code, out) = curl(&d, &id, "http://api.example.test/");
    assert_eq!((code, out.as_str()), (0, "hello api.example.test"));
    refused_by_policy(
        &d,
        &id,
        "http://other.example.test/",
        "allow_net: no rule matches",
    );

    d.kill9();
    d.start_again();
    let (code, out) = curl(&d, &id, "http://api.example.test/");
    assert_eq!((code, out.as_str()), (0, "hello api.example.test"));
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    assert_eq!(v["allow_net"], json!(["api.example.test"]));
    refused_by_policy(
        &d,
        &id,
        "http://other.example.test/",
        "allow_net: no rule matches",
    );
}

/// The address this host sends from on its default route (its main
/// address), or `None` without one. No packet is sent.
fn host_main_v4() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("1.1.1.1:53").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => Some(a),
        _ => None,
    }
}

#[test]
fn a_box_without_a_policy_never_reaches_the_hosts_own_addresses() {
    let Some(main) = host_main_v4() else {
        return common::skip("this host has no IPv4 default route (no main address)");
    };
    // A host service on the host's main address.
    let host_tcp = TcpListener::bind((main, 0)).unwrap();
    host_tcp.set_nonblocking(true).unwrap();
    let port = host_tcp.local_addr().unwrap().port().to_string();
    let outside = Outside {
        http: HttpServer::start(),
        banner: BannerServer::start(),
        dns: DnsServer::start(&[("host.example.test", main)]),
    };
    // The operator opens the main address's range (as one opening a LAN
    // would; a public main address is open anyway): only the
    // host-address check stands between a box and the host's services.
    let toml = outside.network_toml().replace(
        "allow_ranges = [\"127.0.0.0/8\"]",
        &format!("allow_ranges = [\"127.0.0.0/8\", \"{main}/32\"]"),
    );
    let Some(d) = TestDaemon::start_with_network(&toml) else {
        return;
    };
    let id = d.create(json!({}));
    let req = "GET / HTTP/1.0\r\n\r\n";
    let mapped = format!("::ffff:{main}");
    for host in [
        main.to_string().as_str(),
        mapped.as_str(),
        "host.example.test",
    ] {
        let r = probe(&d, &id, &["tcp", host, &port, req]);
        assert!(refused(&r), "{host}: {r}");
    }
    assert!(
        host_tcp.accept().is_err(),
        "the host service saw a connection"
    );
    // The name was resolved upstream, and refused after resolution.
    assert!(outside.dns.asked().iter().any(|n| n == "host.example.test"));
    let rule = format!("host address {main}: local to the host");
    let conns = events(&d, &id, "net.connect");
    let refusals: Vec<&Value> = conns
        .iter()
        .filter(|e| e["data"]["decision"] == "deny" && e["data"]["rule"] == rule.as_str())
        .collect();
    assert_eq!(refusals.len(), 3, "{conns:?}");
    assert!(
        refusals
            .iter()
            .any(|e| e["data"]["name"] == "host.example.test"),
        "{conns:?}"
    );
    // The operator's upstream override still reaches a local test server.
    let (code, out) = curl(&d, &id, "http://api.example.test/");
    assert_eq!((code, out.as_str()), (0, "hello api.example.test"));
}

#[test]
fn denied_names_fail_at_the_tls_handshake_or_get_a_403_and_never_reach_upstream_dns() {
    let outside = Outside::start();
    let Some(d) = outside.daemon() else { return };
    let id = d.create(json!({"network_policy": {"mode": "deny-all"}}));
    // TLS: the handshake fails (curl: SSL connect error).
    let (code, out) = curl(&d, &id, "https://denied.example/");
    assert_eq!(code, 35, "{out}");
    // Plain HTTP: a 403 naming the policy and its rule.
    refused_by_policy(&d, &id, "http://denied.example/", "network_policy deny-all");
    // The name resolved in the box (a synthetic address) without
    // upstream DNS ever seeing it.
    let (code, out, _) = d.sh(&id, "getent ahostsv4 denied.example | head -1");
    assert_eq!(code, 0);
    assert!(out.starts_with("198.18."), "{out}");
    assert!(
        !outside
            .dns
            .asked()
            .iter()
            .any(|n| n.contains("denied.example")),
        "a denied name reached upstream DNS: {:?}",
        outside.dns.asked()
    );
    // Each refusal is audited with the rule that matched.
    let conns = events(&d, &id, "net.connect");
    for protocol in ["tls", "http"] {
        assert!(
            conns.iter().any(|e| e["data"]["name"] == "denied.example"
                && e["data"]["protocol"] == protocol
                && e["data"]["decision"] == "deny"
                && e["data"]["rule"] == "network_policy deny-all"),
            "{protocol}: {conns:?}"
        );
    }
    let dns = events(&d, &id, "net.dns");
    assert!(
        dns.iter().any(|e| e["data"]["name"] == "denied.example"
            && e["data"]["decision"] == "deny"
            && e["data"]["rule"] == "network_policy deny-all"),
        "{dns:?}"
    );
}
