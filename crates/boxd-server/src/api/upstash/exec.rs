//! Commands in a box: `exec` (collected), `exec-stream` (output as it is
//! produced), and `code` / `code-stream` (a snippet in python, js, ts or
//! bash).
//!
//! Owns the stream format the SDKs parse: raw output bytes, then one
//! `event: exit\ndata: {"exit_code":N,"cpu_ns":N}\n\n` trailer written in a
//! single chunk (or `event: error`), then the end of the body. Running,
//! accounting and auditing commands are the core's.
//! Never decides how a command runs: that is the core's.

use super::error::ApiResult;
use super::{Auth, JsonObject, Svc};
use axum::body::Body;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use boxd_api::{CodeLanguage, CodeRequest, ErrorBody, ExecRequest, ExecResponse, ExitEvent};
use boxd_core::{Command, ExecEvent, ExecOutcome, ExecSpec};
use bytes::Bytes;
use futures_util::StreamExt;

fn argv_spec(req: ExecRequest) -> ExecSpec {
    ExecSpec {
        command: Command::Argv(req.command),
        folder: req.folder,
        timeout_ms: req.timeout,
        env: req.env.unwrap_or_default(),
    }
}

fn code_spec(req: CodeRequest) -> ExecSpec {
    let language = match req.language {
        CodeLanguage::Python => boxd_core::CodeLanguage::Python,
        CodeLanguage::Js => boxd_core::CodeLanguage::Js,
        CodeLanguage::Ts => boxd_core::CodeLanguage::Ts,
        CodeLanguage::Bash => boxd_core::CodeLanguage::Bash,
    };
    ExecSpec {
        command: Command::Code {
            language,
            code: req.code,
        },
        folder: req.folder,
        timeout_ms: req.timeout,
        env: Default::default(),
    }
}

fn collected(o: ExecOutcome) -> Json<ExecResponse> {
    let mut error = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.timed_out {
        error.push_str("\n[boxd: the command was killed after its timeout]\n");
    }
    Json(ExecResponse {
        exit_code: o.exit_code,
        output: String::from_utf8_lossy(&o.stdout).into_owned(),
        error,
        duration_ms: o.duration_ms,
        exec_id: Some(o.exec_id),
    })
}

/// One event as bytes of the stream: output raw, the end as its trailer.
fn encode(event: ExecEvent) -> Bytes {
    match event {
        ExecEvent::Stdout(d) | ExecEvent::Stderr(d) => d,
        ExecEvent::Exit { code, cpu_ns, .. } => {
            let exit = ExitEvent {
                exit_code: code,
                cpu_ns,
            };
            let data = serde_json::to_string(&exit).unwrap_or_default();
            Bytes::from(format!("event: exit\ndata: {data}\n\n"))
        }
        ExecEvent::Error(error) => {
            let data = serde_json::to_string(&ErrorBody { error }).unwrap_or_default();
            Bytes::from(format!("event: error\ndata: {data}\n\n"))
        }
    }
}

fn streamed(events: boxd_core::ExecStream) -> Response {
    let body = events.map(|e| Ok::<_, std::convert::Infallible>(encode(e)));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[utoipa::path(post, path = "/v2/box/{id}/exec", tag = "exec", request_body = ExecRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = ExecResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn exec(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<ExecRequest>,
) -> ApiResult<Json<ExecResponse>> {
    Ok(collected(svc.exec(&caller, &id, argv_spec(req)).await?))
}

#[utoipa::path(post, path = "/v2/box/{id}/exec-stream", tag = "exec", request_body = ExecRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "raw output, then `event: exit` with ExitEvent data",
               content_type = "text/event-stream"),
              (status = 404, body = ErrorBody)))]
pub async fn exec_stream(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<ExecRequest>,
) -> ApiResult<Response> {
    Ok(streamed(
        svc.exec_stream(&caller, &id, argv_spec(req)).await?,
    ))
}

#[utoipa::path(post, path = "/v2/box/{id}/code", tag = "exec", request_body = CodeRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = ExecResponse), (status = 404, body = ErrorBody)))]
pub async fn code(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<CodeRequest>,
) -> ApiResult<Json<ExecResponse>> {
    Ok(collected(svc.exec(&caller, &id, code_spec(req)).await?))
}

#[utoipa::path(post, path = "/v2/box/{id}/code-stream", tag = "exec", request_body = CodeRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "raw output, then `event: exit`",
               content_type = "text/event-stream"),
              (status = 404, body = ErrorBody)))]
pub async fn code_stream(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<CodeRequest>,
) -> ApiResult<Response> {
    Ok(streamed(
        svc.exec_stream(&caller, &id, code_spec(req)).await?,
    ))
}
