//! "Outside" HTTPS servers for the secrets tests, with a certificate from
//! the test CA the daemon is told to trust (`[tls] extra_roots`; see
//! `test_ca.rs`) or a self-signed one, each recording every plaintext byte it receives
//! after the handshake — so a test can prove a secret reached the upstream,
//! or that nothing at all did.
//!
//! Each connection is served on its own thread; requests are parsed just
//! enough (head + Content-Length body) to answer `200 ok`, or — on
//! `/echo` — the whole request reflected back (the documented limit of
//! injection). Servers stop on drop; every loop is bounded.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::ServerConfig;

/// An HTTPS server (or, from [`HttpsServer::start_plain`], a plaintext
/// HTTP one) on 127.0.0.1 that records what it receives.
pub struct HttpsServer {
    pub port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpsServer {
    pub fn start(config: Arc<ServerConfig>) -> HttpsServer {
        Self::start_with(Some(config))
    }

    /// Plain HTTP, no TLS.
    pub fn start_plain() -> HttpsServer {
        Self::start_with(None)
    }

    fn start_with(config: Option<Arc<ServerConfig>>) -> HttpsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, st) = (received.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (cfg, rec) = (config.clone(), rec.clone());
                        std::thread::spawn(move || serve(stream, cfg, rec));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        HttpsServer {
            port,
            received,
            stop,
            accept: Some(accept),
        }
    }

    /// Every plaintext byte received so far, all connections together.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    pub fn received_str(&self) -> String {
        String::from_utf8_lossy(&self.received()).into_owned()
    }

    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Serves one connection (TLS with a config) until EOF, an error or 10 s
/// of silence.
fn serve(stream: TcpStream, config: Option<Arc<ServerConfig>>, received: Arc<Mutex<Vec<u8>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    match config {
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            serve_http(rustls::StreamOwned::new(conn, stream), received);
        }
        None => serve_http(stream, received),
    }
}

/// Requests with Content-Length bodies (or none), keep-alive.
fn serve_http(mut tls: impl Read + Write, received: Arc<Mutex<Vec<u8>>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..10_000 {
        // One request: head, then its body.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    received.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    received.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let request: Vec<u8> = buf.drain(..head_end + len).collect();
        let path = head.split(' ').nth(1).unwrap_or("/");
        let body: Vec<u8> = if path.starts_with("/echo") {
            request
        } else {
            b"ok\n".to_vec()
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if tls.write_all(response.as_bytes()).is_err() || tls.write_all(&body).is_err() {
            return;
        }
        let _ = tls.flush();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}
