//! Teams: the owners of keys, boxes, audit events and settings.
//!
//! Owns the `teams` table. Never decides who belongs to a team or what a
//! team may do; never deletes a team (its audit events must outlive it).

use crate::error::{sqlite_code, Result, StoreError, UNIQUE};
use crate::{new_id, now_ms, Store};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// The name of the team that exists on every installation.
pub const DEFAULT_TEAM: &str = "default";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: String,
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Team {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Team> {
        Ok(Team {
            id: row.get("id")?,
            name: row.get("name")?,
            created_at: row.get("created_at")?,
        })
    }
}

impl Store {
    /// Creates a team. A second team with the same name is a `Conflict`.
    pub fn create_team(&self, name: &str) -> Result<Team> {
        let team = Team {
            id: new_id("team")?,
            name: name.to_owned(),
            created_at: now_ms(),
        };
        self.conn()
            .execute(
                "INSERT INTO teams (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![team.id, team.name, team.created_at],
            )
            .map_err(|e| match sqlite_code(&e) {
                Some(UNIQUE) => {
                    StoreError::Conflict(format!("a team named {name:?} already exists"))
                }
                _ => e.into(),
            })?;
        Ok(team)
    }

    /// The team called `name`, if there is one.
    pub fn team_by_name(&self, name: &str) -> Result<Option<Team>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, created_at FROM teams WHERE name = ?1",
                [name],
                Team::from_row,
            )
            .optional()?)
    }

    /// The team with id `id`, if there is one.
    pub fn team(&self, id: &str) -> Result<Option<Team>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, created_at FROM teams WHERE id = ?1",
                [id],
                Team::from_row,
            )
            .optional()?)
    }

    /// The team named [`DEFAULT_TEAM`], created on first use.
    pub fn ensure_default_team(&self) -> Result<Team> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO teams (id, name, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            params![new_id("team")?, DEFAULT_TEAM, now_ms()],
        )?;
        Ok(conn.query_row(
            "SELECT id, name, created_at FROM teams WHERE name = ?1",
            [DEFAULT_TEAM],
            Team::from_row,
        )?)
    }
}
