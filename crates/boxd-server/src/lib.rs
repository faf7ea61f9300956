//! The boxd daemon (`boxd serve`): the front ends (the Upstash Box HTTP
//! API today) over the box service of `boxd-core`.
//!
//! Owns start-up (data dir lock, database, admin key, the mechanisms the
//! service orchestrates, its recovery, the listeners) and clean shutdown
//! (boxes keep running and are adopted by the next start). Never a rule of
//! a box: those are the core's.

mod api;
mod config;
mod listener;

pub use api::{router, BodyLimits};
pub use config::{Config, LogFormat, ServeArgs};

use anyhow::{bail, Context, Result};
use boxd_core::{BoxService, CoreConfig, Secrets};
use boxd_net::{EventSink, Network};
use boxd_runtime::{Runtime, RuntimeConfig};
use boxd_store::{Store, StoreError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The database inside the data directory.
pub const DATABASE_FILE: &str = "boxd.db";
/// Where the first start saves the generated admin key (mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// How long open requests may finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs, data_dir: PathBuf, agent: PathBuf) -> Result<()> {
    let config = Config::load(&args, data_dir, agent)?;
    init_logs(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("boxd")
        .build()
        .context("start the async runtime")?;
    rt.block_on(run(config))
}

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BOXD_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What [`rotate_master_key`] did.
#[derive(Debug)]
pub struct Rotation {
    /// The new current key id.
    pub new_key: String,
    /// How many stored values (secrets and the CA key) were re-sealed.
    pub resealed: usize,
    /// The key ids stored values still use (only the new one, unless a
    /// value could not be moved).
    pub in_use: Vec<String>,
}

/// Adds a new master key to `key_file` and re-seals every stored value
/// under it. The daemon must be stopped (it holds the data directory's
/// lock and its keys in memory). Older keys stay in the file, so a value
/// the re-seal missed still opens; once `in_use` names only the new key
/// they can be removed by hand.
pub fn rotate_master_key(data_dir: &Path, key_file: &Path) -> Result<Rotation> {
    let _lock = lock_data_dir(data_dir)
        .context("rotating the master key needs the daemon stopped (stop boxd serve first)")?;
    let store = Store::open(data_dir.join(DATABASE_FILE))
        .with_context(|| format!("open the database in {}", data_dir.display()))?;
    let new_key = boxd_store::crypto::MasterKeys::rotate(key_file)
        .with_context(|| format!("add a key to {}", key_file.display()))?;
    let keys = boxd_store::crypto::MasterKeys::load(key_file)
        .with_context(|| format!("load {}", key_file.display()))?;
    let resealed = store
        .reseal_all(&keys)
        .context("re-seal the stored values under the new key")?;
    Ok(Rotation {
        new_key,
        resealed,
        in_use: store.sealed_key_ids()?,
    })
}

/// The data directory's lock (`boxd.lock`), held by `boxd serve` for its
/// life — two daemons on one data directory would fight over its boxes —
/// and by operator tools that open the runtime themselves (`boxd image rm`).
pub type DataDirLock = nix::fcntl::Flock<std::fs::File>;

/// Takes the data directory's lock, creating the directory; `None` when a
/// running boxd holds it.
pub fn try_lock_data_dir(dir: &Path) -> Result<Option<DataDirLock>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .with_context(|| format!("create the data directory {}", dir.display()))?;
    let path = dir.join("boxd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::Error::new(e).context(format!("lock {}", path.display()))),
    }
}

fn lock_data_dir(dir: &Path) -> Result<DataDirLock> {
    try_lock_data_dir(dir)?.with_context(|| {
        format!(
            "another boxd is already using the data directory {}",
            dir.display()
        )
    })
}

/// Makes sure the default team has an admin key: `BOXD_API_KEY` if set,
/// else a generated one printed once and saved to `admin.key`.
fn ensure_admin_key(store: &Store, data_dir: &Path) -> Result<()> {
    let team = store.ensure_default_team()?;
    if let Ok(key) = std::env::var("BOXD_API_KEY") {
        if store.authenticate(&key)?.is_some() {
            tracing::info!("admin key from BOXD_API_KEY is valid");
            return Ok(());
        }
        return match store.insert_key_with_value(&team.id, "admin", &key) {
            Ok(_) => {
                tracing::info!("admin key from BOXD_API_KEY registered for the default team");
                Ok(())
            }
            Err(StoreError::Conflict(_)) => {
                bail!("BOXD_API_KEY is a key that was revoked; set a new one")
            }
            Err(e) => Err(e).context("register BOXD_API_KEY"),
        };
    }
    let path = data_dir.join(ADMIN_KEY_FILE);
    if path.exists() || !store.list_keys(&team.id)?.is_empty() {
        tracing::info!(path = %path.display(), "admin key already set up");
        return Ok(());
    }
    let (_, key) = store.create_key(&team.id, "admin")?;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    println!(
        "boxd: created the admin API key for the default team (shown once, saved to {}):\n{key}",
        path.display()
    );
    Ok(())
}

/// Raises the open-file limit to its hard maximum: every proxied box
/// connection holds two sockets and two splice pipes.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

async fn run(config: Config) -> Result<()> {
    let _lock = lock_data_dir(&config.data_dir)?;
    raise_fd_limit();
    let store = Store::open(config.data_dir.join(DATABASE_FILE))
        .with_context(|| format!("open the database in {}", config.data_dir.display()))?;
    ensure_admin_key(&store, &config.data_dir)?;

    let mut rcfg = RuntimeConfig::new(&config.data_dir, &config.agent);
    rcfg.cgroup_parent = config.cgroup_parent.clone();
    rcfg.storage = config.storage.clone();
    if let Some(net) = &config.network {
        rcfg.max_boxes = rcfg.max_boxes.min(net.plan.capacity());
    }
    let runtime = tokio::task::spawn_blocking(move || Runtime::new(rcfg))
        .await
        .context("start the box runtime")?
        .context("start the box runtime (boxd serve needs root)")?;
    let kvm = Path::new("/dev/kvm").exists();
    tracing::info!(
        cgroups = %runtime.cgroup_mode(),
        runtimes = %runtime.runtimes().context("list the runtimes")?.join(", "),
        kvm,
        data_dir = %config.data_dir.display(),
        "host checked"
    );
    let built = runtime.runtimes().unwrap_or_default();
    let unbuilt: Vec<&str> = boxd_runtime::image::runtimes::RUNTIMES
        .into_iter()
        .filter(|r| !built.iter().any(|b| b == r))
        .collect();
    if !unbuilt.is_empty() {
        tracing::warn!(
            unbuilt = %unbuilt.join(", "),
            "some runtime images are not built: boxes asking for them get a 400; build one with \
             `boxd image build <runtime>` (about a minute each, needs mmdebstrap)"
        );
    }
    let secrets = Secrets::load(
        &config.master_key_file,
        &config.data_dir,
        &store,
        config.network.is_some(),
        config.box_roots.as_deref(),
    )?;
    // Networking first: the ruleset is in place before any box is adopted.
    let (events, mut event_stream) = EventSink::channel(8192);
    let network = match config.network.clone() {
        Some(cfg) => {
            let interception = secrets.interception(&config.extra_roots)?;
            Some(Network::start(cfg, events, interception).await.context(
                "start box networking (needs root and nftables; set [network] enabled = false to run boxes without a network)",
            )?)
        }
        None => {
            tracing::warn!("box networking is disabled: boxes have loopback only");
            None
        }
    };
    let core = CoreConfig {
        idle_pause_secs: config.idle_pause_secs,
        debian: config.debian.clone(),
    };
    let state = Arc::new(BoxService::new(
        core,
        store,
        Arc::new(runtime),
        network,
        secrets,
    ));
    state.recover().await?;
    let sweeper = tokio::spawn(state.clone().sweep_forever());
    // Network audit events, written in batches off the async threads.
    let st = state.clone();
    let mut recorder = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        while event_stream.recv_many(&mut batch, 256).await > 0 {
            let st = st.clone();
            let events = std::mem::take(&mut batch);
            if let Err(e) = tokio::task::spawn_blocking(move || st.audit_net(&events)).await {
                tracing::error!(error = %e, "recording network audit events failed; those events are lost");
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    tracing::info!(listen = %config.listen, "boxd is serving the API");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = BodyLimits {
        json: config.max_json_body_bytes,
        upload: config.max_upload_bytes,
    };
    let conns = listener::ConnectionLimits {
        max_connections: config.max_api_connections,
        header_read_timeout: std::time::Duration::from_secs(config.header_read_timeout_secs),
    };
    let server = listener::serve(
        listener,
        router(state.clone(), limits),
        conns,
        stop_rx,
        SHUTDOWN_GRACE,
    );
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => {}
        () = shutdown_signal() => {
            let _ = stop_tx.send(true);
            // Requests in flight get a grace period; long streams (audit
            // follow, exec streams) are cut after it.
            server.await;
        }
    }
    sweeper.abort();
    if let Some(net) = &state.network {
        net.shutdown()
            .await
            .context("remove the box network ruleset")?;
    }
    // The last network events reach the store; a stuck writer is cut.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), &mut recorder).await;
    recorder.abort();
    tracing::info!(
        boxes = state.live_count(),
        "boxd stopped; boxes keep running and are adopted by the next start"
    );
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot watch for SIGTERM/SIGINT; stop boxd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
