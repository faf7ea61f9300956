//! A box's coding-agent configuration after create: its model, a custom
//! harness's runner, and its skills (agent runs themselves answer 501,
//! see `later.rs`).
//!
//! Owns decoding and encoding these calls; what a valid model, runner or
//! skill is belongs to `boxd_core::agent`. Never a key or a header value
//! in an answer.

use super::error::ApiResult;
use super::{box_data, Auth, JsonObject, Svc};
use axum::extract::Path;
use axum::Json;
use boxd_api::{
    BoxData, CustomRunnerRequest, ErrorBody, ModelRequest, SkillRequest, SkillsResponse,
};

#[utoipa::path(put, path = "/v2/box/{id}/config/model", tag = "agents",
    params(("id" = String, Path, description = "box id or name")), request_body = ModelRequest,
    responses((status = 200, body = BoxData), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn set_model(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<ModelRequest>,
) -> ApiResult<Json<BoxData>> {
    Ok(Json(box_data(
        svc.set_agent_model(&caller, &id, &req.model)?,
    )))
}

#[utoipa::path(put, path = "/v2/box/{id}/config/custom-runner", tag = "agents",
    params(("id" = String, Path, description = "box id or name")), request_body = CustomRunnerRequest,
    responses((status = 200, body = BoxData), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_custom_runner(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<CustomRunnerRequest>,
) -> ApiResult<Json<BoxData>> {
    Ok(Json(box_data(svc.set_custom_runner(
        &caller,
        &id,
        &req.custom_runner,
    )?)))
}

#[utoipa::path(post, path = "/v2/box/{id}/config/skills", tag = "agents",
    params(("id" = String, Path, description = "box id or name")), request_body = SkillRequest,
    responses((status = 200, body = SkillsResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn add_skill(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<SkillRequest>,
) -> ApiResult<Json<SkillsResponse>> {
    let enabled_skills = svc.add_skill(&caller, &id, &req.skill_id)?;
    Ok(Json(SkillsResponse { enabled_skills }))
}

#[utoipa::path(delete, path = "/v2/box/{id}/config/skills/{skill}", tag = "agents",
    params(("id" = String, Path, description = "box id or name"),
           ("skill" = String, Path, description = "owner/repo/skill, not encoded")),
    responses((status = 200, body = SkillsResponse), (status = 404, body = ErrorBody)))]
pub async fn remove_skill(
    svc: Svc,
    Auth(caller): Auth,
    Path((id, skill)): Path<(String, String)>,
) -> ApiResult<Json<SkillsResponse>> {
    let enabled_skills = svc.remove_skill(&caller, &id, &skill)?;
    Ok(Json(SkillsResponse { enabled_skills }))
}
