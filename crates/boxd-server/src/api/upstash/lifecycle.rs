//! Pause, resume, restart and the init command (`/startup`) of a box.
//!
//! Owns the HTTP side only: the order of a pause or resume, restarts and
//! the sweeper are the core's (`boxd_core::BoxService`).
//! Never changes a box's state itself.

use super::error::ApiResult;
use super::{box_data, Auth, JsonObject, Svc};
use axum::extract::Path;
use axum::Json;
use boxd_api::{BoxData, ErrorBody, StartupRequest};
use serde_json::{json, Value};

#[utoipa::path(post, path = "/v2/box/{id}/pause", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = BoxData), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Freezes every process of the box (no CPU while paused; memory, files
/// and processes kept). Pausing a paused box does nothing. Any exec,
/// stream or file call resumes the box first.
pub async fn pause(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BoxData>> {
    Ok(Json(box_data(svc.pause(&caller, &id).await?)))
}

#[utoipa::path(post, path = "/v2/box/{id}/resume", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = BoxData), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Thaws a paused box. Resuming a running box does nothing.
pub async fn resume(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BoxData>> {
    Ok(Json(box_data(svc.resume(&caller, &id).await?)))
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
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BoxData>> {
    Ok(Json(box_data(svc.restart(&caller, &id).await?)))
}

#[utoipa::path(get, path = "/v2/box/{id}/startup", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = StartupRequest), (status = 404, body = ErrorBody)))]
/// The box's init command (`""` when none is set).
pub async fn get_startup(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<StartupRequest>> {
    Ok(Json(StartupRequest {
        init_command: svc.init_command(&caller, &id)?.unwrap_or_default(),
    }))
}

#[utoipa::path(put, path = "/v2/box/{id}/startup", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    request_body = StartupRequest,
    responses((status = 200, description = "stored"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
/// Sets the box's init command; it runs the next time the daemon adopts
/// the box (it is not run now).
pub async fn set_startup(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<StartupRequest>,
) -> ApiResult<Json<Value>> {
    let id = svc.set_init_command(&caller, &id, Some(req.init_command.clone()))?;
    Ok(Json(json!({"id": id, "init_command": req.init_command})))
}

#[utoipa::path(delete, path = "/v2/box/{id}/startup", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "removed"), (status = 404, body = ErrorBody)))]
/// Removes the box's init command.
pub async fn delete_startup(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = svc.set_init_command(&caller, &id, None)?;
    Ok(Json(json!({"id": id, "init_command": ""})))
}
