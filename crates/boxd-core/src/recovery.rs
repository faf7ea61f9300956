//! Start-up recovery: what the store says exists is made true again
//! after a restart, a crash or a host reboot.
//!
//! Owns the order of a start: boxes re-adopted (or marked failed, or the
//! half-made removed), snapshots and volumes reconciled with their files,
//! adopted boxes' networks restored, expired boxes deleted, boxes that
//! died while boxd was down restarted, init commands run. Never serves a
//! call: the front ends start after [`BoxService::recover`].

use crate::boxes::{Attach, BoxMeta};
use crate::service::{BoxService, LiveBox};
use boxd_store::{BoxRow, BoxState};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// How many adopted boxes get their network back at once at start.
const ADOPT_AT_ONCE: usize = 16;

impl BoxService {
    /// Everything a start must do before calls are served.
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        use anyhow::Context;
        let svc = self.clone();
        let died = tokio::task::spawn_blocking(move || {
            let died = svc.recover_boxes()?;
            svc.recover_snapshots()?;
            svc.recover_volumes()?;
            anyhow::Ok(died)
        })
        .await
        .context("re-adopt boxes")??;
        self.recover_network()
            .await
            .context("restore the networks of adopted boxes")?;
        // Boxes that expired while boxd was down go before anything is
        // served.
        self.sweep().await;
        // Boxes whose processes died while boxd was down (a host reboot)
        // start again on their files.
        for row in died {
            if let Err(e) = self
                .restart_row(&row, None, "died while boxd was down")
                .await
            {
                tracing::error!(box_id = %row.id, error = %e, "cannot restart a box");
            }
        }
        self.run_inits_after_restart()
            .context("run the init commands of adopted boxes")
    }

    /// Re-registers the networks of adopted boxes (several at once; the
    /// host's links are listed once for all of them) and removes links a
    /// crash left behind.
    async fn recover_network(&self) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        let Some(net) = &self.network else {
            return Ok(());
        };
        let links: HashSet<u32> = net.link_slots().await?.into_iter().collect();
        let adoptable: Vec<(BoxRow, Arc<LiveBox>)> = self
            .store
            .all_boxes()?
            .into_iter()
            .filter(|row| matches!(row.state, BoxState::Running | BoxState::Paused))
            .filter_map(|row| {
                let live = self.live(&row.id).filter(|l| l.handle.is_alive())?;
                Some((row, live))
            })
            .collect();
        let restored: Vec<Option<u32>> = futures_util::stream::iter(adoptable)
            .map(|(row, live)| {
                let links = &links;
                async move {
                    let (slot, pid) = (live.handle.record().slot, live.handle.pid());
                    let how = Attach::Adopt {
                        link_present: links.contains(&slot),
                    };
                    let restored = match self.secrets.box_rules(&self.store, &row.id) {
                        Ok(rules) => {
                            let meta = BoxMeta::of(&row);
                            self.attach_network(&row.id, &meta, slot, pid, Arc::new(rules), how)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    match restored {
                        Ok(()) => Some(slot),
                        Err(e) => {
                            tracing::error!(box_id = %row.id, error = %e, "cannot restore a box's network");
                            self.mark_failed(&row, "its network could not be restored");
                            None
                        }
                    }
                }
            })
            .buffer_unordered(ADOPT_AT_ONCE)
            .collect()
            .await;
        let live_slots: HashSet<u32> = restored.into_iter().flatten().collect();
        let removed = net.remove_leftovers(&live_slots).await?;
        if removed > 0 {
            tracing::warn!(removed, "removed box links left by an earlier run");
        }
        Ok(())
    }

    /// Removes a box at start (its runtime remains, its record) and audits
    /// `kind`; `false` (logged) if its runtime remains could not go.
    fn remove_at_start(&self, row: &BoxRow, kind: &str, data: Value) -> anyhow::Result<bool> {
        if let Ok(handle) = self.runtime.adopt(&row.id) {
            if let Err(e) = self.runtime.destroy(handle) {
                tracing::error!(box_id = %row.id, kind, error = %e, "cannot remove a box at start");
                return Ok(false);
            }
        }
        self.store.delete_box(&row.team_id, &row.id)?;
        self.audit(&row.team_id, None, Some(row), kind, data);
        Ok(true)
    }

    /// After a (re)start: re-adopt every box the store says exists, mark
    /// the dead ones failed, and remove what a crash left half made.
    /// Returns the boxes that were up and died while boxd was down (a
    /// host reboot): the caller restarts them.
    fn recover_boxes(&self) -> anyhow::Result<Vec<BoxRow>> {
        let rows = self.store.all_boxes()?;
        let mut died = Vec::new();
        let (mut adopted, mut failed, mut abandoned) = (0, 0, 0);
        for row in &rows {
            match row.state {
                BoxState::Deleted => {
                    // A delete was cut short: finish it.
                    let data = json!({"finished_at_start": true});
                    if self.remove_at_start(row, "box.delete", data)? {
                        tracing::warn!(box_id = %row.id, "finished a delete that boxd's stop cut short");
                    }
                }
                BoxState::Creating => {
                    // The create call never answered: nobody knows this box.
                    let data = json!({"reason": "boxd stopped while the box was being created"});
                    if self.remove_at_start(row, "box.create_abandoned", data)? {
                        abandoned += 1;
                    }
                }
                BoxState::Running | BoxState::Paused | BoxState::Failed => {
                    // A spec (or egress rule) that does not parse fails
                    // closed: the box is failed, its processes are killed,
                    // it gets no network (only running and paused boxes
                    // get theirs back) and is never restarted; deleting
                    // it still works.
                    let meta = match BoxMeta::read(row) {
                        Ok(meta) => Some(meta),
                        Err(reason) => {
                            tracing::error!(box_id = %row.id, reason,
                                "a box's stored spec cannot be read: it is marked failed and denied all network");
                            if row.state != BoxState::Failed {
                                self.mark_failed(
                                    row,
                                    &format!("{reason}; it is denied all network (delete it)"),
                                );
                                failed += 1;
                            }
                            None
                        }
                    };
                    if let Some(at) = meta.as_ref().and_then(|m| m.expires_at) {
                        self.expiries
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(row.id.clone(), at);
                    }
                    match self.runtime.adopt(&row.id) {
                        Ok(handle) => {
                            let alive = handle.is_alive();
                            let live = self.insert_live(handle);
                            if meta.is_none() {
                                // A failed box runs nothing: its processes
                                // go (its files stay until it is deleted).
                                if alive {
                                    if let Err(e) = live.handle.cgroup().kill() {
                                        tracing::error!(box_id = %row.id, error = %e,
                                            "cannot kill the processes of a box whose spec cannot be read");
                                    }
                                    if let Err(e) = live.handle.thaw() {
                                        tracing::warn!(box_id = %row.id, error = %e,
                                            "cannot thaw a box whose spec cannot be read");
                                    }
                                }
                            } else if alive {
                                self.reconcile_pause(row, &live);
                                adopted += 1;
                            } else if row.state != BoxState::Failed {
                                self.mark_failed(row, "its processes died while boxd was down");
                                died.push(row.clone());
                                failed += 1;
                            }
                        }
                        Err(e) if meta.is_some() && row.state != BoxState::Failed => {
                            let reason = format!("its runtime state cannot be adopted: {e}");
                            self.mark_failed(row, &reason);
                            failed += 1;
                        }
                        Err(e) => {
                            tracing::debug!(box_id = %row.id, error = %e, "a failed box has no runtime state")
                        }
                    }
                }
            }
        }
        // Boxes on disk the store does not know (their delete was
        // interrupted after the record went): finish the delete.
        for record in self.runtime.box_records() {
            if rows.iter().any(|r| r.id == record.id) {
                continue;
            }
            tracing::warn!(box_id = %record.id, "removing a box the store does not know");
            if let Ok(handle) = self.runtime.adopt(&record.id) {
                if let Err(e) = self.runtime.destroy(handle) {
                    tracing::error!(box_id = %record.id, error = %e, "cannot remove an orphan box");
                }
            }
        }
        tracing::info!(adopted, failed, abandoned, "boxes recovered");
        Ok(died)
    }
}
