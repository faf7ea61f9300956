//! Wire types of boxd's HTTP API: the Upstash Box v2 shapes the official
//! SDKs send and read (`docs/UPSTASH_API.md` is the contract), plus boxd's
//! extensions in the same style, and the one error format.
//!
//! Shared by the server and the CLI so both speak one vocabulary. This
//! crate only describes data: it never does I/O and holds no policy beyond
//! what a value must look like on the wire. Every optional request field
//! accepts `null` (the Python SDK sends `null` where TypeScript omits).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub mod processes;

/// The default working directory of a box, and the base of relative paths.
pub const WORKSPACE: &str = "/workspace/home";

/// Header that carries the API key (the only one the SDKs send).
pub const API_KEY_HEADER: &str = "x-box-api-key";

/// Every non-2xx response body: `{"error": "<what went wrong and what to do>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}

/// Box status strings as the SDKs know them. Only `creating` (keep
/// polling) and `error` (creation failed) are special to them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    Creating,
    Idle,
    Running,
    Paused,
    Error,
    Deleted,
}

impl BoxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BoxStatus::Creating => "creating",
            BoxStatus::Idle => "idle",
            BoxStatus::Running => "running",
            BoxStatus::Paused => "paused",
            BoxStatus::Error => "error",
            BoxStatus::Deleted => "deleted",
        }
    }
}

/// Resource class of a box: fixed CPU and memory limits (small: 1 CPU,
/// 1 GiB; medium: 2 CPUs, 4 GiB; large: 4 CPUs, 8 GiB; the numbers are the
/// box service's, `boxd_core::BoxSize`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BoxSize {
    #[default]
    Small,
    Medium,
    Large,
}

impl BoxSize {
    pub fn as_str(self) -> &'static str {
        match self {
            BoxSize::Small => "small",
            BoxSize::Medium => "medium",
            BoxSize::Large => "large",
        }
    }
}

/// `POST /v2/box` (and `POST /v2/box/from-snapshot`). Every field either
/// official SDK sends is here; any other key is refused with a 400 naming
/// it (see [`unknown_create_fields`]), so a misspelt security field never
/// creates an open box. Fields of features not built yet (git, browser)
/// are accepted on the wire so the server can answer 501 naming the
/// feature.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateBoxRequest {
    /// Unique within the team; `GET /v2/box/{name}` finds the box by it.
    pub name: Option<String>,
    /// Up to 5 labels of `[A-Za-z0-9._:-]`, each at most 20 characters.
    pub labels: Option<Vec<String>>,
    /// `node`, `python`, `host`, … (default: `host`).
    pub runtime: Option<String>,
    pub size: Option<BoxSize>,
    /// boxd extension: most MiB the box's own files may take (its
    /// writable layer; the image and snapshot layers below are free);
    /// writing past it fails with EDQUOT inside the box [default by size:
    /// 10 GiB small, 20 GiB medium, 50 GiB large].
    #[serde(alias = "disk")]
    pub disk_mib: Option<u64>,
    /// Environment of every process in the box.
    pub env_vars: Option<BTreeMap<String, String>>,
    pub keep_alive: Option<bool>,
    pub init_command: Option<String>,
    /// Lifetime in seconds (ephemeral boxes).
    pub ttl: Option<u64>,
    pub ephemeral: Option<bool>,
    /// Lifetime in milliseconds.
    pub timeout: Option<u64>,
    /// boxd extension: string metadata returned with the box.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Host pattern → header → value (write-only).
    #[schema(value_type = Object)]
    pub attach_headers: Option<WriteOnly>,
    /// Upstash egress policy: `{"mode": "allow-all" | "deny-all" | "custom",
    /// "allowed_domains"?, "allowed_cidrs"?, "denied_cidrs"?}`.
    #[schema(value_type = Object)]
    pub network_policy: Option<serde_json::Value>,
    /// The coding agent's harness: `claude-code`, `codex`, `opencode`,
    /// `cursor` or `custom` (agent runs are not built yet: the run routes
    /// answer 501).
    pub agent: Option<String>,
    /// The agent's model (required with a harness other than `custom`,
    /// whose default is `custom`).
    pub model: Option<String>,
    /// The model provider's API key, or `UPSTASH_KEY` / `STORED_KEY`
    /// (write-only: sealed at rest, never returned; not for `custom`).
    #[schema(value_type = Option<String>)]
    pub agent_api_key: Option<WriteOnlyString>,
    /// `agent: "custom"` only: `{"command", "args"?: [..], "protocol"?:
    /// "box-sse-v1"}`.
    #[schema(value_type = Object)]
    pub custom_runner: Option<serde_json::Value>,
    pub github_token: Option<String>,
    pub git_user_name: Option<String>,
    pub git_user_email: Option<String>,
    /// Skills to enable: `owner/repo` (or `owner/repo/skill`), at most 64.
    pub skills: Option<Vec<String>>,
    /// At most 32: `{"name", "source": "npm", "package_or_url", "args"?}`
    /// or `{"name", "source": "url", "package_or_url", "headers"?}`
    /// (header values write-only).
    #[schema(value_type = Vec<Object>)]
    pub mcp_servers: Option<WriteOnly>,
    pub browser: Option<bool>,
    /// boxd extension (Deno): placeholder secrets, `{"NAME": {"hosts":
    /// [...], "value": "...", "in_query"?: false, "in_body"?: false}}`
    /// (write-only).
    #[schema(value_type = Object)]
    pub secrets: Option<WriteOnly>,
    /// boxd extension (Deno): egress allow-list (`host`, `host:port`,
    /// `*.host`, IPv4, `[IPv6]`, `[IPv6]:port`); omitted = every public
    /// destination.
    pub allow_net: Option<Vec<String>>,
    /// boxd extension (Deno): volumes mounted at create, `[{"name",
    /// "path", "read_only"?}]`.
    #[schema(value_type = Vec<BoxVolume>)]
    pub volumes: Option<Vec<serde_json::Value>>,
    /// `POST /v2/box/from-snapshot`: the snapshot (id or name) to start from.
    pub snapshot_id: Option<String>,
}

/// Every key of a create body, `disk` (the alias of `disk_mib`) included.
pub const CREATE_FIELDS: &[&str] = &[
    "name",
    "labels",
    "runtime",
    "size",
    "disk_mib",
    "disk",
    "env_vars",
    "keep_alive",
    "init_command",
    "ttl",
    "ephemeral",
    "timeout",
    "metadata",
    "attach_headers",
    "network_policy",
    "agent",
    "model",
    "agent_api_key",
    "custom_runner",
    "github_token",
    "git_user_name",
    "git_user_email",
    "skills",
    "mcp_servers",
    "browser",
    "secrets",
    "allow_net",
    "volumes",
    "snapshot_id",
];

/// The keys of a create body that are not create fields, each with the
/// field it probably meant (`allowNet` → `allow_net`), sorted.
pub fn unknown_create_fields(
    body: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, Option<&'static str>)> {
    let mut unknown: Vec<_> = body
        .keys()
        .filter(|k| !CREATE_FIELDS.contains(&k.as_str()))
        .map(|k| {
            let snake = snake_case(k);
            let meant = CREATE_FIELDS.iter().copied().find(|f| *f == snake);
            (k.clone(), meant)
        })
        .collect();
    unknown.sort();
    unknown
}

/// `networkPolicy` → `network_policy`, `Allow-Net` → `allow_net`.
fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// A snapshot: a box's filesystem changes and config, frozen.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    /// The box it was taken from (it may have been deleted since).
    pub box_id: String,
    /// Bytes of file data in the snapshot's own layers.
    pub size_bytes: i64,
    /// `creating`, `ready`, `error` or `deleted` (boxd answers once it is `ready`).
    pub status: String,
    /// Unix seconds.
    pub created_at: i64,
    /// boxd extension: the runtime (image) a restored box runs.
    #[serde(default)]
    pub runtime: String,
}

/// `POST /v2/box/{id}/snapshots`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct CreateSnapshotRequest {
    /// Unique among the team's snapshots (default: the snapshot's id).
    pub name: Option<String>,
}

/// A list of snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SnapshotsResponse {
    pub snapshots: Vec<Snapshot>,
}

/// `DELETE /v2/box/snapshots`: `{"ids": [...]}` (at least one), or `{}` /
/// `?all=true` for all. `ids` may be absent but never `null`, and no other
/// key is accepted: a misspelt or empty selection must never read as "all".
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteSnapshotsRequest {
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub ids: Option<Vec<String>>,
}

/// `Some(value)` for a present field, refusing `null` (absent stays `None`
/// through `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A volume mounted in a box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BoxVolume {
    /// The volume's name (in the box's team).
    pub name: String,
    /// Absolute path inside the box.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// `POST /v2/volumes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateVolumeRequest {
    /// Unique within the team: 1-63 of letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Size limit in MiB (recorded; see docs/API.md for enforcement).
    #[serde(default)]
    pub size_mib: Option<u64>,
}

/// A volume as returned by the volume endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeData {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Ids of the boxes that mount it.
    #[serde(default)]
    pub boxes: Vec<String>,
}

/// `GET /v2/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumesResponse {
    pub volumes: Vec<VolumeData>,
}

/// A box as returned by create, get and list ("BoxData").
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct BoxData {
    pub id: String,
    pub status: BoxStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub runtime: String,
    pub size: BoxSize,
    /// boxd extension: the box's disk limit in MiB; absent when the
    /// daemon's storage pool enforces no limits (`[storage] driver = "dir"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<u64>,
    /// boxd extension: bytes the box's own files take against `disk_mib`,
    /// as the storage pool last counted them (it commits every 30 s at
    /// most); absent without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    #[serde(default)]
    pub keep_alive: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub network_policy: serde_json::Value,
    /// boxd extension: the box's Deno-style `allowNet` rules, canonical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_net: Option<Vec<String>>,
    /// boxd extension: the box's attach headers (team rules merged in at
    /// create), host pattern → header names. Never a value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attach_headers: BTreeMap<String, Vec<String>>,
    /// boxd extension: the box's placeholder secrets, name → hosts and
    /// substitution settings. Never a value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretInfo>,
    /// boxd extension: the volumes the box mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<BoxVolume>,
    /// The coding agent's harness (absent: no agent configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Skills enabled in the box (`skills` at create, then
    /// `config/skills`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled_skills: Vec<String>,
    /// boxd extension: a custom harness's process, `{"command", "args"?,
    /// "protocol"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub custom_runner: Option<serde_json::Value>,
    /// boxd extension: the box's MCP servers, `{"name", "source",
    /// "package_or_url", "args"?, "header_names"?}`. Never a header value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub mcp_servers: Vec<serde_json::Value>,
    /// boxd extension: true when the box has an agent API key (which is
    /// never returned).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_api_key_set: bool,
    /// True for boxes created with `ephemeral: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// When the box is deleted (unix seconds); absent for boxes without a
    /// lifetime (`ttl`, `timeout`, `ephemeral`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// CPU time the box's processes have used, in nanoseconds (from its
    /// cgroup); absent when the box's processes are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cpu_ns: Option<u64>,
    /// The last exec, stream or file call (unix seconds); absent before
    /// the first one since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<i64>,
}

/// A string that is a secret (an API key), as received: its `Debug` never
/// shows it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriteOnlyString(pub String);

impl std::fmt::Debug for WriteOnlyString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteOnlyString(..)")
    }
}

/// JSON holding secret values, as received: its `Debug` never shows it,
/// so a logged request cannot leak a value. Parsed by the server with
/// error messages that never quote it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriteOnly(pub serde_json::Value);

impl std::fmt::Debug for WriteOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteOnly(..)")
    }
}

/// A placeholder secret as the API shows it: everything but the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct SecretInfo {
    /// Host patterns the value is sent to (exact or `*.` wildcard).
    pub hosts: Vec<String>,
    /// Also substituted in request query strings.
    pub in_query: bool,
    /// Also substituted in request bodies.
    pub in_body: bool,
}

/// `GET /v2/box/settings/attach-headers`: the team's rules, host pattern
/// → header names. Never a value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct AttachHeadersResponse {
    pub attach_headers: BTreeMap<String, Vec<String>>,
}

/// `GET /v2/box/{id}/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    pub status: BoxStatus,
    /// boxd extension: CPU time used by the box so far, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cpu_ns: Option<u64>,
    /// boxd extension: as `disk_used_bytes` of the box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
}

/// `GET /v2/box/{id}/startup` and the body of `PUT`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct StartupRequest {
    /// A shell command (`sh -c`), run at create and whenever the daemon
    /// re-adopts the box; empty when none is set.
    pub init_command: String,
}

/// `DELETE /v2/box` (bulk).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BulkDeleteRequest {
    pub ids: Vec<String>,
}

/// `POST /v2/box/{id}/exec` and `exec-stream`: `command` is an argv
/// (run directly, no shell is added).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Working directory: relative to `/workspace/home` or absolute.
    pub folder: Option<String>,
    /// boxd extension: extra environment for this command.
    pub env: Option<BTreeMap<String, String>>,
    /// boxd extension: kill the command after this many milliseconds.
    pub timeout: Option<u64>,
}

/// Result of a synchronous exec or code run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ExecResponse {
    pub exit_code: i32,
    /// Standard output.
    pub output: String,
    /// Standard error.
    pub error: String,
    /// boxd extension: wall time of the command.
    #[serde(default)]
    pub duration_ms: u64,
    /// boxd extension: the exec id its processes are listed with
    /// (`GET /v2/box/{id}/processes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
}

/// The trailer of an exec/code stream: `event: exit\ndata: {..}\n\n`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ExitEvent {
    pub exit_code: i32,
    pub cpu_ns: u64,
}

/// Languages `code` and `code-stream` run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CodeLanguage {
    Python,
    Js,
    Ts,
    Bash,
}

/// `POST /v2/box/{id}/code` and `code-stream`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CodeRequest {
    pub code: String,
    pub language: CodeLanguage,
    /// Milliseconds.
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub folder: Option<String>,
}

/// `POST /v2/box/{id}/files/write`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WriteFileRequest {
    pub path: String,
    pub content: String,
    /// `base64` when `content` is base64 of the bytes.
    #[serde(default)]
    pub encoding: Option<String>,
}

/// `GET /v2/box/{id}/files/read`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadFileResponse {
    pub content: String,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
    /// RFC 3339.
    pub mod_time: String,
}

/// `GET /v2/box/{id}/files/list`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListFilesResponse {
    pub files: Vec<FileEntry>,
    /// With `limit`/`cursor`: pass it as `cursor` for the next page;
    /// absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v2/box/{id}/files/stat`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FileStat {
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// RFC 3339.
    pub mod_time: String,
    pub inode: u64,
    /// Opaque token that changes when the file changes.
    pub version: String,
}

/// `POST /v2/box/{id}/files/mkdir`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MkdirRequest {
    pub path: String,
    #[serde(default)]
    pub parents: Option<bool>,
}

/// `POST /v2/box/{id}/files/rename`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RenameRequest {
    pub from: String,
    pub to: String,
}

/// `POST /v2/box/{id}/files/remove`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RemoveRequest {
    pub path: String,
    #[serde(default)]
    pub recursive: Option<bool>,
}

/// Answer of the file operations that return nothing else.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PathResponse {
    pub path: String,
}

/// `PUT /v2/box/{id}/config/model`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRequest {
    pub model: String,
}

/// `PUT /v2/box/{id}/config/custom-runner` (boxes whose agent is `custom`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomRunnerRequest {
    /// `{"command", "args"?: [..], "protocol"?: "box-sse-v1"}`.
    #[schema(value_type = Object)]
    pub custom_runner: serde_json::Value,
}

/// `POST /v2/box/{id}/config/skills`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkillRequest {
    /// `owner/repo` or `owner/repo/skill`.
    pub skill_id: String,
}

/// The box's skills after a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SkillsResponse {
    pub enabled_skills: Vec<String>,
}

/// `POST /v2/box/{id}/config/labels`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LabelRequest {
    pub label: String,
}

/// The box's labels after a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LabelsResponse {
    pub labels: Vec<String>,
}

/// One line of `GET /v2/box/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct LogEntry {
    /// Unix seconds.
    pub timestamp: i64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// `system`, `agent` or `user`.
    pub source: String,
    pub message: String,
}

/// `GET /v2/box/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogsResponse {
    pub logs: Vec<LogEntry>,
}

/// `PUT /v2/box/settings/env/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvValue {
    pub value: String,
}

/// `GET`/`PUT /v2/box/settings/env` (values are masked in answers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EnvVars {
    pub env_vars: BTreeMap<String, String>,
}

/// One event of the audit trail (`GET /v2/audit`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct AuditEventData {
    /// Position in the trail; strictly increasing.
    pub seq: i64,
    /// Unix milliseconds.
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_id: Option<String>,
    /// e.g. `box.create`, `box.delete`, `exec`, `file.write`, `file.upload`.
    pub kind: String,
    /// Id of the API key that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `GET /v2/audit`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditResponse {
    pub events: Vec<AuditEventData>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_accepts_nulls_from_the_python_sdk() {
        let req: CreateBoxRequest = serde_json::from_str(
            r#"{"name":"a","labels":null,"size":null,"env_vars":null,"network_policy":null}"#,
        )
        .unwrap();
        assert_eq!(req.name.as_deref(), Some("a"));
        assert!(req.labels.is_none() && req.size.is_none());
    }

    #[test]
    fn box_data_has_integer_timestamps_and_lowercase_status() {
        let data = BoxData {
            id: "b1".into(),
            status: BoxStatus::Running,
            name: None,
            labels: vec![],
            runtime: "host".into(),
            size: BoxSize::Small,
            disk_mib: Some(10240),
            disk_used_bytes: None,
            keep_alive: false,
            created_at: 1,
            updated_at: 2,
            metadata: BTreeMap::new(),
            network_policy: serde_json::json!({"mode": "allow-all"}),
            allow_net: None,
            attach_headers: BTreeMap::new(),
            secrets: BTreeMap::new(),
            volumes: Vec::new(),
            agent: None,
            model: None,
            enabled_skills: Vec::new(),
            custom_runner: None,
            mcp_servers: Vec::new(),
            agent_api_key_set: false,
            ephemeral: false,
            expires_at: None,
            total_cpu_ns: None,
            last_activity_at: None,
        };
        let v = serde_json::to_value(&data).unwrap();
        assert_eq!(v["status"], "running");
        assert_eq!(v["created_at"], 1);
        assert!(v.get("name").is_none());
        assert!(v.get("secrets").is_none() && v.get("attach_headers").is_none());
    }

    #[test]
    fn write_only_json_never_shows_in_debug() {
        let req: CreateBoxRequest = serde_json::from_str(
            r#"{"attach_headers": {"a.example.com": {"X-Key": "v4lue-1"}},
                "agent": "codex", "model": "m", "agent_api_key": "v4lue-3",
                "mcp_servers": [{"name": "w", "source": "url", "package_or_url": "https://x",
                                 "headers": {"A": "v4lue-4"}}],
                "secrets": {"K": {"hosts": ["a.example.com"], "value": "v4lue-2"}}}"#,
        )
        .unwrap();
        let shown = format!("{req:?}");
        assert!(!shown.contains("v4lue"), "{shown}");
        assert_eq!(req.secrets.unwrap().0["K"]["value"], "v4lue-2");
    }

    #[test]
    fn create_fields_are_the_request_type_s_fields() {
        let v = serde_json::to_value(CreateBoxRequest::default()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.push("disk");
        keys.sort();
        let mut listed = CREATE_FIELDS.to_vec();
        listed.sort();
        assert_eq!(keys, listed);
    }

    #[test]
    fn unknown_create_fields_are_named_with_what_they_meant() {
        let body = serde_json::json!({"name": "a", "allowNet": [], "networkPolicy": {},
            "attachHeaders": {}, "Allow-Net": [], "bogus": 1});
        let unknown = unknown_create_fields(body.as_object().unwrap());
        assert_eq!(
            unknown,
            vec![
                ("Allow-Net".to_string(), Some("allow_net")),
                ("allowNet".to_string(), Some("allow_net")),
                ("attachHeaders".to_string(), Some("attach_headers")),
                ("bogus".to_string(), None),
                ("networkPolicy".to_string(), Some("network_policy")),
            ]
        );
        let e = serde_json::from_value::<CreateBoxRequest>(body).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn file_stat_uses_the_type_key() {
        let s = FileStat {
            kind: "file".into(),
            size: 3,
            mod_time: "2026-01-01T00:00:00Z".into(),
            inode: 7,
            version: "7-3-1".into(),
        };
        assert_eq!(serde_json::to_value(&s).unwrap()["type"], "file");
    }
}

/// An image as the operator's image endpoints return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageData {
    /// What a box's `runtime` names.
    pub name: String,
    /// `sha256:…` of its manifest.
    pub digest: String,
    /// Bytes of its stored layers (shared layers counted in each image).
    pub bytes: u64,
    pub layers: usize,
    /// Unix seconds.
    pub created: u64,
    /// Where it came from (`debian trixie (<mirror>)`, `oci <file>`, `host`).
    pub source: String,
}

/// `GET /v2/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImagesResponse {
    pub images: Vec<ImageData>,
}

/// `POST /v2/images/build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildImageRequest {
    /// debian, node, python, golang, ruby, rust (or an `-alpine` name).
    pub runtime: String,
    /// Build every layer again instead of reusing cached ones.
    #[serde(default)]
    pub no_cache: bool,
}
