//! The host half of starting a box: clone the first process into new
//! namespaces, exec the agent in it, place it in the box's cgroups, hand it
//! its config and wait for its verdict.
//!
//! The clone shares the daemon's memory (`CLONE_VM | CLONE_VFORK`) and runs
//! on its own small stack, doing nothing but `dup2` and `execve`, so starting
//! a box never copies the daemon's page tables and never runs allocator code
//! in a half-forked multi-threaded process. Only the three descriptors the
//! agent needs cross into it; its stdio is /dev/null.

use crate::error::{Result, RuntimeError};
use crate::setup::{SetupConfig, CONTROL_FD, LISTENER_FD};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Namespaces every box gets at clone time (the user namespace is joined
/// later, from inside, so these stay owned by the host).
pub const BOX_NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC;

/// How the box's setup reports a [`RuntimeError::BadSpec`] (anything else
/// is `error: `).
pub(crate) const BAD_SPEC: &str = "bad spec: ";

/// How long a box may take to set itself up before it is given up on.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The box's first process, as the daemon sees it.
pub struct Started {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

#[repr(C)]
struct ChildArgs {
    fds: [[libc::c_int; 2]; 5],
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at a ChildArgs that the parent keeps alive until
    // the child has exec'd (CLONE_VFORK); only async-signal-safe calls here.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let mut tmp = [0; 5];
        for (i, pair) in a.fds.iter().enumerate() {
            tmp[i] = libc::fcntl(pair[0], libc::F_DUPFD_CLOEXEC, 16);
            if tmp[i] < 0 {
                libc::_exit(126);
            }
        }
        for (i, pair) in a.fds.iter().enumerate() {
            if libc::dup2(tmp[i], pair[1]) < 0 {
                libc::_exit(126);
            }
        }
        libc::execve(a.path, a.argv, a.envp);
        libc::_exit(127)
    }
}

/// Clones the agent into fresh namespaces, then calls `prepare` with its
/// pid while the agent binary loads: `prepare` builds the box's directories
/// and cgroups (placing the pid in them, before the agent can fork) and
/// returns the config and the user namespaces (the box's, then the volume
/// id map if the box has volumes), which are handed to the agent (the
/// descriptors by `SCM_RIGHTS`). Returns once the box is up.
pub fn start_agent(
    agent: &Path,
    listener: &OwnedFd,
    prepare: impl FnOnce(i32) -> Result<(SetupConfig, Vec<OwnedFd>)>,
) -> Result<Started> {
    let path = CString::new(agent.as_os_str().as_encoded_bytes())
        .map_err(|_| RuntimeError::Setup("agent path contains NUL".into()))?;
    let arg1 = c"--box-init";
    let argv = [path.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let (mut ours, theirs) = UnixStream::pair().map_err(RuntimeError::io("control socket"))?;
    // The agent's stdio is /dev/null: no daemon terminal or log reaches a box.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(RuntimeError::io("open /dev/null"))?;
    let args = ChildArgs {
        fds: [
            [null.as_raw_fd(), 0],
            [null.as_raw_fd(), 1],
            [null.as_raw_fd(), 2],
            [theirs.as_raw_fd(), CONTROL_FD],
            [listener.as_raw_fd(), LISTENER_FD],
        ],
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
    };
    let mut stack = vec![0u8; 64 * 1024];
    let mut pidfd: libc::c_int = -1;
    // SAFETY: the child runs `child_main` on `stack` and execs; CLONE_VFORK
    // suspends us until then, so `args`, `argv` and `stack` outlive its use.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
        libc::clone(
            child_main,
            top,
            BOX_NAMESPACES | libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 {
        return Err(RuntimeError::io("clone the box's first process")(
            std::io::Error::last_os_error(),
        ));
    }
    drop(stack);
    drop(theirs);
    // SAFETY: CLONE_PIDFD stored a fresh descriptor that only we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let started = Started { pid, pidfd };
    let result = (|| {
        let (cfg, namespaces) = prepare(pid)?;
        let cfg = serde_json::to_vec(&cfg).map_err(|e| RuntimeError::Setup(e.to_string()))?;
        let fds: Vec<i32> = namespaces.iter().map(|fd| fd.as_raw_fd()).collect();
        let header = (cfg.len() as u32).to_be_bytes();
        nix::sys::socket::sendmsg::<()>(
            ours.as_raw_fd(),
            &[std::io::IoSlice::new(&header)],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .map_err(|e| RuntimeError::io("send the user namespace")(e.into()))?;
        ours.write_all(&cfg)
            .map_err(RuntimeError::io("send the box config"))?;
        ours.set_read_timeout(Some(SETUP_TIMEOUT))
            .map_err(RuntimeError::io("control socket"))?;
        let mut verdict = Vec::new();
        ours.read_to_end(&mut verdict)
            .map_err(RuntimeError::io("wait for the box to start"))?;
        match verdict.as_slice() {
            b"ok" => Ok(()),
            [] => Err(RuntimeError::Setup(format!(
                "the agent {} exited before reporting (is it executable?)",
                agent.display()
            ))),
            other => {
                let text = String::from_utf8_lossy(other);
                Err(match text.strip_prefix(BAD_SPEC) {
                    Some(why) => RuntimeError::BadSpec(why.to_string()),
                    None => RuntimeError::Setup(text.trim_start_matches("error: ").to_string()),
                })
            }
        }
    })();
    match result {
        Ok(()) => Ok(started),
        Err(e) => {
            kill_and_reap(&started);
            Err(e)
        }
    }
}

/// Sends SIGKILL through the pidfd (which cannot hit a recycled pid).
pub fn kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a live descriptor.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

fn kill_and_reap(s: &Started) {
    kill(&s.pidfd);
    // SAFETY: the pid is our child.
    unsafe { libc::waitpid(s.pid, std::ptr::null_mut(), libc::__WALL) };
}

/// Whether the process behind `pidfd` has exited (its pidfd is readable).
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    wait_exit(pidfd, Duration::ZERO)
}

/// Waits up to `timeout` for the process behind `pidfd` to exit.
pub fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    let n = unsafe {
        libc::poll(
            &mut pfd,
            1,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )
    };
    n > 0
}

/// Resolves when the process behind `pidfd` exits (its pidfd turns
/// readable). Needs a tokio runtime with I/O enabled.
pub async fn exited(pidfd: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the descriptor is owned here, neither replaced nor closed
    // while the AsyncFd holds it.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// Opens a pidfd for an existing process (re-adoption after a restart).
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
