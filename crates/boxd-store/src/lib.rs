//! `boxd-store`: the daemon's SQLite database.
//!
//! It owns persistence only: teams and their API keys, boxes, the audit log,
//! team settings and encrypted secret values (sealed with the master keys
//! of [`crypto`], kept in a file outside the database), plus the schema
//! migrations. It enforces what the data
//! itself must satisfy — unique names, foreign keys, API keys kept only as
//! SHA-256 hashes, an audit log that cannot be changed — and nothing else.
//! It never makes business decisions: who may do what, which box state
//! transitions are legal, when a box expires or is paused are the server's.
//!
//! [`Store`] is cheap to clone and safe to share between threads. Every
//! method is synchronous and holds the single connection for the duration of
//! the call, so the async server calls it from `spawn_blocking`.
//!
//! All times are unix milliseconds.

mod audit;
mod boxes;
mod ca;
pub mod crypto;
pub mod error;
mod keys;
mod schema;
mod secrets;
mod settings;
mod snapshots;
mod teams;
mod volumes;

pub use audit::{AuditEvent, AuditFilter, NewAuditEvent};
pub use boxes::{BoxRow, BoxState, NewBox};
pub use ca::StoredCa;
pub use error::{Result, StoreError};
pub use keys::{ApiKeyInfo, KEY_PREFIX, MIN_SUPPLIED_KEY_LEN};
pub use schema::SCHEMA_VERSION;
pub use secrets::{
    new_placeholder, SealedValue, SecretInfo, StoredAttachHeader, StoredMcpHeader, StoredSecret,
    PLACEHOLDER_PREFIX,
};
pub use snapshots::SnapshotRow;
pub use teams::{Team, DEFAULT_TEAM};
pub use volumes::{BoxVolumeRow, VolumeRow};

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a statement waits for another connection's write lock before
/// failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the database. Clones share one connection.
#[derive(Clone, Debug)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens the database file at `path`, creating it if needed (its folder
    /// must exist), and brings the schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::setup(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store> {
        Store::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Store> {
        // WAL: readers never block the writer; NORMAL is durable across
        // process crashes (only an OS crash can lose the last commits).
        // An in-memory database answers "memory" and stays so.
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The database's schema version ([`SCHEMA_VERSION`] once opened).
    pub fn schema_version(&self) -> Result<u32> {
        schema::version(&self.conn())
    }

    /// The connection, for one call. A panic while it was held cannot leave
    /// a half-done write behind (every multi-statement write is a
    /// transaction, rolled back on unwind), so a poisoned lock is reused.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// `n` bytes from the OS random number generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(buf)
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// A fresh random id such as `team_3f9c…` (96 random bits).
pub(crate) fn new_id(prefix: &str) -> Result<String> {
    Ok(format!("{prefix}_{}", hex(&random_bytes::<12>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_file_sets_wal_normal_sync_foreign_keys_and_busy_timeout() {
        let path = std::env::temp_dir().join(format!(
            "boxd-store-pragmas-{}-{}.db",
            std::process::id(),
            now_ms()
        ));
        let store = Store::open(&path).unwrap();
        {
            let conn = store.conn();
            let pragma = |name: &str| -> String {
                conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| match v {
                    rusqlite::types::Value::Text(s) => s,
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap()
            };
            assert_eq!(pragma("journal_mode"), "wal");
            assert_eq!(pragma("synchronous"), "1"); // NORMAL
            assert_eq!(pragma("foreign_keys"), "1");
            assert_eq!(pragma("busy_timeout"), BUSY_TIMEOUT.as_millis().to_string());
        }
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn ids_and_hex_are_lowercase_and_random() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let a = new_id("team").unwrap();
        let b = new_id("team").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "team_".len() + 24);
    }
}
