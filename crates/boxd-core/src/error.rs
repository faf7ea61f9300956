//! The one error type of the box service, in domain words.
//!
//! Owns turning store, runtime and agent failures into what went wrong
//! for the caller: not found, invalid argument, wrong state, too large,
//! out of space, not available now, not built, internal. Never a status
//! code or a wire format: each front end maps these kinds once. Messages
//! say what to do and never carry a secret value.

use boxd_agent::protocol::ErrorKind;
use boxd_agent::ClientError;
use boxd_runtime::RuntimeError;
use boxd_store::StoreError;

/// What went wrong with a call on the box service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The thing named does not exist (or belongs to another team).
    #[error("{0}")]
    NotFound(String),
    /// An argument is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The call does not fit the current state (already exists, box
    /// stopped, still being created, in use).
    #[error("{0}")]
    Conflict(String),
    /// The box refused a file operation (permissions inside the box).
    #[error("{0}")]
    Forbidden(String),
    /// The answer would be larger than the call may return.
    #[error("{0}")]
    TooLarge(String),
    /// A disk limit (the box's or a volume's) is reached.
    #[error("{0}")]
    NoSpace(String),
    /// No capacity now (box slots); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The key is missing, unknown or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// A feature this boxd does not have yet.
    #[error("{0} is not available in this boxd yet")]
    NotBuilt(String),
    /// boxd itself failed (database, runtime, a task).
    #[error("{0}")]
    Internal(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
    pub fn not_found(message: impl Into<String>) -> CoreError {
        CoreError::NotFound(message.into())
    }
    pub fn invalid(message: impl Into<String>) -> CoreError {
        CoreError::Invalid(message.into())
    }
    pub fn conflict(message: impl Into<String>) -> CoreError {
        CoreError::Conflict(message.into())
    }
    pub fn internal(message: impl Into<String>) -> CoreError {
        CoreError::Internal(message.into())
    }
}

/// The answer to a call on a box whose processes are gone.
pub fn stopped(id: &str) -> CoreError {
    CoreError::conflict(format!(
        "box {id} has stopped (its processes are gone): restart it (its files are kept) \
         or delete it"
    ))
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> CoreError {
        match e {
            StoreError::NotFound(what) => CoreError::not_found(format!("{what} not found")),
            StoreError::Conflict(msg) => CoreError::conflict(msg),
            StoreError::Invalid(msg) => CoreError::invalid(format!("invalid {msg}")),
            other => CoreError::internal(format!("the database failed: {other}")),
        }
    }
}

impl From<ClientError> for CoreError {
    fn from(e: ClientError) -> CoreError {
        match e.agent_error() {
            Some(body) => {
                let m = body.message.clone();
                match body.kind {
                    ErrorKind::NotFound => CoreError::NotFound(m),
                    ErrorKind::AlreadyExists => CoreError::Conflict(m),
                    ErrorKind::PermissionDenied => CoreError::Forbidden(m),
                    ErrorKind::InvalidInput
                    | ErrorKind::NotADirectory
                    | ErrorKind::IsADirectory => CoreError::Invalid(m),
                    ErrorKind::NoSpace => CoreError::NoSpace(m),
                    ErrorKind::TooLarge => CoreError::TooLarge(m),
                    ErrorKind::Other => CoreError::Internal(m),
                }
            }
            None => match e {
                ClientError::AgentGone => CoreError::conflict(
                    "the box has stopped (its processes are gone): restart it (its files are \
                     kept) or delete it",
                ),
                other => CoreError::internal(format!("talking to the box failed: {other}")),
            },
        }
    }
}

impl From<boxd_image::ImageError> for CoreError {
    fn from(e: boxd_image::ImageError) -> CoreError {
        use boxd_image::ImageError as E;
        match e {
            e @ (E::UnknownRuntime { .. }
            | E::NotBuilt { .. }
            | E::UnknownImage(_)
            | E::InvalidName(_)
            | E::Invalid(_)) => CoreError::invalid(e.to_string()),
            e @ E::InUse { .. } => CoreError::conflict(e.to_string()),
            other => CoreError::internal(other.to_string()),
        }
    }
}

impl From<RuntimeError> for CoreError {
    fn from(e: RuntimeError) -> CoreError {
        match e {
            RuntimeError::Agent(c) => c.into(),
            RuntimeError::Image(e) => e.into(),
            e @ (RuntimeError::BlockedEnv(_)
            | RuntimeError::InvalidEnvName(_)
            | RuntimeError::InvalidEnvValue(_)
            | RuntimeError::InvalidHostname(_)
            | RuntimeError::BadSpec(_)) => CoreError::invalid(e.to_string()),
            e @ RuntimeError::NoSlots(_) => CoreError::Unavailable(e.to_string()),
            other => CoreError::internal(other.to_string()),
        }
    }
}
