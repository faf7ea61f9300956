//! The peers boxd is compared with, each run the way a user would run it
//! for an environment equivalent to a box (see `workspace::oci_config`):
//! `runc`, `crun` (behind a private mount namespace on hybrid cgroup
//! hosts), `bwrap`, `podman --rootfs`, `nsenter`, and the raw floor (clone
//! with the box's namespaces + exec `true`).
//!
//! Every operation here either times one command or starts/stops a
//! long-running container; none of them judges a timing.

use crate::common::{run, run_timed, which, Io};
use crate::workspace::{hide_unified, Workspace, PEER_IDS};
use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Longest any single peer command may take before it is killed.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where each peer's executable is, or why it is unavailable.
#[derive(Clone)]
pub struct Tools {
    pub runc: Result<PathBuf, String>,
    pub crun: Result<PathBuf, String>,
    pub bwrap: Result<PathBuf, String>,
    pub podman: Result<PathBuf, String>,
    pub nsenter: Result<PathBuf, String>,
    /// Whether python3 can make a venv (scenario 4 installs mitmproxy from
    /// PyPI into one), or why not.
    pub venv: Result<(), String>,
    /// What boxd itself runs on the host: `nft` (its network ruleset, for
    /// scenario 4's daemons) and `mkfs.btrfs` (its storage pool).
    pub boxd_host: Result<(), String>,
    /// `name version` lines for the report.
    pub versions: Vec<String>,
}

fn find(bin: &str, pkg: &str) -> Result<PathBuf, String> {
    which(bin).ok_or_else(|| {
        format!("`{bin}` not found (Debian package {pkg}; bench/compare-peers installs it)")
    })
}

fn version(bin: &Result<PathBuf, String>, flag: &str) -> Option<String> {
    let path = bin.as_ref().ok()?;
    let out = run(
        Command::new(path).arg(flag),
        Io::Capture,
        Duration::from_secs(30),
    )
    .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_string())
}

impl Tools {
    pub fn find() -> Tools {
        let mut t = Tools {
            runc: find("runc", "runc"),
            crun: find("crun", "crun"),
            bwrap: find("bwrap", "bubblewrap"),
            podman: find("podman", "podman"),
            nsenter: find("nsenter", "util-linux"),
            venv: run(
                Command::new("python3").args(["-c", "import venv, ensurepip"]),
                Io::Capture,
                Duration::from_secs(30),
            )
            .map(drop)
            .map_err(|e| {
                format!(
                    "python3 cannot make a venv for mitmproxy ({e:#}; Debian package \
                     python3-venv; bench/compare-peers installs it)"
                )
            }),
            boxd_host: find("nft", "nftables")
                .and(find("mkfs.btrfs", "btrfs-progs"))
                .map(drop),
            versions: Vec::new(),
        };
        if t.podman.is_ok() && t.runc.is_err() {
            t.podman =
                Err("podman is run with runc as its OCI runtime, and runc is missing".into());
        }
        t.versions = [
            version(&t.runc, "--version"),
            version(&t.crun, "--version"),
            version(&t.bwrap, "--version"),
            version(&t.podman, "--version"),
            version(&t.nsenter, "--version"),
        ]
        .into_iter()
        .flatten()
        .collect();
        t
    }

    /// The peers whose executables are missing.
    pub fn missing(&self) -> Vec<String> {
        [
            &self.runc,
            &self.crun,
            &self.bwrap,
            &self.podman,
            &self.nsenter,
        ]
        .into_iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .chain(self.venv.clone().err())
        .chain(self.boxd_host.clone().err())
        .collect()
    }
}

/// `runc run` of `/bin/true` in a fresh bundle; the time until runc exits
/// (it deletes the container before exiting).
pub fn runc_run_true(ws: &Workspace) -> Result<Duration> {
    let who = ws.next("runc");
    let b = ws.bundle(&who, &["/bin/true"])?;
    let mut c = ws.runc().context("runc is unavailable")?;
    c.arg("run").arg("--bundle").arg(&b).arg(&who.id);
    let r = run_timed(&mut c, Io::Capture, CMD_TIMEOUT);
    ws.remove_bundle(&who.id);
    Ok(r?.0)
}

/// `crun run` of `/bin/true` (behind the private mount namespace wrapper
/// on a hybrid host, which is timed too).
pub fn crun_run_true(ws: &Workspace) -> Result<Duration> {
    let who = ws.next("crun");
    let b = ws.bundle(&who, &["/bin/true"])?;
    let mut c = ws.crun().context("crun is unavailable")?;
    c.arg("run").arg("--bundle").arg(&b).arg(&who.id);
    let r = run_timed(&mut c, Io::Capture, CMD_TIMEOUT);
    ws.remove_bundle(&who.id);
    Ok(r?.0)
}

/// The crun wrapper alone: private mount namespace, unified mount hidden,
/// exec `/bin/true`.
pub fn crun_wrapper_true() -> Result<Duration> {
    let mut c = Command::new("/bin/true");
    hide_unified(&mut c);
    Ok(run_timed(&mut c, Io::Capture, CMD_TIMEOUT)?.0)
}

/// `bwrap` as an unprivileged host uid of its own (so root inside maps to
/// an unprivileged host id, as in a box) with every namespace it can unshare
/// (user, mount, pid, net, uts, ipc, cgroup), `/usr` read-only, the
/// rootfs's `/etc` read-only, fresh `/proc`, minimal `/dev`, tmpfs `/tmp`.
pub fn bwrap_command(ws: &Workspace, args: &[&str]) -> Result<Command> {
    let bin = ws
        .tools
        .bwrap
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let who = ws.next("bwrap");
    let mut c = Command::new(bin);
    c.uid(who.host_id).gid(who.host_id);
    c.args(["--unshare-all", "--unshare-user", "--die-with-parent"])
        .args(["--ro-bind", "/usr", "/usr"]);
    for link in ["bin", "lib", "lib32", "lib64", "libx32", "sbin"] {
        if let Ok(target) = std::fs::read_link(std::path::Path::new("/").join(link)) {
            c.arg("--symlink").arg(target).arg(format!("/{link}"));
        }
    }
    c.arg("--ro-bind")
        .arg(ws.rootfs.join("etc"))
        .arg("/etc")
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .args(["--uid", "0", "--gid", "0", "--hostname", "compare", "--"])
        .args(args);
    Ok(c)
}

pub fn bwrap_run_true(ws: &Workspace) -> Result<Duration> {
    let mut c = bwrap_command(ws, &["/bin/true"])?;
    Ok(run_timed(&mut c, Io::Capture, CMD_TIMEOUT)?.0)
}

/// The `podman run` flags that make its container equivalent to a box.
fn podman_run_args(ws: &Workspace, c: &mut Command) {
    podman_env_args(ws, c);
    c.arg("--rootfs").arg(&ws.rootfs);
}

/// [`podman_run_args`] without the root: a fresh name, the user namespace
/// range, network, cgroup, limits and `/usr`; the caller adds the image.
/// Returns the container's name.
pub fn podman_env_args(ws: &Workspace, c: &mut Command) -> String {
    let who = ws.next("podman");
    let map = format!("0:{}:{PEER_IDS}", who.host_id);
    c.arg("--name").arg(&who.id);
    c.args(["--network", "none", "--cgroupns", "private"])
        .arg("--cgroup-parent")
        .arg(format!("/{}", ws.cg_parent))
        .args(["--uidmap", &map, "--gidmap", &map])
        // podman's default rlimits exceed this host's hard limits.
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .args(["--pids-limit", "2048", "--hostname", "compare"])
        .args(["-v", "/usr:/usr:ro"]);
    who.id
}

/// `podman run --rm --rootfs … /bin/true`; the time until podman exits
/// (the container is removed by then).
pub fn podman_run_true(ws: &Workspace) -> Result<Duration> {
    let mut c = ws.podman().context("podman is unavailable")?;
    c.args(["run", "--rm"]);
    podman_run_args(ws, &mut c);
    c.arg("/bin/true");
    Ok(run_timed(&mut c, Io::Capture, CMD_TIMEOUT)?.0)
}

/// The raw floor (see `shared::floor_true`).
pub fn floor_true() -> Result<Duration> {
    crate::shared::floor_true().context("clone with the box's namespaces + exec true")
}

/// `/bin/true` spawned on the host (std::process, through the same helper
/// as every peer command).
pub fn host_true() -> Result<Duration> {
    Ok(run_timed(&mut Command::new("/bin/true"), Io::Capture, CMD_TIMEOUT)?.0)
}

/// `nsenter` into every namespace of process `pid` (user, mount, pid, net,
/// uts, ipc, cgroup; its root and working directory) + exec `/bin/true`.
pub fn nsenter_true(ws: &Workspace, pid: i32) -> Result<Duration> {
    let bin = ws
        .tools
        .nsenter
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut c = Command::new(bin);
    c.arg("-t")
        .arg(pid.to_string())
        .args(["-U", "-m", "-p", "-n", "-u", "-i", "-C", "-r", "-w"])
        .arg("/bin/true");
    Ok(run_timed(&mut c, Io::Capture, CMD_TIMEOUT)?.0)
}

/// A detached, idle container of a peer.
pub struct Idle {
    pub id: String,
    /// Host pid of the container's first process.
    pub pid: i32,
    /// Host pid of its supervisor (podman's conmon), if it has one.
    pub supervisor: Option<i32>,
}

/// `runc run -d` of `/bin/sleep infinity`. runc itself exits: runc keeps
/// no process per container.
pub fn runc_start_idle(ws: &Workspace) -> Result<Idle> {
    let who = ws.next("runc");
    let id = who.id.clone();
    let b = ws.bundle(&who, &["/bin/sleep", "infinity"])?;
    let pidfile = b.join("pid");
    let mut c = ws.runc().context("runc is unavailable")?;
    c.args(["run", "--detach", "--pid-file"])
        .arg(&pidfile)
        .arg("--bundle")
        .arg(&b)
        .arg(&id);
    if let Err(e) = run(&mut c, Io::Detached, CMD_TIMEOUT) {
        // It may exist half-made: delete it now rather than at the sweep.
        let _ = runc_delete(ws, &id);
        return Err(e);
    }
    let pid = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("read {}", pidfile.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parse {}", pidfile.display()))?;
    Ok(Idle {
        id,
        pid,
        supervisor: None,
    })
}

pub fn runc_exec_true(ws: &Workspace, id: &str) -> Result<Duration> {
    let mut c = ws.runc().context("runc is unavailable")?;
    c.args(["exec", id, "/bin/true"]);
    Ok(run_timed(&mut c, Io::Capture, CMD_TIMEOUT)?.0)
}

/// `runc delete --force` (kills the container first) and its bundle.
pub fn runc_delete(ws: &Workspace, id: &str) -> Result<()> {
    let mut c = ws.runc().context("runc is unavailable")?;
    c.args(["delete", "--force", id]);
    let r = run(&mut c, Io::Capture, CMD_TIMEOUT);
    ws.remove_bundle(id);
    r.map(|_| ())
}

/// `podman run -d … /bin/sleep infinity`; returns the container id.
pub fn podman_start_idle(ws: &Workspace) -> Result<String> {
    let mut c = ws.podman().context("podman is unavailable")?;
    c.args(["run", "--detach"]);
    podman_run_args(ws, &mut c);
    c.args(["/bin/sleep", "infinity"]);
    let out = run(&mut c, Io::Capture, CMD_TIMEOUT)?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if id.is_empty() || id.contains(char::is_whitespace) {
        bail!("podman run --detach printed no container id");
    }
    Ok(id)
}

/// The container and conmon pids of podman containers.
pub fn podman_inspect(ws: &Workspace, ids: &[String]) -> Result<Vec<Idle>> {
    let mut out = Vec::new();
    // In chunks, to keep the argument list short.
    for chunk in ids.chunks(100) {
        let mut c = ws.podman().context("podman is unavailable")?;
        c.args([
            "inspect",
            "--format",
            "{{.Id}} {{.State.Pid}} {{.State.ConmonPid}}",
        ])
        .args(chunk);
        let text = run(&mut c, Io::Capture, CMD_TIMEOUT)?;
        for line in String::from_utf8_lossy(&text.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [id, pid, conmon] = f[..] {
                out.push(Idle {
                    id: id.to_string(),
                    pid: pid.parse().context("podman inspect: container pid")?,
                    supervisor: conmon.parse().ok(),
                });
            }
        }
    }
    if out.len() != ids.len() {
        bail!(
            "podman inspect described {} of {} containers",
            out.len(),
            ids.len()
        );
    }
    Ok(out)
}

pub fn podman_exec_true(ws: &Workspace, id: &str) -> Result<Duration> {
    let mut c = ws.podman().context("podman is unavailable")?;
    c.args(["exec", id, "/bin/true"]);
    Ok(run_timed(&mut c, Io::Capture, CMD_TIMEOUT)?.0)
}

/// `podman rm --force --time 0` of the given containers.
pub fn podman_rm(ws: &Workspace, ids: &[String]) -> Result<()> {
    for chunk in ids.chunks(100) {
        let mut c = ws.podman().context("podman is unavailable")?;
        c.args(["rm", "--force", "--time", "0"]).args(chunk);
        run(&mut c, Io::Capture, CMD_TIMEOUT)?;
    }
    Ok(())
}

/// Idle peer containers that are removed when this guard goes, whatever
/// happened in between.
pub struct IdleGuard<'a> {
    ws: &'a Workspace,
    pub runc: Vec<Idle>,
    pub podman: Vec<String>,
}

impl<'a> IdleGuard<'a> {
    pub fn new(ws: &'a Workspace) -> Self {
        IdleGuard {
            ws,
            runc: Vec::new(),
            podman: Vec::new(),
        }
    }

    /// Removes everything now; returns the first failure.
    pub fn clear(&mut self) -> Result<()> {
        let mut first = Ok(());
        for idle in self.runc.drain(..) {
            let r = runc_delete(self.ws, &idle.id);
            if first.is_ok() {
                first = r;
            }
        }
        let ids: Vec<String> = self.podman.drain(..).collect();
        if !ids.is_empty() {
            let r = podman_rm(self.ws, &ids);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!("compare: CLEANUP PROBLEM: {e:#} (the sweep will retry)");
        }
    }
}
