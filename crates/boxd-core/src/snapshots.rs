//! Snapshots: capture a box's filesystem changes and config, list and
//! delete them; boxes start from them in `boxes::create_box`.
//!
//! Owns the order of a capture (record `creating` → runtime writes and
//! renames the layers → record `ready`), the reference rule (a snapshot
//! used by a box, or by a snapshot taken from such a box, is hidden on
//! delete and freed when the last user goes) and the repair at start.
//! What a snapshot keeps: env vars (secret placeholders removed), runtime,
//! size, network policy, allow_net, metadata. Never secret values or
//! attach headers: a restored box gets the ones its create gives.

use crate::boxes::{new_id, BoxMeta, BoxSize};
use crate::error::{CoreError, CoreResult};
use crate::service::{now_ms, BoxService, Caller};
use boxd_runtime::image::Layer;
use boxd_store::{BoxState, SnapshotRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

pub use boxd_store::SnapshotRow as Snapshot;

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
    /// The manifest digest of the image the box ran: a restored box gets
    /// the same image under its layers, even after a rebuild (absent in
    /// snapshots of older versions: the runtime name is resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A ready snapshot, parsed.
pub(crate) struct Restorable {
    pub row: SnapshotRow,
    pub spec: SnapshotSpec,
    pub layers: Vec<Layer>,
}

impl Restorable {
    pub fn of(row: SnapshotRow) -> CoreResult<Restorable> {
        let spec = serde_json::from_value(row.spec.clone())
            .map_err(|e| CoreError::internal(format!("snapshot {}: bad spec: {e}", row.id)))?;
        let layers = serde_json::from_value(row.layers.clone())
            .map_err(|e| CoreError::internal(format!("snapshot {}: bad layers: {e}", row.id)))?;
        Ok(Restorable { row, spec, layers })
    }
}

/// Which snapshots a bulk delete removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSelection {
    /// These (ids or names; at least one; one named twice counts once).
    Ids(Vec<String>),
    /// Every snapshot of the caller's team.
    All,
}

impl BoxService {
    /// The caller's ready snapshot by id or name.
    pub fn find_snapshot(&self, caller: &Caller, id_or_name: &str) -> CoreResult<SnapshotRow> {
        self.store
            .get_snapshot(&caller.team_id, id_or_name)?
            .ok_or_else(|| CoreError::not_found(format!("snapshot {id_or_name} not found")))
    }

    /// Captures the box's filesystem changes and config (`name` defaults
    /// to the snapshot's id). The box is frozen for the copy and thawed
    /// after; the answer comes when the snapshot is `ready`.
    pub async fn create_snapshot(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<String>,
    ) -> CoreResult<SnapshotRow> {
        let started = Instant::now();
        let snap_id = new_id("snap")?;
        let name = name.unwrap_or_else(|| snap_id.clone());
        crate::names::check("snapshot name", &name)?;
        let row = self.find(caller, id)?;
        if !matches!(row.state, BoxState::Running | BoxState::Paused) {
            return Err(CoreError::conflict(format!(
                "box {} is {}: only a running or paused box can be snapshotted",
                row.id,
                crate::boxes::status_name(row.state)
            )));
        }
        let live = self
            .live(&row.id)
            .filter(|l| l.handle.is_alive())
            .ok_or_else(|| {
                CoreError::conflict(format!(
                    "box {} has stopped; it cannot be snapshotted",
                    row.id
                ))
            })?;
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
            image: Some(live.handle.record().image.clone()),
        };
        let parent = match &meta.snapshot_id {
            Some(p) => self
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
                .map_err(|e| CoreError::internal(format!("encode the snapshot spec: {e}")))?,
            layers: json!([]),
            created_at: now_ms(),
        };
        self.store.insert_snapshot(&snap)?;
        // No pause or resume of the box while it is captured: the capture's
        // own freeze and thaw must not undo (or be undone by) one.
        let _lifecycle = live.lifecycle.lock().await;
        let rt = self.runtime.clone();
        let (live2, id2) = (live.clone(), snap_id.clone());
        let captured = tokio::task::spawn_blocking(move || rt.snapshot(&live2.handle, &id2))
            .await
            .map_err(|e| CoreError::internal(format!("the snapshot task failed: {e}")))
            .and_then(|r| r.map_err(CoreError::from));
        let finished = captured.and_then(|c| {
            let mut layers = c.layers;
            if let Some(p) = &parent {
                layers.extend(p.layers.iter().cloned());
            }
            let layers = serde_json::to_value(&layers)
                .map_err(|e| CoreError::internal(format!("encode the layers: {e}")))?;
            self.store
                .finish_snapshot(&snap_id, c.bytes as i64, &layers)?;
            Ok((c.bytes, layers))
        });
        let (bytes, layers) = match finished {
            Ok(v) => v,
            Err(e) => {
                if let Err(rm) = self.runtime.remove_snapshot(&snap_id) {
                    tracing::error!(snapshot_id = %snap_id, error = %rm, "cannot remove a failed snapshot's files");
                }
                if let Err(rm) = self.store.purge_snapshot(&snap_id) {
                    tracing::error!(snapshot_id = %snap_id, error = %rm, "cannot remove a failed snapshot's record");
                }
                return Err(e);
            }
        };
        snap.state = "ready".into();
        snap.size_bytes = bytes as i64;
        snap.layers = layers;
        let took = started.elapsed();
        self.audit(
            &caller.team_id,
            Some(caller),
            Some(&row),
            "box.snapshot",
            json!({"snapshot_id": snap.id, "name": snap.name, "size_bytes": bytes,
                   "duration_ms": took.as_millis() as u64}),
        );
        tracing::info!(box_id = %row.id, snapshot_id = %snap.id, bytes, took_ms = took.as_millis() as u64, "snapshot taken");
        Ok(snap)
    }

    /// The team's ready snapshots (also of deleted boxes), or those taken
    /// from box `of_box`.
    pub fn list_snapshots(
        &self,
        caller: &Caller,
        of_box: Option<&str>,
    ) -> CoreResult<Vec<SnapshotRow>> {
        let box_id = match of_box {
            Some(id) => Some(self.find(caller, id)?.id),
            None => None,
        };
        Ok(self
            .store
            .list_snapshots(&caller.team_id, box_id.as_deref())?)
    }

    /// Deletes a snapshot: gone from every list at once; its files stay
    /// until no box started from it exists. With `of_box`, only a snapshot
    /// taken from that box (its id, or its name while it lives).
    pub fn delete_snapshot(
        &self,
        caller: &Caller,
        of_box: Option<&str>,
        sid: &str,
    ) -> CoreResult<String> {
        let snap = self.find_snapshot(caller, sid)?;
        if let Some(b) = of_box {
            let of_it = snap.box_id == b || self.find(caller, b).is_ok_and(|r| r.id == snap.box_id);
            if !of_it {
                return Err(CoreError::not_found(format!(
                    "snapshot {sid} not found in box {b}"
                )));
            }
        }
        self.hide_snapshot(caller, &snap)?;
        Ok(snap.id)
    }

    /// Deletes the selected snapshots, all or nothing as far as finding
    /// them goes (an unknown id deletes none). Answers how many went.
    pub fn delete_snapshots(
        &self,
        caller: &Caller,
        selection: &SnapshotSelection,
    ) -> CoreResult<usize> {
        let snaps =
            match selection {
                SnapshotSelection::Ids(ids) if ids.is_empty() => return Err(CoreError::invalid(
                    "ids must list at least one snapshot (delete all of them explicitly instead)",
                )),
                SnapshotSelection::Ids(ids) => {
                    let mut snaps: Vec<SnapshotRow> = Vec::with_capacity(ids.len());
                    for id in ids {
                        let snap = self.find_snapshot(caller, id)?;
                        if !snaps.iter().any(|s| s.id == snap.id) {
                            snaps.push(snap);
                        }
                    }
                    snaps
                }
                SnapshotSelection::All => self.store.list_snapshots(&caller.team_id, None)?,
            };
        for s in &snaps {
            self.hide_snapshot(caller, s)?;
        }
        Ok(snaps.len())
    }

    /// Hides the snapshot and frees whatever nothing uses any more.
    fn hide_snapshot(&self, caller: &Caller, snap: &SnapshotRow) -> CoreResult<()> {
        self.store.hide_snapshot(&caller.team_id, &snap.id)?;
        self.audit(
            &caller.team_id,
            Some(caller),
            None,
            "snapshot.delete",
            json!({"snapshot_id": snap.id, "name": snap.name, "box_id": snap.box_id}),
        );
        self.collect_snapshots();
        Ok(())
    }

    /// Frees deleted snapshots that no box and no other snapshot uses (their
    /// files, then their rows), repeating up parent chains.
    pub(crate) fn collect_snapshots(&self) {
        let _held = self.snapshot_refs.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let all = match self.store.all_snapshots() {
                Ok(all) => all,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the snapshots to free");
                    return;
                }
            };
            let mut freed = 0;
            for s in all.iter().filter(|s| s.state == "deleted") {
                match self.store.snapshot_in_use(&s.id) {
                    Ok(false) => {}
                    _ => continue,
                }
                if let Err(e) = self.runtime.remove_snapshot(&s.id) {
                    tracing::error!(snapshot_id = %s.id, error = %e, "cannot free a snapshot's files");
                    continue;
                }
                match self.store.purge_snapshot(&s.id) {
                    Ok(_) => {
                        tracing::info!(snapshot_id = %s.id, "snapshot freed");
                        freed += 1;
                    }
                    Err(e) => {
                        tracing::error!(snapshot_id = %s.id, error = %e, "cannot remove a freed snapshot's record")
                    }
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
    pub(crate) fn recover_snapshots(&self) -> anyhow::Result<()> {
        let rows = self.store.all_snapshots()?;
        for s in rows.iter().filter(|s| s.state == "creating") {
            tracing::warn!(snapshot_id = %s.id, "discarding a snapshot whose capture did not finish");
            // The capture froze its box; a running box must not stay frozen
            // (a paused one stays as it is).
            if let (Ok(Some(b)), Some(live)) =
                (self.store.box_by_id(&s.box_id), self.live(&s.box_id))
            {
                if b.state == BoxState::Running && live.handle.cgroup().is_frozen().unwrap_or(false)
                {
                    if let Err(e) = live.handle.thaw() {
                        tracing::error!(box_id = %b.id, error = %e, "cannot thaw a box after a cut-short snapshot");
                    }
                }
            }
            self.runtime.remove_snapshot(&s.id)?;
            self.store.purge_snapshot(&s.id)?;
        }
        for dir in self.runtime.snapshot_dirs() {
            if !rows.iter().any(|s| s.id == dir && s.state != "creating") {
                tracing::warn!(snapshot_id = %dir, "removing snapshot files no record knows");
                if let Err(e) = self.runtime.remove_snapshot(&dir) {
                    tracing::error!(snapshot_id = %dir, error = %e, "cannot remove stray snapshot files");
                }
            }
        }
        self.collect_snapshots();
        Ok(())
    }
}
