//! The audit trail over HTTP: `GET /v2/audit`, filtered by box, kind and
//! time, and `?follow=true` to stream new events as Server-Sent Events.
//!
//! Owns the wire side only: the query, the event's wire form, SSE framing.
//! Reading and following the trail (for the caller's team only) is the
//! core's.
//! Never writes an event: the trail is the core's.

use super::error::{ApiError, ApiResult};
use super::{Auth, Svc};
use axum::extract::Query;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use boxd_api::{AuditEventData, AuditResponse, ErrorBody};
use boxd_core::{AuditEvent, AuditQuery as CoreQuery};
use futures_util::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

#[derive(Deserialize, utoipa::IntoParams, Clone)]
pub struct AuditQuery {
    /// Only this box's events (box id or name).
    #[serde(rename = "box")]
    box_: Option<String>,
    /// Only events of this kind (e.g. `exec`, `box.create`).
    kind: Option<String>,
    /// Only events at or after this time (unix milliseconds).
    since: Option<i64>,
    /// Only events after this `seq` (to resume).
    after: Option<i64>,
    /// At most this many events per answer (default 100, at most 1000).
    limit: Option<u32>,
    /// Keep the connection open and stream new events (SSE).
    follow: Option<bool>,
}

fn wire(e: AuditEvent) -> AuditEventData {
    AuditEventData {
        seq: e.seq,
        ts: e.ts,
        box_id: e.box_id,
        kind: e.kind,
        key_id: e.key_id,
        data: e.data,
    }
}

fn sse(event: Result<AuditEvent, boxd_core::CoreError>) -> Result<Event, Infallible> {
    let (name, data) = match event {
        Ok(e) => ("audit", serde_json::to_string(&wire(e))),
        Err(e) => (
            "error",
            serde_json::to_string(&ErrorBody {
                error: ApiError::from(e).message,
            }),
        ),
    };
    Ok(Event::default().event(name).data(data.unwrap_or_default()))
}

#[utoipa::path(get, path = "/v2/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditResponse,
               description = "events; with follow=true a text/event-stream of `audit` events"),
              (status = 404, body = ErrorBody)))]
pub async fn list(
    svc: Svc,
    Auth(caller): Auth,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let query = CoreQuery {
        box_id: q.box_,
        kind: q.kind,
        since_ms: q.since,
        after_seq: q.after,
        limit: q.limit,
    };
    if q.follow != Some(true) {
        let events = svc.list_audit(&caller, &query)?;
        return Ok(Json(AuditResponse {
            events: events.into_iter().map(wire).collect(),
        })
        .into_response());
    }
    Ok(Sse::new(svc.follow_audit(&caller, &query).map(sse))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
