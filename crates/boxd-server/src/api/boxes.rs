//! Box lifecycle endpoints: create, get (by id or name), list, delete,
//! status, labels and the box's log.
//!
//! Owns the validation of create requests and the order of a create or a
//! delete (store first, then runtime, then store again), so a crash at any
//! point is repaired by `AppState::recover`. A request that fails leaves
//! nothing behind. Features later issues own are refused with 501.

use crate::error::{ApiError, ApiResult};
use crate::secrets::{parse_attach_headers, parse_secrets};
use crate::state::{check_egress, status_of, AppState, BoxMeta, Caller, LiveBox};
use axum::extract::{Path, Query, State};
use axum::Json;
use boxd_api::{
    check_label, BoxData, BulkDeleteRequest, CreateBoxRequest, ErrorBody, LabelRequest,
    LabelsResponse, LogEntry, LogsResponse, StatusResponse, MAX_LABELS,
};
use boxd_net::secrets::SecretRules;
use boxd_runtime::{BoxSpec, Limits};
use boxd_store::{AuditFilter, BoxRow, BoxState, NewBox};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Names that are route literals under `/v2/box/`.
const RESERVED_NAMES: [&str; 3] = ["snapshots", "settings", "from-snapshot"];

const MAX_METADATA_KEYS: usize = 32;

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "box name {name:?} must be 1 to 63 characters of letters, digits, '-', '_' and '.'"
        )));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(ApiError::bad_request(format!(
            "box name {name:?} is reserved (it is an API path)"
        )));
    }
    Ok(())
}

fn check_labels(labels: &[String]) -> ApiResult<BTreeMap<String, String>> {
    let mut set = BTreeMap::new();
    for label in labels {
        check_label(label).map_err(ApiError::bad_request)?;
        set.insert(label.clone(), String::new());
    }
    if set.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!(
            "a box carries at most {MAX_LABELS} labels, got {}",
            set.len()
        )));
    }
    Ok(set)
}

fn check_metadata(meta: &BTreeMap<String, String>) -> ApiResult<()> {
    if meta.len() > MAX_METADATA_KEYS {
        return Err(ApiError::bad_request(format!(
            "metadata has {} keys; at most {MAX_METADATA_KEYS} are allowed",
            meta.len()
        )));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > 64 || v.len() > 512 {
            return Err(ApiError::bad_request(format!(
                "metadata key {k:?}: keys are 1-64 bytes and values at most 512 bytes"
            )));
        }
    }
    Ok(())
}

/// The features a create request asks for that this boxd does not have.
fn refuse_later_features(req: &CreateBoxRequest) -> ApiResult<()> {
    fn set(v: &Option<Value>) -> bool {
        v.as_ref().is_some_and(|v| match v {
            Value::Null => false,
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        })
    }
    let checks: [(bool, &str); 6] = [
        (
            req.agent.is_some() || req.model.is_some() || req.agent_api_key.is_some(),
            "coding agents (agent, model)",
        ),
        (set(&req.custom_runner), "custom agent harnesses"),
        (
            req.github_token.is_some()
                || req.git_user_name.is_some()
                || req.git_user_email.is_some(),
            "git integration",
        ),
        (req.skills.as_ref().is_some_and(|s| !s.is_empty()), "skills"),
        (
            req.mcp_servers.as_ref().is_some_and(|s| !s.is_empty()),
            "MCP servers",
        ),
        (req.browser == Some(true), "browser boxes"),
    ];
    match checks.iter().find(|(asked, _)| *asked) {
        Some((_, feature)) => Err(ApiError::not_implemented(feature)),
        None => Ok(()),
    }
}

/// The box's attach headers (the team's merged with its own, its own
/// winning for a pattern) and placeholder secrets, validated. Secrets are
/// env vars in the box, so their names must be free and allowed there.
fn secret_rules(
    st: &AppState,
    caller: &Caller,
    req: &CreateBoxRequest,
    env: &BTreeMap<String, String>,
) -> ApiResult<SecretRules> {
    let own = parse_attach_headers(req.attach_headers.as_ref().map(|w| &w.0))?;
    let secrets = parse_secrets(req.secrets.as_ref().map(|w| &w.0))?;
    if (!own.is_empty() || !secrets.is_empty()) && st.network.is_none() {
        return Err(ApiError::bad_request(
            "attach_headers and secrets need box networking, which is disabled on this boxd ([network] enabled = false)",
        ));
    }
    for s in &secrets {
        if env.contains_key(&s.name) {
            return Err(ApiError::bad_request(format!(
                "secret {:?} is also an environment variable: the box's env var holds the secret's placeholder, pick one",
                s.name
            )));
        }
        if boxd_runtime::env::BLOCKED_ENV.contains(&s.name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "secret {:?}: this environment variable cannot be set in a box",
                s.name
            )));
        }
    }
    let team = if st.network.is_some() {
        st.secrets.team_rules(&st.store, &caller.team_id)?
    } else {
        Vec::new()
    };
    SecretRules::new(team, own, secrets).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The longest `ttl` (3 days, as Upstash), also the default of an
/// ephemeral box.
pub const MAX_TTL_SECS: u64 = 259_200;

/// When a box created by `req` expires (unix ms): the earlier of `ttl`
/// (seconds) and `timeout` (ms); an ephemeral box without either lives
/// `MAX_TTL_SECS`.
fn expiry(req: &CreateBoxRequest, now_ms: i64) -> ApiResult<Option<i64>> {
    let mut lifetimes_ms = Vec::new();
    if let Some(ttl) = req.ttl {
        if ttl == 0 || ttl > MAX_TTL_SECS {
            return Err(ApiError::bad_request(format!(
                "ttl must be 1 to {MAX_TTL_SECS} seconds, got {ttl}"
            )));
        }
        lifetimes_ms.push(ttl * 1000);
    }
    if let Some(timeout) = req.timeout {
        if timeout == 0 || timeout > MAX_TTL_SECS * 1000 {
            return Err(ApiError::bad_request(format!(
                "timeout must be 1 to {} milliseconds, got {timeout}",
                MAX_TTL_SECS * 1000
            )));
        }
        lifetimes_ms.push(timeout);
    }
    if lifetimes_ms.is_empty() && req.ephemeral == Some(true) {
        lifetimes_ms.push(MAX_TTL_SECS * 1000);
    }
    Ok(lifetimes_ms.into_iter().min().map(|ms| now_ms + ms as i64))
}

/// An init command as the API accepts it.
pub(crate) fn check_init_command(cmd: &str) -> ApiResult<()> {
    if cmd.trim().is_empty() || cmd.len() > 65_536 || cmd.contains('\0') {
        return Err(ApiError::bad_request(
            "init_command must be a non-empty shell command of at most 64 KiB without NUL bytes",
        ));
    }
    Ok(())
}

fn new_box_id() -> ApiResult<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the random number generator failed: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("box-{hex}"))
}

#[utoipa::path(post, path = "/v2/box", tag = "boxes", request_body = CreateBoxRequest,
    responses((status = 200, body = BoxData), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<CreateBoxRequest>,
) -> ApiResult<Json<BoxData>> {
    create_box(st, caller, req).await
}

#[utoipa::path(post, path = "/v2/box/from-snapshot", tag = "snapshots", request_body = CreateBoxRequest,
    responses((status = 200, body = BoxData), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
/// Creates a box whose filesystem starts as the snapshot's (`snapshot_id`:
/// id or name) and whose env, size, network policy, allow_net and
/// metadata default to the snapshot's; fields of the request win.
pub async fn from_snapshot(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<CreateBoxRequest>,
) -> ApiResult<Json<BoxData>> {
    if req.snapshot_id.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request("snapshot_id is required"));
    }
    create_box(st, caller, req).await
}

/// Smallest and largest disk limits a box may ask for, in MiB.
const DISK_MIB: std::ops::RangeInclusive<u64> = 64..=(1 << 30);

/// The box's disk limit: the request's, else the snapshot's, else its
/// size's default; `None` when the storage pool enforces no limits (then
/// asking for one is an error, not a silent no-op).
fn disk_limit(
    st: &AppState,
    req: &CreateBoxRequest,
    from_snapshot: Option<u64>,
    size: boxd_api::BoxSize,
) -> ApiResult<Option<u64>> {
    if let Some(mib) = req.disk_mib {
        if !DISK_MIB.contains(&mib) {
            return Err(ApiError::bad_request(format!(
                "disk_mib {mib}: a box's disk is {} MiB to {} MiB",
                DISK_MIB.start(),
                DISK_MIB.end()
            )));
        }
    }
    let pool = st.runtime.storage();
    if !pool.enforces_limits() {
        if req.disk_mib.is_some() {
            return Err(ApiError::bad_request(format!(
                "disk_mib: this daemon cannot enforce disk limits ({})",
                pool.no_limits_reason().unwrap_or("no btrfs storage pool")
            )));
        }
        return Ok(None);
    }
    Ok(Some(
        req.disk_mib.or(from_snapshot).unwrap_or(size.disk_mib()),
    ))
}

async fn create_box(
    st: Arc<AppState>,
    caller: Caller,
    req: CreateBoxRequest,
) -> ApiResult<Json<BoxData>> {
    let started = Instant::now();
    refuse_later_features(&req)?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    let snapshot = match req.snapshot_id.as_deref().filter(|s| !s.is_empty()) {
        Some(sid) => Some(crate::api::snapshots::Restorable::of(
            crate::api::snapshots::find(&st, &caller, sid)?,
        )?),
        None => None,
    };
    let labels = check_labels(req.labels.as_deref().unwrap_or_default())?;
    let mut metadata = snapshot
        .as_ref()
        .map(|s| s.spec.metadata.clone())
        .unwrap_or_default();
    metadata.extend(req.metadata.clone().unwrap_or_default());
    check_metadata(&metadata)?;
    let size = req
        .size
        .or(snapshot.as_ref().map(|s| s.spec.size))
        .unwrap_or_default();
    let disk_mib = disk_limit(
        &st,
        &req,
        snapshot.as_ref().and_then(|s| s.spec.disk_mib),
        size,
    )?;
    let runtime = match (&snapshot, &req.runtime) {
        (Some(s), Some(r)) if *r != s.row.runtime => {
            return Err(ApiError::bad_request(format!(
                "snapshot {} was taken from a {} box; a box restored from it runs {} (got runtime {r:?})",
                s.row.id, s.row.runtime, s.row.runtime
            )))
        }
        (Some(s), _) => s.row.runtime.clone(),
        (None, r) => r.clone().unwrap_or_else(|| "host".into()),
    };
    // The team's global env first, then the snapshot's; the box's own values win.
    let mut env = st.store.team_env(&caller.team_id)?;
    if let Some(s) = &snapshot {
        env.extend(s.spec.env.clone());
    }
    env.extend(req.env_vars.clone().unwrap_or_default());
    boxd_runtime::env::validate(&env)?;
    let (policy_in, allow_in) = match &snapshot {
        Some(s) => (
            req.network_policy.clone().or(s.spec.network_policy.clone()),
            req.allow_net.clone().or(s.spec.allow_net.clone()),
        ),
        None => (req.network_policy.clone(), req.allow_net.clone()),
    };
    let (network_policy, allow_net) = check_egress(policy_in.as_ref(), allow_in.as_deref())?;
    let rules = secret_rules(&st, &caller, &req, &env)?;
    let (attach_headers, secrets) = crate::secrets::public_view(&rules);
    let volumes = super::volumes::parse_box_volumes(&st, &caller, req.volumes.as_deref())?;
    if let Some(cmd) = &req.init_command {
        check_init_command(cmd)?;
    }
    let expires_at = expiry(&req, crate::state::now_ms())?;

    let id = new_box_id()?;
    let meta = BoxMeta {
        size,
        disk_mib,
        keep_alive: req.keep_alive.unwrap_or(false),
        metadata,
        network_policy,
        allow_net,
        attach_headers,
        secrets,
        volumes: volumes.iter().map(|(_, m)| m.clone()).collect(),
        snapshot_id: snapshot.as_ref().map(|s| s.row.id.clone()),
        init_command: req.init_command.clone(),
        expires_at,
        ephemeral: req.ephemeral == Some(true),
    };
    let spec_json = serde_json::to_value(&meta)
        .map_err(|e| ApiError::internal(format!("encode the box spec: {e}")))?;
    let new_box = NewBox {
        id: id.clone(),
        team_id: caller.team_id.clone(),
        name: req.name.clone(),
        state: BoxState::Creating,
        runtime: runtime.clone(),
        spec: spec_json,
        labels,
    };
    let mut row = match &snapshot {
        // The record that holds the snapshot is written while no delete
        // can free it, and only if it is still there.
        Some(s) => {
            let _held = st.snapshot_refs.lock().unwrap_or_else(|p| p.into_inner());
            if st.store.get_snapshot(&caller.team_id, &s.row.id)?.is_none() {
                return Err(ApiError::not_found(format!(
                    "snapshot {} not found",
                    s.row.id
                )));
            }
            st.store.insert_box(&new_box)?
        }
        None => st.store.insert_box(&new_box)?,
    };

    // A volume deleted since it was checked fails the create here.
    if let Err(e) = st
        .store
        .attach_volumes(&id, &super::volumes::mount_rows(&id, &volumes))
        .map_err(ApiError::from)
        .and_then(|()| {
            st.secrets
                .store_box_rules(&st.store, &caller.team_id, &id, &rules)
        })
    {
        if let Err(del) = st.store.delete_box(&caller.team_id, &id) {
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
    }
    for s in rules.secrets() {
        spec.env.insert(s.name.clone(), s.placeholder.clone());
    }
    st.secrets.apply_trust(&mut spec);
    for (row, m) in &volumes {
        spec.volumes.push(boxd_runtime::VolumeMount {
            source: st.runtime.volume_dir(&row.id)?,
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
    let rt = st.runtime.clone();
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
            st.attach_network(&id, &meta, slot, pid, rules, false).await,
        ))
    };
    let (created, networked) = tokio::join!(creating, networking);
    let created =
        created.map_err(|e| ApiError::internal(format!("the create task failed: {e}")))?;
    // Nothing of a failed create stays (its veth goes with its netns).
    let restored = snapshot.is_some();
    let forget = |st: &AppState| {
        if let (Some(net), Some((slot, _))) = (&st.network, &networked) {
            net.detach(&id, *slot);
        }
        if let Err(del) = st.store.delete_box(&caller.team_id, &id) {
            tracing::error!(box_id = %id, error = %del, "cannot remove a failed box's record");
        }
        if restored {
            crate::api::snapshots::collect(st);
        }
        st.metrics.create_done(false, started.elapsed());
    };
    let handle = match created {
        Ok(handle) => handle,
        Err(e) => {
            forget(&st);
            return Err(e.into());
        }
    };
    let live = LiveBox::new(handle);
    let network_error = match &networked {
        Some((_, Err(e))) => Some(ApiError::new(e.status, e.message.clone())),
        Some((_, Ok(()))) => None,
        None => Some(ApiError::internal(
            "the box started without reporting its process",
        )),
    };
    if let Some(e) = network_error {
        let rt = st.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || rt.destroy(live.handle)).await;
        forget(&st);
        return Err(e);
    }
    let live = Arc::new(live);
    st.insert_live_arc(live.clone());
    st.store.set_box_state(&id, BoxState::Running)?;
    row.state = BoxState::Running;
    if let Some(at) = expires_at {
        st.set_expiry(&id, at);
    }
    let took = started.elapsed();
    st.metrics.create_done(true, took);
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "box.create",
        json!({
            "name": row.name,
            "runtime": row.runtime,
            "size": size.as_str(),
            "volumes": meta.volumes,
            "duration_ms": took.as_millis() as u64,
        }),
    );
    tracing::info!(box_id = %id, took_ms = took.as_millis() as u64, "box created");
    if let Some(cmd) = &meta.init_command {
        st.run_init(&row, &live, cmd, "create");
    }
    Ok(Json(st.data(&row)))
}

#[utoipa::path(put, path = "/v2/box/{id}/config/network-policy", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    request_body = Object,
    responses((status = 200, body = BoxData), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
/// Changes a box's network policy (Upstash shape; `allow_net` may be sent
/// alongside as a boxd extension). The next DNS query and connection of
/// the box use it; connections already open keep going.
pub async fn set_network_policy(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Json<BoxData>> {
    let mut row = st.find(&caller, &id)?;
    let mut meta = BoxMeta::of(&row);
    let allow_net: Option<Vec<String>> = match body.get("allow_net") {
        None => meta.allow_net.clone(),
        Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|_| ApiError::bad_request("allow_net: expected a list of strings"))?,
        ),
    };
    let mut policy = body.clone();
    if let Value::Object(m) = &mut policy {
        m.remove("allow_net");
    }
    let (network_policy, allow_net) = check_egress(Some(&policy), allow_net.as_deref())?;
    meta.network_policy = network_policy;
    meta.allow_net = allow_net;
    row.spec = serde_json::to_value(&meta)
        .map_err(|e| ApiError::internal(format!("encode the box spec: {e}")))?;
    st.store.update_box_spec(&row.id, &row.spec)?;
    if let (Some(net), Some(policy), Some(live)) =
        (&st.network, st.egress_policy(&meta), st.live(&row.id))
    {
        net.set_policy(&row.id, live.handle.record().slot, policy);
    }
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "box.network_policy",
        json!({
            "network_policy": meta.network_policy.clone().unwrap_or_else(|| json!({"mode": "allow-all"})),
            "allow_net": meta.allow_net,
        }),
    );
    Ok(Json(st.data(&row)))
}

#[utoipa::path(get, path = "/v2/box/{id}", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = BoxData), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BoxData>> {
    Ok(Json(st.data(&st.find(&caller, &id)?)))
}

#[utoipa::path(get, path = "/v2/box/{id}/status", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = StatusResponse), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusResponse>> {
    let row = st.find(&caller, &id)?;
    Ok(Json(StatusResponse {
        status: status_of(row.state),
        total_cpu_ns: st.live(&row.id).and_then(|l| l.cpu_ns()),
        disk_used_bytes: st.runtime.disk_used(&row.id),
    }))
}

/// The query of `GET /v2/box` (documentation: the handler reads the
/// pairs itself, since `metadata.KEY` names are open-ended).
#[derive(Deserialize, utoipa::IntoParams)]
#[allow(dead_code)]
pub struct ListQuery {
    /// Only boxes carrying this label.
    label: Option<String>,
    /// `metadata.KEY=VALUE` (repeatable, any key): only boxes whose
    /// metadata has every given pair.
    #[serde(rename = "metadata.KEY")]
    #[param(rename = "metadata.KEY")]
    metadata: Option<String>,
}

/// Label filters (label, "") and metadata pairs that must all match.
type ListFilters = (Vec<(String, String)>, BTreeMap<String, String>);

/// The list filters: labels and `metadata.KEY=VALUE` pairs. Unknown
/// parameters are ignored (as before); an empty metadata key is a 400.
fn list_filters(pairs: Vec<(String, String)>) -> ApiResult<ListFilters> {
    let mut labels = Vec::new();
    let mut metadata = BTreeMap::new();
    for (k, v) in pairs {
        if k == "label" {
            labels.push((v, String::new()));
        } else if let Some(key) = k.strip_prefix("metadata.") {
            if key.is_empty() {
                return Err(ApiError::bad_request(
                    "metadata filter: use metadata.KEY=VALUE with a non-empty KEY",
                ));
            }
            if let Some(old) = metadata.insert(key.to_string(), v.clone()) {
                if old != v {
                    return Err(ApiError::bad_request(format!(
                        "metadata filter: metadata.{key} is given twice with different values"
                    )));
                }
            }
        }
    }
    Ok((labels, metadata))
}

#[utoipa::path(get, path = "/v2/box", tag = "boxes", params(ListQuery),
    responses((status = 200, body = [BoxData]), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Vec<BoxData>>> {
    let (labels, metadata) = list_filters(pairs)?;
    let rows = st.store.list_boxes(&caller.team_id, &labels)?;
    Ok(Json(
        rows.iter()
            .filter(|r| r.state != BoxState::Deleted)
            .filter(|r| {
                metadata.is_empty() || {
                    let meta = BoxMeta::of(r);
                    metadata
                        .iter()
                        .all(|(k, v)| meta.metadata.get(k).is_some_and(|have| have == v))
                }
            })
            .map(|r| st.data(r))
            .collect(),
    ))
}

/// Destroys the box and removes its record; the audit trail keeps its events.
async fn delete_row(st: &Arc<AppState>, caller: &Caller, row: &BoxRow) -> ApiResult<()> {
    remove_box(st, Some(caller), row, "box.delete", json!({})).await
}

/// The one delete path (an API delete, an expiry): records the delete
/// (state `deleted`: no longer listed or found, finished at the next start
/// if boxd dies now), destroys the box, removes its record and appends the
/// `kind` audit event.
pub(crate) async fn remove_box(
    st: &Arc<AppState>,
    caller: Option<&Caller>,
    row: &BoxRow,
    kind: &str,
    data: Value,
) -> ApiResult<()> {
    st.store.set_box_state(&row.id, BoxState::Deleted)?;
    let handle = match st.remove_live(&row.id) {
        Some(live) => Some(live),
        // Not live here (e.g. its record is all that is left): adopt what
        // the runtime still has so it is cleaned up too.
        None => st
            .runtime
            .adopt(&row.id)
            .ok()
            .map(|h| Arc::new(LiveBox::new(h))),
    };
    if let Some(live) = handle {
        // A frozen box is thawed so its processes die at once.
        if row.state == BoxState::Paused {
            let _ = live.handle.thaw();
        }
        if let Some(net) = &st.network {
            net.detach(&row.id, live.handle.record().slot);
        }
        let rt = st.runtime.clone();
        let live2 = live.clone();
        let destroyed = tokio::task::spawn_blocking(move || rt.destroy(&live2.handle))
            .await
            .map_err(|e| ApiError::internal(format!("the delete task failed: {e}")))?;
        if let Err(e) = destroyed {
            st.insert_live_arc(live);
            if let Err(e) = st.store.set_box_state(&row.id, row.state) {
                tracing::error!(box_id = %row.id, error = %e, "cannot restore a box's state after a failed delete");
            }
            return Err(ApiError::internal(format!(
                "could not remove box {}: {e}; retry the delete",
                row.id
            )));
        }
    }
    st.store.delete_box(&row.team_id, &row.id)?;
    st.forget_expiry(&row.id);
    if BoxMeta::of(row).snapshot_id.is_some() {
        crate::api::snapshots::collect(st);
    }
    st.audit(&row.team_id, caller, Some(row), kind, data);
    tracing::info!(box_id = %row.id, kind, "box deleted");
    Ok(())
}

#[utoipa::path(delete, path = "/v2/box/{id}", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = st.find(&caller, &id)?;
    delete_row(&st, &caller, &row).await?;
    Ok(Json(json!({"id": row.id, "deleted": true})))
}

#[utoipa::path(delete, path = "/v2/box", tag = "boxes", request_body = BulkDeleteRequest,
    responses((status = 200, description = "all deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete_many(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<BulkDeleteRequest>,
) -> ApiResult<Json<Value>> {
    if req.ids.is_empty() {
        return Err(ApiError::bad_request("ids must list at least one box"));
    }
    // All or nothing: every box must exist before any is deleted; a box
    // named twice (by id or name) is deleted once.
    let mut rows: Vec<BoxRow> = Vec::with_capacity(req.ids.len());
    for id in &req.ids {
        let row = st.find(&caller, id)?;
        if !rows.iter().any(|r| r.id == row.id) {
            rows.push(row);
        }
    }
    for row in &rows {
        delete_row(&st, &caller, row).await?;
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    Ok(Json(json!({ "deleted": ids })))
}

fn labels_of(row: &BoxRow) -> LabelsResponse {
    LabelsResponse {
        labels: row.labels.keys().cloned().collect(),
    }
}

#[utoipa::path(post, path = "/v2/box/{id}/config/labels", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")), request_body = LabelRequest,
    responses((status = 200, body = LabelsResponse), (status = 409, body = ErrorBody)))]
pub async fn add_label(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<LabelRequest>,
) -> ApiResult<Json<LabelsResponse>> {
    check_label(&req.label).map_err(ApiError::bad_request)?;
    let mut row = st.find(&caller, &id)?;
    if row.labels.contains_key(&req.label) {
        return Err(ApiError::conflict("Label already added"));
    }
    if row.labels.len() >= MAX_LABELS {
        return Err(ApiError::bad_request(format!(
            "a box carries at most {MAX_LABELS} labels; remove one first"
        )));
    }
    row.labels.insert(req.label.clone(), String::new());
    st.store.update_box_labels(&row.id, &row.labels)?;
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "box.label_add",
        json!({"label": req.label}),
    );
    Ok(Json(labels_of(&row)))
}

#[utoipa::path(delete, path = "/v2/box/{id}/config/labels/{label}", tag = "boxes",
    params(("id" = String, Path, description = "box id or name"), ("label" = String, Path)),
    responses((status = 200, body = LabelsResponse), (status = 404, body = ErrorBody)))]
pub async fn remove_label(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path((id, label)): Path<(String, String)>,
) -> ApiResult<Json<LabelsResponse>> {
    let mut row = st.find(&caller, &id)?;
    if row.labels.remove(&label).is_none() {
        return Err(ApiError::not_found(format!(
            "box {} has no label {label:?}",
            row.id
        )));
    }
    st.store.update_box_labels(&row.id, &row.labels)?;
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "box.label_remove",
        json!({"label": label}),
    );
    Ok(Json(labels_of(&row)))
}

#[utoipa::path(get, path = "/v2/box/{id}/config/labels", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = LabelsResponse)))]
pub async fn list_labels(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<LabelsResponse>> {
    Ok(Json(labels_of(&st.find(&caller, &id)?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LogsQuery {
    /// Entries to skip (oldest first).
    offset: Option<u32>,
    /// At most this many entries (default 100, at most 1000).
    limit: Option<u32>,
}

/// One human line for an audit event.
fn log_line(kind: &str, data: &Value) -> (String, String) {
    let s = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("");
    let n = |k: &str| data.get(k).and_then(Value::as_i64).unwrap_or(0);
    // Network decisions: refusals are warnings.
    let decided = || {
        if s("decision") == "allow" {
            "info"
        } else {
            "warn"
        }
        .to_string()
    };
    match kind {
        "exec" => {
            let code = n("exit_code");
            let cmd = data
                .get("command")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let level = if code == 0 { "info" } else { "warn" };
            (
                level.into(),
                format!("exec `{cmd}` exited {code} in {} ms", n("duration_ms")),
            )
        }
        "file.write" => (
            "info".into(),
            format!("wrote {} ({} bytes)", s("path"), n("bytes")),
        ),
        "file.upload" => (
            "info".into(),
            format!("uploaded {} files ({} bytes)", n("files"), n("bytes")),
        ),
        "box.create" => (
            "info".into(),
            format!("box created ({}, {})", s("runtime"), s("size")),
        ),
        "box.failed" => ("error".into(), format!("box failed: {}", s("reason"))),
        "net.dns" => (
            decided(),
            format!(
                "dns {} {}: {} ({}) {}",
                s("qtype"),
                s("name"),
                s("decision"),
                s("rule"),
                s("rcode")
            ),
        ),
        "net.connect" => {
            let dest = match data.get("name").and_then(Value::as_str) {
                Some(name) => format!("{name}:{}", n("port")),
                None => format!("{}:{}", s("dest_ip"), n("port")),
            };
            (
                decided(),
                format!(
                    "connect {dest}: {} ({}), {} bytes up, {} down, {} ms",
                    s("decision"),
                    s("rule"),
                    n("bytes_up"),
                    n("bytes_down"),
                    n("duration_ms")
                ),
            )
        }
        "net.http" => {
            let names = |k: &str| {
                data.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|v| match v {
                                Value::String(s) => s.clone(),
                                other => other
                                    .get("secret")
                                    .and_then(Value::as_str)
                                    .map(|secret| {
                                        let place = other.get("where").and_then(Value::as_str);
                                        format!("{secret} in {}", place.unwrap_or("?"))
                                    })
                                    .unwrap_or_default(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let mut line = format!(
                "https {} {}{} → {} in {} ms",
                s("method"),
                s("host"),
                s("path"),
                n("status"),
                n("latency_ms")
            );
            let mut level = if n("status") >= 400 { "warn" } else { "info" };
            for (key, label) in [
                ("injected_headers", "injected"),
                ("substituted_secrets", "substituted"),
                ("violations", "VIOLATION: placeholder of"),
            ] {
                let list = names(key);
                if !list.is_empty() {
                    line.push_str(&format!("; {label} {list}"));
                    if key == "violations" {
                        level = "warn";
                    }
                }
            }
            if !s("error").is_empty() {
                line.push_str(&format!("; error: {}", s("error")));
                level = "warn";
            }
            (level.into(), line)
        }
        other => ("info".into(), format!("{other} {data}")),
    }
}

#[utoipa::path(get, path = "/v2/box/{id}/logs", tag = "boxes",
    params(("id" = String, Path, description = "box id or name"), LogsQuery),
    responses((status = 200, body = LogsResponse)))]
pub async fn logs(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<LogsResponse>> {
    let row = st.find(&caller, &id)?;
    let offset = q.offset.unwrap_or(0).min(100_000);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = st.store.list_audit(&AuditFilter {
        team_id: caller.team_id.clone(),
        box_id: Some(row.id.clone()),
        limit: offset + limit,
        ..Default::default()
    })?;
    let logs = events
        .iter()
        .skip(offset as usize)
        .map(|e| {
            let (level, message) = log_line(&e.kind, &e.data);
            let source = if e.kind.starts_with("box.") {
                "system"
            } else {
                "user"
            };
            LogEntry {
                timestamp: e.ts / 1000,
                level,
                source: source.into(),
                message,
            }
        })
        .collect();
    Ok(Json(LogsResponse { logs }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filters_take_labels_and_metadata_pairs() {
        let q = |s: &[(&str, &str)]| {
            list_filters(
                s.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let (labels, meta) = q(&[
            ("label", "a"),
            ("metadata.owner", "agent"),
            ("metadata.team", "x y"),
            ("other", "ignored"),
        ])
        .unwrap();
        assert_eq!(labels, vec![("a".to_string(), String::new())]);
        assert_eq!(meta.len(), 2);
        assert_eq!(meta["team"], "x y");
        assert!(q(&[("metadata.", "x")]).is_err());
        assert!(q(&[("metadata.a", "x"), ("metadata.a", "y")]).is_err());
    }

    #[test]
    fn intercepted_requests_become_log_lines_with_names_only() {
        let (level, line) = log_line(
            "net.http",
            &json!({
                "method": "POST", "host": "api.example.com", "path": "/v1/x", "status": 200,
                "latency_ms": 12, "injected_headers": ["Authorization"],
                "substituted_secrets": ["OPENAI_API_KEY"], "violations": [],
            }),
        );
        assert_eq!(level, "info");
        assert_eq!(
            line,
            "https POST api.example.com/v1/x → 200 in 12 ms; injected Authorization; substituted OPENAI_API_KEY"
        );
        let (level, line) = log_line(
            "net.http",
            &json!({
                "method": "GET", "host": "evil.example.com", "path": "/", "status": 200,
                "latency_ms": 3, "violations": [{"secret": "OPENAI_API_KEY", "where": "header"}],
            }),
        );
        assert_eq!(level, "warn");
        assert!(
            line.ends_with("VIOLATION: placeholder of OPENAI_API_KEY in header"),
            "{line}"
        );
    }
}
