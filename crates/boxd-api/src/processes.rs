//! boxd extension: the processes of a box, each tied to the exec it
//! descends from (`GET /v2/box/{id}/processes`), and killing one
//! (`POST /v2/box/{id}/processes/{pid}/kill`). Not part of the Upstash API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A process in a box.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ProcessData {
    /// Pid inside the box.
    pub pid: i32,
    pub ppid: i32,
    /// Uid inside the box.
    pub uid: u32,
    /// `R`, `S`, `Z`, … as in `ps`.
    pub state: String,
    /// Its command line.
    pub command: String,
    /// The exec it descends from, however it detached (`null`: none).
    pub exec_id: Option<String>,
    /// Pid of that exec's own command.
    pub exec_pid: Option<i32>,
    /// Id of the API key that started that exec.
    pub started_by: Option<String>,
}

/// `GET /v2/box/{id}/processes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ProcessList {
    pub processes: Vec<ProcessData>,
}

/// Query of `POST /v2/box/{id}/processes/{pid}/kill`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KillQuery {
    /// A name (`TERM`, `SIGTERM`) or number; `KILL` when absent.
    #[serde(default)]
    pub signal: Option<String>,
}

/// Answer of a kill: the process that got the signal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KillResponse {
    pub signal: i32,
    pub process: ProcessData,
}
