//! The agent's serving loop: PID 1 duties (reaping, signal forwarding) and
//! one task per control connection.
//!
//! The listener is handed over by whoever started the agent (the container
//! runtime passes a unix socket that only the daemon can reach from the
//! host). The agent never opens another listener and never connects out.
//!
//! Termination signals (SIGTERM, SIGINT) are obeyed only from outside the
//! box: they are read from a signalfd, whose sender pid is 0 when the sender
//! lives in an ancestor pid namespace (the host). A box process sending them
//! to PID 1 is ignored and logged — otherwise any box process could make the
//! agent kill everything and leave the box unusable.

use crate::files;
use crate::pipes::{OutputPipes, Stream};
use crate::process::{command_exit, write_stdin, KillError, Registry, SpawnError};
use crate::protocol::{
    read_frame, write_frame, ErrorBody, ErrorKind, ExitStatus, Frame, Kind, ProtocolError, Request,
    Response, SpawnRequest, Started, CHUNK,
};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the agent keeps reading a process's pipes after it exited
/// (a background grandchild may hold them open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// What the agent needs to know about its box.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AgentConfig {
    /// Environment applied to every process (already validated by the runtime).
    pub env: BTreeMap<String, String>,
}

struct State {
    registry: Registry,
    config: AgentConfig,
}

/// The signals that end the agent (when sent from the host).
fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Runs the agent on `listener` until SIGTERM from the host; never returns
/// on success paths other than shutdown.
pub fn run(listener: std::os::unix::net::UnixListener, config: AgentConfig) -> io::Result<()> {
    // Blocked before any thread starts, so every thread inherits the mask
    // and the signals queue for the signalfd (spawned processes restore an
    // empty mask).
    termination_signals()
        .thread_block()
        .map_err(io::Error::from)?;
    // The agent holds descriptors for every command it runs: its own soft
    // limit is the hard one; the commands get the box default back.
    crate::set_nofile(u64::MAX, u64::MAX)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()?
        .block_on(serve(listener, config))
}

async fn serve(listener: std::os::unix::net::UnixListener, config: AgentConfig) -> io::Result<()> {
    let state = Arc::new(State {
        registry: Registry::default(),
        config,
    });
    let mut sigchld = signal(SignalKind::child())?;
    let sigfd = SignalFd::with_flags(
        &termination_signals(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    // SAFETY: the SignalFd owns its descriptor and is neither replaced nor
    // closed while the AsyncFd holds it.
    let terminations = unsafe { AsyncFd::register(sigfd) }?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    // Children may have exited before the handler was installed.
    state.registry.reap();
    loop {
        tokio::select! {
            _ = sigchld.recv() => state.registry.reap(),
            sig = from_the_host(&terminations) => return shutdown(&state, sig?).await,
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move { handle(stream, state).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Waits for a termination signal sent from outside the box; the ones a
/// box process sends (its pid is non-zero in the box's namespace) are
/// dropped with a log line.
async fn from_the_host(fd: &AsyncFd<SignalFd>) -> io::Result<Signal> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.get_inner().read_signal() {
            Ok(Some(info)) => {
                let sig = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
                if info.ssi_pid == 0 {
                    return Ok(sig);
                }
                tracing::warn!(signal = %sig, sender = info.ssi_pid,
                    "a box process sent a termination signal to the agent; ignored");
            }
            Ok(None) => ready.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Forwards `sig` to every process in the box, gives them a moment, exits.
async fn shutdown(state: &State, sig: Signal) -> io::Result<()> {
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), sig);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        state.registry.reap();
        if crate::process::list().iter().all(|p| p.pid == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn handle(stream: UnixStream, state: Arc<State>) {
    let (mut rd, mut wr) = stream.into_split();
    let req = match read_frame(&mut rd).await {
        Ok(f) if f.kind == Kind::Request => f.parse::<Request>(),
        Ok(f) => Err(ProtocolError::Unexpected(f.kind)),
        Err(e) => Err(e),
    };
    let result = match req {
        Ok(req) => dispatch(req, &mut rd, &mut wr, &state).await,
        Err(ProtocolError::Closed) => return,
        Err(e) => Err(ErrorBody {
            kind: ErrorKind::InvalidInput,
            message: format!("bad request: {e}"),
        }),
    };
    if let Err(body) = result {
        if let Ok(frame) = Frame::json(Kind::Error, &body) {
            let _ = write_frame(&mut wr, &frame).await;
        }
    }
}

fn proto_err(e: ProtocolError) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Other,
        message: e.to_string(),
    }
}

async fn respond(wr: &mut OwnedWriteHalf, r: Response) -> Result<(), ErrorBody> {
    let frame = Frame::json(Kind::Response, &r).map_err(proto_err)?;
    write_frame(wr, &frame).await.map_err(proto_err)
}

fn task_failed(e: tokio::task::JoinError) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Other,
        message: format!("agent task failed: {e}"),
    }
}

/// Runs a blocking function off the async thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ErrorBody> + Send + 'static,
) -> Result<T, ErrorBody> {
    tokio::task::spawn_blocking(f).await.map_err(task_failed)?
}

async fn dispatch(
    req: Request,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    state: &Arc<State>,
) -> Result<(), ErrorBody> {
    match req {
        Request::Ping => respond(wr, Response::Pong).await,
        Request::Spawn(spawn) => run_process(spawn, rd, wr, state).await,
        Request::Stdin { pid, close } => {
            let mut data = Vec::new();
            receive_blocking(rd, move |r| {
                r.read_to_end(&mut data)
                    .map_err(|e| ErrorBody::from_io("stdin", &e))?;
                Ok(data)
            })
            .await
            .and_then(|data| {
                state
                    .registry
                    .write_stdin(pid, &data, close)
                    .map_err(|e| ErrorBody::from_io(&format!("stdin of pid {pid}"), &e))
            })?;
            respond(wr, Response::Ok).await
        }
        Request::Signal { pid, signal } => {
            state
                .registry
                .signal(pid, signal)
                .map_err(|message| ErrorBody {
                    kind: ErrorKind::InvalidInput,
                    message,
                })?;
            respond(wr, Response::Ok).await
        }
        Request::Processes => {
            let st = state.clone();
            let processes = blocking(move || Ok(st.registry.list())).await?;
            respond(wr, Response::Processes { processes }).await
        }
        Request::KillProcess { pid, signal } => {
            let st = state.clone();
            let process = blocking(move || {
                st.registry
                    .kill_process(pid, signal)
                    .map_err(|e| ErrorBody {
                        kind: match e {
                            KillError::NotFound(_) => ErrorKind::NotFound,
                            KillError::Internal(_) => ErrorKind::PermissionDenied,
                            KillError::BadSignal(_) => ErrorKind::InvalidInput,
                            KillError::Os { .. } => ErrorKind::Other,
                        },
                        message: e.to_string(),
                    })
            })
            .await?;
            respond(wr, Response::Killed { process }).await
        }
        Request::ReadFile {
            path,
            offset,
            length,
            max,
        } => {
            let p = files::resolve(&path)?;
            let bounds = files::ReadBounds {
                offset,
                length,
                max,
            };
            send_blocking(wr, move |w| files::read_to(&p, bounds, w).map(|_| ())).await
        }
        Request::WriteFile { path, mode } => {
            let p = files::resolve(&path)?;
            receive_blocking(rd, move |r| files::write_atomic(&p, r, mode)).await?;
            respond(wr, Response::Ok).await
        }
        Request::Stat { path } => {
            let p = files::resolve(&path)?;
            let stat = blocking(move || files::stat(&p)).await?;
            respond(wr, Response::Stat { stat }).await
        }
        Request::ListDir { path, after, limit } => {
            let p = files::resolve(&path)?;
            let limit = limit.map_or(files::LIST_PAGE, |l| l as usize);
            let page = blocking(move || files::list_dir(&p, after.as_deref(), limit)).await?;
            respond(
                wr,
                Response::ListDir {
                    entries: page.entries,
                    more: page.more,
                },
            )
            .await
        }
        Request::Mkdir { path } => {
            let p = files::resolve(&path)?;
            blocking(move || files::mkdir_p(&p)).await?;
            respond(wr, Response::Ok).await
        }
        Request::Rename { from, to } => {
            let (f, t) = (files::resolve(&from)?, files::resolve(&to)?);
            blocking(move || files::rename(&f, &t)).await?;
            respond(wr, Response::Ok).await
        }
        Request::Remove { path } => {
            let p = files::resolve(&path)?;
            blocking(move || files::remove(&p)).await?;
            respond(wr, Response::Ok).await
        }
        Request::TarOut { path } => {
            let p = files::resolve(&path)?;
            send_blocking(wr, move |w| files::tar_out(&p, w)).await
        }
        Request::TarIn { path } => {
            let p = files::resolve(&path)?;
            receive_blocking(rd, move |r| files::tar_in(&p, r)).await?;
            respond(wr, Response::Ok).await
        }
    }
}

/// A `Write` that hands chunks to the async side over a channel.
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// Runs `produce` on a blocking thread and streams what it writes as `Data`
/// frames, then `End` (or the error it returned).
async fn send_blocking(
    wr: &mut OwnedWriteHalf,
    produce: impl FnOnce(&mut dyn Write) -> Result<(), ErrorBody> + Send + 'static,
) -> Result<(), ErrorBody> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let task = tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        produce(&mut w)?;
        w.flush().map_err(|e| ErrorBody::from_io("stream", &e))
    });
    while let Some(chunk) = rx.recv().await {
        write_frame(wr, &Frame::data(Kind::Data, chunk))
            .await
            .map_err(proto_err)?;
    }
    task.await.map_err(task_failed)??;
    write_frame(wr, &Frame::data(Kind::End, Vec::new()))
        .await
        .map_err(proto_err)
}

enum Chunk {
    Data(Vec<u8>),
    End,
}

/// A `Read` over the `Data` frames the async side receives. A stream that
/// stops without its `End` frame is an error, so a cut-off upload is never
/// committed as if it were complete.
struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Some(Chunk::End) => self.done = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "data stream ended without its end marker",
                    ))
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Feeds the client's `Data` frames (until `End`) to `consume` running on a
/// blocking thread.
async fn receive_blocking<T: Send + 'static>(
    rd: &mut OwnedReadHalf,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, ErrorBody> + Send + 'static,
) -> Result<T, ErrorBody> {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let task = tokio::task::spawn_blocking(move || {
        let mut r = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        };
        let out = consume(&mut r)?;
        // Drain whatever the consumer did not read (e.g. tar padding).
        io::copy(&mut r, &mut io::sink()).map_err(|e| ErrorBody::from_io("stream", &e))?;
        Ok(out)
    });
    loop {
        match read_frame(rd).await {
            Ok(f) if f.kind == Kind::Data => {
                // A consumer that stopped early (its result says why) gets
                // nothing more, but the client's data is still read to its
                // end: closing with unread data would reset the connection
                // and lose the error answer on the client's side.
                let _ = tx.send(Chunk::Data(f.payload)).await;
            }
            Ok(f) if f.kind == Kind::End => {
                let _ = tx.send(Chunk::End).await;
                break;
            }
            // Anything else, or a lost connection: drop the sender, which
            // makes the consumer fail instead of committing partial data.
            _ => break,
        }
    }
    drop(tx);
    task.await.map_err(task_failed)?
}

async fn run_process(
    req: SpawnRequest,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    state: &Arc<State>,
) -> Result<(), ErrorBody> {
    let spawned = match state.registry.spawn(&req, &state.config.env) {
        Ok(s) => s,
        Err(SpawnError::NotFound(program)) => {
            // Behave like a shell: message on stderr, exit code 127.
            let msg = format!("boxd: {program}: command not found\n");
            write_frame(wr, &Frame::data(Kind::Stderr, msg.into_bytes()))
                .await
                .map_err(proto_err)?;
            let exit = ExitStatus::exited(127);
            let frame = Frame::json(Kind::Exit, &exit).map_err(proto_err)?;
            return write_frame(wr, &frame).await.map_err(proto_err);
        }
        Err(e) => {
            return Err(ErrorBody {
                kind: ErrorKind::InvalidInput,
                message: e.to_string(),
            })
        }
    };
    let pid = spawned.pid;
    let tracker = spawned.tracker;
    // Ends the command and every process it started, however detached.
    let end_all = || async {
        state.registry.end_exec(tracker).await;
        state.registry.forget(pid);
    };
    let started = Frame::json(Kind::Started, &Started { pid }).map_err(proto_err)?;
    if write_frame(wr, &started).await.is_err() {
        end_all().await;
        return Ok(());
    }
    let mut output = match OutputPipes::new(spawned.stdout, spawned.stderr) {
        Ok(o) => o,
        Err(e) => {
            end_all().await;
            return Err(ErrorBody::from_io("process pipes", &e));
        }
    };
    let exit_rx = command_exit(spawned.report);
    tokio::pin!(exit_rx);
    let stdin = spawned.stdin;
    let mut client_open = true;
    let mut status: Option<ExitStatus> = None;
    let mut drain_until = Instant::now();
    let deadline = req
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut timed_out = false;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if status.is_some() && !output.is_open() {
            break;
        }
        let frame = tokio::select! {
            // Each chunk goes out as soon as it is read, in the order the
            // pipes became readable (see `pipes`).
            chunk = output.next(&mut buf), if output.is_open() => match chunk {
                Ok(Some((Stream::Stdout, n))) => Some(Frame::data(Kind::Stdout, buf[..n].to_vec())),
                Ok(Some((Stream::Stderr, n))) => Some(Frame::data(Kind::Stderr, buf[..n].to_vec())),
                Ok(None) => None,
                Err(e) => {
                    end_all().await;
                    return Err(ErrorBody::from_io("process output", &e));
                }
            },
            s = &mut exit_rx, if status.is_none() => {
                status = Some(s);
                state.registry.forget(pid);
                drain_until = Instant::now() + DRAIN_AFTER_EXIT;
                None
            },
            _ = tokio::time::sleep_until(drain_until), if status.is_some() => break,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                if deadline.is_some() && !timed_out && status.is_none() => {
                timed_out = true;
                // The exit is reported only once nothing of the command is
                // left in the box.
                end_all().await;
                None
            },
            f = read_frame(rd), if client_open => {
                match f {
                    Ok(f) if f.kind == Kind::Data || f.kind == Kind::End => {
                        let close = f.kind == Kind::End;
                        let s = stdin.clone();
                        // A process that does not read its stdin only makes
                        // this write fail; the output loop keeps going.
                        let _ = tokio::task::spawn_blocking(move || write_stdin(&s, &f.payload, close)).await;
                    }
                    _ => {
                        client_open = false;
                        if req.kill_on_disconnect {
                            end_all().await;
                            return Ok(());
                        }
                    }
                }
                None
            },
        };
        if let Some(frame) = frame {
            if write_frame(wr, &frame).await.is_err() {
                if req.kill_on_disconnect {
                    end_all().await;
                }
                return Ok(());
            }
        }
    }
    let mut exit = status.unwrap_or(ExitStatus::exited(-1));
    exit.timed_out = timed_out;
    if !timed_out {
        // What it left running (`server &`) is kept, and said.
        let st = state.clone();
        exit.left_running = blocking(move || Ok(st.registry.descendants(tracker)))
            .await
            .unwrap_or_default();
    }
    let frame = Frame::json(Kind::Exit, &exit).map_err(proto_err)?;
    write_frame(wr, &frame).await.map_err(proto_err)
}
