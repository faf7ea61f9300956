//! Restart-to-healthy against the number of boxes: a `boxd serve` with
//! networking holds N running boxes, is `kill -9`ed and started again, and
//! the time from the new start to its first `/healthz` 200 is taken (every
//! box is re-adopted, its network restored, before the API answers). The
//! same process measures N = 0 first: the ratio and the cost per box are
//! against that baseline.
//!
//! Run as root: `cargo bench --bench restart` (`-- --runs N` restarts per
//! box count, default 5; `-- --boxes 0,50,200` the counts). Prints medians;
//! never asserts a timing.

#[path = "shared.rs"]
mod shared;

#[path = "daemon.rs"]
mod daemon;

use daemon::{net_config, BenchDaemon};
use std::time::Duration;

fn boxes_arg() -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--boxes")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 50, 200])
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the restart benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(5);
    let mut counts = boxes_arg();
    if counts.first() != Some(&0) {
        counts.insert(0, 0);
    }
    let pid = std::process::id();
    let table = format!("boxd_bench_restart_{pid}");
    let config = format!(
        "idle_pause_secs = 0\n{}upstream_dns = [\"127.0.0.1:9\"]\n",
        net_config(
            &table,
            "brs",
            "10.231.0.0/16",
            &format!("fd42:b0c8:{:x}::/48", pid & 0xffff)
        )
    );
    println!("restart benchmark: kill -9, start, first /healthz 200; {runs} restarts per count");
    println!("| boxes | median | ratio to 0 boxes | per box |");
    println!("|---|---|---|---|");
    let mut baseline: Option<Duration> = None;
    for n in counts {
        let mut daemon = BenchDaemon::start("restart", &config, Some(&table));
        let mut http = daemon.http();
        for _ in 0..n {
            http.create();
        }
        drop(http);
        let mut samples = Vec::new();
        for _ in 0..runs {
            match daemon.kill9_and_restart() {
                Ok(d) => samples.push(d),
                Err(e) => {
                    eprintln!("{n} boxes: {e}");
                    break;
                }
            }
        }
        let Some(s) = shared::stats(&samples) else {
            continue;
        };
        let base = *baseline.get_or_insert(s.median);
        let per_box = if n == 0 {
            "-".to_string()
        } else {
            shared::fmt_dur(s.median.saturating_sub(base) / n as u32)
        };
        println!(
            "| {n} | {} | {:.2}x | {per_box} |",
            shared::fmt_dur(s.median),
            s.median.as_secs_f64() / base.as_secs_f64()
        );
    }
}
