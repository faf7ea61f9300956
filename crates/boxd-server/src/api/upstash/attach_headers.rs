//! Team-level attach headers (`/v2/box/settings/attach-headers`): rules
//! every new box of the team gets, merged under the box's own at create.
//!
//! Owns the wire side only. Answers carry patterns and header names, never
//! a value (the core never hands one back).

use super::error::ApiResult;
use super::{Auth, JsonObject, Svc};
use axum::extract::Path;
use axum::Json;
use boxd_api::{AttachHeadersResponse, ErrorBody, WriteOnly};
use std::collections::BTreeMap;

fn listing(attach_headers: BTreeMap<String, Vec<String>>) -> Json<AttachHeadersResponse> {
    Json(AttachHeadersResponse { attach_headers })
}

#[utoipa::path(get, path = "/v2/box/settings/attach-headers", tag = "settings",
    responses((status = 200, body = AttachHeadersResponse)))]
pub async fn list(svc: Svc, Auth(caller): Auth) -> ApiResult<Json<AttachHeadersResponse>> {
    Ok(listing(svc.team_attach_headers(&caller)?))
}

#[utoipa::path(put, path = "/v2/box/settings/attach-headers/{pattern}", tag = "settings",
    params(("pattern" = String, Path, description = "host pattern: api.example.com or *.example.com")),
    request_body(content = Object, description = "header name → value (write-only)"),
    responses((status = 200, body = AttachHeadersResponse), (status = 400, body = ErrorBody)))]
/// Sets the team's headers for one host pattern, replacing what the
/// pattern had.
pub async fn set(
    svc: Svc,
    Auth(caller): Auth,
    Path(pattern): Path<String>,
    JsonObject(headers): JsonObject<WriteOnly>,
) -> ApiResult<Json<AttachHeadersResponse>> {
    Ok(listing(
        svc.set_team_attach_headers(&caller, &pattern, &headers.0)?,
    ))
}

#[utoipa::path(delete, path = "/v2/box/settings/attach-headers/{pattern}", tag = "settings",
    params(("pattern" = String, Path)),
    responses((status = 200, body = AttachHeadersResponse), (status = 404, body = ErrorBody)))]
pub async fn delete(
    svc: Svc,
    Auth(caller): Auth,
    Path(pattern): Path<String>,
) -> ApiResult<Json<AttachHeadersResponse>> {
    Ok(listing(svc.delete_team_attach_headers(&caller, &pattern)?))
}
