//! Pause, resume and the init command (`/startup`) of a box.
//!
//! Owns the HTTP side only: the order of a pause or resume and the
//! sweeper are in `crate::lifecycle`.

use crate::api::boxes::check_init_command;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, BoxMeta, Caller};
use axum::extract::{Path, State};
use axum::Json;
use boxd_api::{BoxData, ErrorBody, StartupRequest};
use serde_json::{json, Value};
use std::sync::Arc;

#[utoipa::path(post, path = "/v2/box/{id}/pause", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = BoxData), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Freezes every process of the box (no CPU while paused; memory, files
/// and processes kept). Pausing a paused box does nothing. Any exec,
/// stream or file call resumes the box first.
pub async fn pause(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BoxData>> {
    let row = st.find(&caller, &id)?;
    let row = st.pause(&row, Some(&caller), "api").await?;
    Ok(Json(st.data(&row)))
}

#[utoipa::path(post, path = "/v2/box/{id}/resume", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = BoxData), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Thaws a paused box. Resuming a running box does nothing.
pub async fn resume(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BoxData>> {
    let row = st.find(&caller, &id)?;
    let row = st.resume(&row, Some(&caller), "api").await?;
    Ok(Json(st.data(&row)))
}

#[utoipa::path(post, path = "/v2/box/{id}/restart", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = BoxData), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 500, body = ErrorBody)))]
/// Starts the box again on its own files, like a reboot: its processes are
/// killed, a new init starts with the same env, limits, volumes, network
/// policy and secrets, and the init command runs. Works on running, paused
/// and failed (`error`) boxes.
pub async fn restart(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BoxData>> {
    let row = st.find(&caller, &id)?;
    let row = st.restart(&row, Some(&caller), "api").await?;
    Ok(Json(st.data(&row)))
}

#[utoipa::path(get, path = "/v2/box/{id}/startup", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = StartupRequest), (status = 404, body = ErrorBody)))]
/// The box's init command (`""` when none is set).
pub async fn get_startup(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<StartupRequest>> {
    let row = st.find(&caller, &id)?;
    Ok(Json(StartupRequest {
        init_command: BoxMeta::of(&row).init_command.unwrap_or_default(),
    }))
}

async fn store_init(
    st: &AppState,
    caller: &Caller,
    id: &str,
    cmd: Option<String>,
) -> ApiResult<Json<Value>> {
    let mut row = st.find(caller, id)?;
    let mut meta = BoxMeta::of(&row);
    let kind = if cmd.is_some() {
        "box.startup_set"
    } else {
        "box.startup_delete"
    };
    meta.init_command = cmd;
    row.spec = serde_json::to_value(&meta)
        .map_err(|e| ApiError::internal(format!("encode the box spec: {e}")))?;
    st.store.update_box_spec(&row.id, &row.spec)?;
    st.audit(&caller.team_id, Some(caller), Some(&row), kind, json!({}));
    Ok(Json(
        json!({"id": row.id, "init_command": meta.init_command.unwrap_or_default()}),
    ))
}

#[utoipa::path(put, path = "/v2/box/{id}/startup", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    request_body = StartupRequest,
    responses((status = 200, description = "stored"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
/// Sets the box's init command; it runs the next time the daemon adopts
/// the box (it is not run now).
pub async fn set_startup(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<StartupRequest>,
) -> ApiResult<Json<Value>> {
    check_init_command(&req.init_command)?;
    store_init(&st, &caller, &id, Some(req.init_command)).await
}

#[utoipa::path(delete, path = "/v2/box/{id}/startup", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "removed"), (status = 404, body = ErrorBody)))]
/// Removes the box's init command.
pub async fn delete_startup(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    store_init(&st, &caller, &id, None).await
}
