//! Pause and resume latency through `boxd serve`, for a box running 50
//! processes: `POST /pause` and `POST /resume` round trips (median of 100
//! each, keep-alive HTTP/1.1), the freezer time the daemon itself records
//! (`duration_us` of the `box.pause` / `box.resume` audit events), and an
//! exec of `true` on a paused box (auto-resume) beside one on a running box.
//!
//! Run as root: `cargo bench --bench pause` (`-- --runs N` to change the
//! count). Prints medians and p99s; never asserts a timing.

#[path = "shared.rs"]
mod shared;

#[path = "daemon.rs"]
mod daemon;

use daemon::BenchDaemon;
use std::time::{Duration, Instant};

const PROCESSES: usize = 50;

fn row(what: &str, samples: &[Duration]) {
    let s = shared::stats(samples).expect("samples");
    println!(
        "| {what} | {} | {} | {} |",
        s.n,
        shared::fmt_dur(s.median),
        shared::fmt_dur(s.p99)
    );
}

/// The `duration_us` of the box's audit events of `kind`.
fn recorded(http: &mut daemon::Http, id: &str, kind: &str) -> Vec<Duration> {
    let (s, body) = http.call(
        "GET",
        &format!("/v2/audit?box={id}&kind={kind}&limit=1000"),
        "",
    );
    assert_eq!(s, 200, "audit: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["data"]["duration_us"].as_u64())
        .map(Duration::from_micros)
        .collect()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the pause benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(100);
    let daemon = BenchDaemon::start(
        "pause",
        "idle_pause_secs = 0\n[network]\nenabled = false\n",
        None,
    );
    let mut http = daemon.http();
    let id = http.create();
    let script =
        format!("for i in $(seq {PROCESSES}); do nohup sleep 100000 >/dev/null 2>&1 & done");
    let body = serde_json::json!({"command": ["sh", "-c", script]}).to_string();
    let (s, out) = http.call("POST", &format!("/v2/box/{id}/exec"), &body);
    assert!(s == 200 && out.contains("\"exit_code\":0"), "start: {out}");
    let count = serde_json::json!({"command": ["sh", "-c", "pgrep -c sleep"]}).to_string();
    let (_, out) = http.call("POST", &format!("/v2/box/{id}/exec"), &count);
    assert!(
        out.contains(&format!("\"{PROCESSES}\\n\"")),
        "processes: {out}"
    );

    let (mut pauses, mut resumes) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        http.call("POST", &format!("/v2/box/{id}/pause"), "");
        http.call("POST", &format!("/v2/box/{id}/resume"), "");
    }
    for _ in 0..runs {
        let t = Instant::now();
        let (s, out) = http.call("POST", &format!("/v2/box/{id}/pause"), "");
        pauses.push(t.elapsed());
        assert!(s == 200 && out.contains("\"paused\""), "pause: {out}");
        let t = Instant::now();
        let (s, out) = http.call("POST", &format!("/v2/box/{id}/resume"), "");
        resumes.push(t.elapsed());
        assert!(s == 200 && out.contains("\"running\""), "resume: {out}");
    }
    let frozen = recorded(&mut http, &id, "box.pause");
    let thawed = recorded(&mut http, &id, "box.resume");
    let (mut auto, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        http.call("POST", &format!("/v2/box/{id}/pause"), "");
        let t = Instant::now();
        http.exec_true(&id);
        auto.push(t.elapsed());
        let t = Instant::now();
        http.exec_true(&id);
        plain.push(t.elapsed());
    }
    http.delete(&id);
    println!("pause benchmark: a box with {PROCESSES} processes, {runs} runs");
    println!("| measurement | n | median | p99 |");
    println!("|---|---|---|---|");
    row("`POST /pause` round trip (HTTP)", &pauses);
    row("`POST /resume` round trip (HTTP)", &resumes);
    row(
        "freeze, as recorded by boxd (store write + freezer)",
        &frozen,
    );
    row("thaw, as recorded by boxd (store write + freezer)", &thawed);
    row("exec `true` on a paused box (auto-resume)", &auto);
    row("exec `true` on a running box", &plain);
}
