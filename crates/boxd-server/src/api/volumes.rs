//! Volumes (Deno extension): named, team-owned directories that boxes
//! mount at create, read-write (shared between boxes) or read-only. A
//! volume outlives its boxes; one that a box mounts cannot be deleted.
//!
//! Owns the volume endpoints and the validation of a create request's
//! `volumes`. The directory itself is the runtime's; the records are the
//! store's (which refuses to delete a volume in use).

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};
use axum::extract::{Path, State};
use axum::Json;
use boxd_api::{BoxVolume, CreateVolumeRequest, ErrorBody, VolumeData, VolumesResponse};
use boxd_store::{BoxVolumeRow, VolumeRow};
use serde_json::{json, Value};
use std::sync::Arc;

/// At most this many volumes per box.
pub const MAX_BOX_VOLUMES: usize = 16;
/// Paths a volume may not cover (nor anything under them).
const FORBIDDEN: [&str; 3] = ["/proc", "/sys", "/dev"];

fn check_volume_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "volume name {name:?} must be 1 to 63 characters of letters, digits, '-', '_' and '.'"
        )))
    }
}

/// A mount path must be absolute, normalized, not `/` and not in the
/// kernel's views.
fn check_mount_path(path: &str) -> ApiResult<()> {
    let normalized = path.starts_with('/')
        && path.len() <= 1024
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if path == "/" {
        return Err(ApiError::bad_request(
            "volume path \"/\": a volume cannot replace the box's root",
        ));
    }
    if !normalized {
        return Err(ApiError::bad_request(format!(
            "volume path {path:?} must be absolute and normalized (no '.', '..', '//' or trailing '/')"
        )));
    }
    if let Some(f) = FORBIDDEN
        .iter()
        .find(|f| path == **f || path.starts_with(&format!("{f}/")))
    {
        return Err(ApiError::bad_request(format!(
            "volume path {path:?}: volumes cannot be mounted on or under {f}"
        )));
    }
    Ok(())
}

/// The validated `volumes` of a create request: each names a volume of the
/// caller's team and a distinct path.
pub fn parse_box_volumes(
    st: &AppState,
    caller: &Caller,
    raw: Option<&[Value]>,
) -> ApiResult<Vec<(VolumeRow, BoxVolume)>> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_BOX_VOLUMES {
        return Err(ApiError::bad_request(format!(
            "a box mounts at most {MAX_BOX_VOLUMES} volumes, got {}",
            raw.len()
        )));
    }
    let mut out: Vec<(VolumeRow, BoxVolume)> = Vec::new();
    for (i, v) in raw.iter().enumerate() {
        let mount: BoxVolume = serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::bad_request(format!(
                "volumes[{i}]: expected {{\"name\", \"path\", \"read_only\"?}}: {e}"
            ))
        })?;
        check_volume_name(&mount.name)?;
        check_mount_path(&mount.path)?;
        if out.iter().any(|(_, m)| m.path == mount.path) {
            return Err(ApiError::bad_request(format!(
                "volume path {:?} is given twice",
                mount.path
            )));
        }
        if out.iter().any(|(_, m)| m.name == mount.name) {
            return Err(ApiError::bad_request(format!(
                "volume {:?} is mounted twice",
                mount.name
            )));
        }
        let row = st
            .store
            .get_volume(&caller.team_id, &mount.name)?
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "volume {:?} does not exist: create it with POST /v2/volumes",
                    mount.name
                ))
            })?;
        out.push((row, mount));
    }
    Ok(out)
}

/// The store rows for a box's mounts.
pub fn mount_rows(box_id: &str, mounts: &[(VolumeRow, BoxVolume)]) -> Vec<BoxVolumeRow> {
    mounts
        .iter()
        .map(|(row, m)| BoxVolumeRow {
            box_id: box_id.to_string(),
            volume_id: row.id.clone(),
            path: m.path.clone(),
            read_only: m.read_only,
        })
        .collect()
}

fn volume_data(st: &AppState, row: &VolumeRow) -> ApiResult<VolumeData> {
    Ok(VolumeData {
        id: row.id.clone(),
        name: row.name.clone(),
        size_mib: row.size_mib,
        created_at: row.created_at / 1000,
        boxes: st.store.volume_users(&row.id)?,
    })
}

fn find(st: &AppState, caller: &Caller, name: &str) -> ApiResult<VolumeRow> {
    st.store
        .get_volume(&caller.team_id, name)?
        .ok_or_else(|| ApiError::not_found(format!("volume {name} not found")))
}

#[utoipa::path(post, path = "/v2/volumes", tag = "volumes", request_body = CreateVolumeRequest,
    responses((status = 200, body = VolumeData), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Creates an empty volume owned by the caller's team.
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<CreateVolumeRequest>,
) -> ApiResult<Json<VolumeData>> {
    check_volume_name(&req.name)?;
    if let Some(size) = req.size_mib {
        if size == 0 || size > (1 << 30) {
            return Err(ApiError::bad_request(format!(
                "size_mib {size}: a volume's size is 1 MiB to 1 PiB"
            )));
        }
        let pool = st.runtime.storage();
        if !pool.enforces_limits() {
            return Err(ApiError::bad_request(format!(
                "size_mib: this daemon cannot enforce volume sizes ({})",
                pool.no_limits_reason().unwrap_or("no btrfs storage pool")
            )));
        }
    }
    // The record first: a crash after it leaves a volume without a
    // directory, which start-up recreates; a failed mkdir removes it.
    let row = st
        .store
        .create_volume(&caller.team_id, &req.name, req.size_mib)?;
    if let Err(e) = st
        .runtime
        .create_volume(&row.id, row.size_mib.map(|m| m << 20))
    {
        if let Err(del) = st.store.delete_volume(&caller.team_id, &row.id) {
            tracing::error!(volume = %row.id, error = %del, "cannot remove a failed volume's record");
        }
        return Err(ApiError::internal(format!(
            "could not create the volume: {e}"
        )));
    }
    st.audit(
        &caller.team_id,
        Some(&caller),
        None,
        "volume.create",
        json!({"id": row.id, "name": row.name, "size_mib": row.size_mib}),
    );
    Ok(Json(volume_data(&st, &row)?))
}

#[utoipa::path(get, path = "/v2/volumes", tag = "volumes",
    responses((status = 200, body = VolumesResponse)))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<VolumesResponse>> {
    let volumes = st
        .store
        .list_volumes(&caller.team_id)?
        .iter()
        .map(|r| volume_data(&st, r))
        .collect::<ApiResult<_>>()?;
    Ok(Json(VolumesResponse { volumes }))
}

#[utoipa::path(get, path = "/v2/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    responses((status = 200, body = VolumeData), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<VolumeData>> {
    let row = find(&st, &caller, &name)?;
    Ok(Json(volume_data(&st, &row)?))
}

#[utoipa::path(delete, path = "/v2/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Deletes a volume and its files; refused (409, naming the boxes) while a
/// box mounts it.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = find(&st, &caller, &name)?;
    match st.store.delete_volume(&caller.team_id, &row.id) {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::not_found(format!("volume {name} not found"))),
        Err(boxd_store::StoreError::Conflict(_)) => {
            let users: Vec<String> = st
                .store
                .volume_users(&row.id)?
                .into_iter()
                .map(|id| match st.store.box_by_id(&id) {
                    Ok(Some(b)) => match b.name {
                        Some(n) => format!("{id} ({n})"),
                        None => id,
                    },
                    _ => id,
                })
                .collect();
            return Err(ApiError::conflict(format!(
                "volume {:?} is in use by {} {}: delete {} first",
                row.name,
                if users.len() == 1 { "box" } else { "boxes" },
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" },
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let rt = st.runtime.clone();
    let id = row.id.clone();
    let removed = tokio::task::spawn_blocking(move || rt.remove_volume(&id))
        .await
        .map_err(|e| ApiError::internal(format!("the delete task failed: {e}")))?;
    if let Err(e) = removed {
        // The record is gone; start-up removes directories without one.
        tracing::error!(volume = %row.id, error = %e, "cannot remove a deleted volume's files");
    }
    st.audit(
        &caller.team_id,
        Some(&caller),
        None,
        "volume.delete",
        json!({"id": row.id, "name": row.name}),
    );
    Ok(Json(
        json!({"id": row.id, "name": row.name, "deleted": true}),
    ))
}

/// After a (re)start: every recorded volume has its directory, and
/// directories without a record (a delete cut short) are removed.
pub fn recover(st: &AppState) -> anyhow::Result<()> {
    let rows = st.store.all_volumes()?;
    for row in &rows {
        if let Ok(dir) = st.runtime.volume_dir(&row.id) {
            if !dir.is_dir() {
                tracing::warn!(volume = %row.id, "recreating a volume's missing directory");
                st.runtime
                    .create_volume(&row.id, row.size_mib.map(|m| m << 20))?;
            }
        }
    }
    for id in st.runtime.volume_ids() {
        if !rows.iter().any(|r| r.id == id) {
            tracing::warn!(volume = %id, "removing a volume the store does not know");
            // Never a reason not to start: a stray entry stays, loudly.
            if let Err(e) = st.runtime.remove_volume(&id) {
                tracing::error!(volume = %id, error = %e, "cannot remove a stray volume directory");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_absolute_normalized_and_outside_kernel_views() {
        for ok in [
            "/data",
            "/workspace/home/data",
            "/tmp/x",
            "/devices",
            "/process",
        ] {
            assert!(check_mount_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/", "data", "", "/data/", "//data", "/a/../b", "/a/./b", "/proc", "/proc/x", "/sys",
            "/sys/fs", "/dev", "/dev/shm", "/a\0b",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad:?}");
        }
    }
}
