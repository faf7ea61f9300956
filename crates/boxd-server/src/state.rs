//! The daemon's shared state and the box state machine.
//!
//! Owns the live box handles (by id), who may see which box (a key sees
//! only its team's boxes; anything else is a 404), the state transitions
//! recorded in the store before a call returns, the audit trail writer and
//! re-adoption after a restart. Never touches a box's namespaces or files
//! directly: that goes through the runtime and the box's agent.

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::secrets::Secrets;
use crate::Config;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use boxd_api::{BoxData, BoxSize, BoxStatus, API_KEY_HEADER};
use boxd_net::policy::{AllowNet, EgressPolicy, NetworkPolicy};
use boxd_net::secrets::SecretRules;
use boxd_net::{NetEvent, Network};
use boxd_runtime::{BoxHandle, Runtime};
use boxd_store::{BoxRow, BoxState, NewAuditEvent, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// A box the runtime knows, with its agent connection.
pub struct LiveBox {
    pub handle: BoxHandle,
    /// Unix ms of the last exec, stream or file call (or of the create or
    /// adoption): the idle-pause clock. One relaxed store per call.
    pub last_activity: AtomicI64,
    /// Whether the box is (being) paused, mirroring the store, so the
    /// idle sweeper skips paused boxes without reading the store.
    pub paused: AtomicBool,
    /// Serializes pause and resume of this box.
    pub lifecycle: tokio::sync::Mutex<()>,
}

impl LiveBox {
    pub fn new(handle: BoxHandle) -> LiveBox {
        LiveBox {
            handle,
            last_activity: AtomicI64::new(now_ms()),
            paused: AtomicBool::new(false),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    /// Records a call on the box (restarts its idle clock).
    pub fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }

    /// CPU time used by the box's processes, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        self.handle
            .cgroup()
            .cpu_usage_usec()
            .ok()
            .map(|us| us.saturating_mul(1000))
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Everything a request handler can reach.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub metrics: Metrics,
    /// Box networking; `None` when `[network] enabled = false`.
    pub network: Option<Network>,
    /// Master keys, boxd's CA and the trust bundle.
    pub secrets: Secrets,
    boxes: RwLock<HashMap<String, Arc<LiveBox>>>,
    /// Held while a box starts using a snapshot (its record is written)
    /// and while deleted snapshots are freed, so a snapshot never loses
    /// its files between a restore's lookup and its record.
    pub snapshot_refs: std::sync::Mutex<()>,
    /// Box id → when it expires (unix ms), for boxes with a lifetime. The
    /// store's spec holds the same value; this copy is what the sweeper
    /// scans.
    pub(crate) expiries: Mutex<HashMap<String, i64>>,
    /// The newest audit `seq`, so followers wake up when it grows.
    audit_seq: watch::Sender<i64>,
}

/// What boxd records about a box beyond the store's columns (`spec` JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BoxMeta {
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
    pub secrets: BTreeMap<String, boxd_api::SecretInfo>,
    /// Volumes mounted at create.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<boxd_api::BoxVolume>,
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
}

impl BoxMeta {
    pub fn of(row: &BoxRow) -> BoxMeta {
        serde_json::from_value(row.spec.clone()).unwrap_or_default()
    }

    /// The box's own egress rules (validated before they were stored).
    pub fn egress(&self) -> (Option<AllowNet>, Option<NetworkPolicy>) {
        let allow_net = self
            .allow_net
            .as_ref()
            .and_then(|rules| AllowNet::parse(rules).ok());
        let policy = self
            .network_policy
            .as_ref()
            .and_then(|p| NetworkPolicy::from_json(p).ok());
        (allow_net, policy)
    }
}

/// Validates a `network_policy` (Upstash shape; `null`/`{}` = allow-all)
/// and an `allow_net` list, and returns their canonical stored forms.
pub fn check_egress(
    network_policy: Option<&Value>,
    allow_net: Option<&[String]>,
) -> ApiResult<(Option<Value>, Option<Vec<String>>)> {
    let policy = match network_policy {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(v) => {
            let p = NetworkPolicy::from_json(v)
                .map_err(|e| ApiError::bad_request(format!("network_policy: {e}")))?;
            Some(
                serde_json::to_value(p.to_spec())
                    .map_err(|e| ApiError::internal(format!("encode the network policy: {e}")))?,
            )
        }
    };
    let allow_net = match allow_net {
        None => None,
        Some(rules) => {
            let parsed = AllowNet::parse(rules)
                .map_err(|e| ApiError::bad_request(format!("allow_net: {e}")))?;
            Some(parsed.rules().iter().map(|r| r.to_string()).collect())
        }
    };
    Ok((policy, allow_net))
}

/// The wire status of a stored state.
pub fn status_of(state: BoxState) -> BoxStatus {
    match state {
        BoxState::Creating => BoxStatus::Creating,
        BoxState::Running => BoxStatus::Running,
        BoxState::Paused => BoxStatus::Paused,
        BoxState::Failed => BoxStatus::Error,
        BoxState::Deleted => BoxStatus::Deleted,
    }
}

/// The answer to a call on a box whose processes are gone.
pub fn stopped(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "box {id} has stopped (its processes are gone): restart it with \
         POST /v2/box/{id}/restart (its files are kept) or delete it"
    ))
}

/// The wire form of a stored box.
pub fn box_data(row: &BoxRow) -> BoxData {
    let meta = BoxMeta::of(row);
    BoxData {
        id: row.id.clone(),
        status: status_of(row.state),
        name: row.name.clone(),
        labels: row.labels.keys().cloned().collect(),
        runtime: row.runtime.clone(),
        size: meta.size,
        disk_mib: meta.disk_mib,
        disk_used_bytes: None,
        keep_alive: meta.keep_alive,
        created_at: row.created_at / 1000,
        updated_at: row.updated_at / 1000,
        metadata: meta.metadata,
        network_policy: meta
            .network_policy
            .clone()
            .unwrap_or_else(|| json!({"mode": "allow-all"})),
        allow_net: meta.allow_net.clone(),
        attach_headers: meta.attach_headers,
        secrets: meta.secrets,
        volumes: meta.volumes,
        ephemeral: meta.ephemeral,
        expires_at: meta.expires_at.map(|ms| ms / 1000),
        total_cpu_ns: None,
        last_activity_at: None,
    }
}

/// The authenticated caller: the key's team decides what it can see.
#[derive(Debug, Clone)]
pub struct Caller {
    pub team_id: String,
    pub key_id: String,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let header_key = parts
            .headers
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok());
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(key) = header_key.or(bearer).map(str::trim) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing API key: send it in the X-Box-Api-Key header (or Authorization: Bearer)",
            ));
        };
        match state.store.authenticate(key)? {
            Some(info) => Ok(Caller {
                team_id: info.team_id,
                key_id: info.id,
            }),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid or revoked API key",
            )),
        }
    }
}

impl AppState {
    pub fn new(
        config: Config,
        store: Store,
        runtime: Arc<Runtime>,
        network: Option<Network>,
        secrets: Secrets,
    ) -> AppState {
        AppState {
            config,
            store,
            runtime,
            network,
            secrets,
            metrics: Metrics::new(),
            boxes: RwLock::new(HashMap::new()),
            snapshot_refs: std::sync::Mutex::new(()),
            expiries: Mutex::new(HashMap::new()),
            audit_seq: watch::channel(0).0,
        }
    }

    pub fn live(&self, id: &str) -> Option<Arc<LiveBox>> {
        self.boxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The wire form of a stored box, with what only the live box knows
    /// (CPU time, last activity).
    pub fn data(&self, row: &BoxRow) -> BoxData {
        let mut data = box_data(row);
        data.disk_used_bytes = self.runtime.disk_used(&row.id);
        if let Some(live) = self.live(&row.id) {
            data.total_cpu_ns = live.cpu_ns();
            data.last_activity_at = Some(live.last_activity.load(Ordering::Relaxed) / 1000);
        }
        data
    }

    /// Every live box (a snapshot of the map).
    pub fn live_boxes(&self) -> Vec<Arc<LiveBox>> {
        self.boxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn insert_live(&self, handle: BoxHandle) -> Arc<LiveBox> {
        let live = Arc::new(LiveBox::new(handle));
        self.insert_live_arc(live.clone());
        live
    }

    pub fn insert_live_arc(&self, live: Arc<LiveBox>) {
        self.boxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(live.handle.id().to_string(), live);
    }

    pub fn remove_live(&self, id: &str) -> Option<Arc<LiveBox>> {
        self.boxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    pub fn live_count(&self) -> usize {
        self.boxes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The caller's box by id or name; 404 for anything the caller's team
    /// does not own.
    pub fn find(&self, caller: &Caller, id_or_name: &str) -> ApiResult<BoxRow> {
        let row = match self.store.get_box(&caller.team_id, id_or_name)? {
            Some(row) => Some(row),
            None => self.store.get_box_by_name(&caller.team_id, id_or_name)?,
        };
        row.filter(|r| r.state != BoxState::Deleted)
            .ok_or_else(|| ApiError::not_found(format!("box {id_or_name} not found")))
    }

    /// The caller's box, ready for commands and file operations. A paused
    /// box is resumed first (audit `box.resume`, reason `auto`); the call
    /// restarts the box's idle clock.
    pub async fn running(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> ApiResult<(BoxRow, Arc<LiveBox>)> {
        let mut row = self.find(caller, id_or_name)?;
        if row.state == BoxState::Paused {
            row = self.resume(&row, Some(caller), "auto").await?;
        }
        match row.state {
            BoxState::Running => {}
            BoxState::Creating => {
                return Err(ApiError::conflict(format!(
                    "box {} is still being created; retry in a moment",
                    row.id
                )))
            }
            _ => return Err(stopped(&row.id)),
        }
        match self.live(&row.id) {
            Some(live) if live.handle.is_alive() => {
                live.touch();
                Ok((row, live))
            }
            _ => {
                self.mark_failed(&row, "its init process exited");
                Err(stopped(&row.id))
            }
        }
    }

    /// Records that a box's processes are gone.
    pub fn mark_failed(&self, row: &BoxRow, reason: &str) {
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

    /// Appends an audit event, with the box's labels and metadata attached.
    /// A failure to record is logged loudly; the caller's action has
    /// already happened and is not undone.
    pub fn audit(
        &self,
        team_id: &str,
        caller: Option<&Caller>,
        row: Option<&BoxRow>,
        kind: &str,
        mut data: Value,
    ) {
        if let (Some(row), Value::Object(map)) = (row, &mut data) {
            map.insert(
                "labels".into(),
                json!(row.labels.keys().collect::<Vec<_>>()),
            );
            let meta = BoxMeta::of(row);
            if !meta.metadata.is_empty() {
                map.insert("metadata".into(), json!(meta.metadata));
            }
        }
        let event = NewAuditEvent {
            team_id: team_id.to_string(),
            box_id: row.map(|r| r.id.clone()),
            kind: kind.to_string(),
            key_id: caller.map(|c| c.key_id.clone()),
            data,
        };
        match self.store.append_audit(&event) {
            Ok(seq) => {
                self.audit_seq.send_replace(seq);
            }
            Err(e) => tracing::error!(kind, error = %e, "cannot append an audit event"),
        }
    }

    /// Records network events (DNS answers, proxied connections) as audit
    /// events of their boxes' teams.
    pub fn audit_net(&self, events: &[NetEvent]) {
        for ev in events {
            match self.store.box_by_id(ev.box_id()) {
                Ok(Some(row)) => {
                    self.audit(&row.team_id, None, Some(&row), ev.kind(), ev.to_json())
                }
                Ok(None) => tracing::debug!(box_id = ev.box_id(), "network event of a removed box"),
                Err(e) => tracing::error!(error = %e, "cannot read a box for a network event"),
            }
        }
    }

    /// The full egress policy of a box: its rules and the operator's.
    pub fn egress_policy(&self, meta: &BoxMeta) -> Option<EgressPolicy> {
        let net = self.network.as_ref()?;
        let (allow_net, policy) = meta.egress();
        Some(net.policy(allow_net, policy))
    }

    /// Gives box `box_id` (agent `pid`, in `slot`) its network — at
    /// create, or at adoption after a restart (`adopt`: its veth is
    /// probably still there), with its attach headers and secrets. A box
    /// without a network reaches nothing, so failing here fails it.
    pub async fn attach_network(
        &self,
        box_id: &str,
        meta: &BoxMeta,
        slot: u32,
        pid: i32,
        secrets: Arc<SecretRules>,
        adopt: bool,
    ) -> ApiResult<()> {
        let (Some(net), Some(policy)) = (&self.network, self.egress_policy(meta)) else {
            return Ok(());
        };
        let done = if adopt {
            net.adopt(box_id, slot, pid, policy, secrets).await
        } else {
            net.attach(box_id, slot, pid, policy, secrets).await
        };
        done.map(drop).map_err(|e| {
            ApiError::internal(format!("could not set up the network of box {box_id}: {e}"))
        })
    }

    /// Re-registers the networks of adopted boxes and removes links a
    /// crash left behind.
    pub async fn recover_network(&self) -> anyhow::Result<()> {
        let Some(net) = &self.network else {
            return Ok(());
        };
        let mut live_slots = std::collections::HashSet::new();
        for row in self.store.all_boxes()? {
            let Some(live) = self.live(&row.id) else {
                continue;
            };
            let up = matches!(row.state, BoxState::Running | BoxState::Paused);
            if !up || !live.handle.is_alive() {
                continue;
            }
            let (slot, pid) = (live.handle.record().slot, live.handle.pid());
            let restored = match self.secrets.box_rules(&self.store, &row.id) {
                Ok(rules) => {
                    self.attach_network(
                        &row.id,
                        &BoxMeta::of(&row),
                        slot,
                        pid,
                        Arc::new(rules),
                        true,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match restored {
                Ok(()) => {
                    live_slots.insert(live.handle.record().slot);
                }
                Err(e) => {
                    tracing::error!(box_id = %row.id, error = %e.message, "cannot restore a box's network");
                    self.mark_failed(&row, "its network could not be restored");
                }
            }
        }
        let removed = net.remove_leftovers(&live_slots).await?;
        if removed > 0 {
            tracing::warn!(removed, "removed box links left by an earlier run");
        }
        Ok(())
    }

    /// A receiver that changes whenever an audit event is appended.
    pub fn audit_updates(&self) -> watch::Receiver<i64> {
        self.audit_seq.subscribe()
    }

    /// Removes a box at start (its runtime remains, its record) and audits
    /// `kind`; `false` (logged) if its runtime remains could not go.
    fn remove_at_start(&self, row: &BoxRow, kind: &str, data: Value) -> anyhow::Result<bool> {
        if let Ok(handle) = self.runtime.adopt(&row.id) {
            if let Err(e) = self.runtime.destroy(handle) {
                tracing::error!(box_id = %row.id, kind, error = %e, "cannot remove a box at start");
                return Ok(false);
            }
        }
        self.store.delete_box(&row.team_id, &row.id)?;
        self.audit(&row.team_id, None, Some(row), kind, data);
        Ok(true)
    }

    /// After a (re)start: re-adopt every box the store says exists, mark
    /// the dead ones failed, and remove what a crash left half made.
    /// Returns the boxes that were up and died while boxd was down (a
    /// host reboot): the caller restarts them.
    pub fn recover(&self) -> anyhow::Result<Vec<BoxRow>> {
        let rows = self.store.all_boxes()?;
        let mut died = Vec::new();
        let (mut adopted, mut failed, mut abandoned) = (0, 0, 0);
        for row in &rows {
            match row.state {
                BoxState::Deleted => {
                    // A delete was cut short: finish it.
                    let data = json!({"finished_at_start": true});
                    if self.remove_at_start(row, "box.delete", data)? {
                        tracing::warn!(box_id = %row.id, "finished a delete that boxd's stop cut short");
                    }
                }
                BoxState::Creating => {
                    // The create call never answered: nobody knows this box.
                    let data = json!({"reason": "boxd stopped while the box was being created"});
                    if self.remove_at_start(row, "box.create_abandoned", data)? {
                        abandoned += 1;
                    }
                }
                BoxState::Running | BoxState::Paused | BoxState::Failed => {
                    if let Some(at) = BoxMeta::of(row).expires_at {
                        self.expiries
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(row.id.clone(), at);
                    }
                    match self.runtime.adopt(&row.id) {
                        Ok(handle) => {
                            let alive = handle.is_alive();
                            let live = self.insert_live(handle);
                            if alive {
                                self.reconcile_pause(row, &live);
                                adopted += 1;
                            } else if row.state != BoxState::Failed {
                                self.mark_failed(row, "its processes died while boxd was down");
                                died.push(row.clone());
                                failed += 1;
                            }
                        }
                        Err(_) if row.state != BoxState::Failed => {
                            self.mark_failed(row, "its runtime state is missing");
                            failed += 1;
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        // Boxes on disk the store does not know (their delete was
        // interrupted after the record went): finish the delete.
        for record in self.runtime.box_records() {
            if rows.iter().any(|r| r.id == record.id) {
                continue;
            }
            tracing::warn!(box_id = %record.id, "removing a box the store does not know");
            if let Ok(handle) = self.runtime.adopt(&record.id) {
                if let Err(e) = self.runtime.destroy(handle) {
                    tracing::error!(box_id = %record.id, error = %e, "cannot remove an orphan box");
                }
            }
        }
        tracing::info!(adopted, failed, abandoned, "boxes recovered");
        Ok(died)
    }
}
