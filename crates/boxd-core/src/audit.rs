//! The audit trail: every event is written here (with the box's labels
//! and metadata attached), read back for a team, followed as it grows, and
//! rendered as a box's human log lines.
//!
//! Owns the one audit writer and the followers' wake-ups. There is no
//! operation that changes or removes an event (the store refuses it too).
//! Never a wire format: follows are typed streams the front ends encode.

use crate::boxes::BoxMeta;
use crate::error::{CoreError, CoreResult};
use crate::service::{BoxService, Caller};
use boxd_net::NetEvent;
use boxd_store::{AuditFilter, BoxRow, NewAuditEvent};
use futures_util::stream::BoxStream;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

pub use boxd_store::AuditEvent;

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this box's events (id or name; a deleted box's id works).
    pub box_id: Option<String>,
    /// Only events of this kind (e.g. `exec`, `box.create`).
    pub kind: Option<String>,
    /// Only events at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Only events after this `seq` (to resume).
    pub after_seq: Option<i64>,
    /// At most this many per read (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// One line of a box's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Unix ms.
    pub ts: i64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// `system` (the box's lifecycle) or `user` (what was done in it).
    pub source: String,
    pub message: String,
}

impl BoxService {
    /// Appends an audit event, with the box's labels and metadata attached.
    /// A failure to record is logged loudly; the caller's action has
    /// already happened and is not undone.
    pub(crate) fn audit(
        &self,
        team_id: &str,
        caller: Option<&Caller>,
        row: Option<&BoxRow>,
        kind: &str,
        mut data: Value,
    ) {
        if let (Some(row), Value::Object(map)) = (row, &mut data) {
            map.insert(
                "labels".into(),
                json!(row.labels.keys().collect::<Vec<_>>()),
            );
            let meta = BoxMeta::of(row);
            if !meta.metadata.is_empty() {
                map.insert("metadata".into(), json!(meta.metadata));
            }
        }
        let event = NewAuditEvent {
            team_id: team_id.to_string(),
            box_id: row.map(|r| r.id.clone()),
            kind: kind.to_string(),
            key_id: caller.map(|c| c.key_id.clone()),
            data,
        };
        match self.store.append_audit(&event) {
            Ok(seq) => {
                self.audit_seq.send_replace(seq);
            }
            Err(e) => tracing::error!(kind, error = %e, "cannot append an audit event"),
        }
    }

    /// Records network events (DNS answers, proxied connections) as audit
    /// events of their boxes' teams.
    pub fn audit_net(&self, events: &[NetEvent]) {
        for ev in events {
            match self.store.box_by_id(ev.box_id()) {
                Ok(Some(row)) => {
                    self.audit(&row.team_id, None, Some(&row), ev.kind(), ev.to_json())
                }
                Ok(None) => tracing::debug!(box_id = ev.box_id(), "network event of a removed box"),
                Err(e) => tracing::error!(error = %e, "cannot read a box for a network event"),
            }
        }
    }

    fn audit_filter(&self, caller: &Caller, q: &AuditQuery) -> AuditFilter {
        // A deleted box keeps its events: accept any id, but resolve the
        // names of existing boxes.
        let box_id = q.box_id.as_ref().map(|b| {
            self.find(caller, b)
                .map(|r| r.id)
                .unwrap_or_else(|_| b.clone())
        });
        AuditFilter {
            team_id: caller.team_id.clone(),
            box_id,
            kind: q.kind.clone(),
            since_ms: q.since_ms,
            after_seq: q.after_seq,
            limit: q.limit.unwrap_or(100).clamp(1, 1000),
        }
    }

    /// The caller's team's events that match, oldest first.
    pub fn list_audit(&self, caller: &Caller, q: &AuditQuery) -> CoreResult<Vec<AuditEvent>> {
        Ok(self.store.list_audit(&self.audit_filter(caller, q))?)
    }

    /// What matches now, then every new event that matches, for as long as
    /// the stream is read (it ends after an error, or when the service
    /// stops). The store is the source of truth, so a slow reader never
    /// misses events and holds nothing in memory but one read's worth.
    pub fn follow_audit(
        self: &Arc<Self>,
        caller: &Caller,
        q: &AuditQuery,
    ) -> BoxStream<'static, CoreResult<AuditEvent>> {
        let follow = Follow {
            updates: self.audit_seq.subscribe(),
            filter: self.audit_filter(caller, q),
            svc: self.clone(),
            pending: VecDeque::new(),
            failed: false,
        };
        Box::pin(futures_util::stream::unfold(follow, Follow::next))
    }

    /// A box's log: its audit events as human lines, oldest first
    /// (`offset` entries skipped, at most `limit`, default 100, at most
    /// 1000).
    pub fn box_logs(
        &self,
        caller: &Caller,
        id: &str,
        offset: Option<u32>,
        limit: Option<u32>,
    ) -> CoreResult<Vec<LogLine>> {
        let row = self.find(caller, id)?;
        let offset = offset.unwrap_or(0).min(100_000);
        let limit = limit.unwrap_or(100).clamp(1, 1000);
        let events = self.store.list_audit(&AuditFilter {
            team_id: caller.team_id.clone(),
            box_id: Some(row.id.clone()),
            limit: offset + limit,
            ..Default::default()
        })?;
        Ok(events
            .iter()
            .skip(offset as usize)
            .map(|e| {
                let (level, message) = log_line(&e.kind, &e.data);
                let source = if e.kind.starts_with("box.") {
                    "system"
                } else {
                    "user"
                };
                LogLine {
                    ts: e.ts,
                    level,
                    source: source.into(),
                    message,
                }
            })
            .collect())
    }
}

/// State of one follow stream.
struct Follow {
    svc: Arc<BoxService>,
    filter: AuditFilter,
    pending: VecDeque<AuditEvent>,
    updates: watch::Receiver<i64>,
    failed: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(CoreResult<AuditEvent>, Follow)> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.filter.after_seq = Some(e.seq);
                return Some((Ok(e), self));
            }
            match self.svc.store.list_audit(&self.filter) {
                Ok(events) if !events.is_empty() => self.pending.extend(events),
                // Wait for the next append (or the service's end).
                Ok(_) => self.updates.changed().await.ok()?,
                Err(e) => {
                    self.failed = true;
                    return Some((Err(CoreError::from(e)), self));
                }
            }
        }
    }
}

/// One human line for an audit event.
fn log_line(kind: &str, data: &Value) -> (String, String) {
    let s = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("");
    let n = |k: &str| data.get(k).and_then(Value::as_i64).unwrap_or(0);
    // Network decisions: refusals are warnings.
    let decided = || {
        if s("decision") == "allow" {
            "info"
        } else {
            "warn"
        }
        .to_string()
    };
    match kind {
        "exec" => {
            let code = n("exit_code");
            let cmd = data
                .get("command")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let level = if code == 0 { "info" } else { "warn" };
            (
                level.into(),
                format!("exec `{cmd}` exited {code} in {} ms", n("duration_ms")),
            )
        }
        "file.write" => (
            "info".into(),
            format!("wrote {} ({} bytes)", s("path"), n("bytes")),
        ),
        "file.upload" => (
            "info".into(),
            format!("uploaded {} files ({} bytes)", n("files"), n("bytes")),
        ),
        "box.create" => (
            "info".into(),
            format!("box created ({}, {})", s("runtime"), s("size")),
        ),
        "box.failed" => ("error".into(), format!("box failed: {}", s("reason"))),
        "net.dns" => (
            decided(),
            format!(
                "dns {} {}: {} ({}) {}",
                s("qtype"),
                s("name"),
                s("decision"),
                s("rule"),
                s("rcode")
            ),
        ),
        "net.connect" => {
            let dest = match data.get("name").and_then(Value::as_str) {
                Some(name) => format!("{name}:{}", n("port")),
                None => format!("{}:{}", s("dest_ip"), n("port")),
            };
            (
                decided(),
                format!(
                    "connect {dest}: {} ({}), {} bytes up, {} down, {} ms",
                    s("decision"),
                    s("rule"),
                    n("bytes_up"),
                    n("bytes_down"),
                    n("duration_ms")
                ),
            )
        }
        "net.http" => {
            let names = |k: &str| {
                data.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|v| match v {
                                Value::String(s) => s.clone(),
                                other => other
                                    .get("secret")
                                    .and_then(Value::as_str)
                                    .map(|secret| {
                                        let place = other.get("where").and_then(Value::as_str);
                                        format!("{secret} in {}", place.unwrap_or("?"))
                                    })
                                    .unwrap_or_default(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let mut line = format!(
                "https {} {}{} → {} in {} ms",
                s("method"),
                s("host"),
                s("path"),
                n("status"),
                n("latency_ms")
            );
            let mut level = if n("status") >= 400 { "warn" } else { "info" };
            for (key, label) in [
                ("injected_headers", "injected"),
                ("substituted_secrets", "substituted"),
                ("violations", "VIOLATION: placeholder of"),
            ] {
                let list = names(key);
                if !list.is_empty() {
                    line.push_str(&format!("; {label} {list}"));
                    if key == "violations" {
                        level = "warn";
                    }
                }
            }
            if !s("error").is_empty() {
                line.push_str(&format!("; error: {}", s("error")));
                level = "warn";
            }
            (level.into(), line)
        }
        other => ("info".into(), format!("{other} {data}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercepted_requests_become_log_lines_with_names_only() {
        let (level, line) = log_line(
            "net.http",
            &json!({
                "method": "POST", "host": "api.example.com", "path": "/v1/x", "status": 200,
                "latency_ms": 12, "injected_headers": ["Authorization"],
                "substituted_secrets": ["OPENAI_API_KEY"], "violations": [],
            }),
        );
        assert_eq!(level, "info");
        assert_eq!(
            line,
            "https POST api.example.com/v1/x → 200 in 12 ms; injected Authorization; substituted OPENAI_API_KEY"
        );
        let (level, line) = log_line(
            "net.http",
            &json!({
                "method": "GET", "host": "evil.example.com", "path": "/", "status": 200,
                "latency_ms": 3, "violations": [{"secret": "OPENAI_API_KEY", "where": "header"}],
            }),
        );
        assert_eq!(level, "warn");
        assert!(
            line.ends_with("VIOLATION: placeholder of OPENAI_API_KEY in header"),
            "{line}"
        );
    }
}
