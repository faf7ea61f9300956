//! Snapshot endpoints: capture (`POST /v2/box/{id}/snapshots`), list, get
//! and delete; boxes start from a snapshot in `boxes::from_snapshot`.
//!
//! Owns the wire side only: which body and query forms of a bulk delete
//! select what (`{"ids": [...]}`, or `{}` / `?all=true` for all — nothing
//! else may read as "all"), and the snapshot's wire form. Capture,
//! references and freeing are the core's.
//! Never decides what a snapshot holds or when it is freed.

use super::error::{ApiError, ApiResult};
use super::{Auth, Svc};
use axum::extract::{Path, Query};
use axum::Json;
use boxd_api::{
    CreateSnapshotRequest, DeleteSnapshotsRequest, ErrorBody, Snapshot, SnapshotsResponse,
};
use boxd_core::{Snapshot as SnapshotRow, SnapshotSelection};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

fn wire(row: &SnapshotRow) -> Snapshot {
    Snapshot {
        id: row.id.clone(),
        name: row.name.clone(),
        box_id: row.box_id.clone(),
        size_bytes: row.size_bytes,
        status: row.state.clone(),
        created_at: row.created_at / 1000,
        runtime: row.runtime.clone(),
    }
}

fn listing(rows: Vec<SnapshotRow>) -> Json<SnapshotsResponse> {
    Json(SnapshotsResponse {
        snapshots: rows.iter().map(wire).collect(),
    })
}

/// A JSON body that may be left out (`None` when blank).
fn optional_body<T: DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("bad {what} request: {e}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "bad {what} request: the body must be a JSON object"
        )));
    }
    serde_json::from_value(value).map(Some).map_err(bad)
}

#[utoipa::path(post, path = "/v2/box/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "box id or name")),
    request_body = CreateSnapshotRequest,
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Captures the box's filesystem changes and config. The box is frozen
/// for the copy and thawed after; the answer comes when the snapshot is
/// `ready`.
pub async fn create(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Snapshot>> {
    let req: CreateSnapshotRequest = optional_body(&body, "snapshot")?.unwrap_or_default();
    let snap = svc.create_snapshot(&caller, &id, req.name).await?;
    Ok(Json(wire(&snap)))
}

#[utoipa::path(get, path = "/v2/box/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = SnapshotsResponse), (status = 404, body = ErrorBody)))]
/// The ready snapshots taken from this box.
pub async fn list_of_box(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotsResponse>> {
    Ok(listing(svc.list_snapshots(&caller, Some(&id))?))
}

#[utoipa::path(get, path = "/v2/box/snapshots", tag = "snapshots",
    responses((status = 200, body = SnapshotsResponse)))]
/// The team's ready snapshots (also of deleted boxes).
pub async fn list(svc: Svc, Auth(caller): Auth) -> ApiResult<Json<SnapshotsResponse>> {
    Ok(listing(svc.list_snapshots(&caller, None)?))
}

#[utoipa::path(get, path = "/v2/box/snapshots/{sid}", tag = "snapshots",
    params(("sid" = String, Path, description = "snapshot id or name")),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get(
    svc: Svc,
    Auth(caller): Auth,
    Path(sid): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(wire(&svc.find_snapshot(&caller, &sid)?)))
}

#[utoipa::path(delete, path = "/v2/box/{id}/snapshots/{sid}", tag = "snapshots",
    params(("id" = String, Path, description = "box id or name"),
           ("sid" = String, Path, description = "snapshot id or name")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody)))]
/// Deletes a snapshot taken from this box: gone from every list at once;
/// its files stay until no box started from it exists. The box may be
/// gone already (snapshots outlive their boxes).
pub async fn delete_of_box(
    svc: Svc,
    Auth(caller): Auth,
    Path((id, sid)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let sid = svc.delete_snapshot(&caller, Some(&id), &sid)?;
    Ok(Json(json!({"id": sid, "deleted": true})))
}

#[utoipa::path(delete, path = "/v2/box/snapshots/{sid}", tag = "snapshots",
    params(("sid" = String, Path, description = "snapshot id or name")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    svc: Svc,
    Auth(caller): Auth,
    Path(sid): Path<String>,
) -> ApiResult<Json<Value>> {
    let sid = svc.delete_snapshot(&caller, None, &sid)?;
    Ok(Json(json!({"id": sid, "deleted": true})))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DeleteAllQuery {
    /// `true`: delete every snapshot of the team (the Python SDK's form).
    all: Option<bool>,
}

/// What a bulk delete's body and query select. `{"ids": [...]}` selects
/// those; `{}` (TypeScript SDK) or `?all=true` (Python SDK) selects all.
/// No body without `?all=true`, `?all=false` without ids, or ids beside
/// `?all=true` select nothing: a 400. (The body type refuses `null` ids
/// and unknown keys; the core refuses an empty list.)
fn selection(
    body: Option<DeleteSnapshotsRequest>,
    all: Option<bool>,
) -> ApiResult<SnapshotSelection> {
    // `None`: no body; `Some(None)`: `{}`; `Some(Some(ids))`: a list.
    match (body.map(|b| b.ids), all) {
        (Some(Some(_)), Some(true)) => Err(ApiError::bad_request(
            "send either {\"ids\": [...]} or ?all=true, not both",
        )),
        (Some(Some(ids)), _) => Ok(SnapshotSelection::Ids(ids)),
        (_, Some(true)) | (Some(None), None) => Ok(SnapshotSelection::All),
        _ => Err(ApiError::bad_request(
            "send {\"ids\": [...]}, or {} or ?all=true to delete every snapshot",
        )),
    }
}

#[utoipa::path(delete, path = "/v2/box/snapshots", tag = "snapshots", params(DeleteAllQuery),
    request_body = DeleteSnapshotsRequest,
    responses((status = 200, description = "{\"deleted\": n}"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
/// `{"ids": [...]}` deletes those (all or nothing: every id is resolved
/// first, an unknown one is a 404 and nothing is deleted; an id named twice
/// is deleted once); `{}` or `?all=true` deletes all of the team's.
/// Anything else (an empty or `null` list, an unknown key, no body without
/// `?all=true`) is a 400 and deletes nothing.
pub async fn delete_many(
    svc: Svc,
    Auth(caller): Auth,
    Query(q): Query<DeleteAllQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let req: Option<DeleteSnapshotsRequest> = optional_body(&body, "delete")?;
    let deleted = svc.delete_snapshots(&caller, &selection(req, q.all)?)?;
    Ok(Json(json!({ "deleted": deleted })))
}
