//! The wire protocol between the daemon and `boxd-agent`.
//!
//! One connection per operation over a stream transport (a unix socket for
//! containers; vsock later for microVMs). The client sends one [`Request`]
//! frame, optionally followed by data frames (file contents, stdin, a tar
//! stream) closed by an `End` frame; the agent answers with a stream of frames
//! (`Stdout`, `Stderr`, `Data`, …) finished by exactly one `Exit`, `Response`,
//! `End` or `Error` frame.
//!
//! A frame is `[kind: u8][len: u32 big-endian][payload]`. Control payloads
//! are JSON; data payloads are raw bytes. This module owns only the format:
//! it never performs an operation itself.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload a single frame may carry. Bigger data is split.
pub const MAX_FRAME: usize = 4 << 20;
/// Size of the chunks the agent uses when streaming file or tar data.
pub const CHUNK: usize = 256 << 10;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A JSON [`Request`] (client → agent, first frame only).
    Request = 1,
    /// A JSON [`Response`] (agent → client, final).
    Response = 2,
    /// Raw bytes the process wrote to stdout.
    Stdout = 3,
    /// Raw bytes the process wrote to stderr.
    Stderr = 4,
    /// Raw data: file contents, a tar stream, or stdin.
    Data = 5,
    /// The data stream is complete.
    End = 6,
    /// JSON [`ExitStatus`] of a spawned process (final).
    Exit = 7,
    /// JSON [`ErrorBody`] (final).
    Error = 8,
    /// JSON [`Started`]: the process was spawned.
    Started = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Stdout,
            4 => Kind::Stderr,
            5 => Kind::Data,
            6 => Kind::End,
            7 => Kind::Exit,
            8 => Kind::Error,
            9 => Kind::Started,
            _ => return None,
        })
    }
}

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed by peer")]
    Closed,
    #[error("i/o error on the agent connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected {0:?} frame")]
    Unexpected(Kind),
}

impl Frame {
    pub fn json<T: Serialize>(kind: Kind, value: &T) -> Result<Frame, ProtocolError> {
        Ok(Frame {
            kind,
            payload: serde_json::to_vec(value)?,
        })
    }

    pub fn data(kind: Kind, payload: Vec<u8>) -> Frame {
        Frame { kind, payload }
    }

    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, ProtocolError> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// Reads one frame; `Err(Closed)` on a clean EOF before the header.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, ProtocolError> {
    let mut header = [0u8; 5];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let kind = Kind::from_u8(header[0]).ok_or(ProtocolError::UnknownKind(header[0]))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Closed
        } else {
            e.into()
        }
    })?;
    Ok(Frame { kind, payload })
}

/// Writes one frame (header and payload in one write when small).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
) -> Result<(), ProtocolError> {
    if frame.payload.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(frame.payload.len()));
    }
    let mut header = [0u8; 5];
    header[0] = frame.kind as u8;
    header[1..].copy_from_slice(&(frame.payload.len() as u32).to_be_bytes());
    if frame.payload.len() <= 4096 {
        let mut buf = Vec::with_capacity(5 + frame.payload.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&frame.payload);
        w.write_all(&buf).await?;
    } else {
        w.write_all(&header).await?;
        w.write_all(&frame.payload).await?;
    }
    Ok(())
}

/// What to run: an argv vector, or a string for `sh -c`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}

/// Spawn a process inside the box.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpawnRequest {
    pub command: Command,
    /// Extra environment for this process, over the box's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the user's default (`/workspace/home`) when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or numeric uid inside the box; root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Kill the process group when the client connection goes away.
    #[serde(default = "yes")]
    pub kill_on_disconnect: bool,
    /// Kill the process and every descendant after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The caller's name for this command (boxd's exec id): the process
    /// list shows it on every process the command started.
    #[serde(default)]
    pub exec_id: Option<String>,
    /// Who started the command (an API key id), shown with `exec_id`.
    #[serde(default)]
    pub started_by: Option<String>,
}

fn yes() -> bool {
    true
}

impl SpawnRequest {
    pub fn shell(cmd: impl Into<String>) -> Self {
        Self::new(Command::Shell(cmd.into()))
    }
    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        Self::new(Command::Argv(argv.into_iter().map(Into::into).collect()))
    }
    fn new(command: Command) -> Self {
        SpawnRequest {
            command,
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            kill_on_disconnect: true,
            timeout_ms: None,
            exec_id: None,
            started_by: None,
        }
    }
}

/// Every operation the agent serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answered with `Response::Pong`.
    Ping,
    /// Spawn a process; answered with `Started`, then `Stdout`/`Stderr`
    /// frames as produced, then `Exit`. `Data`/`End` frames sent by the
    /// client after the request go to the process's stdin.
    Spawn(SpawnRequest),
    /// Write the following `Data` frames (until `End`) to a running
    /// process's stdin; `close` closes stdin afterwards.
    Stdin {
        pid: i32,
        close: bool,
    },
    /// Send a signal (by number) to a spawned process's group.
    Signal {
        pid: i32,
        signal: i32,
    },
    /// List the processes running in the box, each with the command
    /// (exec) it descends from.
    Processes,
    /// Send a signal (by number) to one box process, by its pid in the
    /// box; boxd's own processes (PID 1, exec trackers) are refused.
    /// Answered with `Response::Killed`.
    KillProcess {
        pid: i32,
        signal: i32,
    },
    /// Stream a regular file's contents as `Data` frames, then `End`:
    /// `length` bytes from `offset` (a seek, then a bounded read), or the
    /// whole file. With `max`, never more than `max` bytes: a whole file
    /// bigger than that is refused (`TooLarge`) before a byte is sent.
    /// Anything but a regular file (folder, FIFO, device, socket) is
    /// refused, and opening never blocks.
    ReadFile {
        path: String,
        #[serde(default)]
        offset: u64,
        #[serde(default)]
        length: Option<u64>,
        #[serde(default)]
        max: Option<u64>,
    },
    /// Atomically replace a file with the `Data` frames that follow.
    WriteFile {
        path: String,
        #[serde(default)]
        mode: Option<u32>,
    },
    Stat {
        path: String,
    },
    /// One page of a folder's entries, sorted by name: those whose name
    /// sorts after `after`, at most `limit` (the agent may send fewer, to
    /// keep the answer inside one frame; `more` says whether others remain).
    ListDir {
        path: String,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `mkdir -p`.
    Mkdir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    /// Remove a file, or a folder and everything in it.
    Remove {
        path: String,
    },
    /// Stream a file or a folder as a tar archive (`Data` frames, `End`).
    TarOut {
        path: String,
    },
    /// Extract the tar archive in the following `Data` frames into `path`.
    TarIn {
        path: String,
    },
}

/// Answer to a non-streaming request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Pong,
    Ok,
    Processes {
        processes: Vec<ProcessInfo>,
    },
    Killed {
        process: ProcessInfo,
    },
    Stat {
        stat: FileStat,
    },
    ListDir {
        entries: Vec<FileStat>,
        #[serde(default)]
        more: bool,
    },
}

/// The process was spawned.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Started {
    /// Pid inside the box.
    pub pid: i32,
}

/// How a spawned process ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Killed because `timeout_ms` passed (with every descendant).
    #[serde(default)]
    pub timed_out: bool,
    /// Descendants still running when the process ended (`server &`):
    /// they are kept, as the command's background processes.
    #[serde(default)]
    pub left_running: Vec<ProcessInfo>,
}

impl ExitStatus {
    /// A normal exit with `code`.
    pub fn exited(code: i32) -> ExitStatus {
        ExitStatus {
            code,
            signal: None,
            timed_out: false,
            left_running: Vec::new(),
        }
    }

    /// Killed by `signal`.
    pub fn killed(signal: i32) -> ExitStatus {
        ExitStatus {
            code: 128 + signal,
            signal: Some(signal),
            timed_out: false,
            left_running: Vec::new(),
        }
    }
}

/// Error reported by the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

/// Classes of agent errors, so callers can map them to the right status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    PermissionDenied,
    InvalidInput,
    NotADirectory,
    IsADirectory,
    NoSpace,
    /// Over a size limit of the request (e.g. a whole-file read's `max`).
    TooLarge,
    Other,
}

impl ErrorBody {
    pub fn from_io(context: &str, e: &std::io::Error) -> ErrorBody {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::PermissionDenied,
            K::InvalidInput | K::InvalidData | K::InvalidFilename => ErrorKind::InvalidInput,
            K::NotADirectory => ErrorKind::NotADirectory,
            K::IsADirectory | K::DirectoryNotEmpty => ErrorKind::IsADirectory,
            K::StorageFull | K::QuotaExceeded => ErrorKind::NoSpace,
            _ => ErrorKind::Other,
        };
        ErrorBody {
            kind,
            message: format!("{context}: {e}"),
        }
    }
}

/// A running process, as `ps` would show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub state: String,
    pub command: String,
    /// The command (exec) this process descends from, however it detached.
    #[serde(default)]
    pub exec: Option<ExecRef>,
    /// One of boxd's own processes (PID 1, an exec tracker).
    #[serde(default)]
    pub internal: bool,
}

/// The spawned command a process descends from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecRef {
    /// Pid of the command itself (what `Started` said).
    pub pid: i32,
    /// `SpawnRequest::exec_id`.
    pub exec_id: Option<String>,
    /// `SpawnRequest::started_by`.
    pub started_by: Option<String>,
}

/// File metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileStat {
    /// Base name (the whole path for `Stat`).
    pub name: String,
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub modified: i64,
    /// Nanoseconds part of the modification time.
    #[serde(default)]
    pub modified_nsec: i64,
    /// Inode number (with size and mtime, a file's version token).
    #[serde(default)]
    pub inode: u64,
    /// Target of a symlink.
    #[serde(default)]
    pub link_target: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request::Spawn(SpawnRequest::shell("echo hi"));
        write_frame(&mut a, &Frame::json(Kind::Request, &req).unwrap())
            .await
            .unwrap();
        write_frame(&mut a, &Frame::data(Kind::Data, vec![0, 1, 255]))
            .await
            .unwrap();
        drop(a);
        let f = read_frame(&mut b).await.unwrap();
        assert_eq!(f.kind, Kind::Request);
        assert_eq!(f.parse::<Request>().unwrap(), req);
        let f = read_frame(&mut b).await.unwrap();
        assert_eq!(f, Frame::data(Kind::Data, vec![0, 1, 255]));
        assert!(matches!(
            read_frame(&mut b).await,
            Err(ProtocolError::Closed)
        ));
    }

    #[tokio::test]
    async fn oversized_and_unknown_frames_are_rejected() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(&[42, 0, 0, 0, 0]).await;
        });
        assert!(matches!(
            read_frame(&mut b).await,
            Err(ProtocolError::UnknownKind(42))
        ));
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(&[5, 0xff, 0xff, 0xff, 0xff]).await;
        });
        assert!(matches!(
            read_frame(&mut b).await,
            Err(ProtocolError::TooLarge(_))
        ));
    }
}
