//! The database schema and its migrations.
//!
//! Owns the ordered list of migrations and the rule for applying them: the
//! schema version is SQLite's `PRAGMA user_version`; migration `i` (0-based)
//! takes the database from version `i` to `i + 1` in one transaction, so a
//! crash leaves either the old or the new schema, never half of one.
//!
//! Never edit or reorder a migration that has been released: append a new
//! one. Never let a migration weaken the audit log's append-only triggers.
//!
//! All times are unix milliseconds (`INTEGER`). Ids are text chosen by the
//! store (teams, keys) or by the caller (boxes).

use crate::error::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};

/// Migrations, oldest first. `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: teams, API keys, boxes, the audit log, team env settings.
    r#"
CREATE TABLE teams (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

-- Keys are kept only as a SHA-256 hash plus a short display prefix.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX api_keys_by_team ON api_keys(team_id);

CREATE TABLE boxes (
    id          TEXT PRIMARY KEY NOT NULL,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    name        TEXT,
    state       TEXT NOT NULL
                CHECK (state IN ('creating', 'running', 'paused', 'deleted', 'failed')),
    runtime     TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    labels_json TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (team_id, name)
) STRICT;

-- box_id and key_id are deliberately not foreign keys: events outlive the
-- boxes and keys they mention, and no event may ever change.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          INTEGER NOT NULL,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    box_id      TEXT,
    kind        TEXT NOT NULL,
    key_id      TEXT,
    data_json   TEXT NOT NULL
) STRICT;
CREATE INDEX audit_events_by_team ON audit_events(team_id, seq);
CREATE INDEX audit_events_by_box ON audit_events(box_id, seq);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: UPDATE is not allowed');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: DELETE is not allowed');
END;
-- INSERT OR REPLACE deletes the old row without firing DELETE triggers
-- (unless recursive_triggers is on), so an insert may never reuse a seq.
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: an event cannot be replaced');
END;

-- The team-wide environment every box of the team gets (settings/env).
CREATE TABLE team_env (
    team_id     TEXT NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (team_id, name)
) STRICT, WITHOUT ROWID;
"#,
    // 2: encrypted secret values (attach headers, placeholder secrets).
    r#"
-- One sealed value per row. `name` is the header name (attach_header) or
-- the env var name (secret); `pattern` the host pattern of an attach
-- header ('' otherwise); `hosts_json` a secret's hosts. Only `nonce` and
-- `ciphertext` depend on the value; everything else is non-secret
-- metadata, authenticated as associated data when the value is opened.
CREATE TABLE secret_values (
    id          INTEGER PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    box_id      TEXT REFERENCES boxes(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('attach_header', 'secret', 'ca_key')),
    name        TEXT NOT NULL,
    pattern     TEXT NOT NULL DEFAULT '',
    hosts_json  TEXT,
    placeholder TEXT UNIQUE,
    key_id      TEXT NOT NULL,
    nonce       BLOB NOT NULL CHECK (length(nonce) = 24),
    ciphertext  BLOB NOT NULL CHECK (length(ciphertext) >= 16),
    created_at  INTEGER NOT NULL
) STRICT;
-- NULLs are distinct in a UNIQUE constraint, so team-level rows (no box)
-- are made unique through an expression.
CREATE UNIQUE INDEX secret_values_unique
    ON secret_values(team_id, ifnull(box_id, ''), kind, name, pattern);
CREATE INDEX secret_values_by_box ON secret_values(box_id);
"#,
    // 3: the egress proxy's CA (one row): the certificate in clear, the
    // private key sealed like any secret value.
    r#"
CREATE TABLE boxd_ca (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem    TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    nonce       BLOB NOT NULL CHECK (length(nonce) = 24),
    ciphertext  BLOB NOT NULL CHECK (length(ciphertext) >= 16),
    created_at  INTEGER NOT NULL
) STRICT;
"#,
    // volumes: named, team-owned directories, and which box mounts which.
    r#"
CREATE TABLE volumes (
    id          TEXT PRIMARY KEY NOT NULL,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL,
    size_mib    INTEGER CHECK (size_mib IS NULL OR size_mib > 0),
    created_at  INTEGER NOT NULL,
    UNIQUE (team_id, name)
) STRICT;
-- A volume cannot be deleted while a box mounts it (no ON DELETE on
-- volume_id); a box's rows go with the box.
CREATE TABLE box_volumes (
    box_id      TEXT NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
    volume_id   TEXT NOT NULL REFERENCES volumes(id),
    path        TEXT NOT NULL,
    read_only   INTEGER NOT NULL CHECK (read_only IN (0, 1)),
    PRIMARY KEY (box_id, path)
) STRICT;
CREATE INDEX box_volumes_by_volume ON box_volumes(volume_id);
"#,
    // snapshots: a box's filesystem changes frozen into immutable layers
    // plus its config. `state` is 'creating' while the files are written
    // (never listed; removed at start), 'ready', or 'deleted' (hidden from
    // lists, kept while a box or a child snapshot still uses its layers).
    // Names are unique per team among snapshots not deleted.
    r#"
CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY NOT NULL,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL,
    box_id      TEXT NOT NULL,
    parent_id   TEXT,
    state       TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleted')),
    size_bytes  INTEGER NOT NULL DEFAULT 0,
    runtime     TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    layers_json TEXT NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX snapshots_name ON snapshots(team_id, name) WHERE state != 'deleted';
CREATE INDEX snapshots_by_parent ON snapshots(parent_id);
"#,
    // 6: two more kinds of sealed values, a box's coding-agent API key
    // ('agent_key') and its remote MCP servers' header values
    // ('mcp_header'). SQLite cannot change a CHECK constraint in place:
    // the table is rebuilt with every row (ids included) and its indexes.
    // Nothing references secret_values, so no foreign key moves.
    r#"
CREATE TABLE secret_values_v6 (
    id          INTEGER PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    box_id      TEXT REFERENCES boxes(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL
                CHECK (kind IN ('attach_header', 'secret', 'ca_key', 'agent_key', 'mcp_header')),
    name        TEXT NOT NULL,
    pattern     TEXT NOT NULL DEFAULT '',
    hosts_json  TEXT,
    placeholder TEXT UNIQUE,
    key_id      TEXT NOT NULL,
    nonce       BLOB NOT NULL CHECK (length(nonce) = 24),
    ciphertext  BLOB NOT NULL CHECK (length(ciphertext) >= 16),
    created_at  INTEGER NOT NULL
) STRICT;
INSERT INTO secret_values_v6 (id, team_id, box_id, kind, name, pattern, hosts_json,
        placeholder, key_id, nonce, ciphertext, created_at)
    SELECT id, team_id, box_id, kind, name, pattern, hosts_json,
        placeholder, key_id, nonce, ciphertext, created_at
    FROM secret_values;
DROP TABLE secret_values;
ALTER TABLE secret_values_v6 RENAME TO secret_values;
CREATE UNIQUE INDEX secret_values_unique
    ON secret_values(team_id, ifnull(box_id, ''), kind, name, pattern);
CREATE INDEX secret_values_by_box ON secret_values(box_id);
"#,
];

/// The schema version this build of the store writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The database's current schema version.
pub(crate) fn version(conn: &Connection) -> Result<u32> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per
/// migration. Safe to call on an up-to-date database (it does nothing) and
/// against another process migrating the same file (the version is re-read
/// under the write lock).
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = version(&tx)?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(sql) = MIGRATIONS.get(current as usize) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') ORDER BY name",
            )
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn migrations_apply_in_order_and_only_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let after_first = tables(&conn);
        for expected in [
            "api_keys",
            "audit_events",
            "audit_events_no_delete",
            "audit_events_no_replace",
            "audit_events_no_update",
            "boxes",
            "secret_values",
            "team_env",
            "teams",
        ] {
            assert!(after_first.iter().any(|t| t == expected), "{expected}");
        }
        // A second run finds nothing to do (re-running a CREATE TABLE would
        // fail), and leaves the schema as it was.
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(tables(&conn), after_first);
    }

    #[test]
    fn the_secret_kinds_migration_keeps_existing_values_and_takes_the_new_kinds() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        // A database as version 5 left it, with a sealed value in it.
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute_batch(
            "INSERT INTO teams VALUES ('t1', 'team', 1);
             INSERT INTO boxes (id, team_id, state, runtime, spec_json, created_at, updated_at)
                 VALUES ('b1', 't1', 'running', 'host', '{}', 1, 1);
             INSERT INTO secret_values (id, team_id, box_id, kind, name, pattern, key_id,
                 nonce, ciphertext, created_at)
                 VALUES (7, 't1', 'b1', 'attach_header', 'X-Key', 'a.example.com', 'k1',
                 zeroblob(24), zeroblob(16), 1);",
        )
        .unwrap();
        let new_kind = "INSERT INTO secret_values (team_id, box_id, kind, name, key_id,
                 nonce, ciphertext, created_at)
                 VALUES ('t1', 'b1', 'agent_key', 'agent_api_key', 'k1', zeroblob(24), zeroblob(16), 1)";
        assert!(
            conn.execute_batch(new_kind).is_err(),
            "version 5 refuses the new kind"
        );
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let kept: (i64, String, String) = conn
            .query_row(
                "SELECT id, kind, pattern FROM secret_values WHERE box_id = 'b1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(kept, (7, "attach_header".into(), "a.example.com".into()));
        conn.execute_batch(new_kind).unwrap();
        // The constraints and the cascade came along.
        assert!(conn
            .execute_batch(&new_kind.replace("agent_key", "other"))
            .is_err());
        assert!(
            conn.execute_batch(new_kind).is_err(),
            "unique per box and kind"
        );
        conn.execute_batch("DELETE FROM boxes WHERE id = 'b1'")
            .unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM secret_values", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_failed_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch("CREATE TABLE marker (x INTEGER)")
            .unwrap();
        // Pretend the database is at version 0 without its `teams` table:
        // migration 1 then creates `teams`, fails on the next table (it
        // exists) and must roll back whole, `teams` and version included.
        conn.pragma_update(None, "user_version", 0).unwrap();
        conn.execute_batch("DROP TABLE teams").unwrap();
        assert!(migrate(&mut conn).is_err());
        assert_eq!(version(&conn).unwrap(), 0);
        assert!(!tables(&conn).iter().any(|t| t == "teams"));
        assert!(tables(&conn).iter().any(|t| t == "marker"));
    }
}
