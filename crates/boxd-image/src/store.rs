//! The content-addressed image store under `<data>/images/`: layers named
//! by the digest of what they hold, image manifests named by the digest of
//! their bytes, and tags (image names) pointing at manifests.
//!
//! ```text
//! images/layers/<hex>/        a layer: an overlayfs lower directory
//! images/layers/<hex>.json    its record (digest, bytes, source); written
//!                             last, so a layer without one is unfinished
//! images/manifests/<hex>.json an image: its layers, env, origin
//! images/tags/<name>          `sha256:<hex>` of the manifest named so
//! images/cache/<key>          a build recipe's manifest (rebuild = reuse)
//! images/tmp/                 layers being written (emptied at open)
//! ```
//!
//! Everything becomes visible by a rename after its data is on disk, so a
//! crash leaves the old state or the new one, never a half layer in use.
//! A layer shared by several images (the Debian base) is stored once. The
//! store is only entered by host root (mode 0700): a layer's set-id files
//! belong to the boxes that mount it, never to the host's users. It never
//! runs a box and never decides who may use an image.

use crate::digest::{is_digest, tree_digest};
use crate::error::{ImageError, Result};
use crate::{durable, Image, Layer};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The manifest format written by this version.
pub const MANIFEST_FORMAT: u32 = 1;

/// One layer of a manifest, top-most first within its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerRef {
    /// A layer of this store.
    Stored { digest: String, target: String },
    /// A directory of the host, read-only (only the `host` image has these).
    Host { path: PathBuf, target: String },
}

impl LayerRef {
    pub fn target(&self) -> &str {
        match self {
            LayerRef::Stored { target, .. } | LayerRef::Host { target, .. } => target,
        }
    }
}

/// An image: what its boxes mount and how they start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The name it was built or imported as.
    pub name: String,
    pub layers: Vec<LayerRef>,
    /// `KEY=value` defaults for every process of its boxes (e.g. `PATH`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Unix seconds.
    pub created: u64,
    /// Where it came from (`debian trixie <mirror>`, `oci <file>`, `host`).
    pub source: String,
}

/// A committed layer's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub digest: String,
    /// Apparent bytes of file data.
    pub bytes: u64,
    pub entries: u64,
    /// Unix seconds.
    pub created: u64,
    pub source: String,
}

/// A tagged image, as `boxd image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub digest: String,
    /// Bytes of its stored layers (shared layers counted in each image).
    pub bytes: u64,
    pub layers: usize,
    pub created: u64,
    pub source: String,
}

/// A directory a layer is being written into; removed on drop unless
/// committed.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    done: bool,
}

impl Staging {
    /// Where to write the layer's files (its root is the layer's `/`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove an unfinished layer");
                }
            }
        }
    }
}

/// A scratch file in the store's `tmp/` (an uploaded archive), removed on
/// drop (and at the next open after a crash).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a scratch file");
            }
        }
    }
}

/// A lock on the store, released on drop (the descriptor closes).
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

/// What [`Store::collect`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub manifests: usize,
    pub layers: usize,
    pub bytes: u64,
}

/// The image store of one data directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Image names (tags): what a box's `runtime` names.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidName(name.to_string()))
    }
}

fn hex_of(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if is_digest(digest) => Ok(h),
        _ => Err(ImageError::Invalid(format!(
            "{digest:?} is not a sha256 digest"
        ))),
    }
}

impl Store {
    /// Opens (creating) the store at `root` and removes what a crash left
    /// half-written: staging directories, layers without their record.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(root).map_err(ImageError::io_at("create", root))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(ImageError::io_at("chmod", root))?;
        for sub in ["layers", "manifests", "tags", "cache", "tmp"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(ImageError::io_at("create", &p))?;
        }
        // Another process (the daemon, `boxd image build`) may be using
        // the store: only what no living process is writing is removed.
        let tmp = root.join("tmp");
        for e in std::fs::read_dir(&tmp).map_err(ImageError::io_at("list", &tmp))? {
            let e = e.map_err(ImageError::io_at("list", &tmp))?;
            if !writer_alive(&e.file_name().to_string_lossy()) {
                remove_any(&e.path());
            }
        }
        // A layer is renamed into place before its record is written:
        // only with no build under way is a record-less one a crash's.
        let Some(_lock) = store.try_flock("build.lock")? else {
            return Ok(store);
        };
        let layers = root.join("layers");
        for e in std::fs::read_dir(&layers).map_err(ImageError::io_at("list", &layers))? {
            let e = e.map_err(ImageError::io_at("list", &layers))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let unfinished = match name.strip_suffix(".json") {
                Some(hex) => !layers.join(hex).is_dir(),
                None => !layers.join(format!("{name}.json")).is_file(),
            };
            if unfinished {
                tracing::warn!(path = %path.display(), "removing an unfinished layer");
                remove_any(&path);
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Held while a build or import writes to the store: one at a time
    /// (a second waits), across processes.
    pub fn build_lock(&self) -> Result<StoreLock> {
        self.flock("build.lock", libc::LOCK_EX)
    }

    /// Held (shared) from resolving an image for a box until the box's
    /// record names it, so [`Store::collect_unused`] cannot remove it
    /// in between.
    pub fn use_lock(&self) -> Result<StoreLock> {
        self.flock("use.lock", libc::LOCK_SH)
    }

    /// The exclusive lock `name`, or `None` when another holds it.
    fn try_flock(&self, name: &str) -> Result<Option<StoreLock>> {
        match self.flock(name, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(lock) => Ok(Some(lock)),
            Err(ImageError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn flock(&self, name: &str, how: libc::c_int) -> Result<StoreLock> {
        use std::os::fd::AsRawFd;
        let path = self.root.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io_at("open", &path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), how) } != 0 {
            return Err(ImageError::io_at("lock", &path)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(StoreLock { _file: file })
    }

    /// [`Store::collect`], keeping what `in_use` lists — asked while no box
    /// is between resolving an image and recording it.
    pub fn collect_unused(&self, in_use: impl FnOnce() -> Vec<String>) -> Result<Collected> {
        let _lock = self.flock("use.lock", libc::LOCK_EX)?;
        self.collect(&in_use())
    }

    /// A name in `tmp/` no other call of this process uses.
    fn tmp_name(&self, what: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// A path for a scratch file (not created), removed when dropped.
    pub fn temp_file(&self, what: &str) -> Result<TempFile> {
        let path = self.tmp_name(what);
        let _ = std::fs::remove_file(&path);
        Ok(TempFile { path })
    }

    /// A fresh staging directory (mode 0755, owned by root) for one layer.
    pub fn stage(&self, what: &str) -> Result<Staging> {
        let path = self.tmp_name(what);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).map_err(ImageError::io_at("create", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(ImageError::io_at("chmod", &path))?;
        Ok(Staging { path, done: false })
    }

    /// Names the staged layer by its content and makes it part of the
    /// store (durably); a layer already stored is kept and the copy
    /// dropped.
    pub fn commit_layer(&self, mut staging: Staging, source: &str) -> Result<LayerInfo> {
        let (digest, stats) = tree_digest(&staging.path)?;
        if let Ok(info) = self.layer(&digest) {
            return Ok(info);
        }
        let hex = hex_of(&digest)?.to_string();
        let dest = self.root.join("layers").join(&hex);
        durable::sync_fs(&staging.path).map_err(ImageError::io_at("sync", &staging.path))?;
        if dest.exists() {
            // A record-less leftover of a crash in this same window.
            remove_any(&dest);
        }
        std::fs::rename(&staging.path, &dest).map_err(ImageError::io_at("install", &dest))?;
        staging.done = true;
        let info = LayerInfo {
            digest,
            bytes: stats.bytes,
            entries: stats.entries,
            created: now(),
            source: source.to_string(),
        };
        let record = self.root.join("layers").join(format!("{hex}.json"));
        durable::write(&record, &to_json(&info)?, 0o600)
            .map_err(ImageError::io_at("write", &record))?;
        Ok(info)
    }

    /// A committed layer's record.
    pub fn layer(&self, digest: &str) -> Result<LayerInfo> {
        let hex = hex_of(digest)?;
        let record = self.root.join("layers").join(format!("{hex}.json"));
        let info: LayerInfo = read_json(&record)?;
        if info.digest != digest || !self.layer_path(digest)?.is_dir() {
            return Err(ImageError::corrupt(&record, "does not describe this layer"));
        }
        Ok(info)
    }

    /// Where a stored layer's files are.
    pub fn layer_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(hex_of(digest)?))
    }

    /// Reads a stored layer in full and checks it still has its digest.
    pub fn verify_layer(&self, digest: &str) -> Result<()> {
        self.layer(digest)?;
        let path = self.layer_path(digest)?;
        let (actual, _) = tree_digest(&path)?;
        if actual != digest {
            return Err(ImageError::corrupt(
                &path,
                format!("its content now has digest {actual}"),
            ));
        }
        Ok(())
    }

    /// Stores a manifest (its layers must be stored); returns its digest.
    pub fn put_manifest(&self, m: &Manifest) -> Result<String> {
        for l in &m.layers {
            if let LayerRef::Stored { digest, .. } = l {
                self.layer(digest)?;
            }
        }
        let bytes = to_json(m)?;
        let digest = format!("sha256:{}", crate::digest::hex(&sha256(&bytes)));
        let path = self.manifest_path(&digest)?;
        if !path.is_file() {
            durable::write(&path, &bytes, 0o600).map_err(ImageError::io_at("write", &path))?;
        }
        Ok(digest)
    }

    fn manifest_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("manifests")
            .join(format!("{}.json", hex_of(digest)?)))
    }

    /// A stored manifest, checked against its digest.
    pub fn manifest(&self, digest: &str) -> Result<Manifest> {
        let path = self.manifest_path(digest)?;
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ImageError::UnknownImage(digest.to_string())
            } else {
                ImageError::io_at("read", &path)(e)
            }
        })?;
        if format!("sha256:{}", crate::digest::hex(&sha256(&bytes))) != digest {
            return Err(ImageError::corrupt(
                &path,
                "its bytes do not match its name",
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| ImageError::corrupt(&path, e))
    }

    /// Points `name` at a stored manifest (replacing what it named).
    pub fn tag(&self, name: &str, digest: &str) -> Result<()> {
        check_name(name)?;
        self.manifest(digest)?;
        let path = self.root.join("tags").join(name);
        durable::write(&path, digest.as_bytes(), 0o600).map_err(ImageError::io_at("write", &path))
    }

    /// The manifest digest `name` points at, if it is a tag here.
    pub fn tagged(&self, name: &str) -> Result<Option<String>> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let path = self.root.join("tags").join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) if is_digest(s.trim()) => Ok(Some(s.trim().to_string())),
            Ok(_) => Err(ImageError::corrupt(&path, "not a digest")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io_at("read", &path)(e)),
        }
    }

    /// Removes the tag `name` (its manifest and layers stay until
    /// [`Store::collect`]).
    pub fn untag(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let path = self.root.join("tags").join(name);
        std::fs::remove_file(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ImageError::UnknownImage(name.to_string())
            } else {
                ImageError::io_at("remove", &path)(e)
            }
        })?;
        durable::sync_dir(&self.root.join("tags")).map_err(ImageError::io_at("sync", &path))
    }

    /// Tag names, sorted.
    pub fn tags(&self) -> Result<Vec<String>> {
        let dir = self.root.join("tags");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(ImageError::io_at("list", &dir))? {
            let e = e.map_err(ImageError::io_at("list", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if check_name(&name).is_ok() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The tagged images, for listing.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let mut out = Vec::new();
        for name in self.tags()? {
            let Some(digest) = self.tagged(&name)? else {
                continue;
            };
            let m = self.manifest(&digest)?;
            let mut bytes = 0;
            let mut layers = 0;
            for l in &m.layers {
                if let LayerRef::Stored { digest, .. } = l {
                    bytes += self.layer(digest)?.bytes;
                    layers += 1;
                }
            }
            out.push(ImageInfo {
                name,
                digest,
                bytes,
                layers,
                created: m.created,
                source: m.source,
            });
        }
        Ok(out)
    }

    /// A manifest digest for `reference`: a tag or a stored digest.
    pub fn resolve(&self, reference: &str) -> Result<String> {
        if is_digest(reference) {
            self.manifest(reference)?;
            return Ok(reference.to_string());
        }
        self.tagged(reference)?
            .ok_or_else(|| ImageError::UnknownImage(reference.to_string()))
    }

    /// What a box on `reference` mounts: every layer checked present.
    pub fn image(&self, reference: &str) -> Result<Image> {
        let digest = self.resolve(reference)?;
        let m = self.manifest(&digest)?;
        let mut layers = Vec::with_capacity(m.layers.len());
        for l in &m.layers {
            let (path, target) = match l {
                LayerRef::Stored { digest, target } => {
                    self.layer(digest)?;
                    (self.layer_path(digest)?, target.clone())
                }
                LayerRef::Host { path, target } => (path.clone(), target.clone()),
            };
            layers.push(Layer { path, target });
        }
        Ok(Image {
            name: m.name,
            digest,
            layers,
            env: m.env,
        })
    }

    /// A build recipe's cached manifest, if it and all it needs are stored.
    pub fn cached(&self, key: &str) -> Result<Option<String>> {
        let path = self.cache_path(key)?;
        let Ok(digest) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let digest = digest.trim();
        match self.image(digest) {
            Ok(_) => Ok(Some(digest.to_string())),
            Err(_) => Ok(None),
        }
    }

    /// Remembers that recipe `key` built manifest `digest`.
    pub fn cache(&self, key: &str, digest: &str) -> Result<()> {
        let path = self.cache_path(key)?;
        durable::write(&path, digest.as_bytes(), 0o600).map_err(ImageError::io_at("write", &path))
    }

    fn cache_path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(ImageError::Invalid(format!("bad cache key {key:?}")));
        }
        Ok(self.root.join("cache").join(key))
    }

    /// Removes every manifest that no tag or `keep` digest names, and the
    /// build-cache entries whose layers are no longer all in use (a cached
    /// recipe costs nothing while another image holds its layers: the
    /// Debian base stays cached while one runtime image is left), then
    /// every layer no remaining manifest uses.
    pub fn collect(&self, keep: &[String]) -> Result<Collected> {
        let mut live: std::collections::HashSet<String> = keep.iter().cloned().collect();
        for name in self.tags()? {
            if let Some(d) = self.tagged(&name)? {
                live.insert(d);
            }
        }
        let stored_layers = |digest: &str| -> Vec<String> {
            self.manifest(digest)
                .map(|m| {
                    m.layers
                        .into_iter()
                        .filter_map(|l| match l {
                            LayerRef::Stored { digest, .. } => Some(digest),
                            LayerRef::Host { .. } => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut used: std::collections::HashSet<String> =
            live.iter().flat_map(|d| stored_layers(d)).collect();
        let cache = self.root.join("cache");
        for e in std::fs::read_dir(&cache).map_err(ImageError::io_at("list", &cache))? {
            let e = e.map_err(ImageError::io_at("list", &cache))?;
            let digest = std::fs::read_to_string(e.path()).unwrap_or_default();
            let digest = digest.trim().to_string();
            let layers = stored_layers(&digest);
            if live.contains(&digest)
                || (!layers.is_empty() && layers.iter().all(|l| used.contains(l)))
            {
                live.insert(digest);
            } else {
                std::fs::remove_file(e.path()).map_err(ImageError::io_at("remove", &e.path()))?;
            }
        }
        used.extend(live.iter().flat_map(|d| stored_layers(d)));
        let mut done = Collected::default();
        let mdir = self.root.join("manifests");
        for e in std::fs::read_dir(&mdir).map_err(ImageError::io_at("list", &mdir))? {
            let e = e.map_err(ImageError::io_at("list", &mdir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            if !live.contains(&format!("sha256:{hex}")) {
                std::fs::remove_file(e.path()).map_err(ImageError::io_at("remove", &e.path()))?;
                done.manifests += 1;
            }
        }
        let ldir = self.root.join("layers");
        for e in std::fs::read_dir(&ldir).map_err(ImageError::io_at("list", &ldir))? {
            let e = e.map_err(ImageError::io_at("list", &ldir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let digest = format!("sha256:{hex}");
            if !used.contains(&digest) {
                if let Ok(info) = self.layer(&digest) {
                    done.bytes += info.bytes;
                }
                // The record goes first: a crash between leaves a
                // record-less layer, which `open` removes.
                std::fs::remove_file(e.path()).map_err(ImageError::io_at("remove", &e.path()))?;
                remove_any(&ldir.join(hex));
                done.layers += 1;
            }
        }
        Ok(done)
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| ImageError::Io {
        context: "serialise".into(),
        source: std::io::Error::other(e),
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::corrupt(path, "missing")
        } else {
            ImageError::io_at("read", path)(e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::corrupt(path, e))
}

/// Whether the process that named a `tmp/` entry (`<what>-<pid>-<n>`) is
/// still running (and is not this one, which has just opened the store).
fn writer_alive(name: &str) -> bool {
    let Some(pid) = name
        .rsplit('-')
        .nth(1)
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    else {
        return false;
    };
    if pid <= 0 || u32::try_from(pid).ok() == Some(std::process::id()) {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes a file or a tree, logging (not failing) when it cannot.
fn remove_any(path: &Path) {
    let r = match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "could not remove");
    }
}

impl Manifest {
    /// A manifest of this format, created now.
    pub fn new(name: &str, layers: Vec<LayerRef>, env: Vec<String>, source: &str) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            name: name.to_string(),
            layers,
            env,
            created: now(),
            source: source.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> (Store, PathBuf) {
        let d = std::env::temp_dir().join(format!("boxd-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        (Store::open(&d).unwrap(), d)
    }

    fn layer(s: &Store, file: &str, body: &str) -> LayerInfo {
        let st = s.stage("t").unwrap();
        std::fs::write(st.path().join(file), body).unwrap();
        s.commit_layer(st, "test").unwrap()
    }

    #[test]
    fn layers_are_stored_once_by_content_and_images_resolve_by_tag_and_digest() {
        let (s, d) = store("dedupe");
        let a = layer(&s, "x", "same");
        let b = layer(&s, "x", "same");
        assert_eq!(a.digest, b.digest);
        let c = layer(&s, "y", "other");
        assert_ne!(a.digest, c.digest);
        let m = Manifest::new(
            "demo",
            vec![
                LayerRef::Stored {
                    digest: c.digest.clone(),
                    target: "/".into(),
                },
                LayerRef::Stored {
                    digest: a.digest.clone(),
                    target: "/".into(),
                },
            ],
            vec!["PATH=/usr/bin".into()],
            "test",
        );
        let md = s.put_manifest(&m).unwrap();
        s.tag("demo", &md).unwrap();
        let img = s.image("demo").unwrap();
        assert_eq!(img.digest, md);
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.layers[0].path, s.layer_path(&c.digest).unwrap());
        assert_eq!(s.image(&md).unwrap(), img);
        assert_eq!(s.list().unwrap()[0].bytes, 9);
        s.verify_layer(&a.digest).unwrap();
        // Tampering is found by a full check.
        std::fs::write(s.layer_path(&a.digest).unwrap().join("x"), "diff").unwrap();
        assert!(matches!(
            s.verify_layer(&a.digest),
            Err(ImageError::Corrupt(_))
        ));
        // Untagged, the image and its layers are collected, unless kept.
        s.untag("demo").unwrap();
        assert_eq!(s.collect(std::slice::from_ref(&md)).unwrap().layers, 0);
        let gone = s.collect(&[]).unwrap();
        assert_eq!((gone.manifests, gone.layers), (1, 2));
        assert!(matches!(s.image("demo"), Err(ImageError::UnknownImage(_))));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn removing_an_image_drops_its_build_cache_unless_another_image_holds_its_layers() {
        let (s, d) = store("cache");
        let base = layer(&s, "base", "debian");
        let stored = |digest: &str| LayerRef::Stored {
            digest: digest.to_string(),
            target: "/".into(),
        };
        let image = |name: &str, file: &str| {
            let top = layer(&s, file, name);
            let m = Manifest::new(
                name,
                vec![stored(&top.digest), stored(&base.digest)],
                vec![],
                "t",
            );
            let md = s.put_manifest(&m).unwrap();
            s.tag(name, &md).unwrap();
            s.cache(&format!("{name}-recipe"), &md).unwrap();
            top
        };
        let base_only = Manifest::new("base", vec![stored(&base.digest)], vec![], "t");
        let bd = s.put_manifest(&base_only).unwrap();
        s.cache("base-recipe", &bd).unwrap();
        let (py, node) = (image("python", "py"), image("node", "node"));
        // python goes: its own layer and recipe with it; the base stays
        // (node holds it), still cached for the next build.
        s.untag("python").unwrap();
        let gone = s.collect(&[]).unwrap();
        assert_eq!(gone.layers, 1);
        assert!(s.cached("python-recipe").unwrap().is_none());
        assert_eq!(s.cached("base-recipe").unwrap(), Some(bd.clone()));
        assert!(s.layer(&py.digest).is_err());
        // node goes too: everything is freed.
        s.untag("node").unwrap();
        let gone = s.collect(&[]).unwrap();
        assert_eq!(gone.layers, 2);
        assert!(s.layer(&node.digest).is_err() && s.layer(&base.digest).is_err());
        assert!(s.cached("base-recipe").unwrap().is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_layer_cut_off_by_a_crash_is_never_used() {
        let (s, d) = store("crash");
        let a = layer(&s, "x", "data");
        let hex = a.digest.strip_prefix("sha256:").unwrap().to_string();
        // A crash after the rename, before the record.
        std::fs::remove_file(d.join("layers").join(format!("{hex}.json"))).unwrap();
        // And one while staging.
        std::fs::create_dir(d.join("tmp/half")).unwrap();
        let s = Store::open(&d).unwrap();
        assert!(!d.join("layers").join(&hex).exists());
        assert!(!d.join("tmp/half").exists());
        assert!(s.layer(&a.digest).is_err());
        // A manifest naming a layer that is not stored is refused.
        let m = Manifest::new(
            "x",
            vec![LayerRef::Stored {
                digest: a.digest,
                target: "/".into(),
            }],
            vec![],
            "test",
        );
        assert!(s.put_manifest(&m).is_err());
        // A dropped staging directory is removed.
        let st = s.stage("t").unwrap();
        let p = st.path().to_path_buf();
        drop(st);
        assert!(!p.exists());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn tag_names_are_checked() {
        let (s, d) = store("names");
        for bad in ["", "../x", "A", "a/b", ".x", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
            assert!(s.tagged(bad).unwrap().is_none());
        }
        check_name("python-alpine").unwrap();
        std::fs::remove_dir_all(d).unwrap();
    }
}
