#![allow(dead_code)] // each benchmark uses a part of it
//! What every benchmark in `bench/` shares: median and p99 of samples,
//! durations for tables, the raw floor (clone with a box's namespaces +
//! exec `true`), and one library box cycle (create → exec `true` →
//! destroy). Measures and formats; never asserts a timing.

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use std::path::Path;
use std::time::{Duration, Instant};

/// Median and 99th percentile of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub median: Duration,
    pub p99: Duration,
}

/// Median (upper median for an even count, as `bench/runtime.rs`) and p99
/// (nearest rank).
pub fn stats(samples: &[Duration]) -> Option<Stats> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort();
    let p99 = v[((v.len() * 99).div_ceil(100)).saturating_sub(1)];
    Some(Stats {
        n: v.len(),
        median: v[v.len() / 2],
        p99,
    })
}

/// A duration for a table: milliseconds, three significant decimals below
/// 100 ms, seconds from 10 s.
pub fn fmt_dur(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// The raw floor: `clone` with the box's namespaces (user, mount, pid, net,
/// uts, ipc, cgroup) + exec `/bin/true` + wait. No rootfs, cgroups or
/// supervisor: the least any of these tools can cost.
pub fn floor_true() -> std::io::Result<Duration> {
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
    // SAFETY: the child only execs; CLONE_VFORK keeps the stack alive
    // until then.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
        libc::clone(child, top, flags, std::ptr::null_mut())
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error());
    }
    let d = t.elapsed();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(std::io::Error::other(format!(
            "the floor's child failed (wait status {status})"
        )));
    }
    Ok(d)
}

/// Creates a box through the library, runs `true` in it and destroys it;
/// returns the time from the create call to the exit of `true`.
pub fn lib_cycle(rt: &Runtime, tokio: &tokio::runtime::Runtime, spec: &BoxSpec) -> Duration {
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

/// `--runs N` from the command line, or `default`.
pub fn runs_arg(default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Median and p99 of samples (there must be some).
pub fn median_p99(v: Vec<Duration>) -> (Duration, Duration) {
    let s = stats(&v).expect("samples");
    (s.median, s.p99)
}

/// Removes what a bench made on a data dir: every box still recorded
/// there, the cgroup parent in every hierarchy, and the dir itself.
pub fn remove_bench_state(dir: &Path, cgroup_parent: &str, agent: &str) {
    let mut cfg = RuntimeConfig::new(dir, agent);
    cfg.cgroup_parent = cgroup_parent.to_string();
    if let Ok(rt) = Runtime::new(cfg) {
        for rec in rt.box_records() {
            if let Ok(h) = rt.adopt(&rec.id) {
                let _ = rt.destroy(h);
            }
        }
    }
    for base in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(base.path().join(cgroup_parent));
    }
    boxd_runtime::storage::unmount(dir);
    let _ = std::fs::remove_dir_all(dir);
}
