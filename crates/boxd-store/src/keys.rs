//! API keys: bearer tokens that belong to a team.
//!
//! Owns the `api_keys` table, key generation and hashing. A key is
//! `boxd_` + 32 random bytes in hex; the database keeps only its SHA-256
//! hash and a 12-character display prefix. Looking a key up means hashing
//! the presented value and finding the hash, so no comparison against a
//! secret happens in Rust.
//!
//! Never store, log or return a plaintext key (except the one value
//! returned by [`Store::create_key`] to show once), and never return a hash.

use crate::error::{sqlite_code, Result, StoreError, FOREIGN_KEY, UNIQUE};
use crate::{hex, new_id, now_ms, random_bytes, Store};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every generated key starts with this.
pub const KEY_PREFIX: &str = "boxd_";

/// How many leading characters of a key are kept for display.
const DISPLAY_PREFIX_CHARS: usize = 12;

/// The shortest key [`Store::insert_key_with_value`] accepts: the stored
/// display prefix must stay a small part of the key.
pub const MIN_SUPPLIED_KEY_LEN: usize = 32;

/// What the store knows about a key: never its value, never its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// The key's first 12 characters, to tell keys apart in listings.
    pub prefix: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `None` while the key is valid.
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, team_id, name, prefix, created_at, revoked_at";

impl ApiKeyInfo {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
        Ok(ApiKeyInfo {
            id: row.get("id")?,
            team_id: row.get("team_id")?,
            name: row.get("name")?,
            prefix: row.get("prefix")?,
            created_at: row.get("created_at")?,
            revoked_at: row.get("revoked_at")?,
        })
    }
}

fn hash(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

fn display_prefix(plaintext: &str) -> String {
    plaintext.chars().take(DISPLAY_PREFIX_CHARS).collect()
}

impl Store {
    /// Creates a new random key for the team. Returns its record and the
    /// plaintext key, which exists nowhere else: show it once.
    pub fn create_key(&self, team_id: &str, name: &str) -> Result<(ApiKeyInfo, String)> {
        let plaintext = format!("{KEY_PREFIX}{}", hex(&random_bytes::<32>()?));
        let info = self.insert_key_with_value(team_id, name, &plaintext)?;
        Ok((info, plaintext))
    }

    /// Stores a key whose value was chosen elsewhere (e.g. supplied through
    /// an environment variable). It must be at least
    /// [`MIN_SUPPLIED_KEY_LEN`] characters. A key already stored — valid or
    /// revoked — is a `Conflict`: a revoked key is never brought back.
    pub fn insert_key_with_value(
        &self,
        team_id: &str,
        name: &str,
        plaintext: &str,
    ) -> Result<ApiKeyInfo> {
        if plaintext.chars().count() < MIN_SUPPLIED_KEY_LEN {
            return Err(StoreError::Invalid(format!(
                "API key: use at least {MIN_SUPPLIED_KEY_LEN} characters"
            )));
        }
        let info = ApiKeyInfo {
            id: new_id("key")?,
            team_id: team_id.to_owned(),
            name: name.to_owned(),
            prefix: display_prefix(plaintext),
            created_at: now_ms(),
            revoked_at: None,
        };
        self.conn()
            .execute(
                "INSERT INTO api_keys (id, team_id, name, prefix, hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    info.id,
                    info.team_id,
                    info.name,
                    info.prefix,
                    hash(plaintext),
                    info.created_at
                ],
            )
            .map_err(|e| match sqlite_code(&e) {
                Some(UNIQUE) => StoreError::Conflict("this API key is already stored".into()),
                Some(FOREIGN_KEY) => StoreError::NotFound(format!("team {team_id}")),
                _ => e.into(),
            })?;
        Ok(info)
    }

    /// The key `plaintext` stands for, if it is stored and not revoked.
    pub fn authenticate(&self, plaintext: &str) -> Result<Option<ApiKeyInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL"
        ))?;
        Ok(stmt
            .query_row([hash(plaintext)], ApiKeyInfo::from_row)
            .optional()?)
    }

    /// The team's keys, revoked ones included, oldest first.
    pub fn list_keys(&self, team_id: &str) -> Result<Vec<ApiKeyInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE team_id = ?1 ORDER BY created_at, rowid"
        ))?;
        let keys = stmt
            .query_map([team_id], ApiKeyInfo::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(keys)
    }

    /// Revokes the team's key `key_id`. `true` if this call revoked it;
    /// `false` if the team has no such key or it was already revoked.
    pub fn revoke_key(&self, team_id: &str, key_id: &str) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE api_keys SET revoked_at = ?1
             WHERE id = ?2 AND team_id = ?3 AND revoked_at IS NULL",
            params![now_ms(), key_id, team_id],
        )?;
        Ok(changed > 0)
    }
}
