//! Team-level attach headers (`/v2/box/settings/attach-headers`): rules
//! every new box of the team gets, merged under the box's own at create
//! (a box's rules are fixed for its life: changing these affects only
//! boxes created afterwards).
//!
//! Owns the endpoints. Never returns, logs or audits a value: answers and
//! audit events carry patterns and header names only.

use crate::error::{ApiError, ApiResult};
use crate::secrets::parse_attach_headers;
use crate::state::{AppState, Caller};
use axum::extract::{Path, State};
use axum::Json;
use boxd_api::{AttachHeadersResponse, ErrorBody, WriteOnly};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

fn listing(st: &AppState, caller: &Caller) -> ApiResult<AttachHeadersResponse> {
    let mut attach_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pattern, name) in st.store.list_team_attach_headers(&caller.team_id)? {
        attach_headers.entry(pattern).or_default().push(name);
    }
    Ok(AttachHeadersResponse { attach_headers })
}

#[utoipa::path(get, path = "/v2/box/settings/attach-headers", tag = "settings",
    responses((status = 200, body = AttachHeadersResponse)))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<AttachHeadersResponse>> {
    Ok(Json(listing(&st, &caller)?))
}

#[utoipa::path(put, path = "/v2/box/settings/attach-headers/{pattern}", tag = "settings",
    params(("pattern" = String, Path, description = "host pattern: api.example.com or *.example.com")),
    request_body(content = Object, description = "header name → value (write-only)"),
    responses((status = 200, body = AttachHeadersResponse), (status = 400, body = ErrorBody)))]
/// Sets the team's headers for one host pattern, replacing what the
/// pattern had.
pub async fn set(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(pattern): Path<String>,
    Json(headers): Json<WriteOnly>,
) -> ApiResult<Json<AttachHeadersResponse>> {
    let body = json!({ pattern.clone(): headers.0 });
    let rules = parse_attach_headers(Some(&body))?;
    let Some(rule) = rules.first() else {
        return Err(ApiError::bad_request(format!(
            "no headers given for {pattern:?}: send {{\"Header-Name\": \"value\"}}"
        )));
    };
    let pairs: Vec<(&str, &[u8])> = rule
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_bytes()))
        .collect();
    st.store
        .replace_team_attach_headers(st.secrets.keys(), &caller.team_id, &pattern, &pairs)?;
    let names: Vec<&str> = rule.headers.iter().map(|h| h.name.as_str()).collect();
    st.audit(
        &caller.team_id,
        Some(&caller),
        None,
        "settings.attach_headers.set",
        json!({"pattern": pattern, "headers": names}),
    );
    Ok(Json(listing(&st, &caller)?))
}

#[utoipa::path(delete, path = "/v2/box/settings/attach-headers/{pattern}", tag = "settings",
    params(("pattern" = String, Path)),
    responses((status = 200, body = AttachHeadersResponse), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(pattern): Path<String>,
) -> ApiResult<Json<AttachHeadersResponse>> {
    if st
        .store
        .delete_team_attach_header(&caller.team_id, &pattern)?
        == 0
    {
        return Err(ApiError::not_found(format!(
            "no team attach headers for {pattern:?}"
        )));
    }
    st.audit(
        &caller.team_id,
        Some(&caller),
        None,
        "settings.attach_headers.delete",
        json!({"pattern": pattern}),
    );
    Ok(Json(listing(&st, &caller)?))
}
