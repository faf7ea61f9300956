//! Team settings: the environment every box of a team starts with.
//!
//! Owns the `team_env` table. Stores the map as given; never decides which
//! names are allowed (the runtime refuses `PATH`, `LD_PRELOAD`, …) and
//! never holds secrets (those are the encrypted secrets' table).

use crate::error::{Result, StoreError};
use crate::Store;
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;

impl Store {
    /// The team's environment (empty if none was set, or no such team).
    pub fn team_env(&self, team_id: &str) -> Result<BTreeMap<String, String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name, value FROM team_env WHERE team_id = ?1")?;
        let rows = stmt.query_map([team_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replaces the team's environment with `env`, all at once.
    pub fn set_team_env(&self, team_id: &str, env: &BTreeMap<String, String>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists = tx
            .query_row("SELECT 1 FROM teams WHERE id = ?1", [team_id], |_| Ok(()))
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("team {team_id}")));
        }
        tx.execute("DELETE FROM team_env WHERE team_id = ?1", [team_id])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO team_env (team_id, name, value) VALUES (?1, ?2, ?3)",
            )?;
            for (name, value) in env {
                insert.execute(params![team_id, name, value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
