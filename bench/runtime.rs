//! Library-level box start benchmark.
//!
//! Measures create → first command's exit for `/bin/true` (100 runs after a
//! warm-up), interleaved with the raw floor measured in the same process:
//! `clone` with the same namespaces (user, mount, pid, net, uts, ipc,
//! cgroup) + `exec /bin/true` + wait, with no overlay, cgroups or agent.
//! The boxes are made on the btrfs storage pool with a disk limit (a
//! subvolume + quota group each) and, interleaved, on a second runtime
//! whose pool is plain directories (`driver = "dir"`): the difference is
//! what disk limits cost a create.
//! Also measures the exec round trip of `/bin/true` on a running box and of
//! a bare `spawn` of `/bin/true` from this process, for reference.
//!
//! Run as root: `cargo bench --bench runtime` (`-- --runs N` to change the
//! count). Prints medians, p99s and ratios; never asserts a timing.

#[path = "shared.rs"]
mod shared;

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use std::time::Instant;

const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the runtime benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(100);
    let dir = std::env::temp_dir().join(format!("boxd-bench-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(&dir, AGENT);
    cfg.cgroup_parent = format!("boxd-bench-{}", std::process::id());
    let parent = cfg.cgroup_parent.clone();
    // Removes the bench's boxes, data dir and cgroup parents even if a step panics.
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            shared::remove_bench_state(&self.0, &self.1, AGENT);
        }
    }
    let _cleanup = Cleanup(dir.clone(), parent);
    let rt = Runtime::new(cfg).expect("runtime");
    assert!(
        rt.storage().enforces_limits(),
        "the btrfs pool is unavailable (btrfs-progs?)"
    );
    let plain_dir = std::env::temp_dir().join(format!("boxd-bench-dir-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(&plain_dir, AGENT);
    cfg.cgroup_parent = format!("boxd-bench-dir-{}", std::process::id());
    cfg.storage.driver = boxd_runtime::storage::Driver::Dir;
    let _cleanup_plain = Cleanup(plain_dir, cfg.cgroup_parent.clone());
    let rt_plain = Runtime::new(cfg).expect("runtime (dir pool)");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut n = 0;
    let mut box_once = |rt: &Runtime| {
        n += 1;
        let mut spec = BoxSpec::new(format!("bench-{n}"));
        spec.disk_bytes = Some(10 << 30);
        shared::lib_cycle(rt, &tokio, &spec)
    };
    for _ in 0..5 {
        box_once(&rt);
        box_once(&rt_plain);
        shared::floor_true().expect("floor");
    }
    let (mut boxes, mut plain, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        boxes.push(box_once(&rt));
        plain.push(box_once(&rt_plain));
        floor.push(shared::floor_true().expect("floor"));
    }
    let (bm, bp) = shared::median_p99(boxes);
    let (pm, pp) = shared::median_p99(plain);
    let (fm, fp) = shared::median_p99(floor);
    // Exec round trip on a running box vs a bare spawn from the host.
    let b = rt.create(&BoxSpec::new("bench-exec")).expect("create");
    let (mut execs, mut spawns) = (Vec::new(), Vec::new());
    for _ in 0..(runs * 10) {
        let t = Instant::now();
        tokio
            .block_on(b.exec(SpawnRequest::argv(["/bin/true"])))
            .expect("exec");
        execs.push(t.elapsed());
        let t = Instant::now();
        std::process::Command::new("/bin/true")
            .output()
            .expect("spawn");
        spawns.push(t.elapsed());
    }
    rt.destroy(b).expect("destroy");
    let (em, ep) = shared::median_p99(execs);
    let (sm, sp) = shared::median_p99(spawns);
    println!("box runtime benchmark ({runs} runs, interleaved)");
    println!("| measurement | median | p99 |");
    println!("|---|---|---|");
    println!(
        "| create → first exec of `true` exits (boxd library) | {} | {} |",
        shared::fmt_dur(bm),
        shared::fmt_dur(bp)
    );
    println!(
        "| the same on a `dir` pool (no disk limit) | {} | {} |",
        shared::fmt_dur(pm),
        shared::fmt_dur(pp)
    );
    println!(
        "| raw floor: clone(7 namespaces) + exec `true` | {} | {} |",
        shared::fmt_dur(fm),
        shared::fmt_dur(fp)
    );
    println!(
        "| exec round trip of `true` in a running box | {} | {} |",
        shared::fmt_dur(em),
        shared::fmt_dur(ep)
    );
    println!(
        "| host spawn of `true` (std::process) | {} | {} |",
        shared::fmt_dur(sm),
        shared::fmt_dur(sp)
    );
    println!(
        "ratio create/floor (median): {:.2}x; btrfs pool/dir pool: {:.2}x; exec/host spawn (median): {:.2}x",
        bm.as_secs_f64() / fm.as_secs_f64(),
        bm.as_secs_f64() / pm.as_secs_f64(),
        em.as_secs_f64() / sm.as_secs_f64()
    );
    // Boxes are gone; the runtimes go before the cleanup guards.
    drop(rt);
    drop(rt_plain);
}
