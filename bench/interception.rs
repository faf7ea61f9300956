//! The TLS interception measurement (issue 7, scenario 4: injection),
//! shared by `cargo bench --bench intercept` and `cargo bench --bench
//! compare`: what boxd's header-injecting proxy costs an HTTPS request,
//! beside mitmproxy doing the same injection.
//!
//! Starts, in this process, an HTTPS upstream (rustls, a leaf for
//! `bench.example.test` from a test CA) answering `GET /` with 64 bytes on
//! kept-alive connections and counting the requests that carried the
//! injected header; one real `boxd serve` (this build) whose proxy trusts the
//! test CA (`[tls] extra_roots`) and sends `bench.example.test` to the
//! upstream (`[network.upstreams]`); two boxes: one with an attach-header
//! rule for the name (intercepted: TLS terminated with a leaf from boxd's
//! CA, `Authorization` injected, upstream verified and re-encrypted) and one
//! without rules (spliced); and, when it can be installed from PyPI,
//! mitmproxy in reverse mode doing the same injection from the host.
//!
//! The same static client (the running bench binary with `--client`, which
//! its `main` hands to [`client`]) runs in the boxes and on the host,
//! rounds interleaved, the order rotating each round:
//! 1. kept-alive: one TLS connection, then N `GET /` timed one by one;
//! 2. new connections: N times TCP connect + full TLS handshake (no session
//!    resumption, as boxd's interception offers none) + one `GET /`.
//!
//! Must never: judge a timing; let a request through uncounted (every run
//! checks that the header reached the upstream on exactly the intercepted
//! and mitmproxy requests, and panics otherwise, after which the daemon,
//! mitmproxy and the scratch files are gone).

use super::daemon::{net_config, BenchDaemon, Http};
use super::shared::{self, Stats};
use super::test_ca::TestCa;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = "bench.example.test";
const INJECTED: &str = "Bearer bench-secret";
const BODY: &[u8; 64] = b"boxd interception bench: sixty-four bytes of response body here\n";
/// Untimed requests on a kept-alive connection before the timed ones.
pub const KA_WARMUP: usize = 20;
/// Untimed connections before the timed ones (the first one through the
/// interceptor makes the leaf; the timed ones meet it cached).
pub const CONN_WARMUP: usize = 3;
const REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: bench.example.test\r\nUser-Agent: boxd-bench\r\nAccept: */*\r\n\r\n";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------- upstream

/// The HTTPS upstream on 127.0.0.1: one thread per connection, keep-alive,
/// `200` with [`BODY`] for every request; counts requests and those that
/// carried `Authorization: <INJECTED>`. Stops on drop.
struct Upstream {
    port: u16,
    requests: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(config: Arc<rustls::ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicU64::new(0));
        let injected = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (req, inj, st) = (requests.clone(), injected.clone(), stop.clone());
        // Blocking accept (a polling one would add its interval to every
        // new connection); drop wakes it with a connection of its own.
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) if st.load(Ordering::Relaxed) => return,
                    Ok((stream, _)) => {
                        let (cfg, req, inj) = (config.clone(), req.clone(), inj.clone());
                        std::thread::spawn(move || serve(stream, cfg, &req, &inj));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Upstream {
            port,
            requests,
            injected,
            stop,
            accept: Some(accept),
        }
    }

    /// (requests, requests with the injected header) so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::SeqCst),
            self.injected.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Serves one TLS connection until EOF, an error or 30 s of silence.
fn serve(stream: TcpStream, config: Arc<rustls::ServerConfig>, req: &AtomicU64, inj: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let response = [
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            BODY.len()
        )
        .as_bytes(),
        BODY,
    ]
    .concat();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..10_000_000 {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let has_header = head.lines().skip(1).any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("authorization") && v.trim() == INJECTED
            })
        });
        req.fetch_add(1, Ordering::SeqCst);
        if has_header {
            inj.fetch_add(1, Ordering::SeqCst);
        }
        if tls.write_all(&response).is_err() || tls.flush().is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------- client

/// Client mode (on the host or inside a box); prints one line of sorted,
/// comma-separated nanoseconds.
/// `ka ADDR SNI CAFILE N`: one connection, [`KA_WARMUP`] untimed requests,
/// then N timed ones. `conn ADDR SNI CAFILE N`: [`CONN_WARMUP`] untimed,
/// then N timed connections, each connect + handshake + one request.
pub fn client(args: &[String]) {
    let [mode, addr, sni, cafile, n] = args else {
        panic!("usage: --client ka|conn ADDR SNI CAFILE N");
    };
    let n: usize = n.parse().expect("count");
    let config = client_config(cafile);
    let name = ServerName::try_from(sni.clone()).expect("server name");
    // Resolved once, untimed (in a box: boxd's resolver), so the timings
    // are the connections', not DNS lookups'.
    let addr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("resolve {addr}"));
    let mut times = Vec::with_capacity(n);
    match mode.as_str() {
        "ka" => {
            let mut tls = connect(addr, &config, &name);
            let mut buf = Vec::with_capacity(4096);
            for i in 0..KA_WARMUP + n {
                let t = Instant::now();
                get(&mut tls, &mut buf);
                if i >= KA_WARMUP {
                    times.push(t.elapsed().as_nanos() as u64);
                }
            }
            close(tls);
        }
        "conn" => {
            for i in 0..CONN_WARMUP + n {
                let mut buf = Vec::with_capacity(4096);
                let t = Instant::now();
                let mut tls = connect(addr, &config, &name);
                get(&mut tls, &mut buf);
                if i >= CONN_WARMUP {
                    times.push(t.elapsed().as_nanos() as u64);
                }
                close(tls);
            }
        }
        other => panic!("unknown client mode {other}"),
    }
    times.sort_unstable();
    let s: Vec<String> = times.iter().map(u64::to_string).collect();
    println!("{}", s.join(","));
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Trusts every certificate in `cafile`; HTTP/1.1; no session resumption,
/// so every new connection is a full handshake on every path.
fn client_config(cafile: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cafile)
        .expect("read the CA file")
        .filter_map(Result::ok)
        .collect();
    let (added, _) = roots.add_parsable_certificates(certs);
    assert!(added > 0, "no usable certificate in {cafile}");
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// TCP connect + TLS handshake (driven to completion here, so a failed
/// verification is reported as such).
fn connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
) -> Tls {
    let mut tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut conn =
        rustls::ClientConnection::new(config.clone(), name.clone()).expect("client connection");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// One `GET /`: sends it, reads the response head and its Content-Length
/// body, checks status and body.
fn get(tls: &mut Tls, buf: &mut Vec<u8>) {
    tls.write_all(REQUEST).expect("send the request");
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        assert!(buf.len() < 64 * 1024, "response head too long");
        match tls.read(&mut chunk) {
            Ok(0) => panic!("connection closed before the response"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read the response: {e}"),
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).expect("ascii head");
    assert!(head.starts_with("HTTP/1.1 200"), "response: {head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    while buf.len() < head_end + len {
        match tls.read(&mut chunk) {
            Ok(0) => panic!("connection closed in the body"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read the body: {e}"),
        }
    }
    assert_eq!(&buf[head_end..head_end + len], BODY, "body");
    buf.drain(..head_end + len);
}

fn close(mut tls: Tls) {
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
}

// ---------------------------------------------------------------- harness

/// Runs the client in `box_id`; its output line, or the error it printed.
fn in_box(http: &mut Http, box_id: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = vec!["/tmp/tlsbench", "--client"];
    cmd.extend_from_slice(args);
    let body = serde_json::json!({ "command": cmd, "timeout": 300_000 }).to_string();
    let (s, out) = http.call("POST", &format!("/v2/box/{box_id}/exec"), &body);
    assert_eq!(s, 200, "exec: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    if v["exit_code"] != 0 {
        let err = v["error"].as_str().unwrap_or_default();
        // The panic's message is on the line after "panicked at".
        let msg: Vec<&str> = err
            .lines()
            .skip_while(|l| !l.contains("panicked"))
            .skip(1)
            .take(2)
            .collect();
        return Err(format!("exit {}: {}", v["exit_code"], msg.join(" ").trim()));
    }
    Ok(v["output"].as_str().expect("output").trim().to_string())
}

fn on_host(args: &[&str]) -> Result<String, String> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg("--client")
        .args(args)
        .output()
        .expect("run the host client");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn samples(line: &str) -> Vec<Duration> {
    line.split(',')
        .map(|n| Duration::from_nanos(n.parse().expect("nanoseconds")))
        .collect()
}

fn create(http: &mut Http, body: serde_json::Value) -> String {
    let (s, out) = http.call("POST", "/v2/box", &body.to_string());
    assert_eq!(s, 200, "create: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["id"].as_str().expect("id").to_string()
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` at most `limit`; kills it past that.
fn wait_bounded(mut child: Child, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("exited with {s}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {limit:?}; killed"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// mitmdump in reverse mode in front of the upstream, injecting the same
/// header; killed on drop (also when a step panics).
struct Mitm {
    child: Child,
    port: u16,
    ca: PathBuf,
    version: String,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mitmproxy from a venv under the target dir (installed from PyPI there
/// if missing); `Err` with the reason when it cannot be had.
fn start_mitm(up_port: u16, up_ca: &Path, scratch: &Path) -> Result<Mitm, String> {
    // The target dir: the nearest ancestor of cargo's scratch dir for
    // benches (`<target>/<triple>/tmp`) holding cargo's `.rustc_info.json`.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp
        .ancestors()
        .find(|p| p.join(".rustc_info.json").exists())
        .unwrap_or(tmp)
        .join("bench");
    let venv = target.join("mitm");
    let mitmdump = venv.join("bin/mitmdump");
    if !mitmdump.exists() {
        eprintln!("installing mitmproxy from PyPI into {}", venv.display());
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        let venv_made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        wait_bounded(venv_made, Duration::from_secs(120)).map_err(|e| format!("venv: {e}"))?;
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "mitmproxy"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("pip: {e}"))?;
        wait_bounded(pip, Duration::from_secs(600))
            .map_err(|e| format!("pip install mitmproxy: {e}"))?;
    }
    let version = Command::new(&mitmdump)
        .arg("--version")
        .output()
        .map_err(|e| format!("mitmdump --version: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("mitmproxy ?")
        .to_string();
    let confdir = target.join("mitm-conf");
    std::fs::create_dir_all(&confdir).map_err(|e| e.to_string())?;
    let addon = scratch.join("inject.py");
    std::fs::write(
        &addon,
        format!(
            "def request(flow):\n    flow.request.headers[\"Authorization\"] = \"{INJECTED}\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new(&mitmdump)
        .arg("--mode")
        .arg(format!("reverse:https://127.0.0.1:{up_port}"))
        .args(["--listen-host", "127.0.0.1", "--listen-port"])
        .arg(port.to_string())
        .arg("-s")
        .arg(&addon)
        .arg("--set")
        .arg(format!(
            "ssl_verify_upstream_trusted_ca={}",
            up_ca.display()
        ))
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        .args(["--set", "connection_strategy=lazy", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start mitmdump: {e}"))?;
    let mut m = Mitm {
        child,
        port,
        ca: confdir.join("mitmproxy-ca-cert.pem"),
        version,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() || !m.ca.exists() {
        if let Ok(Some(s)) = m.child.try_wait() {
            return Err(format!("mitmdump exited with {s}"));
        }
        if Instant::now() > deadline {
            return Err("mitmdump did not listen within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(m)
}

/// The four ways a request reaches the upstream, in table order.
#[derive(Clone, Copy, PartialEq)]
pub enum Route {
    Intercepted,
    Spliced,
    Direct,
    Mitm,
}

impl Route {
    pub const ALL: [Route; 4] = [
        Route::Intercepted,
        Route::Spliced,
        Route::Direct,
        Route::Mitm,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Intercepted => "box → boxd, intercepted (header injected) → upstream",
            Route::Spliced => "box → boxd, spliced (no rule) → upstream",
            Route::Direct => "host → upstream directly",
            Route::Mitm => "host → mitmproxy (header injected) → upstream",
        }
    }
    fn injects(self) -> bool {
        matches!(self, Route::Intercepted | Route::Mitm)
    }
}

struct Env<'a> {
    http: Http,
    upstream: &'a Upstream,
    intercepted: String,
    spliced: String,
    up_ca: String,
    mitm: Option<(u16, String)>,
}

impl Env<'_> {
    /// One client run on `route`; checks what reached the upstream.
    fn run(&mut self, route: Route, mode: &str, n: usize) -> Result<Vec<Duration>, String> {
        let count = n.to_string();
        let before = self.upstream.counts();
        let line = match route {
            Route::Intercepted => {
                let args = [
                    mode,
                    "bench.example.test:443",
                    NAME,
                    "/etc/ssl/certs/ca-certificates.crt",
                    &count,
                ];
                in_box(&mut self.http, &self.intercepted, &args)
            }
            Route::Spliced => {
                let args = [
                    mode,
                    "bench.example.test:443",
                    NAME,
                    "/tmp/bench-ca.pem",
                    &count,
                ];
                in_box(&mut self.http, &self.spliced, &args)
            }
            Route::Direct => {
                let addr = format!("127.0.0.1:{}", self.upstream.port);
                on_host(&[mode, &addr, NAME, &self.up_ca, &count])
            }
            Route::Mitm => {
                let (port, ca) = self.mitm.as_ref().expect("mitmproxy");
                let addr = format!("127.0.0.1:{port}");
                on_host(&[mode, &addr, NAME, ca, &count])
            }
        }?;
        // The last response is read before the client exits, so the
        // upstream has counted every request.
        let after = self.upstream.counts();
        let expected = (n + if mode == "ka" { KA_WARMUP } else { CONN_WARMUP }) as u64;
        let (reqs, inj) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(
            reqs,
            expected,
            "{}: requests at the upstream",
            route.label()
        );
        let want_inj = if route.injects() { expected } else { 0 };
        assert_eq!(
            inj,
            want_inj,
            "{}: requests with the injected header",
            route.label()
        );
        Ok(samples(&line))
    }
}

/// How much to measure.
pub struct Options {
    /// Interleaved rounds (each: every route kept-alive, then every route
    /// with new connections).
    pub rounds: usize,
    /// Timed requests per kept-alive run.
    pub ka_n: usize,
    /// Timed new connections per run.
    pub conn_n: usize,
    /// Why mitmproxy is left out, if it is (otherwise it is measured,
    /// installed from PyPI if missing).
    pub skip_mitm: Option<String>,
}

/// What [`measure`] found. Indexed by `Route as usize`; `None` where the
/// route did not run.
pub struct Report {
    pub options: Options,
    pub kept_alive: [Option<Stats>; 4],
    pub new_conn: [Option<Stats>; 4],
    /// Why the intercepted route could not run (a build without the
    /// interception engine), if it could not.
    pub unavailable: Option<String>,
    /// mitmproxy's version, or why it was skipped.
    pub mitm: Result<String, String>,
    pub elapsed: Duration,
}

/// True for the client modes [`client`] serves (`bench/compare` hands
/// them here).
#[allow(dead_code)] // `bench/intercept` has only these modes
pub fn is_client_mode(mode: &str) -> bool {
    matches!(mode, "ka" | "conn")
}

/// The whole measurement (needs root). Panics when a step fails, other
/// than the intercepted route being unavailable or mitmproxy missing.
pub fn measure(options: Options) -> Report {
    let Options {
        rounds,
        ka_n,
        conn_n,
        ..
    } = options;
    let started = Instant::now();

    let scratch =
        TempDir(std::env::temp_dir().join(format!("boxd-bench-tlsfiles-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    let ca = TestCa::new();
    let ca_path = scratch.0.join("upstream-ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write the test CA");
    let upstream = Upstream::start(ca.server_config(&[NAME, "127.0.0.1"]));

    let closed_dns = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port");
    let table = "boxd_bench_tls";
    let config = format!(
        "{}upstream_dns = [\"{closed_dns}\"]\nallow_ranges = [\"127.0.0.0/8\"]\n\
         [network.upstreams]\n\"{NAME}\" = \"127.0.0.1:{}\"\n\
         [tls]\nextra_roots = [{:?}]\n",
        net_config(table, "bbt", "10.96.0.0/24", "fd42:b0cb::/48"),
        upstream.port,
        ca_path.display().to_string(),
    );
    let d = BenchDaemon::start("tls", &config, Some(table));
    let mut http = d.http();
    let intercepted = create(
        &mut http,
        serde_json::json!({
            "allow_net": [NAME],
            "attach_headers": {NAME: {"Authorization": INJECTED}},
        }),
    );
    let spliced = create(&mut http, serde_json::json!({ "allow_net": [NAME] }));
    let exe = std::fs::read(std::env::current_exe().expect("own path")).expect("read self");
    for id in [&intercepted, &spliced] {
        d.upload_executable(id, "/tmp/tlsbench", exe.clone());
    }
    d.upload_executable(&spliced, "/tmp/bench-ca.pem", ca.pem().as_bytes().to_vec());

    let mitm = match &options.skip_mitm {
        Some(why) => Err(why.clone()),
        None => start_mitm(upstream.port, &ca_path, &scratch.0),
    };
    if let Err(e) = &mitm {
        eprintln!("\n*** mitmproxy SKIPPED: {e} ***\n");
    }
    let mut env = Env {
        http,
        upstream: &upstream,
        intercepted: intercepted.clone(),
        spliced: spliced.clone(),
        up_ca: ca_path.display().to_string(),
        mitm: mitm
            .as_ref()
            .ok()
            .map(|m| (m.port, m.ca.display().to_string())),
    };

    // Which routes work: the intercepted one needs the interception engine
    // (before it, the box meets the upstream's own certificate and its
    // client rightly refuses it).
    let mut routes = vec![Route::Intercepted, Route::Spliced, Route::Direct];
    if env.mitm.is_some() {
        routes.push(Route::Mitm);
    }
    let mut unavailable = None;
    routes.retain(|&r| match env.run(r, "ka", 1) {
        Ok(_) => true,
        Err(e) if r == Route::Intercepted => {
            eprintln!("\n*** intercepted route UNAVAILABLE: the box's client failed: {e} ***\n");
            unavailable = Some(e);
            false
        }
        Err(e) => panic!("{}: {e}", r.label()),
    });

    let mut ka: Vec<Vec<Duration>> = vec![Vec::new(); Route::ALL.len()];
    let mut conn: Vec<Vec<Duration>> = vec![Vec::new(); Route::ALL.len()];
    for round in 0..rounds {
        for (mode, n, out) in [("ka", ka_n, &mut ka), ("conn", conn_n, &mut conn)] {
            for k in 0..routes.len() {
                let r = routes[(k + round) % routes.len()];
                let s = env
                    .run(r, mode, n)
                    .unwrap_or_else(|e| panic!("{}: {e}", r.label()));
                out[r as usize].extend(s);
            }
        }
    }
    let mut http = env.http;
    http.delete(&intercepted);
    http.delete(&spliced);
    let mitm = mitm.map(|m| m.version.clone());
    Report {
        options,
        kept_alive: std::array::from_fn(|i| shared::stats(&ka[i])),
        new_conn: std::array::from_fn(|i| shared::stats(&conn[i])),
        unavailable,
        mitm,
        elapsed: started.elapsed(),
    }
}
