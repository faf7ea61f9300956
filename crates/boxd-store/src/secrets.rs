//! Encrypted secret values: attach headers (team-level and per box),
//! placeholder secrets (per box), and a box's coding-agent API key and
//! remote MCP server headers.
//!
//! Owns the `secret_values` table. A value enters only through a `put_*`
//! method that seals it with the [`MasterKeys`] under an [`Aad`] derived
//! from the row itself, and leaves only as a [`SealedValue`], which needs
//! the same keys to open. Listings (`*_names`) return names, patterns,
//! hosts and placeholders: never a value, sealed or not.
//!
//! Never stores, logs or returns a plaintext value, and never puts one in
//! an error. Which rules merge how (per-box over team for one pattern) and
//! what a pattern may look like are the server's and the proxy's business.

use crate::crypto::{Aad, MasterKeys, Sealed, SecretKind, NONCE_LEN};
use crate::error::{sqlite_code, Result, StoreError, FOREIGN_KEY, UNIQUE};
use crate::{hex, now_ms, random_bytes, Store};
use rusqlite::{params, Row, TransactionBehavior};
use std::fmt;
use zeroize::Zeroizing;

/// Prefix of every generated placeholder.
pub const PLACEHOLDER_PREFIX: &str = "boxd_placeholder_";

/// A sealed value together with where it belongs. Opening it needs the
/// master keys; its `Debug` shows the binding and key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub aad: Aad,
    pub sealed: Sealed,
}

impl SealedValue {
    /// The plaintext, zeroized when dropped.
    pub fn open(&self, keys: &MasterKeys) -> Result<Zeroizing<Vec<u8>>> {
        keys.open(&self.aad, &self.sealed)
    }
}

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedValue")
            .field("aad", &self.aad)
            .field("sealed", &self.sealed)
            .finish()
    }
}

/// An attach header as stored, for the daemon to open at box creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAttachHeader {
    pub pattern: String,
    pub header_name: String,
    pub value: SealedValue,
}

/// A placeholder secret's public part: what `GET` may show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    /// The hosts JSON as given to [`Store::put_box_secret`].
    pub hosts_json: String,
    /// The random stand-in the box sees in its environment.
    pub placeholder: String,
}

/// A placeholder secret as stored, for the daemon to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSecret {
    pub name: String,
    pub hosts_json: String,
    pub placeholder: String,
    pub value: SealedValue,
}

/// A header of one of a box's remote MCP servers, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMcpHeader {
    /// The MCP server's name.
    pub server: String,
    pub header_name: String,
    pub value: SealedValue,
}

/// The `name` of a box's agent API key row (one per box).
const AGENT_KEY_NAME: &str = "agent_api_key";

/// A fresh placeholder: [`PLACEHOLDER_PREFIX`] + 128 random bits in hex.
pub fn new_placeholder() -> Result<String> {
    Ok(format!(
        "{PLACEHOLDER_PREFIX}{}",
        hex(&random_bytes::<16>()?)
    ))
}

/// One row as read, before its binding is rebuilt.
struct RawRow {
    id: i64,
    team_id: String,
    box_id: Option<String>,
    kind: String,
    name: String,
    pattern: String,
    hosts_json: Option<String>,
    placeholder: Option<String>,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

const COLUMNS: &str = "id, team_id, box_id, kind, name, pattern, hosts_json, placeholder, \
                       key_id, nonce, ciphertext";

impl RawRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            id: row.get("id")?,
            team_id: row.get("team_id")?,
            box_id: row.get("box_id")?,
            kind: row.get("kind")?,
            name: row.get("name")?,
            pattern: row.get("pattern")?,
            hosts_json: row.get("hosts_json")?,
            placeholder: row.get("placeholder")?,
            key_id: row.get("key_id")?,
            nonce: row.get("nonce")?,
            ciphertext: row.get("ciphertext")?,
        })
    }

    fn value(&self) -> Result<SealedValue> {
        let kind = SecretKind::parse(&self.kind)?;
        let nonce: [u8; NONCE_LEN] = self
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Invalid(format!("stored nonce of row {}", self.id)))?;
        Ok(SealedValue {
            aad: aad(
                &self.team_id,
                self.box_id.as_deref(),
                kind,
                &self.name,
                &self.pattern,
                self.hosts_json.as_deref(),
            ),
            sealed: Sealed {
                key_id: self.key_id.clone(),
                nonce,
                ciphertext: self.ciphertext.clone(),
            },
        })
    }
}

/// The binding of a row: the attach header's pattern, or the secret's
/// hosts JSON, is the scope.
fn aad(
    team_id: &str,
    box_id: Option<&str>,
    kind: SecretKind,
    name: &str,
    pattern: &str,
    hosts_json: Option<&str>,
) -> Aad {
    let scope = match kind {
        SecretKind::Secret => hosts_json.unwrap_or_default(),
        _ => pattern,
    };
    Aad {
        team_id: team_id.to_owned(),
        box_id: box_id.map(str::to_owned),
        kind,
        name: name.to_owned(),
        scope: scope.to_owned(),
    }
}

/// A new row's non-secret columns.
struct NewRow<'a> {
    team_id: &'a str,
    box_id: Option<&'a str>,
    kind: SecretKind,
    name: &'a str,
    pattern: &'a str,
    hosts_json: Option<&'a str>,
    placeholder: Option<&'a str>,
}

impl<'a> NewRow<'a> {
    fn attach_header(
        team_id: &'a str,
        box_id: Option<&'a str>,
        pattern: &'a str,
        name: &'a str,
    ) -> Self {
        NewRow {
            team_id,
            box_id,
            kind: SecretKind::AttachHeader,
            name,
            pattern,
            hosts_json: None,
            placeholder: None,
        }
    }

    fn agent_key(team_id: &'a str, box_id: &'a str) -> Self {
        NewRow {
            team_id,
            box_id: Some(box_id),
            kind: SecretKind::AgentKey,
            name: AGENT_KEY_NAME,
            pattern: "",
            hosts_json: None,
            placeholder: None,
        }
    }

    fn mcp_header(team_id: &'a str, box_id: &'a str, server: &'a str, name: &'a str) -> Self {
        NewRow {
            team_id,
            box_id: Some(box_id),
            kind: SecretKind::McpHeader,
            name,
            pattern: server,
            hosts_json: None,
            placeholder: None,
        }
    }

    fn secret(
        team_id: &'a str,
        box_id: &'a str,
        name: &'a str,
        hosts_json: &'a str,
        placeholder: &'a str,
    ) -> Result<Self> {
        serde_json::from_str::<serde_json::Value>(hosts_json)?;
        Ok(NewRow {
            team_id,
            box_id: Some(box_id),
            kind: SecretKind::Secret,
            name,
            pattern: "",
            hosts_json: Some(hosts_json),
            placeholder: Some(placeholder),
        })
    }
}

impl Store {
    fn insert_sealed(&self, keys: &MasterKeys, row: NewRow<'_>, value: &[u8]) -> Result<()> {
        insert_sealed(&self.conn(), keys, row, value)
    }

    /// Stores a new box's attach headers (`(pattern, header_name, value)`)
    /// and placeholder secrets (`(name, hosts_json, placeholder, value)`)
    /// in one transaction: all of them or none.
    pub fn put_box_secret_rules(
        &self,
        keys: &MasterKeys,
        team_id: &str,
        box_id: &str,
        headers: &[(&str, &str, &[u8])],
        secrets: &[(&str, &str, &str, &[u8])],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (pattern, name, value) in headers {
            let row = NewRow::attach_header(team_id, Some(box_id), pattern, name);
            insert_sealed(&tx, keys, row, value)?;
        }
        for (name, hosts_json, placeholder, value) in secrets {
            let row = NewRow::secret(team_id, box_id, name, hosts_json, placeholder)?;
            insert_sealed(&tx, keys, row, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a new box's coding-agent API key and its remote MCP
    /// servers' header values (`(server, header_name, value)`) in one
    /// transaction: all of them or none. A second key for the box is a
    /// `Conflict`.
    pub fn put_box_agent_secrets(
        &self,
        keys: &MasterKeys,
        team_id: &str,
        box_id: &str,
        api_key: Option<&[u8]>,
        mcp_headers: &[(&str, &str, &[u8])],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(value) = api_key {
            insert_sealed(&tx, keys, NewRow::agent_key(team_id, box_id), value)?;
        }
        for (server, name, value) in mcp_headers {
            let row = NewRow::mcp_header(team_id, box_id, server, name);
            insert_sealed(&tx, keys, row, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The box's coding-agent API key, sealed (`None`: it has none).
    pub fn box_agent_key(&self, box_id: &str) -> Result<Option<SealedValue>> {
        self.sealed_rows("box_id = ?1 AND kind = 'agent_key'", [box_id])?
            .first()
            .map(RawRow::value)
            .transpose()
    }

    /// The box's remote MCP server headers, sealed.
    pub fn box_mcp_headers(&self, box_id: &str) -> Result<Vec<StoredMcpHeader>> {
        self.sealed_rows("box_id = ?1 AND kind = 'mcp_header'", [box_id])?
            .into_iter()
            .map(|raw| {
                Ok(StoredMcpHeader {
                    value: raw.value()?,
                    server: raw.pattern,
                    header_name: raw.name,
                })
            })
            .collect()
    }

    /// Replaces every team-level header of `pattern` with `headers`
    /// (`(header_name, value)`), in one transaction.
    pub fn replace_team_attach_headers(
        &self,
        keys: &MasterKeys,
        team_id: &str,
        pattern: &str,
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM secret_values
             WHERE team_id = ?1 AND box_id IS NULL AND kind = 'attach_header' AND pattern = ?2",
            [team_id, pattern],
        )?;
        for (name, value) in headers {
            let row = NewRow::attach_header(team_id, None, pattern, name);
            insert_sealed(&tx, keys, row, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn sealed_rows<P: rusqlite::Params>(&self, filter: &str, params: P) -> Result<Vec<RawRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM secret_values WHERE {filter} ORDER BY id"
        ))?;
        let rows = stmt
            .query_map(params, RawRow::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Seals and stores one team-level attach header: `header_name: value`
    /// for hosts matching `pattern`. A second value for the same pattern
    /// and header is a `Conflict` (delete the pattern first to replace it).
    pub fn put_team_attach_header(
        &self,
        keys: &MasterKeys,
        team_id: &str,
        pattern: &str,
        header_name: &str,
        value: &[u8],
    ) -> Result<()> {
        let row = NewRow::attach_header(team_id, None, pattern, header_name);
        self.insert_sealed(keys, row, value)
    }

    /// Removes every team-level header of `pattern`; how many were removed.
    pub fn delete_team_attach_header(&self, team_id: &str, pattern: &str) -> Result<usize> {
        Ok(self.conn().execute(
            "DELETE FROM secret_values
             WHERE team_id = ?1 AND box_id IS NULL AND kind = 'attach_header' AND pattern = ?2",
            [team_id, pattern],
        )?)
    }

    /// The team-level attach headers as `(pattern, header_name)`, sorted:
    /// names only.
    pub fn list_team_attach_headers(&self, team_id: &str) -> Result<Vec<(String, String)>> {
        self.attach_header_names(
            "team_id = ?1 AND box_id IS NULL AND kind = 'attach_header'",
            team_id,
        )
    }

    /// The team-level attach headers, sealed, for the daemon to open.
    pub fn sealed_team_attach_headers(&self, team_id: &str) -> Result<Vec<StoredAttachHeader>> {
        self.sealed_rows(
            "team_id = ?1 AND box_id IS NULL AND kind = 'attach_header'",
            [team_id],
        )?
        .into_iter()
        .map(attach_header)
        .collect()
    }

    /// Seals and stores one attach header of the team's box `box_id`.
    pub fn put_box_attach_header(
        &self,
        keys: &MasterKeys,
        team_id: &str,
        box_id: &str,
        pattern: &str,
        header_name: &str,
        value: &[u8],
    ) -> Result<()> {
        let row = NewRow::attach_header(team_id, Some(box_id), pattern, header_name);
        self.insert_sealed(keys, row, value)
    }

    /// The box's own attach headers as `(pattern, header_name)`: names only.
    pub fn box_attach_header_names(&self, box_id: &str) -> Result<Vec<(String, String)>> {
        self.attach_header_names("box_id = ?1 AND kind = 'attach_header'", box_id)
    }

    /// `(pattern, header_name)` of the rows matching `filter` (one `?1`
    /// parameter), sorted: names only, never a value.
    fn attach_header_names(&self, filter: &str, param: &str) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT pattern, name FROM secret_values WHERE {filter} ORDER BY pattern, name"
        ))?;
        let rows = stmt
            .query_map([param], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The box's own attach headers, sealed, for the daemon to open.
    pub fn box_attach_headers(&self, box_id: &str) -> Result<Vec<StoredAttachHeader>> {
        self.sealed_rows("box_id = ?1 AND kind = 'attach_header'", [box_id])?
            .into_iter()
            .map(attach_header)
            .collect()
    }

    /// Seals and stores a placeholder secret of the team's box `box_id`:
    /// the box sees `placeholder` (see [`new_placeholder`]) in env var
    /// `name`; the proxy substitutes the value toward `hosts_json`'s hosts.
    /// A placeholder used anywhere before is a `Conflict`.
    #[allow(clippy::too_many_arguments)]
    pub fn put_box_secret(
        &self,
        keys: &MasterKeys,
        team_id: &str,
        box_id: &str,
        name: &str,
        hosts_json: &str,
        placeholder: &str,
        value: &[u8],
    ) -> Result<()> {
        let row = NewRow::secret(team_id, box_id, name, hosts_json, placeholder)?;
        self.insert_sealed(keys, row, value)
    }

    /// The box's secrets without their values: names, hosts, placeholders.
    pub fn box_secret_names(&self, box_id: &str) -> Result<Vec<SecretInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, hosts_json, placeholder FROM secret_values
             WHERE box_id = ?1 AND kind = 'secret' ORDER BY name",
        )?;
        let rows = stmt
            .query_map([box_id], |r| {
                Ok(SecretInfo {
                    name: r.get(0)?,
                    hosts_json: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    placeholder: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The box's secrets, sealed, for the daemon to open.
    pub fn box_secrets(&self, box_id: &str) -> Result<Vec<StoredSecret>> {
        self.sealed_rows("box_id = ?1 AND kind = 'secret'", [box_id])?
            .into_iter()
            .map(|raw| {
                Ok(StoredSecret {
                    value: raw.value()?,
                    name: raw.name,
                    hosts_json: raw.hosts_json.unwrap_or_default(),
                    placeholder: raw.placeholder.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The distinct master key ids stored values are sealed under: a key
    /// not listed here can be dropped from the key file.
    pub fn sealed_key_ids(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key_id FROM secret_values UNION SELECT key_id FROM boxd_ca ORDER BY key_id",
        )?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Re-encrypts every stored value under `keys`' current key — the
    /// secret values in one transaction (all rows move or none), then the
    /// CA key. Returns how many values were rewritten (those already under
    /// the current key are left alone, so an interrupted run is finished by
    /// running it again).
    pub fn reseal_all(&self, keys: &MasterKeys) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<RawRow> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM secret_values WHERE key_id <> ?1 ORDER BY id"
            ))?;
            let rows = stmt
                .query_map([keys.current_id()], RawRow::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
        for raw in &rows {
            let value = raw.value()?;
            let plaintext = value.open(keys)?;
            let sealed = keys.seal(&value.aad, &plaintext)?;
            tx.execute(
                "UPDATE secret_values SET key_id = ?1, nonce = ?2, ciphertext = ?3 WHERE id = ?4",
                params![
                    sealed.key_id,
                    sealed.nonce.as_slice(),
                    sealed.ciphertext,
                    raw.id
                ],
            )?;
        }
        tx.commit()?;
        drop(conn);
        Ok(rows.len() + usize::from(self.reseal_ca(keys)?))
    }
}

fn attach_header(raw: RawRow) -> Result<StoredAttachHeader> {
    Ok(StoredAttachHeader {
        value: raw.value()?,
        pattern: raw.pattern,
        header_name: raw.name,
    })
}

/// Seals `value` under the row's binding and inserts the row on `conn`
/// (a connection or a transaction).
fn insert_sealed(
    conn: &rusqlite::Connection,
    keys: &MasterKeys,
    row: NewRow<'_>,
    value: &[u8],
) -> Result<()> {
    let binding = aad(
        row.team_id,
        row.box_id,
        row.kind,
        row.name,
        row.pattern,
        row.hosts_json,
    );
    let sealed = keys.seal(&binding, value)?;
    // A box row must exist and belong to the team.
    if let Some(box_id) = row.box_id {
        let owned: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM boxes WHERE id = ?1 AND team_id = ?2)",
            [box_id, row.team_id],
            |r| r.get(0),
        )?;
        if !owned {
            return Err(StoreError::NotFound(format!("box {box_id}")));
        }
    }
    conn.execute(
        "INSERT INTO secret_values (team_id, box_id, kind, name, pattern, hosts_json,
             placeholder, key_id, nonce, ciphertext, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            row.team_id,
            row.box_id,
            row.kind.as_str(),
            row.name,
            row.pattern,
            row.hosts_json,
            row.placeholder,
            sealed.key_id,
            sealed.nonce.as_slice(),
            sealed.ciphertext,
            now_ms()
        ],
    )
    .map_err(|e| match sqlite_code(&e) {
        Some(UNIQUE) if e.to_string().contains("placeholder") => {
            StoreError::Conflict("this placeholder is already in use".into())
        }
        Some(UNIQUE) => StoreError::Conflict(match row.kind {
            SecretKind::Secret => format!("secret {} is already set", row.name),
            SecretKind::AgentKey => "the box's agent API key is already set".to_string(),
            _ => format!("header {} for {} is already set", row.name, row.pattern),
        }),
        Some(FOREIGN_KEY) => StoreError::NotFound(format!("team {}", row.team_id)),
        _ => e.into(),
    })?;
    Ok(())
}
