//! Box endpoints: create (fresh or from a snapshot), get (by id or name),
//! list, delete, status, labels, network policy and the box's log.
//!
//! Owns decoding the Upstash create body into the service's `CreateBox`
//! (refusing unknown keys with a 400 naming them, and with 501 the fields
//! whose features are not built) and encoding boxes. The rules of a box are the core's.

use super::error::{ApiError, ApiResult};
use super::{box_data, decode, size_from_wire, status_of, Auth, JsonObject, Svc};
use axum::extract::{Path, Query};
use axum::Json;
use boxd_api::{
    unknown_create_fields, BoxData, BulkDeleteRequest, CreateBoxRequest, ErrorBody, LabelRequest,
    LabelsResponse, LogEntry, LogsResponse, StatusResponse,
};
use boxd_core::{AgentRequest, BoxFilter, CreateBox, MountRequest, WriteOnly};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The features a create request asks for that this boxd does not have.
fn refuse_later_features(req: &CreateBoxRequest) -> ApiResult<()> {
    let checks: [(bool, &str); 2] = [
        (
            req.github_token.is_some()
                || req.git_user_name.is_some()
                || req.git_user_email.is_some(),
            "git integration",
        ),
        (req.browser == Some(true), "browser boxes"),
    ];
    match checks.iter().find(|(asked, _)| *asked) {
        Some((_, feature)) => Err(ApiError::not_implemented(feature)),
        None => Ok(()),
    }
}

/// The create body: an object of known fields only. A key that is no
/// create field (a misspelt `allowNet`, an SDK option name such as
/// `networkPolicy`) is a 400 naming it, so a security setting is never
/// dropped silently.
fn create_body(body: Map<String, Value>) -> ApiResult<CreateBoxRequest> {
    let unknown = unknown_create_fields(&body);
    if !unknown.is_empty() {
        let named: Vec<String> = unknown
            .iter()
            .map(|(k, meant)| {
                let k: String = k.chars().take(64).collect();
                match meant {
                    Some(m) => format!("{k:?} (did you mean {m:?}?)"),
                    None => format!("{k:?}"),
                }
            })
            .collect();
        return Err(ApiError::bad_request(format!(
            "unknown field{} in the create body: {}; nothing was created",
            if named.len() == 1 { "" } else { "s" },
            named.join(", ")
        )));
    }
    decode(Value::Object(body))
}

/// The service's create from the Upstash body.
fn create_of(req: CreateBoxRequest) -> ApiResult<CreateBox> {
    refuse_later_features(&req)?;
    let volumes = req
        .volumes
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<MountRequest>(v).map_err(|e| {
                ApiError::bad_request(format!(
                    "volumes[{i}]: expected {{\"name\", \"path\", \"read_only\"?}}: {e}"
                ))
            })
        })
        .collect::<ApiResult<_>>()?;
    let agent = AgentRequest {
        agent: req.agent,
        model: req.model,
        api_key: req.agent_api_key.map(|k| WriteOnly(k.0)),
        custom_runner: req.custom_runner.filter(|v| !v.is_null()),
        skills: req.skills.unwrap_or_default(),
        mcp_servers: req
            .mcp_servers
            .filter(|w| !w.0.is_null())
            .map(|w| WriteOnly(w.0)),
    };
    Ok(CreateBox {
        name: req.name,
        runtime: req.runtime,
        size: req.size.map(size_from_wire),
        disk_mib: req.disk_mib,
        labels: req.labels.unwrap_or_default(),
        metadata: req.metadata.unwrap_or_default(),
        env: req.env_vars.unwrap_or_default(),
        network_policy: req.network_policy,
        allow_net: req.allow_net,
        attach_headers: req.attach_headers.map(|w| w.0),
        secrets: req.secrets.map(|w| w.0),
        volumes,
        init_command: req.init_command,
        ttl_secs: req.ttl,
        timeout_ms: req.timeout,
        ephemeral: req.ephemeral == Some(true),
        keep_alive: req.keep_alive == Some(true),
        snapshot: req.snapshot_id,
        agent,
    })
}

#[utoipa::path(post, path = "/v2/box", tag = "boxes", request_body = CreateBoxRequest,
    responses((status = 200, body = BoxData), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 501, body = ErrorBody)))]
pub async fn create(
    svc: Svc,
    Auth(caller): Auth,
    JsonObject(body): JsonObject<Map<String, Value>>,
) -> ApiResult<Json<BoxData>> {
    let req = create_body(body)?;
    Ok(Json(box_data(
        svc.create_box(&caller, create_of(req)?).await?,
    )))
}

#[utoipa::path(post, path = "/v2/box/from-snapshot", tag = "snapshots", request_body = CreateBoxRequest,
    responses((status = 200, body = BoxData), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
/// Creates a box whose filesystem starts as the snapshot's (`snapshot_id`:
/// id or name) and whose env, size, network policy, allow_net and
/// metadata default to the snapshot's; fields of the request win.
pub async fn from_snapshot(
    svc: Svc,
    Auth(caller): Auth,
    JsonObject(body): JsonObject<Map<String, Value>>,
) -> ApiResult<Json<BoxData>> {
    let req = create_body(body)?;
    if req.snapshot_id.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request("snapshot_id is required"));
    }
    Ok(Json(box_data(
        svc.create_box(&caller, create_of(req)?).await?,
    )))
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
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(mut policy): JsonObject<Value>,
) -> ApiResult<Json<BoxData>> {
    let allow_net = match policy.as_object_mut().and_then(|m| m.remove("allow_net")) {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(serde_json::from_value(v).map_err(|_| {
            ApiError::bad_request("allow_net: expected a list of strings")
        })?)),
    };
    let info = svc.set_network_policy(&caller, &id, Some(&policy), allow_net)?;
    Ok(Json(box_data(info)))
}

#[utoipa::path(get, path = "/v2/box/{id}", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = BoxData), (status = 404, body = ErrorBody)))]
pub async fn get(svc: Svc, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<BoxData>> {
    Ok(Json(box_data(svc.get_box(&caller, &id)?)))
}

#[utoipa::path(get, path = "/v2/box/{id}/status", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = StatusResponse), (status = 404, body = ErrorBody)))]
pub async fn status(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusResponse>> {
    let info = svc.get_box(&caller, &id)?;
    Ok(Json(StatusResponse {
        status: status_of(info.row.state, info.in_flight),
        total_cpu_ns: info.total_cpu_ns,
        disk_used_bytes: info.disk_used_bytes,
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

/// The list filters: labels and `metadata.KEY=VALUE` pairs. Unknown
/// parameters are ignored (as before); an empty metadata key is a 400.
fn list_filters(pairs: Vec<(String, String)>) -> ApiResult<BoxFilter> {
    let mut labels = Vec::new();
    let mut metadata = BTreeMap::new();
    for (k, v) in pairs {
        if k == "label" {
            labels.push(v);
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
    Ok(BoxFilter { labels, metadata })
}

#[utoipa::path(get, path = "/v2/box", tag = "boxes", params(ListQuery),
    responses((status = 200, body = [BoxData]), (status = 400, body = ErrorBody)))]
pub async fn list(
    svc: Svc,
    Auth(caller): Auth,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Vec<BoxData>>> {
    let boxes = svc.list_boxes(&caller, &list_filters(pairs)?)?;
    Ok(Json(boxes.into_iter().map(box_data).collect()))
}

#[utoipa::path(delete, path = "/v2/box/{id}", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = svc.delete_box(&caller, &id).await?;
    Ok(Json(json!({"id": id, "deleted": true})))
}

#[utoipa::path(delete, path = "/v2/box", tag = "boxes", request_body = BulkDeleteRequest,
    responses((status = 200, description = "all deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete_many(
    svc: Svc,
    Auth(caller): Auth,
    JsonObject(req): JsonObject<BulkDeleteRequest>,
) -> ApiResult<Json<Value>> {
    let ids = svc.delete_boxes(&caller, &req.ids).await?;
    Ok(Json(json!({ "deleted": ids })))
}

#[utoipa::path(post, path = "/v2/box/{id}/config/labels", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")), request_body = LabelRequest,
    responses((status = 200, body = LabelsResponse), (status = 409, body = ErrorBody)))]
pub async fn add_label(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<LabelRequest>,
) -> ApiResult<Json<LabelsResponse>> {
    let labels = svc.add_label(&caller, &id, &req.label)?;
    Ok(Json(LabelsResponse { labels }))
}

#[utoipa::path(delete, path = "/v2/box/{id}/config/labels/{label}", tag = "boxes",
    params(("id" = String, Path, description = "box id or name"), ("label" = String, Path)),
    responses((status = 200, body = LabelsResponse), (status = 404, body = ErrorBody)))]
pub async fn remove_label(
    svc: Svc,
    Auth(caller): Auth,
    Path((id, label)): Path<(String, String)>,
) -> ApiResult<Json<LabelsResponse>> {
    let labels = svc.remove_label(&caller, &id, &label)?;
    Ok(Json(LabelsResponse { labels }))
}

#[utoipa::path(get, path = "/v2/box/{id}/config/labels", tag = "boxes",
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = LabelsResponse)))]
pub async fn list_labels(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<LabelsResponse>> {
    Ok(Json(LabelsResponse {
        labels: svc.labels(&caller, &id)?,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LogsQuery {
    /// Entries to skip (oldest first).
    offset: Option<u32>,
    /// At most this many entries (default 100, at most 1000).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v2/box/{id}/logs", tag = "boxes",
    params(("id" = String, Path, description = "box id or name"), LogsQuery),
    responses((status = 200, body = LogsResponse)))]
pub async fn logs(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<LogsResponse>> {
    let lines = svc.box_logs(&caller, &id, q.offset, q.limit)?;
    let logs = lines
        .into_iter()
        .map(|l| LogEntry {
            timestamp: l.ts / 1000,
            level: l.level,
            source: l.source,
            message: l.message,
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
        let f = q(&[
            ("label", "a"),
            ("metadata.owner", "agent"),
            ("metadata.team", "x y"),
            ("other", "ignored"),
        ])
        .unwrap();
        assert_eq!(f.labels, vec!["a".to_string()]);
        assert_eq!(f.metadata.len(), 2);
        assert_eq!(f.metadata["team"], "x y");
        assert!(q(&[("metadata.", "x")]).is_err());
        assert!(q(&[("metadata.a", "x"), ("metadata.a", "y")]).is_err());
    }
}
