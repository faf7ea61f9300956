//! Endpoints of the Upstash Box API that later parts of boxd own (git, coding agents, schedules,
//! previews, exec sessions, …). Each answers 501 with a JSON error naming
//! the feature: never a fake success.

use super::error::ApiError;
use axum::routing::{any, MethodRouter};
use boxd_core::BoxService;
use std::sync::Arc;

/// (path, feature) for every route that is not built yet.
pub const ROUTES: &[(&str, &str)] = &[
    (
        "/v2/box/{id}/config/mcp",
        "changing a box's MCP servers (they are fixed at create)",
    ),
    ("/v2/box/{id}/config/git", "git integration"),
    ("/v2/box/{id}/git-config", "git integration"),
    ("/v2/box/{id}/git/{*rest}", "git integration"),
    ("/v2/box/{id}/run", "coding agent runs"),
    ("/v2/box/{id}/run/{*rest}", "coding agent runs"),
    ("/v2/box/{id}/runs", "coding agent runs"),
    ("/v2/box/{id}/runs/{*rest}", "coding agent runs"),
    ("/v2/box/{id}/schedules", "schedules"),
    ("/v2/box/{id}/schedules/{*rest}", "schedules"),
    ("/v2/box/{id}/previews", "preview URLs"),
    ("/v2/box/{id}/previews/{*rest}", "preview URLs"),
    ("/v2/box/{id}/exec-session", "interactive exec sessions"),
    ("/v2/box/{id}/browser/{*rest}", "browser boxes"),
    (
        "/v2/box/{id}/attach-headers",
        "changing a box's attach headers (they are fixed at create)",
    ),
];

/// A handler for any method that answers 501 naming `feature`, after the
/// key is checked like on every `/v2` route (no key: 401). It reads the
/// request body first, so the connection stays usable (keep-alive).
pub fn not_built(feature: &'static str) -> MethodRouter<Arc<BoxService>> {
    any(
        move |_auth: super::Auth, _body: axum::body::Bytes| async move {
            ApiError::not_implemented(feature)
        },
    )
}
