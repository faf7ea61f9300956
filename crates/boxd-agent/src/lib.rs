//! `boxd-agent`: the PID 1 of every box.
//!
//! It reaps zombies, forwards termination signals to the box's processes and
//! serves the daemon over a single listener it is handed (a unix socket for
//! containers, vsock later for microVMs): spawn processes with streamed
//! stdio, stdin, signals, the process list, and file operations including tar
//! streams. One connection per operation, framed messages ([`protocol`]).
//!
//! The agent never talks to anything but its one control listener, and it
//! holds no secret: everything it can do, root in the box can do already.

pub mod client;
pub mod files;
pub mod pipes;
pub mod process;
pub mod protocol;
mod server;

pub use client::{AgentClient, ClientError, Completed, DataStream, Output, ProcessStream};
pub use server::{run, AgentConfig};

/// Default working directory of every process, and the base of relative paths.
pub const DEFAULT_CWD: &str = "/workspace/home";

/// The open-file soft limit of every process the agent starts (the agent
/// itself runs at its hard limit, which the runtime caps): a box process
/// that needs more raises it itself, up to the hard limit.
pub const BOX_NOFILE_SOFT: u64 = 4096;

/// Sets the calling process's open-file limits: the hard one lowered to
/// `hard_cap` (never raised), the soft one to `soft` (at most the hard
/// one). Async-signal-safe: usable between fork and exec.
pub fn set_nofile(soft: u64, hard_cap: u64) -> std::io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_max = lim.rlim_max.min(hard_cap);
        lim.rlim_cur = soft.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
