//! The HTTP routes: the Upstash Box v2 API under `/v2/box`, boxd's
//! extensions (`/v2/audit`), and the operator endpoints (`/healthz`,
//! `/metrics`, `/openapi.json`).
//!
//! Owns the route table and the OpenAPI document generated from the
//! handlers' annotations. Handlers live in one module per area.

pub mod attach_headers;
pub mod audit;
pub mod boxes;
pub mod exec;
pub mod files;
pub mod later;
pub mod lifecycle;
pub mod settings;
pub mod snapshots;
pub mod volumes;

use crate::error::{json_errors, ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use boxd_api::Health;
use std::sync::Arc;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "boxd",
        description = "Self-hosted sandboxes. Speaks the Upstash Box v2 API (the official \
                       SDKs work unmodified) plus boxd extensions. Authenticate with the \
                       `X-Box-Api-Key` header or `Authorization: Bearer`. Errors are \
                       `{\"error\": \"...\"}`."
    ),
    paths(
        boxes::create,
        boxes::get,
        boxes::list,
        boxes::delete,
        boxes::delete_many,
        boxes::status,
        boxes::add_label,
        boxes::remove_label,
        boxes::list_labels,
        boxes::logs,
        boxes::set_network_policy,
        boxes::from_snapshot,
        snapshots::create,
        snapshots::list_of_box,
        snapshots::list,
        snapshots::get,
        snapshots::delete_of_box,
        snapshots::delete,
        snapshots::delete_many,
        exec::exec,
        exec::exec_stream,
        exec::code,
        exec::code_stream,
        files::write,
        files::read,
        files::list,
        files::stat,
        files::mkdir,
        files::rename,
        files::remove,
        files::upload,
        files::download,
        attach_headers::list,
        attach_headers::set,
        attach_headers::delete,
        settings::list,
        settings::replace,
        settings::set,
        settings::delete,
        audit::list,
        volumes::create,
        volumes::list,
        volumes::get,
        volumes::delete,
        lifecycle::pause,
        lifecycle::restart,
        lifecycle::resume,
        lifecycle::get_startup,
        lifecycle::set_startup,
        lifecycle::delete_startup,
        healthz,
    ),
    components(schemas(boxd_api::ExitEvent, boxd_api::ErrorBody))
)]
struct ApiDoc;

#[utoipa::path(get, path = "/healthz", tag = "operator",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Prometheus text exposition.
async fn metrics(State(st): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    let counts = st.store.count_boxes_by_state()?;
    let cpu_ns = st.live_boxes().iter().filter_map(|l| l.cpu_ns()).sum();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(&counts, cpu_ns),
    ))
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint; the API is described at /openapi.json")
}

pub fn router(st: Arc<AppState>) -> Router {
    let json_limit = st.config.max_json_body_bytes;
    let upload_limit = st.config.max_upload_bytes;
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
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
            axum::routing::put(attach_headers::set).delete(attach_headers::delete),
        )
        .route(
            "/v2/box/settings/env",
            get(settings::list).put(settings::replace),
        )
        .route(
            "/v2/box/settings/env/{key}",
            axum::routing::put(settings::set).delete(settings::delete),
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
            axum::routing::put(boxes::set_network_policy),
        )
        .route(
            "/v2/box/{id}/config/labels",
            post(boxes::add_label).get(boxes::list_labels),
        )
        .route(
            "/v2/box/{id}/config/labels/{label}",
            axum::routing::delete(boxes::remove_label),
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
    r.fallback(no_route)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(st)
}
