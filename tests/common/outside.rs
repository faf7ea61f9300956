//! "The internet" for network tests: small servers on loopback in the host
//! network namespace that boxes reach only through boxd's proxy (the
//! daemon's `[network.upstreams]` points names at them) — an HTTP server
//! that names the Host it was asked for, a TCP service that speaks first,
//! and an upstream DNS server that counts every question it gets. Each
//! stops when dropped; every loop is bounded by a stop flag and timeouts.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A server thread that stops on drop.
struct Stopper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts TCP connections until stopped; each is handled on its own
/// thread by `handle`, with 5 s read/write timeouts.
fn tcp_server(
    handle: impl Fn(std::net::TcpStream) + Send + Sync + 'static,
) -> (SocketAddr, Stopper) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = Arc::new(handle);
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
                    let h = handle.clone();
                    std::thread::spawn(move || h(c));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (
        addr,
        Stopper {
            stop,
            thread: Some(thread),
        },
    )
}

/// An HTTP/1.1 server answering `hello <host>` (the Host header it got).
pub struct HttpServer {
    pub addr: SocketAddr,
    _stop: Stopper,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let (addr, stop) = tcp_server(|mut c| {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf);
            let host = text
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            let body = format!("hello {host}");
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        HttpServer { addr, _stop: stop }
    }
}

/// A TCP service that speaks first (like SMTP or MySQL): sends a banner,
/// then echoes one line.
pub struct BannerServer {
    pub addr: SocketAddr,
    _stop: Stopper,
}

impl BannerServer {
    pub fn start() -> BannerServer {
        let (addr, stop) = tcp_server(|mut c| {
            if c.write_all(b"220 banner-first\r\n").is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            if let Ok(n) = c.read(&mut buf) {
                let _ = c.write_all(&buf[..n]);
            }
        });
        BannerServer { addr, _stop: stop }
    }
}

/// An upstream DNS server: answers A questions from a fixed table
/// (NXDOMAIN otherwise) and remembers every name it was asked.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub asked: Arc<Mutex<Vec<String>>>,
    _stop: Stopper,
}

impl DnsServer {
    pub fn start(table: &[(&str, Ipv4Addr)]) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the test DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let table: Vec<(String, Ipv4Addr)> =
            table.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, log) = (stop.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Some((name, qtype, qend)) = parse_question(&buf[..n]) else {
                    continue;
                };
                log.lock().unwrap().push(name.clone());
                let answer = table
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                    .map(|(_, a)| *a);
                let mut out = buf[..qend].to_vec();
                out[2] = 0x81; // QR, RD
                out[3] = match answer {
                    Some(_) => 0x80,  // RA, NOERROR
                    None => 0x80 | 3, // RA, NXDOMAIN
                };
                out[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
                if let (Some(ip), 1) = (answer, qtype) {
                    out[7] = 1; // ANCOUNT
                    out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
                    out.extend_from_slice(&ip.octets());
                }
                let _ = sock.send_to(&out, from);
            }
        });
        DnsServer {
            addr,
            asked,
            _stop: Stopper {
                stop,
                thread: Some(thread),
            },
        }
    }

    /// Every name asked so far.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// (name, qtype, end of the question) of a one-question query.
fn parse_question(msg: &[u8]) -> Option<(String, u16, usize)> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).into_owned());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}
