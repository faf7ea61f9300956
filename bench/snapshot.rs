//! Snapshot and restore benchmark (library level, on the btrfs pool).
//!
//! For upper layers of 1 MiB, 100 MiB and 1 GiB (files of random data
//! written in a box), three captures interleaved per repetition (median of
//! 3): the write-back alone (`syncfs` of the pool right after the data was
//! written: the floor of any durable capture of fresh data), a *fresh*
//! snapshot (`Runtime::snapshot` right after the write: write-back, freeze,
//! clone, thaw, sync, rename) and a *settled* one (the data already on
//! disk), each with how long the box stayed frozen. Then restore — create
//! a box whose lower stack starts with the snapshot layers → first
//! command's exit — beside a plain create → first exit, interleaved.
//!
//! Run as root: `cargo bench --bench snapshot` (`-- --runs N` for the
//! restore/create pairs per size, default 20). Never asserts a timing.

#[path = "shared.rs"]
mod shared;

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");

/// A box whose upper dir holds `mib` MiB of random data in `files` files.
fn filled(
    rt: &Runtime,
    tokio: &tokio::runtime::Runtime,
    id: &str,
    mib: u64,
    files: u64,
) -> boxd_runtime::BoxHandle {
    let b = rt.create(&BoxSpec::new(id)).expect("create");
    let each = mib * 1024 / files; // KiB per file
    let script = format!(
        "cd /workspace/home && for i in $(seq 1 {files}); do \
         head -c {each}K /dev/urandom > f$i || exit 1; done"
    );
    let out = tokio
        .block_on(b.exec(SpawnRequest::argv(["sh", "-c", &script])))
        .expect("fill");
    assert_eq!(out.status.code, 0, "fill the upper dir");
    b
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the snapshot benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(20);
    let reps = 3;
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
        shared::lib_cycle(&rt, &tokio, &BoxSpec::new("warm"));
    }
    println!(
        "{:>8}  {:>11}  {:>11}  {:>11}  {:>11}  {:>11}",
        "upper", "write-back", "fresh snap", "frozen", "settled", "frozen"
    );
    let mut restores = Vec::new();
    for (label, mib, files) in [
        ("1 MiB", 1u64, 1u64),
        ("100 MiB", 100, 10),
        ("1 GiB", 1024, 16),
    ] {
        // Interleaved per repetition: (a) fill, then time the write-back
        // alone (syncfs of the pool: the floor of any durable capture of
        // data just written); (b) fill, snapshot at once (fresh);
        // (c) fill, sync, snapshot (settled: the data is on disk).
        let (mut wb, mut fresh, mut fresh_frozen, mut settled, mut settled_frozen) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut kept = None;
        for rep in 0..reps {
            let b = filled(&rt, &tokio, &format!("wb-{mib}-{rep}"), mib, files);
            let pool = dir.join("pool");
            let t = Instant::now();
            boxd_runtime::snapshot::sync_fs(&pool).expect("syncfs");
            wb.push(t.elapsed());
            rt.destroy(b).expect("destroy");

            let b = filled(&rt, &tokio, &format!("fresh-{mib}-{rep}"), mib, files);
            let id = format!("fresh-{mib}-{rep}");
            let t = Instant::now();
            let c = rt.snapshot(&b, &id).expect("snapshot");
            fresh.push(t.elapsed());
            fresh_frozen.push(c.frozen);
            rt.destroy(b).expect("destroy");
            rt.remove_snapshot(&id).expect("remove snapshot");

            let b = filled(&rt, &tokio, &format!("settled-{mib}-{rep}"), mib, files);
            boxd_runtime::snapshot::sync_fs(&pool).expect("syncfs");
            let id = format!("settled-{mib}-{rep}");
            let t = Instant::now();
            let c = rt.snapshot(&b, &id).expect("snapshot");
            settled.push(t.elapsed());
            settled_frozen.push(c.frozen);
            rt.destroy(b).expect("destroy");
            match kept {
                None => kept = Some((id, c)),
                Some(_) => rt.remove_snapshot(&id).expect("remove snapshot"),
            }
        }
        let med = |v: Vec<Duration>| shared::fmt_dur(shared::median_p99(v).0);
        println!(
            "{:>8}  {:>11}  {:>11}  {:>11}  {:>11}  {:>11}",
            label,
            med(wb),
            med(fresh),
            med(fresh_frozen),
            med(settled),
            med(settled_frozen)
        );
        restores.push((label, mib, kept.expect("at least one repetition")));
    }
    println!(
        "\n{:>8}  {:>14}  {:>14}  {:>6}",
        "upper", "restore→exec", "create→exec", "ratio"
    );
    for (label, mib, (id, captured)) in restores {
        let mut restore = Vec::new();
        let mut plain = Vec::new();
        for i in 0..runs {
            let mut spec = BoxSpec::new(format!("r-{mib}-{i}"));
            spec.snapshot_layers = captured.layers.clone();
            restore.push(shared::lib_cycle(&rt, &tokio, &spec));
            plain.push(shared::lib_cycle(
                &rt,
                &tokio,
                &BoxSpec::new(format!("p-{mib}-{i}")),
            ));
        }
        let (rm, _) = shared::median_p99(restore);
        let (pm, _) = shared::median_p99(plain);
        println!(
            "{:>8}  {:>14}  {:>14}  {:>5.2}x",
            label,
            shared::fmt_dur(rm),
            shared::fmt_dur(pm),
            rm.as_secs_f64() / pm.as_secs_f64()
        );
        rt.remove_snapshot(&id).expect("remove snapshot");
    }
}
