//! Processes inside the box: spawning with streamed stdio, the PID 1 zombie
//! reaper, stdin, signals, the process list, and the tracking of every
//! process a command starts, however it detaches.
//!
//! **Tracking.** Each spawned command gets a tracker: a small process of
//! the agent (forked, never exec'd; `boxd-exec` in `ps`) that is a *child
//! subreaper* (`PR_SET_CHILD_SUBREAPER`) and the command's parent. A process
//! whose parent dies is reparented to its nearest subreaper ancestor, so
//! every descendant of the command — `setsid`, double fork, `nohup`, a
//! `server &` — stays below its tracker for its whole life: the process tree
//! is something no box process can rewrite. The tracker reaps them, reports
//! the command's own exit status to the agent over a pipe, and exits when
//! it has no child left. So "the processes of exec X" is "the subtree of X's
//! tracker" (read from `/proc`), and ending an exec (timeout, a client gone)
//! kills that whole subtree.
//!
//! Why not a cgroup per exec: the box cannot be allowed to write its cgroup
//! files (it could move itself out), so placing each command in a cgroup
//! before it runs would need the daemon in every spawn (a host round trip
//! and a pid translation), with a v1 and a v2 variant; the tree needs
//! nothing from the host and is the same on every kernel and cgroup version.
//!
//! **Fail closed.** Trackers ignore every catchable signal and run as box
//! root (a command run as another user cannot signal its tracker). Box root
//! can still SIGKILL one; its processes are then reparented to PID 1, where
//! nothing else ever lives: after every reap the agent kills each child of
//! PID 1 that is not a tracker, so no process ever runs untracked.
//!
//! The agent is PID 1, so orphans of dead trackers come to it. One reaper
//! (`waitpid(-1)` on SIGCHLD) collects them and the trackers. The registry
//! lock is held across `spawn` and across each reap, so a tracker is never
//! reaped (or taken for an orphan) before it is registered, and a child of
//! PID 1 is never reaped between the check and the kill of the orphan rule.
//! This module never lets a daemon file descriptor reach a spawned process
//! (`close_range` before `exec`).

use crate::protocol::{ExecRef, ExitStatus, ProcessInfo, SpawnRequest};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// Defaults every process gets unless the box or the request overrides them
/// (PATH and HOME can never be overridden: see the runtime's env rules).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A user inside the box, resolved from the box's own `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl BoxUser {
    pub fn root() -> BoxUser {
        BoxUser {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
        }
    }

    /// Looks a user up by name or numeric uid in `passwd` (the file's text).
    pub fn lookup(passwd: &str, who: &str) -> Option<BoxUser> {
        let numeric: Option<u32> = who.parse().ok();
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                continue;
            }
            let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
                continue;
            };
            if f[0] == who || numeric == Some(uid) {
                return Some(BoxUser {
                    name: f[0].to_string(),
                    uid,
                    gid,
                    home: f[5].to_string(),
                });
            }
        }
        // A numeric uid without a passwd entry is still a valid identity.
        numeric.map(|uid| BoxUser {
            name: uid.to_string(),
            uid,
            gid: uid,
            home: "/".into(),
        })
    }
}

type Stdin = Arc<Mutex<Option<File>>>;

/// A spawned command, by its own pid.
struct Entry {
    stdin: Stdin,
}

/// A command's tracker, by the tracker's pid.
struct Tracker {
    exec: ExecRef,
}

#[derive(Default)]
struct Table {
    /// Spawned commands still running.
    commands: HashMap<i32, Entry>,
    /// Trackers not reaped yet.
    trackers: HashMap<i32, Tracker>,
}

/// The agent's table of spawned commands and their trackers.
pub struct Registry {
    table: Mutex<Table>,
    /// Bumped after every reap: trackers gone, orphans killed.
    reaped: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            table: Mutex::default(),
            reaped: watch::channel(0).0,
        }
    }
}

/// A freshly spawned command.
pub struct Spawned {
    /// The command's pid.
    pub pid: i32,
    /// Its tracker's pid.
    pub tracker: i32,
    pub stdout: std::process::ChildStdout,
    pub stderr: std::process::ChildStderr,
    /// The tracker's report pipe: the command's wait status comes on it.
    pub report: OwnedFd,
    pub stdin: Stdin,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no such user in the box: {0}")]
    UnknownUser(String),
    #[error("working directory {0} does not exist in the box")]
    NoCwd(String),
    #[error("empty command")]
    EmptyCommand,
    #[error("{0}: command not found")]
    NotFound(String),
    #[error("could not start {0}: {1}")]
    Io(String, std::io::Error),
}

/// Why a kill was refused.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("invalid signal {0}")]
    BadSignal(i32),
    #[error("no process {0} in the box")]
    NotFound(i32),
    #[error(
        "process {0} is boxd's own (the box's init or an exec tracker); it cannot be signalled"
    )]
    Internal(i32),
    #[error("signal {signal} to pid {pid}: {error}")]
    Os {
        pid: i32,
        signal: i32,
        error: std::io::Error,
    },
}

/// The tracker's side of a command (runs in the forked child, which is a
/// copy of a multi-threaded process: async-signal-safe calls only). Never
/// returns.
///
/// # Safety
/// Only to be called in a freshly forked child.
unsafe fn track(report: libc::c_int, command: libc::pid_t) -> ! {
    // Deaf to every signal a box process could send it (SIGKILL aside),
    // and SIGCHLD back to its default so `waitpid` sees every status.
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP && sig != libc::SIGCHLD {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    // Nothing but the report pipe: the command's stdio and std's exec-error
    // pipe must close when the command (and its descendants) close them.
    if report > 0 {
        libc::syscall(libc::SYS_close_range, 0u32, (report - 1) as u32, 0u32);
    }
    libc::syscall(libc::SYS_close_range, (report + 1) as u32, u32::MAX, 0u32);
    libc::prctl(
        libc::PR_SET_NAME,
        c"boxd-exec".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    let pid = command.to_ne_bytes();
    libc::write(report, pid.as_ptr().cast(), pid.len());
    loop {
        let mut status: libc::c_int = 0;
        let r = libc::waitpid(-1, &mut status, 0);
        if r == command {
            let st = status.to_ne_bytes();
            libc::write(report, st.as_ptr().cast(), st.len());
        } else if r < 0 {
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // ECHILD: every descendant is gone.
            libc::_exit(0);
        }
    }
}

/// The exit status of a raw wait status.
fn exit_status(raw: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(raw) {
        ExitStatus::killed(libc::WTERMSIG(raw))
    } else {
        ExitStatus::exited(libc::WEXITSTATUS(raw))
    }
}

/// Waits for the command's wait status on its tracker's report pipe. A
/// pipe that closes without one means the tracker was killed with its
/// command (SIGKILL): that is how the command ended.
pub async fn command_exit(report: OwnedFd) -> ExitStatus {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(report) else {
        return ExitStatus::killed(libc::SIGKILL);
    };
    let mut raw = [0u8; 4];
    match pipe.read_exact(&mut raw).await {
        Ok(_) => exit_status(libc::c_int::from_ne_bytes(raw)),
        Err(_) => ExitStatus::killed(libc::SIGKILL),
    }
}

/// Opens a pidfd on `pid` (the process that has that pid now).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open only returns a new descriptor (or -1).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    // SAFETY: a non-negative result is a descriptor we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(fd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: the signal goes to the process the pidfd pins, nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `(pid, ppid, state)` of one process, from `/proc/<pid>/stat`.
fn stat_of(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, state))
}

/// `pid -> ppid` of every process in the box.
fn parents() -> HashMap<i32, i32> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            if let Some((ppid, _)) = stat_of(pid) {
                out.insert(pid, ppid);
            }
        }
    }
    out
}

/// Every process below `root` in `parents` (not `root` itself).
fn subtree(parents: &HashMap<i32, i32>, root: i32) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, &ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = HashSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if out.insert(c) {
                todo.push(c);
            }
        }
    }
    out
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `req` with `box_env` under it, below a tracker of its own,
    /// in a new session (so signals reach the whole process group).
    pub fn spawn(
        &self,
        req: &SpawnRequest,
        box_env: &BTreeMap<String, String>,
    ) -> Result<Spawned, SpawnError> {
        let user = match &req.user {
            None => BoxUser::root(),
            Some(who) => {
                let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                BoxUser::lookup(&passwd, who).ok_or_else(|| SpawnError::UnknownUser(who.clone()))?
            }
        };
        let cwd = req.cwd.clone().unwrap_or_else(|| crate::DEFAULT_CWD.into());
        if !std::path::Path::new(&cwd).is_dir() {
            return Err(SpawnError::NoCwd(cwd));
        }
        let (program, args): (String, Vec<String>) = match &req.command {
            crate::protocol::Command::Shell(s) => ("/bin/sh".into(), vec!["-c".into(), s.clone()]),
            crate::protocol::Command::Argv(v) => {
                let (first, rest) = v.split_first().ok_or(SpawnError::EmptyCommand)?;
                (first.clone(), rest.to_vec())
            }
        };
        let io = |e: std::io::Error| SpawnError::Io(program.clone(), e);
        let (report_rd, report_wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io(e.into()))?;
        let report_fd = report_wr.as_raw_fd();
        let c_cwd =
            std::ffi::CString::new(cwd.clone()).map_err(|_| SpawnError::NoCwd(cwd.clone()))?;
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("LANG", "C.UTF-8")
            .env("TERM", "xterm")
            .envs(box_env)
            .envs(&req.env)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (uid, gid) = (user.uid, user.gid);
        // SAFETY: the closure only makes async-signal-safe syscalls (it
        // runs in the child std forked), and `track` never returns.
        unsafe {
            cmd.pre_exec(move || {
                // Mark every inherited descriptor above stderr close-on-exec
                // (not closed now: std's exec-error pipe must stay usable).
                if libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Restore the default signal mask the agent changed.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                // And the box's open-file limit (the agent runs at its hard one).
                crate::set_nofile(crate::BOX_NOFILE_SOFT, u64::MAX)?;
                // This child becomes the tracker; its child the command.
                if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                match libc::fork() {
                    -1 => return Err(std::io::Error::last_os_error()),
                    0 => {}
                    command => track(report_fd, command),
                }
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The agent (and the tracker) are shielded from the box's
                // OOM killer; commands are not (raising needs no privilege).
                let adj = c"/proc/self/oom_score_adj";
                let fd = libc::open(adj.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                // The user is taken here, not by std: the tracker above
                // stays box root, out of reach of the command's signals.
                if (uid != 0 || gid != 0)
                    && (libc::setgroups(0, std::ptr::null()) < 0
                        || libc::setgid(gid) < 0
                        || libc::setuid(uid) < 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::chdir(c_cwd.as_ptr()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut table = self.lock();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SpawnError::NotFound(program.clone())
            } else {
                SpawnError::Io(program.clone(), e)
            }
        })?;
        drop(report_wr);
        let tracker = child.id() as i32;
        table.trackers.insert(
            tracker,
            Tracker {
                exec: ExecRef {
                    pid: 0,
                    exec_id: req.exec_id.clone(),
                    started_by: req.started_by.clone(),
                },
            },
        );
        drop(table);
        // The tracker reports the command's pid first (at once: it is the
        // first thing it does after the fork).
        let mut report = File::from(report_rd);
        let mut raw = [0u8; 4];
        if let Err(e) = report.read_exact(&mut raw) {
            let _ = kill(Pid::from_raw(tracker), Signal::SIGKILL);
            return Err(io(e));
        }
        let pid = i32::from_ne_bytes(raw);
        let stdin: Stdin = Arc::new(Mutex::new(
            child
                .stdin
                .take()
                .map(|s| File::from(std::os::fd::OwnedFd::from(s))),
        ));
        let mut table = self.lock();
        if let Some(t) = table.trackers.get_mut(&tracker) {
            t.exec.pid = pid;
        }
        table.commands.insert(
            pid,
            Entry {
                stdin: stdin.clone(),
            },
        );
        drop(table);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("stdout and stderr were requested as pipes")
        };
        // `child` (the tracker) is dropped without wait(): the reaper owns it.
        Ok(Spawned {
            pid,
            tracker,
            stdout,
            stderr,
            report: OwnedFd::from(report),
            stdin,
        })
    }

    /// The command `pid` ended: it no longer takes stdin or group signals.
    pub fn forget(&self, pid: i32) {
        self.lock().commands.remove(&pid);
    }

    /// Reaps every exited child (trackers, and orphans of killed trackers),
    /// then kills every child of PID 1 that is not a tracker; called on
    /// SIGCHLD.
    pub fn reap(&self) {
        let mut table = self.lock();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                    if let Some(t) = table.trackers.remove(&pid.as_raw()) {
                        // A tracker gone with its command still registered
                        // was killed: the command went with it.
                        table.commands.remove(&t.exec.pid);
                    }
                }
                Ok(_) => continue,
            }
        }
        let orphans = orphans(&table);
        for &pid in &orphans {
            // Our own child (ppid 1): only we can reap it, and we hold the
            // lock, so the pid cannot have been reused.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                "processes whose exec tracker was killed were ended (nothing runs untracked)"
            );
        }
        drop(table);
        self.reaped.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Kills the command below `tracker` with every descendant, and the
    /// tracker; returns once none of them is left in the box (the orphan
    /// rule of [`Registry::reap`] ends whatever forked in between).
    pub async fn end_exec(&self, tracker: i32) {
        self.kill_tree(tracker);
        let mut reaped = self.reaped.subscribe();
        loop {
            {
                let table = self.lock();
                if !table.trackers.contains_key(&tracker) && orphans(&table).is_empty() {
                    return;
                }
            }
            if reaped.changed().await.is_err() {
                return;
            }
        }
    }

    /// SIGKILLs `tracker`'s whole subtree, then the tracker.
    fn kill_tree(&self, tracker: i32) {
        let table = self.lock();
        if !table.trackers.contains_key(&tracker) {
            return;
        }
        let parents = parents();
        let tree = subtree(&parents, tracker);
        for &pid in &tree {
            // The pid may have been reaped (by the tracker) and reused since
            // the scan: pin the process, then check it is still below the
            // tracker before it is signalled.
            let Some(fd) = pidfd_open(pid) else { continue };
            match stat_of(pid) {
                Some((ppid, _)) if ppid == tracker || tree.contains(&ppid) => {
                    let _ = pidfd_signal(&fd, libc::SIGKILL);
                }
                _ => {}
            }
        }
        // Our own child: its pid cannot be reused while we hold the lock.
        let _ = kill(Pid::from_raw(tracker), Signal::SIGKILL);
    }

    /// Writes to a spawned process's stdin; `close` closes it afterwards.
    pub fn write_stdin(&self, pid: i32, data: &[u8], close: bool) -> std::io::Result<()> {
        let stdin = self
            .lock()
            .commands
            .get(&pid)
            .map(|e| e.stdin.clone())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such process"))?;
        write_stdin(&stdin, data, close)
    }

    /// Sends `signal` to the process group of a spawned process, or to the
    /// single process `pid` if the agent did not spawn it.
    pub fn signal(&self, pid: i32, signal: i32) -> Result<(), String> {
        let sig = Signal::try_from(signal).map_err(|_| format!("invalid signal {signal}"))?;
        if pid <= 1 {
            return Err(format!("refusing to signal pid {pid}"));
        }
        let table = self.lock();
        if table.trackers.contains_key(&pid) {
            return Err(format!("refusing to signal pid {pid}: an exec tracker"));
        }
        let spawned = table.commands.contains_key(&pid);
        drop(table);
        let res = if spawned {
            killpg(Pid::from_raw(pid), sig)
        } else {
            kill(Pid::from_raw(pid), sig)
        };
        res.map_err(|e| format!("signal {signal} to pid {pid}: {e}"))
    }

    /// The processes of the box, each with the command it descends from.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut procs = list();
        let table = self.lock();
        let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
        for p in &mut procs {
            p.internal = p.pid == 1 || table.trackers.contains_key(&p.pid);
            if p.internal {
                continue;
            }
            // The nearest tracker above it (the chain is short: it ends
            // at PID 1, whose ppid is 0).
            let mut at = p.ppid;
            let mut hops = 0;
            while at > 1 && hops < 4096 {
                if let Some(t) = table.trackers.get(&at) {
                    p.exec = Some(t.exec.clone());
                    break;
                }
                at = parent.get(&at).copied().unwrap_or(0);
                hops += 1;
            }
        }
        procs
    }

    /// The live descendants of `tracker` (what a command left running).
    pub fn descendants(&self, tracker: i32) -> Vec<ProcessInfo> {
        let tree = subtree(&parents(), tracker);
        self.list()
            .into_iter()
            .filter(|p| tree.contains(&p.pid) && p.state != "Z")
            .collect()
    }

    /// Sends `signal` to the box process `pid` (never to PID 1 or a
    /// tracker) and returns what it was.
    pub fn kill_process(&self, pid: i32, signal: i32) -> Result<ProcessInfo, KillError> {
        if !(1..=64).contains(&signal) {
            return Err(KillError::BadSignal(signal));
        }
        if pid <= 0 {
            return Err(KillError::NotFound(pid));
        }
        let fd = pidfd_open(pid).ok_or(KillError::NotFound(pid))?;
        // Described after the pidfd pins it, so the description is of the
        // process that gets the signal (checked alive below).
        let info = self
            .list()
            .into_iter()
            .find(|p| p.pid == pid)
            .ok_or(KillError::NotFound(pid))?;
        if info.internal {
            return Err(KillError::Internal(pid));
        }
        pidfd_signal(&fd, signal).map_err(|error| match error.raw_os_error() {
            Some(libc::ESRCH) => KillError::NotFound(pid),
            _ => KillError::Os { pid, signal, error },
        })?;
        Ok(info)
    }
}

/// Children of PID 1 that are not trackers (nor zombies waiting to be reaped).
fn orphans(table: &Table) -> Vec<i32> {
    parents()
        .into_iter()
        .filter(|&(pid, ppid)| ppid == 1 && pid != 1 && !table.trackers.contains_key(&pid))
        .filter(|&(pid, _)| stat_of(pid).is_some_and(|(_, state)| state != 'Z'))
        .map(|(pid, _)| pid)
        .collect()
}

/// Writes to a stdin handle; writing after it was closed is an error.
pub fn write_stdin(stdin: &Stdin, data: &[u8], close: bool) -> std::io::Result<()> {
    let mut guard = stdin.lock().unwrap_or_else(|p| p.into_inner());
    let Some(file) = guard.as_mut() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "stdin is closed",
        ));
    };
    file.write_all(data)?;
    if close {
        *guard = None;
    }
    Ok(())
}

/// Lists the processes in the box from `/proc`.
pub fn list() -> Vec<ProcessInfo> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        let Ok(stat) = std::fs::read_to_string(base.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised comm: state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("?").to_string();
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let comm = stat
            .find('(')
            .map(|open| stat[open + 1..close].to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let command = if cmdline.is_empty() {
            format!("[{comm}]")
        } else {
            String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ")
        };
        let uid = std::fs::read_to_string(base.join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
            })
            .unwrap_or(u32::MAX);
        out.push(ProcessInfo {
            pid,
            ppid,
            uid,
            state,
            command,
            exec: None,
            internal: false,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_is_every_process_below_its_root_however_deep() {
        // 10 is a tracker: 11 its command, 12 a double-forked child
        // reparented to it, 13 a grandchild of 11; 20 belongs elsewhere.
        let parents: HashMap<i32, i32> = [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (21, 20)]
            .into_iter()
            .collect();
        let tree = subtree(&parents, 10);
        assert_eq!(tree, [11, 12, 13].into_iter().collect());
        assert!(subtree(&parents, 13).is_empty());
    }

    #[test]
    fn raw_wait_statuses_become_exit_statuses() {
        assert_eq!(exit_status(3 << 8).code, 3);
        let killed = exit_status(libc::SIGKILL);
        assert_eq!((killed.code, killed.signal), (137, Some(9)));
    }

    #[test]
    fn users_resolve_by_name_and_uid() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nbox:x:1000:1000:box:/workspace/home:/bin/bash\n";
        assert_eq!(BoxUser::lookup(passwd, "box").unwrap().uid, 1000);
        assert_eq!(
            BoxUser::lookup(passwd, "1000").unwrap().home,
            "/workspace/home"
        );
        assert_eq!(BoxUser::lookup(passwd, "4242").unwrap().uid, 4242);
        assert!(BoxUser::lookup(passwd, "nobody-here").is_none());
    }
}
