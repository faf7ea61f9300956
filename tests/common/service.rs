//! A box service of the core on a private data directory and cgroup
//! parent, driven without any protocol; everything it made is removed on
//! drop (boxes, pool mounts, cgroups, the directory).

use super::{remove_cgroup_parent, unique, AGENT};
use boxd_core::{BoxService, Caller, CoreConfig, Secrets};
use boxd_runtime::{Runtime, RuntimeConfig};
use boxd_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

pub struct TestService {
    pub svc: Arc<BoxService>,
    pub caller: Caller,
    pub dir: PathBuf,
}

impl std::ops::Deref for TestService {
    type Target = Arc<BoxService>;
    fn deref(&self) -> &Arc<BoxService> {
        &self.svc
    }
}

impl TestService {
    /// A service without networking (boxes have loopback only), or
    /// `None` after saying why (not root).
    pub fn start() -> Option<TestService> {
        if !nix::unistd::geteuid().is_root() {
            super::skip("the box service needs root (user namespaces, overlayfs, cgroups)");
            return None;
        }
        let dir = std::env::temp_dir().join(unique("boxd-core-test"));
        std::fs::create_dir_all(&dir).expect("make the data directory");
        let store = Store::open(dir.join("boxd.db")).expect("open the store");
        let mut cfg = RuntimeConfig::new(&dir, AGENT);
        cfg.cgroup_parent = unique("boxd-core-test");
        let runtime = Runtime::new(cfg).expect("the runtime starts on a root machine");
        let secrets = Secrets::load(&dir.join("master.key"), &dir, &store, false, None)
            .expect("load secrets");
        let team = store.ensure_default_team().expect("default team");
        let (_, key) = store.create_key(&team.id, "test").expect("key");
        let svc = Arc::new(BoxService::new(
            CoreConfig::default(),
            store,
            Arc::new(runtime),
            None,
            secrets,
        ));
        let caller = svc.authenticate(&key).expect("the new key authenticates");
        Some(TestService { svc, caller, dir })
    }

    /// Creates a box for the test's caller; answers its id.
    pub async fn new_box(&self, req: boxd_core::CreateBox) -> String {
        let what = format!("{req:?}");
        match self.svc.create_box(&self.caller, req).await {
            Ok(info) => info.row.id,
            Err(e) => panic!("create {what}: {e:?}"),
        }
    }

    /// A caller of another team.
    pub fn other_team(&self) -> Caller {
        let team = self.svc.store.create_team(&unique("other")).expect("team");
        let (_, key) = self.svc.store.create_key(&team.id, "other").expect("key");
        self.svc.authenticate(&key).expect("authenticates")
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        let rt = &self.svc.runtime;
        for rec in rt.box_records() {
            if let Ok(h) = rt.adopt(&rec.id) {
                let _ = h.thaw();
                let _ = rt.destroy(h);
            }
        }
        remove_cgroup_parent(&rt.config().cgroup_parent);
        boxd_runtime::storage::unmount(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
