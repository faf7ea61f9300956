//! The processes of a box (a boxd extension): the list, each process tied
//! to the exec it descends from (however it detached: `setsid`, double
//! fork, `nohup`, `server &`), and killing one.
//!
//! Owns which processes a caller sees (boxd's own — the box's init and
//! the exec trackers — never), the check of a signal before the box is
//! touched, and the `process.kill` audit event. The attribution itself is
//! the agent's (its per-exec tracker, see `boxd_agent::process`). Never a
//! wire format.

use crate::error::{CoreError, CoreResult};
use crate::service::{BoxService, Caller};
use boxd_agent::protocol::ProcessInfo;
use serde_json::json;
use std::sync::Arc;

/// A process in a box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxProcess {
    /// Its pid inside the box.
    pub pid: i32,
    pub ppid: i32,
    /// Its uid inside the box.
    pub uid: u32,
    /// `R`, `S`, `Z`, … as in `ps`.
    pub state: String,
    pub command: String,
    /// The exec it descends from (`None` for a process no exec started).
    pub exec_id: Option<String>,
    /// The pid of that exec's own command.
    pub exec_pid: Option<i32>,
    /// The API key that started that exec.
    pub started_by: Option<String>,
}

impl BoxProcess {
    fn of(p: ProcessInfo) -> BoxProcess {
        let (exec_id, exec_pid, started_by) = match p.exec {
            Some(e) => (e.exec_id, Some(e.pid), e.started_by),
            None => (None, None, None),
        };
        BoxProcess {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            state: p.state,
            command: p.command,
            exec_id,
            exec_pid,
            started_by,
        }
    }
}

/// A signal by name (`TERM`, `SIGTERM`, any case) or number (1-64);
/// the numbers are Linux's (the same on every architecture boxd runs on).
pub fn parse_signal(s: &str) -> CoreResult<i32> {
    let bad = || {
        CoreError::invalid(format!(
            "unknown signal {s:?}: give a number (1-64) or a name like TERM, KILL, INT, HUP"
        ))
    };
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        "ALRM" => 14,
        "WINCH" => 28,
        _ => return Err(bad()),
    };
    Ok(sig)
}

impl BoxService {
    /// The box's processes (resuming a paused box first), oldest pid first.
    pub async fn processes(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
    ) -> CoreResult<Vec<BoxProcess>> {
        let (_row, live) = self.running(caller, id).await?;
        let list = live
            .handle
            .agent()
            .processes()
            .await
            .map_err(CoreError::from)?;
        Ok(list
            .into_iter()
            .filter(|p| !p.internal)
            .map(BoxProcess::of)
            .collect())
    }

    /// Sends `signal` to the box process `pid` (audited as `process.kill`
    /// with the exec it came from) and returns what it was.
    pub async fn kill_process(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        pid: i32,
        signal: i32,
    ) -> CoreResult<BoxProcess> {
        if !(1..=64).contains(&signal) {
            return Err(CoreError::invalid(format!(
                "signal {signal} is not a signal (1-64)"
            )));
        }
        if pid <= 0 {
            return Err(CoreError::invalid(format!(
                "pid {pid} is not a process id (a positive number)"
            )));
        }
        let (row, live) = self.running(caller, id).await?;
        let killed = live
            .handle
            .agent()
            .kill_process(pid, signal)
            .await
            .map_err(CoreError::from)
            .map(BoxProcess::of)?;
        self.audit(
            &caller.team_id,
            Some(caller),
            Some(&row),
            "process.kill",
            json!({
                "pid": killed.pid,
                "command": killed.command,
                "signal": signal,
                "exec_id": killed.exec_id,
            }),
        );
        Ok(killed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("NOPE").is_err());
    }
}
