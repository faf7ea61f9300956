//! The egress measurement (issue 7, scenario 4), shared by
//! `cargo bench --bench net` and `cargo bench --bench compare`: what boxd's
//! network path costs a box.
//!
//! Starts a loopback upstream server in this process and two real
//! `boxd serve` daemons (this build): one with networking, one with
//! `[network] enabled = false`. Measures, interleaved (A B A B …):
//! 1. request latency on a kept-alive TCP connection (64-byte ping-pong)
//!    from inside a box through the proxy vs from the host directly;
//! 2. throughput of a download, box through the proxy vs host directly;
//! 3. HTTP create → first exec of `true`, with networking vs without.
//!
//! The same client code runs on both sides: every bench binary is static,
//! so the running one is uploaded into the box and run there with
//! `--client` (its `main` hands `--client ping|dl …` to [`client`]).
//!
//! Must never: judge a timing (it panics only when a step fails, and the
//! daemons, boxes and the upstream are gone by then); reach anything but
//! loopback and its own daemons' boxes.

use super::daemon::{net_config, BenchDaemon, Http};
use super::shared::{self, Stats};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const PING_BYTES: usize = 64;
const UPSTREAM_NAME: &str = "bench.example.test";

/// The upstream: `p` = echo 64-byte messages until EOF; `d` + u64 =
/// send that many bytes, then close.
fn serve_upstream(l: TcpListener) {
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut cmd = [0u8; 1];
            if c.read_exact(&mut cmd).is_err() {
                return;
            }
            match cmd[0] {
                b'p' => {
                    let mut buf = [0u8; PING_BYTES];
                    while c.read_exact(&mut buf).is_ok() {
                        if c.write_all(&buf).is_err() {
                            return;
                        }
                    }
                }
                b'd' => {
                    let mut n = [0u8; 8];
                    if c.read_exact(&mut n).is_err() {
                        return;
                    }
                    let mut left = u64::from_be_bytes(n);
                    let chunk = vec![0x5au8; 1 << 20];
                    while left > 0 {
                        let k = left.min(chunk.len() as u64) as usize;
                        if c.write_all(&chunk[..k]).is_err() {
                            return;
                        }
                        left -= k as u64;
                    }
                }
                _ => {}
            }
        });
    }
}

/// Client mode (on the host or inside a box): prints one line.
/// `ping ADDR N` → per-round-trip nanoseconds, sorted, comma-separated;
/// `dl ADDR BYTES` → nanoseconds for the whole download.
pub fn client(args: &[String]) {
    let addr = &args[1];
    let mut c = TcpStream::connect(addr.as_str()).expect("connect upstream");
    c.set_nodelay(true).expect("nodelay");
    match args[0].as_str() {
        "ping" => {
            let n: usize = args[2].parse().expect("count");
            c.write_all(b"p").expect("send");
            let mut buf = [7u8; PING_BYTES];
            let mut rtts = Vec::with_capacity(n);
            for i in 0..n + 50 {
                let t = Instant::now();
                c.write_all(&buf).expect("send");
                c.read_exact(&mut buf).expect("echo");
                if i >= 50 {
                    rtts.push(t.elapsed().as_nanos() as u64);
                }
            }
            rtts.sort_unstable();
            let s: Vec<String> = rtts.iter().map(u64::to_string).collect();
            println!("{}", s.join(","));
        }
        "dl" => {
            let bytes: u64 = args[2].parse().expect("bytes");
            let t = Instant::now();
            c.write_all(b"d").expect("send");
            c.write_all(&bytes.to_be_bytes()).expect("send");
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0u64;
            while got < bytes {
                let n = c.read(&mut buf).expect("read");
                assert!(n > 0, "download cut at {got} bytes");
                got += n as u64;
            }
            println!("{}", t.elapsed().as_nanos());
        }
        other => panic!("unknown client mode {other}"),
    }
}

/// Runs the client in `box_id` through `http`; returns its output line.
fn in_box(http: &mut Http, box_id: &str, args: &[&str]) -> String {
    let mut cmd = vec!["/tmp/netbench", "--client"];
    cmd.extend_from_slice(args);
    let body = serde_json::json!({ "command": cmd, "timeout": 600_000 }).to_string();
    let (s, out) = http.call("POST", &format!("/v2/box/{box_id}/exec"), &body);
    assert_eq!(s, 200, "exec: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["exit_code"], 0, "client in box failed: {v}");
    v["output"].as_str().expect("output").trim().to_string()
}

fn on_host(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .arg("--client")
        .args(args)
        .output()
        .expect("run the host client");
    assert!(out.status.success(), "host client failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn rtts(line: &str) -> Vec<Duration> {
    line.split(',')
        .map(|n| Duration::from_nanos(n.parse().expect("nanoseconds")))
        .collect()
}

/// Copies this (static) binary into the box as /tmp/netbench.
fn upload_self(d: &BenchDaemon, box_id: &str) {
    let exe = std::fs::read(std::env::current_exe().expect("own path")).expect("read self");
    d.upload_executable(box_id, "/tmp/netbench", exe);
}

fn mib_per_s(bytes: u64, ns: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / (ns as f64 / 1e9)
}

/// How much to measure.
pub struct Options {
    /// Interleaved rounds of latency and of throughput.
    pub rounds: usize,
    /// Timed round trips per latency round (after 50 untimed).
    pub pings: usize,
    /// Bytes per download.
    pub dl_bytes: u64,
    /// Timed create → first exec cycles per daemon (after 5 untimed).
    pub create_runs: usize,
}

/// What [`measure`] found.
pub struct Report {
    pub options: Options,
    /// Per round trip: box → proxy → upstream, and host → upstream.
    pub latency_box: Stats,
    pub latency_host: Stats,
    /// MiB/s, the median of the rounds.
    pub throughput_box: f64,
    pub throughput_host: f64,
    /// HTTP create → first exec of `true`, with and without networking.
    pub create_net: Stats,
    pub create_nonet: Stats,
}

/// True for the client modes [`client`] serves (`bench/compare` hands
/// them here).
#[allow(dead_code)] // `bench/net` has only these modes
pub fn is_client_mode(mode: &str) -> bool {
    matches!(mode, "ping" | "dl")
}

/// The whole measurement (needs root). Panics when a step fails.
pub fn measure(options: Options) -> Report {
    let Options {
        rounds,
        pings,
        dl_bytes,
        create_runs,
    } = options;
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let up_addr = upstream.local_addr().expect("addr");
    std::thread::spawn(move || serve_upstream(upstream));
    let closed_dns = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port");
    let table = "boxd_bench_net";
    let config = format!(
        "{}upstream_dns = [\"{closed_dns}\"]\nallow_ranges = [\"127.0.0.0/8\"]\n\
         [network.upstreams]\n\"{UPSTREAM_NAME}\" = \"{up_addr}\"\n",
        net_config(table, "bbn", "10.97.0.0/24", "fd42:b0c9::/48")
    );
    let net = BenchDaemon::start("net", &config, Some(table));
    let nonet = BenchDaemon::start("nonet", "[network]\nenabled = false\n", None);

    let mut http = net.http();
    let (s, body) = http.call(
        "POST",
        "/v2/box",
        &format!(r#"{{"allow_net": ["{UPSTREAM_NAME}"]}}"#),
    );
    assert_eq!(s, 200, "create: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let box_id = v["id"].as_str().expect("id").to_string();
    upload_self(&net, &box_id);
    let through = format!("{UPSTREAM_NAME}:80");
    let direct = up_addr.to_string();

    // 1. Latency on a kept-alive connection.
    let (mut lat_box, mut lat_host) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        lat_host.extend(rtts(&on_host(&["ping", &direct, &pings.to_string()])));
        lat_box.extend(rtts(&in_box(
            &mut http,
            &box_id,
            &["ping", &through, &pings.to_string()],
        )));
    }

    // 2. Throughput.
    let (mut tp_box, mut tp_host) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let ns: u64 = on_host(&["dl", &direct, &dl_bytes.to_string()])
            .parse()
            .expect("ns");
        tp_host.push(mib_per_s(dl_bytes, ns));
        let ns: u64 = in_box(&mut http, &box_id, &["dl", &through, &dl_bytes.to_string()])
            .parse()
            .expect("ns");
        tp_box.push(mib_per_s(dl_bytes, ns));
    }
    let median_f = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    http.delete(&box_id);

    // 3. Create → first exec, with networking and without.
    let mut nonet_http = nonet.http();
    for _ in 0..5 {
        http.first_exec();
        nonet_http.first_exec();
    }
    let (mut c_net, mut c_nonet) = (Vec::new(), Vec::new());
    for _ in 0..create_runs {
        c_net.push(http.first_exec());
        c_nonet.push(nonet_http.first_exec());
    }
    let stats = |v: &[Duration]| shared::stats(v).expect("samples");
    Report {
        latency_box: stats(&lat_box),
        latency_host: stats(&lat_host),
        throughput_box: median_f(tp_box),
        throughput_host: median_f(tp_host),
        create_net: stats(&c_net),
        create_nonet: stats(&c_nonet),
        options,
    }
}
