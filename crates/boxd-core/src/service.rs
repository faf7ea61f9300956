//! The box service itself: the handles of live boxes, who may see which
//! box (a caller sees only its team's boxes; anything else is not found),
//! and the mechanisms it orchestrates (store, runtime, network, secrets).
//!
//! Owns the map of live boxes and authentication of callers. Never touches
//! a box's namespaces or files directly: that goes through the runtime and
//! the box's agent. Never speaks a wire format.

use crate::error::{CoreError, CoreResult};
use crate::metrics::Metrics;
use crate::secrets::Secrets;
use boxd_net::Network;
use boxd_runtime::{BoxHandle, Runtime};
use boxd_store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use tokio::sync::{mpsc, watch};

/// What the service is told by the operator.
#[derive(Debug, Clone, Default)]
pub struct CoreConfig {
    /// A box without `keep_alive` and with no exec, stream or file call
    /// for this long is paused (0: never).
    pub idle_pause_secs: u64,
    /// Where image builds get their packages (`[images]`).
    pub debian: boxd_image::debian::DebianConfig,
}

/// Who is calling: an API key of a team. Every operation is on behalf of
/// one; it sees only its team's boxes, snapshots, volumes and settings.
#[derive(Debug, Clone)]
pub struct Caller {
    pub team_id: String,
    pub key_id: String,
}

/// A box the runtime knows, with its agent connection.
pub struct LiveBox {
    pub handle: BoxHandle,
    /// Unix ms of the last exec, stream or file call (or of the create or
    /// adoption): the idle-pause clock. One relaxed store per call.
    pub last_activity: AtomicI64,
    /// Whether the box is (being) paused, mirroring the store, so the
    /// idle sweeper skips paused boxes without reading the store.
    pub paused: AtomicBool,
    /// Serializes pause and resume of this box.
    pub lifecycle: tokio::sync::Mutex<()>,
    /// Calls in flight on the box (commands, streams, file operations):
    /// a pause waits for them, the idle sweeper leaves the box alone.
    in_flight: AtomicUsize,
    /// Woken when the last call in flight ends.
    drained: tokio::sync::Notify,
}

/// One call in flight on a box, for as long as it is held (a stream holds
/// it until its end). Derefs to the box.
pub struct Busy(Arc<LiveBox>);

impl Busy {
    /// Counts a call on `live`, unless a pause is under way (`None`): the
    /// caller then waits for the pause and resumes the box.
    pub(crate) fn enter(live: &Arc<LiveBox>) -> Option<Busy> {
        live.in_flight.fetch_add(1, Ordering::SeqCst);
        let busy = Busy(live.clone());
        // Checked after counting: a pause sets `paused` before it waits for
        // the count to drain, so one of the two always sees the other.
        if live.paused.load(Ordering::SeqCst) {
            return None;
        }
        live.touch();
        Some(busy)
    }
}

impl Clone for Busy {
    fn clone(&self) -> Busy {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.0.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

impl std::ops::Deref for Busy {
    type Target = LiveBox;
    fn deref(&self) -> &LiveBox {
        &self.0
    }
}

impl LiveBox {
    pub fn new(handle: BoxHandle) -> LiveBox {
        LiveBox {
            handle,
            last_activity: AtomicI64::new(now_ms()),
            paused: AtomicBool::new(false),
            lifecycle: tokio::sync::Mutex::new(()),
            in_flight: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
        }
    }

    /// How many calls are in flight on the box.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` for the calls in flight to end; `false` if some
    /// still run.
    pub(crate) async fn drain(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Records a call on the box (restarts its idle clock).
    pub fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }

    /// CPU time used by the box's processes, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        self.handle
            .cgroup()
            .cpu_usage_usec()
            .ok()
            .map(|us| us.saturating_mul(1000))
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The box service: every front end holds one `Arc<BoxService>` and calls
/// its operations (in `boxes`, `lifecycle`, `exec`, `files`, `snapshots`,
/// `volumes`, `settings`, `audit`).
pub struct BoxService {
    pub config: CoreConfig,
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub metrics: Metrics,
    /// Box networking; `None` when networking is disabled.
    pub network: Option<Network>,
    /// Master keys, boxd's CA and the trust bundle.
    pub secrets: Secrets,
    boxes: RwLock<HashMap<String, Arc<LiveBox>>>,
    /// Held while a box starts using a snapshot (its record is written)
    /// and while deleted snapshots are freed, so a snapshot never loses
    /// its files between a restore's lookup and its record.
    pub(crate) snapshot_refs: Mutex<()>,
    /// Box id → when it expires (unix ms), for boxes with a lifetime. The
    /// store's spec holds the same value; this copy is what the sweeper
    /// scans.
    pub(crate) expiries: Mutex<HashMap<String, i64>>,
    /// The newest audit `seq`, so followers wake up when it grows.
    pub(crate) audit_seq: watch::Sender<i64>,
    /// Live boxes whose agent exited, sent by one watcher task per live box
    /// (each sends at most once) to the sweeper, which marks them failed.
    agent_exits: mpsc::Sender<Weak<LiveBox>>,
    pub(crate) agent_exits_rx: tokio::sync::Mutex<mpsc::Receiver<Weak<LiveBox>>>,
    /// Box id → a lock held for the length of its restart (the box is not
    /// live in between): a call that finds no live box waits on it instead
    /// of recording the box failed, and two restarts take turns.
    restarts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a call waits for a restart of its box under way.
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A restart under way: while held, [`BoxService::wait_restart`] waits.
pub(crate) struct RestartTurn<'a> {
    svc: &'a BoxService,
    id: String,
    gate: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for RestartTurn<'_> {
    fn drop(&mut self) {
        let mut map = self.svc.restarts.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.id)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate))
        {
            map.remove(&self.id);
        }
    }
}

/// How many agent exits may wait for the sweeper before their watchers wait.
const AGENT_EXITS_QUEUE: usize = 256;

impl BoxService {
    pub fn new(
        config: CoreConfig,
        store: Store,
        runtime: Arc<Runtime>,
        network: Option<Network>,
        secrets: Secrets,
    ) -> BoxService {
        let (agent_exits, agent_exits_rx) = mpsc::channel(AGENT_EXITS_QUEUE);
        BoxService {
            agent_exits,
            agent_exits_rx: tokio::sync::Mutex::new(agent_exits_rx),
            restarts: Mutex::new(HashMap::new()),
            config,
            store,
            runtime,
            network,
            secrets,
            metrics: Metrics::new(),
            boxes: RwLock::new(HashMap::new()),
            snapshot_refs: Mutex::new(()),
            expiries: Mutex::new(HashMap::new()),
            audit_seq: watch::channel(0).0,
        }
    }

    /// The caller an API key stands for.
    pub fn authenticate(&self, key: &str) -> CoreResult<Caller> {
        match self.store.authenticate(key)? {
            Some(info) => Ok(Caller {
                team_id: info.team_id,
                key_id: info.id,
            }),
            None => Err(CoreError::Unauthenticated(
                "invalid or revoked API key".into(),
            )),
        }
    }

    pub fn live(&self, id: &str) -> Option<Arc<LiveBox>> {
        self.boxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every live box (a snapshot of the map).
    pub fn live_boxes(&self) -> Vec<Arc<LiveBox>> {
        self.boxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn insert_live(&self, handle: BoxHandle) -> Arc<LiveBox> {
        let live = Arc::new(LiveBox::new(handle));
        self.insert_live_arc(live.clone());
        live
    }

    pub(crate) fn insert_live_arc(&self, live: Arc<LiveBox>) {
        self.watch_agent(&live);
        self.boxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(live.handle.id().to_string(), live);
    }

    /// Tells the sweeper when `live`'s agent exits (the task holds only a
    /// weak reference, and ends with the agent: a deleted or restarted box's
    /// old agent is killed, and the sweeper then finds another box or none
    /// under the id).
    fn watch_agent(&self, live: &Arc<LiveBox>) {
        let (Some(exited), Ok(rt)) = (live.handle.exited(), tokio::runtime::Handle::try_current())
        else {
            tracing::warn!(box_id = %live.handle.id(), "the box's agent cannot be watched; its exit is noticed at the next call");
            return;
        };
        let (weak, tx) = (Arc::downgrade(live), self.agent_exits.clone());
        rt.spawn(async move {
            if let Err(e) = exited.await {
                tracing::warn!(error = %e, "watching a box's agent failed");
                return;
            }
            let _ = tx.send(weak).await;
        });
    }

    pub(crate) fn remove_live(&self, id: &str) -> Option<Arc<LiveBox>> {
        self.boxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Begins a restart of box `id`, after any other restart of it ends.
    pub(crate) async fn restart_turn(&self, id: &str) -> RestartTurn<'_> {
        loop {
            let other = {
                let mut map = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(id) {
                    Some(gate) => gate.clone(),
                    None => {
                        let gate = Arc::new(tokio::sync::Mutex::new(()));
                        if let Ok(held) = gate.clone().try_lock_owned() {
                            map.insert(id.to_string(), gate.clone());
                            return RestartTurn {
                                svc: self,
                                id: id.to_string(),
                                gate,
                                _held: held,
                            };
                        }
                        continue;
                    }
                }
            };
            drop(other.lock().await);
        }
    }

    /// Whether a restart of box `id` is under way.
    pub(crate) fn is_restarting(&self, id: &str) -> bool {
        self.restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Waits (up to a minute) for a restart of box `id` under way; `false`
    /// when none is.
    pub(crate) async fn wait_restart(&self, id: &str) -> bool {
        let gate = self
            .restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        match gate {
            Some(gate) => {
                let _ = tokio::time::timeout(RESTART_WAIT, gate.lock()).await;
                true
            }
            None => false,
        }
    }

    pub fn live_count(&self) -> usize {
        self.boxes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The metrics in the Prometheus text format: figures of every team,
    /// so only the operator's (the default team's keys, which include the
    /// admin key) may read them.
    pub fn metrics_text(&self, caller: &Caller) -> CoreResult<String> {
        let team = self.store.team(&caller.team_id)?;
        if team.is_none_or(|t| t.name != boxd_store::DEFAULT_TEAM) {
            return Err(CoreError::Forbidden(
                "the metrics cover every team: use a key of the operator's (default) team".into(),
            ));
        }
        let counts = self.store.count_boxes_by_state()?;
        let cpu_ns = self.live_boxes().iter().filter_map(|l| l.cpu_ns()).sum();
        Ok(self.metrics.render(&counts, cpu_ns))
    }
}
