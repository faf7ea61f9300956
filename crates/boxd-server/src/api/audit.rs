//! The audit trail over HTTP: `GET /v2/audit`, filtered by box, kind and
//! time, and `?follow=true` to stream new events as Server-Sent Events.
//!
//! Owns reading the trail for the caller's team only. There is no endpoint
//! that changes or removes an event (the store refuses it too).

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use boxd_api::{AuditEventData, AuditResponse, ErrorBody};
use boxd_store::{AuditEvent, AuditFilter};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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

#[utoipa::path(get, path = "/v2/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditResponse,
               description = "events; with follow=true a text/event-stream of `audit` events"),
              (status = 404, body = ErrorBody)))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    // A deleted box keeps its events: accept any id, but resolve the
    // names of existing boxes.
    let box_id = q.box_.as_ref().map(|b| {
        st.find(&caller, b)
            .map(|r| r.id)
            .unwrap_or_else(|_| b.clone())
    });
    let filter = AuditFilter {
        team_id: caller.team_id.clone(),
        box_id,
        kind: q.kind.clone(),
        since_ms: q.since,
        after_seq: q.after,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    if q.follow != Some(true) {
        let events = st.store.list_audit(&filter)?;
        return Ok(Json(AuditResponse {
            events: events.into_iter().map(wire).collect(),
        })
        .into_response());
    }
    // Follow: replay what matches, then wait for the trail to grow. The
    // store is the source of truth, so a slow reader never misses events.
    let follow = Follow {
        updates: st.audit_updates(),
        st,
        filter,
        pending: VecDeque::new(),
        failed: false,
    };
    Ok(Sse::new(futures_util::stream::unfold(follow, Follow::next))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// State of one `follow` stream.
struct Follow {
    st: Arc<AppState>,
    filter: AuditFilter,
    pending: VecDeque<AuditEvent>,
    updates: watch::Receiver<i64>,
    failed: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.filter.after_seq = Some(e.seq);
                let data = serde_json::to_string(&wire(e)).unwrap_or_default();
                return Some((Ok(Event::default().event("audit").data(data)), self));
            }
            match self.st.store.list_audit(&self.filter) {
                Ok(events) if !events.is_empty() => self.pending.extend(events),
                // Wait for the next append (or the daemon's shutdown).
                Ok(_) => self.updates.changed().await.ok()?,
                Err(e) => {
                    self.failed = true;
                    let body = ErrorBody {
                        error: ApiError::from(e).message,
                    };
                    let data = serde_json::to_string(&body).unwrap_or_default();
                    return Some((Ok(Event::default().event("error").data(data)), self));
                }
            }
        }
    }
}
