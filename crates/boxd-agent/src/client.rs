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

    /// Reads a whole file (unbounded: for tests and small files; the
    /// daemon reads with [`AgentClient::read_range`]).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.read_file_to(path, &mut out).await?;
        Ok(out)
    }

    /// Reads `length` bytes from `offset`, or the whole file, holding at
    /// most `max` bytes: the agent refuses a bigger whole file, and more
    /// data than that from it is an error here too.
    pub async fn read_range(
        &self,
        path: &str,
        offset: u64,
        length: Option<u64>,
        max: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let cap = length.unwrap_or(max).min(max);
        let req = Request::ReadFile {
            path: path.into(),
            offset,
            length,
            max: Some(max),
        };
        let (mut rd, _wr) = self.open(&req).await?;
        let mut out = Vec::new();
        loop {
            let f = read_frame(&mut rd).await.map_err(gone_if_closed)?;
            match f.kind {
                Kind::Data => {
                    if (out.len() + f.payload.len()) as u64 > cap {
                        return Err(ClientError::Agent(ErrorBody {
                            kind: crate::protocol::ErrorKind::TooLarge,
                            message: format!(
                                "read {path}: the box sent more than the {cap} bytes asked for"
                            ),
                        }));
                    }
                    out.extend_from_slice(&f.payload);
                }
                Kind::End => return Ok(out),
                Kind::Error => return Err(ClientError::Agent(f.parse()?)),
                k => return Err(ProtocolError::Unexpected(k).into()),
            }
        }
    }

    /// Starts streaming a whole regular file out; an error the agent
    /// answers at once (not found, not a regular file) is this call's.
    pub async fn open_read(&self, path: &str) -> Result<DataStream, ClientError> {
        let req = Request::ReadFile {
            path: path.into(),
            offset: 0,
            length: None,
            max: None,
        };
        DataStream::start(self.open(&req).await?).await
    }

    /// Starts streaming a file or folder out as a tar archive; an error
    /// the agent answers at once is this call's.
    pub async fn open_tar(&self, path: &str) -> Result<DataStream, ClientError> {
        DataStream::start(self.open(&Request::TarOut { path: path.into() }).await?).await
    }

    /// Streams a whole file into `out`; returns the number of bytes.
    pub async fn read_file_to<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        self.open_read(path).await?.copy_to(out).await
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

    /// One page of a folder: entries whose names sort after `after`, at
    /// most `limit`; and whether more remain.
    pub async fn list_page(
        &self,
        path: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<FileStat>, bool), ClientError> {
        let req = Request::ListDir {
            path: path.into(),
            after: after.map(str::to_string),
            limit: Some(limit),
        };
        match self.call(&req).await? {
            Response::ListDir { entries, more } => Ok((entries, more)),
            _ => Err(ProtocolError::Unexpected(Kind::Response).into()),
        }
    }

    /// Every entry of a folder, page by page (unbounded: for tests and
    /// small folders; the daemon pages with [`AgentClient::list_page`]).
    pub async fn list_dir(&self, path: &str) -> Result<Vec<FileStat>, ClientError> {
        let mut all: Vec<FileStat> = Vec::new();
        loop {
            let after = all.last().map(|e| e.name.clone());
            let (page, more) = self.list_page(path, after.as_deref(), 5_000).await?;
            let empty = page.is_empty();
            all.extend(page);
            if !more || empty {
                return Ok(all);
            }
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
        self.open_tar(path).await?.copy_to(out).await
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

/// A stream of `Data` frames from the agent whose first frame has arrived
/// (so an error answered at once was reported by its start).
pub struct DataStream {
    rd: OwnedReadHalf,
    _wr: OwnedWriteHalf,
    first: Option<Frame>,
}

impl DataStream {
    async fn start((mut rd, wr): (OwnedReadHalf, OwnedWriteHalf)) -> Result<Self, ClientError> {
        let f = read_frame(&mut rd).await.map_err(gone_if_closed)?;
        match f.kind {
            Kind::Data | Kind::End => Ok(DataStream {
                rd,
                _wr: wr,
                first: Some(f),
            }),
            Kind::Error => Err(ClientError::Agent(f.parse()?)),
            k => Err(ProtocolError::Unexpected(k).into()),
        }
    }

    /// Copies the rest of the stream into `out`; returns the bytes copied.
    pub async fn copy_to<W: AsyncWrite + Unpin>(mut self, out: &mut W) -> Result<u64, ClientError> {
        let mut total = 0u64;
        if let Some(f) = self.first.take() {
            match f.kind {
                Kind::End => {
                    out.flush().await.map_err(ProtocolError::Io)?;
                    return Ok(0);
                }
                _ => {
                    out.write_all(&f.payload).await.map_err(ProtocolError::Io)?;
                    total = f.payload.len() as u64;
                }
            }
        }
        Ok(total + receive_data(&mut self.rd, out).await?)
    }
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
