//! Test-only: a tiny upstream DNS server on loopback (UDP and TCP, one
//! port) that answers from a fixed zone and records every question it
//! gets, so tests can prove what reached "upstream" and what never did.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// The fake upstream. Zone semantics, by lowercased name without the
/// trailing dot: a zone name has the given A record and no AAAA (an
/// IPv4-only site); a name starting with `servfail` gets SERVFAIL; every
/// other name is NXDOMAIN. Dropping it stops the server.
pub(crate) struct FakeUpstream {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<(String, RecordType)>>>,
    _tasks: JoinSet<()>,
}

impl FakeUpstream {
    pub async fn start(zone: &[(&str, Ipv4Addr)]) -> FakeUpstream {
        let zone: Arc<HashMap<String, Ipv4Addr>> =
            Arc::new(zone.iter().map(|(n, ip)| (n.to_string(), *ip)).collect());
        let asked = Arc::new(Mutex::new(Vec::new()));
        // A free UDP port may be taken for TCP: try a few (bounded).
        let mut bound = None;
        for _ in 0..50 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                bound = Some((udp, addr, tcp));
                break;
            }
        }
        let (udp, addr, tcp) = bound.expect("a port free for both UDP and TCP");
        let mut tasks = JoinSet::new();
        let (z, a) = (zone.clone(), asked.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = respond(&z, &a, &buf[..n]) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });
        let (z, a) = (zone, asked.clone());
        tasks.spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    continue;
                };
                let (z, a) = (z.clone(), a.clone());
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    while s.read_exact(&mut len).await.is_ok() {
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if s.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        let Some(r) = respond(&z, &a, &q) else { return };
                        let mut out = (r.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&r);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeUpstream {
            addr,
            asked,
            _tasks: tasks,
        }
    }

    /// Every question received so far: (lowercased name, type).
    pub fn asked(&self) -> Vec<(String, RecordType)> {
        self.asked.lock().unwrap().clone()
    }

    /// The distinct names asked.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.asked().into_iter().map(|(n, _)| n).collect();
        v.sort();
        v.dedup();
        v
    }
}

fn respond(
    zone: &HashMap<String, Ipv4Addr>,
    asked: &Mutex<Vec<(String, RecordType)>>,
    query: &[u8],
) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let name = question.name.to_ascii().to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name).to_string();
    asked
        .lock()
        .unwrap()
        .push((name.clone(), question.query_type));
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.message_type = MessageType::Response;
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_query(question.clone());
    if name.starts_with("servfail") {
        r.metadata.response_code = ResponseCode::ServFail;
        return r.to_vec().ok();
    }
    match zone.get(&name) {
        Some(ip) if question.query_type == RecordType::A => {
            r.add_answer(Record::from_rdata(
                question.name.clone(),
                60,
                RData::A(A(*ip)),
            ));
            return r.to_vec().ok();
        }
        Some(_) => {}
        None => r.metadata.response_code = ResponseCode::NXDomain,
    }
    // Negative answers carry the zone's SOA, as real servers' do (it is
    // what makes them cacheable).
    let apex = Name::from_ascii("test-upstream.").ok()?;
    let soa = SOA::new(apex.clone(), apex.clone(), 1, 3600, 600, 86400, 60);
    r.add_authority(Record::from_rdata(apex, 60, RData::SOA(soa)));
    r.to_vec().ok()
}
