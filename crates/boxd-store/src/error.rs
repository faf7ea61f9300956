//! The store's error type: what went wrong reading or writing the database,
//! phrased so the server can map it to an HTTP status (`NotFound` → 404,
//! `Conflict` → 409, the rest → 500).
//!
//! It never carries secret material: no plaintext key, no key hash, no
//! environment value, no master key and no secret value (sealed or opened)
//! ever appears in an error message.

/// Result alias for every fallible store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row the call refers to (or must refer to, e.g. the team of a new
    /// box) does not exist. The text names what was missing, e.g. `box b-1`.
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule of the data was violated, e.g. a second box with the
    /// same name in one team. The text says which rule, in user terms.
    #[error("{0}")]
    Conflict(String),
    /// A value cannot be stored as given (e.g. a supplied API key too short
    /// to keep a display prefix without revealing it).
    #[error("invalid {0}")]
    Invalid(String),
    /// The database was written by a newer boxd than this one.
    #[error(
        "the database schema is version {found}, newer than this boxd supports ({supported}); \
         upgrade boxd or restore a matching backup"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// The master key file cannot be used: unreadable, wrong permissions,
    /// wrong format. The text names the file and the reason, never a key.
    #[error("master key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    /// A sealed value names a key id the loaded master keys do not hold
    /// (the key was dropped before every row was resealed).
    #[error("master key {0} is not loaded")]
    UnknownKey(String),
    /// A sealed value failed authentication: wrong key, a different
    /// binding (team, box, kind, name, pattern) or tampered bytes. It says
    /// which value by its binding, never its contents.
    #[error("a sealed value could not be opened (wrong key, binding or tampered): {0}")]
    Decrypt(String),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The extended SQLite result code of a failed statement, if it was one.
pub(crate) fn sqlite_code(err: &rusqlite::Error) -> Option<i32> {
    match err {
        rusqlite::Error::SqliteFailure(e, _) => Some(e.extended_code),
        _ => None,
    }
}

pub(crate) use rusqlite::ffi::{
    SQLITE_CONSTRAINT_FOREIGNKEY as FOREIGN_KEY, SQLITE_CONSTRAINT_PRIMARYKEY as PRIMARY_KEY,
    SQLITE_CONSTRAINT_UNIQUE as UNIQUE,
};
