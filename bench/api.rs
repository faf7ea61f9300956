//! HTTP API benchmark: what the daemon adds on top of the box runtime.
//!
//! Starts a real `boxd serve` (this build) on a private data dir and
//! measures, interleaved with the same operation done through the runtime
//! library in this process (the baseline, on its own data dir):
//! 1. create → first exec of `true` (100 sequential runs),
//! 2. 50 concurrent creates + first exec (per-box latency and wall time),
//! 3. the exec round trip of `true` on a running box (1000 runs).
//!
//! The HTTP client is a minimal keep-alive HTTP/1.1 client over one TCP
//! connection per thread, so the numbers are the daemon's, not a client
//! library's. Run as root: `cargo bench --bench api [-- --runs N]`.
//! Prints medians, p99s and ratios; asserts only that each step worked.

#[path = "shared.rs"]
mod shared;

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");
const BOXD: &str = env!("CARGO_BIN_EXE_boxd");

/// One keep-alive HTTP/1.1 connection.
struct Http {
    r: BufReader<TcpStream>,
    w: TcpStream,
    key: String,
}

impl Http {
    fn connect(addr: &str, key: &str) -> Http {
        let s = TcpStream::connect(addr).expect("connect to boxd");
        s.set_nodelay(true).expect("nodelay");
        Http {
            r: BufReader::new(s.try_clone().expect("clone socket")),
            w: s,
            key: key.into(),
        }
    }

    /// Sends a request; returns (status, body).
    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: boxd\r\nx-box-api-key: {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.key,
            body.len()
        );
        self.w.write_all(req.as_bytes()).expect("send");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("content-length");
                }
            }
        }
        let mut buf = vec![0u8; len];
        self.r.read_exact(&mut buf).expect("body");
        (status, String::from_utf8_lossy(&buf).into_owned())
    }

    fn create(&mut self) -> String {
        let (s, body) = self.call("POST", "/v2/box", "{}");
        assert_eq!(s, 200, "create: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["id"].as_str().expect("id").to_string()
    }

    fn exec_true(&mut self, id: &str) {
        let (s, body) = self.call(
            "POST",
            &format!("/v2/box/{id}/exec"),
            r#"{"command":["/bin/true"]}"#,
        );
        assert!(s == 200 && body.contains("\"exit_code\":0"), "exec: {body}");
    }

    fn delete(&mut self, id: &str) {
        let (s, body) = self.call("DELETE", &format!("/v2/box/{id}"), "");
        assert_eq!(s, 200, "delete: {body}");
    }
}

/// The daemon, its data dir and cgroups, and the library baseline's:
/// all removed on drop, also when a step panics.
struct Setup {
    daemon: Child,
    dirs: Vec<std::path::PathBuf>,
    parents: Vec<String>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        for (dir, parent) in self.dirs.iter().zip(&self.parents) {
            shared::remove_bench_state(dir, parent, AGENT);
        }
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the API benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(100);
    let pid = std::process::id();
    let http_dir = std::env::temp_dir().join(format!("boxd-bench-api-{pid}"));
    let lib_dir = std::env::temp_dir().join(format!("boxd-bench-lib-{pid}"));
    let http_parent = format!("boxd-bench-api-{pid}");
    let lib_parent = format!("boxd-bench-lib-{pid}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let key = format!("bench-key-{pid}-0123456789abcdef0123456789");
    let daemon = Command::new(BOXD)
        .arg("--data-dir")
        .arg(&http_dir)
        .args(["--agent", AGENT, "serve", "--listen", &addr])
        .args(["--cgroup-parent", &http_parent])
        .env("BOXD_API_KEY", &key)
        .env("BOXD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start boxd serve");
    let _setup = Setup {
        daemon,
        dirs: vec![http_dir, lib_dir.clone()],
        parents: vec![http_parent, lib_parent.clone()],
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "boxd serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cfg = RuntimeConfig::new(&lib_dir, AGENT);
    cfg.cgroup_parent = lib_parent;
    let rt = Runtime::new(cfg).expect("runtime");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut n = 0;
    let mut lib_once = || {
        n += 1;
        shared::lib_cycle(&rt, &tokio, &format!("lib-{n}"))
    };
    let mut http = Http::connect(&addr, &key);
    let http_once = |http: &mut Http| {
        let t = Instant::now();
        let id = http.create();
        http.exec_true(&id);
        let d = t.elapsed();
        http.delete(&id);
        d
    };

    // 1. Sequential create → first exec.
    for _ in 0..5 {
        http_once(&mut http);
        lib_once();
    }
    let (mut h_seq, mut l_seq) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        h_seq.push(http_once(&mut http));
        l_seq.push(lib_once());
    }

    // 2. 50 concurrent creates + first exec, HTTP then library.
    let conc = 50;
    let t = Instant::now();
    let h_conc: Vec<(Duration, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conc)
            .map(|_| {
                let (addr, key) = (&addr, &key);
                s.spawn(move || {
                    let mut c = Http::connect(addr, key);
                    let t = Instant::now();
                    let id = c.create();
                    c.exec_true(&id);
                    (t.elapsed(), id)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let h_wall = t.elapsed();
    for (_, id) in &h_conc {
        http.delete(id);
    }
    let t = Instant::now();
    let l_conc: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conc)
            .map(|i| {
                let rt = &rt;
                s.spawn(move || {
                    let tokio = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio");
                    let t = Instant::now();
                    let b = rt
                        .create(&BoxSpec::new(format!("conc-{i}")))
                        .expect("create");
                    tokio
                        .block_on(b.exec(SpawnRequest::argv(["/bin/true"])))
                        .expect("exec");
                    let d = t.elapsed();
                    rt.destroy(b).expect("destroy");
                    d
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let l_wall = t.elapsed();

    // 3. Exec round trip on running boxes.
    let id = http.create();
    let b = rt.create(&BoxSpec::new("lib-exec")).expect("create");
    let (mut h_exec, mut l_exec) = (Vec::new(), Vec::new());
    for _ in 0..(runs * 10) {
        let t = Instant::now();
        http.exec_true(&id);
        h_exec.push(t.elapsed());
        let t = Instant::now();
        tokio
            .block_on(b.exec(SpawnRequest::argv(["/bin/true"])))
            .expect("exec");
        l_exec.push(t.elapsed());
    }
    http.delete(&id);
    rt.destroy(b).expect("destroy");

    let row = |name: &str, h: Vec<Duration>, l: Vec<Duration>| {
        let (hm, hp) = shared::median_p99(h);
        let (lm, lp) = shared::median_p99(l);
        println!(
            "| {name} | {} | {} | {} | {} | {:.2}x |",
            shared::fmt_dur(hm),
            shared::fmt_dur(hp),
            shared::fmt_dur(lm),
            shared::fmt_dur(lp),
            hm.as_secs_f64() / lm.as_secs_f64()
        );
    };
    println!("boxd API benchmark ({runs} sequential runs, {conc} concurrent, {} execs; interleaved with the library)", runs * 10);
    println!(
        "| measurement | HTTP median | HTTP p99 | library median | library p99 | HTTP/library |"
    );
    println!("|---|---|---|---|---|---|");
    row("create → first exec of `true`, sequential", h_seq, l_seq);
    row(
        &format!("create → first exec, {conc} concurrent (per box)"),
        h_conc.into_iter().map(|(d, _)| d).collect(),
        l_conc,
    );
    row("exec round trip of `true` on a running box", h_exec, l_exec);
    println!(
        "{conc} concurrent creates, wall time until all ran `true`: HTTP {} · library {}",
        shared::fmt_dur(h_wall),
        shared::fmt_dur(l_wall)
    );
    drop(rt);
}
