//! The daemon's side of the agent protocol: one short-lived connection per
//! operation to a box's agent socket.
//!
//! This module only speaks the protocol; it never decides whether a caller
//! may talk to a box (the server does) and never touches the box otherwise.

use crate::protocol::{
    read_frame, write_frame, ErrorBody, ExitStatus, FileStat, Frame, Kind, ProcessInfo,
    ProtocolError, Request, Response, SpawnRequest, Started, CHUNK,
};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Errors a caller of the agent sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the box's socket: the agent (and so the box) died.
    #[error("the box's agent is not running")]
    AgentGone,
    /// The agent refused or failed the operation.
    #[error("{}", .0.message)]
    Agent(ErrorBody),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl ClientError {
    /// The agent's error body, when the agent answered with one.
    pub fn agent_error(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Agent(b) => Some(b),
            _ => None,
        }
    }
}

/// Output of a process, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}

/// The collected result of a process that ran to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

/// A running process's output stream (and its stdin).
pub struct ProcessStream {
    pub pid: i32,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    done: bool,
}

impl ProcessStream {
    /// The next piece of output; `None` after the exit status was returned.
    pub async fn next(&mut self) -> Result<Option<Output>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let f = read_frame(&mut self.rd).await.map_err(gone_if_closed)?;
        Ok(Some(match f.kind {
            Kind::Stdout => Output::Stdout(f.payload),
            Kind::Stderr => Output::Stderr(f.payload),
            Kind::Exit => {
                self.done = true;
                Output::Exit(f.parse()?)
            }
            Kind::Error => {
                self.done = true;
                return Err(ClientError::Agent(f.parse()?));
            }
            k => return Err(ProtocolError::Unexpected(k).into()),
        }))
    }

    /// Writes to the process's stdin.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(CHUNK) {
            write_frame(&mut self.wr, &Frame::data(Kind::Data, chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Closes the process's stdin.
    pub async fn close_stdin(&mut self) -> Result<(), ClientError> {
        Ok(write_frame(&mut self.wr, &Frame::data(Kind::End, Vec::new())).await?)
    }

    /// Reads everything until the process exits.
    pub async fn collect(mut self) -> Result<Completed, ClientError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(o) = self.next().await? {
            match o {
                Output::Stdout(d) => stdout.extend_from_slice(&d),
                Output::Stderr(d) => stderr.extend_from_slice(&d),
                Output::Exit(status) => {
                    return Ok(Completed {
                        stdout,
                        stderr,
                        status,
                    })
                }
            }
        }
        Err(ProtocolError::Closed.into())
    }
}

fn gone_if_closed(e: ProtocolError) -> ClientError {
    match e {
        ProtocolError::Closed => ClientError::AgentGone,
        e => e.into(),
    }
}

/// A handle on one box's agent socket. Cheap to clone; connects per call.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn open(&self, req: &Request) -> Result<(OwnedReadHalf, OwnedWriteHalf), ClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            use std::io::ErrorKind as K;
            match e.kind() {
                K::ConnectionRefused | K::NotFound => ClientError::AgentGone,
                _ => ClientError::Protocol(e.into()),
            }
        })?;
        let (rd, mut wr) = stream.into_split();
        write_frame(&mut wr, &Frame::json(Kind::Request, req)?).await?;
        Ok((rd, wr))
    }

    async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let (mut rd, _wr) = self.open(req).await?;
        expect_response(&mut rd).await
    }

    async fn call_ok(&self, req: &Request) -> Result<(), ClientError> {
        self.call(req).await.map(|_| ())
    }

    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call_ok(&Request::Ping).await
    }

    /// Starts a process; output arrives through the returned stream.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<ProcessStream, ClientError> {
        let (mut rd, wr) = self.open(&Request::Spawn(req)).await?;
        let f = read_frame(&mut rd).await.map_err(gone_if_closed)?;
        match f.kind {
            Kind::Started => {
                let s: Started = f.parse()?;
                Ok(ProcessStream {
                    pid: s.pid,
                    rd,
                    wr,
                    done: false,
                })
            }
            // "command not found" comes as stderr + exit 127 with no pid.
            Kind::Stderr | Kind::Exit => {
                let mut pending = vec![f];
                if pending[0].kind == Kind::Stderr {
                    pending.push(read_frame(&mut rd).await.map_err(gone_if_closed)?);
                }
                Err(not_started(pending))
            }
            Kind::Error => Err(ClientError::Agent(f.parse()?)),
            k => Err(ProtocolError::Unexpected(k).into()),
        }
    }

    /// Runs a process to completion and collects its output.
    pub async fn exec(&self, req: SpawnRequest) -> Result<Completed, ClientError> {
        match self.spawn(req).await {
            Ok(stream) => stream.collect().await,
            Err(ClientError::Agent(body)) if body.kind == crate::protocol::ErrorKind::NotFound => {
                Ok(Completed {
                    stdout: Vec::new(),
                    stderr: format!("{}\n", body.message).into_bytes(),
                    status: ExitStatus::exited(127),
                })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn write_stdin(&self, pid: i32, data: &[u8], close: bool) -> Result<(), ClientError> {
        let (mut rd, mut wr) = self.open(&Request::Stdin { pid, close }).await?;
        upload(&mut rd, &mut wr, &mut &data[..]).await
    }

    pub async fn signal(&self, pid: i32, signal: i32) -> Result<(), ClientError> {
        self.call_ok(&Request::Signal { pid, signal }).await
    }

    /// Sends `signal` to one box process (never boxd's own); what it was.
    pub async fn kill_process(&self, pid: i32, signal: i32) -> Result<ProcessInfo, ClientError> {
        match self.call(&Request::KillProcess { pid, signal }).await? {
            Response::Killed { process } => Ok(process),
            _ => Err(ProtocolError::Unexpected(Kind::Response).into()),
        }
    }

    pub async fn processes(&self) -> Result<Vec<ProcessInfo>, ClientError> {
        match self.call(&Request::Processes).await? {
            Response::Processes { processes } => Ok(processes),
            _ => Err(ProtocolError::Unexpected(Kind::Response).into()),
        }
    }

    /// Reads a whole file.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.read_file_to(path, &mut out).await?;
        Ok(out)
    }

    /// Streams a file into `out`; returns the number of bytes.
    pub async fn read_file_to<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let (mut rd, _wr) = self.open(&Request::ReadFile { path: path.into() }).await?;
        receive_data(&mut rd, out).await
    }

    /// Atomically writes a file.
    pub async fn write_file(
        &self,
        path: &str,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), ClientError> {
        self.write_file_from(path, &mut &data[..], mode).await
    }

    /// Atomically writes a file from a stream.
    pub async fn write_file_from<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        input: &mut R,
        mode: Option<u32>,
    ) -> Result<(), ClientError> {
        let req = Request::WriteFile {
            path: path.into(),
            mode,
        };
        let (mut rd, mut wr) = self.open(&req).await?;
        upload(&mut rd, &mut wr, input).await
    }

    pub async fn stat(&self, path: &str) -> Result<FileStat, ClientError> {
        match self.call(&Request::Stat { path: path.into() }).await? {
            Response::Stat { stat } => Ok(stat),
            _ => Err(ProtocolError::Unexpected(Kind::Response).into()),
        }
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<FileStat>, ClientError> {
        match self.call(&Request::ListDir { path: path.into() }).await? {
            Response::ListDir { entries } => Ok(entries),
            _ => Err(ProtocolError::Unexpected(Kind::Response).into()),
        }
    }

    pub async fn mkdir(&self, path: &str) -> Result<(), ClientError> {
        self.call_ok(&Request::Mkdir { path: path.into() }).await
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), ClientError> {
        self.call_ok(&Request::Rename {
            from: from.into(),
            to: to.into(),
        })
        .await
    }

    pub async fn remove(&self, path: &str) -> Result<(), ClientError> {
        self.call_ok(&Request::Remove { path: path.into() }).await
    }

    /// Streams a file or folder out of the box as a tar archive.
    pub async fn tar_out<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let (mut rd, _wr) = self.open(&Request::TarOut { path: path.into() }).await?;
        receive_data(&mut rd, out).await
    }

    /// Extracts a tar archive into the folder `path` inside the box.
    pub async fn tar_in<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        input: &mut R,
    ) -> Result<(), ClientError> {
        let (mut rd, mut wr) = self.open(&Request::TarIn { path: path.into() }).await?;
        upload(&mut rd, &mut wr, input).await
    }
}

fn not_started(frames: Vec<Frame>) -> ClientError {
    let msg = frames
        .iter()
        .find(|f| f.kind == Kind::Stderr)
        .map(|f| String::from_utf8_lossy(&f.payload).trim().to_string())
        .unwrap_or_else(|| "command not found".into());
    ClientError::Agent(ErrorBody {
        kind: crate::protocol::ErrorKind::NotFound,
        message: msg,
    })
}

async fn expect_response(rd: &mut OwnedReadHalf) -> Result<Response, ClientError> {
    let f = read_frame(rd).await.map_err(gone_if_closed)?;
    match f.kind {
        Kind::Response => Ok(f.parse()?),
        Kind::Error => Err(ClientError::Agent(f.parse()?)),
        k => Err(ProtocolError::Unexpected(k).into()),
    }
}

/// Sends a data stream and reads the answer. If the agent refused the
/// operation while data was still flowing, its reason is the error, not the
/// broken pipe the refusal caused.
async fn upload<R: AsyncRead + Unpin>(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    input: &mut R,
) -> Result<(), ClientError> {
    let sent = send_stream(wr, input).await;
    match (sent, expect_response(rd).await) {
        (_, Err(e @ ClientError::Agent(_))) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), answer) => answer.map(|_| ()),
    }
}

async fn send_stream<R: AsyncRead + Unpin>(
    wr: &mut OwnedWriteHalf,
    input: &mut R,
) -> Result<(), ClientError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut buf).await.map_err(ProtocolError::Io)?;
        if n == 0 {
            break;
        }
        write_frame(wr, &Frame::data(Kind::Data, buf[..n].to_vec())).await?;
    }
    write_frame(wr, &Frame::data(Kind::End, Vec::new())).await?;
    Ok(())
}

async fn receive_data<W: AsyncWrite + Unpin>(
    rd: &mut OwnedReadHalf,
    out: &mut W,
) -> Result<u64, ClientError> {
    let mut total = 0u64;
    loop {
        let f = read_frame(rd).await.map_err(gone_if_closed)?;
        match f.kind {
            Kind::Data => {
                out.write_all(&f.payload).await.map_err(ProtocolError::Io)?;
                total += f.payload.len() as u64;
            }
            Kind::End => {
                out.flush().await.map_err(ProtocolError::Io)?;
                return Ok(total);
            }
            Kind::Error => return Err(ClientError::Agent(f.parse()?)),
            k => return Err(ProtocolError::Unexpected(k).into()),
        }
    }
}
