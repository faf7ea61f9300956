//! Commands in a box: an argv or a code snippet (python, js, ts, bash),
//! collected to the end or streamed as typed events.
//!
//! Owns validating a command before the box is touched, running it
//! through the box's agent, the bound on collected output, and the
//! accounting of every command (an `exec` audit event: its exec id, argv,
//! exit code, duration, key, and the processes it left running; metrics).
//! Each command gets an exec id that the agent attaches to every process
//! it starts, however detached (see `processes`). A timeout, or a caller
//! that goes away (a dropped stream or request), ends the command with
//! every descendant (the agent's tracker); that exec is audited as
//! `cancelled`. Never a wire format: each front end encodes
//! [`ExecEvent`]s its own way.

use crate::error::{CoreError, CoreResult};
use crate::paths;
use crate::service::{BoxService, Busy, Caller, LiveBox};
use boxd_agent::protocol::{ProcessInfo, SpawnRequest};
use boxd_agent::{ClientError, Output};
use boxd_store::BoxRow;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How much of each of stdout and stderr a collected command keeps.
pub const MAX_COLLECTED: usize = 16 << 20;

/// The language of a code snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLanguage {
    Python,
    Js,
    Ts,
    Bash,
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run directly (no shell is added).
    Argv(Vec<String>),
    /// A snippet run by the language's interpreter.
    Code {
        language: CodeLanguage,
        code: String,
    },
}

/// A command and how to run it.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub command: Command,
    /// Working directory (relative to `/workspace/home` unless absolute).
    pub folder: Option<String>,
    /// Killed after this long.
    pub timeout_ms: Option<u64>,
    /// Added to the box's environment for this command.
    pub env: BTreeMap<String, String>,
}

/// A collected command.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub exit_code: i32,
    /// At most [`MAX_COLLECTED`] bytes of each.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// It was killed after its timeout.
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The exec id its processes are listed with.
    pub exec_id: String,
    /// Processes it left running (kept: its background processes).
    pub left_running: Vec<i32>,
}

/// What a streamed command produces, in order. `Exit` or `Error` is last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// `cpu_ns`: CPU the box used while the command ran (all its processes).
    Exit {
        code: i32,
        cpu_ns: u64,
        timed_out: bool,
    },
    /// The command's end is unknown (the box or its agent failed).
    Error(String),
}

/// A streamed command's events.
pub type ExecStream = BoxStream<'static, ExecEvent>;

/// The argv that runs `code` in `language`.
fn code_argv(language: CodeLanguage, code: &str) -> Vec<String> {
    let v = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
    match language {
        CodeLanguage::Python => v(&["python3", "-c", code]),
        CodeLanguage::Js => v(&["node", "-e", code]),
        // Node strips the types of a .ts file (node >= 22.6); older nodes
        // say so themselves.
        CodeLanguage::Ts => v(&[
            "sh",
            "-c",
            "f=$(mktemp /tmp/code-XXXXXX.ts) && printf %s \"$1\" > \"$f\" && \
             node --experimental-strip-types --no-warnings \"$f\"; rc=$?; rm -f \"$f\"; exit $rc",
            "sh",
            code,
        ]),
        CodeLanguage::Bash => v(&["bash", "-c", code]),
    }
}

/// The agent's request for `spec`, validated (argv and folder), and the
/// argv that is audited.
fn spawn_request(spec: ExecSpec) -> CoreResult<(SpawnRequest, Vec<String>)> {
    let argv = match spec.command {
        Command::Argv(argv) => argv,
        Command::Code { language, code } => code_argv(language, &code),
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(CoreError::invalid(
            "command must be a non-empty argv array, e.g. [\"sh\", \"-c\", \"echo hi\"]",
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(CoreError::invalid("command contains a NUL byte"));
    }
    let mut req = SpawnRequest::argv(argv.clone());
    req.cwd = Some(paths::folder(spec.folder.as_deref())?);
    req.timeout_ms = spec.timeout_ms;
    req.env = spec.env;
    Ok((req, argv))
}

/// A command that could not start because it (or its folder) does not
/// exist ends like it would in a shell: exit 127 and a message on stderr.
fn not_started(e: &boxd_runtime::RuntimeError) -> Option<String> {
    match e {
        boxd_runtime::RuntimeError::Agent(ClientError::Agent(body))
            if body.kind == boxd_agent::protocol::ErrorKind::NotFound =>
        {
            Some(format!("{}\n", body.message))
        }
        _ => None,
    }
}

/// What a command needs after it started, to account for it when it ends.
struct Accounting {
    svc: Arc<BoxService>,
    caller: Caller,
    row: BoxRow,
    live: Busy,
    command: Vec<String>,
    kind: &'static str,
    started: Instant,
    cpu_before: Option<u64>,
    exec_id: String,
    /// `finish` was called: dropping it unfinished means the caller went away.
    finished: AtomicBool,
}

impl Drop for Accounting {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Relaxed) {
            self.record(
                None,
                Some("the caller went away: the command and every process it started were ended"),
                &[],
                true,
            );
        }
    }
}

impl Accounting {
    /// CPU the box used since the command started (all its processes).
    fn cpu_ns(&self) -> u64 {
        match (self.cpu_before, self.live.handle.cgroup().cpu_usage_usec()) {
            (Some(a), Ok(b)) => b.saturating_sub(a) * 1000,
            _ => 0,
        }
    }

    fn finish(&self, exit_code: Option<i32>, error: Option<&str>) {
        self.finish_leaving(exit_code, error, &[]);
    }

    /// `finish`, with what the command left running.
    fn finish_leaving(&self, exit_code: Option<i32>, error: Option<&str>, left: &[ProcessInfo]) {
        self.finished.store(true, Ordering::Relaxed);
        self.record(exit_code, error, left, false);
    }

    fn record(
        &self,
        exit_code: Option<i32>,
        error: Option<&str>,
        left: &[ProcessInfo],
        cancelled: bool,
    ) {
        let took = self.started.elapsed();
        self.svc.metrics.exec_done(self.kind, took);
        let left_running: Vec<_> = left
            .iter()
            .map(|p| json!({"pid": p.pid, "command": p.command}))
            .collect();
        self.svc.audit(
            &self.caller.team_id,
            Some(&self.caller),
            Some(&self.row),
            "exec",
            json!({
                "kind": self.kind,
                "exec_id": self.exec_id,
                "command": self.command,
                "exit_code": exit_code,
                "error": error,
                "cancelled": cancelled,
                "left_running": left_running,
                "duration_ms": took.as_millis() as u64,
            }),
        );
    }

    /// What a command's failure means: a box deleted or restarted under
    /// it says so (its agent went away with it); anything else is the
    /// agent's error.
    fn failure(&self, e: ClientError) -> CoreError {
        let deleted = match self.svc.store.box_by_id(&self.row.id) {
            Ok(None) => true,
            Ok(Some(row)) => row.state == boxd_store::BoxState::Deleted,
            Err(_) => false,
        };
        if deleted {
            return CoreError::not_found(format!(
                "box {} was deleted while the command ran",
                self.row.id
            ));
        }
        let replaced = || {
            !self
                .svc
                .live(&self.row.id)
                .is_some_and(|now| std::ptr::eq::<LiveBox>(&*now, &*self.live))
        };
        if matches!(e, ClientError::AgentGone)
            && (self.svc.is_restarting(&self.row.id) || replaced())
        {
            return CoreError::conflict(format!(
                "box {} was restarted while the command ran; run it again",
                self.row.id
            ));
        }
        CoreError::from(e)
    }

    fn duration_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl BoxService {
    /// Validates `spec`, then finds (and resumes) the box: a command that
    /// cannot run changes nothing.
    async fn start(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        spec: ExecSpec,
        stream: bool,
    ) -> CoreResult<(Accounting, SpawnRequest)> {
        let kind = match (&spec.command, stream) {
            (Command::Argv(_), false) => "exec",
            (Command::Argv(_), true) => "exec_stream",
            (Command::Code { .. }, false) => "code",
            (Command::Code { .. }, true) => "code_stream",
        };
        let (mut req, command) = spawn_request(spec)?;
        let (row, live) = self.running(caller, id).await?;
        let exec_id = crate::boxes::new_id("exec")?;
        req.exec_id = Some(exec_id.clone());
        req.started_by = Some(caller.key_id.clone());
        // Only streams report CPU time (in their exit event).
        let cpu_before = stream
            .then(|| live.handle.cgroup().cpu_usage_usec().ok())
            .flatten();
        let acc = Accounting {
            svc: self.clone(),
            caller: caller.clone(),
            row,
            live,
            command,
            kind,
            started: Instant::now(),
            cpu_before,
            exec_id,
            finished: AtomicBool::new(false),
        };
        Ok((acc, req))
    }

    /// Runs a command to its end, keeping at most [`MAX_COLLECTED`] bytes
    /// of each of its outputs.
    pub async fn exec(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        spec: ExecSpec,
    ) -> CoreResult<ExecOutcome> {
        let (acc, req) = self.start(caller, id, spec, false).await?;
        let mut proc = match acc.live.handle.spawn(req).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(message) = not_started(&e) {
                    acc.finish(Some(127), None);
                    return Ok(ExecOutcome {
                        exit_code: 127,
                        stdout: Vec::new(),
                        stderr: message.into_bytes(),
                        timed_out: false,
                        duration_ms: acc.duration_ms(),
                        exec_id: acc.exec_id.clone(),
                        left_running: Vec::new(),
                    });
                }
                let e = CoreError::from(e);
                acc.finish(None, Some(&e.to_string()));
                return Err(e);
            }
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let keep = |buf: &mut Vec<u8>, data: Vec<u8>| {
            let room = MAX_COLLECTED.saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
        };
        let status = loop {
            let failed = match proc.next().await {
                Ok(Some(Output::Stdout(d))) => {
                    keep(&mut out, d);
                    continue;
                }
                Ok(Some(Output::Stderr(d))) => {
                    keep(&mut err, d);
                    continue;
                }
                Ok(Some(Output::Exit(s))) => break s,
                Ok(None) => {
                    CoreError::internal("the box's agent ended the command without an exit status")
                }
                Err(e) => acc.failure(e),
            };
            acc.finish(None, Some(&failed.to_string()));
            return Err(failed);
        };
        acc.finish_leaving(Some(status.code), None, &status.left_running);
        Ok(ExecOutcome {
            exit_code: status.code,
            stdout: out,
            stderr: err,
            timed_out: status.timed_out,
            duration_ms: acc.duration_ms(),
            exec_id: acc.exec_id.clone(),
            left_running: status.left_running.iter().map(|p| p.pid).collect(),
        })
    }

    /// Starts a command and streams its output as it is produced, then
    /// its exit (or an error).
    pub async fn exec_stream(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        spec: ExecSpec,
    ) -> CoreResult<ExecStream> {
        let (acc, req) = self.start(caller, id, spec, true).await?;
        let proc = match acc.live.handle.spawn(req).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(message) = not_started(&e) {
                    acc.finish(Some(127), None);
                    let events = [
                        ExecEvent::Stderr(Bytes::from(message)),
                        ExecEvent::Exit {
                            code: 127,
                            cpu_ns: 0,
                            timed_out: false,
                        },
                    ];
                    return Ok(Box::pin(futures_util::stream::iter(events)));
                }
                let e = CoreError::from(e);
                acc.finish(None, Some(&e.to_string()));
                return Err(e);
            }
        };
        let events = futures_util::stream::unfold(Some((proc, acc)), |state| async move {
            let (mut proc, acc) = state?;
            let last = match proc.next().await {
                Ok(Some(Output::Stdout(d))) => {
                    return Some((ExecEvent::Stdout(Bytes::from(d)), Some((proc, acc))))
                }
                Ok(Some(Output::Stderr(d))) => {
                    return Some((ExecEvent::Stderr(Bytes::from(d)), Some((proc, acc))))
                }
                Ok(Some(Output::Exit(s))) => {
                    acc.finish_leaving(Some(s.code), None, &s.left_running);
                    ExecEvent::Exit {
                        code: s.code,
                        cpu_ns: acc.cpu_ns(),
                        timed_out: s.timed_out,
                    }
                }
                Ok(None) => {
                    let m = "the box's agent ended the command without an exit status";
                    acc.finish(None, Some(m));
                    ExecEvent::Error(m.into())
                }
                Err(e) => {
                    let m = acc.failure(e).to_string();
                    acc.finish(None, Some(&m));
                    ExecEvent::Error(m)
                }
            };
            Some((last, None))
        });
        Ok(Box::pin(events))
    }
}
