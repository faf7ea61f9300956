//! Snapshots: capture a box's filesystem changes and config
//! (`POST /v2/box/{id}/snapshots`), list and delete them, and start new
//! boxes from them (`POST /v2/box/from-snapshot`, in `boxes::create`).
//!
//! Owns the order of a capture (record `creating` → runtime writes and
//! renames the layers → record `ready`), the reference rule (a snapshot
//! used by a box, or by a snapshot taken from such a box, is hidden on
//! delete and freed when the last user goes) and the repair at start.
//! What a snapshot keeps: env vars (secret placeholders removed), runtime,
//! size, network policy, allow_net, metadata. Never secret values or
//! attach headers: a restored box gets the ones its create request gives.

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, BoxMeta, Caller};
use axum::extract::{Path, Query, State};
use axum::Json;
use boxd_api::{
    BoxSize, CreateSnapshotRequest, DeleteSnapshotsRequest, ErrorBody, Snapshot, SnapshotsResponse,
};
use boxd_runtime::image::Layer;
use boxd_store::{BoxState, SnapshotRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The config a snapshot keeps (its `spec_json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotSpec {
    pub env: BTreeMap<String, String>,
    pub size: BoxSize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_net: Option<Vec<String>>,
}

/// A ready snapshot, parsed.
pub struct Restorable {
    pub row: SnapshotRow,
    pub spec: SnapshotSpec,
    pub layers: Vec<Layer>,
}

impl Restorable {
    pub fn of(row: SnapshotRow) -> ApiResult<Restorable> {
        let spec = serde_json::from_value(row.spec.clone())
            .map_err(|e| ApiError::internal(format!("snapshot {}: bad spec: {e}", row.id)))?;
        let layers = serde_json::from_value(row.layers.clone())
            .map_err(|e| ApiError::internal(format!("snapshot {}: bad layers: {e}", row.id)))?;
        Ok(Restorable { row, spec, layers })
    }
}

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

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "snapshot name {name:?} must be 1 to 63 characters of letters, digits, '-', '_' and '.'"
        )))
    }
}

fn new_id() -> ApiResult<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the random number generator failed: {e}")))?;
    Ok(format!(
        "snap-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The caller's ready snapshot by id or name.
pub fn find(st: &AppState, caller: &Caller, id_or_name: &str) -> ApiResult<SnapshotRow> {
    st.store
        .get_snapshot(&caller.team_id, id_or_name)?
        .ok_or_else(|| ApiError::not_found(format!("snapshot {id_or_name} not found")))
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
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Snapshot>> {
    let started = Instant::now();
    let req: CreateSnapshotRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSnapshotRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad snapshot request: {e}")))?
    };
    let row = st.find(&caller, &id)?;
    if !matches!(row.state, BoxState::Running | BoxState::Paused) {
        return Err(ApiError::conflict(format!(
            "box {} is {}: only a running or paused box can be snapshotted",
            row.id, row.state
        )));
    }
    let live = st
        .live(&row.id)
        .filter(|l| l.handle.is_alive())
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "box {} has stopped; it cannot be snapshotted",
                row.id
            ))
        })?;
    let snap_id = new_id()?;
    let name = req.name.unwrap_or_else(|| snap_id.clone());
    check_name(&name)?;
    let meta = BoxMeta::of(&row);
    let mut env = live.handle.record().env.clone();
    for secret in meta.secrets.keys() {
        env.remove(secret);
    }
    let spec = SnapshotSpec {
        env,
        size: meta.size,
        disk_mib: meta.disk_mib,
        metadata: meta.metadata.clone(),
        network_policy: meta.network_policy.clone(),
        allow_net: meta.allow_net.clone(),
    };
    let parent = match &meta.snapshot_id {
        Some(p) => st
            .store
            .snapshot_by_id(p)?
            .map(Restorable::of)
            .transpose()?,
        None => None,
    };
    let mut snap = SnapshotRow {
        id: snap_id.clone(),
        team_id: caller.team_id.clone(),
        name,
        box_id: row.id.clone(),
        parent_id: parent.as_ref().map(|p| p.row.id.clone()),
        state: "creating".into(),
        size_bytes: 0,
        runtime: row.runtime.clone(),
        spec: serde_json::to_value(&spec)
            .map_err(|e| ApiError::internal(format!("encode the snapshot spec: {e}")))?,
        layers: json!([]),
        created_at: 0,
    };
    st.store.insert_snapshot(&snap)?;
    // No pause or resume of the box while it is captured: the capture's
    // own freeze and thaw must not undo (or be undone by) one.
    let _lifecycle = live.lifecycle.lock().await;
    let rt = st.runtime.clone();
    let (live2, id2) = (live.clone(), snap_id.clone());
    let captured = tokio::task::spawn_blocking(move || rt.snapshot(&live2.handle, &id2))
        .await
        .map_err(|e| ApiError::internal(format!("the snapshot task failed: {e}")))
        .and_then(|r| r.map_err(ApiError::from));
    let finished = captured.and_then(|c| {
        let mut layers = c.layers;
        if let Some(p) = &parent {
            layers.extend(p.layers.iter().cloned());
        }
        let layers = serde_json::to_value(&layers)
            .map_err(|e| ApiError::internal(format!("encode the layers: {e}")))?;
        st.store
            .finish_snapshot(&snap_id, c.bytes as i64, &layers)?;
        Ok((c.bytes, layers))
    });
    let (bytes, layers) = match finished {
        Ok(v) => v,
        Err(e) => {
            let _ = st.runtime.remove_snapshot(&snap_id);
            let _ = st.store.purge_snapshot(&snap_id);
            return Err(e);
        }
    };
    snap.state = "ready".into();
    snap.size_bytes = bytes as i64;
    snap.layers = layers;
    let took = started.elapsed();
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "box.snapshot",
        json!({"snapshot_id": snap.id, "name": snap.name, "size_bytes": bytes,
               "duration_ms": took.as_millis() as u64}),
    );
    tracing::info!(box_id = %row.id, snapshot_id = %snap.id, bytes, took_ms = took.as_millis() as u64, "snapshot taken");
    Ok(Json(wire(&snap)))
}

#[utoipa::path(get, path = "/v2/box/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = SnapshotsResponse), (status = 404, body = ErrorBody)))]
/// The ready snapshots taken from this box.
pub async fn list_of_box(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotsResponse>> {
    let row = st.find(&caller, &id)?;
    let rows = st.store.list_snapshots(&caller.team_id, Some(&row.id))?;
    Ok(Json(SnapshotsResponse {
        snapshots: rows.iter().map(wire).collect(),
    }))
}

#[utoipa::path(get, path = "/v2/box/snapshots", tag = "snapshots",
    responses((status = 200, body = SnapshotsResponse)))]
/// The team's ready snapshots (also of deleted boxes).
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<SnapshotsResponse>> {
    let rows = st.store.list_snapshots(&caller.team_id, None)?;
    Ok(Json(SnapshotsResponse {
        snapshots: rows.iter().map(wire).collect(),
    }))
}

#[utoipa::path(get, path = "/v2/box/snapshots/{sid}", tag = "snapshots",
    params(("sid" = String, Path, description = "snapshot id or name")),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(sid): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(wire(&find(&st, &caller, &sid)?)))
}

/// Hides the snapshot and frees whatever nothing uses any more.
fn delete_one(st: &AppState, caller: &Caller, snap: &SnapshotRow) -> ApiResult<()> {
    st.store.hide_snapshot(&caller.team_id, &snap.id)?;
    st.audit(
        &caller.team_id,
        Some(caller),
        None,
        "snapshot.delete",
        json!({"snapshot_id": snap.id, "name": snap.name, "box_id": snap.box_id}),
    );
    collect(st);
    Ok(())
}

/// Frees deleted snapshots that no box and no other snapshot uses (their
/// files, then their rows), repeating up parent chains.
pub fn collect(st: &AppState) {
    let _held = st.snapshot_refs.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let Ok(all) = st.store.all_snapshots() else {
            return;
        };
        let mut freed = 0;
        for s in all.iter().filter(|s| s.state == "deleted") {
            match st.store.snapshot_in_use(&s.id) {
                Ok(false) => {}
                _ => continue,
            }
            if let Err(e) = st.runtime.remove_snapshot(&s.id) {
                tracing::error!(snapshot_id = %s.id, error = %e, "cannot free a snapshot's files");
                continue;
            }
            if st.store.purge_snapshot(&s.id).is_ok() {
                tracing::info!(snapshot_id = %s.id, "snapshot freed");
                freed += 1;
            }
        }
        if freed == 0 {
            return;
        }
    }
}

/// At start: drop captures a crash cut short (rows still `creating` and
/// their files), layer dirs no row knows, and deleted snapshots nothing
/// uses.
pub fn recover(st: &AppState) -> anyhow::Result<()> {
    let rows = st.store.all_snapshots()?;
    for s in rows.iter().filter(|s| s.state == "creating") {
        tracing::warn!(snapshot_id = %s.id, "discarding a snapshot whose capture did not finish");
        // The capture froze its box; a running box must not stay frozen
        // (a paused one stays as it is).
        if let (Ok(Some(b)), Some(live)) = (st.store.box_by_id(&s.box_id), st.live(&s.box_id)) {
            if b.state == BoxState::Running && live.handle.cgroup().is_frozen().unwrap_or(false) {
                if let Err(e) = live.handle.thaw() {
                    tracing::error!(box_id = %b.id, error = %e, "cannot thaw a box after a cut-short snapshot");
                }
            }
        }
        st.runtime.remove_snapshot(&s.id)?;
        st.store.purge_snapshot(&s.id)?;
    }
    for dir in st.runtime.snapshot_dirs() {
        if !rows.iter().any(|s| s.id == dir && s.state != "creating") {
            tracing::warn!(snapshot_id = %dir, "removing snapshot files no record knows");
            let _ = st.runtime.remove_snapshot(&dir);
        }
    }
    collect(st);
    Ok(())
}

#[utoipa::path(delete, path = "/v2/box/{id}/snapshots/{sid}", tag = "snapshots",
    params(("id" = String, Path, description = "box id or name"),
           ("sid" = String, Path, description = "snapshot id or name")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody)))]
/// Deletes a snapshot: gone from every list at once; its files stay until
/// no box started from it exists.
pub async fn delete_of_box(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path((id, sid)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    // The box may be gone already (snapshots outlive their boxes): `{id}`
    // is the id it was taken from, or the name of that box while it lives.
    let snap = find(&st, &caller, &sid)?;
    let of_box = snap.box_id == id || st.find(&caller, &id).is_ok_and(|b| b.id == snap.box_id);
    if !of_box {
        return Err(ApiError::not_found(format!(
            "snapshot {sid} not found in box {id}"
        )));
    }
    delete_one(&st, &caller, &snap)?;
    Ok(Json(json!({"id": snap.id, "deleted": true})))
}

#[utoipa::path(delete, path = "/v2/box/snapshots/{sid}", tag = "snapshots",
    params(("sid" = String, Path, description = "snapshot id or name")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(sid): Path<String>,
) -> ApiResult<Json<Value>> {
    let snap = find(&st, &caller, &sid)?;
    delete_one(&st, &caller, &snap)?;
    Ok(Json(json!({"id": snap.id, "deleted": true})))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DeleteAllQuery {
    /// `true`: delete every snapshot of the team (the Python SDK's form).
    all: Option<bool>,
}

#[utoipa::path(delete, path = "/v2/box/snapshots", tag = "snapshots", params(DeleteAllQuery),
    request_body = DeleteSnapshotsRequest,
    responses((status = 200, description = "{\"deleted\": n}"), (status = 404, body = ErrorBody)))]
/// `{"ids": [...]}` deletes those (all or nothing: every id is resolved
/// first, an unknown one is a 404 and nothing is deleted; an id named twice
/// is deleted once); `{}` or `?all=true` deletes all of the team's. Anything
/// else (an empty or `null` list, an unknown key, no body without
/// `?all=true`) is a 400 and deletes nothing.
pub async fn delete_many(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<DeleteAllQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let req: DeleteSnapshotsRequest = if blank {
        DeleteSnapshotsRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad delete request: {e}")))?
    };
    let snaps = match (req.ids, q.all) {
        (Some(_), Some(true)) => {
            return Err(ApiError::bad_request(
                "send either {\"ids\": [...]} or ?all=true, not both",
            ))
        }
        (Some(ids), _) if ids.is_empty() => {
            return Err(ApiError::bad_request(
                "ids must list at least one snapshot (send {} or ?all=true to delete all)",
            ))
        }
        (Some(ids), _) => {
            let mut snaps: Vec<SnapshotRow> = Vec::with_capacity(ids.len());
            for id in &ids {
                let snap = find(&st, &caller, id)?;
                if !snaps.iter().any(|s| s.id == snap.id) {
                    snaps.push(snap);
                }
            }
            snaps
        }
        (None, Some(true)) => st.store.list_snapshots(&caller.team_id, None)?,
        (None, None) if !blank => st.store.list_snapshots(&caller.team_id, None)?,
        (None, _) => {
            return Err(ApiError::bad_request(
                "send {\"ids\": [...]}, or {} or ?all=true to delete every snapshot",
            ))
        }
    };
    for s in &snaps {
        delete_one(&st, &caller, s)?;
    }
    Ok(Json(json!({"deleted": snaps.len()})))
}
