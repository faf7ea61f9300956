//! The audit log: an append-only record of what happened, per team.
//!
//! Owns the `audit_events` table. Events are numbered by `seq`, which only
//! grows, so a reader can resume after the last event it saw. The database
//! itself refuses to change or remove an event (triggers that abort every
//! `UPDATE` and `DELETE`), whatever code runs against it.
//!
//! Never update or delete an event, and never put secret values in one
//! (the callers record names of secrets and headers, not their values).

use crate::error::{sqlite_code, Result, StoreError, FOREIGN_KEY};
use crate::{now_ms, Store};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Row};
use serde::{Deserialize, Serialize};

/// An event to append. The store stamps the time and assigns `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    pub team_id: String,
    pub box_id: Option<String>,
    /// What happened, e.g. `box.create` or `exec`.
    pub kind: String,
    /// The API key that caused it, if one did.
    pub key_id: Option<String>,
    pub data: serde_json::Value,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the log: strictly increasing, never reused.
    pub seq: i64,
    /// Unix milliseconds.
    pub ts: i64,
    pub team_id: String,
    pub box_id: Option<String>,
    pub kind: String,
    pub key_id: Option<String>,
    pub data: serde_json::Value,
}

/// Which events [`Store::list_audit`] returns: the team's events matching
/// every field that is set, in `seq` order, at most `limit` of them (so a
/// `limit` of 0, the default, returns none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub team_id: String,
    pub box_id: Option<String>,
    pub kind: Option<String>,
    /// Only events with `ts >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only events with `seq > after_seq` (to resume a listing).
    pub after_seq: Option<i64>,
    pub limit: u32,
}

/// A row as read, before `data_json` is parsed.
struct RawEvent {
    seq: i64,
    ts: i64,
    team_id: String,
    box_id: Option<String>,
    kind: String,
    key_id: Option<String>,
    data_json: String,
}

impl RawEvent {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawEvent> {
        Ok(RawEvent {
            seq: row.get("seq")?,
            ts: row.get("ts")?,
            team_id: row.get("team_id")?,
            box_id: row.get("box_id")?,
            kind: row.get("kind")?,
            key_id: row.get("key_id")?,
            data_json: row.get("data_json")?,
        })
    }

    fn parse(self) -> Result<AuditEvent> {
        Ok(AuditEvent {
            seq: self.seq,
            ts: self.ts,
            team_id: self.team_id,
            box_id: self.box_id,
            kind: self.kind,
            key_id: self.key_id,
            data: serde_json::from_str(&self.data_json)?,
        })
    }
}

impl Store {
    /// Appends an event and returns its `seq`. An unknown team is `NotFound`.
    pub fn append_audit(&self, event: &NewAuditEvent) -> Result<i64> {
        let data_json = serde_json::to_string(&event.data)?;
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO audit_events (ts, team_id, box_id, kind, key_id, data_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            now_ms(),
            event.team_id,
            event.box_id,
            event.kind,
            event.key_id,
            data_json
        ])
        .map_err(|e| match sqlite_code(&e) {
            Some(FOREIGN_KEY) => StoreError::NotFound(format!("team {}", event.team_id)),
            _ => e.into(),
        })?;
        Ok(conn.last_insert_rowid())
    }

    /// The events `filter` selects, oldest (lowest `seq`) first.
    pub fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let mut sql = String::from(
            "SELECT seq, ts, team_id, box_id, kind, key_id, data_json
             FROM audit_events WHERE team_id = ?",
        );
        let mut args = vec![Value::from(filter.team_id.clone())];
        if let Some(box_id) = &filter.box_id {
            sql.push_str(" AND box_id = ?");
            args.push(Value::from(box_id.clone()));
        }
        if let Some(kind) = &filter.kind {
            sql.push_str(" AND kind = ?");
            args.push(Value::from(kind.clone()));
        }
        if let Some(since) = filter.since_ms {
            sql.push_str(" AND ts >= ?");
            args.push(Value::from(since));
        }
        if let Some(after) = filter.after_seq {
            sql.push_str(" AND seq > ?");
            args.push(Value::from(after));
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        args.push(Value::from(i64::from(filter.limit)));

        let raws: Vec<RawEvent> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), RawEvent::from_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        raws.into_iter().map(RawEvent::parse).collect()
    }
}
