//! boxd as the comparison bench drives it: the library (`boxd_runtime::
//! Runtime`) in this process, with its data dir inside the workspace and
//! its own cgroup parent — the same path as `bench/runtime.rs`.

use anyhow::{bail, Context, Result};
use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::image::Layer;
use boxd_runtime::{BoxHandle, BoxSpec, CapturedLayers, Runtime, RuntimeConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Boxd {
    rt: Runtime,
    seq: AtomicUsize,
}

/// One create → exec `true` → destroy cycle.
pub struct Cycle {
    /// Create until `true` has exited (what `bench/runtime.rs` times).
    pub to_exit: Duration,
    /// The whole cycle, destroy included (what a CLI peer's exit includes).
    pub total: Duration,
}

impl Boxd {
    pub fn new(data_dir: &std::path::Path, cgroup_parent: &str) -> Result<Boxd> {
        let mut cfg = RuntimeConfig::new(data_dir, AGENT);
        cfg.cgroup_parent = cgroup_parent.to_string();
        let rt = Runtime::new(cfg).context("start the boxd runtime")?;
        Ok(Boxd {
            rt,
            seq: AtomicUsize::new(0),
        })
    }

    pub fn mode(&self) -> String {
        self.rt.cgroup_mode().to_string()
    }

    /// A tokio runtime for one thread's agent calls.
    pub fn tokio() -> Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build a tokio runtime")
    }

    pub fn create(&self) -> Result<BoxHandle> {
        self.create_from(&[])
    }

    /// A box whose lower stack starts with snapshot `layers` (none: a
    /// plain box of the host image).
    pub fn create_from(&self, layers: &[Layer]) -> Result<BoxHandle> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut spec = BoxSpec::new(format!("c{n}"));
        spec.snapshot_layers = layers.to_vec();
        self.rt.create(&spec).context("create a box")
    }

    /// Runs `sh -c script` in the box (at most `timeout`); fails unless it
    /// exits 0.
    pub fn sh(
        &self,
        tokio: &tokio::runtime::Runtime,
        b: &BoxHandle,
        script: &str,
        timeout: Duration,
    ) -> Result<()> {
        let out = tokio
            .block_on(async {
                tokio::time::timeout(timeout, b.exec(SpawnRequest::argv(["sh", "-c", script])))
                    .await
            })
            .with_context(|| format!("exec `{script}`: timed out after {timeout:?}"))?
            .with_context(|| format!("exec `{script}` through the agent"))?;
        if out.status.code != 0 {
            bail!(
                "`{script}` in a box exited with {}: {}",
                out.status.code,
                crate::common::tail(&out.stderr)
            );
        }
        Ok(())
    }

    /// `Runtime::snapshot`: the box's upper layers captured as snapshot `id`.
    pub fn snapshot(&self, b: &BoxHandle, id: &str) -> Result<CapturedLayers> {
        self.rt
            .snapshot(b, id)
            .with_context(|| format!("snapshot {id}"))
    }

    pub fn remove_snapshot(&self, id: &str) -> Result<()> {
        self.rt
            .remove_snapshot(id)
            .with_context(|| format!("remove snapshot {id}"))
    }

    pub fn exec_true(&self, tokio: &tokio::runtime::Runtime, b: &BoxHandle) -> Result<()> {
        let out = tokio
            .block_on(async {
                tokio::time::timeout(EXEC_TIMEOUT, b.exec(SpawnRequest::argv(["/bin/true"]))).await
            })
            .context("exec `true`: timed out")?
            .context("exec `true` through the agent")?;
        if out.status.code != 0 {
            bail!("`true` in a box exited with {}", out.status.code);
        }
        Ok(())
    }

    pub fn destroy(&self, b: BoxHandle) -> Result<()> {
        self.rt.destroy(b).context("destroy a box")
    }

    /// create → exec `true` → destroy; the box is destroyed even when the
    /// exec fails.
    pub fn cycle(&self, tokio: &tokio::runtime::Runtime) -> Result<Cycle> {
        let t = Instant::now();
        let b = self.create()?;
        let ran = self.exec_true(tokio, &b);
        let to_exit = t.elapsed();
        let destroyed = self.destroy(b);
        let total = t.elapsed();
        ran?;
        destroyed?;
        Ok(Cycle { to_exit, total })
    }
}

/// Boxes destroyed when this guard goes, whatever happened in between.
pub struct Boxes<'a> {
    boxd: &'a Boxd,
    pub list: Vec<BoxHandle>,
}

impl<'a> Boxes<'a> {
    pub fn new(boxd: &'a Boxd) -> Self {
        Boxes {
            boxd,
            list: Vec::new(),
        }
    }

    /// Destroys every box now; returns the first failure.
    pub fn clear(&mut self) -> Result<()> {
        let mut first = Ok(());
        for b in self.list.drain(..) {
            let r = self.boxd.destroy(b);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Boxes<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!("compare: CLEANUP PROBLEM: {e:#}");
        }
    }
}
