//! boxd extension: `GET /v2/box/{id}/processes` (every process of the
//! box with the exec it descends from) and
//! `POST /v2/box/{id}/processes/{pid}/kill[?signal=TERM]`.
//!
//! Decodes, makes one core call, encodes. Which processes are shown and
//! what may be signalled is the core's and the agent's.

use super::error::{ApiError, ApiResult};
use super::{Auth, Svc};
use axum::extract::{Path, Query};
use axum::Json;
use boxd_api::processes::{KillQuery, KillResponse, ProcessData, ProcessList};
use boxd_api::ErrorBody;
use boxd_core::BoxProcess;

fn wire(p: BoxProcess) -> ProcessData {
    ProcessData {
        pid: p.pid,
        ppid: p.ppid,
        uid: p.uid,
        state: p.state,
        command: p.command,
        exec_id: p.exec_id,
        exec_pid: p.exec_pid,
        started_by: p.started_by,
    }
}

#[utoipa::path(get, path = "/v2/box/{id}/processes", tag = "processes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = ProcessList), (status = 404, body = ErrorBody)))]
/// boxd extension: the box's processes, each with the exec it descends
/// from (however it detached), the pid of that exec's command and the key
/// that started it. boxd's own processes are not listed.
pub async fn list(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessList>> {
    let processes = svc.processes(&caller, &id).await?;
    Ok(Json(ProcessList {
        processes: processes.into_iter().map(wire).collect(),
    }))
}

#[utoipa::path(post, path = "/v2/box/{id}/processes/{pid}/kill", tag = "processes",
    params(("id" = String, Path, description = "box id or name"),
           ("pid" = String, Path, description = "pid inside the box"),
           ("signal" = Option<String>, Query, description = "name (TERM, SIGTERM) or number; KILL by default")),
    responses((status = 200, body = KillResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
/// boxd extension: sends a signal (SIGKILL by default) to one process of
/// the box; audited as `process.kill` with the exec it came from.
pub async fn kill(
    svc: Svc,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<KillQuery>,
) -> ApiResult<Json<KillResponse>> {
    let pid: i32 = pid.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "pid {pid:?} is not a process id (a positive number)"
        ))
    })?;
    let signal = boxd_core::parse_signal(q.signal.as_deref().unwrap_or("KILL"))?;
    let process = svc.kill_process(&caller, &id, pid, signal).await?;
    Ok(Json(KillResponse {
        signal,
        process: wire(process),
    }))
}
