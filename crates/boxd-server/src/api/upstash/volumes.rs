//! Volume endpoints (Deno extension): `/v2/volumes` create, list, get and
//! delete.
//!
//! Owns the wire side only; the rules of volumes (names, sizes, in-use
//! refusal) are the core's.

use super::error::ApiResult;
use super::{Auth, JsonObject, Svc};
use axum::extract::Path;
use axum::Json;
use boxd_api::{CreateVolumeRequest, ErrorBody, VolumeData, VolumesResponse};
use boxd_core::VolumeInfo;
use serde_json::{json, Value};

fn volume_data(v: VolumeInfo) -> VolumeData {
    VolumeData {
        id: v.row.id,
        name: v.row.name,
        size_mib: v.row.size_mib,
        created_at: v.row.created_at / 1000,
        boxes: v.boxes,
    }
}

#[utoipa::path(post, path = "/v2/volumes", tag = "volumes", request_body = CreateVolumeRequest,
    responses((status = 200, body = VolumeData), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Creates an empty volume owned by the caller's team.
pub async fn create(
    svc: Svc,
    Auth(caller): Auth,
    JsonObject(req): JsonObject<CreateVolumeRequest>,
) -> ApiResult<Json<VolumeData>> {
    let v = svc.create_volume(&caller, &req.name, req.size_mib)?;
    Ok(Json(volume_data(v)))
}

#[utoipa::path(get, path = "/v2/volumes", tag = "volumes",
    responses((status = 200, body = VolumesResponse)))]
pub async fn list(svc: Svc, Auth(caller): Auth) -> ApiResult<Json<VolumesResponse>> {
    let volumes = svc.list_volumes(&caller)?;
    Ok(Json(VolumesResponse {
        volumes: volumes.into_iter().map(volume_data).collect(),
    }))
}

#[utoipa::path(get, path = "/v2/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    responses((status = 200, body = VolumeData), (status = 404, body = ErrorBody)))]
pub async fn get(
    svc: Svc,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<VolumeData>> {
    Ok(Json(volume_data(svc.get_volume(&caller, &name)?)))
}

#[utoipa::path(delete, path = "/v2/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Deletes a volume and its files; refused (409, naming the boxes) while a
/// box mounts it.
pub async fn delete(
    svc: Svc,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = svc.delete_volume(&caller, &name).await?;
    Ok(Json(
        json!({"id": row.id, "name": row.name, "deleted": true}),
    ))
}
