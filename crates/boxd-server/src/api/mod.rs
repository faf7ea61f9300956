//! The HTTP front ends: the Upstash Box v2 API (`upstash`) and the
//! operator endpoints (`/healthz`, `/metrics`, `/openapi.json`, `images`).
//!
//! Owns the combined router, its body limits and JSON error middleware,
//! and the OpenAPI document generated from the handlers' annotations. A
//! second protocol gets a module beside `upstash`, never inside it.

pub mod images;
pub mod upstash;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use boxd_api::Health;
use boxd_core::BoxService;
use std::sync::Arc;
use upstash::error::{errors, ApiError, ApiResult};
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
        upstash::boxes::create,
        upstash::boxes::get,
        upstash::boxes::list,
        upstash::boxes::delete,
        upstash::boxes::delete_many,
        upstash::boxes::status,
        upstash::boxes::add_label,
        upstash::boxes::remove_label,
        upstash::boxes::list_labels,
        upstash::boxes::logs,
        upstash::boxes::set_network_policy,
        upstash::boxes::from_snapshot,
        upstash::agent::set_model,
        upstash::agent::set_custom_runner,
        upstash::agent::add_skill,
        upstash::agent::remove_skill,
        upstash::snapshots::create,
        upstash::snapshots::list_of_box,
        upstash::snapshots::list,
        upstash::snapshots::get,
        upstash::snapshots::delete_of_box,
        upstash::snapshots::delete,
        upstash::snapshots::delete_many,
        upstash::exec::exec,
        upstash::exec::exec_stream,
        upstash::exec::code,
        upstash::exec::code_stream,
        upstash::processes::list,
        upstash::processes::kill,
        upstash::files::write,
        upstash::files::read,
        upstash::files::list,
        upstash::files::stat,
        upstash::files::mkdir,
        upstash::files::rename,
        upstash::files::remove,
        upstash::files::upload,
        upstash::files::download,
        upstash::attach_headers::list,
        upstash::attach_headers::set,
        upstash::attach_headers::delete,
        upstash::settings::list,
        upstash::settings::replace,
        upstash::settings::set,
        upstash::settings::delete,
        upstash::audit::list,
        upstash::volumes::create,
        upstash::volumes::list,
        upstash::volumes::get,
        upstash::volumes::delete,
        upstash::lifecycle::pause,
        upstash::lifecycle::restart,
        upstash::lifecycle::resume,
        upstash::lifecycle::get_startup,
        upstash::lifecycle::set_startup,
        upstash::lifecycle::delete_startup,
        images::list,
        images::delete,
        images::build,
        images::import,
        healthz,
    ),
    components(schemas(boxd_api::ExitEvent, boxd_api::ErrorBody)),
    modifiers(&Keys),
    security(("api_key" = []), ("bearer" = []))
)]
struct ApiDoc;

/// The document's security schemes: the key in `X-Box-Api-Key` (what the
/// SDKs send) or as a bearer token; every operation needs one unless it
/// says otherwise (`/healthz`).
struct Keys;

impl utoipa::Modify for Keys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(boxd_api::API_KEY_HEADER))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(get, path = "/healthz", tag = "operator", security(()),
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Prometheus text exposition (an operator key: the figures cover every
/// team).
async fn metrics(
    State(svc): State<Arc<BoxService>>,
    upstash::Auth(caller): upstash::Auth,
) -> ApiResult<impl IntoResponse> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        svc.metrics_text(&caller)?,
    ))
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint; the API is described at /openapi.json")
}

/// Request bodies the router accepts.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest JSON request body (413 above it).
    pub json: usize,
    /// Largest multipart upload.
    pub upload: usize,
}

pub fn router(svc: Arc<BoxService>, limits: BodyLimits) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v2/images", get(images::list))
        .route("/v2/images/build", axum::routing::post(images::build))
        .route(
            "/v2/images/import",
            axum::routing::post(images::import).layer(DefaultBodyLimit::disable()),
        )
        .route("/v2/images/{name}", axum::routing::delete(images::delete))
        .merge(upstash::routes(limits.upload))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(limits.json))
        .layer(axum::middleware::from_fn(errors))
        .with_state(svc)
}
