//! Snapshot and restore benchmark (library level).
//!
//! For upper layers of 1 MiB, 100 MiB and 1 GiB (files of random data
//! written in a box): the time of `Runtime::snapshot` (freeze, copy of the
//! upper dirs, thaw, sync, rename), how long the box stays frozen is
//! included in it; then restore — create a box whose lower stack starts
//! with the snapshot layers → first command's exit — beside a plain create
//! → first exit, interleaved in the same run.
//!
//! Run as root: `cargo bench --bench snapshot` (`-- --runs N` for the
//! restore/create pairs per size, default 20). Never asserts a timing.

#[path = "shared.rs"]
mod shared;

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");

fn first_exec(rt: &Runtime, tokio: &tokio::runtime::Runtime, spec: &BoxSpec) -> Duration {
    let t = Instant::now();
    let b = rt.create(spec).expect("create");
    let out = tokio
        .block_on(b.exec(SpawnRequest::argv(["/bin/true"])))
        .expect("exec");
    let d = t.elapsed();
    assert_eq!(out.status.code, 0);
    rt.destroy(b).expect("destroy");
    d
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the snapshot benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(20);
    let dir = std::env::temp_dir().join(format!("boxd-bench-snap-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(&dir, AGENT);
    cfg.cgroup_parent = format!("boxd-bench-snap-{}", std::process::id());
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            shared::remove_bench_state(&self.0, &self.1, AGENT);
        }
    }
    let _cleanup = Cleanup(dir.clone(), cfg.cgroup_parent.clone());
    let rt = Runtime::new(cfg).expect("runtime");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    for _ in 0..3 {
        first_exec(&rt, &tokio, &BoxSpec::new("warm"));
    }
    println!(
        "{:>8}  {:>10}  {:>10}  {:>12}  {:>14}  {:>14}  {:>6}",
        "upper", "snapshot", "frozen", "bytes", "restore→exec", "create→exec", "ratio"
    );
    for (label, mib, files) in [
        ("1 MiB", 1u64, 1u64),
        ("100 MiB", 100, 10),
        ("1 GiB", 1024, 16),
    ] {
        let src = rt
            .create(&BoxSpec::new(format!("src-{mib}")))
            .expect("create");
        let each = mib * 1024 / files; // KiB per file
        let script = format!(
            "cd /workspace/home && for i in $(seq 1 {files}); do \
             head -c {}K /dev/urandom > f$i || exit 1; done",
            each
        );
        let out = tokio
            .block_on(src.exec(SpawnRequest::argv(["sh", "-c", &script])))
            .expect("fill");
        assert_eq!(out.status.code, 0, "fill the upper dir");
        let id = format!("snap-{mib}");
        let t = Instant::now();
        let captured = rt.snapshot(&src, &id).expect("snapshot");
        let snap_time = t.elapsed();
        rt.destroy(src).expect("destroy");
        let mut restore = Vec::new();
        let mut plain = Vec::new();
        for i in 0..runs {
            let mut spec = BoxSpec::new(format!("r-{mib}-{i}"));
            spec.snapshot_layers = captured.layers.clone();
            restore.push(first_exec(&rt, &tokio, &spec));
            plain.push(first_exec(
                &rt,
                &tokio,
                &BoxSpec::new(format!("p-{mib}-{i}")),
            ));
        }
        let (rm, _) = shared::median_p99(restore);
        let (pm, _) = shared::median_p99(plain);
        println!(
            "{:>8}  {:>10}  {:>10}  {:>12}  {:>14}  {:>14}  {:>5.2}x",
            label,
            shared::fmt_dur(snap_time),
            shared::fmt_dur(captured.frozen),
            captured.bytes,
            shared::fmt_dur(rm),
            shared::fmt_dur(pm),
            rm.as_secs_f64() / pm.as_secs_f64()
        );
        rt.remove_snapshot(&id).expect("remove snapshot");
    }
}
