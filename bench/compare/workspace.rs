//! The comparison bench's private corner of the host: one temp directory
//! (`/tmp/boxd-compare-<pid>`) holding the shared rootfs, one OCI bundle
//! per peer container, the peers' private state roots (runc `--root`, crun
//! `--root`, podman `--root/--runroot/--tmpdir`) and boxd's data dir; and
//! the cgroup parents `boxd-compare-<pid>` (peers) and
//! `boxd-compare-<pid>-boxd` (boxd).
//!
//! [`Workspace::sweep`] deletes every container the peers know in those
//! private roots and the peers' cgroups; dropping the workspace sweeps,
//! unmounts whatever is left under the directory and removes it. Because
//! every peer runs with a private state root, nothing here can touch a
//! container or cgroup that this run did not create.

use crate::common::{run, Io};
use crate::peers::Tools;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// First host uid/gid of the peers' user namespaces. Like boxes, every
/// peer environment gets its own range of [`PEER_IDS`] ids (so no per-uid
/// quota, such as the kernel's 200 keys per user, is shared between them):
/// [`PEER_SLOTS`] ranges from here end exactly where boxd's slot range
/// (2^30 … 2^31) begins, and stay below 2^31, which bwrap requires.
pub const PEER_HOST_ID: u32 = 0x3000_0000;
/// Ids per peer user namespace (as many as a box gets).
pub const PEER_IDS: u32 = 65536;
/// Id ranges the peers cycle through.
pub const PEER_SLOTS: u32 = 4096;

/// One peer environment's name (container id, bundle directory) and the
/// first host id of its user namespace.
pub struct Ident {
    pub id: String,
    pub host_id: u32,
}

const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Workspace {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    /// Cgroup parent of the peers' containers (relative to each hierarchy).
    pub cg_parent: String,
    /// Cgroup parent of boxd's boxes.
    pub boxd_cg_parent: String,
    /// The host mounts v1 controllers plus a cgroup2 `unified` mount.
    pub hybrid: bool,
    pub tools: Tools,
    runc_root: PathBuf,
    crun_root: PathBuf,
    podman_dirs: [PathBuf; 3],
    /// `/run/runc` and `/run/crun` if they did not exist before this run
    /// (podman's runc and crun's wrapper may create them); removed if empty.
    created_run_dirs: Vec<PathBuf>,
    seq: AtomicUsize,
}

/// The peers' default state dirs (`/run/runc`, `/run/crun`) that do not
/// exist yet: call before running any peer (even `--version`, which may
/// create them); the workspace removes them at the end if still empty.
pub fn absent_run_dirs() -> Vec<PathBuf> {
    ["/run/runc", "/run/crun"]
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| !p.exists())
        .collect()
}

/// Whether `path` is a cgroup2 mount.
fn is_cgroup2(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::CGROUP2_SUPER_MAGIC
    }
}

pub fn mkdir(p: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

/// The OCI default capabilities minus `CAP_NET_RAW`: the set a box gets.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Syscalls a box refuses (by name only: boxd also filters clone's
/// namespace flags, which this list does not).
const DENIED_SYSCALLS: &[&str] = &[
    "mount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "pivot_root",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "clock_settime",
    "settimeofday",
    "swapon",
    "swapoff",
    "reboot",
];

/// An OCI runtime config equivalent to a box: user (ids mapped to an
/// unprivileged host range), mount, pid, net, uts, ipc and cgroup
/// namespaces; the host's `/usr` read-only; fresh `/proc`, read-only
/// `/sys`, minimal `/dev`, tmpfs `/tmp`; the OCI masked and read-only
/// paths; the box's capability set, `no_new_privs` and a seccomp deny list.
pub fn oci_config(args: &[&str], rootfs: &Path, cgroups_path: &str, host_id: u32) -> Value {
    let map = json!([{ "containerID": 0, "hostID": host_id, "size": PEER_IDS }]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": rootfs, "readonly": false },
        "hostname": "compare",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/usr", "type": "bind", "source": "/usr",
              "options": ["rbind", "ro", "nosuid", "nodev"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777", "size=512m"] }
        ],
        "linux": {
            "uidMappings": map,
            "gidMappings": map,
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "user" },
                { "type": "cgroup" }
            ],
            "cgroupsPath": cgroups_path,
            "resources": { "pids": { "limit": 2048 } },
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ],
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [
                    { "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 },
                    { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }
                ]
            }
        }
    })
}

impl Workspace {
    /// Creates the directory and the shared rootfs: empty mountpoints, the
    /// merged-/usr symlinks, a small `/etc`; owned by the peers' mapped root.
    /// `absent_run_dirs`: [`absent_run_dirs`] from before any peer ran.
    pub fn new(tools: Tools, absent_run_dirs: Vec<PathBuf>) -> Result<Workspace> {
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/boxd-compare-{pid}"));
        let created_run_dirs = absent_run_dirs;
        let ws = Workspace {
            rootfs: dir.join("rootfs"),
            runc_root: dir.join("runc-state"),
            crun_root: dir.join("crun-state"),
            podman_dirs: [
                dir.join("podman/root"),
                dir.join("podman/run"),
                dir.join("podman/tmp"),
            ],
            cg_parent: format!("boxd-compare-{pid}"),
            boxd_cg_parent: format!("boxd-compare-{pid}-boxd"),
            hybrid: is_cgroup2("/sys/fs/cgroup/unified") && !is_cgroup2("/sys/fs/cgroup"),
            tools,
            created_run_dirs,
            seq: AtomicUsize::new(0),
            dir,
        };
        // From here on, Drop cleans up whatever was made.
        mkdir(&ws.dir, 0o755)?;
        for d in [&ws.runc_root, &ws.crun_root, &ws.dir.join("bundles")] {
            mkdir(d, 0o700)?;
        }
        for d in &ws.podman_dirs {
            mkdir(d, 0o700)?;
        }
        let r = &ws.rootfs;
        for (d, mode) in [
            ("", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
            ("tmp", 0o1777),
            ("usr", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("run", 0o755),
            ("home", 0o755),
            ("var", 0o755),
        ] {
            mkdir(&r.join(d), mode)?;
        }
        for link in ["bin", "lib", "lib32", "lib64", "libx32", "sbin"] {
            // Mirror the host's merged-/usr links (Debian: /bin -> usr/bin).
            if let Ok(target) = std::fs::read_link(Path::new("/").join(link)) {
                std::os::unix::fs::symlink(&target, r.join(link))
                    .with_context(|| format!("symlink {link}"))?;
            }
        }
        let etc = r.join("etc");
        for (name, text) in [
            (
                "passwd",
                "root:x:0:0:root:/root:/bin/sh\nbox:x:1000:1000::/home/box:/bin/sh\n",
            ),
            ("group", "root:x:0:\nbox:x:1000:\n"),
            ("hosts", "127.0.0.1 localhost\n::1 localhost\n"),
            ("hostname", "compare\n"),
            ("resolv.conf", ""),
        ] {
            std::fs::write(etc.join(name), text)
                .with_context(|| format!("write rootfs /etc/{name}"))?;
        }
        if Path::new("/etc/ld.so.cache").is_file() {
            std::fs::copy("/etc/ld.so.cache", etc.join("ld.so.cache"))
                .context("copy /etc/ld.so.cache")?;
        }
        // Mountpoint files podman's runc would otherwise create: the rootfs
        // is host root's, read-only to every environment's root.
        std::fs::write(r.join("run/.containerenv"), "")
            .context("write rootfs /run/.containerenv")?;
        Ok(ws)
    }

    /// A fresh environment name for `peer` and its own id range.
    pub fn next(&self, peer: &str) -> Ident {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        Ident {
            id: format!("bc{}-{peer}-{n}", std::process::id()),
            host_id: PEER_HOST_ID + (n as u32 % PEER_SLOTS) * PEER_IDS,
        }
    }

    /// Writes the bundle (`config.json` pointing at the shared rootfs) for
    /// container `who` running `args`; returns the bundle directory.
    pub fn bundle(&self, who: &Ident, args: &[&str]) -> Result<PathBuf> {
        let id = &who.id;
        let b = self.dir.join("bundles").join(id);
        mkdir(&b, 0o700)?;
        let cfg = oci_config(
            args,
            &self.rootfs,
            &format!("/{}/{id}", self.cg_parent),
            who.host_id,
        );
        let text = serde_json::to_vec_pretty(&cfg).context("serialise config.json")?;
        std::fs::write(b.join("config.json"), text)
            .with_context(|| format!("write {}/config.json", b.display()))?;
        Ok(b)
    }

    /// Removes a bundle directory (after its container is gone).
    pub fn remove_bundle(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join("bundles").join(id));
    }

    /// `runc --root <private>`.
    pub fn runc(&self) -> Option<Command> {
        let bin = self.tools.runc.as_ref().ok()?;
        let mut c = Command::new(bin);
        c.arg("--root").arg(&self.runc_root);
        Some(c)
    }

    /// `crun --root <private>`, in a private mount namespace without the
    /// unified cgroup2 mount on a hybrid host (crun refuses hybrid hosts).
    pub fn crun(&self) -> Option<Command> {
        let bin = self.tools.crun.as_ref().ok()?;
        let mut c = Command::new(bin);
        c.arg("--root").arg(&self.crun_root);
        if self.hybrid {
            hide_unified(&mut c);
        }
        Some(c)
    }

    /// `podman` with private storage, run and tmp dirs, cgroupfs, no events,
    /// runc as its OCI runtime.
    pub fn podman(&self) -> Option<Command> {
        self.podman_storage(&self.podman_dirs, "vfs")
    }

    /// `podman` as [`Workspace::podman`], but with the storage, run and tmp
    /// dirs `dirs` (which must lie inside the workspace directory) and the
    /// storage driver `driver`.
    pub fn podman_storage(&self, dirs: &[PathBuf; 3], driver: &str) -> Option<Command> {
        let bin = self.tools.podman.as_ref().ok()?;
        let runc = self.tools.runc.as_ref().ok()?;
        let mut c = Command::new(bin);
        let [root, runroot, tmp] = dirs;
        c.arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(runroot)
            .arg("--tmpdir")
            .arg(tmp)
            .arg("--storage-driver")
            .arg(driver)
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"])
            .arg("--runtime")
            .arg(runc)
            .args(["--log-level", "error"]);
        Some(c)
    }

    /// Deletes every container in the peers' private roots and removes the
    /// peers' cgroups. Returns what could not be cleaned.
    pub fn sweep(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, cmd) in [("runc", self.runc()), ("crun", self.crun())] {
            let Some(mut list) = cmd else { continue };
            let ids = match run(list.args(["list", "-q"]), Io::Capture, SWEEP_TIMEOUT) {
                Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
                Err(e) => {
                    problems.push(format!("{name} list: {e:#}"));
                    continue;
                }
            };
            for id in ids.split_whitespace() {
                let del = if name == "runc" {
                    self.runc()
                } else {
                    self.crun()
                };
                if let Some(mut del) = del {
                    if let Err(e) = run(del.args(["delete", "-f", id]), Io::Capture, SWEEP_TIMEOUT)
                    {
                        problems.push(format!("{name} delete {id}: {e:#}"));
                    }
                }
                self.remove_bundle(id);
            }
        }
        if let Some(mut pm) = self.podman() {
            let used = std::fs::read_dir(&self.podman_dirs[0])
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if used {
                let r = run(
                    pm.args(["rm", "--all", "--force", "--time", "0"]),
                    Io::Capture,
                    SWEEP_TIMEOUT,
                );
                if let Err(e) = r {
                    problems.push(format!("podman rm --all: {e:#}"));
                }
            }
        }
        for p in remove_cgroup_trees(&self.cg_parent) {
            problems.push(p);
        }
        problems
    }
}

/// Makes `cmd` run in a private mount namespace where the cgroup2 mount at
/// `/sys/fs/cgroup/unified` is gone (propagation made private first, so
/// the unmount never reaches the host).
pub fn hide_unified(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Removes `/sys/fs/cgroup/<hierarchy>/<name>` (and every group below it,
/// deepest first) in every hierarchy. Waits at most 5 s for groups whose
/// last processes are still leaving.
pub fn remove_cgroup_trees(name: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let roots: Vec<PathBuf> = if is_cgroup2("/sys/fs/cgroup") {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    for root in roots {
        collect_dirs(&root.join(name), &mut dirs, 0);
    }
    // Deepest first.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut problems = Vec::new();
    for d in dirs {
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    problems.push(format!("rmdir {}: {e}", d.display()));
                    break;
                }
            }
        }
    }
    problems
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 || !d.is_dir() {
        return;
    }
    out.push(d.to_path_buf());
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out, depth + 1);
        }
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v.dedup();
    v
}

/// Detaches every mount below `dir` (deepest first, a few passes), then
/// removes it; says so loudly when something stays.
pub fn unmount_and_remove(dir: &Path) {
    for _ in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts.iter().take(10_000) {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: umount2 with a valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("compare: CLEANUP PROBLEM: remove {}: {e}", dir.display());
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        for p in self.sweep() {
            eprintln!("compare: CLEANUP PROBLEM: {p}");
        }
        for p in remove_cgroup_trees(&self.boxd_cg_parent) {
            eprintln!("compare: CLEANUP PROBLEM: {p}");
        }
        // Anything still mounted below the directory (a peer's storage
        // driver may leave a private bind mount of its home).
        unmount_and_remove(&self.dir);
        for d in &self.created_run_dirs {
            // Only if empty: never remove another user's state.
            let _ = std::fs::remove_dir(d);
        }
    }
}
