//! Host memory an environment costs, read from procfs and cgroupfs:
//! PSS of its processes (`/proc/<pid>/smaps_rollup`), its memory cgroup's
//! charge (`memory.usage_in_bytes` on v1, `memory.current` on v2), and the
//! host's `MemAvailable` (which also sees kernel memory no cgroup is
//! charged for: namespaces, mounts, page tables of supervisors, …).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

fn kb_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Proportional set size of one process, in bytes.
pub fn pss(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    kb_field(&text, "Pss:").with_context(|| format!("no Pss in {path}"))
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available_once() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    kb_field(&text, "MemAvailable:").context("no MemAvailable in /proc/meminfo")
}

/// Median of three `MemAvailable` reads 100 ms apart (one read can catch
/// a compiler's allocation spike on a shared host).
pub fn mem_available() -> Result<u64> {
    let mut v = Vec::new();
    for i in 0..3 {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        v.push(mem_available_once()?);
    }
    v.sort();
    Ok(v[1])
}

/// The memory cgroup directory of process `pid`.
pub fn memory_cgroup(pid: i32) -> Result<PathBuf> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, rel) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        if ctrls.split(',').any(|c| c == "memory") {
            return Ok(PathBuf::from("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/')));
        }
    }
    // Pure cgroup v2: the one `0::` line.
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        if let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) {
            return Ok(PathBuf::from("/sys/fs/cgroup").join(rel.trim_start_matches('/')));
        }
    }
    bail!("process {pid} has no memory cgroup")
}

/// What a memory cgroup is charged, in bytes.
pub fn cgroup_usage(dir: &std::path::Path) -> Result<u64> {
    for file in ["memory.usage_in_bytes", "memory.current"] {
        let p = dir.join(file);
        if let Ok(text) = std::fs::read_to_string(&p) {
            return text
                .trim()
                .parse()
                .with_context(|| format!("parse {}", p.display()));
        }
    }
    bail!("no memory usage file in {}", dir.display())
}

/// The processes in a cgroup.
pub fn cgroup_pids(dir: &std::path::Path) -> Result<Vec<i32>> {
    let p = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// One environment's cost, found from its first process.
#[derive(Default, Clone, Copy)]
pub struct EnvMem {
    /// PSS of every process in the environment's memory cgroup.
    pub pss: u64,
    /// The environment's memory cgroup charge.
    pub cgroup: u64,
}

pub fn env_mem(pid: i32) -> Result<EnvMem> {
    let dir = memory_cgroup(pid)?;
    let mut pss_sum = 0;
    for p in cgroup_pids(&dir)? {
        // A process may exit between the listing and the read.
        pss_sum += pss(p).unwrap_or(0);
    }
    Ok(EnvMem {
        pss: pss_sum,
        cgroup: cgroup_usage(&dir)?,
    })
}

/// The `/proc/meminfo` fields that explain a `MemAvailable` drop.
pub const BREAKDOWN: [&str; 8] = [
    "AnonPages",
    "Cached",
    "Shmem",
    "SUnreclaim",
    "SReclaimable",
    "KernelStack",
    "PageTables",
    "Percpu",
];

/// The [`BREAKDOWN`] fields now, in bytes (0 where the kernel lacks one).
pub fn breakdown() -> Result<[u64; BREAKDOWN.len()]> {
    let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    let mut out = [0; BREAKDOWN.len()];
    for (i, f) in BREAKDOWN.iter().enumerate() {
        out[i] = kb_field(&text, &format!("{f}:")).unwrap_or(0);
    }
    Ok(out)
}
