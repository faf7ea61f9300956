//! Team-wide environment (`/v2/box/settings/env`): variables every new box
//! of the team gets, under the box's own `env_vars`.
//!
//! Owns the wire side only: answers show names with masked values (the
//! core never hands a value back once set).

use super::error::ApiResult;
use super::{Auth, JsonObject, Svc};
use axum::extract::Path;
use axum::Json;
use boxd_api::{EnvValue, EnvVars, ErrorBody};

/// What a stored value looks like in answers.
const MASK: &str = "********";

fn masked(names: Vec<String>) -> Json<EnvVars> {
    Json(EnvVars {
        env_vars: names.into_iter().map(|k| (k, MASK.to_string())).collect(),
    })
}

#[utoipa::path(get, path = "/v2/box/settings/env", tag = "settings",
    responses((status = 200, body = EnvVars)))]
pub async fn list(svc: Svc, Auth(caller): Auth) -> ApiResult<Json<EnvVars>> {
    Ok(masked(svc.team_env_names(&caller)?))
}

#[utoipa::path(put, path = "/v2/box/settings/env", tag = "settings", request_body = EnvVars,
    responses((status = 200, body = EnvVars), (status = 400, body = ErrorBody)))]
pub async fn replace(
    svc: Svc,
    Auth(caller): Auth,
    JsonObject(req): JsonObject<EnvVars>,
) -> ApiResult<Json<EnvVars>> {
    Ok(masked(svc.replace_team_env(&caller, &req.env_vars)?))
}

#[utoipa::path(put, path = "/v2/box/settings/env/{key}", tag = "settings", request_body = EnvValue,
    params(("key" = String, Path)),
    responses((status = 200, body = EnvVars), (status = 400, body = ErrorBody)))]
pub async fn set(
    svc: Svc,
    Auth(caller): Auth,
    Path(key): Path<String>,
    JsonObject(req): JsonObject<EnvValue>,
) -> ApiResult<Json<EnvVars>> {
    Ok(masked(svc.set_team_env(&caller, &key, req.value)?))
}

#[utoipa::path(delete, path = "/v2/box/settings/env/{key}", tag = "settings",
    params(("key" = String, Path)),
    responses((status = 200, body = EnvVars), (status = 404, body = ErrorBody)))]
pub async fn delete(
    svc: Svc,
    Auth(caller): Auth,
    Path(key): Path<String>,
) -> ApiResult<Json<EnvVars>> {
    Ok(masked(svc.delete_team_env(&caller, &key)?))
}
