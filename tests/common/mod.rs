//! Shared helpers for the integration tests: a runtime on a private data
//! directory and cgroup parent, and boxes that are destroyed even when a
//! test fails.
#![allow(dead_code)]

pub mod daemon;
pub mod https;
pub mod images;
pub mod outside;
pub mod service;
pub mod skip;
pub mod test_ca;

pub use skip::skip;

use boxd_agent::protocol::SpawnRequest;
use boxd_agent::Completed;
use boxd_runtime::{BoxHandle, BoxSpec, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");

/// A runtime with its own data dir and cgroup parent, removed on drop.
pub struct TestRuntime {
    pub rt: Runtime,
    pub dir: PathBuf,
}

impl std::ops::Deref for TestRuntime {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.rt
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        for rec in self.rt.box_records() {
            if let Ok(h) = self.rt.adopt(&rec.id) {
                let _ = self.rt.destroy(h);
            }
        }
        remove_cgroup_parent(&self.rt.config().cgroup_parent);
        boxd_runtime::storage::unmount(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every cgroup directory a parent name can have on this host.
pub fn cgroup_parent_dirs(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            out.push(e.path().join(parent));
        }
    }
    out.push(Path::new("/sys/fs/cgroup").join(parent));
    out.into_iter().filter(|p| p.is_dir()).collect()
}

pub fn remove_cgroup_parent(parent: &str) {
    for d in cgroup_parent_dirs(parent) {
        let _ = std::fs::remove_dir(d);
    }
}

static N: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Returns a fresh runtime, or `None` (after saying why, loudly) when this
/// machine cannot run boxes.
pub fn runtime() -> Option<Arc<TestRuntime>> {
    if !nix::unistd::geteuid().is_root() {
        skip("boxes need root (user namespaces with id maps, overlayfs, cgroups); run the tests as root");
        return None;
    }
    let dir = std::env::temp_dir().join(unique("boxd-test"));
    let mut cfg = RuntimeConfig::new(&dir, AGENT);
    cfg.cgroup_parent = unique("boxd-test");
    match Runtime::new(cfg) {
        Ok(rt) => Some(Arc::new(TestRuntime { rt, dir })),
        Err(e) => panic!("runtime failed to start on a root machine: {e}"),
    }
}

/// A box destroyed on drop.
pub struct TestBox {
    pub rt: Arc<TestRuntime>,
    pub handle: Option<BoxHandle>,
}

impl std::ops::Deref for TestBox {
    type Target = BoxHandle;
    fn deref(&self) -> &BoxHandle {
        self.handle.as_ref().expect("box already destroyed")
    }
}

impl TestBox {
    pub fn new(rt: &Arc<TestRuntime>, spec: BoxSpec) -> TestBox {
        let handle = rt
            .create(&spec)
            .unwrap_or_else(|e| panic!("create {}: {e}", spec.id));
        TestBox {
            rt: rt.clone(),
            handle: Some(handle),
        }
    }

    pub fn default(rt: &Arc<TestRuntime>) -> TestBox {
        Self::new(rt, BoxSpec::new(unique("box")))
    }

    /// Runs a shell command and returns its result.
    pub async fn sh(&self, cmd: &str) -> Completed {
        self.exec(SpawnRequest::shell(cmd))
            .await
            .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
    }

    /// Runs a shell command that must succeed; returns its stdout.
    pub async fn ok(&self, cmd: &str) -> String {
        let c = self.sh(cmd).await;
        assert_eq!(
            c.status.code,
            0,
            "{cmd:?} failed: stdout={} stderr={}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        );
        String::from_utf8_lossy(&c.stdout).into_owned()
    }

    pub fn destroy(mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.destroy(h).expect("destroy");
        }
    }
}

impl Drop for TestBox {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.rt.destroy(h);
        }
    }
}

/// Pages of the file at `path` that sit in the page cache not yet written
/// to disk (dirty or under writeback), from `cachestat(2)` (Linux 6.5+);
/// `None` where the kernel lacks it.
pub fn unwritten_pages(path: &Path) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let range = Range { off: 0, len: 0 };
    let mut st = Stat::default();
    // SAFETY: cachestat fills `st`; both structs match the kernel's.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            &range as *const Range,
            &mut st as *mut Stat,
            0u32,
        )
    };
    (rc == 0).then_some(st.dirty + st.writeback)
}
