//! Pause and resume, restart, lifetimes (ttl / timeout / ephemeral), idle
//! pause and init commands.
//!
//! Owns the order of a pause or resume (the new state is in the store
//! before the cgroup freezer acts, and a restart makes the cgroup match
//! the store: see [`AppState::reconcile_pause`]), the background sweeper
//! that deletes expired boxes and pauses idle ones, and running a box's
//! init command. Deleting goes through the one delete path of `boxes`.
//! Never a wire format.

use crate::boxes::{check_init_command, Attach, BoxInfo, BoxMeta};
use crate::error::{stopped, CoreError, CoreResult};
use crate::service::{now_ms, BoxService, Caller, LiveBox};
use boxd_agent::protocol::SpawnRequest;
use boxd_store::{BoxRow, BoxState};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks for expired and idle boxes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a pause waits for the calls in flight on the box to end
/// before it is refused (an idle pause does not wait).
const PAUSE_DRAIN: Duration = Duration::from_secs(10);
/// At most this many boxes are deleted, and this many paused, per sweep
/// (the rest wait for the next one).
const SWEEP_BATCH: usize = 64;

impl BoxService {
    /// The live box of `row`. A restart under way is waited for; a box
    /// whose init is gone otherwise is recorded failed (once: not when the
    /// store already says so) and answers "stopped".
    pub(crate) async fn live_for(&self, row: &BoxRow) -> CoreResult<Arc<LiveBox>> {
        // Restarts may follow each other (each waits its turn): at most
        // this many are waited for.
        for _ in 0..8 {
            if let Some(live) = self.live(&row.id).filter(|l| l.handle.is_alive()) {
                return Ok(live);
            }
            if !self.wait_restart(&row.id).await {
                break;
            }
        }
        let row = self.current(&row.id)?;
        if matches!(row.state, BoxState::Running | BoxState::Paused) {
            self.mark_failed(&row, "its init process exited");
        }
        Err(stopped(&row.id))
    }

    fn current(&self, id: &str) -> CoreResult<BoxRow> {
        self.store
            .box_by_id(id)?
            .filter(|r| r.state != BoxState::Deleted)
            .ok_or_else(|| CoreError::not_found(format!("box {id} not found")))
    }

    /// Starts the box again on its own files, like a reboot: its processes
    /// (if any still run) are killed, a new init starts over the same
    /// layers with the same env, limits, volumes, network policy and
    /// secrets, and its init command runs. Works on running, paused and
    /// failed boxes; the box is `running` after. A failed start leaves it
    /// `error` with its files kept.
    pub(crate) async fn restart_row(
        self: &Arc<Self>,
        row: &BoxRow,
        caller: Option<&Caller>,
        reason: &str,
    ) -> CoreResult<BoxRow> {
        let _restart = self.restart_turn(&row.id).await;
        let old = self.live(&row.id);
        let _turn = match &old {
            Some(live) => Some(live.lifecycle.lock().await),
            None => None,
        };
        let mut row = self.current(&row.id)?;
        if row.state == BoxState::Creating {
            return Err(CoreError::conflict(format!(
                "box {} is still being created",
                row.id
            )));
        }
        // A box whose stored spec cannot be read stays failed (fail closed).
        let meta = BoxMeta::read(&row).map_err(|reason| {
            CoreError::conflict(format!(
                "box {} cannot be restarted: {reason}; delete it",
                row.id
            ))
        })?;
        let started = Instant::now();
        if let Some(live) = &old {
            if let Err(e) = live.handle.thaw() {
                tracing::warn!(box_id = %row.id, error = %e, "cannot thaw a box before its restart");
            }
            if let Some(net) = &self.network {
                net.detach(&row.id, live.handle.record().slot);
            }
        }
        self.remove_live(&row.id);
        let rules = Arc::new(self.secrets.box_rules(&self.store, &row.id)?);
        let rt = self.runtime.clone();
        let id = row.id.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let starting = tokio::task::spawn_blocking(move || {
            rt.restart_notify(&id, move |slot, pid| {
                let _ = started_tx.send((slot, pid));
            })
        });
        let networking = async {
            let (slot, pid) = started_rx.await.ok()?;
            // The slot's old link (if any) goes now, not with the kernel's
            // background cleanup of the old network namespace.
            if let Some(net) = &self.network {
                if let Err(e) = net.release(&row.id, slot).await {
                    tracing::warn!(box_id = %row.id, error = %e, "cannot remove a restarting box's old link");
                }
            }
            let attached = self
                .attach_network(&row.id, &meta, slot, pid, rules.clone(), Attach::New)
                .await;
            Some((slot, attached))
        };
        let (started_box, networked) = tokio::join!(starting, networking);
        let failed = |why: String| {
            if let (Some(net), Some((slot, _))) = (&self.network, &networked) {
                net.detach(&row.id, *slot);
            }
            self.mark_failed(&row, &why);
            CoreError::internal(format!("could not restart box {}: {why}", row.id))
        };
        let handle = match started_box {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(e) => return Err(failed(format!("the restart task failed: {e}"))),
        };
        if let Some((_, Err(e))) = &networked {
            // Its processes go (a box without its network reaches
            // nothing); its files stay.
            // Escalated: a box that keeps running without its network is
            // a box outside its policy's accounting.
            let why = match handle.cgroup().kill() {
                Ok(()) => e.to_string(),
                Err(kill) => {
                    tracing::error!(box_id = %row.id, error = %kill, "cannot kill a box whose network failed");
                    format!("{e}; and its processes could not be killed: {kill}")
                }
            };
            self.insert_live(handle);
            return Err(failed(why));
        }
        let live = self.insert_live(handle);
        self.store.set_box_state(&row.id, BoxState::Running)?;
        let from = row.state;
        row.state = BoxState::Running;
        self.audit(
            &row.team_id,
            caller,
            Some(&row),
            "box.restart",
            json!({
                "reason": reason,
                "from": crate::boxes::status_name(from),
                "duration_ms": started.elapsed().as_millis() as u64,
            }),
        );
        tracing::info!(box_id = %row.id, reason, "box restarted");
        if let Some(cmd) = &meta.init_command {
            self.run_init(&row, &live, cmd, "box restart");
        }
        Ok(row)
    }

    /// Freezes every process of the box. Pausing a paused box does
    /// nothing. The store says `paused` before the freezer acts.
    pub(crate) async fn pause_row(
        &self,
        row: &BoxRow,
        caller: Option<&Caller>,
        reason: &str,
    ) -> CoreResult<BoxRow> {
        self.transition(row, caller, reason, true).await
    }

    /// Thaws a paused box. Resuming a running box does nothing. The store
    /// says `running` before the freezer acts.
    pub(crate) async fn resume_row(
        &self,
        row: &BoxRow,
        caller: Option<&Caller>,
        reason: &str,
    ) -> CoreResult<BoxRow> {
        self.transition(row, caller, reason, false).await
    }

    /// Pause (`pause`) or resume, one at a time per box: the new state in
    /// the store first, then the freezer; if the freezer fails, both go
    /// back.
    async fn transition(
        &self,
        row: &BoxRow,
        caller: Option<&Caller>,
        reason: &str,
        pause: bool,
    ) -> CoreResult<BoxRow> {
        let (from, to, op) = if pause {
            (BoxState::Running, BoxState::Paused, "pause")
        } else {
            (BoxState::Paused, BoxState::Running, "resume")
        };
        let live = self.live_for(row).await?;
        let _turn = live.lifecycle.lock().await;
        let mut row = self.current(&row.id)?;
        if row.state == to {
            return Ok(row);
        }
        if row.state != from {
            return Err(CoreError::conflict(format!(
                "box {} is {}; only a {} box can be {op}d",
                row.id,
                crate::boxes::status_name(row.state),
                crate::boxes::status_name(from),
            )));
        }
        let started = Instant::now();
        if pause {
            // New calls now wait for this pause (and then resume the box);
            // the calls in flight get `PAUSE_DRAIN` to end: a box is never
            // frozen under a call.
            live.paused.store(true, Ordering::SeqCst);
            let limit = if reason == "idle" {
                Duration::ZERO
            } else {
                PAUSE_DRAIN
            };
            if !live.drain(limit).await {
                live.paused.store(false, Ordering::SeqCst);
                return Err(CoreError::conflict(format!(
                    "box {} has {} call(s) in flight (a command, stream or file transfer); \
                     pause it when they end",
                    row.id,
                    live.in_flight()
                )));
            }
        }
        if let Err(e) = self.store.set_box_state(&row.id, to) {
            live.paused.store(!pause, Ordering::SeqCst);
            return Err(e.into());
        }
        let l = live.clone();
        let done = tokio::task::spawn_blocking(move || {
            if pause {
                l.handle.freeze()
            } else {
                l.handle.thaw()
            }
        })
        .await
        .map_err(|e| CoreError::internal(format!("the {op} task failed: {e}")))
        .and_then(|r| {
            r.map_err(|e| CoreError::internal(format!("could not {op} box {}: {e}", row.id)))
        });
        if let Err(e) = done {
            if pause {
                if let Err(thaw) = live.handle.thaw() {
                    tracing::error!(box_id = %row.id, error = %thaw, "cannot thaw a box after a failed pause");
                }
                live.paused.store(false, Ordering::SeqCst);
            }
            self.store.set_box_state(&row.id, from)?;
            return Err(e);
        }
        if !pause {
            live.paused.store(false, Ordering::SeqCst);
            live.touch();
        }
        let took = started.elapsed();
        row.state = to;
        self.metrics.lifecycle_done(op, reason, took);
        self.audit(
            &row.team_id,
            caller,
            Some(&row),
            &format!("box.{op}"),
            json!({"reason": reason, "duration_us": took.as_micros() as u64}),
        );
        Ok(row)
    }

    /// After a restart: makes an adopted box's freezer match its recorded
    /// state (a crash between the store write and the freezer leaves them
    /// apart; the store wins).
    pub(crate) fn reconcile_pause(&self, row: &BoxRow, live: &LiveBox) {
        let want = row.state == BoxState::Paused;
        live.paused.store(want, Ordering::Relaxed);
        let frozen = match live.handle.cgroup().is_frozen() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(box_id = %row.id, error = %e, "cannot read a box's freezer");
                return;
            }
        };
        if frozen == want {
            return;
        }
        let done = if want {
            live.handle.freeze()
        } else {
            live.handle.thaw()
        };
        match done {
            Ok(()) => tracing::warn!(
                box_id = %row.id,
                state = row.state.as_str(),
                "box freezer set to its recorded state (boxd stopped mid pause or resume)"
            ),
            Err(e) => {
                tracing::error!(box_id = %row.id, error = %e, "cannot set a box's freezer")
            }
        }
    }

    pub(crate) fn set_expiry(&self, id: &str, at_ms: i64) {
        self.expiries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), at_ms);
    }

    pub(crate) fn forget_expiry(&self, id: &str) {
        self.expiries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Runs the box's init command (`sh -c`) in the background; its exit
    /// is recorded as a `box.init` audit event. It is not killed when
    /// boxd stops reading it, so it may start long-running services.
    pub(crate) fn run_init(
        self: &Arc<Self>,
        row: &BoxRow,
        live: &Arc<LiveBox>,
        cmd: &str,
        when: &str,
    ) {
        let st = self.clone();
        let row = row.clone();
        let live = live.clone();
        let mut req = SpawnRequest::shell(cmd.to_string());
        req.kill_on_disconnect = false;
        // Its processes are listed under this id, as an exec's are.
        let exec_id = crate::boxes::new_id("exec").ok();
        req.exec_id = exec_id.clone();
        let when = when.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            // The stream does not hold the box: an init command that runs
            // for ever does not keep the box from being paused or deleted.
            let spawned = live.handle.spawn(req).await;
            drop(live);
            let (exit_code, error) = match spawned {
                Ok(stream) => match stream.collect().await {
                    Ok(done) => (Some(done.status.code), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                Err(e) => (None, Some(e.to_string())),
            };
            st.audit(
                &row.team_id,
                None,
                Some(&row),
                "box.init",
                json!({
                    "when": when,
                    "exec_id": exec_id,
                    "exit_code": exit_code,
                    "error": error,
                    "duration_ms": started.elapsed().as_millis() as u64,
                }),
            );
        });
    }

    /// Runs the init command of every adopted running box (after a daemon
    /// restart).
    pub(crate) fn run_inits_after_restart(self: &Arc<Self>) -> anyhow::Result<()> {
        for row in self.store.all_boxes()? {
            if row.state != BoxState::Running {
                continue;
            }
            let Some(cmd) = BoxMeta::of(&row).init_command else {
                continue;
            };
            if let Some(live) = self.live(&row.id).filter(|l| l.handle.is_alive()) {
                self.run_init(&row, &live, &cmd, "restart");
            }
        }
        Ok(())
    }

    /// Freezes every process of the caller's box (no CPU while paused;
    /// memory, files and processes kept). Pausing a paused box does
    /// nothing. Any command or file call resumes it first.
    pub async fn pause(&self, caller: &Caller, id: &str) -> CoreResult<BoxInfo> {
        let row = self.find(caller, id)?;
        Ok(self.info(self.pause_row(&row, Some(caller), "api").await?))
    }

    /// Thaws the caller's paused box. Resuming a running box does nothing.
    pub async fn resume(&self, caller: &Caller, id: &str) -> CoreResult<BoxInfo> {
        let row = self.find(caller, id)?;
        Ok(self.info(self.resume_row(&row, Some(caller), "api").await?))
    }

    /// Starts the caller's box again on its own files (see
    /// [`BoxService::restart_row`]).
    pub async fn restart(self: &Arc<Self>, caller: &Caller, id: &str) -> CoreResult<BoxInfo> {
        let row = self.find(caller, id)?;
        Ok(self.info(self.restart_row(&row, Some(caller), "api").await?))
    }

    /// The box's init command (`None` when none is set).
    pub fn init_command(&self, caller: &Caller, id: &str) -> CoreResult<Option<String>> {
        Ok(BoxMeta::of(&self.find(caller, id)?).init_command)
    }

    /// Sets (`Some`) or removes the box's init command; it runs the next
    /// time the daemon adopts the box (not now). Answers the box's id.
    pub fn set_init_command(
        &self,
        caller: &Caller,
        id: &str,
        cmd: Option<String>,
    ) -> CoreResult<String> {
        if let Some(cmd) = &cmd {
            check_init_command(cmd)?;
        }
        let mut row = self.find(caller, id)?;
        let mut meta = BoxMeta::of(&row);
        let kind = if cmd.is_some() {
            "box.startup_set"
        } else {
            "box.startup_delete"
        };
        meta.init_command = cmd;
        row.spec = meta.to_json()?;
        self.store.update_box_spec(&row.id, &row.spec)?;
        self.audit(&caller.team_id, Some(caller), Some(&row), kind, json!({}));
        Ok(row.id)
    }

    /// One pass of the sweeper: deletes expired boxes (audit
    /// `box.expired`), then pauses idle ones (audit `box.pause`, reason
    /// `idle`). Each part handles at most `SWEEP_BATCH` boxes.
    pub async fn sweep(self: &Arc<Self>) {
        let now = now_ms();
        let expired: Vec<(String, i64)> = {
            let map = self.expiries.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|(_, at)| **at <= now)
                .take(SWEEP_BATCH)
                .map(|(id, at)| (id.clone(), *at))
                .collect()
        };
        for (id, at) in expired {
            let row = match self.store.box_by_id(&id) {
                Ok(Some(row)) if row.state != BoxState::Creating => row,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    self.forget_expiry(&id);
                    continue;
                }
                Err(e) => {
                    tracing::error!(box_id = %id, error = %e, "cannot read an expired box");
                    continue;
                }
            };
            let data = json!({"expired_at": at / 1000, "late_ms": now - at});
            match self.remove_box(None, &row, "box.expired", data).await {
                Ok(()) => self.metrics.expired(),
                Err(e) => {
                    tracing::error!(box_id = %id, error = %e, "cannot delete an expired box")
                }
            }
        }
        let idle_ms = self.config.idle_pause_secs.saturating_mul(1000) as i64;
        if idle_ms == 0 {
            return;
        }
        let mut paused = 0;
        for live in self.live_boxes() {
            if paused >= SWEEP_BATCH {
                break;
            }
            // Idle: not paused already, not used recently, no call in
            // flight.
            if live.paused.load(Ordering::Relaxed)
                || now - live.last_activity.load(Ordering::Relaxed) < idle_ms
                || live.in_flight() > 0
                || !live.handle.is_alive()
            {
                continue;
            }
            let row = match self.store.box_by_id(live.handle.id()) {
                Ok(Some(row)) => row,
                _ => continue,
            };
            if row.state != BoxState::Running || BoxMeta::of(&row).keep_alive {
                // Not a candidate again before another idle period.
                live.touch();
                continue;
            }
            match self.pause_row(&row, None, "idle").await {
                Ok(_) => paused += 1,
                Err(e) => {
                    tracing::warn!(box_id = %row.id, error = %e, "cannot pause an idle box")
                }
            }
        }
    }

    /// A live box's agent exited: unless the box is being deleted or
    /// restarted (then another box, or none, is live under its id), it is
    /// marked failed with the reason, which a restart recovers from.
    async fn agent_exited(&self, live: Weak<LiveBox>) {
        let Some(live) = live.upgrade() else { return };
        let id = live.handle.id().to_string();
        let is_current = || self.live(&id).is_some_and(|l| Arc::ptr_eq(&l, &live));
        if !is_current() {
            return;
        }
        // A pause or restart under way finishes first.
        let _turn = live.lifecycle.lock().await;
        if !is_current() {
            return;
        }
        match self.store.box_by_id(&id) {
            Ok(Some(row)) if matches!(row.state, BoxState::Running | BoxState::Paused) => self
                .mark_failed(
                    &row,
                    "its init process (boxd-agent) exited; restart the box",
                ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(box_id = %id, error = %e, "cannot read a box whose agent exited")
            }
        }
    }

    /// The sweeper's loop, for the daemon's life: expiries and idle pauses
    /// each tick, and boxes whose agent exited as soon as that happens.
    pub async fn sweep_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut exits = self.agent_exits_rx.lock().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep().await,
                Some(live) = exits.recv() => self.agent_exited(live).await,
            }
        }
    }
}
