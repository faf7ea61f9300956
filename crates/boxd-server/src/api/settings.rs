//! Team-wide environment (`/v2/box/settings/env`): variables every new box
//! of the team gets, under the box's own `env_vars`.
//!
//! Owns validating the names (the runtime's rules: blocked names such as
//! PATH or LD_PRELOAD are refused here, not at box create) and masking the
//! values in answers: a value is never returned once set.

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};
use axum::extract::{Path, State};
use axum::Json;
use boxd_api::{EnvValue, EnvVars, ErrorBody};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a stored value looks like in answers.
const MASK: &str = "********";

fn masked(env: &BTreeMap<String, String>) -> EnvVars {
    EnvVars {
        env_vars: env.keys().map(|k| (k.clone(), MASK.to_string())).collect(),
    }
}

fn save(st: &AppState, caller: &Caller, env: &BTreeMap<String, String>) -> ApiResult<()> {
    boxd_runtime::env::validate(env)?;
    st.store.set_team_env(&caller.team_id, env)?;
    let names: Vec<&String> = env.keys().collect();
    st.audit(
        &caller.team_id,
        Some(caller),
        None,
        "settings.env",
        json!({"names": names}),
    );
    Ok(())
}

#[utoipa::path(get, path = "/v2/box/settings/env", tag = "settings",
    responses((status = 200, body = EnvVars)))]
pub async fn list(State(st): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<EnvVars>> {
    Ok(Json(masked(&st.store.team_env(&caller.team_id)?)))
}

#[utoipa::path(put, path = "/v2/box/settings/env", tag = "settings", request_body = EnvVars,
    responses((status = 200, body = EnvVars), (status = 400, body = ErrorBody)))]
pub async fn replace(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<EnvVars>,
) -> ApiResult<Json<EnvVars>> {
    save(&st, &caller, &req.env_vars)?;
    Ok(Json(masked(&req.env_vars)))
}

#[utoipa::path(put, path = "/v2/box/settings/env/{key}", tag = "settings", request_body = EnvValue,
    params(("key" = String, Path)),
    responses((status = 200, body = EnvVars), (status = 400, body = ErrorBody)))]
pub async fn set(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(key): Path<String>,
    Json(req): Json<EnvValue>,
) -> ApiResult<Json<EnvVars>> {
    let mut env = st.store.team_env(&caller.team_id)?;
    env.insert(key, req.value);
    save(&st, &caller, &env)?;
    Ok(Json(masked(&env)))
}

#[utoipa::path(delete, path = "/v2/box/settings/env/{key}", tag = "settings",
    params(("key" = String, Path)),
    responses((status = 200, body = EnvVars), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<Json<EnvVars>> {
    let mut env = st.store.team_env(&caller.team_id)?;
    if env.remove(&key).is_none() {
        return Err(ApiError::not_found(format!(
            "no team environment variable {key}"
        )));
    }
    save(&st, &caller, &env)?;
    Ok(Json(masked(&env)))
}
