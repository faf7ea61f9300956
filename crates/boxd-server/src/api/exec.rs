//! Commands in a box: `exec` (collected), `exec-stream` (output as it is
//! produced), and `code` / `code-stream` (a snippet in python, js, ts or
//! bash).
//!
//! Owns the stream format the SDKs parse: raw output bytes, then one
//! `event: exit\ndata: {"exit_code":N,"cpu_ns":N}\n\n` trailer written in a
//! single chunk (or `event: error`), then the end of the body. Every command
//! is an audit event (argv, exit code, duration, key). A client that goes
//! away kills its command (the agent's kill-on-disconnect).

use crate::error::{ApiError, ApiResult};
use crate::paths;
use crate::state::{AppState, Caller, LiveBox};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use boxd_agent::protocol::SpawnRequest;
use boxd_agent::{ClientError, Output};
use boxd_api::{CodeLanguage, CodeRequest, ErrorBody, ExecRequest, ExecResponse, ExitEvent};
use boxd_store::BoxRow;
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// How much of each of stdout and stderr a collected exec keeps.
const MAX_COLLECTED: usize = 16 << 20;

/// What an exec needs after it started, to account for it when it ends.
struct Accounting {
    st: Arc<AppState>,
    caller: Caller,
    row: BoxRow,
    live: Arc<LiveBox>,
    command: Vec<String>,
    kind: &'static str,
    started: Instant,
    cpu_before: Option<u64>,
}

impl Accounting {
    fn new(
        st: &Arc<AppState>,
        caller: &Caller,
        row: BoxRow,
        live: Arc<LiveBox>,
        command: Vec<String>,
        kind: &'static str,
    ) -> Accounting {
        // Only streams report CPU time (in their exit trailer).
        let cpu_before = kind
            .ends_with("stream")
            .then(|| live.handle.cgroup().cpu_usage_usec().ok())
            .flatten();
        Accounting {
            st: st.clone(),
            caller: caller.clone(),
            row,
            live,
            command,
            kind,
            started: Instant::now(),
            cpu_before,
        }
    }

    /// CPU the box used since the command started (all its processes).
    fn cpu_ns(&self) -> u64 {
        match (self.cpu_before, self.live.handle.cgroup().cpu_usage_usec()) {
            (Some(a), Ok(b)) => b.saturating_sub(a) * 1000,
            _ => 0,
        }
    }

    fn finish(&self, exit_code: Option<i32>, error: Option<&str>) {
        let took = self.started.elapsed();
        self.st.metrics.exec_done(self.kind, took);
        self.st.audit(
            &self.caller.team_id,
            Some(&self.caller),
            Some(&self.row),
            "exec",
            json!({
                "kind": self.kind,
                "command": self.command,
                "exit_code": exit_code,
                "error": error,
                "duration_ms": took.as_millis() as u64,
            }),
        );
    }
}

fn spawn_request(
    command: Vec<String>,
    folder: Option<&str>,
    timeout_ms: Option<u64>,
) -> ApiResult<SpawnRequest> {
    if command.is_empty() || command[0].is_empty() {
        return Err(ApiError::bad_request(
            "command must be a non-empty argv array, e.g. [\"sh\", \"-c\", \"echo hi\"]",
        ));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::bad_request("command contains a NUL byte"));
    }
    let mut req = SpawnRequest::argv(command);
    req.cwd = Some(paths::folder(folder)?);
    req.timeout_ms = timeout_ms;
    Ok(req)
}

/// The argv that runs `code` in `language`.
fn code_command(language: CodeLanguage, code: &str) -> Vec<String> {
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

/// Runs to completion, keeping at most `MAX_COLLECTED` of each stream.
async fn collect(acc: &Accounting, req: SpawnRequest) -> ApiResult<ExecResponse> {
    let mut proc = match acc.live.handle.spawn(req).await {
        Ok(p) => p,
        Err(e) => match not_started(&e) {
            Some(message) => {
                acc.finish(Some(127), None);
                return Ok(ExecResponse {
                    exit_code: 127,
                    output: String::new(),
                    error: message,
                    duration_ms: acc.started.elapsed().as_millis() as u64,
                });
            }
            None => {
                let e = ApiError::from(e);
                acc.finish(None, Some(&e.message));
                return Err(e);
            }
        },
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let keep = |buf: &mut Vec<u8>, data: Vec<u8>| {
        let room = MAX_COLLECTED.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    };
    let status = loop {
        match proc.next().await {
            Ok(Some(Output::Stdout(d))) => keep(&mut out, d),
            Ok(Some(Output::Stderr(d))) => keep(&mut err, d),
            Ok(Some(Output::Exit(s))) => break s,
            Ok(None) => {
                let e =
                    ApiError::internal("the box's agent ended the command without an exit status");
                acc.finish(None, Some(&e.message));
                return Err(e);
            }
            Err(e) => {
                let e = ApiError::from(e);
                acc.finish(None, Some(&e.message));
                return Err(e);
            }
        }
    };
    acc.finish(Some(status.code), None);
    let mut error = String::from_utf8_lossy(&err).into_owned();
    if status.timed_out {
        error.push_str("\n[boxd: the command was killed after its timeout]\n");
    }
    Ok(ExecResponse {
        exit_code: status.code,
        output: String::from_utf8_lossy(&out).into_owned(),
        error,
        duration_ms: acc.started.elapsed().as_millis() as u64,
    })
}

/// The streamed body: output as produced, then the trailer.
async fn stream(acc: Accounting, req: SpawnRequest) -> ApiResult<Response> {
    let proc = match acc.live.handle.spawn(req).await {
        Ok(p) => p,
        Err(e) => match not_started(&e) {
            Some(message) => {
                acc.finish(Some(127), None);
                let exit = ExitEvent {
                    exit_code: 127,
                    cpu_ns: 0,
                };
                let data = serde_json::to_string(&exit).unwrap_or_default();
                return Ok(stream_response(Body::from(format!(
                    "{message}event: exit\ndata: {data}\n\n"
                ))));
            }
            None => {
                let e = ApiError::from(e);
                acc.finish(None, Some(&e.message));
                return Err(e);
            }
        },
    };
    let body = futures_util::stream::unfold(Some((proc, acc)), |state| async move {
        let (mut proc, acc) = state?;
        let chunk = match proc.next().await {
            Ok(Some(Output::Stdout(d) | Output::Stderr(d))) => {
                return Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(d)),
                    Some((proc, acc)),
                ));
            }
            Ok(Some(Output::Exit(s))) => {
                acc.finish(Some(s.code), None);
                let exit = ExitEvent {
                    exit_code: s.code,
                    cpu_ns: acc.cpu_ns(),
                };
                let data = serde_json::to_string(&exit).unwrap_or_default();
                format!("event: exit\ndata: {data}\n\n")
            }
            Ok(None) => error_event(
                &acc,
                "the box's agent ended the command without an exit status",
            ),
            Err(e) => error_event(&acc, &stream_error(e)),
        };
        Some((Ok(Bytes::from(chunk)), None))
    });
    Ok(stream_response(Body::from_stream(body)))
}

fn stream_response(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

fn stream_error(e: ClientError) -> String {
    ApiError::from(e).message
}

fn error_event(acc: &Accounting, message: &str) -> String {
    acc.finish(None, Some(message));
    let data = serde_json::to_string(&ErrorBody {
        error: message.to_string(),
    })
    .unwrap_or_default();
    format!("event: error\ndata: {data}\n\n")
}

#[utoipa::path(post, path = "/v2/box/{id}/exec", tag = "exec", request_body = ExecRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = ExecResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn exec(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<Json<ExecResponse>> {
    let (row, live) = st.running(&caller, &id).await?;
    let mut spawn = spawn_request(req.command.clone(), req.folder.as_deref(), req.timeout)?;
    spawn.env = req.env.unwrap_or_default();
    let acc = Accounting::new(&st, &caller, row, live, req.command, "exec");
    Ok(Json(collect(&acc, spawn).await?))
}

#[utoipa::path(post, path = "/v2/box/{id}/exec-stream", tag = "exec", request_body = ExecRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "raw output, then `event: exit` with ExitEvent data",
               content_type = "text/event-stream"),
              (status = 404, body = ErrorBody)))]
pub async fn exec_stream(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<Response> {
    let (row, live) = st.running(&caller, &id).await?;
    let mut spawn = spawn_request(req.command.clone(), req.folder.as_deref(), req.timeout)?;
    spawn.env = req.env.unwrap_or_default();
    let acc = Accounting::new(&st, &caller, row, live, req.command, "exec_stream");
    stream(acc, spawn).await
}

#[utoipa::path(post, path = "/v2/box/{id}/code", tag = "exec", request_body = CodeRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = ExecResponse), (status = 404, body = ErrorBody)))]
pub async fn code(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<CodeRequest>,
) -> ApiResult<Json<ExecResponse>> {
    let (row, live) = st.running(&caller, &id).await?;
    let argv = code_command(req.language, &req.code);
    let spawn = spawn_request(argv.clone(), req.folder.as_deref(), req.timeout)?;
    let acc = Accounting::new(&st, &caller, row, live, argv, "code");
    Ok(Json(collect(&acc, spawn).await?))
}

#[utoipa::path(post, path = "/v2/box/{id}/code-stream", tag = "exec", request_body = CodeRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "raw output, then `event: exit`",
               content_type = "text/event-stream"),
              (status = 404, body = ErrorBody)))]
pub async fn code_stream(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<CodeRequest>,
) -> ApiResult<Response> {
    let (row, live) = st.running(&caller, &id).await?;
    let argv = code_command(req.language, &req.code);
    let spawn = spawn_request(argv.clone(), req.folder.as_deref(), req.timeout)?;
    let acc = Accounting::new(&st, &caller, row, live, argv, "code_stream");
    stream(acc, spawn).await
}
