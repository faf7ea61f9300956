//! The Upstash Box v2 API (and boxd's extensions in its style) over the
//! box service: `/v2/box…`, `/v2/volumes…`, `/v2/audit`.
//!
//! Owns the route table, the API key extractor, the wire encodings of the
//! service's domain types, and the one error mapping (`error`). Each
//! handler decodes, makes one call to `boxd_core::BoxService`, and
//! encodes: a rule a second protocol would need lives in the core, never
//! here.

pub mod agent;
pub mod attach_headers;
pub mod audit;
pub mod boxes;
pub mod error;
pub mod exec;
pub mod files;
pub mod later;
pub mod lifecycle;
pub mod processes;
pub mod settings;
pub mod snapshots;
pub mod volumes;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use boxd_api::{BoxData, BoxSize as WireSize, BoxStatus, SecretInfo as WireSecret, API_KEY_HEADER};
use boxd_core::{BoxInfo, BoxService, BoxSize, BoxState, Caller};
use error::ApiError;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;

/// What every handler is given.
pub type Svc = axum::extract::State<Arc<BoxService>>;

/// The authenticated caller (`X-Box-Api-Key` or `Authorization: Bearer`).
pub struct Auth(pub Caller);

impl FromRequestParts<Arc<BoxService>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        svc: &Arc<BoxService>,
    ) -> Result<Auth, ApiError> {
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
        Ok(Auth(svc.authenticate(key)?))
    }
}

/// A JSON request body that must be an object: serde would otherwise read
/// an array positionally (`["name", ["label"]]` as a create). Syntax
/// errors and non-objects are 400s, fields of the wrong type 422s, each
/// naming the problem.
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonObject<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        // axum's own rejection as it is: the error middleware words it (a
        // body over the limit also gets `Connection: close`, since its rest
        // is never read).
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !value.is_object() {
            let e = ApiError::bad_request("the request body must be a JSON object");
            return Err(e.into_response());
        }
        decode(value)
            .map(JsonObject)
            .map_err(IntoResponse::into_response)
    }
}

/// A JSON object read into `T`; a field of the wrong type is a 422 whose
/// message names the field (`disk_mib: invalid type: …`).
pub fn decode<T: DeserializeOwned>(value: serde_json::Value) -> error::ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = format!("Failed to deserialize the JSON body into the target type: {e}");
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    })
}

/// The wire status of a box: `running` while a call is in flight on it,
/// `idle` when it is up with nothing in flight (as the SDKs know them).
pub fn status_of(state: BoxState, in_flight: usize) -> BoxStatus {
    match state {
        BoxState::Creating => BoxStatus::Creating,
        BoxState::Running if in_flight == 0 => BoxStatus::Idle,
        BoxState::Running => BoxStatus::Running,
        BoxState::Paused => BoxStatus::Paused,
        BoxState::Failed => BoxStatus::Error,
        BoxState::Deleted => BoxStatus::Deleted,
    }
}

pub fn size_from_wire(s: WireSize) -> BoxSize {
    match s {
        WireSize::Small => BoxSize::Small,
        WireSize::Medium => BoxSize::Medium,
        WireSize::Large => BoxSize::Large,
    }
}

fn size_to_wire(s: BoxSize) -> WireSize {
    match s {
        BoxSize::Small => WireSize::Small,
        BoxSize::Medium => WireSize::Medium,
        BoxSize::Large => WireSize::Large,
    }
}

/// The wire form of a box.
pub fn box_data(info: BoxInfo) -> BoxData {
    let BoxInfo {
        row,
        meta,
        disk_used_bytes,
        total_cpu_ns,
        last_activity_ms,
        in_flight,
    } = info;
    BoxData {
        id: row.id,
        status: status_of(row.state, in_flight),
        name: row.name,
        labels: row.labels.into_keys().collect(),
        runtime: row.runtime,
        size: size_to_wire(meta.size),
        disk_mib: meta.disk_mib,
        disk_used_bytes,
        keep_alive: meta.keep_alive,
        created_at: row.created_at / 1000,
        updated_at: row.updated_at / 1000,
        metadata: meta.metadata,
        network_policy: meta
            .network_policy
            .unwrap_or_else(|| json!({"mode": "allow-all"})),
        allow_net: meta.allow_net,
        attach_headers: meta.attach_headers,
        secrets: meta
            .secrets
            .into_iter()
            .map(|(name, s)| {
                let wire = WireSecret {
                    hosts: s.hosts,
                    in_query: s.in_query,
                    in_body: s.in_body,
                };
                (name, wire)
            })
            .collect(),
        volumes: meta
            .volumes
            .into_iter()
            .map(|v| boxd_api::BoxVolume {
                name: v.name,
                path: v.path,
                read_only: v.read_only,
            })
            .collect(),
        agent: meta.agent.agent,
        model: meta.agent.model,
        enabled_skills: meta.agent.skills,
        custom_runner: meta
            .agent
            .custom_runner
            .and_then(|r| serde_json::to_value(r).ok()),
        mcp_servers: meta
            .agent
            .mcp_servers
            .into_iter()
            .filter_map(|m| serde_json::to_value(m).ok())
            .collect(),
        agent_api_key_set: meta.agent.has_api_key,
        ephemeral: meta.ephemeral,
        expires_at: meta.expires_at.map(|ms| ms / 1000),
        total_cpu_ns,
        last_activity_at: last_activity_ms.map(|ms| ms / 1000),
    }
}

/// The Upstash routes; `upload_limit` bounds a multipart upload.
pub fn routes(upload_limit: usize) -> Router<Arc<BoxService>> {
    let mut r = Router::new()
        .route("/v2/audit", get(audit::list))
        .route("/v2/volumes", post(volumes::create).get(volumes::list))
        .route(
            "/v2/volumes/{name}",
            get(volumes::get).delete(volumes::delete),
        )
        .route(
            "/v2/box",
            post(boxes::create)
                .get(boxes::list)
                .delete(boxes::delete_many),
        )
        .route("/v2/box/settings/attach-headers", get(attach_headers::list))
        .route(
            "/v2/box/settings/attach-headers/{pattern}",
            put(attach_headers::set).delete(attach_headers::delete),
        )
        .route(
            "/v2/box/settings/env",
            get(settings::list).put(settings::replace),
        )
        .route(
            "/v2/box/settings/env/{key}",
            put(settings::set).delete(settings::delete),
        )
        .route(
            "/v2/box/snapshots",
            get(snapshots::list).delete(snapshots::delete_many),
        )
        .route(
            "/v2/box/snapshots/{sid}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route("/v2/box/from-snapshot", post(boxes::from_snapshot))
        .route(
            "/v2/box/{id}/snapshots",
            get(snapshots::list_of_box).post(snapshots::create),
        )
        .route(
            "/v2/box/{id}/snapshots/{sid}",
            delete(snapshots::delete_of_box),
        )
        .route("/v2/box/{id}", get(boxes::get).delete(boxes::delete))
        .route("/v2/box/{id}/status", get(boxes::status))
        .route("/v2/box/{id}/logs", get(boxes::logs))
        .route(
            "/v2/box/{id}/config/network-policy",
            put(boxes::set_network_policy),
        )
        .route(
            "/v2/box/{id}/config/labels",
            post(boxes::add_label).get(boxes::list_labels),
        )
        .route(
            "/v2/box/{id}/config/labels/{label}",
            delete(boxes::remove_label),
        )
        .route("/v2/box/{id}/config/model", put(agent::set_model))
        .route(
            "/v2/box/{id}/config/custom-runner",
            put(agent::set_custom_runner),
        )
        .route("/v2/box/{id}/config/skills", post(agent::add_skill))
        .route(
            "/v2/box/{id}/config/skills/{*skill}",
            delete(agent::remove_skill),
        )
        .route("/v2/box/{id}/pause", post(lifecycle::pause))
        .route("/v2/box/{id}/restart", post(lifecycle::restart))
        .route("/v2/box/{id}/resume", post(lifecycle::resume))
        .route(
            "/v2/box/{id}/startup",
            get(lifecycle::get_startup)
                .put(lifecycle::set_startup)
                .delete(lifecycle::delete_startup),
        )
        .route("/v2/box/{id}/exec", post(exec::exec))
        .route("/v2/box/{id}/exec-stream", post(exec::exec_stream))
        .route("/v2/box/{id}/code", post(exec::code))
        .route("/v2/box/{id}/code-stream", post(exec::code_stream))
        .route("/v2/box/{id}/processes", get(processes::list))
        .route("/v2/box/{id}/processes/{pid}/kill", post(processes::kill))
        .route("/v2/box/{id}/files/write", post(files::write))
        .route("/v2/box/{id}/files/read", get(files::read))
        .route("/v2/box/{id}/files/list", get(files::list))
        .route("/v2/box/{id}/files/stat", get(files::stat))
        .route("/v2/box/{id}/files/mkdir", post(files::mkdir))
        .route("/v2/box/{id}/files/rename", post(files::rename))
        .route("/v2/box/{id}/files/remove", post(files::remove))
        .route(
            "/v2/box/{id}/files/upload",
            post(files::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v2/box/{id}/files/download", get(files::download));
    for (path, feature) in later::ROUTES {
        r = r.route(path, later::not_built(feature));
    }
    r
}
