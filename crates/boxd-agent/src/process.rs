//! Processes inside the box: spawning with streamed stdio, the PID 1 zombie
//! reaper, stdin, signals and the process list.
//!
//! The agent is PID 1, so every orphan in the box is reparented to it. One
//! reaper (`waitpid(-1)` on SIGCHLD) collects them all and hands the exit
//! status of the processes the agent spawned to whoever waits for them. The
//! registry lock is held across `spawn` and across each reap so a process
//! cannot be reaped before it is registered. This module never lets a daemon
//! file descriptor reach a spawned process (`close_range` before `exec`).

use crate::protocol::{ExitStatus, ProcessInfo, SpawnRequest};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

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

struct Entry {
    exit: Option<oneshot::Sender<ExitStatus>>,
    stdin: Stdin,
}

/// The agent's table of spawned processes.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<i32, Entry>>,
}

/// A freshly spawned process.
pub struct Spawned {
    pub pid: i32,
    pub stdout: std::process::ChildStdout,
    pub stderr: std::process::ChildStderr,
    pub exit: oneshot::Receiver<ExitStatus>,
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

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `req` with `box_env` under it, in a new session (so signals and
    /// kills reach the whole process group).
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
            .current_dir(&cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if user.uid != 0 || user.gid != 0 {
            cmd.uid(user.uid).gid(user.gid);
        }
        // SAFETY: the closure only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
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
                // The agent is shielded from the box's OOM killer; its
                // children are not (raising the score needs no privilege).
                let adj = c"/proc/self/oom_score_adj";
                let fd = libc::open(adj.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
                // Restore the default signal mask and dispositions the agent changed.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut entries = self.lock();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SpawnError::NotFound(program.clone())
            } else {
                SpawnError::Io(program.clone(), e)
            }
        })?;
        let pid = child.id() as i32;
        let (tx, rx) = oneshot::channel();
        let stdin: Stdin = Arc::new(Mutex::new(
            child
                .stdin
                .take()
                .map(|s| File::from(std::os::fd::OwnedFd::from(s))),
        ));
        entries.insert(
            pid,
            Entry {
                exit: Some(tx),
                stdin: stdin.clone(),
            },
        );
        drop(entries);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("stdout and stderr were requested as pipes")
        };
        // `child` is dropped without wait(): the reaper owns exit statuses.
        Ok(Spawned {
            pid,
            stdout,
            stderr,
            exit: rx,
            stdin,
        })
    }

    /// Reaps every exited child; called on SIGCHLD.
    pub fn reap(&self) {
        let mut entries = self.lock();
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, ExitStatus::exited(code)),
                WaitStatus::Signaled(pid, sig, _) => (
                    pid,
                    ExitStatus {
                        code: 128 + sig as i32,
                        signal: Some(sig as i32),
                        timed_out: false,
                    },
                ),
                _ => continue,
            };
            if let Some(mut entry) = entries.remove(&pid.as_raw()) {
                if let Some(tx) = entry.exit.take() {
                    let _ = tx.send(exit);
                }
            }
        }
    }

    /// Writes to a spawned process's stdin; `close` closes it afterwards.
    pub fn write_stdin(&self, pid: i32, data: &[u8], close: bool) -> std::io::Result<()> {
        let stdin = self
            .lock()
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
        let res = if self.lock().contains_key(&pid) {
            killpg(Pid::from_raw(pid), sig)
        } else {
            kill(Pid::from_raw(pid), sig)
        };
        res.map_err(|e| format!("signal {signal} to pid {pid}: {e}"))
    }
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
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
