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

#[path = "stats.rs"]
mod stats;

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");

fn floor_once() -> Duration {
    extern "C" fn child(_: *mut libc::c_void) -> libc::c_int {
        let path = c"/bin/true";
        let argv = [path.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        // SAFETY: exec in a vfork'd child with static strings.
        unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127)
        }
    }
    let mut stack = vec![0u8; 64 * 1024];
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_VM
        | libc::CLONE_VFORK
        | libc::SIGCHLD;
    let t = Instant::now();
    // SAFETY: the child only execs; CLONE_VFORK keeps the stack alive.
    unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
        let pid = libc::clone(child, top, flags, std::ptr::null_mut());
        assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "floor child failed"
        );
    }
    t.elapsed()
}

fn stats(v: Vec<Duration>) -> (Duration, Duration) {
    let s = stats::stats(&v).expect("samples");
    (s.median, s.p99)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the runtime benchmark needs root");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("boxd-bench-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(&dir, AGENT);
    cfg.cgroup_parent = format!("boxd-bench-{}", std::process::id());
    let parent = cfg.cgroup_parent.clone();
    // Removes the bench's data dir and cgroup parents even if a step panics.
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for base in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_dir(base.path().join(&self.1));
            }
            let _ = std::fs::remove_dir_all(&self.0);
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
        let t = Instant::now();
        let b = rt
            .create(&BoxSpec::new(format!("bench-{n}")))
            .expect("create");
        let out = tokio
            .block_on(b.exec(SpawnRequest::argv(["/bin/true"])))
            .expect("exec");
        let d = t.elapsed();
        assert_eq!(out.status.code, 0);
        rt.destroy(b).expect("destroy");
        d
    };
    for _ in 0..5 {
        box_once();
        floor_once();
    }
    let (mut boxes, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        boxes.push(box_once());
        floor.push(floor_once());
    }
    let (bm, bp) = stats(boxes);
    let (fm, fp) = stats(floor);
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
    let (em, ep) = stats(execs);
    let (sm, sp) = stats(spawns);
    println!("box runtime benchmark ({runs} runs, interleaved)");
    println!("| measurement | median | p99 |");
    println!("|---|---|---|");
    println!(
        "| create → first exec of `true` exits (boxd library) | {} | {} |",
        stats::fmt_dur(bm),
        stats::fmt_dur(bp)
    );
    println!(
        "| raw floor: clone(7 namespaces) + exec `true` | {} | {} |",
        stats::fmt_dur(fm),
        stats::fmt_dur(fp)
    );
    println!(
        "| exec round trip of `true` in a running box | {} | {} |",
        stats::fmt_dur(em),
        stats::fmt_dur(ep)
    );
    println!(
        "| host spawn of `true` (std::process) | {} | {} |",
        stats::fmt_dur(sm),
        stats::fmt_dur(sp)
    );
    println!(
        "ratio create/floor (median): {:.2}x; exec/host spawn (median): {:.2}x",
        bm.as_secs_f64() / fm.as_secs_f64(),
        em.as_secs_f64() / sm.as_secs_f64()
    );
    // Boxes are gone; the runtime goes before the cleanup guard.
    drop(rt);
}
