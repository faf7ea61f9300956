//! TLS interception for real: a throwaway "host" namespace with the
//! `inet boxd` ruleset and the proxy (with an [`Interception`]), a box
//! namespace behind a veth, and HTTPS upstreams on the host's loopback
//! with certificates from a test CA the proxy trusts (built with the same
//! rcgen-based CA code as boxd's own, but a different CA). The upstreams
//! record every request byte they receive after their handshake and
//! answer with the request they got, so a test sees exactly what left
//! the proxy. The box's client trusts boxd's CA only.
//!
//! Names (all pointed at 127.0.0.x by the operator's test overrides, port
//! kept):
//! - `api.example.test`: an attach-header rule (`Authorization`) and the
//!   `OPENAI` secret; 127.0.0.1 (HTTPS on 443 and 8443, plain HTTP on 80);
//! - `other.example.test`: intercepted for the `OTHER` secret only;
//! - `body.example.test`: the `BODYKEY` secret, opted into query and body;
//! - `ws.example.test`: an attach-header rule (`X-Ws-Key`);
//! - `pinned.example.test`: `OPENAI` approved, but pointed at 127.0.0.2,
//!   an "attacker" with a valid test-CA certificate for another name;
//! - `selfsigned.example.test`: `OPENAI` approved, pointed at 127.0.0.3,
//!   which presents a self-signed certificate.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use boxd_net::netns::run_in;
use boxd_net::policy::{AllowNet, EgressPolicy, HostName, OperatorNet};
use boxd_net::proxy::ProxyTimeouts;
use boxd_net::secrets::{AttachHeaderRule, PlaceholderSecret, SecretRules};
use boxd_net::tls::{client_config_with_roots, BoxdCa, LeafCache, DEFAULT_LEAF_LIFETIME};
use boxd_net::{
    AddressPlan, BoxNet, ConnEvent, EventSink, EventStream, HttpEvent, Interception, NetEvent,
    Proxy, Registry, Ruleset, RulesetConfig, UpstreamConfig, UpstreamTarget, Upstreams, Veths,
};
use common::skip_unless_capable;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};
use zeroize::Zeroizing;

const PATIENT: Duration = Duration::from_secs(10);

const PH_OPENAI: &str = "BOXD_PH_OPENAI_0123456789abcdef0123456789abcdef";
const OPENAI_VALUE: &str = "sk-live-OPENAI-SECRET-VALUE-7f3a";
const PH_OTHER: &str = "BOXD_PH_OTHER_0123456789abcdef0123456789abcdef0";
const OTHER_VALUE: &str = "other-SECRET-VALUE-19c2";
const PH_BODY: &str = "BOXD_PH_BODYKEY_0123456789abcdef0123456789abcde";
const BODY_VALUE: &str = "body SECRET/&=+value";
const BODY_VALUE_PCT: &str = "body%20SECRET%2F%26%3D%2Bvalue";
const ATTACH_VALUE: &str = "Bearer attach-SECRET-token-55aa";
const WS_VALUE: &str = "ws-SECRET-key-1234";

/// Everything that must never show up in an audit event.
const NEVER_IN_EVENTS: &[&str] = &[
    OPENAI_VALUE,
    OTHER_VALUE,
    BODY_VALUE,
    BODY_VALUE_PCT,
    ATTACH_VALUE,
    WS_VALUE,
    "SECRET",
    "qsecret",
    "box-own-auth",
];

fn name(s: &str) -> HostName {
    HostName::parse(s).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &BoxdCa) -> RootCertStore {
    let mut r = RootCertStore::empty();
    r.add(ca.cert_der().clone()).unwrap();
    r
}

/// What the upstream servers saw.
#[derive(Default)]
struct Recorded {
    /// Each complete request (head and body as received).
    requests: Mutex<Vec<Vec<u8>>>,
    /// Application bytes received after a handshake, all connections.
    bytes: AtomicU64,
    /// Handshakes the server saw fail.
    failed_handshakes: AtomicU64,
}

impl Recorded {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .collect()
    }
}

/// How an upstream HTTPS server picks its certificate.
#[derive(Clone)]
enum Certs {
    /// A leaf of the test CA for whatever SNI the client sends.
    ByName(Arc<LeafCache>),
    /// Always this configuration.
    Fixed(Arc<ServerConfig>),
}

/// Reads one request (head and framed body); `None` at the end.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    rec: &Recorded,
) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = request_end(buf) {
            return Some(buf.drain(..end).collect());
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(PATIENT, io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                rec.bytes.fetch_add(n as u64, Ordering::SeqCst);
                buf.extend_from_slice(&chunk[..n]);
            }
            _ => return None,
        }
    }
}

/// Where the first request in `buf` ends, if it is complete.
fn request_end(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(n) = req.parse(buf).ok()? else {
        return None;
    };
    let header = |h: &str| {
        req.headers
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(h))
            .map(|x| String::from_utf8_lossy(x.value).trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").as_deref() == Some("chunked") {
        return chunked_end(buf, n);
    }
    let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    (buf.len() >= n + len).then_some(n + len)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The end of a chunked body starting at `pos`, if complete.
fn chunked_end(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let eol = find(buf, b"\r\n", pos)?;
        let line = std::str::from_utf8(&buf[pos..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        pos = eol + 2;
        if size == 0 {
            if buf.get(pos..pos + 2)? == b"\r\n" {
                return Some(pos + 2);
            }
            return find(buf, b"\r\n\r\n", pos).map(|e| e + 4);
        }
        pos += size + 2;
        if pos > buf.len() {
            return None;
        }
    }
}

/// Decodes a chunked body (test side, trusted input).
fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let eol = find(body, b"\r\n", pos).expect("chunk line");
        let line = std::str::from_utf8(&body[pos..eol]).unwrap();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        pos = eol + 2;
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[pos..pos + size]);
        pos += size + 2;
    }
}

/// Answers each request with the request itself as the body.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, rec: Arc<Recorded>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut io, &mut buf, &rec).await {
        rec.requests.lock().unwrap().push(req.clone());
        let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
        let first_line = text.lines().next().unwrap_or_default().to_owned();
        let close = text.contains("\r\nconnection: close\r\n");
        let resp: Vec<u8> = if text.contains("\r\nupgrade: websocket\r\n") {
            let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
            if io.write_all(head).await.is_err() {
                return;
            }
            // Echo frames until the end.
            let _ = io.write_all(&buf).await;
            let mut chunk = [0u8; 4096];
            loop {
                match io.read(&mut chunk).await {
                    Ok(n) if n > 0 => {
                        rec.bytes.fetch_add(n as u64, Ordering::SeqCst);
                        if io.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        } else if first_line.contains(" /chunked-response") {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in req.chunks(1000) {
                r.extend_from_slice(format!("{:x};x=y\r\n", piece.len()).as_bytes());
                r.extend_from_slice(piece);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\nX-Done: 1\r\n\r\n");
            r
        } else if first_line.contains(" /eof") {
            let mut r = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            r.extend_from_slice(&req);
            let _ = io.write_all(&r).await;
            let _ = io.shutdown().await;
            return;
        } else if first_line.starts_with("head ") {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", req.len()).into_bytes()
        } else {
            let mut r = format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                req.len()
            )
            .into_bytes();
            r.extend_from_slice(&req);
            r
        };
        if io.write_all(&resp).await.is_err() || io.flush().await.is_err() {
            return;
        }
        if close {
            let _ = io.shutdown().await;
            return;
        }
    }
}

async fn https_conn(tcp: tokio::net::TcpStream, certs: Certs, rec: Arc<Recorded>) {
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let Ok(Ok(start)) = tokio::time::timeout(PATIENT, acceptor).await else {
        rec.failed_handshakes.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let config = match &certs {
        Certs::ByName(leaves) => {
            let sni = start.client_hello().server_name().map(str::to_owned);
            match sni.and_then(|s| leaves.server_config(&name(&s)).ok()) {
                Some(c) => c,
                None => return,
            }
        }
        Certs::Fixed(c) => c.clone(),
    };
    match start.into_stream(config).await {
        Ok(tls) => serve_http(tls, rec).await,
        Err(_) => {
            rec.failed_handshakes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn listen(
    rt: &tokio::runtime::Runtime,
    host: &OwnedFd,
    addr: SocketAddr,
) -> tokio::net::TcpListener {
    let l: std::net::TcpListener = common::tcp_listener(host, addr).into();
    let _guard = rt.enter();
    tokio::net::TcpListener::from_std(l).expect("tokio listener")
}

fn spawn_https(
    rt: &tokio::runtime::Runtime,
    host: &OwnedFd,
    addr: SocketAddr,
    certs: Certs,
    rec: Arc<Recorded>,
) {
    let l = listen(rt, host, addr);
    rt.spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(https_conn(s, certs.clone(), rec.clone()));
        }
    });
}

fn spawn_plain(rt: &tokio::runtime::Runtime, host: &OwnedFd, addr: SocketAddr, rec: Arc<Recorded>) {
    let l = listen(rt, host, addr);
    rt.spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_http(s, rec.clone()));
        }
    });
}

fn secret(n: &str, hosts: &[&str], ph: &str, value: &str, opt_in: bool) -> PlaceholderSecret {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    PlaceholderSecret::new(
        n,
        &hosts,
        ph.to_owned(),
        Zeroizing::new(value.to_owned()),
        opt_in,
        opt_in,
    )
    .unwrap()
}

fn rules() -> SecretRules {
    let attach = AttachHeaderRule::new(
        "api.example.test",
        vec![("Authorization".into(), Zeroizing::new(ATTACH_VALUE.into()))],
    )
    .unwrap();
    let ws = AttachHeaderRule::new(
        "ws.example.test",
        vec![("X-Ws-Key".into(), Zeroizing::new(WS_VALUE.into()))],
    )
    .unwrap();
    SecretRules::new(
        vec![],
        vec![attach, ws],
        vec![
            secret(
                "OPENAI",
                &[
                    "api.example.test",
                    "pinned.example.test",
                    "selfsigned.example.test",
                ],
                PH_OPENAI,
                OPENAI_VALUE,
                false,
            ),
            secret(
                "OTHER",
                &["other.example.test"],
                PH_OTHER,
                OTHER_VALUE,
                false,
            ),
            secret("BODYKEY", &["body.example.test"], PH_BODY, BODY_VALUE, true),
        ],
    )
    .unwrap()
}

/// One test's namespaces, servers and proxy; dropping it removes all.
struct World {
    rt: Option<tokio::runtime::Runtime>,
    _host: OwnedFd,
    box_ns: OwnedFd,
    net: Arc<BoxNet>,
    events: EventStream,
    /// Every event seen, as JSON.
    seen: Vec<String>,
    /// The upstream on 127.0.0.1 (443, 8443, 80).
    up: Arc<Recorded>,
    /// The attacker (127.0.0.2) and the self-signed server (127.0.0.3).
    attacker: Arc<Recorded>,
    selfsigned: Arc<Recorded>,
    boxd_ca: Arc<BoxdCa>,
    upstream_ca: Arc<BoxdCa>,
    _veths: Veths,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl World {
    fn new() -> World {
        let host = common::netns();
        common::lo_up(&host);
        let rt = common::runtime_in(&host);
        let upstream_ca = Arc::new(BoxdCa::generate("boxd test upstream CA").unwrap());
        let up_leaves = Arc::new(LeafCache::new(upstream_ca.clone(), DEFAULT_LEAF_LIFETIME));
        let lo = |last: u8| Ipv4Addr::new(127, 0, 0, last);
        let up = Arc::new(Recorded::default());
        for port in [443, 8443] {
            let addr = SocketAddr::from((lo(1), port));
            spawn_https(
                &rt,
                &host,
                addr,
                Certs::ByName(up_leaves.clone()),
                up.clone(),
            );
        }
        spawn_plain(&rt, &host, SocketAddr::from((lo(1), 80)), up.clone());
        // The attacker: a valid test-CA certificate, for another name.
        let attacker = Arc::new(Recorded::default());
        let wrong = up_leaves
            .server_config(&name("attacker.example.test"))
            .unwrap();
        spawn_https(
            &rt,
            &host,
            SocketAddr::from((lo(2), 443)),
            Certs::Fixed(wrong),
            attacker.clone(),
        );
        // A self-signed certificate for the right name.
        let selfsigned = Arc::new(Recorded::default());
        let ck = rcgen::generate_simple_self_signed(vec!["selfsigned.example.test".to_string()])
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let ss_config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        spawn_https(
            &rt,
            &host,
            SocketAddr::from((lo(3), 443)),
            Certs::Fixed(Arc::new(ss_config)),
            selfsigned.clone(),
        );

        let mut overrides = BTreeMap::new();
        let keep_port = |ip: Ipv4Addr| UpstreamTarget {
            ip: IpAddr::V4(ip),
            port: None,
        };
        for n in [
            "api.example.test",
            "other.example.test",
            "body.example.test",
            "ws.example.test",
        ] {
            overrides.insert(name(n), keep_port(lo(1)));
        }
        overrides.insert(name("pinned.example.test"), keep_port(lo(2)));
        overrides.insert(name("selfsigned.example.test"), keep_port(lo(3)));
        let upstreams = Arc::new(
            Upstreams::new(UpstreamConfig {
                dns: Vec::new(),
                overrides,
            })
            .unwrap(),
        );

        let plan = AddressPlan::default();
        let registry = Arc::new(Registry::new(plan));
        let box_ns = common::netns();
        let (veths, link) = rt.block_on(async {
            let veths = Veths::new_in(plan, host.as_fd()).expect("veths");
            let link = veths.create(1, box_ns.as_fd()).await.expect("box veth");
            (veths, link)
        });
        let policy = EgressPolicy::new(
            Some(AllowNet::parse(&["*.example.test"]).unwrap()),
            None,
            OperatorNet {
                allow_ranges: vec![boxd_net::policy::parse_cidr("127.0.0.0/8").unwrap()],
                deny_ranges: Vec::new(),
            },
        );
        let net =
            Arc::new(BoxNet::new("box-1", link.addrs, policy).with_secrets(Arc::new(rules())));
        registry.insert(net.clone());

        let boxd_ca = Arc::new(BoxdCa::generate("boxd intercept test CA").unwrap());
        let interception = Interception {
            leaves: Arc::new(LeafCache::new(boxd_ca.clone(), DEFAULT_LEAF_LIFETIME)),
            upstream_tls: client_config_with_roots(roots(&upstream_ca)).unwrap(),
        };
        let (sink, events) = EventSink::channel(1024);
        let proxy = Arc::new(
            Proxy::new(registry, upstreams, sink)
                .with_timeouts(ProxyTimeouts {
                    first_bytes: Duration::from_secs(2),
                    handshake: Duration::from_secs(5),
                    request_head: Duration::from_secs(2),
                    idle: Duration::from_secs(5),
                    response_head: Duration::from_secs(5),
                    ..ProxyTimeouts::default()
                })
                .with_interception(interception),
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
            _host: host,
            box_ns,
            net,
            events,
            seen: Vec::new(),
            up,
            attacker,
            selfsigned,
            boxd_ca,
            upstream_ca,
            _veths: veths,
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    fn synth(&self, n: &str, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.net.synthetic(&name(n)).unwrap().v4), port)
    }

    /// A box client trusting boxd's CA (HTTP/1.1).
    fn box_client(&self) -> Arc<ClientConfig> {
        client_config_with_roots(roots(&self.boxd_ca)).unwrap()
    }

    /// A TCP connection from inside the box, as a tokio stream.
    fn tcp(&self, n: &str, port: u16) -> tokio::net::TcpStream {
        let s = common::connect_from(&self.box_ns, self.synth(n, port), PATIENT).expect("connect");
        s.set_nonblocking(true).unwrap();
        let s: std::net::TcpStream = s.into();
        let _guard = self.rt().enter();
        tokio::net::TcpStream::from_std(s).unwrap()
    }

    /// TLS from inside the box to `n:port` with SNI `sni`.
    fn tls(
        &self,
        n: &str,
        port: u16,
        sni: &str,
        config: Arc<ClientConfig>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = self.tcp(n, port);
        let sni = ServerName::try_from(sni.to_owned()).unwrap();
        self.rt().block_on(async {
            tokio::time::timeout(PATIENT, TlsConnector::from(config).connect(sni, tcp))
                .await
                .map_err(|_| std::io::Error::other("handshake timed out"))?
        })
    }

    /// Sends `parts` (separate writes, a pause between) over TLS to `n`
    /// (SNI `sni`) and reads until the proxy closes.
    fn https_to(&self, n: &str, sni: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut tls = self
            .tls(n, 443, sni, self.box_client())
            .expect("box handshake");
        self.rt().block_on(async {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                tls.write_all(p).await.unwrap();
                tls.flush().await.unwrap();
            }
            read_all(&mut tls).await
        })
    }

    fn https(&self, n: &str, parts: &[&[u8]]) -> Vec<u8> {
        self.https_to(n, n, parts)
    }

    fn record(&mut self, e: &NetEvent) {
        self.seen.push(e.to_json().to_string());
    }

    /// The events of the next connection to end: its HTTP events and its
    /// connection event.
    fn conn(&mut self) -> (Vec<HttpEvent>, ConnEvent) {
        let mut http = Vec::new();
        loop {
            let rt = self.rt.as_ref().expect("runtime");
            let events = &mut self.events;
            let e = rt
                .block_on(async { tokio::time::timeout(PATIENT, events.recv()).await })
                .expect("an event in time")
                .expect("event stream open");
            self.record(&e);
            match e {
                NetEvent::Http(h) => http.push(h),
                NetEvent::Connection(c) => return (http, c),
                NetEvent::Dns(d) => panic!("unexpected DNS event {d:?}"),
            }
        }
    }

    /// No value, header value or query string in any event seen.
    fn assert_no_values(&self) {
        assert!(!self.seen.is_empty());
        for json in &self.seen {
            for never in NEVER_IN_EVENTS {
                assert!(!json.contains(never), "{never:?} in event {json}");
            }
        }
    }
}

async fn read_all<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match tokio::time::timeout(PATIENT, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            Ok(_) => return got,
            Err(_) => panic!(
                "no end within {PATIENT:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// A parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits what the box received into responses (interim ones skipped).
fn responses(mut bytes: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        let n = match r.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "bad response {other:?}: {:?}",
                String::from_utf8_lossy(bytes)
            ),
        };
        let status = r.code.unwrap();
        let head = String::from_utf8_lossy(&bytes[..n]).into_owned();
        let lower = head.to_ascii_lowercase();
        let header = |h: &str| {
            r.headers
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case(h))
                .map(|x| String::from_utf8_lossy(x.value).into_owned())
        };
        let rest = &bytes[n..];
        if (100..200).contains(&status) {
            bytes = rest;
            continue;
        }
        let (body, used) = if lower.contains("transfer-encoding: chunked") {
            let end = chunked_end(bytes, n).expect("complete chunked body") - n;
            (dechunk(&rest[..end]), end)
        } else if let Some(len) = header("content-length") {
            let len: usize = len.trim().parse().unwrap();
            (rest[..len].to_vec(), len)
        } else {
            (rest.to_vec(), rest.len())
        };
        out.push(Resp { status, head, body });
        bytes = &rest[used..];
    }
    out
}

/// Waits (bounded) for `cond` to hold.
fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

fn basic(user_pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(user_pass)
}

#[test]
fn attach_header_reaches_upstream_and_replaces_case_variants() {
    skip_unless_capable!();
    let mut w = World::new();
    let req = "GET /v1/models?q=qsecret HTTP/1.1\r\nHost: api.example.test\r\nauthorization: box-own-auth\r\nAUTHORIZATION: box-own-auth-2\r\nConnection: close\r\n\r\n";
    let got = w.https("api.example.test", &[req.as_bytes()]);
    let resp = responses(&got);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].status, 200, "{}", resp[0].head);
    let seen = w.up.take();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert!(!upstream.contains("box-own-auth"), "{upstream}");
    assert_eq!(
        upstream
            .to_ascii_lowercase()
            .matches("authorization:")
            .count(),
        1,
        "{upstream}"
    );
    assert!(
        upstream.contains(&format!("Authorization: {ATTACH_VALUE}\r\n")),
        "{upstream}"
    );
    assert!(upstream.starts_with("GET /v1/models?q=qsecret HTTP/1.1\r\n"));

    let (http, conn) = w.conn();
    assert_eq!(http.len(), 1);
    let e = &http[0];
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.status),
        ("GET", "/v1/models", 200)
    );
    assert_eq!(e.host, "api.example.test");
    assert_eq!(e.injected_headers, vec!["Authorization".to_owned()]);
    assert_eq!(e.upstream_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(e.error, None);
    assert_eq!(conn.protocol, "https-intercepted");
    assert_eq!(conn.decision, "allow");
    assert!(
        conn.bytes_up > req.len() as u64 && conn.bytes_down > 0,
        "{conn:?}"
    );
    assert_eq!(conn.error, None);

    // HTTP/1.0 too (closed after the answer, no interim responses).
    let req10 =
        "GET /old HTTP/1.0\r\nHost: api.example.test\r\nAuthorization: box-own-auth\r\n\r\n";
    let got = w.https("api.example.test", &[req10.as_bytes()]);
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let seen = w.up.take();
    assert!(seen[0].starts_with("GET /old HTTP/1.0\r\n"), "{}", seen[0]);
    assert!(seen[0].contains(&format!("Authorization: {ATTACH_VALUE}\r\n")));
    assert!(!seen[0].contains("box-own-auth"));
    let (http, _) = w.conn();
    assert_eq!((http[0].status, http[0].injected_headers.len()), (200, 1));
    w.assert_no_values();
}

#[test]
fn placeholder_substituted_only_for_its_hosts() {
    skip_unless_capable!();
    let mut w = World::new();
    let req = |host: &str| {
        format!(
            "GET /p HTTP/1.1\r\nHost: {host}\r\nX-Key: Bearer {PH_OPENAI}\r\nProxy-Basic: Basic {b}\r\nAuthorization: Basic {b}\r\nConnection: close\r\n\r\n",
            b = basic(&format!("user:{PH_OPENAI}"))
        )
    };
    // other.example.test first: the header rule of api would replace
    // Authorization there, so Basic auth is checked on a rule-less host.
    let got = w.https(
        "other.example.test",
        &[req("other.example.test").as_bytes()],
    );
    assert_eq!(responses(&got)[0].status, 200);
    let seen = w.up.take();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].contains(OPENAI_VALUE), "{}", seen[0]);
    assert!(seen[0].contains(&format!("X-Key: Bearer {PH_OPENAI}\r\n")));
    assert!(seen[0].contains(&format!(
        "Authorization: Basic {}\r\n",
        basic(&format!("user:{PH_OPENAI}"))
    )));
    let (http, _) = w.conn();
    assert!(http[0].substituted_secrets.is_empty());
    let v: Vec<(String, String)> = http[0]
        .violations
        .iter()
        .map(|v| (v.secret.clone(), v.location.clone()))
        .collect();
    assert_eq!(
        v,
        vec![
            ("OPENAI".to_owned(), "basic_auth".to_owned()),
            ("OPENAI".to_owned(), "header".to_owned())
        ]
    );

    // Its own host: substituted in every header value, Basic included
    // (api's rule replaces Authorization, so Basic rides another header).
    let got = w.https("api.example.test", &[req("api.example.test").as_bytes()]);
    assert_eq!(responses(&got)[0].status, 200);
    let seen = w.up.take();
    assert!(!seen[0].contains(PH_OPENAI), "{}", seen[0]);
    assert!(seen[0].contains(&format!("X-Key: Bearer {OPENAI_VALUE}\r\n")));
    assert!(
        seen[0].contains(&format!(
            "Proxy-Basic: Basic {}\r\n",
            basic(&format!("user:{PH_OPENAI}"))
        )),
        "only Authorization is decoded as Basic credentials"
    );
    let (http, _) = w.conn();
    assert_eq!(http[0].substituted_secrets, vec!["OPENAI".to_owned()]);
    assert!(http[0].violations.is_empty());

    // Basic credentials on the secret's own host (no header rule there).
    let r = format!(
        "GET / HTTP/1.1\r\nHost: other.example.test\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        basic(&format!("u:{PH_OTHER}"))
    );
    let got = w.https("other.example.test", &[r.as_bytes()]);
    assert_eq!(responses(&got)[0].status, 200);
    let seen = w.up.take();
    let want = format!(
        "Authorization: Basic {}\r\n",
        basic(&format!("u:{OTHER_VALUE}"))
    );
    assert!(seen[0].contains(&want), "{}", seen[0]);
    let (http, _) = w.conn();
    assert_eq!(http[0].substituted_secrets, vec!["OTHER".to_owned()]);
    w.assert_no_values();
}

#[test]
fn host_sni_mismatch_gets_421_both_ways() {
    skip_unless_capable!();
    let mut w = World::new();
    for (sni, host) in [
        ("api.example.test", "other.example.test"),
        ("other.example.test", "api.example.test"),
    ] {
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nX-Key: {PH_OPENAI}\r\n\r\n");
        let got = w.https_to(sni, sni, &[req.as_bytes()]);
        let resp = responses(&got);
        assert_eq!(resp.len(), 1);
        assert_eq!(resp[0].status, 421, "{}", resp[0].head);
        assert!(resp[0].head.contains("Connection: close"));
        let (http, conn) = w.conn();
        assert_eq!(http.len(), 1);
        assert_eq!(http[0].status, 421);
        assert!(http[0].substituted_secrets.is_empty());
        assert_eq!(conn.protocol, "https-intercepted");
    }
    assert!(w.up.take().is_empty(), "nothing reached the upstream");
    w.assert_no_values();
}

#[test]
fn absolute_form_to_other_host_gets_421() {
    skip_unless_capable!();
    let mut w = World::new();
    let req = format!("GET https://other.example.test/x HTTP/1.1\r\nHost: api.example.test\r\nX-Key: {PH_OPENAI}\r\n\r\n");
    let resp = responses(&w.https("api.example.test", &[req.as_bytes()]));
    assert_eq!(resp[0].status, 421);
    assert!(w.up.take().is_empty());
    let (http, _) = w.conn();
    assert_eq!(http[0].status, 421);
    // The same host in absolute form is sent in origin form.
    let req = "GET https://API.example.test:443/x?y=1 HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n";
    let resp = responses(&w.https("api.example.test", &[req.as_bytes()]));
    assert_eq!(resp[0].status, 200);
    let seen = w.up.take();
    assert!(
        seen[0].starts_with("GET /x?y=1 HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    let (http, _) = w.conn();
    assert_eq!((http[0].status, http[0].path.as_str()), (200, "/x"));
    w.assert_no_values();
}

/// A request to `n` is answered 502 by boxd, naming the reason; the
/// upstream at `rec` received no application byte.
fn refused_upstream(w: &mut World, n: &str, which: fn(&World) -> &Arc<Recorded>, why: &str) {
    let req = format!("POST /charge HTTP/1.1\r\nHost: {n}\r\nX-Key: {PH_OPENAI}\r\nContent-Length: 5\r\n\r\nhello");
    let resp = responses(&w.https(n, &[req.as_bytes()]));
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].status, 502, "{}", resp[0].head);
    assert!(resp[0].head.contains("text/plain"));
    assert!(resp[0].text().contains(why), "{}", resp[0].text());
    assert!(resp[0].text().contains(n));
    let (http, conn) = w.conn();
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].status, 502);
    assert_eq!(
        (http[0].method.as_str(), http[0].path.as_str()),
        ("POST", "/charge")
    );
    assert!(http[0].error.as_deref().unwrap_or_default().contains(why));
    assert!(http[0].substituted_secrets.is_empty());
    assert!(conn.error.is_some());
    let rec = which(w);
    assert_eq!(
        rec.bytes.load(Ordering::SeqCst),
        0,
        "the upstream received request bytes"
    );
    assert!(rec.requests.lock().unwrap().is_empty());
    assert!(eventually(
        || rec.failed_handshakes.load(Ordering::SeqCst) >= 1
    ));
    assert_eq!(rec.bytes.load(Ordering::SeqCst), 0);
    assert!(w.up.take().is_empty());
}

#[test]
fn self_signed_upstream_gets_502_and_zero_bytes() {
    skip_unless_capable!();
    let mut w = World::new();
    refused_upstream(
        &mut w,
        "selfsigned.example.test",
        |w| &w.selfsigned,
        "failed verification",
    );
    w.assert_no_values();
}

#[test]
fn approved_name_resolving_to_attacker_gets_502() {
    skip_unless_capable!();
    let mut w = World::new();
    refused_upstream(
        &mut w,
        "pinned.example.test",
        |w| &w.attacker,
        "failed verification",
    );
    w.assert_no_values();
}

#[test]
fn port_8443_and_80_and_no_sni_are_never_injected() {
    skip_unless_capable!();
    let mut w = World::new();
    let req = format!("GET / HTTP/1.1\r\nHost: api.example.test\r\nX-Key: {PH_OPENAI}\r\nConnection: close\r\n\r\n");
    // 8443: spliced, so the box sees the upstream's own certificate.
    assert!(
        w.tls("api.example.test", 8443, "api.example.test", w.box_client())
            .is_err(),
        "boxd's CA must not be what the box sees on 8443"
    );
    let _ = w.conn();
    let real = client_config_with_roots(roots(&w.upstream_ca)).unwrap();
    let mut tls = w
        .tls("api.example.test", 8443, "api.example.test", real)
        .expect("spliced TLS");
    let got = w.rt().block_on(async {
        tls.write_all(req.as_bytes()).await.unwrap();
        read_all(&mut tls).await
    });
    drop(tls);
    assert_eq!(responses(&got)[0].status, 200);
    let (http, conn) = w.conn();
    assert!(http.is_empty());
    assert_eq!(conn.protocol, "tls");
    // 80: plaintext, spliced; the placeholder goes out as is, audited.
    let mut tcp = w.tcp("api.example.test", 80);
    let got = w.rt().block_on(async {
        tcp.write_all(req.as_bytes()).await.unwrap();
        read_all(&mut tcp).await
    });
    drop(tcp);
    assert_eq!(responses(&got)[0].status, 200);
    let (http, conn) = w.conn();
    assert!(http.is_empty());
    assert_eq!(conn.protocol, "http");
    assert_eq!(conn.violations.len(), 1);
    assert_eq!(conn.violations[0].secret, "OPENAI");
    assert_eq!(conn.violations[0].location, "first_bytes");
    // 443 without SNI: never intercepted (spliced; this upstream wants an
    // SNI, so the handshake fails there, not at boxd).
    let mut no_sni = (*w.box_client()).clone();
    no_sni.enable_sni = false;
    assert!(w
        .tls(
            "api.example.test",
            443,
            "api.example.test",
            Arc::new(no_sni)
        )
        .is_err());
    let (http, conn) = w.conn();
    assert!(http.is_empty());
    assert_eq!(conn.protocol, "tls");
    let seen = w.up.take();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert!(s.contains(PH_OPENAI) && !s.contains(OPENAI_VALUE), "{s}");
        assert!(!s.contains(ATTACH_VALUE), "{s}");
    }
    w.assert_no_values();
}

#[test]
fn h2_only_client_fails_cleanly() {
    skip_unless_capable!();
    let mut w = World::new();
    let mut h2 = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&w.boxd_ca))
        .with_no_client_auth();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let r = w.tls("api.example.test", 443, "api.example.test", Arc::new(h2));
    assert!(r.is_err(), "an h2-only client must fail the handshake");
    let (http, conn) = w.conn();
    assert!(http.is_empty());
    assert_eq!(conn.protocol, "https-intercepted");
    assert!(
        conn.error
            .as_deref()
            .unwrap_or_default()
            .contains("handshake"),
        "{conn:?}"
    );
    assert!(w.up.take().is_empty());
    // A client offering both gets HTTP/1.1.
    let mut both = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&w.boxd_ca))
        .with_no_client_auth();
    both.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = w
        .tls("api.example.test", 443, "api.example.test", Arc::new(both))
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(tls);
    let _ = w.conn();
    w.assert_no_values();
}

#[test]
fn smuggling_attempts_are_refused_and_pipelined_requests_all_injected_and_audited() {
    skip_unless_capable!();
    let mut w = World::new();
    // Three pipelined requests in one write: each injected and audited.
    let pipelined = concat!(
        "GET /one HTTP/1.1\r\nHost: api.example.test\r\nAuthorization: box-own-auth\r\n\r\n",
        "POST /two HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /three HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"
    );
    let resp = responses(&w.https("api.example.test", &[pipelined.as_bytes()]));
    assert_eq!(
        resp.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 200, 200]
    );
    let seen = w.up.take();
    assert_eq!(seen.len(), 3);
    for (s, path) in seen.iter().zip(["/one", "/two", "/three"]) {
        assert!(
            s.starts_with(&format!(
                "{} {path} ",
                if path == "/one" { "GET" } else { "POST" }
            )),
            "{s}"
        );
        assert_eq!(s.matches(ATTACH_VALUE).count(), 1, "{s}");
        assert!(!s.contains("box-own-auth"));
    }
    let (http, _) = w.conn();
    assert_eq!(
        http.iter()
            .map(|e| (e.path.as_str(), e.status, e.injected_headers.len()))
            .collect::<Vec<_>>(),
        vec![("/one", 200, 1), ("/two", 200, 1), ("/three", 200, 1)]
    );

    // Smuggling: each refused before a byte goes upstream, and what
    // follows on the connection is never taken for a request.
    for (attempt, status) in [
        ("POST / HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 0\r\nContent-Length: 41\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: api.example.test\r\nX: a\r\n b\r\nContent-Length: 41\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n41 \r\n", 400),
        ("CONNECT evil.example.test:443 HTTP/1.1\r\nHost: api.example.test\r\n\r\n", 405),
    ] {
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: api.example.test\r\n\r\n";
        let resp = responses(&w.https("api.example.test", &[format!("{attempt}{smuggled}").as_bytes()]));
        assert_eq!(resp.len(), 1, "{attempt:?}");
        assert_eq!(resp[0].status, status, "{attempt:?}: {}", resp[0].text());
        let (http, _) = w.conn();
        assert_eq!(http.len(), 1, "{attempt:?}");
        assert_eq!(http[0].status, status);
        assert!(http[0].error.is_some());
        let seen = w.up.take();
        assert!(
            seen.iter().all(|s| !s.contains("/smuggled")),
            "{attempt:?}: {seen:?}"
        );
        // The chunked-size refusal comes after the head was sent; all
        // the others before.
        if !attempt.contains("41 \r\n") {
            assert!(seen.is_empty(), "{attempt:?}: {seen:?}");
        }
    }
    w.assert_no_values();
}

#[test]
fn chunked_and_content_length_bodies_pass_through() {
    skip_unless_capable!();
    let mut w = World::new();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut req = format!(
        "PUT /blob HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    let chunked_head = "POST /chunked-response HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let parts: Vec<&[u8]> = vec![
        &req,
        chunked_head.as_bytes(),
        b"5;ext=1\r\nhel",
        b"lo\r\n6\r",
        b"\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"GET /eof HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
    ];
    let got = w.https("api.example.test", &parts);
    let resp = responses(&got);
    assert_eq!(resp.len(), 3, "{resp:?}");
    assert!(resp.iter().all(|r| r.status == 200));
    let seen = w.up.take();
    assert_eq!(seen.len(), 3);
    // Content-Length: exactly the bytes, Expect answered by boxd.
    assert!(resp[0].body.ends_with(&big));
    assert!(!seen[0].to_ascii_lowercase().contains("expect:"));
    // Chunked: the same data and trailer reach the upstream.
    let up_body = seen[1]
        .split_once("\r\n\r\n")
        .unwrap()
        .1
        .as_bytes()
        .to_vec();
    assert_eq!(dechunk(&up_body), b"hello world");
    assert!(seen[1].contains("X-Trailer: t\r\n"), "{}", seen[1]);
    // The chunked response came back intact (it echoes the request).
    assert_eq!(resp[1].body, seen[1].as_bytes());
    // A response delimited by the upstream closing: forwarded, then the
    // box's connection closed.
    assert!(String::from_utf8_lossy(&resp[2].body).starts_with("GET /eof HTTP/1.1\r\n"));
    let (http, conn) = w.conn();
    assert_eq!(
        http.iter()
            .map(|e| (e.path.as_str(), e.status))
            .collect::<Vec<_>>(),
        vec![("/blob", 200), ("/chunked-response", 200), ("/eof", 200)]
    );
    assert_eq!(conn.error, None);
    w.assert_no_values();
}

#[test]
fn websocket_upgrade_gets_headers_and_carries_frames() {
    skip_unless_capable!();
    let mut w = World::new();
    let mut tls = w
        .tls("ws.example.test", 443, "ws.example.test", w.box_client())
        .unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: ws.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let echoed = w.rt().block_on(async {
        tls.write_all(upgrade.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut one = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(PATIENT, tls.read(&mut one))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, 1, "closed inside the 101 head");
            head.push(one[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101 "),
            "{:?}",
            String::from_utf8_lossy(&head)
        );
        let frame = b"\x81\x05frame";
        let mut echoed = Vec::new();
        for _ in 0..3 {
            tls.write_all(frame).await.unwrap();
            let mut buf = [0u8; 7];
            tokio::time::timeout(PATIENT, tls.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            echoed.extend_from_slice(&buf);
        }
        let _ = tls.shutdown().await;
        echoed
    });
    assert_eq!(echoed, b"\x81\x05frame".repeat(3));
    let seen = w.up.take();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].contains(&format!("X-Ws-Key: {WS_VALUE}\r\n")),
        "{}",
        seen[0]
    );
    let (http, conn) = w.conn();
    assert_eq!(http.len(), 1);
    assert_eq!(
        (http[0].status, http[0].injected_headers.clone()),
        (101, vec!["X-Ws-Key".to_owned()])
    );
    assert_eq!(conn.protocol, "https-intercepted");
    w.assert_no_values();
}

#[test]
fn body_and_query_substitution_only_when_opted_in() {
    skip_unless_capable!();
    let mut w = World::new();
    // BODYKEY opted in: query (percent-encoded) and a chunked body.
    let body_json = format!("{{\"key\":\"{PH_BODY}\",\"other\":\"{PH_OPENAI}\"}}");
    let (a, b) = body_json.as_bytes().split_at(20);
    let head = format!("POST /v1?key={PH_BODY}&x=1 HTTP/1.1\r\nHost: body.example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    let c1 = format!("{:x}\r\n", a.len());
    let c2 = format!("\r\n{:x}\r\n", b.len());
    let parts: Vec<&[u8]> = vec![
        head.as_bytes(),
        c1.as_bytes(),
        a,
        c2.as_bytes(),
        b,
        b"\r\n0\r\n\r\n",
    ];
    let resp = responses(&w.https("body.example.test", &parts));
    assert_eq!(resp[0].status, 200, "{}", resp[0].text());
    let seen = w.up.take();
    let s = &seen[0];
    assert!(
        s.starts_with(&format!("POST /v1?key={BODY_VALUE_PCT}&x=1 HTTP/1.1\r\n")),
        "{s}"
    );
    let want_body = format!("{{\"key\":\"{BODY_VALUE}\",\"other\":\"{PH_OPENAI}\"}}");
    assert!(s.ends_with(&format!("\r\n\r\n{want_body}")), "{s}");
    assert!(
        s.contains(&format!("Content-Length: {}\r\n", want_body.len())),
        "{s}"
    );
    assert!(!s.to_ascii_lowercase().contains("transfer-encoding"), "{s}");
    let (http, _) = w.conn();
    assert_eq!(http[0].substituted_secrets, vec!["BODYKEY".to_owned()]);
    assert_eq!(http[0].path, "/v1");
    assert_eq!(
        http[0]
            .violations
            .iter()
            .map(|v| (v.secret.as_str(), v.location.as_str()))
            .collect::<Vec<_>>(),
        vec![("OPENAI", "body")]
    );

    // A body too large to buffer: 413 before the box sends it.
    let req = format!(
        "POST /big HTTP/1.1\r\nHost: body.example.test\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        (8 << 20) + 1
    );
    let resp = responses(&w.https("body.example.test", &[req.as_bytes()]));
    assert_eq!(resp.iter().map(|r| r.status).collect::<Vec<_>>(), vec![413]);
    let (http, _) = w.conn();
    assert_eq!(http[0].status, 413);
    assert!(w.up.take().is_empty());

    // OPENAI did not opt in: its own host gets query and body unchanged.
    let body = format!("k={PH_OPENAI}");
    let req = format!(
        "POST /v1?key={PH_OPENAI} HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(
        responses(&w.https("api.example.test", &[req.as_bytes()]))[0].status,
        200
    );
    let seen = w.up.take();
    assert!(!seen[0].contains(OPENAI_VALUE), "{}", seen[0]);
    assert!(seen[0].starts_with(&format!("POST /v1?key={PH_OPENAI} ")));
    assert!(seen[0].ends_with(&body));
    let (http, _) = w.conn();
    assert!(http[0].substituted_secrets.is_empty() && http[0].violations.is_empty());

    // A streamed body to a host the secret is not for, the placeholder
    // split across writes: a violation, the placeholder goes as is.
    let (p1, p2) = PH_OPENAI.split_at(17);
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: other.example.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\nx",
        PH_OPENAI.len() + 2
    );
    let parts: Vec<&[u8]> = vec![head.as_bytes(), p1.as_bytes(), p2.as_bytes(), b"y"];
    assert_eq!(
        responses(&w.https("other.example.test", &parts))[0].status,
        200
    );
    let seen = w.up.take();
    assert!(seen[0].ends_with(&format!("x{PH_OPENAI}y")), "{}", seen[0]);
    let (http, _) = w.conn();
    assert_eq!(
        http[0]
            .violations
            .iter()
            .map(|v| (v.secret.as_str(), v.location.as_str()))
            .collect::<Vec<_>>(),
        vec![("OPENAI", "body")]
    );

    // In a trailer of a chunked body: seen too, forwarded as is.
    let req = format!(
        "POST /t HTTP/1.1\r\nHost: other.example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nz\r\n0\r\nX-Sig: {PH_OPENAI}\r\n\r\n"
    );
    assert_eq!(
        responses(&w.https("other.example.test", &[req.as_bytes()]))[0].status,
        200
    );
    let seen = w.up.take();
    assert!(
        seen[0].contains(&format!("X-Sig: {PH_OPENAI}\r\n")),
        "{}",
        seen[0]
    );
    let (http, _) = w.conn();
    assert_eq!(
        http[0]
            .violations
            .iter()
            .map(|v| (v.secret.as_str(), v.location.as_str()))
            .collect::<Vec<_>>(),
        vec![("OPENAI", "body")]
    );
    w.assert_no_values();
}

#[test]
fn no_value_in_any_event() {
    skip_unless_capable!();
    let mut w = World::new();
    let reqs = [
        format!("GET /a?q=qsecret HTTP/1.1\r\nHost: api.example.test\r\nAuthorization: box-own-auth\r\nX-Key: {PH_OPENAI}\r\nConnection: close\r\n\r\n"),
        format!("GET /b?q=qsecret&k={PH_OTHER} HTTP/1.1\r\nHost: other.example.test\r\nX-Key: {PH_OPENAI}\r\nConnection: close\r\n\r\n"),
        format!("POST /c?q=qsecret HTTP/1.1\r\nHost: body.example.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PH_BODY}", PH_BODY.len()),
        "GET /d?q=qsecret HTTP/1.1\r\nHost: evil.example.test\r\n\r\n".to_owned(),
    ];
    for (host, req) in ["api", "other", "body", "api"].iter().zip(&reqs) {
        let host = format!("{host}.example.test");
        let resp = responses(&w.https(&host, &[req.as_bytes()]));
        assert!(!resp.is_empty());
        let (http, _) = w.conn();
        assert_eq!(http.len(), 1);
    }
    w.up.take();
    refused_upstream(
        &mut w,
        "selfsigned.example.test",
        |w| &w.selfsigned,
        "failed verification",
    );
    // Every event, serialized, holds no value, header value or query.
    assert!(w.seen.len() >= 10);
    w.assert_no_values();
    for json in &w.seen {
        assert!(!json.contains("q="), "{json}");
    }
}

#[test]
fn slow_or_oversized_heads_are_answered_and_audited() {
    skip_unless_capable!();
    let mut w = World::new();
    // A head that never completes: 408 once `request_head` (2 s here)
    // has passed since its first byte.
    let mut tls = w
        .tls("api.example.test", 443, "api.example.test", w.box_client())
        .unwrap();
    let got = w.rt().block_on(async {
        tls.write_all(b"GET /slow HTTP/1.1\r\nHost: api.exa")
            .await
            .unwrap();
        read_all(&mut tls).await
    });
    drop(tls);
    let resp = responses(&got);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].status, 408);
    let (http, _) = w.conn();
    assert_eq!((http.len(), http[0].status), (1, 408));
    // A head over 64 KiB: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: api.example.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let resp = responses(&w.https("api.example.test", &[big.as_bytes()]));
    assert_eq!(resp[0].status, 431);
    let (http, _) = w.conn();
    assert_eq!(http[0].status, 431);
    assert!(w.up.take().is_empty());
    // The proxy still serves.
    let ok = "GET / HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n";
    assert_eq!(
        responses(&w.https("api.example.test", &[ok.as_bytes()]))[0].status,
        200
    );
    let _ = w.conn();
    w.assert_no_values();
}
