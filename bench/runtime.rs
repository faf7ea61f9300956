//! Library-level box start benchmark.
//!
//! Measures create → first command's exit for `/bin/true` (100 runs after a
//! warm-up), interleaved with the raw floor measured in the same process:
//! `clone` with the same namespaces (user, mount, pid, net, uts, ipc,
//! cgroup) + `exec /bin/true` + wait, with no overlay, cgroups or agent.
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
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut n = 0;
    let mut box_once = || {
        n += 1;
        shared::lib_cycle(&rt, &tokio, &format!("bench-{n}"))
    };
    for _ in 0..5 {
        box_once();
        shared::floor_true().expect("floor");
    }
    let (mut boxes, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        boxes.push(box_once());
        floor.push(shared::floor_true().expect("floor"));
    }
    let (bm, bp) = shared::median_p99(boxes);
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
        "ratio create/floor (median): {:.2}x; exec/host spawn (median): {:.2}x",
        bm.as_secs_f64() / fm.as_secs_f64(),
        em.as_secs_f64() / sm.as_secs_f64()
    );
    // Boxes are gone; the runtime goes before the cleanup guard.
    drop(rt);
}
