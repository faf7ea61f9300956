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
//! library's. The daemon's boxes have their network (veth, addresses,
//! ruleset, proxy registration), as a real daemon's do; the library's have
//! none: `--no-network` starts the daemon with `[network] enabled = false`
//! to measure the API alone. Run as root:
//! `cargo bench --bench api [-- --runs N] [--no-network]`.
//! Prints medians, p99s and ratios; asserts only that each step worked.

#[path = "shared.rs"]
mod shared;

#[path = "daemon.rs"]
mod daemon;

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use daemon::{net_config, BenchDaemon, Http, AGENT};
use std::time::{Duration, Instant};

/// The library baseline's data dir and cgroups, removed on drop.
struct LibState(std::path::PathBuf, String);

impl Drop for LibState {
    fn drop(&mut self) {
        shared::remove_bench_state(&self.0, &self.1, AGENT);
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the API benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(100);
    let pid = std::process::id();
    let networked = !std::env::args().any(|a| a == "--no-network");
    let daemon = if networked {
        BenchDaemon::start(
            "api",
            &net_config("boxd_bench_api", "bba", "10.98.0.0/24", "fd42:b0c8::/48"),
            Some("boxd_bench_api"),
        )
    } else {
        BenchDaemon::start("api", "[network]\nenabled = false\n", None)
    };
    let (addr, key) = (daemon.addr.clone(), daemon.key.clone());
    let lib_dir = std::env::temp_dir().join(format!("boxd-bench-lib-{pid}"));
    let lib_parent = format!("boxd-bench-lib-{pid}");
    let _lib_state = LibState(lib_dir.clone(), lib_parent.clone());
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
        shared::lib_cycle(&rt, &tokio, &BoxSpec::new(format!("lib-{n}")))
    };
    let mut http = Http::connect(&addr, &key);

    // 1. Sequential create → first exec.
    for _ in 0..5 {
        http.first_exec();
        lib_once();
    }
    let (mut h_seq, mut l_seq) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        h_seq.push(http.first_exec());
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
    println!(
        "boxd API benchmark ({runs} sequential runs, {conc} concurrent, {} execs; interleaved with the library; daemon's boxes {})",
        runs * 10,
        if networked { "with their network" } else { "without network" }
    );
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
