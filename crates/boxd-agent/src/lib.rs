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
