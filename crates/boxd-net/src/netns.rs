//! Running a little work inside another network namespace.
//!
//! Owns: entering a network namespace on a *dedicated, short-lived
//! thread* (`setns` changes only the calling thread), so sockets made
//! there (netlink, test sockets) belong to that namespace; and opening a
//! box's namespace from its agent's pid. Never: calls `setns` on a thread
//! it did not create (a tokio worker must never change namespace), or
//! keeps a namespace alive beyond the fd its caller holds.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::{setns, CloneFlags};

use crate::error::{NetError, Result};

/// Opens the network namespace of process `pid` (`/proc/<pid>/ns/net`).
/// For a box, `pid` is its agent's host pid.
pub fn open_pid_netns(pid: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/net");
    let file = File::open(&path).map_err(NetError::io(format!("open {path}")))?;
    Ok(OwnedFd::from(file))
}

/// Opens the calling thread's own network namespace.
pub fn open_current_netns() -> Result<OwnedFd> {
    let path = "/proc/thread-self/ns/net";
    let file = File::open(path).map_err(NetError::io(format!("open {path}")))?;
    Ok(OwnedFd::from(file))
}

/// Runs `f` on a new thread that has first joined the network namespace
/// `netns`, and returns its result. Blocks the caller for the thread's
/// life (tens of microseconds plus `f`), so keep `f` short.
pub fn run_in<T, F>(netns: BorrowedFd<'_>, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("boxd-netns".into())
            .spawn_scoped(scope, move || -> Result<T> {
                setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetError::io("setns into a network namespace")(e.into()))?;
                Ok(f())
            })
            .map_err(NetError::io("spawn a namespace thread"))?;
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Makes a new, empty network namespace (only a down loopback in it) and
/// returns an fd that keeps it alive: dropping the last fd (and leaving no
/// process or mount in it) destroys it and every interface inside. Used
/// by tests to stand in for the host and for boxes.
pub fn new_netns() -> Result<OwnedFd> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("boxd-netns-new".into())
            .spawn_scoped(scope, || -> Result<OwnedFd> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetError::io("unshare a network namespace")(e.into()))?;
                open_current_netns()
            })
            .map_err(NetError::io("spawn a namespace thread"))?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
