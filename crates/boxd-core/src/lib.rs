//! boxd's box service: the one place where the rules of a box live, under
//! every protocol boxd speaks (the Upstash Box HTTP API today; the Deno
//! Sandbox API and SSH next).
//!
//! Owns every operation on boxes, snapshots, volumes, secrets and attach
//! headers, team settings, files, exec (collected and streamed), audit and
//! box logs; the box state machine (a command on a paused box resumes it
//! first), TTL and idle pause, start-up recovery, and the orchestration of
//! runtime + net + store + agent. Inputs and outputs are domain types,
//! errors are [`CoreError`], streams are typed event streams.
//!
//! Never: HTTP, JSON-RPC, SSH or any other wire format; status codes;
//! protocol wire structs. A front end decodes, makes one call here, and
//! encodes.

pub mod agent;
pub mod audit;
pub mod boxes;
pub mod error;
pub mod exec;
pub mod files;
pub mod images;
mod lifecycle;
pub mod metrics;
pub mod names;
pub mod paths;
pub mod processes;
mod recovery;
pub mod secrets;
mod service;
mod settings;
pub mod snapshots;
pub mod volumes;

pub use agent::{AgentConfig, AgentRequest, WriteOnly};
pub use audit::{AuditEvent, AuditQuery, LogLine};
pub use boxd_store::{BoxRow, BoxState};
pub use boxes::{BoxFilter, BoxInfo, BoxMeta, BoxSize, CreateBox};
pub use error::{CoreError, CoreResult};
pub use exec::{CodeLanguage, Command, ExecEvent, ExecOutcome, ExecSpec, ExecStream};
pub use files::{DirPage, Download, FileInfo, FileStat, Upload};
pub use images::{BuiltImage, ImageJob, ImageSource};
pub use processes::{parse_signal, BoxProcess};
pub use secrets::{SecretInfo, Secrets};
pub use service::{now_ms, BoxService, Busy, Caller, CoreConfig, LiveBox};
pub use snapshots::{Snapshot, SnapshotSelection};
pub use volumes::{MountRequest, Volume, VolumeInfo, VolumeMount};
