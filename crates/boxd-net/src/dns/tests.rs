//! The resolver's answers, from wire bytes in to wire bytes out, against
//! a counting fake upstream on loopback.
//! Never a real upstream: nothing leaves the machine.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::testdns::FakeUpstream;
use super::*;
use crate::addr::AddressPlan;
use crate::events::{DnsEvent, EventStream, NetEvent};
use crate::policy::{AllowNet, EgressPolicy, OperatorNet};
use crate::synth::{is_synthetic, MAX_NAMES_PER_BOX};
use crate::upstream::{UpstreamConfig, UpstreamTarget, Upstreams};

const WWW: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

struct Env {
    resolver: Resolver,
    net: Arc<BoxNet>,
    events: EventStream,
    upstream: FakeUpstream,
}

fn policy(allow: &[&str]) -> EgressPolicy {
    EgressPolicy::new(
        Some(AllowNet::parse(allow).unwrap()),
        None,
        OperatorNet::default(),
    )
}

async fn env_with(policy: EgressPolicy, overrides: &[&str]) -> Env {
    let upstream = FakeUpstream::start(&[
        ("www.example.com", WWW),
        ("api.example.com", Ipv4Addr::new(93, 184, 216, 35)),
        ("a.b.example.com", Ipv4Addr::new(93, 184, 216, 36)),
        ("example.com", Ipv4Addr::new(93, 184, 216, 37)),
        ("evilexample.com", Ipv4Addr::new(6, 6, 6, 6)),
    ])
    .await;
    let mut config = UpstreamConfig {
        dns: vec![upstream.addr],
        overrides: BTreeMap::new(),
    };
    for o in overrides {
        config.overrides.insert(
            HostName::parse(o).unwrap(),
            UpstreamTarget {
                ip: Ipv4Addr::LOCALHOST.into(),
                port: Some(9443),
            },
        );
    }
    let plan = AddressPlan::default();
    let registry = Arc::new(Registry::new(plan));
    let net = Arc::new(BoxNet::new("box-1", plan.slot(1).unwrap(), policy));
    registry.insert(net.clone());
    let (sink, events) = EventSink::channel(4096);
    let resolver = Resolver::new(registry, Arc::new(Upstreams::new(config).unwrap()), sink);
    Env {
        resolver,
        net,
        events,
        upstream,
    }
}

async fn env(allow: &[&str]) -> Env {
    env_with(policy(allow), &[]).await
}

fn query_msg(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    query_msg(name, t).to_vec().unwrap()
}

/// A query built byte by byte: labels may hold any byte.
fn raw_query(labels: &[&[u8]], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in labels {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    q
}

impl Env {
    async fn ask(&mut self, q: &[u8]) -> (Option<Message>, DnsEvent) {
        let reply = self.resolver.answer(&self.net, q).await;
        let event = match self.events.try_recv() {
            Ok(NetEvent::Dns(e)) => e,
            other => panic!("expected one DNS event, got {other:?}"),
        };
        assert!(self.events.try_recv().is_err(), "more than one event");
        let reply = reply.map(|r| Message::from_vec(&r).expect("the answer decodes"));
        (reply, event)
    }

    async fn ask_name(&mut self, name: &str, t: RecordType) -> (Message, DnsEvent) {
        let (r, e) = self.ask(&query(name, t)).await;
        (r.expect("an answer"), e)
    }
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn allowed_name_gets_stable_synthetic_a_and_aaaa() {
    let mut e = env(&["*.example.com"]).await;
    let (r, ev) = e.ask_name("www.example.com.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.metadata.id, 0x4242);
    assert!(r.metadata.recursion_desired && r.metadata.recursion_available);
    assert_eq!(
        r.queries,
        query_msg("www.example.com.", RecordType::A).queries
    );
    let v4 = ips(&r);
    assert_eq!(v4.len(), 1);
    assert!(is_synthetic(v4[0]) && v4[0].is_ipv4(), "{v4:?}");
    assert_ne!(v4[0], IpAddr::V4(WWW), "never the real address");
    assert_eq!(r.answers[0].ttl, ANSWER_TTL);
    assert_eq!(
        e.net.name_of(v4[0]).unwrap().as_str(),
        "www.example.com",
        "the proxy maps it back"
    );
    assert_eq!(
        ev,
        DnsEvent {
            box_id: "box-1".into(),
            name: "www.example.com".into(),
            qtype: "A".into(),
            decision: "allow".into(),
            rule: "allow_net \"*.example.com\"".into(),
            rcode: "NOERROR".into(),
            answers: v4.clone(),
        }
    );

    // AAAA: synthetic too, although upstream has only an A record.
    let (r, ev) = e.ask_name("www.example.com.", RecordType::AAAA).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let v6 = ips(&r);
    assert!(
        v6.len() == 1 && v6[0].is_ipv6() && is_synthetic(v6[0]),
        "{v6:?}"
    );
    assert_eq!(ev.answers, v6);
    assert_eq!(e.net.name_of(v6[0]).unwrap().as_str(), "www.example.com");

    // Stable, whatever the spelling; the owner name echoes the case asked.
    let (r, _) = e.ask_name("WWW.Example.COM.", RecordType::A).await;
    assert_eq!(ips(&r), v4);
    assert_eq!(r.answers[0].name.to_ascii(), "WWW.Example.COM.");
    // Another name, another address.
    let (r, _) = e.ask_name("api.example.com.", RecordType::A).await;
    assert_ne!(ips(&r), v4);
    assert!(is_synthetic(ips(&r)[0]));
    // Upstream was asked exactly the allowed names (A and AAAA), cached.
    assert_eq!(e.upstream.names(), ["api.example.com", "www.example.com"]);
    assert!(e.upstream.asked().len() <= 4, "{:?}", e.upstream.asked());
}

#[tokio::test(flavor = "current_thread")]
async fn denied_names_get_synthetic_addresses_and_never_reach_upstream() {
    let mut e = env(&["*.example.com"]).await;
    let exfil = [
        "c2VjcmV0LWtleS0xMjM0NTY3ODkw.attacker.net.",
        "secret-data.evil.com.",
        // The allowed suffix in the middle does not make it allowed.
        "www.example.com.attacker.net.",
        "aws-key-akia1234.example.org.",
    ];
    for name in exfil {
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::HTTPS,
            RecordType::MX,
            RecordType::ANY,
        ] {
            let (r, ev) = e.ask_name(name, t).await;
            // Answered as an allowed name would be (the proxy refuses
            // the connection), without asking upstream whether it exists.
            let (rcode, answers) = match t {
                RecordType::A | RecordType::AAAA => (ResponseCode::NoError, 1),
                RecordType::ANY => (ResponseCode::NotImp, 0),
                _ => (ResponseCode::NoError, 0),
            };
            assert_eq!(r.metadata.response_code, rcode, "{name} {t}");
            let got = ips(&r);
            assert_eq!(got.len(), answers, "{name} {t}: {got:?}");
            for ip in &got {
                assert!(is_synthetic(*ip), "{ip}");
                let back = e.net.name_of(*ip).unwrap();
                assert_eq!(
                    back.as_str(),
                    name.trim_end_matches('.').to_ascii_lowercase()
                );
            }
            assert_eq!(ev.answers, got);
            assert_eq!(ev.decision, "deny");
            assert_eq!(
                ev.rcode,
                if answers == 0 && t == RecordType::ANY {
                    "NOTIMP"
                } else {
                    "NOERROR"
                }
            );
            assert_eq!(ev.rule, "allow_net: no rule matches the name");
            assert_eq!(ev.name, name.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    assert!(e.upstream.asked().is_empty(), "{:?}", e.upstream.asked());
    // The counter works: an allowed name does reach it.
    let (r, _) = e.ask_name("www.example.com.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(e.upstream.names(), ["www.example.com"]);
}

#[tokio::test(flavor = "current_thread")]
async fn wildcard_answers_subdomains_only() {
    let mut e = env(&["*.example.com"]).await;
    for name in ["example.com.", "evilexample.com.", "example.com.evil."] {
        let (r, ev) = e.ask_name(name, RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(ev.decision, "deny", "{name}");
    }
    assert!(e.upstream.asked().is_empty(), "{:?}", e.upstream.asked());
    let (r, _) = e.ask_name("a.b.example.com.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(e.upstream.names(), ["a.b.example.com"]);
}

#[tokio::test(flavor = "current_thread")]
async fn other_types_are_nodata_and_not_asked_upstream() {
    let mut e = env(&["*.example.com"]).await;
    for t in [
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::MX,
        RecordType::TXT,
        RecordType::CNAME,
        RecordType::SRV,
        RecordType::NS,
        RecordType::CAA,
        RecordType::Unknown(65280),
    ] {
        let (r, ev) = e.ask_name("www.example.com.", t).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(r.answers.is_empty(), "{t}: {:?}", r.answers);
        assert_eq!(
            (ev.decision.as_str(), ev.rcode.as_str()),
            ("allow", "NOERROR")
        );
    }
    let (_, ev) = e
        .ask_name("www.example.com.", RecordType::Unknown(65280))
        .await;
    assert_eq!(ev.qtype, "TYPE65280");
    let (r, ev) = e.ask_name("www.example.com.", RecordType::ANY).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(ev.rcode, "NOTIMP");
    assert!(e.upstream.asked().is_empty(), "{:?}", e.upstream.asked());
}

#[tokio::test(flavor = "current_thread")]
async fn reverse_lookups_are_nodata() {
    // No policy: every public name may be answered; PTR is NODATA.
    let mut e = env_with(EgressPolicy::default(), &[]).await;
    let (r, ev) = e
        .ask_name("1.0.18.198.in-addr.arpa.", RecordType::PTR)
        .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(ev.decision, "allow");
    // A restricting policy: NODATA too, and a deny in the event.
    let mut e = env(&["*.example.com"]).await;
    let (r, ev) = e
        .ask_name("1.0.18.198.in-addr.arpa.", RecordType::PTR)
        .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(ev.decision, "deny");
    assert!(e.upstream.asked().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn upstream_decides_existence() {
    let mut e = env(&["*.example.com"]).await;
    let (r, ev) = e.ask_name("missing.example.com.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty());
    assert_eq!(
        (ev.decision.as_str(), ev.rcode.as_str()),
        ("allow", "NXDOMAIN")
    );
    assert!(ev.rule.contains("NXDOMAIN"), "{}", ev.rule);
    let (r, ev) = e.ask_name("servfail.example.com.", RecordType::AAAA).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ev.rcode, "SERVFAIL");
    assert_eq!(
        e.upstream.names(),
        ["missing.example.com", "servfail.example.com"]
    );
    // Neither consumed a synthetic address: the first answered name
    // gets the first one.
    let (r, _) = e.ask_name("www.example.com.", RecordType::A).await;
    assert_eq!(ips(&r), [IpAddr::V4(Ipv4Addr::new(198, 18, 1, 0))]);
}

#[tokio::test(flavor = "current_thread")]
async fn overrides_exist_without_upstream() {
    let mut e = env_with(policy(&["api.example.test"]), &["api.example.test"]).await;
    let (r, _) = e.ask_name("api.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(is_synthetic(ips(&r)[0]));
    assert!(e.upstream.asked().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_upstream_is_answered_servfail() {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead); // nothing listens there now (UDP or TCP)
    let plan = AddressPlan::default();
    let registry = Arc::new(Registry::new(plan));
    let net = Arc::new(BoxNet::new(
        "box-1",
        plan.slot(1).unwrap(),
        policy(&["*.example.com"]),
    ));
    registry.insert(net.clone());
    let (sink, mut events) = EventSink::channel(16);
    let up = Upstreams::new(UpstreamConfig {
        dns: vec![addr],
        overrides: BTreeMap::new(),
    })
    .unwrap();
    let resolver = Resolver::new(registry, Arc::new(up), sink);
    let r = resolver
        .answer(&net, &query("www.example.com.", RecordType::A))
        .await
        .unwrap();
    let r = Message::from_vec(&r).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(r.answers.is_empty());
    let Ok(NetEvent::Dns(ev)) = events.try_recv() else {
        panic!("no event")
    };
    assert_eq!(
        (ev.decision.as_str(), ev.rcode.as_str()),
        ("allow", "SERVFAIL")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn invalid_names_are_nxdomain_and_never_upstream() {
    let mut e = env_with(EgressPolicy::default(), &[]).await;
    let cases: &[(&[&[u8]], &str)] = &[
        // A dot inside a label: as text it would read "evil.com.example.com".
        (
            &[b"evil.com", b"example", b"com"],
            "evil\\046com.example.com",
        ),
        (&[b"evil\0", b"example", b"com"], "evil\\000.example.com"),
        (&[b"*", b"example", b"com"], "\\042.example.com"),
        (&[b"a b", b"example", b"com"], "a\\032b.example.com"),
        (
            &[b"caf\xc3\xa9", b"example", b"com"],
            "caf\\195\\169.example.com",
        ),
        (&[b"1", b"2", b"3", b"4"], "1.2.3.4"),
        (&[b"127", b"1"], "127.1"),
        (&[b"2130706433"], "2130706433"),
        (&[b"xn--", b"example", b"com"], "xn--.example.com"),
        (&[], ""),
    ];
    for (labels, shown) in cases {
        for t in [1u16, 28, 65] {
            let (r, ev) = e.ask(&raw_query(labels, t, 1)).await;
            let r = r.expect("an answer");
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{shown}");
            assert_eq!(r.metadata.id, 0x1234);
            assert_eq!(ev.decision, "deny", "{shown}");
            assert!(ev.rule.starts_with("invalid name"), "{shown}: {}", ev.rule);
            assert_eq!(ev.name, *shown);
        }
    }
    // A 63-byte label of digits and letters is fine: the control.
    let long = [b'a'; 63];
    let (r, _) = e.ask(&raw_query(&[&long, b"example", b"com"], 16, 1)).await;
    assert_eq!(r.unwrap().metadata.response_code, ResponseCode::NoError);
    assert!(e.upstream.asked().is_empty(), "{:?}", e.upstream.asked());
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_and_unsupported_queries() {
    let mut e = env(&["*.example.com"]).await;
    // Too short for an id, or a response: no answer, still an event.
    for q in [&b""[..], &[0u8; 11][..]] {
        let (r, ev) = e.ask(q).await;
        assert!(r.is_none());
        assert_eq!(ev.decision, "deny");
    }
    let mut resp = query("www.example.com.", RecordType::A);
    resp[2] |= 0x80;
    assert!(e.ask(&resp).await.0.is_none());

    let rcode = |r: Option<Message>| r.expect("an answer").metadata.response_code;
    // Opcodes other than QUERY.
    for op in [OpCode::Notify, OpCode::Update, OpCode::Status] {
        let mut m = query_msg("www.example.com.", RecordType::A);
        m.metadata.op_code = op;
        let (r, ev) = e.ask(&m.to_vec().unwrap()).await;
        let r = r.unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "{op:?}");
        assert_eq!(r.metadata.id, 0x4242);
        assert_eq!(ev.rcode, "NOTIMP");
    }
    // Question counts.
    let mut none = query_msg("www.example.com.", RecordType::A);
    none.queries.clear();
    assert_eq!(
        rcode(e.ask(&none.to_vec().unwrap()).await.0),
        ResponseCode::FormErr
    );
    let mut two = query_msg("www.example.com.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("api.example.com.").unwrap(),
        RecordType::A,
    ));
    let (r, ev) = e.ask(&two.to_vec().unwrap()).await;
    assert_eq!(rcode(r), ResponseCode::FormErr);
    assert_eq!(
        (ev.decision.as_str(), ev.rcode.as_str()),
        ("deny", "FORMERR")
    );
    // Cut short, or counts that promise more than is there.
    let full = query("www.example.com.", RecordType::A);
    for cut in [13, 20, full.len() - 1] {
        assert_eq!(
            rcode(e.ask(&full[..cut]).await.0),
            ResponseCode::FormErr,
            "{cut}"
        );
    }
    let mut lying = full.clone();
    lying[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(rcode(e.ask(&lying).await.0), ResponseCode::FormErr);
    let mut lying = full.clone();
    lying[10..12].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(rcode(e.ask(&lying).await.0), ResponseCode::FormErr);
    // A compression pointer loop.
    let mut looped = full[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode(e.ask(&looped).await.0), ResponseCode::FormErr);
    // Class CHAOS (version.bind) and friends.
    let mut chaos = query_msg("version.bind.", RecordType::TXT);
    chaos.queries[0].query_class = DNSClass::CH;
    let (r, ev) = e.ask(&chaos.to_vec().unwrap()).await;
    assert_eq!(rcode(r), ResponseCode::Refused);
    assert_eq!(ev.rcode, "REFUSED");
    assert!(e.upstream.asked().is_empty(), "{:?}", e.upstream.asked());
}

#[tokio::test(flavor = "current_thread")]
async fn edns_is_answered_with_edns() {
    let mut e = env(&["*.example.com"]).await;
    let mut m = query_msg("www.example.com.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns.clone());
    let (r, _) = e.ask(&m.to_vec().unwrap()).await;
    let r = r.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let got = r.edns.expect("an OPT record back");
    assert_eq!((got.version(), got.max_payload()), (0, 1232));
    edns.set_version(1);
    m.set_edns(edns);
    let (r, ev) = e.ask(&m.to_vec().unwrap()).await;
    // 16 is BADVERS with EDNS (hickory reads it back as its TSIG twin, BADSIG).
    assert_eq!(u16::from(r.unwrap().metadata.response_code), 16);
    assert_eq!(ev.rcode, "BADVERS");
}

#[tokio::test(flavor = "current_thread")]
async fn full_synthetic_table_is_servfail() {
    let mut e = env_with(policy(&["*.example.test"]), &["new.example.test"]).await;
    for i in 0..MAX_NAMES_PER_BOX {
        e.net
            .synthetic(&HostName::parse(&format!("n{i}.example.test")).unwrap())
            .unwrap();
    }
    let (r, ev) = e.ask_name("new.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(ev.rule.contains("table full"), "{}", ev.rule);
    // Names it already has keep working.
    let (r, _) = e.ask_name("n7.example.test.", RecordType::A).await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NXDomain,
        "upstream does not know it"
    );
}

/// Random bytes and mutations of a valid query: never a panic, always
/// one event, and any answer is a well-formed response with the query's id.
#[tokio::test(flavor = "current_thread")]
async fn garbage_never_panics() {
    let mut e = env(&["*.example.com"]).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = query("www.example.com.", RecordType::A);
    for i in 0..3000 {
        let q: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 80) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut q = valid.clone();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % q.len();
                q[at] = next() as u8;
            }
            q
        };
        let reply = e.resolver.answer(&e.net, &q).await;
        assert!(matches!(e.events.try_recv(), Ok(NetEvent::Dns(_))));
        if let Some(reply) = reply {
            let m = Message::from_vec(&reply).expect("a decodable answer");
            assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]));
            assert!(m.answers.iter().all(|r| match &r.data {
                RData::A(a) => is_synthetic(IpAddr::V4(a.0)),
                RData::AAAA(a) => is_synthetic(IpAddr::V6(a.0)),
                _ => false,
            }));
        }
    }
    // Only names the policy allows were ever asked upstream.
    assert!(
        e.upstream
            .names()
            .iter()
            .all(|n| n.ends_with(".example.com")),
        "{:?}",
        e.upstream.names()
    );
}

#[test]
fn limiter_bounds_total_and_per_box() {
    let l = Limiter::new(3, 2);
    let a1 = l.try_acquire(1).unwrap();
    let _a2 = l.try_acquire(1).unwrap();
    assert!(l.try_acquire(1).is_none(), "per box");
    let _b1 = l.try_acquire(2).unwrap();
    assert!(l.try_acquire(3).is_none(), "total");
    drop(a1);
    assert!(l.try_acquire(1).is_some());
}

#[test]
fn bind_pair_shares_one_port() {
    // In a throwaway network namespace: the real host's ports stay untouched.
    let Ok(ns) = crate::netns::new_netns() else {
        return crate::test_skip::skip("cannot make a network namespace (needs root)");
    };
    use std::os::fd::AsFd;
    crate::netns::run_in(ns.as_fd(), || {
        let s = Resolver::bind_pair(0).unwrap();
        let addrs = s.local_addrs();
        assert_eq!(addrs.len(), 4);
        let port = s.port();
        assert_ne!(port, 0);
        assert!(addrs.iter().all(|a| a.port() == port), "{addrs:?}");
        assert_eq!(addrs.iter().filter(|a| a.is_ipv6()).count(), 2);
        // The same port again is taken: a clear error, not a panic.
        let err = Resolver::bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).unwrap_err();
        assert!(err.to_string().contains("bind the DNS resolver"), "{err}");
        // A fixed port works too.
        drop(s);
        let again = Resolver::bind_pair(port).unwrap();
        assert_eq!(again.port(), port);
        drop(again);
        // One family at a time on the chosen port, as boxd may do.
        let v4 = Resolver::bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap();
        let v6 = Resolver::bind(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), v4.port()).unwrap();
        let both = v4.merge(v6);
        assert_eq!(both.local_addrs().len(), 4);
    })
    .unwrap();
}
