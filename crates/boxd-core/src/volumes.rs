//! Volumes (Deno extension): named, team-owned directories that boxes
//! mount at create, read-write (shared between boxes) or read-only. A
//! volume outlives its boxes; one that a box mounts cannot be deleted.
//!
//! Owns the volume operations and the validation of a create's mounts.
//! The directory itself is the runtime's; the records are the store's
//! (which refuses to delete a volume in use). Never a wire format.

use crate::error::{CoreError, CoreResult};
use crate::service::{BoxService, Caller};
use boxd_store::{BoxVolumeRow, VolumeRow};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use boxd_store::VolumeRow as Volume;

/// At most this many volumes per box.
pub const MAX_BOX_VOLUMES: usize = 16;
/// Paths a volume may not cover (nor anything under them).
const FORBIDDEN: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A volume mounted in a box (as the box records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's name (in the box's team).
    pub name: String,
    /// Absolute path inside the box.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A mount a create asks for.
pub type MountRequest = VolumeMount;

/// A volume and the boxes that mount it.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub row: VolumeRow,
    pub boxes: Vec<String>,
}

/// A mount path must be absolute, normalized, not `/` and not in the
/// kernel's views.
fn check_mount_path(path: &str) -> CoreResult<()> {
    let normalized = path.starts_with('/')
        && path.len() <= 1024
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if path == "/" {
        return Err(CoreError::invalid(
            "volume path \"/\": a volume cannot replace the box's root",
        ));
    }
    if !normalized {
        return Err(CoreError::invalid(format!(
            "volume path {path:?} must be absolute and normalized (no '.', '..', '//' or trailing '/')"
        )));
    }
    if let Some(f) = FORBIDDEN
        .iter()
        .find(|f| path == **f || path.starts_with(&format!("{f}/")))
    {
        return Err(CoreError::invalid(format!(
            "volume path {path:?}: volumes cannot be mounted on or under {f}"
        )));
    }
    Ok(())
}

/// The store rows for a box's mounts.
pub(crate) fn mount_rows(box_id: &str, mounts: &[(VolumeRow, VolumeMount)]) -> Vec<BoxVolumeRow> {
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

impl BoxService {
    /// The validated mounts of a create: each names a volume of the
    /// caller's team and a distinct path.
    pub(crate) fn check_mounts(
        &self,
        caller: &Caller,
        mounts: &[MountRequest],
    ) -> CoreResult<Vec<(VolumeRow, VolumeMount)>> {
        if mounts.len() > MAX_BOX_VOLUMES {
            return Err(CoreError::invalid(format!(
                "a box mounts at most {MAX_BOX_VOLUMES} volumes, got {}",
                mounts.len()
            )));
        }
        let mut out: Vec<(VolumeRow, VolumeMount)> = Vec::new();
        for mount in mounts {
            crate::names::check("volume name", &mount.name)?;
            check_mount_path(&mount.path)?;
            if out.iter().any(|(_, m)| m.path == mount.path) {
                return Err(CoreError::invalid(format!(
                    "volume path {:?} is given twice",
                    mount.path
                )));
            }
            if out.iter().any(|(_, m)| m.name == mount.name) {
                return Err(CoreError::invalid(format!(
                    "volume {:?} is mounted twice",
                    mount.name
                )));
            }
            let row = self
                .store
                .get_volume(&caller.team_id, &mount.name)?
                .ok_or_else(|| {
                    CoreError::invalid(format!(
                        "volume {:?} does not exist: create it first",
                        mount.name
                    ))
                })?;
            out.push((row, mount.clone()));
        }
        Ok(out)
    }

    fn volume_info(&self, row: VolumeRow) -> CoreResult<VolumeInfo> {
        let boxes = self.store.volume_users(&row.id)?;
        Ok(VolumeInfo { row, boxes })
    }

    fn find_volume(&self, caller: &Caller, name: &str) -> CoreResult<VolumeRow> {
        self.store
            .get_volume(&caller.team_id, name)?
            .ok_or_else(|| CoreError::not_found(format!("volume {name} not found")))
    }

    /// Creates an empty volume owned by the caller's team (`size_mib`: its
    /// limit, where the pool enforces limits).
    pub fn create_volume(
        &self,
        caller: &Caller,
        name: &str,
        size_mib: Option<u64>,
    ) -> CoreResult<VolumeInfo> {
        crate::names::check("volume name", name)?;
        if let Some(size) = size_mib {
            if size == 0 || size > (1 << 30) {
                return Err(CoreError::invalid(format!(
                    "size_mib {size}: a volume's size is 1 MiB to 1 PiB"
                )));
            }
            let pool = self.runtime.storage();
            if !pool.enforces_limits() {
                return Err(CoreError::invalid(format!(
                    "size_mib: this daemon cannot enforce volume sizes ({})",
                    pool.no_limits_reason().unwrap_or("no btrfs storage pool")
                )));
            }
        }
        // The record first: a crash after it leaves a volume without a
        // directory, which start-up recreates; a failed mkdir removes it.
        let row = self.store.create_volume(&caller.team_id, name, size_mib)?;
        if let Err(e) = self
            .runtime
            .create_volume(&row.id, row.size_mib.map(|m| m << 20))
        {
            if let Err(del) = self.store.delete_volume(&caller.team_id, &row.id) {
                tracing::error!(volume = %row.id, error = %del, "cannot remove a failed volume's record");
            }
            return Err(CoreError::internal(format!(
                "could not create the volume: {e}"
            )));
        }
        self.audit(
            &caller.team_id,
            Some(caller),
            None,
            "volume.create",
            json!({"id": row.id, "name": row.name, "size_mib": row.size_mib}),
        );
        self.volume_info(row)
    }

    /// The team's volumes.
    pub fn list_volumes(&self, caller: &Caller) -> CoreResult<Vec<VolumeInfo>> {
        self.store
            .list_volumes(&caller.team_id)?
            .into_iter()
            .map(|r| self.volume_info(r))
            .collect()
    }

    /// One volume by name or id.
    pub fn get_volume(&self, caller: &Caller, name: &str) -> CoreResult<VolumeInfo> {
        self.volume_info(self.find_volume(caller, name)?)
    }

    /// Deletes a volume and its files; refused (conflict, naming the
    /// boxes) while a box mounts it.
    pub async fn delete_volume(&self, caller: &Caller, name: &str) -> CoreResult<VolumeRow> {
        let row = self.find_volume(caller, name)?;
        match self.store.delete_volume(&caller.team_id, &row.id) {
            Ok(true) => {}
            Ok(false) => return Err(CoreError::not_found(format!("volume {name} not found"))),
            Err(boxd_store::StoreError::Conflict(_)) => {
                let users: Vec<String> = self
                    .store
                    .volume_users(&row.id)?
                    .into_iter()
                    .map(|id| match self.store.box_by_id(&id) {
                        Ok(Some(b)) => match b.name {
                            Some(n) => format!("{id} ({n})"),
                            None => id,
                        },
                        _ => id,
                    })
                    .collect();
                return Err(CoreError::conflict(format!(
                    "volume {:?} is in use by {} {}: delete {} first",
                    row.name,
                    if users.len() == 1 { "box" } else { "boxes" },
                    users.join(", "),
                    if users.len() == 1 { "it" } else { "them" },
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let rt = self.runtime.clone();
        let id = row.id.clone();
        let removed = tokio::task::spawn_blocking(move || rt.remove_volume(&id))
            .await
            .map_err(|e| CoreError::internal(format!("the delete task failed: {e}")))?;
        if let Err(e) = removed {
            // The record is gone; start-up removes directories without one.
            tracing::error!(volume = %row.id, error = %e, "cannot remove a deleted volume's files");
        }
        self.audit(
            &caller.team_id,
            Some(caller),
            None,
            "volume.delete",
            json!({"id": row.id, "name": row.name}),
        );
        Ok(row)
    }

    /// After a (re)start: every recorded volume has its directory, and
    /// directories without a record (a delete cut short) are removed.
    pub(crate) fn recover_volumes(&self) -> anyhow::Result<()> {
        let rows = self.store.all_volumes()?;
        for row in &rows {
            if let Ok(dir) = self.runtime.volume_dir(&row.id) {
                if !dir.is_dir() {
                    tracing::warn!(volume = %row.id, "recreating a volume's missing directory");
                    self.runtime
                        .create_volume(&row.id, row.size_mib.map(|m| m << 20))?;
                }
            }
        }
        for id in self.runtime.volume_ids() {
            if !rows.iter().any(|r| r.id == id) {
                tracing::warn!(volume = %id, "removing a volume the store does not know");
                // Never a reason not to start: a stray entry stays, loudly.
                if let Err(e) = self.runtime.remove_volume(&id) {
                    tracing::error!(volume = %id, error = %e, "cannot remove a stray volume directory");
                }
            }
        }
        Ok(())
    }
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
