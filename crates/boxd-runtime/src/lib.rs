//! `boxd-runtime`: making and destroying boxes.
//!
//! A box is an overlay root over read-only image layers, its own mount, pid,
//! network, uts, ipc and cgroup namespaces, a user namespace that maps box
//! root to an unprivileged host id range, cgroup limits, a reduced capability
//! set, `no_new_privs` and a seccomp filter — with `boxd-agent` as PID 1.
//! [`Runtime`] is the library API the server calls; it knows nothing about
//! HTTP, teams or policy.
//!
//! On disk, under the data directory:
//! `images/` (the image store, see [`boxd_image::store`]), `mnt/` (an empty mountpoint each
//! box covers with a private tmpfs) and the storage pool `pool/` (see
//! [`storage`]) with `pool/boxes/<id>/` (`box.json`, the `upper-N` and
//! `work-N` dirs of each overlay, the agent socket; limited to the box's
//! disk size), `pool/volumes/<id>/` (volume contents, owned by
//! [`idmap::VOLUME_OWNER`]) and `pool/snapshots/<id>/upper-N` (snapshot
//! layers, see [`snapshot`]).
//!
//! Never decides who may do what: it is told by its caller.

pub mod cgroup;
pub use boxd_image::durable;
pub mod env;
pub mod error;
pub mod idmap;
pub use boxd_image as image;
pub mod seccomp;
pub mod setup;
pub mod snapshot;
mod spawn;
pub mod storage;

/// The workspace's one skip helper, for unit tests.
#[cfg(test)]
#[path = "../../../tests/common/skip.rs"]
mod test_skip;

pub use cgroup::{BoxCgroup, CgroupMode, Limits};
pub use error::{Result, RuntimeError};

use boxd_agent::protocol::SpawnRequest;
use boxd_agent::{AgentClient, AgentConfig, Completed, ProcessStream};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Where the runtime keeps its state and finds the agent.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    /// The `boxd-agent` executable.
    pub agent_path: PathBuf,
    /// Name of the parent cgroup of all boxes.
    pub cgroup_parent: String,
    /// How many boxes may exist at once (at most `idmap::MAX_SLOTS`; the
    /// daemon lowers it to what its network address plan holds).
    pub max_boxes: u32,
    /// The storage pool's driver and size.
    pub storage: storage::StorageConfig,
}

impl RuntimeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, agent_path: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            data_dir: data_dir.into(),
            agent_path: agent_path.into(),
            cgroup_parent: "boxd".into(),
            max_boxes: idmap::MAX_SLOTS,
            storage: storage::StorageConfig::default(),
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoxSpec {
    /// Unique id: 1-63 of `a-z0-9-_`.
    pub id: String,
    /// Hostname inside the box (defaults to the id).
    pub hostname: Option<String>,
    /// Runtime or image name (`host`, `node`, `python-alpine`, an
    /// imported image's name).
    pub runtime: String,
    /// The image's manifest digest, when it is pinned (a box restored from
    /// a snapshot runs the image the snapshot was taken on); else
    /// `runtime` is resolved.
    #[serde(default)]
    pub image: Option<String>,
    /// Environment applied to every process.
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// Size of `/tmp` and `/dev/shm` (tmpfs, charged to the box's memory).
    pub tmp_bytes: u64,
    /// Most bytes the box's writable layer may hold (enforced when the
    /// storage pool enforces limits, see [`Runtime::storage`]).
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// A CA bundle the box must trust, mounted read-only over its system
    /// bundles.
    pub trust: Option<TrustBundle>,
    /// Snapshot layers stacked above the image's layers (top-most first;
    /// each targets one of the image's overlay targets).
    #[serde(default)]
    pub snapshot_layers: Vec<image::Layer>,
    /// Volumes mounted into the box (id-mapped: the volume's owner is box
    /// root), after everything else of its root.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
}

/// A host directory (a volume, see [`Runtime::create_volume`]) mounted at
/// `target` in the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: PathBuf,
    /// Absolute, normalized path inside the box (not `/`).
    pub target: String,
    pub read_only: bool,
}

/// A host file (PEM certificates) put read-only over the box's CA bundle
/// files: over each of `paths` that is a regular file in the box's image,
/// and always at the first of `paths` (created if the image lacks it), so
/// the environment variables can name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    pub file: PathBuf,
    pub paths: Vec<String>,
}

impl BoxSpec {
    /// A spec with safe defaults: the host image, 2048 pids, 512 MiB `/tmp`.
    pub fn new(id: impl Into<String>) -> Self {
        BoxSpec {
            id: id.into(),
            hostname: None,
            runtime: image::HOST_IMAGE.into(),
            image: None,
            env: BTreeMap::new(),
            limits: Limits {
                memory_bytes: None,
                cpu_millis: None,
                pids: Some(2048),
            },
            tmp_bytes: 512 << 20,
            disk_bytes: None,
            trust: None,
            volumes: Vec::new(),
            snapshot_layers: Vec::new(),
        }
    }
}

/// The file of a snapshot's directory naming the image its layers lie over.
const SNAPSHOT_IMAGE_FILE: &str = "image";

/// What a snapshot capture wrote: its layers (one per overlay of the box)
/// and the bytes of file data they hold.
#[derive(Debug, Clone)]
pub struct CapturedLayers {
    pub layers: Vec<image::Layer>,
    pub bytes: u64,
    /// How long the box was frozen (the copy).
    pub frozen: Duration,
}

/// What the runtime remembers about a box (`boxes/<id>/box.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoxRecord {
    pub id: String,
    pub slot: u32,
    /// Host pid of the agent.
    pub pid: i32,
    /// The agent's start time (clock ticks since boot), to detect pid reuse.
    pub start_time: u64,
    /// The image's manifest digest (older records: its name).
    pub image: String,
    pub hostname: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub cgroup: BoxCgroup,
    /// What the box was made from, so it can be started again on its
    /// files ([`Runtime::restart_notify`]); absent in records of older
    /// versions.
    #[serde(default)]
    pub spec: Option<BoxSpec>,
}

/// A live (or dead, after re-adoption) box.
pub struct BoxHandle {
    record: BoxRecord,
    pidfd: Option<OwnedFd>,
    /// Whether this process is the agent's parent (and must reap it).
    our_child: bool,
    agent: AgentClient,
}

impl BoxHandle {
    pub fn id(&self) -> &str {
        &self.record.id
    }
    pub fn record(&self) -> &BoxRecord {
        &self.record
    }
    /// Host pid of the box's PID 1.
    pub fn pid(&self) -> i32 {
        self.record.pid
    }
    /// The host uid (and gid) that box root maps to.
    pub fn host_root_id(&self) -> u32 {
        idmap::host_base(self.record.slot)
    }
    /// The agent connection for file and process operations.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }
    pub fn cgroup(&self) -> &BoxCgroup {
        &self.record.cgroup
    }
    /// Whether the box's agent is still running.
    pub fn is_alive(&self) -> bool {
        self.pidfd.as_ref().is_some_and(|fd| !spawn::has_exited(fd))
    }

    /// A future that resolves when the box's init process (the agent)
    /// exits; `None` when this handle has no pidfd to watch.
    pub fn exited(&self) -> Option<impl std::future::Future<Output = std::io::Result<()>>> {
        let fd = self.pidfd.as_ref()?.try_clone().ok()?;
        Some(spawn::exited(fd))
    }

    /// Starts a process in the box (its env is checked against the rules).
    pub async fn spawn(&self, req: SpawnRequest) -> Result<ProcessStream> {
        env::validate(&req.env)?;
        self.check_alive()?;
        Ok(self.agent.spawn(req).await?)
    }

    /// Runs a process to completion and collects its output.
    pub async fn exec(&self, req: SpawnRequest) -> Result<Completed> {
        env::validate(&req.env)?;
        self.check_alive()?;
        Ok(self.agent.exec(req).await?)
    }

    fn check_alive(&self) -> Result<()> {
        if self.is_alive() {
            Ok(())
        } else {
            Err(boxd_agent::ClientError::AgentGone.into())
        }
    }

    pub fn freeze(&self) -> Result<()> {
        self.record.cgroup.freeze()
    }
    pub fn thaw(&self) -> Result<()> {
        self.record.cgroup.thaw()
    }
}

/// The box runtime.
pub struct Runtime {
    cfg: RuntimeConfig,
    cgroups: CgroupMode,
    slots: Mutex<idmap::Slots>,
    seccomp: Vec<seccomp::EncodedProgram>,
    /// Boxes frozen for a snapshot: (captures in progress, whether the box
    /// was frozen before the first of them — then it stays frozen).
    holds: Mutex<std::collections::HashMap<String, (u32, bool)>>,
    pool: storage::Pool,
    images: image::Store,
}

fn check_name(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c))
}

/// Writes a box record: atomically and durably (see [`durable`]), since
/// adoption after a crash or reboot depends on it.
fn write_record(path: &Path, data: &[u8]) -> std::io::Result<()> {
    durable::write(path, data, 0o644)
}

/// Reads `box.json` from a box directory.
fn read_record(box_dir: &Path) -> Result<BoxRecord> {
    let path = box_dir.join("box.json");
    let bytes =
        std::fs::read(&path).map_err(RuntimeError::io(format!("read {}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RuntimeError::Setup(format!("{}: {e}", path.display())))
}

/// The environment a box's processes start with: the image's defaults
/// (`KEY=value`; `PATH` among them), below the box's own variables.
fn with_image_env(image: &[String], own: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = image
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The 22nd field of `/proc/<pid>/stat`: start time in clock ticks.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl Runtime {
    /// Opens the data directory, detects cgroups and builds the host image.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime> {
        let dd = &cfg.data_dir;
        if !dd.is_absolute() {
            return Err(RuntimeError::BadDataDir(
                dd.clone(),
                "it must be an absolute path",
            ));
        }
        if dd.to_string_lossy().contains([',', ':', '\n']) {
            return Err(RuntimeError::BadDataDir(
                dd.clone(),
                "it must not contain ',' or ':' (overlayfs option separators)",
            ));
        }
        for sub in ["images", "mnt"] {
            let p = dd.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(RuntimeError::io(format!("create {}", p.display())))?;
        }
        std::fs::set_permissions(dd, std::fs::Permissions::from_mode(0o711))
            .map_err(RuntimeError::io(format!("chmod {}", dd.display())))?;
        let pool = storage::Pool::open(dd, &cfg.storage)?;
        let pd = pool.root().to_path_buf();
        for sub in ["boxes", "volumes", "snapshots"] {
            let p = pd.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(RuntimeError::io(format!("create {}", p.display())))?;
        }
        // Box state is reachable only by root on the host.
        std::fs::set_permissions(pd.join("boxes"), std::fs::Permissions::from_mode(0o711))
            .map_err(RuntimeError::io("chmod the boxes directory"))?;
        // Volume contents (boxes reach them through their mounts) and
        // snapshot layers (box files with box-relative owners: box root's
        // set-id files are host-root owned there): only host root may
        // enter.
        for p in [pd.join("volumes"), pd.join("snapshots")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                .map_err(RuntimeError::io(format!("chmod {}", p.display())))?;
        }
        if !cfg.agent_path.is_file() {
            return Err(RuntimeError::Setup(format!(
                "the agent executable {} does not exist",
                cfg.agent_path.display()
            )));
        }
        let cgroups = CgroupMode::detect()?;
        cgroups.prepare_parent(&cfg.cgroup_parent)?;
        let images = image::Store::open(&dd.join("images"))?;
        image::ensure_host_image(&images)?;
        Self::remove_half_created(&pd, &cgroups, &cfg.cgroup_parent);
        Self::remove_unfinished_snapshots(&pd);
        let mut slots = idmap::Slots::new(cfg.max_boxes);
        for rec in Self::records(&pd) {
            slots.mark(rec.slot);
        }
        let seccomp = seccomp::encoded().map_err(|e| RuntimeError::Setup(e.to_string()))?;
        tracing::info!(
            cgroups = %cgroups,
            data_dir = %dd.display(),
            disk_limits = pool.enforces_limits(),
            "box runtime ready"
        );
        Ok(Runtime {
            cfg,
            cgroups,
            slots: Mutex::new(slots),
            seccomp,
            holds: Mutex::new(std::collections::HashMap::new()),
            pool,
            images,
        })
    }

    /// The runtime names boxes can be created with here
    /// ([`image::runtimes::available`]).
    pub fn runtimes(&self) -> Result<Vec<String>> {
        Ok(image::runtimes::available(&self.images)?)
    }

    /// The image store boxes are made from.
    pub fn images(&self) -> &image::Store {
        &self.images
    }

    pub fn cgroup_mode(&self) -> &CgroupMode {
        &self.cgroups
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The storage pool (whether it enforces disk and volume limits).
    pub fn storage(&self) -> &storage::Pool {
        &self.pool
    }

    /// Bytes box `id`'s own files take (its writable layer), as the pool
    /// last counted them; `None` when the pool does not count.
    pub fn disk_used(&self, id: &str) -> Option<u64> {
        if !check_name(id, &['_']) {
            return None;
        }
        self.pool.used_bytes(&self.boxes_dir().join(id))
    }

    fn boxes_dir(&self) -> PathBuf {
        self.pool.root().join("boxes")
    }

    /// The directory holding volume `id`'s files.
    pub fn volume_dir(&self, id: &str) -> Result<PathBuf> {
        if !check_name(id, &['_']) {
            return Err(RuntimeError::InvalidId(id.to_string()));
        }
        Ok(self.pool.root().join("volumes").join(id))
    }

    /// Creates volume `id`'s directory, empty, owned by the volume owner
    /// (box root in every box that mounts it), holding at most
    /// `limit_bytes` when the pool enforces limits.
    pub fn create_volume(&self, id: &str, limit_bytes: Option<u64>) -> Result<PathBuf> {
        let dir = self.volume_dir(id)?;
        self.pool
            .make_dir(&dir, 0o755, limit_bytes)
            .map_err(RuntimeError::io(format!("create {}", dir.display())))?;
        let owner = idmap::VOLUME_OWNER;
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(owner), Some(owner)) {
            let _ = std::fs::remove_dir(&dir);
            return Err(RuntimeError::io(format!("chown {}", dir.display()))(e));
        }
        Ok(dir)
    }

    /// Removes volume `id` and everything in it (absent already: fine).
    pub fn remove_volume(&self, id: &str) -> Result<()> {
        let dir = self.volume_dir(id)?;
        self.pool
            .remove_dir(&dir)
            .map_err(RuntimeError::io(format!("remove {}", dir.display())))
    }

    /// Ids of the volume directories on disk.
    pub fn volume_ids(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.pool.root().join("volumes")) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn records(pool: &Path) -> Vec<BoxRecord> {
        let Ok(rd) = std::fs::read_dir(pool.join("boxes")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| read_record(&e.path()).ok())
            .collect()
    }

    /// Removes boxes whose creation never finished (the process making them
    /// died before `box.json` was written): their processes, cgroups and
    /// files. A box is only ever listed once its record exists.
    fn remove_half_created(pool: &Path, cgroups: &CgroupMode, parent: &str) {
        let Ok(rd) = std::fs::read_dir(pool.join("boxes")) else {
            return;
        };
        for entry in rd.flatten() {
            let dir = entry.path();
            if read_record(&dir).is_ok() {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            tracing::warn!(box_id = %id, "removing a box whose creation did not finish");
            let cg = cgroups.box_cgroup(parent, &id);
            // Killing every process in its groups ends its pid namespace too.
            cleanup(&id, "kill a half-created box", cg.kill());
            cg.wait_empty(Duration::from_secs(5));
            cleanup(&id, "remove a half-created box's cgroup", cg.remove());
            cleanup(
                &id,
                "remove a half-created box's files",
                std::fs::remove_dir_all(&dir),
            );
        }
    }

    /// Records of every box on disk (running or not).
    pub fn box_records(&self) -> Vec<BoxRecord> {
        Self::records(self.pool.root())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, idmap::Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates and starts a box; returns once its agent is serving.
    pub fn create(&self, spec: &BoxSpec) -> Result<BoxHandle> {
        self.create_notify(spec, |_, _| {})
    }

    /// [`Runtime::create`], calling `started(slot, agent pid)` as soon as
    /// the box's first process (and so its namespaces) exists, while the
    /// box is still being built: the caller can prepare things that need
    /// those namespaces (its network) in parallel.
    pub fn create_notify(
        &self,
        spec: &BoxSpec,
        started: impl FnOnce(u32, i32),
    ) -> Result<BoxHandle> {
        if !check_name(&spec.id, &['_']) {
            return Err(RuntimeError::InvalidId(spec.id.clone()));
        }
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| spec.id.replace('_', "-"));
        if !check_name(&hostname, &[]) {
            return Err(RuntimeError::InvalidHostname(hostname));
        }
        env::validate(&spec.env)?;
        // No image is collected between resolving it and the box's record
        // naming it (`Runtime::remove_image` takes this lock exclusively).
        let _in_use = self.images.use_lock()?;
        let digest = match &spec.image {
            Some(d) => d.clone(),
            None => image::runtimes::resolve(&self.images, &spec.runtime)?,
        };
        let image = self.images.image(&digest)?;
        let dir = self.boxes_dir().join(&spec.id);
        let socket = dir.join("agent.sock");
        if socket.as_os_str().len() >= 108 {
            return Err(RuntimeError::BadDataDir(
                self.cfg.data_dir.clone(),
                "it is too long for a unix socket path; use a shorter one",
            ));
        }
        let slot = {
            let mut slots = self.slots();
            let n = slots.len();
            slots.take().ok_or(RuntimeError::NoSlots(n))?
        };
        // Only host root may enter a box's directory (its files, its agent socket).
        match self.pool.make_dir(&dir, 0o700, spec.disk_bytes) {
            Ok(()) => {}
            Err(e) => {
                self.slots().release(slot);
                return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    RuntimeError::Exists(spec.id.clone())
                } else {
                    RuntimeError::io(format!("create {}", dir.display()))(e)
                });
            }
        }
        let cgroup = self.cgroups.box_cgroup(&self.cfg.cgroup_parent, &spec.id);
        let result = self.start(spec, &image, slot, hostname, cgroup.clone(), started);
        if result.is_err() {
            cleanup(&spec.id, "kill a box that failed to start", cgroup.kill());
            cleanup(&spec.id, "remove a failed box's cgroup", cgroup.remove());
            cleanup(
                &spec.id,
                "remove a failed box's files",
                self.pool.remove_dir(&dir),
            );
            self.slots().release(slot);
        }
        result
    }

    fn start(
        &self,
        spec: &BoxSpec,
        image: &image::Image,
        slot: u32,
        hostname: String,
        cgroup: BoxCgroup,
        started: impl FnOnce(u32, i32),
    ) -> Result<BoxHandle> {
        let dir = &self.boxes_dir().join(&spec.id);
        let root_id = idmap::host_base(slot);
        let socket = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(RuntimeError::io(format!("bind {}", socket.display())))?;
        let listener_fd = OwnedFd::from(listener);
        // The agent binary is exec'd first; the host-side preparation runs
        // while it loads (on another core) and is handed over when ready.
        let prepare = |pid: i32| -> Result<(setup::SetupConfig, Vec<OwnedFd>)> {
            started(slot, pid);
            let mk = |p: &Path, owner: Option<u32>| -> Result<()> {
                std::fs::create_dir_all(p)
                    .map_err(RuntimeError::io(format!("create {}", p.display())))?;
                if let Some(id) = owner {
                    std::os::unix::fs::chown(p, Some(id), Some(id))
                        .map_err(RuntimeError::io(format!("chown {}", p.display())))?;
                }
                Ok(())
            };
            let mut overlays = Vec::new();
            for (i, target) in image.targets().into_iter().enumerate() {
                let upper = dir.join(format!("upper-{i}"));
                let work = dir.join(format!("work-{i}"));
                mk(&upper, Some(root_id))?;
                mk(&work, None)?;
                let mut lowers: Vec<PathBuf> = spec
                    .snapshot_layers
                    .iter()
                    .filter(|l| l.target == target)
                    .map(|l| l.path.clone())
                    .collect();
                lowers.extend(image.lowers(&target));
                overlays.push(setup::OverlaySpec {
                    lowers,
                    target,
                    upper,
                    work,
                });
            }
            let userns = idmap::create_userns(root_id)
                .map_err(RuntimeError::io("create the user namespace"))?;
            let mut namespaces = vec![userns];
            if !spec.volumes.is_empty() {
                for v in &spec.volumes {
                    if !v.source.is_dir() {
                        return Err(RuntimeError::Setup(format!(
                            "volume directory {} is missing",
                            v.source.display()
                        )));
                    }
                }
                namespaces.push(
                    idmap::create_userns_mapping(idmap::VOLUME_OWNER, root_id)
                        .map_err(RuntimeError::io("create the volume id map"))?,
                );
            }
            cgroup.create(&spec.limits)?;
            cgroup.join(pid)?;
            let cfg = setup::SetupConfig {
                hostname: hostname.clone(),
                scratch: self.cfg.data_dir.join("mnt"),
                overlays,
                host_root_id: root_id,
                tmp_bytes: spec.tmp_bytes,
                trust: spec.trust.clone(),
                volumes: spec.volumes.clone(),
                seccomp: self.seccomp.clone(),
                agent: AgentConfig {
                    env: with_image_env(&image.env, &spec.env),
                },
            };
            Ok((cfg, namespaces))
        };
        let started = spawn::start_agent(&self.cfg.agent_path, &listener_fd, prepare)?;
        // The box's OOM killer picks a runaway process, never the agent.
        let _ = std::fs::write(format!("/proc/{}/oom_score_adj", started.pid), "-998");
        // Only the agent holds the listener now: if it dies, connects fail
        // at once instead of queueing forever.
        drop(listener_fd);
        let record = BoxRecord {
            id: spec.id.clone(),
            slot,
            pid: started.pid,
            start_time: start_time(started.pid).unwrap_or(0),
            image: image.digest.clone(),
            hostname,
            env: spec.env.clone(),
            limits: spec.limits,
            cgroup,
            spec: Some(spec.clone()),
        };
        let handle = BoxHandle {
            record,
            pidfd: Some(started.pidfd),
            our_child: true,
            agent: AgentClient::new(socket),
        };
        let json = serde_json::to_vec_pretty(&handle.record)
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        if let Err(e) = write_record(&dir.join("box.json"), &json) {
            self.teardown(&handle);
            return Err(RuntimeError::io("write box.json")(e));
        }
        Ok(handle)
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.pool.root().join("snapshots")
    }

    /// Removes `snapshots/.tmp-*`: captures a crash cut short.
    fn remove_unfinished_snapshots(pool: &Path) {
        let Ok(rd) = std::fs::read_dir(pool.join("snapshots")) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                tracing::warn!(dir = %e.path().display(), "removing an unfinished snapshot");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Ids of the snapshot layer directories on disk (finished captures).
    pub fn snapshot_dirs(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.snapshots_dir()) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// The images boxes and snapshots on disk use: `(manifest digest,
    /// "box <id>" or "snapshot <id>")`. Records of older versions that name
    /// an image by its tag are resolved.
    pub fn images_in_use(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut pin = |image: &str, user: String| {
            let digest = if image::digest::is_digest(image) {
                Some(image.to_string())
            } else {
                self.images.tagged(image).ok().flatten()
            };
            if let Some(d) = digest {
                out.push((d, user));
            }
        };
        for r in self.box_records() {
            pin(&r.image, format!("box {}", r.id));
        }
        for id in self.snapshot_dirs() {
            let file = self.snapshots_dir().join(&id).join(SNAPSHOT_IMAGE_FILE);
            if let Ok(image) = std::fs::read_to_string(file) {
                pin(image.trim(), format!("snapshot {id}"));
            }
        }
        out
    }

    /// Removes the image tag `name` and every stored image and layer no
    /// tag, box or snapshot uses any more. Refused while a box or snapshot
    /// uses the image, naming them; the built-in `host` image cannot be
    /// removed (it is made again at every start).
    pub fn remove_image(&self, name: &str) -> Result<image::store::Collected> {
        if name == image::HOST_IMAGE {
            return Err(image::ImageError::Invalid(
                "the host image is built in and made again at every start; it cannot be removed"
                    .into(),
            )
            .into());
        }
        let digest = self
            .images
            .tagged(name)?
            .ok_or_else(|| image::ImageError::UnknownImage(name.to_string()))?;
        let mut refused = None;
        let collected = self.images.collect_unused(|| {
            let in_use = self.images_in_use();
            let users: Vec<&str> = in_use
                .iter()
                .filter(|(d, _)| *d == digest)
                .map(|(_, u)| u.as_str())
                .collect();
            if users.is_empty() {
                if let Err(e) = self.images.untag(name) {
                    refused = Some(e);
                }
            } else {
                const SHOWN: usize = 10;
                let mut list = users[..users.len().min(SHOWN)].join(", ");
                if users.len() > SHOWN {
                    list.push_str(&format!(" and {} more", users.len() - SHOWN));
                }
                refused = Some(image::ImageError::InUse {
                    name: name.to_string(),
                    users: list,
                });
            }
            in_use.into_iter().map(|(d, _)| d).collect()
        })?;
        match refused {
            Some(e) => Err(e.into()),
            None => Ok(collected),
        }
    }

    /// Removes a snapshot's layers (nothing may use them any more).
    pub fn remove_snapshot(&self, id: &str) -> Result<()> {
        if !check_name(id, &['_']) {
            return Err(RuntimeError::InvalidId(id.to_string()));
        }
        let dir = self.snapshots_dir().join(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::io(format!("remove {}", dir.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// Captures the box's overlay upper dirs into snapshot `id`'s layers
    /// (`snapshots/<id>/upper-N`). The box is frozen while its files are
    /// copied (cloned, on a btrfs pool) and thawed afterwards, also on
    /// error (a box that was already frozen, e.g. paused, stays frozen).
    /// The layers are synced and renamed into place before this returns;
    /// a crash leaves only a `.tmp-<id>` dir, removed at the next start.
    ///
    /// A durable snapshot cannot be faster than writing the box's dirty
    /// data to disk; that write-back happens first, while the box still
    /// runs, so the box is frozen only for what it writes meanwhile.
    pub fn snapshot(&self, handle: &BoxHandle, id: &str) -> Result<CapturedLayers> {
        if !check_name(id, &['_']) {
            return Err(RuntimeError::InvalidId(id.to_string()));
        }
        let image = self.images.image(&handle.record.image)?;
        let box_dir = self.boxes_dir().join(&handle.record.id);
        let tmp = self.snapshots_dir().join(format!(".tmp-{id}"));
        let dest = self.snapshots_dir().join(id);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(RuntimeError::io(format!("create {}", tmp.display())))?;
        if let Err(e) = snapshot::sync_fs(&box_dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let t = std::time::Instant::now();
        let copied = self.frozen(handle, || {
            let mut copier = snapshot::Copier::new(handle.host_root_id());
            for i in 0..image.targets().len() {
                copier.copy_tree(
                    &box_dir.join(format!("upper-{i}")),
                    &tmp.join(format!("upper-{i}")),
                )?;
            }
            Ok(copier.bytes)
        });
        let frozen = t.elapsed();
        let published = copied.and_then(|bytes| {
            // Which image the layers lie over: it is kept while they are.
            let pin = tmp.join(SNAPSHOT_IMAGE_FILE);
            std::fs::write(&pin, &handle.record.image)
                .map_err(RuntimeError::io(format!("write {}", pin.display())))?;
            snapshot::sync_fs(&tmp)?;
            std::fs::rename(&tmp, &dest)
                .map_err(RuntimeError::io(format!("rename to {}", dest.display())))?;
            snapshot::sync_fs(&self.snapshots_dir())?;
            Ok(bytes)
        });
        let bytes = match published {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let layers = image
            .targets()
            .into_iter()
            .enumerate()
            .map(|(i, target)| image::Layer {
                path: dest.join(format!("upper-{i}")),
                target,
            })
            .collect();
        Ok(CapturedLayers {
            layers,
            bytes,
            frozen,
        })
    }

    /// Runs `f` with the box frozen; thaws after (unless it was frozen
    /// before, or another capture still holds it).
    fn frozen<T>(&self, handle: &BoxHandle, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let id = handle.record.id.clone();
        {
            let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            match holds.get_mut(&id) {
                Some((n, _)) => *n += 1,
                None => {
                    let was = handle.record.cgroup.is_frozen().unwrap_or(false);
                    if !was {
                        handle.freeze()?;
                    }
                    holds.insert(id.clone(), (1, was));
                }
            }
        }
        let out = f();
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let thaw = match holds.get_mut(&id) {
            Some((n, was)) => {
                *n -= 1;
                let thaw = *n == 0 && !*was;
                if *n == 0 {
                    holds.remove(&id);
                }
                thaw
            }
            None => false,
        };
        if thaw {
            if let Err(e) = handle.thaw() {
                tracing::error!(box_id = %id, error = %e, "cannot thaw a box after a snapshot");
                return out.and(Err(e));
            }
        }
        out
    }

    /// Re-attaches to a box from its record (after a daemon restart). A box
    /// whose agent is gone comes back with `is_alive() == false`.
    pub fn adopt(&self, id: &str) -> Result<BoxHandle> {
        let record = read_record(&self.boxes_dir().join(id))?;
        let pidfd = spawn::pidfd_open(record.pid)
            .ok()
            .filter(|_| start_time(record.pid) == Some(record.start_time));
        self.slots().mark(record.slot);
        let socket = self.boxes_dir().join(id).join("agent.sock");
        Ok(BoxHandle {
            record,
            pidfd,
            our_child: false,
            agent: AgentClient::new(socket),
        })
    }

    /// Starts box `id` again on its own files, like a reboot: whatever of
    /// it still runs is killed, then a new agent starts over the same
    /// layers, with the same spec, slot (so id range) and hostname. Its
    /// files are never removed, also when the start fails (the box can be
    /// restarted again or deleted). `started` as in
    /// [`Runtime::create_notify`].
    pub fn restart_notify(&self, id: &str, started: impl FnOnce(u32, i32)) -> Result<BoxHandle> {
        if !check_name(id, &['_']) {
            return Err(RuntimeError::InvalidId(id.to_string()));
        }
        let old = self.adopt(id)?;
        let Some(spec) = old.record.spec.clone() else {
            return Err(RuntimeError::Setup(format!(
                "box {id} was made by an older boxd that did not record its spec; it cannot be restarted"
            )));
        };
        // Frozen processes die as well (the kill thaws them).
        self.teardown(&old);
        cleanup(
            id,
            "remove a restarting box's old cgroup",
            old.record.cgroup.remove(),
        );
        let dir = self.boxes_dir().join(id);
        let socket = dir.join("agent.sock");
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::io(format!("remove {}", socket.display()))(e));
            }
            _ => {}
        }
        let image = self.images.image(&old.record.image)?;
        let cgroup = self.cgroups.box_cgroup(&self.cfg.cgroup_parent, id);
        let (slot, hostname) = (old.record.slot, old.record.hostname.clone());
        let result = self.start(&spec, &image, slot, hostname, cgroup.clone(), started);
        if result.is_err() {
            cleanup(id, "kill a box that failed to restart", cgroup.kill());
            cleanup(id, "remove a failed restart's cgroup", cgroup.remove());
        }
        result
    }

    /// Destroys a box: every process, mount, cgroup, namespace and file.
    /// Takes the handle by value or by reference (a server may still have
    /// calls in flight on a shared handle; they fail once the agent is gone).
    pub fn destroy(&self, handle: impl std::borrow::Borrow<BoxHandle>) -> Result<()> {
        let handle = handle.borrow();
        self.teardown(handle);
        let cg = handle.record.cgroup.remove();
        let dir = self.boxes_dir().join(&handle.record.id);
        let files = self
            .pool
            .remove_dir(&dir)
            .map_err(RuntimeError::io(format!("remove {}", dir.display())));
        self.slots().release(handle.record.slot);
        cg.and(files)
    }

    /// Kills the box's processes and waits for PID 1 to be gone. Killing
    /// the init of a pid namespace kills everything in it; the cgroup kill
    /// is the second line.
    fn teardown(&self, handle: &BoxHandle) {
        if let Some(fd) = &handle.pidfd {
            spawn::kill(fd);
        }
        cleanup(
            &handle.record.id,
            "kill a box's processes",
            handle.record.cgroup.kill(),
        );
        if handle.our_child {
            // SAFETY: the agent is our child; reap it so no zombie stays.
            unsafe { libc::waitpid(handle.record.pid, std::ptr::null_mut(), libc::__WALL) };
        } else if let Some(fd) = &handle.pidfd {
            spawn::wait_exit(fd, Duration::from_secs(5));
        }
        // Processes may take a moment to leave the groups after the kill.
        handle.record.cgroup.wait_empty(Duration::from_secs(5));
    }
}

/// Clean-up that must not stop what it follows, but is never silent: a
/// failure is logged with what was being cleaned up.
fn cleanup<E: std::fmt::Display>(box_id: &str, what: &str, r: std::result::Result<(), E>) {
    if let Err(e) = r {
        tracing::warn!(box_id, error = %e, "cannot {what}");
    }
}
