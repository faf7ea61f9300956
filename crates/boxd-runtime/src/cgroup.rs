//! Control groups for boxes: memory, CPU and pids limits, freeze/thaw and
//! kill, on cgroup v2 (unified) and v1 (including hybrid hosts, where the v1
//! controllers hold the limits and the v2 mount is used for freeze and kill).
//!
//! This module writes cgroupfs files directly and never changes anything
//! outside the parent group it is given (`boxd` by default).

use crate::error::{Result, RuntimeError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Resource limits of one box. `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory limit in bytes; the OOM killer acts inside the box only.
    pub memory_bytes: Option<u64>,
    /// CPU quota in thousandths of a core (1000 = one full core).
    pub cpu_millis: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// Pure cgroup v2 at `root`.
    V2 { root: PathBuf },
    /// v1 controllers (hybrid when `unified` is the v2 mount beside them).
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
        freezer: PathBuf,
        unified: Option<PathBuf>,
    },
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CgroupMode::V2 { root } => write!(f, "cgroup v2 at {}", root.display()),
            CgroupMode::V1 {
                unified: Some(u), ..
            } => write!(
                f,
                "cgroup v1 (hybrid: limits on v1 controllers, freeze/kill on v2 at {})",
                u.display()
            ),
            CgroupMode::V1 { unified: None, .. } => write!(f, "cgroup v1"),
        }
    }
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

impl CgroupMode {
    /// Detects the layout from the mount table.
    pub fn detect() -> Result<CgroupMode> {
        let root = Path::new("/sys/fs/cgroup");
        if is_cgroup2(root) {
            return Ok(CgroupMode::V2 {
                root: root.to_path_buf(),
            });
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(RuntimeError::io("read /proc/self/mountinfo"))?;
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        let mut unified = None;
        for line in mountinfo.lines() {
            // ... mountpoint ... - fstype source superoptions
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mountpoint = left.split_whitespace().nth(4).unwrap_or("");
            let mut r = right.split_whitespace();
            let fstype = r.next().unwrap_or("");
            let opts = r.nth(1).unwrap_or("");
            if fstype == "cgroup2" && unified.is_none() {
                unified = Some(PathBuf::from(mountpoint));
            } else if fstype == "cgroup" {
                for o in opts.split(',') {
                    found.push((o.to_string(), PathBuf::from(mountpoint)));
                }
            }
        }
        let get = |name: &str| {
            found
                .iter()
                .find(|(o, _)| o == name)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| {
                    RuntimeError::NoCgroups(format!("the v1 {name} controller is not mounted"))
                })
        };
        Ok(CgroupMode::V1 {
            memory: get("memory")?,
            cpu: get("cpu")?,
            pids: get("pids")?,
            freezer: get("freezer")?,
            unified,
        })
    }

    /// Prepares the parent group `name` (on v2: enables the controllers).
    pub fn prepare_parent(&self, name: &str) -> Result<()> {
        match self {
            CgroupMode::V2 { root } => {
                let parent = root.join(name);
                mkdir(&parent)?;
                write(&root.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
                write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids")
            }
            CgroupMode::V1 {
                memory,
                cpu,
                pids,
                freezer,
                unified,
            } => {
                for base in [memory, cpu, pids, freezer]
                    .into_iter()
                    .chain(unified.as_ref())
                {
                    mkdir(&base.join(name))?;
                }
                // Hierarchical memory accounting, so the parent's totals are real.
                let _ = write(&memory.join(name).join("memory.use_hierarchy"), "1");
                Ok(())
            }
        }
    }

    /// The groups of box `id` under `parent` (not created yet).
    pub fn box_cgroup(&self, parent: &str, id: &str) -> BoxCgroup {
        let rel = Path::new(parent).join(id);
        match self {
            CgroupMode::V2 { root } => BoxCgroup {
                v2: Some(root.join(&rel)),
                v1: None,
            },
            CgroupMode::V1 {
                memory,
                cpu,
                pids,
                freezer,
                unified,
            } => BoxCgroup {
                v2: unified.as_ref().map(|u| u.join(&rel)),
                v1: Some(V1Groups {
                    memory: memory.join(&rel),
                    cpu: cpu.join(&rel),
                    pids: pids.join(&rel),
                    freezer: freezer.join(&rel),
                }),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V1Groups {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub pids: PathBuf,
    pub freezer: PathBuf,
}

/// The cgroup directories of one box. With `v1` set, limits live there and
/// `v2` (the hybrid host's unified mount), if any, serves freeze and kill.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoxCgroup {
    pub v2: Option<PathBuf>,
    pub v1: Option<V1Groups>,
}

fn mkdir(p: &Path) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(RuntimeError::Cgroup {
            path: p.to_path_buf(),
            source,
        }),
    }
}

fn write(p: &Path, value: &str) -> Result<()> {
    std::fs::write(p, value).map_err(|source| RuntimeError::Cgroup {
        path: p.to_path_buf(),
        source,
    })
}

/// Writes a limit the kernel may not offer (swap accounting is a build and
/// boot option): without the file, boxes can swap beyond their memory
/// limit, which is said once in the log; any other failure is an error.
fn optional_limit(p: &Path, value: &str) -> Result<()> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match write(p, value) {
        Err(RuntimeError::Cgroup { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            SAID.call_once(|| {
                tracing::warn!(file = %p.display(),
                    "this kernel has no swap accounting: a box may swap beyond its memory limit");
            });
            Ok(())
        }
        other => other,
    }
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|source| RuntimeError::Cgroup {
        path: p.to_path_buf(),
        source,
    })
}

impl BoxCgroup {
    fn dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        if let Some(v1) = &self.v1 {
            out.extend([&v1.memory, &v1.cpu, &v1.pids, &v1.freezer].map(|p| p.as_path()));
        }
        out.extend(self.v2.as_deref());
        out
    }

    /// Creates the groups and applies `limits`.
    pub fn create(&self, limits: &Limits) -> Result<()> {
        for d in self.dirs() {
            mkdir(d)?;
        }
        let r = self.apply(limits);
        if r.is_err() {
            let _ = self.remove();
        }
        r
    }

    fn apply(&self, limits: &Limits) -> Result<()> {
        match &self.v1 {
            Some(v1) => {
                if let Some(m) = limits.memory_bytes {
                    write(&v1.memory.join("memory.limit_in_bytes"), &m.to_string())?;
                    // No swap beyond the limit (memory + swap = the limit).
                    optional_limit(
                        &v1.memory.join("memory.memsw.limit_in_bytes"),
                        &m.to_string(),
                    )?;
                }
                if let Some(c) = limits.cpu_millis {
                    write(&v1.cpu.join("cpu.cfs_period_us"), "100000")?;
                    write(
                        &v1.cpu.join("cpu.cfs_quota_us"),
                        &(c.max(1) * 100).to_string(),
                    )?;
                }
                if let Some(p) = limits.pids {
                    write(&v1.pids.join("pids.max"), &p.to_string())?;
                }
            }
            None => {
                let Some(g) = &self.v2 else { return Ok(()) };
                if let Some(m) = limits.memory_bytes {
                    write(&g.join("memory.max"), &m.to_string())?;
                    optional_limit(&g.join("memory.swap.max"), "0")?;
                }
                if let Some(c) = limits.cpu_millis {
                    write(&g.join("cpu.max"), &format!("{} 100000", c.max(1) * 100))?;
                }
                if let Some(p) = limits.pids {
                    write(&g.join("pids.max"), &p.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` (and so its future children) into every group.
    pub fn join(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids currently in the box's groups.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let d = self
            .dirs()
            .into_iter()
            .next()
            .ok_or_else(|| RuntimeError::NoCgroups("no group".into()))?;
        Ok(read(&d.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Freezes every process of the box; returns once they are frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaws a frozen box.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    /// Whether the box is frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        if let Some(g) = &self.v2 {
            return Ok(read(&g.join("cgroup.events"))?
                .lines()
                .any(|l| l == "frozen 1"));
        }
        let v1 = self
            .v1
            .as_ref()
            .ok_or_else(|| RuntimeError::NoCgroups("no freezer".into()))?;
        Ok(read(&v1.freezer.join("freezer.state"))?.trim() == "FROZEN")
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        if let Some(g) = &self.v2 {
            write(&g.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        } else if let Some(v1) = &self.v1 {
            write(
                &v1.freezer.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            )?;
        }
        // Freezing completes asynchronously; wait until the state is reached.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sleep = Duration::from_micros(50);
        loop {
            if self.is_frozen()? == frozen {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Cgroup {
                    path: self.dirs()[0].to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        if frozen {
                            "box did not freeze"
                        } else {
                            "box did not thaw"
                        },
                    ),
                });
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_millis(5));
        }
    }

    /// Kills every process of the box (frozen ones included: the v1 path
    /// thaws after killing).
    pub fn kill(&self) -> Result<()> {
        if let Some(g) = &self.v2 {
            if g.join("cgroup.kill").exists() {
                return write(&g.join("cgroup.kill"), "1");
            }
        }
        // v1 without cgroup.kill: freeze so nothing forks away, kill, thaw.
        let _ = self.freeze();
        for pid in self.pids()? {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.thaw()
    }

    /// Waits (at most `timeout`) until no process is left in the groups.
    pub fn wait_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pids().map(|p| !p.is_empty()).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the groups, waiting briefly for exiting processes to leave.
    pub fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in self.dirs() {
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(source) => {
                        return Err(RuntimeError::Cgroup {
                            path: d.to_path_buf(),
                            source,
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// CPU time used by the box so far, in microseconds (from the v2
    /// group's `cpu.stat`, which hybrid hosts also keep).
    pub fn cpu_usage_usec(&self) -> Result<u64> {
        let g = self.v2.as_ref().ok_or_else(|| {
            RuntimeError::NoCgroups("CPU accounting needs a cgroup v2 mount".into())
        })?;
        let stat = read(&g.join("cpu.stat"))?;
        Ok(stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }
}
