//! Boxes: create (fresh or from a snapshot), find, list, delete, labels,
//! network policy, and what a box records beyond the store's columns.
//!
//! Owns the rules of a box (names, labels, metadata, lifetimes, disk
//! limits, egress, secrets, volumes, init command) and the order of a
//! create or a delete (store first, then runtime, then store again), so a
//! crash at any point is repaired by recovery at start. A call that fails
//! leaves nothing behind. Never a wire format.

use crate::agent::{AgentConfig, AgentRequest};
use crate::error::{stopped, CoreError, CoreResult};
use crate::secrets::{parse_attach_headers, parse_secrets, SecretInfo};
use crate::service::{now_ms, BoxService, Busy, Caller, LiveBox};
use crate::snapshots::Restorable;
use crate::volumes::{MountRequest, VolumeMount};
use boxd_net::policy::{AllowNet, EgressPolicy, NetworkPolicy};
use boxd_net::secrets::SecretRules;
use boxd_runtime::{BoxSpec, Limits};
use boxd_store::{BoxRow, BoxState, NewBox};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Names that would read as something else than a box (route literals
/// of the Upstash API, kept reserved for every front end).
const RESERVED_NAMES: [&str; 3] = ["snapshots", "settings", "from-snapshot"];
/// At most this many metadata keys per box.
pub const MAX_METADATA_KEYS: usize = 32;
/// At most this many labels per box.
pub const MAX_LABELS: usize = 5;
/// The longest `ttl` (3 days, as Upstash), also the default of an
/// ephemeral box.
pub const MAX_TTL_SECS: u64 = 259_200;
/// Smallest and largest disk limits a box may ask for, in MiB.
const DISK_MIB: std::ops::RangeInclusive<u64> = 64..=(1 << 30);

/// Resource class of a box: fixed CPU and memory limits.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BoxSize {
    #[default]
    Small,
    Medium,
    Large,
}

impl BoxSize {
    /// CPU limit in thousandths of a core.
    pub fn cpu_millis(self) -> u32 {
        match self {
            BoxSize::Small => 1000,
            BoxSize::Medium => 2000,
            BoxSize::Large => 4000,
        }
    }
    /// Default disk size (the box's writable layer) in MiB.
    pub fn disk_mib(self) -> u64 {
        match self {
            BoxSize::Small => 10 << 10,
            BoxSize::Medium => 20 << 10,
            BoxSize::Large => 50 << 10,
        }
    }
    /// Memory limit in bytes.
    pub fn memory_bytes(self) -> u64 {
        match self {
            BoxSize::Small => 1 << 30,
            BoxSize::Medium => 4 << 30,
            BoxSize::Large => 8 << 30,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BoxSize::Small => "small",
            BoxSize::Medium => "medium",
            BoxSize::Large => "large",
        }
    }
}

/// The grammar version of a box's stored spec (its `v`). A spec without
/// `v` is of version 1 (the grammar before versions were recorded). A
/// change to the grammar that an older spec does not satisfy raises this
/// and migrates older specs on purpose; a spec of a version this boxd does
/// not know, or one that does not parse, fails closed (see
/// [`BoxMeta::read`]).
pub const SPEC_VERSION: u32 = 1;

fn spec_v1() -> u32 {
    1
}

/// What boxd records about a box beyond the store's columns (`spec` JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BoxMeta {
    /// The spec's grammar version ([`SPEC_VERSION`] when written).
    #[serde(rename = "v", default = "spec_v1")]
    pub version: u32,
    pub size: BoxSize,
    /// The enforced disk limit (`None`: the pool enforces none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<u64>,
    pub keep_alive: bool,
    pub metadata: BTreeMap<String, String>,
    /// The Upstash network policy, canonical (`None`: allow-all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<Value>,
    /// Deno allowNet rules, canonical (`None`: omitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_net: Option<Vec<String>>,
    /// Attach headers fixed at create: pattern → header names (no values).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attach_headers: BTreeMap<String, Vec<String>>,
    /// Placeholder secrets: name → hosts and settings (no values).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretInfo>,
    /// Volumes mounted at create.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// The snapshot the box was restored from: its layers lie below the
    /// box's own, so the snapshot stays while the box exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Run (`sh -c`) at create and whenever the daemon re-adopts the box.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_command: Option<String>,
    /// When the box is deleted (unix ms), from `ttl` / `timeout` /
    /// `ephemeral`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// The coding-agent configuration (no key, no header value).
    #[serde(skip_serializing_if = "AgentConfig::is_empty")]
    pub agent: AgentConfig,
    /// Why the stored spec could not be read (never stored): such a meta
    /// is deny-all and is never written back.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

impl Default for BoxMeta {
    fn default() -> Self {
        BoxMeta {
            version: SPEC_VERSION,
            size: BoxSize::default(),
            disk_mib: None,
            keep_alive: false,
            metadata: BTreeMap::new(),
            network_policy: None,
            allow_net: None,
            attach_headers: BTreeMap::new(),
            secrets: BTreeMap::new(),
            volumes: Vec::new(),
            snapshot_id: None,
            init_command: None,
            expires_at: None,
            ephemeral: false,
            agent: AgentConfig::default(),
            unreadable: None,
        }
    }
}

impl BoxMeta {
    /// The box's spec, or why it cannot be read: it does not parse, it is
    /// of a grammar version this boxd does not know, or its egress rules
    /// do not parse.
    pub fn read(row: &BoxRow) -> Result<BoxMeta, String> {
        if !row.spec.is_object() {
            return Err("its stored spec is not a JSON object".into());
        }
        let meta: BoxMeta = serde_json::from_value(row.spec.clone())
            .map_err(|e| format!("its stored spec does not parse: {e}"))?;
        if meta.version == 0 || meta.version > SPEC_VERSION {
            return Err(format!(
                "its stored spec has grammar version {}; this boxd reads versions 1 to {SPEC_VERSION}",
                meta.version
            ));
        }
        meta.egress()?;
        Ok(meta)
    }

    /// The box's spec; one that cannot be read ([`BoxMeta::read`]) gives a
    /// fail-closed meta: deny-all egress, everything else at its default,
    /// `unreadable` saying why (recovery marks such a box failed).
    pub fn of(row: &BoxRow) -> BoxMeta {
        match BoxMeta::read(row) {
            Ok(meta) => meta,
            Err(reason) => {
                tracing::debug!(box_id = %row.id, reason, "a box's stored spec cannot be read: deny-all");
                BoxMeta::fail_closed(reason)
            }
        }
    }

    /// The meta of a box whose spec cannot be read: it reaches nothing.
    fn fail_closed(reason: String) -> BoxMeta {
        BoxMeta {
            network_policy: Some(json!({"mode": "deny-all"})),
            unreadable: Some(reason),
            ..BoxMeta::default()
        }
    }

    /// The box's own egress rules, or why a stored one does not parse (a
    /// caller fails closed on that: see [`BoxService::egress_policy`]).
    pub fn egress(&self) -> Result<(Option<AllowNet>, Option<NetworkPolicy>), String> {
        let allow_net = self
            .allow_net
            .as_ref()
            .map(|rules| AllowNet::parse(rules))
            .transpose()
            .map_err(|e| format!("its stored allow_net does not parse: {e}"))?;
        let policy = self
            .network_policy
            .as_ref()
            .map(NetworkPolicy::from_json)
            .transpose()
            .map_err(|e| format!("its stored network policy does not parse: {e}"))?;
        Ok((allow_net, policy))
    }

    pub(crate) fn to_json(&self) -> CoreResult<Value> {
        if let Some(reason) = &self.unreadable {
            // Writing the fail-closed stand-in back would replace what
            // the box really was with defaults.
            return Err(CoreError::conflict(format!(
                "this box cannot be changed: {reason}; delete it"
            )));
        }
        let mut value = serde_json::to_value(self)
            .map_err(|e| CoreError::internal(format!("encode the box spec: {e}")))?;
        if let Value::Object(m) = &mut value {
            m.insert("v".into(), json!(SPEC_VERSION));
        }
        Ok(value)
    }
}

/// A box as the service describes it: its record, what it records beyond
/// the columns, and what only the live box knows.
#[derive(Debug, Clone)]
pub struct BoxInfo {
    pub row: BoxRow,
    pub meta: BoxMeta,
    /// Bytes the box's own files take (`None`: the pool cannot tell).
    pub disk_used_bytes: Option<u64>,
    /// CPU time of its processes (`None`: not running here).
    pub total_cpu_ns: Option<u64>,
    /// Unix ms of the last call on it (`None`: not running here).
    pub last_activity_ms: Option<i64>,
    /// Calls in flight on it now (commands, streams, file transfers).
    pub in_flight: usize,
}

/// What a new box is made of. Every field is optional; a box restored
/// from `snapshot` takes its env, size, disk, egress and metadata from it
/// unless given here.
#[derive(Debug, Clone, Default)]
pub struct CreateBox {
    pub name: Option<String>,
    /// The image (`host`, `node`, `python`, …) [default: `host`].
    pub runtime: Option<String>,
    pub size: Option<BoxSize>,
    pub disk_mib: Option<u64>,
    pub labels: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// Upstash network policy (`null`/`{}`: allow-all).
    pub network_policy: Option<Value>,
    /// Deno allowNet rules.
    pub allow_net: Option<Vec<String>>,
    /// `{"pattern": {"Header": "value"}}` (values write-only).
    pub attach_headers: Option<Value>,
    /// `{"NAME": {"hosts": [...], "value": "...", "in_query"?, "in_body"?}}`.
    pub secrets: Option<Value>,
    pub volumes: Vec<MountRequest>,
    pub init_command: Option<String>,
    /// Lifetime in seconds.
    pub ttl_secs: Option<u64>,
    /// Lifetime in milliseconds (the earlier of this and `ttl_secs` wins).
    pub timeout_ms: Option<u64>,
    pub ephemeral: bool,
    pub keep_alive: bool,
    /// The snapshot (id or name) to start from.
    pub snapshot: Option<String>,
    /// The coding agent, its skills and MCP servers (the key write-only).
    pub agent: AgentRequest,
}

/// Which boxes a list returns: all of the team's, or those carrying every
/// label and every metadata pair given.
#[derive(Debug, Clone, Default)]
pub struct BoxFilter {
    pub labels: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// The name callers see for a stored state: `failed` is `error`, as the
/// SDKs know it.
pub fn status_name(state: BoxState) -> &'static str {
    match state {
        BoxState::Creating => "creating",
        BoxState::Running => "running",
        BoxState::Paused => "paused",
        BoxState::Failed => "error",
        BoxState::Deleted => "deleted",
    }
}

fn check_name(name: &str) -> CoreResult<()> {
    crate::names::check("box name", name)?;
    if RESERVED_NAMES.contains(&name) {
        return Err(CoreError::invalid(format!(
            "box name {name:?} is reserved (it is an API path)"
        )));
    }
    Ok(())
}

/// Checks a label: 1–20 characters of `[A-Za-z0-9._:-]`.
pub fn check_label(label: &str) -> CoreResult<()> {
    if label.is_empty() || label.len() > 20 {
        return Err(CoreError::invalid(format!(
            "label {label:?} must be 1 to 20 characters long"
        )));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_:".contains(*c)))
    {
        return Err(CoreError::invalid(format!(
            "label {label:?} contains {c:?}; labels use letters, digits and . _ : -"
        )));
    }
    Ok(())
}

fn check_labels(labels: &[String]) -> CoreResult<BTreeMap<String, String>> {
    let mut set = BTreeMap::new();
    for label in labels {
        check_label(label)?;
        set.insert(label.clone(), String::new());
    }
    if set.len() > MAX_LABELS {
        return Err(CoreError::invalid(format!(
            "a box carries at most {MAX_LABELS} labels, got {}",
            set.len()
        )));
    }
    Ok(set)
}

fn check_metadata(meta: &BTreeMap<String, String>) -> CoreResult<()> {
    if meta.len() > MAX_METADATA_KEYS {
        return Err(CoreError::invalid(format!(
            "metadata has {} keys; at most {MAX_METADATA_KEYS} are allowed",
            meta.len()
        )));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > 64 || v.len() > 512 {
            return Err(CoreError::invalid(format!(
                "metadata key {k:?}: keys are 1-64 bytes and values at most 512 bytes"
            )));
        }
    }
    Ok(())
}

/// An init command as boxd accepts it.
pub(crate) fn check_init_command(cmd: &str) -> CoreResult<()> {
    if cmd.trim().is_empty() || cmd.len() > 65_536 || cmd.contains('\0') {
        return Err(CoreError::invalid(
            "init_command must be a non-empty shell command of at most 64 KiB without NUL bytes",
        ));
    }
    Ok(())
}

/// When a box created by `req` expires (unix ms): the earlier of `ttl`
/// (seconds) and `timeout` (ms); an ephemeral box without either lives
/// `MAX_TTL_SECS`.
fn expiry(req: &CreateBox, now_ms: i64) -> CoreResult<Option<i64>> {
    let mut lifetimes_ms = Vec::new();
    if let Some(ttl) = req.ttl_secs {
        if ttl == 0 || ttl > MAX_TTL_SECS {
            return Err(CoreError::invalid(format!(
                "ttl must be 1 to {MAX_TTL_SECS} seconds, got {ttl}"
            )));
        }
        lifetimes_ms.push(ttl * 1000);
    }
    if let Some(timeout) = req.timeout_ms {
        if timeout == 0 || timeout > MAX_TTL_SECS * 1000 {
            return Err(CoreError::invalid(format!(
                "timeout must be 1 to {} milliseconds, got {timeout}",
                MAX_TTL_SECS * 1000
            )));
        }
        lifetimes_ms.push(timeout);
    }
    if lifetimes_ms.is_empty() && req.ephemeral {
        lifetimes_ms.push(MAX_TTL_SECS * 1000);
    }
    Ok(lifetimes_ms.into_iter().min().map(|ms| now_ms + ms as i64))
}

/// Validates a `network_policy` (Upstash shape; `null`/`{}` = allow-all)
/// and an `allow_net` list, and returns their canonical stored forms.
pub(crate) fn check_egress(
    network_policy: Option<&Value>,
    allow_net: Option<&[String]>,
) -> CoreResult<(Option<Value>, Option<Vec<String>>)> {
    let policy = match network_policy {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(v) => {
            let p = NetworkPolicy::from_json(v)
                .map_err(|e| CoreError::invalid(format!("network_policy: {e}")))?;
            let mut spec = serde_json::to_value(p.to_spec())
                .map_err(|e| CoreError::internal(format!("encode the network policy: {e}")))?;
            // Canonical values, but only the fields the caller set.
            if let (Value::Object(out), Value::Object(given)) = (&mut spec, v) {
                out.retain(|k, _| k == "mode" || given.get(k).is_some_and(|x| !x.is_null()));
            }
            Some(spec)
        }
    };
    let allow_net = match allow_net {
        None => None,
        Some(rules) => {
            let parsed = AllowNet::parse(rules)
                .map_err(|e| CoreError::invalid(format!("allow_net: {e}")))?;
            Some(parsed.rules().iter().map(|r| r.to_string()).collect())
        }
    };
    Ok((policy, allow_net))
}

/// A new id with `prefix` (`box`, `snap`): 64 random bits in hex.
pub(crate) fn new_id(prefix: &str) -> CoreResult<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| CoreError::internal(format!("the random number generator failed: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{prefix}-{hex}"))
}

/// How a box gets its network: a new link, or re-registering a box that
/// kept running while boxd was down (whose link is probably still there).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attach {
    New,
    Adopt { link_present: bool },
}

impl BoxService {
    /// The description of a stored box, with what only the live box knows.
    pub fn info(&self, row: BoxRow) -> BoxInfo {
        let live = self.live(&row.id);
        BoxInfo {
            meta: BoxMeta::of(&row),
            disk_used_bytes: self.runtime.disk_used(&row.id),
            total_cpu_ns: live.as_ref().and_then(|l| l.cpu_ns()),
            last_activity_ms: live
                .as_ref()
                .map(|l| l.last_activity.load(Ordering::Relaxed)),
            in_flight: live.map_or(0, |l| l.in_flight()),
            row,
        }
    }

    /// The caller's box by id or name; not found for anything the caller's
    /// team does not own.
    pub fn find(&self, caller: &Caller, id_or_name: &str) -> CoreResult<BoxRow> {
        let row = match self.store.get_box(&caller.team_id, id_or_name)? {
            Some(row) => Some(row),
            None => self.store.get_box_by_name(&caller.team_id, id_or_name)?,
        };
        row.filter(|r| r.state != BoxState::Deleted)
            .ok_or_else(|| CoreError::not_found(format!("box {id_or_name} not found")))
    }

    /// `find`, described.
    pub fn get_box(&self, caller: &Caller, id_or_name: &str) -> CoreResult<BoxInfo> {
        Ok(self.info(self.find(caller, id_or_name)?))
    }

    /// The caller's box, ready for commands and file operations, counted
    /// as a call in flight while the answer is held. A paused box (or one
    /// being paused) is resumed first (audit `box.resume`, reason `auto`);
    /// the call restarts the box's idle clock. Validate the call's
    /// arguments before this: a call that fails must not resume the box.
    pub async fn running(&self, caller: &Caller, id_or_name: &str) -> CoreResult<(BoxRow, Busy)> {
        // Twice at most: once more if a pause began between the look-up
        // and the count.
        for _ in 0..2 {
            let mut row = self.find(caller, id_or_name)?;
            if row.state == BoxState::Paused {
                row = self.resume_row(&row, Some(caller), "auto").await?;
            }
            match row.state {
                BoxState::Running => {}
                BoxState::Creating => {
                    return Err(CoreError::conflict(format!(
                        "box {} is still being created; retry in a moment",
                        row.id
                    )))
                }
                _ => return Err(stopped(&row.id)),
            }
            let live = self.live_for(&row).await?;
            match Busy::enter(&live) {
                Some(busy) => return Ok((row, busy)),
                // A pause is under way: wait for it, then resume.
                None => {
                    drop(live.lifecycle.lock().await);
                }
            }
        }
        Err(CoreError::Unavailable(format!(
            "box {id_or_name} is being paused and resumed by other calls; retry"
        )))
    }

    /// Records that a box's processes are gone.
    pub(crate) fn mark_failed(&self, row: &BoxRow, reason: &str) {
        if let Err(e) = self.store.set_box_state(&row.id, BoxState::Failed) {
            tracing::error!(box_id = %row.id, error = %e, "cannot record a failed box");
        }
        tracing::warn!(box_id = %row.id, reason, "box failed");
        self.audit(
            &row.team_id,
            None,
            Some(row),
            "box.failed",
            json!({ "reason": reason }),
        );
    }

    /// The full egress policy of a box: its rules and the operator's.
    /// A stored rule that does not parse denies everything (logged).
    pub(crate) fn egress_policy(&self, meta: &BoxMeta) -> Option<EgressPolicy> {
        let net = self.network.as_ref()?;
        let (allow_net, policy) = meta.egress().unwrap_or_else(|reason| {
            tracing::error!(
                reason,
                "a box's stored egress rules cannot be read: it gets deny-all"
            );
            (None, Some(NetworkPolicy::deny_all()))
        });
        Some(net.policy(allow_net, policy))
    }

    /// Gives box `box_id` (agent `pid`, in `slot`) its network — at
    /// create, or at adoption after a restart (`adopt`: its veth is
    /// probably still there), with its attach headers and secrets. A box
    /// without a network reaches nothing, so failing here fails it.
    pub(crate) async fn attach_network(
        &self,
        box_id: &str,
        meta: &BoxMeta,
        slot: u32,
        pid: i32,
        secrets: Arc<SecretRules>,
        how: Attach,
    ) -> CoreResult<()> {
        let (Some(net), Some(policy)) = (&self.network, self.egress_policy(meta)) else {
            return Ok(());
        };
        let done = match how {
            Attach::Adopt { link_present } => {
                net.adopt(box_id, slot, pid, policy, secrets, link_present)
                    .await
            }
            Attach::New => net.attach(box_id, slot, pid, policy, secrets).await,
        };
        done.map(drop).map_err(|e| {
            CoreError::internal(format!("could not set up the network of box {box_id}: {e}"))
        })
    }

    /// The box's attach headers (the team's merged with its own, its own
    /// winning for a pattern) and placeholder secrets, validated. Secrets
    /// are env vars in the box, so their names must be free and allowed
    /// there.
    fn secret_rules(
        &self,
        caller: &Caller,
        req: &CreateBox,
        env: &BTreeMap<String, String>,
    ) -> CoreResult<SecretRules> {
        let own = parse_attach_headers(req.attach_headers.as_ref())?;
        let secrets = parse_secrets(req.secrets.as_ref())?;
        if (!own.is_empty() || !secrets.is_empty()) && self.network.is_none() {
            return Err(CoreError::invalid(
                "attach_headers and secrets need box networking, which is disabled on this boxd ([network] enabled = false)",
            ));
        }
        for s in &secrets {
            if env.contains_key(&s.name) {
                return Err(CoreError::invalid(format!(
                    "secret {:?} is also an environment variable: the box's env var holds the secret's placeholder, pick one",
                    s.name
                )));
            }
            if boxd_runtime::env::BLOCKED_ENV.contains(&s.name.as_str()) {
                return Err(CoreError::invalid(format!(
                    "secret {:?}: this environment variable cannot be set in a box",
                    s.name
                )));
            }
        }
        let team = if self.network.is_some() {
            self.secrets.team_rules(&self.store, &caller.team_id)?
        } else {
            Vec::new()
        };
        SecretRules::new(team, own, secrets).map_err(|e| CoreError::invalid(e.to_string()))
    }

    /// The box's disk limit: the request's, else the snapshot's, else its
    /// size's default; `None` when the storage pool enforces no limits
    /// (then asking for one is an error, not a silent no-op).
    fn disk_limit(
        &self,
        asked: Option<u64>,
        from_snapshot: Option<u64>,
        size: BoxSize,
    ) -> CoreResult<Option<u64>> {
        if let Some(mib) = asked {
            if !DISK_MIB.contains(&mib) {
                return Err(CoreError::invalid(format!(
                    "disk_mib {mib}: a box's disk is {} MiB to {} MiB",
                    DISK_MIB.start(),
                    DISK_MIB.end()
                )));
            }
        }
        let pool = self.runtime.storage();
        if !pool.enforces_limits() {
            if asked.is_some() {
                return Err(CoreError::invalid(format!(
                    "disk_mib: this daemon cannot enforce disk limits ({})",
                    pool.no_limits_reason().unwrap_or("no btrfs storage pool")
                )));
            }
            return Ok(None);
        }
        Ok(Some(asked.or(from_snapshot).unwrap_or(size.disk_mib())))
    }

    /// Creates a box and starts it; answers when it runs (its init
    /// command, if any, goes on in the background).
    pub async fn create_box(
        self: &Arc<Self>,
        caller: &Caller,
        req: CreateBox,
    ) -> CoreResult<BoxInfo> {
        let started = Instant::now();
        if let Some(name) = &req.name {
            check_name(name)?;
        }
        let snapshot = match req.snapshot.as_deref().filter(|s| !s.is_empty()) {
            Some(sid) => Some(Restorable::of(self.find_snapshot(caller, sid)?)?),
            None => None,
        };
        let labels = check_labels(&req.labels)?;
        let mut metadata = snapshot
            .as_ref()
            .map(|s| s.spec.metadata.clone())
            .unwrap_or_default();
        metadata.extend(req.metadata.clone());
        check_metadata(&metadata)?;
        let size = req
            .size
            .or(snapshot.as_ref().map(|s| s.spec.size))
            .unwrap_or_default();
        let disk_mib = self.disk_limit(
            req.disk_mib,
            snapshot.as_ref().and_then(|s| s.spec.disk_mib),
            size,
        )?;
        let runtime = match (&snapshot, &req.runtime) {
            (Some(s), Some(r)) if *r != s.row.runtime => {
                return Err(CoreError::invalid(format!(
                    "snapshot {} was taken from a {} box; a box restored from it runs {} (got runtime {r:?})",
                    s.row.id, s.row.runtime, s.row.runtime
                )))
            }
            (Some(s), _) => s.row.runtime.clone(),
            (None, r) => r.clone().unwrap_or_else(|| "host".into()),
        };
        // The team's global env first, then the snapshot's; the box's own values win.
        let mut env = self.store.team_env(&caller.team_id)?;
        if let Some(s) = &snapshot {
            env.extend(s.spec.env.clone());
        }
        env.extend(req.env.clone());
        boxd_runtime::env::validate(&env)?;
        let (policy_in, allow_in) = match &snapshot {
            Some(s) => (
                req.network_policy.clone().or(s.spec.network_policy.clone()),
                req.allow_net.clone().or(s.spec.allow_net.clone()),
            ),
            None => (req.network_policy.clone(), req.allow_net.clone()),
        };
        let (network_policy, allow_net) = check_egress(policy_in.as_ref(), allow_in.as_deref())?;
        let rules = self.secret_rules(caller, &req, &env)?;
        let (attach_headers, secrets) = crate::secrets::public_view(&rules);
        let volumes = self.check_mounts(caller, &req.volumes)?;
        if let Some(cmd) = &req.init_command {
            check_init_command(cmd)?;
        }
        let expires_at = expiry(&req, now_ms())?;
        let agent = crate::agent::check_agent(req.agent.clone())?;

        let id = new_id("box")?;
        let meta = BoxMeta {
            size,
            disk_mib,
            keep_alive: req.keep_alive,
            metadata,
            network_policy,
            allow_net,
            attach_headers,
            secrets,
            volumes: volumes.iter().map(|(_, m)| m.clone()).collect(),
            snapshot_id: snapshot.as_ref().map(|s| s.row.id.clone()),
            init_command: req.init_command.clone(),
            expires_at,
            ephemeral: req.ephemeral,
            agent: agent.config.clone(),
            ..BoxMeta::default()
        };
        let new_box = NewBox {
            id: id.clone(),
            team_id: caller.team_id.clone(),
            name: req.name.clone(),
            state: BoxState::Creating,
            runtime: runtime.clone(),
            spec: meta.to_json()?,
            labels,
        };
        let mut row = match &snapshot {
            // The record that holds the snapshot is written while no delete
            // can free it, and only if it is still there.
            Some(s) => {
                let _held = self.snapshot_refs.lock().unwrap_or_else(|p| p.into_inner());
                if self
                    .store
                    .get_snapshot(&caller.team_id, &s.row.id)?
                    .is_none()
                {
                    return Err(CoreError::not_found(format!(
                        "snapshot {} not found",
                        s.row.id
                    )));
                }
                self.store.insert_box(&new_box)?
            }
            None => self.store.insert_box(&new_box)?,
        };

        // A volume deleted since it was checked fails the create here.
        if let Err(e) = self
            .store
            .attach_volumes(&id, &crate::volumes::mount_rows(&id, &volumes))
            .map_err(CoreError::from)
            .and_then(|()| {
                self.secrets
                    .store_box_rules(&self.store, &caller.team_id, &id, &rules)
            })
            .and_then(|()| {
                self.secrets
                    .store_agent_secrets(&self.store, &caller.team_id, &id, &agent)
            })
        {
            if let Err(del) = self.store.delete_box(&caller.team_id, &id) {
                tracing::error!(box_id = %id, error = %del, "cannot remove a failed box's record");
            }
            return Err(e);
        }
        let mut spec = BoxSpec::new(&id);
        spec.runtime = runtime;
        spec.env = env;
        spec.disk_bytes = disk_mib.map(|m| m << 20);
        if let Some(s) = &snapshot {
            spec.snapshot_layers = s.layers.clone();
            spec.image = s.spec.image.clone();
        }
        for s in rules.secrets() {
            spec.env.insert(s.name.clone(), s.placeholder.clone());
        }
        self.secrets.apply_trust(&mut spec);
        for (vol, m) in &volumes {
            spec.volumes.push(boxd_runtime::VolumeMount {
                source: self.runtime.volume_dir(&vol.id)?,
                target: m.path.clone(),
                read_only: m.read_only,
            });
        }
        let rules = Arc::new(rules);
        spec.limits = Limits {
            memory_bytes: Some(size.memory_bytes()),
            cpu_millis: Some(u64::from(size.cpu_millis())),
            ..spec.limits
        };
        // The box's network is made while the runtime builds the box: both
        // start as soon as its namespaces exist.
        let rt = self.runtime.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let creating = tokio::task::spawn_blocking(move || {
            rt.create_notify(&spec, move |slot, pid| {
                let _ = started_tx.send((slot, pid));
            })
        });
        let networking = async {
            let (slot, pid) = started_rx.await.ok()?;
            Some((
                slot,
                self.attach_network(&id, &meta, slot, pid, rules, Attach::New)
                    .await,
            ))
        };
        let (created, networked) = tokio::join!(creating, networking);
        let created =
            created.map_err(|e| CoreError::internal(format!("the create task failed: {e}")))?;
        // Nothing of a failed create stays (its veth goes with its netns).
        let restored = snapshot.is_some();
        let forget = |svc: &BoxService| {
            if let (Some(net), Some((slot, _))) = (&svc.network, &networked) {
                net.detach(&id, *slot);
            }
            if let Err(del) = svc.store.delete_box(&caller.team_id, &id) {
                tracing::error!(box_id = %id, error = %del, "cannot remove a failed box's record");
            }
            if restored {
                svc.collect_snapshots();
            }
            svc.metrics.create_done(false, started.elapsed());
        };
        let handle = match created {
            Ok(handle) => handle,
            Err(e) => {
                forget(self);
                return Err(e.into());
            }
        };
        let live = LiveBox::new(handle);
        let network_error = match &networked {
            Some((_, Err(e))) => Some(e.clone()),
            Some((_, Ok(()))) => None,
            None => Some(CoreError::internal(
                "the box started without reporting its process",
            )),
        };
        if let Some(e) = network_error {
            let rt = self.runtime.clone();
            let destroyed = tokio::task::spawn_blocking(move || rt.destroy(live.handle)).await;
            match destroyed {
                Ok(Ok(())) => {}
                // Its files stay on disk; the next start removes a box the
                // store does not know.
                Ok(Err(d)) => {
                    tracing::error!(box_id = %id, error = %d, "cannot remove a box whose create failed")
                }
                Err(d) => {
                    tracing::error!(box_id = %id, error = %d, "the cleanup of a failed create failed")
                }
            }
            forget(self);
            return Err(e);
        }
        let live = Arc::new(live);
        self.insert_live_arc(live.clone());
        self.store.set_box_state(&id, BoxState::Running)?;
        row.state = BoxState::Running;
        if let Some(at) = expires_at {
            self.set_expiry(&id, at);
        }
        let took = started.elapsed();
        self.metrics.create_done(true, took);
        self.audit(
            &caller.team_id,
            Some(caller),
            Some(&row),
            "box.create",
            json!({
                "name": row.name,
                "runtime": row.runtime,
                "size": size.as_str(),
                "volumes": meta.volumes,
                "agent": meta.agent.agent,
                "model": meta.agent.model,
                "duration_ms": took.as_millis() as u64,
            }),
        );
        tracing::info!(box_id = %id, took_ms = took.as_millis() as u64, "box created");
        if let Some(cmd) = &meta.init_command {
            self.run_init(&row, &live, cmd, "create");
        }
        Ok(self.info(row))
    }

    /// Changes a box's egress: its Upstash network policy (`None`: kept)
    /// and its allowNet rules (`None`: kept; `Some(None)`: removed). At
    /// least one must be given: a missing policy never reads as allow-all
    /// (widening a box's egress takes an explicit `{"mode": "allow-all"}`).
    /// The next DNS query and connection of the box use it; connections
    /// already open keep going.
    pub fn set_network_policy(
        &self,
        caller: &Caller,
        id: &str,
        policy: Option<&Value>,
        allow_net: Option<Option<Vec<String>>>,
    ) -> CoreResult<BoxInfo> {
        let policy = policy.filter(|p| !p.is_null() && p.as_object().is_none_or(|m| !m.is_empty()));
        if policy.is_none() && allow_net.is_none() {
            return Err(CoreError::invalid(
                "network policy: send {\"mode\": \"allow-all\" | \"deny-all\" | \"custom\", ...} \
                 (an empty policy changes nothing)",
            ));
        }
        if let Some(p) = policy {
            if p.get("mode").is_none() {
                return Err(CoreError::invalid(
                    "network policy: mode (allow-all, deny-all or custom) is required",
                ));
            }
        }
        let mut row = self.find(caller, id)?;
        let mut meta = BoxMeta::of(&row);
        let allow_net = allow_net.unwrap_or_else(|| meta.allow_net.clone());
        let policy = policy.cloned().or_else(|| meta.network_policy.clone());
        let (network_policy, allow_net) = check_egress(policy.as_ref(), allow_net.as_deref())?;
        meta.network_policy = network_policy;
        meta.allow_net = allow_net;
        row.spec = meta.to_json()?;
        self.store.update_box_spec(&row.id, &row.spec)?;
        if let (Some(net), Some(policy), Some(live)) =
            (&self.network, self.egress_policy(&meta), self.live(&row.id))
        {
            net.set_policy(&row.id, live.handle.record().slot, policy);
        }
        self.audit(
            &caller.team_id,
            Some(caller),
            Some(&row),
            "box.network_policy",
            json!({
                "network_policy": meta.network_policy.clone().unwrap_or_else(|| json!({"mode": "allow-all"})),
                "allow_net": meta.allow_net,
            }),
        );
        Ok(self.info(row))
    }

    /// The caller's boxes that match `filter`.
    pub fn list_boxes(&self, caller: &Caller, filter: &BoxFilter) -> CoreResult<Vec<BoxInfo>> {
        let labels: Vec<(String, String)> = filter
            .labels
            .iter()
            .map(|l| (l.clone(), String::new()))
            .collect();
        let rows = self.store.list_boxes(&caller.team_id, &labels)?;
        Ok(rows
            .into_iter()
            .filter(|r| r.state != BoxState::Deleted)
            .filter(|r| {
                filter.metadata.is_empty() || {
                    let meta = BoxMeta::of(r);
                    filter
                        .metadata
                        .iter()
                        .all(|(k, v)| meta.metadata.get(k).is_some_and(|have| have == v))
                }
            })
            .map(|r| self.info(r))
            .collect())
    }

    /// Deletes a box: its processes, files and network go; its snapshots
    /// and its audit trail stay. Answers the deleted box's id.
    pub async fn delete_box(self: &Arc<Self>, caller: &Caller, id: &str) -> CoreResult<String> {
        let row = self.find(caller, id)?;
        self.remove_box(Some(caller), &row, "box.delete", json!({}))
            .await?;
        Ok(row.id)
    }

    /// Deletes several boxes, all or nothing as far as finding them goes:
    /// every one must exist before any is deleted; a box named twice (by
    /// id or name) is deleted once. Answers the deleted ids.
    pub async fn delete_boxes(
        self: &Arc<Self>,
        caller: &Caller,
        ids: &[String],
    ) -> CoreResult<Vec<String>> {
        if ids.is_empty() {
            return Err(CoreError::invalid("ids must list at least one box"));
        }
        let mut rows: Vec<BoxRow> = Vec::with_capacity(ids.len());
        for id in ids {
            let row = self.find(caller, id)?;
            if !rows.iter().any(|r| r.id == row.id) {
                rows.push(row);
            }
        }
        for row in &rows {
            self.remove_box(Some(caller), row, "box.delete", json!({}))
                .await?;
        }
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// The one delete path (a caller's delete, an expiry): records the
    /// delete (state `deleted`: no longer listed or found, finished at the
    /// next start if boxd dies now), destroys the box, removes its record
    /// and appends the `kind` audit event.
    pub(crate) async fn remove_box(
        self: &Arc<Self>,
        caller: Option<&Caller>,
        row: &BoxRow,
        kind: &str,
        data: Value,
    ) -> CoreResult<()> {
        self.store.set_box_state(&row.id, BoxState::Deleted)?;
        let handle = match self.remove_live(&row.id) {
            Some(live) => Some(live),
            // Not live here (e.g. its record is all that is left): adopt what
            // the runtime still has so it is cleaned up too.
            None => self
                .runtime
                .adopt(&row.id)
                .ok()
                .map(|h| Arc::new(LiveBox::new(h))),
        };
        if let Some(live) = handle {
            // A frozen box is thawed so its processes die at once.
            if row.state == BoxState::Paused {
                if let Err(e) = live.handle.thaw() {
                    tracing::warn!(box_id = %row.id, error = %e, "cannot thaw a paused box before deleting it");
                }
            }
            if let Some(net) = &self.network {
                net.detach(&row.id, live.handle.record().slot);
            }
            let rt = self.runtime.clone();
            let live2 = live.clone();
            let destroyed = tokio::task::spawn_blocking(move || rt.destroy(&live2.handle))
                .await
                .map_err(|e| CoreError::internal(format!("the delete task failed: {e}")))?;
            if let Err(e) = destroyed {
                self.insert_live_arc(live);
                if let Err(e) = self.store.set_box_state(&row.id, row.state) {
                    tracing::error!(box_id = %row.id, error = %e, "cannot restore a box's state after a failed delete");
                }
                return Err(CoreError::internal(format!(
                    "could not remove box {}: {e}; retry the delete",
                    row.id
                )));
            }
        }
        self.store.delete_box(&row.team_id, &row.id)?;
        self.forget_expiry(&row.id);
        if BoxMeta::of(row).snapshot_id.is_some() {
            self.collect_snapshots();
        }
        self.audit(&row.team_id, caller, Some(row), kind, data);
        tracing::info!(box_id = %row.id, kind, "box deleted");
        Ok(())
    }

    /// Adds a label; answers the box's labels.
    pub fn add_label(&self, caller: &Caller, id: &str, label: &str) -> CoreResult<Vec<String>> {
        check_label(label)?;
        let mut row = self.find(caller, id)?;
        if row.labels.contains_key(label) {
            return Err(CoreError::conflict("Label already added"));
        }
        if row.labels.len() >= MAX_LABELS {
            return Err(CoreError::invalid(format!(
                "a box carries at most {MAX_LABELS} labels; remove one first"
            )));
        }
        row.labels.insert(label.to_string(), String::new());
        self.store.update_box_labels(&row.id, &row.labels)?;
        self.audit(
            &caller.team_id,
            Some(caller),
            Some(&row),
            "box.label_add",
            json!({"label": label}),
        );
        Ok(row.labels.into_keys().collect())
    }

    /// Removes a label; answers the box's labels.
    pub fn remove_label(&self, caller: &Caller, id: &str, label: &str) -> CoreResult<Vec<String>> {
        let mut row = self.find(caller, id)?;
        if row.labels.remove(label).is_none() {
            return Err(CoreError::not_found(format!(
                "box {} has no label {label:?}",
                row.id
            )));
        }
        self.store.update_box_labels(&row.id, &row.labels)?;
        self.audit(
            &caller.team_id,
            Some(caller),
            Some(&row),
            "box.label_remove",
            json!({"label": label}),
        );
        Ok(row.labels.into_keys().collect())
    }

    /// The box's labels.
    pub fn labels(&self, caller: &Caller, id: &str) -> CoreResult<Vec<String>> {
        Ok(self.find(caller, id)?.labels.into_keys().collect())
    }
}
