//! Snapshots: a box's filesystem changes frozen into immutable layers plus
//! the config needed to start a box from them.
//!
//! Owns the `snapshots` table. A snapshot is `creating` while its files
//! are written (never listed; a starting daemon removes such rows),
//! `ready` once they are in place, and `deleted` when a caller deleted it
//! but a box (or a snapshot taken from such a box) still uses its layers:
//! hidden from every list, purged by the server when nothing uses it.
//! A box uses a snapshot when its `spec_json` has `"snapshot_id"`.

use crate::error::{sqlite_code, Result, StoreError, FOREIGN_KEY, UNIQUE};
use crate::{now_ms, Store};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// A stored snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// The box it was taken from (it may be gone).
    pub box_id: String,
    /// The snapshot that box was restored from, whose layers lie below.
    pub parent_id: Option<String>,
    /// `creating`, `ready` or `deleted`.
    pub state: String,
    pub size_bytes: i64,
    pub runtime: String,
    /// The box's config, as the server describes it.
    pub spec: serde_json::Value,
    /// The layers of this snapshot and of its ancestors, top-most first,
    /// as the server describes them.
    pub layers: serde_json::Value,
    /// Unix milliseconds.
    pub created_at: i64,
}

const COLUMNS: &str = "id, team_id, name, box_id, parent_id, state, size_bytes, runtime, \
                       spec_json, layers_json, created_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<(SnapshotRow, String, String)> {
    Ok((
        SnapshotRow {
            id: row.get("id")?,
            team_id: row.get("team_id")?,
            name: row.get("name")?,
            box_id: row.get("box_id")?,
            parent_id: row.get("parent_id")?,
            state: row.get("state")?,
            size_bytes: row.get("size_bytes")?,
            runtime: row.get("runtime")?,
            spec: serde_json::Value::Null,
            layers: serde_json::Value::Null,
            created_at: row.get("created_at")?,
        },
        row.get("spec_json")?,
        row.get("layers_json")?,
    ))
}

fn parse(raw: (SnapshotRow, String, String)) -> Result<SnapshotRow> {
    let (mut row, spec, layers) = raw;
    row.spec = serde_json::from_str(&spec)?;
    row.layers = serde_json::from_str(&layers)?;
    Ok(row)
}

impl Store {
    /// Records a snapshot being taken (`creating`). A name already used by
    /// a live snapshot of the team is a `Conflict`.
    pub fn insert_snapshot(&self, s: &SnapshotRow) -> Result<()> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO snapshots ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    s.id,
                    s.team_id,
                    s.name,
                    s.box_id,
                    s.parent_id,
                    s.state,
                    s.size_bytes,
                    s.runtime,
                    serde_json::to_string(&s.spec)?,
                    serde_json::to_string(&s.layers)?,
                    if s.created_at == 0 {
                        now_ms()
                    } else {
                        s.created_at
                    },
                ],
            )
            .map_err(|e| match sqlite_code(&e) {
                Some(UNIQUE) => StoreError::Conflict(format!(
                    "a snapshot named {:?} already exists in this team",
                    s.name
                )),
                Some(FOREIGN_KEY) => StoreError::NotFound(format!("team {}", s.team_id)),
                _ => e.into(),
            })?;
        Ok(())
    }

    /// Marks a snapshot whose files are in place `ready`, with its size and
    /// layers.
    pub fn finish_snapshot(
        &self,
        id: &str,
        size_bytes: i64,
        layers: &serde_json::Value,
    ) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE snapshots SET state = 'ready', size_bytes = ?1, layers_json = ?2 \
             WHERE id = ?3 AND state = 'creating'",
            params![size_bytes, serde_json::to_string(layers)?, id],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("snapshot {id}")));
        }
        Ok(())
    }

    /// The team's snapshot by id or name, in any state but `creating` and
    /// `deleted`.
    pub fn get_snapshot(&self, team_id: &str, id_or_name: &str) -> Result<Option<SnapshotRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE team_id = ?1 AND state = 'ready' \
             AND (id = ?2 OR name = ?2) ORDER BY id = ?2 DESC LIMIT 1"
        ))?;
        let raw = stmt.query_row([team_id, id_or_name], from_row).optional()?;
        drop(stmt);
        drop(conn);
        raw.map(parse).transpose()
    }

    /// Any snapshot by id, whatever its team and state.
    pub fn snapshot_by_id(&self, id: &str) -> Result<Option<SnapshotRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1"))?;
        let raw = stmt.query_row([id], from_row).optional()?;
        drop(stmt);
        drop(conn);
        raw.map(parse).transpose()
    }

    /// The team's ready snapshots (of one box when `box_id` is set), oldest
    /// first.
    pub fn list_snapshots(&self, team_id: &str, box_id: Option<&str>) -> Result<Vec<SnapshotRow>> {
        self.many_snapshots(
            &format!(
                "SELECT {COLUMNS} FROM snapshots WHERE team_id = ?1 AND state = 'ready' \
                 AND (?2 IS NULL OR box_id = ?2) ORDER BY created_at, rowid"
            ),
            params![team_id, box_id],
        )
    }

    /// Every snapshot of every team, in any state.
    pub fn all_snapshots(&self) -> Result<Vec<SnapshotRow>> {
        self.many_snapshots(&format!("SELECT {COLUMNS} FROM snapshots"), [])
    }

    /// Hides a snapshot (`deleted`); its row stays until [`Store::purge_snapshot`].
    /// `false` if the team has no such ready snapshot.
    pub fn hide_snapshot(&self, team_id: &str, id: &str) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE snapshots SET state = 'deleted' WHERE team_id = ?1 AND id = ?2 \
             AND state = 'ready'",
            [team_id, id],
        )?;
        Ok(changed > 0)
    }

    /// Whether a box or another not-purged snapshot still uses snapshot `id`.
    pub fn snapshot_in_use(&self, id: &str) -> Result<bool> {
        let n: i64 = self.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM boxes \
                     WHERE json_extract(spec_json, '$.snapshot_id') = ?1) \
                  + (SELECT COUNT(*) FROM snapshots WHERE parent_id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Removes a snapshot's row (its files must be gone first).
    pub fn purge_snapshot(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
        Ok(())
    }

    fn many_snapshots<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<Vec<SnapshotRow>> {
        let raws: Vec<_> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(params, from_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        raws.into_iter().map(parse).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewBox;

    fn snap(store: &Store, team: &str, id: &str, name: &str, parent: Option<&str>) -> SnapshotRow {
        let s = SnapshotRow {
            id: id.into(),
            team_id: team.into(),
            name: name.into(),
            box_id: "b1".into(),
            parent_id: parent.map(Into::into),
            state: "creating".into(),
            size_bytes: 0,
            runtime: "host".into(),
            spec: serde_json::json!({}),
            layers: serde_json::json!([]),
            created_at: 0,
        };
        store.insert_snapshot(&s).unwrap();
        s
    }

    #[test]
    fn lifecycle_names_and_references() {
        let store = Store::open_in_memory().unwrap();
        let team = store.ensure_default_team().unwrap().id;
        snap(&store, &team, "s1", "one", None);
        // Creating snapshots are never listed or found.
        assert!(store.list_snapshots(&team, None).unwrap().is_empty());
        assert!(store.get_snapshot(&team, "s1").unwrap().is_none());
        store
            .finish_snapshot("s1", 42, &serde_json::json!(["l"]))
            .unwrap();
        let got = store.get_snapshot(&team, "one").unwrap().unwrap();
        assert_eq!((got.id.as_str(), got.size_bytes), ("s1", 42));
        // Names are unique among live snapshots of a team.
        let dup = SnapshotRow {
            id: "s2".into(),
            ..got.clone()
        };
        assert!(matches!(
            store.insert_snapshot(&dup),
            Err(StoreError::Conflict(_))
        ));
        // A box restored from s1 holds it.
        store
            .insert_box(&NewBox {
                id: "b2".into(),
                team_id: team.clone(),
                name: None,
                state: crate::BoxState::Running,
                runtime: "host".into(),
                spec: serde_json::json!({"snapshot_id": "s1"}),
                labels: Default::default(),
            })
            .unwrap();
        assert!(store.snapshot_in_use("s1").unwrap());
        assert!(store.hide_snapshot(&team, "s1").unwrap());
        assert!(store.list_snapshots(&team, None).unwrap().is_empty());
        // The name is free again once hidden.
        store.insert_snapshot(&dup).unwrap();
        store.delete_box(&team, "b2").unwrap();
        assert!(!store.snapshot_in_use("s1").unwrap());
        snap(&store, &team, "s3", "three", Some("s2"));
        assert!(store.snapshot_in_use("s2").unwrap());
    }
}
