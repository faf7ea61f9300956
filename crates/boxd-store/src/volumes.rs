//! Volumes: named, team-owned directories that boxes mount, and which box
//! mounts which.
//!
//! Owns the `volumes` and `box_volumes` tables. Enforces what the data must
//! satisfy: names unique per team, a volume in use by a box cannot be
//! deleted (checked and deleted in one statement, so a create racing a
//! delete either mounts a volume that stays or fails). Never touches the
//! volume's directory (that is the runtime's).

use crate::error::{sqlite_code, Result, StoreError, FOREIGN_KEY, PRIMARY_KEY, UNIQUE};
use crate::{new_id, now_ms, Store};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// A stored volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub size_mib: Option<u64>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// One volume mounted in one box.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxVolumeRow {
    pub box_id: String,
    pub volume_id: String,
    pub path: String,
    pub read_only: bool,
}

const COLUMNS: &str = "id, team_id, name, size_mib, created_at";

impl VolumeRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<VolumeRow> {
        Ok(VolumeRow {
            id: row.get("id")?,
            team_id: row.get("team_id")?,
            name: row.get("name")?,
            size_mib: row.get::<_, Option<i64>>("size_mib")?.map(|n| n as u64),
            created_at: row.get("created_at")?,
        })
    }
}

impl Store {
    /// Records a new volume (its id is made here). A second volume with the
    /// same name in the team is a `Conflict`.
    pub fn create_volume(
        &self,
        team_id: &str,
        name: &str,
        size_mib: Option<u64>,
    ) -> Result<VolumeRow> {
        let row = VolumeRow {
            id: new_id("vol")?,
            team_id: team_id.to_owned(),
            name: name.to_owned(),
            size_mib,
            created_at: now_ms(),
        };
        let size = size_mib
            .map(i64::try_from)
            .transpose()
            .map_err(|_| StoreError::Invalid(format!("volume size {size_mib:?}")))?;
        self.conn()
            .execute(
                &format!("INSERT INTO volumes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![row.id, row.team_id, row.name, size, row.created_at],
            )
            .map_err(|e| match sqlite_code(&e) {
                Some(UNIQUE) | Some(PRIMARY_KEY) => {
                    StoreError::Conflict(format!("a volume named {name:?} already exists"))
                }
                Some(FOREIGN_KEY) => StoreError::NotFound(format!("team {team_id}")),
                _ => e.into(),
            })?;
        Ok(row)
    }

    /// The team's volume called `name` (or with id `name`).
    pub fn get_volume(&self, team_id: &str, name: &str) -> Result<Option<VolumeRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM volumes WHERE team_id = ?1 AND (name = ?2 OR id = ?2)
                     ORDER BY name = ?2 DESC LIMIT 1"
                ),
                params![team_id, name],
                VolumeRow::from_row,
            )
            .optional()?)
    }

    /// The team's volumes, by name.
    pub fn list_volumes(&self, team_id: &str) -> Result<Vec<VolumeRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM volumes WHERE team_id = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([team_id], VolumeRow::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every volume of every team (start-up reconciliation).
    pub fn all_volumes(&self) -> Result<Vec<VolumeRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM volumes ORDER BY id"))?;
        let rows = stmt.query_map([], VolumeRow::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Ids of the boxes mounting volume `volume_id`.
    pub fn volume_users(&self, volume_id: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT box_id FROM box_volumes WHERE volume_id = ?1 ORDER BY box_id",
        )?;
        let rows = stmt.query_map([volume_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes the volume unless a box mounts it (then `Conflict` naming
    /// the boxes). Returns false if there was no such volume.
    pub fn delete_volume(&self, team_id: &str, id: &str) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM volumes WHERE team_id = ?1 AND id = ?2
             AND NOT EXISTS (SELECT 1 FROM box_volumes WHERE volume_id = ?2)",
            params![team_id, id],
        )?;
        if n > 0 {
            return Ok(true);
        }
        let users = self.volume_users(id)?;
        if users.is_empty() {
            return Ok(false);
        }
        Err(StoreError::Conflict(format!(
            "volume {id} is mounted by box{} {}: delete {} first",
            if users.len() == 1 { "" } else { "es" },
            users.join(", "),
            if users.len() == 1 { "it" } else { "them" }
        )))
    }

    /// Records the volumes box `box_id` mounts (all or none). A volume
    /// deleted meanwhile is `NotFound`.
    pub fn attach_volumes(&self, box_id: &str, mounts: &[BoxVolumeRow]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for m in mounts {
            tx.execute(
                "INSERT INTO box_volumes (box_id, volume_id, path, read_only) VALUES (?1, ?2, ?3, ?4)",
                params![box_id, m.volume_id, m.path, m.read_only],
            )
            .map_err(|e| match sqlite_code(&e) {
                Some(FOREIGN_KEY) => StoreError::NotFound(format!("volume {}", m.volume_id)),
                Some(UNIQUE) | Some(PRIMARY_KEY) => {
                    StoreError::Conflict(format!("two volumes at {}", m.path))
                }
                _ => e.into(),
            })?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxState, NewBox};

    #[test]
    fn a_volume_in_use_cannot_be_deleted_and_goes_once_free() {
        let s = Store::open_in_memory().unwrap();
        let team = s.create_team("t").unwrap();
        let v = s.create_volume(&team.id, "data", Some(10)).unwrap();
        assert!(matches!(
            s.create_volume(&team.id, "data", None),
            Err(StoreError::Conflict(_))
        ));
        s.insert_box(&NewBox {
            id: "b1".into(),
            team_id: team.id.clone(),
            name: None,
            state: BoxState::Running,
            runtime: "host".into(),
            spec: serde_json::json!({}),
            labels: Default::default(),
        })
        .unwrap();
        let mount = BoxVolumeRow {
            box_id: "b1".into(),
            volume_id: v.id.clone(),
            path: "/data".into(),
            read_only: false,
        };
        s.attach_volumes("b1", std::slice::from_ref(&mount))
            .unwrap();
        match s.delete_volume(&team.id, &v.id) {
            Err(StoreError::Conflict(m)) => assert!(m.contains("b1"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.get_volume(&team.id, "data").unwrap().unwrap(), v);
        s.delete_box(&team.id, "b1").unwrap();
        assert!(s.delete_volume(&team.id, &v.id).unwrap());
        assert!(!s.delete_volume(&team.id, &v.id).unwrap());
        assert!(s.list_volumes(&team.id).unwrap().is_empty());
        let gone = BoxVolumeRow {
            box_id: "b2".into(),
            ..mount
        };
        assert!(s.attach_volumes("b2", &[gone]).is_err());
    }
}
