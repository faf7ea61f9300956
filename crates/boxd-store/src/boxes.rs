//! Boxes: the durable record of every box, so a restarted daemon can
//! re-adopt running boxes and mark dead ones.
//!
//! Owns the `boxes` table: id, team, optional name (unique within the
//! team), state, runtime, the creation spec as JSON and the labels. Never
//! decides whether a state change is allowed (that is the server's state
//! machine) and never touches the box itself (that is the runtime's).

use crate::error::{sqlite_code, Result, StoreError, FOREIGN_KEY, PRIMARY_KEY, UNIQUE};
use crate::{now_ms, Store};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension, Row, ToSql};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where a box is in its lifecycle (`creating → running ⇄ paused →
/// deleted`, plus `failed`). Stored as the lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxState {
    Creating,
    Running,
    Paused,
    Deleted,
    Failed,
}

impl BoxState {
    pub const ALL: [BoxState; 5] = [
        BoxState::Creating,
        BoxState::Running,
        BoxState::Paused,
        BoxState::Deleted,
        BoxState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BoxState::Creating => "creating",
            BoxState::Running => "running",
            BoxState::Paused => "paused",
            BoxState::Deleted => "deleted",
            BoxState::Failed => "failed",
        }
    }
}

impl fmt::Display for BoxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BoxState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<BoxState> {
        BoxState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("box state {s:?}")))
    }
}

impl ToSql for BoxState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for BoxState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<BoxState> {
        let text = value.as_str()?;
        text.parse()
            .map_err(|e: StoreError| FromSqlError::Other(Box::new(e)))
    }
}

/// A box to record. The store adds the timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewBox {
    /// Chosen by the caller (the runtime's id for the box).
    pub id: String,
    pub team_id: String,
    /// Unique within the team when set.
    pub name: Option<String>,
    pub state: BoxState,
    pub runtime: String,
    /// How the box was created, as the server describes it; stored as is.
    pub spec: serde_json::Value,
    pub labels: BTreeMap<String, String>,
}

/// A stored box.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxRow {
    pub id: String,
    pub team_id: String,
    pub name: Option<String>,
    pub state: BoxState,
    pub runtime: String,
    /// `null` when the stored text is not JSON (a corrupt row).
    pub spec: serde_json::Value,
    pub labels: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last state or label change.
    pub updated_at: i64,
}

impl BoxRow {
    /// True if every `(key, value)` pair of `filter` is one of the labels.
    pub fn matches_labels(&self, filter: &[(String, String)]) -> bool {
        filter
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}

const COLUMNS: &str =
    "id, team_id, name, state, runtime, spec_json, labels_json, created_at, updated_at";

/// A row as read, before its JSON columns are parsed.
struct RawBox {
    id: String,
    team_id: String,
    name: Option<String>,
    state: BoxState,
    runtime: String,
    spec_json: String,
    labels_json: String,
    created_at: i64,
    updated_at: i64,
}

impl RawBox {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawBox> {
        Ok(RawBox {
            id: row.get("id")?,
            team_id: row.get("team_id")?,
            name: row.get("name")?,
            state: row.get("state")?,
            runtime: row.get("runtime")?,
            spec_json: row.get("spec_json")?,
            labels_json: row.get("labels_json")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    fn parse(self) -> Result<BoxRow> {
        Ok(BoxRow {
            id: self.id,
            team_id: self.team_id,
            name: self.name,
            state: self.state,
            runtime: self.runtime,
            // A spec that is not JSON reads as `null` rather than hiding
            // every box: the box service fails such a box closed.
            spec: serde_json::from_str(&self.spec_json).unwrap_or(serde_json::Value::Null),
            labels: serde_json::from_str(&self.labels_json)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Store {
    /// Records a new box. An id already used, or a name already used in the
    /// same team, is a `Conflict`; an unknown team is `NotFound`.
    pub fn insert_box(&self, new: &NewBox) -> Result<BoxRow> {
        let now = now_ms();
        let row = BoxRow {
            id: new.id.clone(),
            team_id: new.team_id.clone(),
            name: new.name.clone(),
            state: new.state,
            runtime: new.runtime.clone(),
            spec: new.spec.clone(),
            labels: new.labels.clone(),
            created_at: now,
            updated_at: now,
        };
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO boxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    row.id,
                    row.team_id,
                    row.name,
                    row.state,
                    row.runtime,
                    serde_json::to_string(&row.spec)?,
                    serde_json::to_string(&row.labels)?,
                    row.created_at,
                    row.updated_at,
                ],
            )
            .map_err(|e| match sqlite_code(&e) {
                Some(PRIMARY_KEY) => {
                    StoreError::Conflict(format!("a box with id {:?} already exists", new.id))
                }
                Some(UNIQUE) => StoreError::Conflict(format!(
                    "a box named {:?} already exists in this team",
                    new.name.as_deref().unwrap_or_default()
                )),
                Some(FOREIGN_KEY) => StoreError::NotFound(format!("team {}", new.team_id)),
                _ => e.into(),
            })?;
        Ok(row)
    }

    /// The team's box `id`, if the team has one.
    pub fn get_box(&self, team_id: &str, id: &str) -> Result<Option<BoxRow>> {
        self.one_box(
            &format!("SELECT {COLUMNS} FROM boxes WHERE team_id = ?1 AND id = ?2"),
            [team_id, id],
        )
    }

    /// Box `id` of whichever team (for events the network layer reports
    /// by box id).
    pub fn box_by_id(&self, id: &str) -> Result<Option<BoxRow>> {
        self.one_box(&format!("SELECT {COLUMNS} FROM boxes WHERE id = ?1"), [id])
    }

    /// The team's box called `name`, if the team has one.
    pub fn get_box_by_name(&self, team_id: &str, name: &str) -> Result<Option<BoxRow>> {
        self.one_box(
            &format!("SELECT {COLUMNS} FROM boxes WHERE team_id = ?1 AND name = ?2"),
            [team_id, name],
        )
    }

    /// The team's boxes (every state, `deleted` included) carrying every
    /// `(key, value)` label of `label_filter`, oldest first.
    pub fn list_boxes(
        &self,
        team_id: &str,
        label_filter: &[(String, String)],
    ) -> Result<Vec<BoxRow>> {
        let boxes = self.many_boxes(
            &format!("SELECT {COLUMNS} FROM boxes WHERE team_id = ?1 ORDER BY created_at, rowid"),
            [team_id],
        )?;
        Ok(boxes
            .into_iter()
            .filter(|b| b.matches_labels(label_filter))
            .collect())
    }

    /// How many boxes (of every team) are in each state; states with no
    /// box are left out.
    pub fn count_boxes_by_state(&self) -> Result<Vec<(BoxState, i64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM boxes GROUP BY state")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every box of every team, oldest first: what a starting daemon
    /// re-adopts or marks dead.
    pub fn all_boxes(&self) -> Result<Vec<BoxRow>> {
        self.many_boxes(
            &format!("SELECT {COLUMNS} FROM boxes ORDER BY created_at, rowid"),
            [],
        )
    }

    /// Records the box's new state. Any state may follow any other here; the
    /// server's state machine decides which changes happen.
    pub fn set_box_state(&self, id: &str, state: BoxState) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE boxes SET state = ?1, updated_at = ?2 WHERE id = ?3",
            params![state, now_ms(), id],
        )?;
        found(changed, id)
    }

    /// Replaces the box's labels.
    pub fn update_box_labels(&self, id: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE boxes SET labels_json = ?1, updated_at = ?2 WHERE id = ?3",
            params![serde_json::to_string(labels)?, now_ms(), id],
        )?;
        found(changed, id)
    }

    /// Replaces the box's spec (what the server records beyond the columns).
    pub fn update_box_spec(&self, id: &str, spec: &serde_json::Value) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE boxes SET spec_json = ?1, updated_at = ?2 WHERE id = ?3",
            params![serde_json::to_string(spec)?, now_ms(), id],
        )?;
        found(changed, id)
    }

    /// Removes the team's box `id` from the store. `false` if the team has
    /// no such box. (A box that is deleted but should stay listed is
    /// [`Store::set_box_state`] `Deleted` instead.)
    pub fn delete_box(&self, team_id: &str, id: &str) -> Result<bool> {
        let changed = self.conn().execute(
            "DELETE FROM boxes WHERE team_id = ?1 AND id = ?2",
            [team_id, id],
        )?;
        Ok(changed > 0)
    }

    fn one_box<P: rusqlite::Params>(&self, sql: &str, params: P) -> Result<Option<BoxRow>> {
        let raw = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(sql)?;
            stmt.query_row(params, RawBox::from_row).optional()?
        };
        raw.map(RawBox::parse).transpose()
    }

    fn many_boxes<P: rusqlite::Params>(&self, sql: &str, params: P) -> Result<Vec<BoxRow>> {
        let raws: Vec<RawBox> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(params, RawBox::from_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        raws.into_iter().map(RawBox::parse).collect()
    }
}

fn found(changed: usize, id: &str) -> Result<()> {
    if changed == 0 {
        return Err(StoreError::NotFound(format!("box {id}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{BoxState, NewBox, Store};
    use std::collections::BTreeMap;

    #[test]
    fn a_spec_that_is_not_json_reads_as_null_and_hides_no_box() {
        let store = Store::open_in_memory().unwrap();
        let team = store.ensure_default_team().unwrap();
        for id in ["b1", "b2"] {
            store
                .insert_box(&NewBox {
                    id: id.into(),
                    team_id: team.id.clone(),
                    name: None,
                    state: BoxState::Running,
                    runtime: "host".into(),
                    spec: serde_json::json!({"v": 1}),
                    labels: BTreeMap::new(),
                })
                .unwrap();
        }
        store
            .conn()
            .execute(
                "UPDATE boxes SET spec_json = '{\"v\": 1,' WHERE id = 'b1'",
                [],
            )
            .unwrap();
        let all = store.all_boxes().unwrap();
        assert_eq!(all.len(), 2);
        let b1 = all.iter().find(|b| b.id == "b1").unwrap();
        assert_eq!(b1.spec, serde_json::Value::Null);
        assert_eq!(store.box_by_id("b2").unwrap().unwrap().spec["v"], 1);
    }
}
