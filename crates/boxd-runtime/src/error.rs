//! The runtime's error type: what went wrong creating, driving or destroying
//! a box, phrased so a user can act on it.
//! Never carries a secret value or a host path a box must not learn.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Image(#[from] boxd_image::ImageError),
    #[error("environment variable {0} cannot be set: boxd controls it")]
    BlockedEnv(String),
    #[error("invalid environment variable name {0:?}")]
    InvalidEnvName(String),
    #[error("environment variable {0} contains a NUL byte")]
    InvalidEnvValue(String),
    #[error("invalid box id {0:?}: use 1-63 characters of a-z, 0-9, '-' and '_'")]
    InvalidId(String),
    #[error("invalid hostname {0:?}: use 1-63 characters of a-z, 0-9 and '-'")]
    InvalidHostname(String),
    #[error("a box with id {0} already exists")]
    Exists(String),
    #[error("no box slots left: {0} boxes are running")]
    NoSlots(usize),
    #[error("the data directory path {0} cannot be used: {1}")]
    BadDataDir(PathBuf, &'static str),
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable cgroup hierarchy: {0}")]
    NoCgroups(String),
    #[error("storage pool: {0}")]
    Storage(String),
    #[error("the box failed to start: {0}")]
    Setup(String),
    /// The box's spec cannot be set up on its image (found while the box is
    /// built, e.g. a volume path through a file of the image): the caller's
    /// to fix.
    #[error("the box cannot start with this spec: {0}")]
    BadSpec(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] boxd_agent::ClientError),
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
