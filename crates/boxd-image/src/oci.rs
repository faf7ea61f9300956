//! Importing images made elsewhere: an OCI image layout (a directory, or
//! a tar of one, optionally gzipped) or a `docker save` archive, into the
//! [`Store`]. Each of the image's layers becomes one stored layer (an
//! overlayfs lower directory, named by its tree digest, so a layer two
//! images share is stored once), boxd's own files
//! ([`crate::boxfiles::write_top_layer`]) go on top, and the image is
//! tagged with the name asked for.
//!
//! Everything read is checked: the index, manifests and configs against
//! their sha256 digests, each layer against its blob digest while it
//! streams and, uncompressed, against the config's `rootfs.diff_ids` (the
//! only check a `docker save` archive allows). A mismatch, a cut-short or
//! corrupt archive, or an entry that is not allowed ends the import with
//! [`ImageError::Invalid`] naming the file, the layer and the path; the
//! layer being written is dropped and no tag is made.
//!
//! Layers are written by this module entry by entry (never by `tar`'s
//! `unpack`): a path is taken relative to the layer's root (`..` resolved
//! lexically; one that climbs out is refused), every parent is a real
//! directory made with `mkdir` (an entry going through a symlink is
//! refused), files are created `O_CREAT | O_EXCL | O_NOFOLLOW`, and a
//! symlink's target, absolute or not, is stored as it is and never
//! followed (it resolves inside the box's root). A hard link must name an
//! earlier entry of the same layer. Each layer is written on its own, as
//! docker's overlay2 driver does: a path under what a *lower* layer has as
//! a symlink becomes a real directory of this layer (shown over the
//! link), never a write through it. OCI whiteouts become overlayfs ones:
//! `.wh.<name>` a 0/0 character device `<name>`, `.wh..wh..opq` the
//! `trusted.overlay.opaque` xattr on its directory. Device nodes are
//! refused; FIFOs are made. Owners, modes (set-id bits included) and
//! mtimes are the archive's: they are the image's own, and the store is
//! only entered by host root (mode 0700), so they are never honoured on
//! the host. Of the archive's xattrs only `user.*` and
//! `security.capability` are kept: `trusted.*` (an archive must not forge
//! overlay metadata), ACLs and SELinux labels are dropped.
//!
//! Of the image config only `Env` is used so far (`Cmd`, `Entrypoint`,
//! `WorkingDir` and `User` are ignored: a box runs what it is asked to).
//!
//! Owns: reading and checking the archive, writing its layers. Never:
//! writes outside a staging directory of the store, follows a symlink of
//! the image, runs anything of the image, or leaves a tag on a failed
//! import.

use crate::digest::{hex, is_digest};
use crate::error::{ImageError, Result};
use crate::progress::{Event, Progress};
use crate::store::{check_name, LayerRef, Manifest, Staging, Store};
use crate::Image;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest index, manifest, config or `manifest.json` read.
pub const MAX_JSON: u64 = 4 << 20;
/// Most layers an image may have.
pub const MAX_LAYERS: usize = 128;
/// Longest path (or link target) of an archive entry, in bytes.
pub const MAX_PATH: usize = 4096;
/// Most bytes of file content an import may write, all layers together:
/// what a compressed layer (a gzip bomb) can make of a small upload.
pub const MAX_IMAGE_BYTES: u64 = 32 << 30;
/// Most entries of one layer.
pub const MAX_LAYER_ENTRIES: usize = 1 << 21;
/// Most entries of an outer archive (the layout or `docker save` tar).
const MAX_ARCHIVE_ENTRIES: usize = 1 << 16;
/// How far symlinks between an outer archive's files are followed.
const MAX_LINK_HOPS: usize = 8;
/// Bytes between two [`Event::Bytes`].
const PROGRESS_EVERY: u64 = 1 << 20;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const BZIP2_MAGIC: &[u8] = b"BZh";

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Imports the image at `source` (an OCI layout directory, or a file: a
/// tar, optionally gzipped, of an OCI layout or from `docker save`) and
/// tags it `name`. From a multi-platform index, the host's architecture
/// (linux) is taken.
pub fn import(store: &Store, source: &Path, name: &str, progress: Progress) -> Result<Image> {
    check_name(name)?;
    let label = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.display().to_string());
    let _lock = store.build_lock()?;
    tracing::info!(source = %source.display(), name, "importing an image");
    progress(Event::Step {
        step: format!("read {label}"),
    });
    let src = Source::open(store, source, &label, progress)?;
    let plan = if src.exists("index.json") {
        oci_plan(&src)?
    } else if src.exists("manifest.json") {
        docker_plan(&src)?
    } else {
        return Err(ImageError::Invalid(format!(
            "{label} is neither an OCI image layout (oci-layout, index.json) \
             nor a `docker save` archive (manifest.json)"
        )));
    };
    let total = plan.layers.len();
    // Written bottom first; the manifest lists them top-most first.
    let mut stored: Vec<String> = Vec::with_capacity(total);
    let mut budget = MAX_IMAGE_BYTES;
    for (i, layer) in plan.layers.iter().enumerate() {
        progress(Event::Step {
            step: format!("layer {}/{total} {}", i + 1, short(&layer.id)),
        });
        let digest = import_layer(store, &src, layer, &plan.source, &mut budget, progress)?;
        tracing::debug!(layer = %layer.id, stored = %digest, "layer imported");
        stored.push(digest);
    }
    // A layer that appears twice only counts at its top-most place: all
    // it holds is shown from there (the same files, the same whiteouts).
    let mut seen = HashSet::new();
    let mut top_first: Vec<String> = Vec::with_capacity(total);
    for d in stored.into_iter().rev() {
        if seen.insert(d.clone()) {
            top_first.push(d);
        }
    }
    progress(Event::Step {
        step: format!("{name}: boxd's files"),
    });
    let lowers = top_first
        .iter()
        .map(|d| store.layer_path(d))
        .collect::<Result<Vec<_>>>()?;
    let top = store.stage("oci-top")?;
    crate::boxfiles::write_top_layer(top.path(), &lowers)?;
    let top = store.commit_layer(top, &format!("{}: boxd's files", plan.source))?;
    let mut layers = vec![LayerRef::Stored {
        digest: top.digest,
        target: "/".into(),
    }];
    layers.extend(top_first.into_iter().map(|digest| LayerRef::Stored {
        digest,
        target: "/".into(),
    }));
    let digest = store.put_manifest(&Manifest::new(name, layers, plan.env, &plan.source))?;
    store.tag(name, &digest)?;
    tracing::info!(name, %digest, source = %plan.source, "image imported");
    store.image(&digest)
}

/// `sha256:` and the first 12 hex digits, for progress lines.
fn short(id: &str) -> String {
    match id.strip_prefix("sha256:") {
        Some(h) => match h.get(..12) {
            Some(head) if h.len() > 12 => format!("sha256:{head}…"),
            _ => id.to_string(),
        },
        _ => id.to_string(),
    }
}

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::Invalid(msg.into())
}

// ---------------------------------------------------------------------
// The source: a directory, or the files of a tar archive.

/// Where the layout's files are read from.
struct Source {
    label: String,
    kind: SourceKind,
}

enum SourceKind {
    Dir(PathBuf),
    Tar {
        file: File,
        items: HashMap<String, Item>,
        /// The decompressed copy of a gzipped archive (removed on drop).
        _unzipped: Option<Staging>,
    },
}

/// One entry of an outer archive.
enum Item {
    File {
        pos: u64,
        size: u64,
    },
    /// A symlink or hard link: the archive path it names.
    Link(String),
    Dir,
}

/// A file of the source, ready to read.
struct Blob<'a> {
    reader: Box<dyn Read + 'a>,
    size: u64,
}

impl Source {
    fn open(store: &Store, path: &Path, label: &str, progress: Progress) -> Result<Source> {
        let md = std::fs::metadata(path).map_err(ImageError::io_at("read", path))?;
        if md.is_dir() {
            return Ok(Source {
                label: label.to_string(),
                kind: SourceKind::Dir(path.to_path_buf()),
            });
        }
        if !md.is_file() {
            return Err(invalid(format!(
                "{label} is neither a directory nor a regular file"
            )));
        }
        let mut file = File::open(path).map_err(ImageError::io_at("open", path))?;
        let mut magic = [0u8; 6];
        // A regular file's pread returns all it has up to the buffer's size.
        let n = file
            .read_at(&mut magic, 0)
            .map_err(ImageError::io_at("read", path))?;
        let magic = &magic[..n];
        let mut unzipped = None;
        if magic.starts_with(GZIP_MAGIC) {
            let staging = store.stage("oci-archive")?;
            let tar = staging.path().join("archive.tar");
            gunzip(path, &tar, label, MAX_IMAGE_BYTES, progress)?;
            file = File::open(&tar).map_err(ImageError::io_at("open", &tar))?;
            unzipped = Some(staging);
        } else if magic.starts_with(ZSTD_MAGIC)
            || magic.starts_with(XZ_MAGIC)
            || magic.starts_with(BZIP2_MAGIC)
        {
            return Err(invalid(format!(
                "{label} is zstd, xz or bzip2 compressed: only plain or gzipped tar \
                 archives are read (decompress it first)"
            )));
        }
        let items = index_tar(&file, label)?;
        Ok(Source {
            label: label.to_string(),
            kind: SourceKind::Tar {
                file,
                items,
                _unzipped: unzipped,
            },
        })
    }

    fn exists(&self, rel: &str) -> bool {
        let Some(rel) = archive_name(rel.as_bytes()) else {
            return false;
        };
        match &self.kind {
            SourceKind::Dir(root) => root.join(&rel).is_file(),
            SourceKind::Tar { items, .. } => {
                matches!(self.resolve(items, &rel), Ok(Some((_, Item::File { .. }))))
            }
        }
    }

    fn resolve<'i>(
        &self,
        items: &'i HashMap<String, Item>,
        rel: &str,
    ) -> Result<Option<(String, &'i Item)>> {
        let mut name = rel.to_string();
        for _ in 0..=MAX_LINK_HOPS {
            match items.get(&name) {
                None => return Ok(None),
                Some(Item::Link(to)) => name = to.clone(),
                Some(item) => return Ok(Some((name, item))),
            }
        }
        Err(invalid(format!(
            "{}: {rel} is a chain of more than {MAX_LINK_HOPS} links",
            self.label
        )))
    }

    /// The file `rel` (a path inside the layout or archive).
    fn blob(&self, rel: &str) -> Result<Blob<'_>> {
        let name = archive_name(rel.as_bytes())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid(format!("{}: {rel:?} is not a path inside it", self.label)))?;
        let missing = || invalid(format!("{}: {rel} is missing", self.label));
        match &self.kind {
            SourceKind::Dir(root) => {
                let path = root.join(&name);
                let f = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(ImageError::io_at("open", &path)(e)),
                };
                let md = f.metadata().map_err(ImageError::io_at("stat", &path))?;
                if !md.is_file() {
                    return Err(invalid(format!(
                        "{}: {rel} is not a regular file",
                        self.label
                    )));
                }
                Ok(Blob {
                    reader: Box::new(f),
                    size: md.len(),
                })
            }
            SourceKind::Tar { file, items, .. } => match self.resolve(items, &name)? {
                Some((_, Item::File { pos, size })) => Ok(Blob {
                    reader: Box::new(Section {
                        file,
                        pos: *pos,
                        end: pos + size,
                    }),
                    size: *size,
                }),
                Some(_) => Err(invalid(format!(
                    "{}: {rel} is not a regular file",
                    self.label
                ))),
                None => Err(missing()),
            },
        }
    }

    /// Reads and parses a JSON file of at most [`MAX_JSON`] bytes, checked
    /// against `digest` (and `size`) when the layout names one.
    fn json<T: for<'de> Deserialize<'de>>(
        &self,
        rel: &str,
        digest: Option<&str>,
        size: Option<u64>,
        what: &str,
    ) -> Result<T> {
        let named = digest.unwrap_or(rel);
        let blob = self.blob(rel)?;
        if blob.size > MAX_JSON {
            return Err(invalid(format!(
                "{what} {named} of {} is {} bytes: more than the {} MiB allowed",
                self.label,
                blob.size,
                MAX_JSON >> 20
            )));
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        blob.reader
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_error(&self.label, &format!("{what} {named}"), e))?;
        if let Some(d) = digest {
            let actual = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
            if actual != d || size.is_some_and(|s| s != bytes.len() as u64) {
                return Err(tampered(what, d, &self.label));
            }
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            invalid(format!(
                "{what} {named} of {} is not what the format says: {e}",
                self.label
            ))
        })
    }
}

fn tampered(what: &str, digest: &str, label: &str) -> ImageError {
    invalid(format!(
        "{what} {digest} of {label}: content does not match its digest (tampered or corrupt)"
    ))
}

/// A read of the source that failed: a cut-short archive is the input's
/// fault, anything else the disk's.
fn read_error(label: &str, what: &str, e: std::io::Error) -> ImageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        invalid(format!("{what} of {label}: the archive is cut short"))
    } else {
        ImageError::io(format!("read {what} of {label}"))(e)
    }
}

/// Decompresses the gzipped archive `path` into `dest`, refusing one that
/// grows past `limit` bytes (a small gzip bomb must not fill the store).
fn gunzip(path: &Path, dest: &Path, label: &str, limit: u64, progress: Progress) -> Result<()> {
    let f = File::open(path).map_err(ImageError::io_at("open", path))?;
    let mut z = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, f));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(ImageError::io_at("create", dest))?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut total, mut reported) = (0u64, 0u64);
    loop {
        let n = match z.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(invalid(format!(
                    "{label}: the gzip stream is cut short or corrupt: {e}"
                )))
            }
        };
        total += n as u64;
        if total > limit {
            return Err(invalid(format!(
                "{label}: decompresses to more than {} GiB, the most an import may write",
                limit >> 30
            )));
        }
        out.write_all(&buf[..n])
            .map_err(ImageError::io_at("write", dest))?;
        if total - reported >= PROGRESS_EVERY {
            reported = total;
            progress(Event::Bytes { bytes: total });
        }
    }
    Ok(())
}

/// A byte range of the archive file, read with `pread`.
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive ends inside a file",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The files of an outer archive, by their path inside it.
fn index_tar(file: &File, label: &str) -> Result<HashMap<String, Item>> {
    let bad = |e: std::io::Error| {
        invalid(format!(
            "{label} is not a readable tar archive (cut short or corrupt?): {e}"
        ))
    };
    let len = file
        .metadata()
        .map_err(ImageError::io(format!("stat {label}")))?
        .len();
    let mut ar = tar::Archive::new(file);
    let mut items = HashMap::new();
    for entry in ar.entries_with_seek().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if items.len() >= MAX_ARCHIVE_ENTRIES {
            return Err(invalid(format!(
                "{label} has more than {MAX_ARCHIVE_ENTRIES} entries: not an image archive"
            )));
        }
        let path = entry.path_bytes().into_owned();
        let Some(name) = archive_name(&path).filter(|n| !n.is_empty()) else {
            continue;
        };
        let item = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let pos = entry.raw_file_position();
                let size = entry.size();
                if pos.checked_add(size).is_none_or(|end| end > len) {
                    return Err(invalid(format!(
                        "{label}: the archive is cut short (it ends inside {name})"
                    )));
                }
                Item::File { pos, size }
            }
            tar::EntryType::Directory => Item::Dir,
            tar::EntryType::Symlink => {
                let Some(to) = entry.link_name_bytes() else {
                    continue;
                };
                // Relative to the link's directory; absolute from the root.
                let mut full = Vec::new();
                if !to.starts_with(b"/") {
                    if let Some((dir, _)) = name.rsplit_once('/') {
                        full.extend_from_slice(dir.as_bytes());
                        full.push(b'/');
                    }
                }
                full.extend_from_slice(&to);
                match archive_name(&full) {
                    Some(to) => Item::Link(to),
                    None => continue,
                }
            }
            tar::EntryType::Link => match entry.link_name_bytes().and_then(|t| archive_name(&t)) {
                Some(to) => Item::Link(to),
                None => continue,
            },
            _ => continue,
        };
        items.insert(name, item);
    }
    Ok(items)
}

/// `path` relative to its archive's root, `/`-joined: a leading `/`, `.`
/// and empty components dropped, `..` resolved; `None` if it climbs out.
fn archive_name(path: &[u8]) -> Option<String> {
    let parts = components(path)?;
    let parts: Vec<&str> = parts
        .into_iter()
        .map(std::str::from_utf8)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    Some(parts.join("/"))
}

/// The components of an entry path relative to the layer's root: a
/// leading `/`, `.` and empty components dropped, `..` resolved
/// lexically; `None` if it climbs above the root.
fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------
// What to import: the layers (bottom first) and the config's env.

struct Plan {
    layers: Vec<LayerPlan>,
    env: Vec<String>,
    /// The manifest's `source`: `oci <file>` or `docker-archive <file>`.
    source: String,
}

struct LayerPlan {
    /// Its file in the source.
    path: String,
    /// The blob's digest and size, when the layout names them.
    digest: Option<String>,
    size: Option<u64>,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    diff_id: Option<String>,
    media_type: String,
    /// How messages name it: the blob digest, else the diff_id.
    id: String,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// An index or an image manifest (told apart by what it has).
#[derive(Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RunConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct LayoutMarker {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// `blobs/sha256/<hex>` of a checked digest.
fn blob_path(digest: &str, label: &str, what: &str) -> Result<String> {
    if !is_digest(digest) {
        return Err(invalid(format!(
            "{label}: {what} has digest {digest:?}: only sha256 digests are read"
        )));
    }
    Ok(format!("blobs/sha256/{}", &digest["sha256:".len()..]))
}

/// The GOARCH-style name of this machine's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn oci_plan(src: &Source) -> Result<Plan> {
    let label = &src.label;
    if src.exists("oci-layout") {
        let marker: LayoutMarker = src.json("oci-layout", None, None, "layout marker")?;
        if !marker.version.starts_with("1.") {
            return Err(invalid(format!(
                "{label}: OCI image layout version {:?} is not one this importer reads (1.x)",
                marker.version
            )));
        }
    }
    let mut doc: Document = src.json("index.json", None, None, "index")?;
    // index.json -> (a nested index ->) an image manifest.
    let mut depth = 0;
    let (manifest, manifest_digest) = loop {
        let Some(list) = doc.manifests.take() else {
            return Err(invalid(format!("{label}: index.json lists no manifests")));
        };
        let chosen = choose(list, label)?;
        let path = blob_path(&chosen.digest, label, "a manifest")?;
        let next: Document = src.json(&path, Some(&chosen.digest), chosen.size, "manifest")?;
        let is_index = INDEX_TYPES.contains(&chosen.media_type.as_str())
            || next
                .media_type
                .as_deref()
                .is_some_and(|t| INDEX_TYPES.contains(&t))
            || (next.manifests.is_some() && next.layers.is_none());
        if !is_index {
            break (next, chosen.digest);
        }
        depth += 1;
        if depth > 1 {
            return Err(invalid(format!(
                "{label}: indexes are nested more than one level deep"
            )));
        }
        doc = next;
    };
    let (Some(config), Some(layers)) = (manifest.config, manifest.layers) else {
        return Err(invalid(format!(
            "{label}: manifest {manifest_digest} has no config or no layers list"
        )));
    };
    let config_path = blob_path(&config.digest, label, "the config")?;
    let cfg: ImageConfig = src.json(&config_path, Some(&config.digest), config.size, "config")?;
    check_platform(&cfg, label);
    if layers.len() > MAX_LAYERS {
        return Err(invalid(format!(
            "{label}: the image has {} layers, more than the {MAX_LAYERS} allowed",
            layers.len()
        )));
    }
    let diff_ids = diff_ids(&cfg, layers.len(), label, false)?;
    let mut plan = Vec::with_capacity(layers.len());
    for (i, l) in layers.into_iter().enumerate() {
        let path = blob_path(&l.digest, label, "a layer")?;
        plan.push(LayerPlan {
            path,
            id: l.digest.clone(),
            digest: Some(l.digest),
            size: l.size,
            diff_id: diff_ids.as_ref().map(|d| d[i].clone()),
            media_type: l.media_type,
        });
    }
    Ok(Plan {
        layers: plan,
        env: env_of(cfg),
        source: format!("oci {label}"),
    })
}

/// The image manifest to take from an index's list: the only one, or the
/// one for linux on this machine's architecture.
fn choose(list: Vec<Descriptor>, label: &str) -> Result<Descriptor> {
    let mut images: Vec<Descriptor> = list
        .into_iter()
        .filter(|d| {
            // Build attestations (`unknown/unknown`) are not images.
            d.annotations
                .as_ref()
                .and_then(|a| a.get("vnd.docker.reference.type"))
                .is_none_or(|t| t != "attestation-manifest")
                && d.platform.as_ref().is_none_or(|p| p.os != "unknown")
        })
        .collect();
    if images.len() == 1 {
        return Ok(images.remove(0));
    }
    if images.is_empty() {
        return Err(invalid(format!("{label}: the index lists no image")));
    }
    let arch = host_arch();
    if let Some(i) = images.iter().position(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    }) {
        return Ok(images.remove(i));
    }
    let platforms: Vec<String> = images
        .iter()
        .map(|d| match &d.platform {
            Some(p) => match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            },
            None => "(no platform)".into(),
        })
        .collect();
    Err(invalid(format!(
        "{label}: the index has no image for linux/{arch}: it has {}",
        platforms.join(", ")
    )))
}

fn check_platform(cfg: &ImageConfig, label: &str) {
    if let Some(os) = cfg.os.as_deref().filter(|os| *os != "linux") {
        tracing::warn!(image = label, os, "the image is not a linux image");
    }
    if let Some(arch) = cfg.architecture.as_deref().filter(|a| *a != host_arch()) {
        tracing::warn!(
            image = label,
            arch,
            host = host_arch(),
            "the image is for another architecture: its programs may not run here"
        );
    }
}

/// The config's `rootfs.diff_ids`, one per layer (`None` if it lists none
/// and they are not `required`).
fn diff_ids(
    cfg: &ImageConfig,
    layers: usize,
    label: &str,
    required: bool,
) -> Result<Option<Vec<String>>> {
    let ids = cfg
        .rootfs
        .as_ref()
        .and_then(|r| r.diff_ids.clone())
        .unwrap_or_default();
    if ids.is_empty() && !required && layers > 0 {
        return Ok(None);
    }
    if ids.len() != layers {
        return Err(invalid(format!(
            "{label}: the config lists {} layer diff_ids for {layers} layers",
            ids.len()
        )));
    }
    if let Some(bad) = ids.iter().find(|d| !is_digest(d)) {
        return Err(invalid(format!(
            "{label}: the config has diff_id {bad:?}: only sha256 digests are read"
        )));
    }
    Ok(Some(ids))
}

fn env_of(cfg: ImageConfig) -> Vec<String> {
    cfg.config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.contains('=') && !e.starts_with('=') && !e.contains('\0'))
        .collect()
}

fn docker_plan(src: &Source) -> Result<Plan> {
    let label = &src.label;
    let entries: Vec<DockerEntry> = src.json("manifest.json", None, None, "manifest.json")?;
    let Some(first) = entries.first() else {
        return Err(invalid(format!("{label}: manifest.json lists no image")));
    };
    if entries.iter().any(|e| e.config != first.config) {
        let tags: Vec<String> = entries
            .iter()
            .map(|e| {
                e.repo_tags
                    .as_ref()
                    .filter(|t| !t.is_empty())
                    .map(|t| t.join(" "))
                    .unwrap_or_else(|| e.config.clone())
            })
            .collect();
        return Err(invalid(format!(
            "{label} holds {} images ({}): boxd imports one, `docker save` just that one",
            entries.len(),
            tags.join(", ")
        )));
    }
    // The config's file is named by its digest (`<hex>.json`, or
    // `blobs/sha256/<hex>`), the image id.
    let file = first.config.rsplit('/').next().unwrap_or("");
    let config_digest = format!("sha256:{}", file.strip_suffix(".json").unwrap_or(file));
    if !is_digest(&config_digest) {
        return Err(invalid(format!(
            "{label}: the config {:?} is not named by its digest, so it cannot be checked",
            first.config
        )));
    }
    let cfg: ImageConfig = src.json(&first.config, Some(&config_digest), None, "config")?;
    check_platform(&cfg, label);
    if first.layers.len() > MAX_LAYERS {
        return Err(invalid(format!(
            "{label}: the image has {} layers, more than the {MAX_LAYERS} allowed",
            first.layers.len()
        )));
    }
    let diff_ids = diff_ids(&cfg, first.layers.len(), label, true)?.unwrap_or_default();
    let mut plan = Vec::with_capacity(first.layers.len());
    for (path, diff_id) in first.layers.iter().zip(diff_ids) {
        // Newer archives keep layers as `blobs/sha256/<hex>`: checked too.
        let digest = path
            .strip_prefix("blobs/sha256/")
            .map(|h| format!("sha256:{h}"))
            .filter(|d| is_digest(d));
        plan.push(LayerPlan {
            path: path.clone(),
            id: digest.clone().unwrap_or_else(|| diff_id.clone()),
            digest,
            size: None,
            diff_id: Some(diff_id),
            media_type: String::new(),
        });
    }
    Ok(Plan {
        layers: plan,
        env: env_of(cfg),
        source: format!("docker-archive {label}"),
    })
}

// ---------------------------------------------------------------------
// Layers.

/// A reader that hashes (and counts, and reports) what passes.
struct Hashing<'p, R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    reported: u64,
    progress: Option<&'p mut (dyn FnMut(Event) + Send)>,
}

impl<'p, R: Read> Hashing<'p, R> {
    fn new(inner: R, progress: Option<&'p mut (dyn FnMut(Event) + Send)>) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            reported: 0,
            progress,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(p) = self.progress.as_mut() {
            if self.bytes - self.reported >= PROGRESS_EVERY
                || (n == 0 && self.bytes > self.reported)
            {
                self.reported = self.bytes;
                p(Event::Bytes { bytes: self.bytes });
            }
        }
        Ok(n)
    }
}

/// Reads `r` to its end.
fn drain(r: &mut impl Read) -> std::io::Result<()> {
    std::io::copy(r, &mut std::io::sink()).map(|_| ())
}

/// Writes one layer into a staging directory, checks it against its
/// digests and commits it; returns the stored layer's digest.
fn import_layer(
    store: &Store,
    src: &Source,
    layer: &LayerPlan,
    source: &str,
    budget: &mut u64,
    progress: Progress,
) -> Result<String> {
    let ctx = format!("layer {} of {}", layer.id, src.label);
    if layer.media_type.contains("zstd") {
        return Err(invalid(format!("{ctx}: zstd layers are not supported")));
    }
    if !layer.media_type.is_empty() && !layer.media_type.contains("tar") {
        return Err(invalid(format!(
            "{ctx}: media type {:?} is not a filesystem layer",
            layer.media_type
        )));
    }
    let blob = src.blob(&layer.path)?;
    if let Some(size) = layer.size {
        if size != blob.size {
            return Err(invalid(format!(
                "{ctx}: the blob is {} bytes where the manifest says {size} \
                 (tampered or corrupt)",
                blob.size
            )));
        }
    }
    let staging = store.stage("oci-layer")?;
    let mut raw = Hashing::new(blob.reader, Some(&mut *progress));
    let mut buffered = BufReader::with_capacity(1 << 16, &mut raw);
    let head = buffered
        .fill_buf()
        .map_err(|e| read_error(&src.label, &format!("layer {}", layer.id), e))?;
    if head.starts_with(ZSTD_MAGIC) {
        return Err(invalid(format!("{ctx}: zstd layers are not supported")));
    }
    let gzip = head.starts_with(GZIP_MAGIC);
    let (written, diff, diff_whole) = {
        let plain: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(&mut buffered))
        } else {
            Box::new(&mut buffered)
        };
        let mut diff = Hashing::new(plain, None);
        let written = extract(&mut diff, staging.path(), &ctx, budget);
        // The rest (tar's end blocks and padding), so the digests cover it.
        let whole = drain(&mut diff);
        (written, diff.digest(), whole)
    };
    let rest = drain(&mut buffered);
    drop(buffered);
    let blob_digest = raw.digest();
    if let Some(expected) = &layer.digest {
        if rest.is_ok() && &blob_digest != expected {
            return Err(tampered("layer", expected, &src.label));
        }
    }
    if let (Some(expected), Ok(())) = (&layer.diff_id, &diff_whole) {
        if &diff != expected {
            return Err(match &layer.digest {
                Some(_) => invalid(format!(
                    "{ctx}: its uncompressed content does not match the config's diff_id \
                     {expected} (tampered or corrupt)"
                )),
                None => tampered("layer", expected, &src.label),
            });
        }
    }
    written?;
    rest.map_err(|e| read_error(&src.label, &format!("layer {}", layer.id), e))?;
    diff_whole.map_err(|e| invalid(format!("{ctx}: the layer is cut short or corrupt: {e}")))?;
    let info = store.commit_layer(staging, &format!("{source} layer {}", layer.id))?;
    Ok(info.digest)
}

/// Metadata of a directory entry, applied once all its children are in.
struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<u64>,
}

struct Extractor<'a> {
    root: &'a Path,
    ctx: &'a str,
    /// Non-directory entries written so far (hard links may name them).
    written: HashSet<Vec<u8>>,
    /// Entries of this layer read so far.
    entries: usize,
    /// File bytes the import may still write ([`MAX_IMAGE_BYTES`]).
    budget: &'a mut u64,
    dirs: BTreeMap<PathBuf, DirMeta>,
}

/// Extracts the layer tar `r` into `root` (see the module docs).
fn extract(r: &mut impl Read, root: &Path, ctx: &str, budget: &mut u64) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    let mut x = Extractor {
        root,
        ctx,
        written: HashSet::new(),
        entries: 0,
        budget,
        dirs: BTreeMap::new(),
    };
    let bad = |e: std::io::Error| {
        invalid(format!(
            "{ctx}: not a readable tar archive (cut short or corrupt?): {e}"
        ))
    };
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        x.entry(&mut entry)?;
    }
    x.finish()
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("{} has a NUL byte", path.display())))
}

fn os_error(what: &str, path: &Path) -> ImageError {
    ImageError::io_at(what, path)(std::io::Error::last_os_error())
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> Result<()> {
    let c = cpath(path)?;
    // SAFETY: a valid C string; mknod never follows a symlink at `path`.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(os_error("mknod", path));
    }
    Ok(())
}

fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    let c = cpath(path)?;
    let n = CString::new(name).map_err(|_| invalid("an xattr name has a NUL byte"))?;
    // SAFETY: valid C strings and a buffer of `value.len()` bytes;
    // lsetxattr never follows a symlink.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(os_error(
            &format!("set xattr {}", String::from_utf8_lossy(name)),
            path,
        ));
    }
    Ok(())
}

/// Sets the mtime of `path` itself (not a symlink's target).
fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: libc::time_t::try_from(mtime).unwrap_or(libc::time_t::MAX),
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: a valid C string and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(os_error("set the mtime of", path));
    }
    Ok(())
}

/// Removes whatever is at `path` (a tree is removed without following
/// symlinks).
fn remove_existing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {
            std::fs::remove_dir_all(path).map_err(ImageError::io_at("remove", path))
        }
        Ok(_) => std::fs::remove_file(path).map_err(ImageError::io_at("remove", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io_at("stat", path)(e)),
    }
}

impl Extractor<'_> {
    fn refuse(&self, shown: &str, why: &str) -> ImageError {
        invalid(format!("{}: {shown}: {why}", self.ctx))
    }

    /// The directory `parts` (relative to the root), each component a
    /// real directory: missing ones are made (0755, root), a symlink or
    /// other file on the way is refused.
    fn dir(&self, parts: &[&[u8]], shown: &str, create: bool) -> Result<PathBuf> {
        let mut cur = self.root.to_path_buf();
        for (i, c) in parts.iter().enumerate() {
            cur.push(std::ffi::OsStr::from_bytes(c));
            match std::fs::symlink_metadata(&cur) {
                Ok(md) if md.is_dir() => {}
                Ok(md) => {
                    let prefix = String::from_utf8_lossy(&parts[..=i].join(&b'/')).into_owned();
                    let why = if md.file_type().is_symlink() {
                        format!("goes through the symlink {prefix}, which is not followed")
                    } else {
                        format!("{prefix} is not a directory")
                    };
                    return Err(self.refuse(shown, &why));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&cur).map_err(ImageError::io_at("create", &cur))?;
                    std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))
                        .map_err(ImageError::io_at("chmod", &cur))?;
                }
                Err(e) => return Err(ImageError::io_at("stat", &cur)(e)),
            }
        }
        Ok(cur)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        self.entries += 1;
        if self.entries > MAX_LAYER_ENTRIES {
            return Err(invalid(format!(
                "{}: more than {MAX_LAYER_ENTRIES} entries in one layer",
                self.ctx
            )));
        }
        let size = entry.size();
        if size > *self.budget {
            return Err(invalid(format!(
                "{}: the image holds more than {} GiB of files, the most an import may write",
                self.ctx,
                MAX_IMAGE_BYTES >> 30
            )));
        }
        *self.budget -= size;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        if raw_path.len() > MAX_PATH {
            return Err(invalid(format!(
                "{}: an entry's path is {} bytes long, more than the {MAX_PATH} allowed",
                self.ctx,
                raw_path.len()
            )));
        }
        let Some(parts) = components(&raw_path) else {
            return Err(self.refuse(&shown, "the path escapes the layer"));
        };
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header
            .mode()
            .map_err(|e| self.refuse(&shown, &format!("bad mode: {e}")))?
            & 0o7777;
        let uid = header
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .ok_or_else(|| self.refuse(&shown, "bad or too large uid"))?;
        let gid = header
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(|| self.refuse(&shown, "bad or too large gid"))?;
        let mtime = header.mtime().ok();
        let (dev_major, dev_minor) = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        let xattrs = self.xattrs(entry, &shown)?;
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }

        let dir_meta = DirMeta {
            mode,
            uid,
            gid,
            mtime,
        };
        let Some((name, parent_parts)) = parts.split_last() else {
            // The layer's root itself (`./`).
            if kind != tar::EntryType::Directory {
                return Err(self.refuse(&shown, "the root of a layer must be a directory"));
            }
            self.dirs.insert(self.root.to_path_buf(), dir_meta);
            return Ok(());
        };
        let rel = parts.join(&b'/');

        if let Some(hidden) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent_parts, hidden, &shown);
        }

        let parent = self.dir(parent_parts, &shown, true)?;
        let path = parent.join(std::ffi::OsStr::from_bytes(name));
        match kind {
            tar::EntryType::Directory => {
                match std::fs::symlink_metadata(&path) {
                    Ok(md) if md.is_dir() => {}
                    _ => {
                        remove_existing(&path)?;
                        std::fs::create_dir(&path).map_err(ImageError::io_at("create", &path))?;
                    }
                }
                self.apply_xattrs(&path, &xattrs)?;
                self.dirs.insert(path, dir_meta);
                return Ok(());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.write_file(entry, &path, &shown, (mode, uid, gid))?;
                self.apply_xattrs(&path, &xattrs)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.refuse(&shown, "a symlink without a target"))?;
                if target.len() > MAX_PATH {
                    return Err(self.refuse(&shown, "the symlink's target is too long"));
                }
                remove_existing(&path)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(ImageError::io_at("symlink", &path))?;
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                    .map_err(ImageError::io_at("chown", &path))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hard_link(&target, &path, &shown)?;
                self.written.insert(rel);
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                if kind == tar::EntryType::Char && dev_major == 0 && dev_minor == 0 {
                    // Already an overlayfs whiteout.
                    remove_existing(&path)?;
                    mknod(&path, libc::S_IFCHR, libc::makedev(0, 0))?;
                    self.written.insert(rel);
                    return Ok(());
                }
                return Err(invalid(format!(
                    "{}: device node {shown} is not allowed in an imported image",
                    self.ctx
                )));
            }
            tar::EntryType::Fifo => {
                remove_existing(&path)?;
                mknod(&path, libc::S_IFIFO | 0o600, 0)?;
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                    .map_err(ImageError::io_at("chown", &path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(ImageError::io_at("chmod", &path))?;
                self.apply_xattrs(&path, &xattrs)?;
            }
            other => {
                tracing::debug!(path = %shown, kind = ?other, "skipping an entry of an unknown kind");
                return Ok(());
            }
        }
        if let Some(t) = mtime {
            set_mtime(&path, t)?;
        }
        self.written.insert(rel);
        Ok(())
    }

    /// `.wh.<name>` in `parent`: `<name>` hidden (a 0/0 character device);
    /// `.wh..wh..opq`: `parent` opaque.
    fn whiteout(&self, parent: &[&[u8]], hidden: &[u8], shown: &str) -> Result<()> {
        let parent = self.dir(parent, shown, true)?;
        if hidden == b".wh..opq" {
            set_xattr(&parent, OPAQUE_XATTR.as_bytes(), b"y")
        } else if hidden.starts_with(b".wh.") {
            // AUFS bookkeeping (`.wh..wh.plnk`, …): nothing of the image.
            tracing::debug!(path = %shown, "skipping an aufs metadata entry");
            Ok(())
        } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
            Err(self.refuse(shown, "a whiteout of nothing"))
        } else {
            let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
            remove_existing(&target)?;
            mknod(&target, libc::S_IFCHR, libc::makedev(0, 0))
        }
    }

    /// A regular file at `path` (its parent checked), created exclusively
    /// and never through a symlink, with the entry's data, owner and mode.
    fn write_file<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        shown: &str,
        (mode, uid, gid): (u32, u32, u32),
    ) -> Result<()> {
        remove_existing(path)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(ImageError::io_at("create", path))?;
        let expected = entry.size();
        let mut copied = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(
                        self.refuse(shown, &format!("the layer is cut short or corrupt: {e}"))
                    )
                }
            };
            f.write_all(&buf[..n])
                .map_err(ImageError::io_at("write", path))?;
            copied += n as u64;
        }
        if copied != expected {
            return Err(self.refuse(
                shown,
                &format!("the layer is cut short ({copied} of {expected} bytes of the file)"),
            ));
        }
        // Owner first: chown clears the set-id bits.
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .map_err(ImageError::io_at("chown", path))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(ImageError::io_at("chmod", path))
    }

    /// A hard link at `path` to `target`, which must be an earlier
    /// non-directory entry of this layer, reached without a symlink.
    fn hard_link(&self, target: &[u8], path: &Path, shown: &str) -> Result<()> {
        let shown_target = String::from_utf8_lossy(target).into_owned();
        let Some(parts) = components(target).filter(|p| !p.is_empty()) else {
            return Err(self.refuse(
                shown,
                &format!("the hard link's target {shown_target} is outside the layer"),
            ));
        };
        if !self.written.contains(&parts.join(&b'/')) {
            return Err(self.refuse(
                shown,
                &format!(
                    "the hard link's target {shown_target} is not an earlier file of this layer"
                ),
            ));
        }
        let Some((name, parent)) = parts.split_last() else {
            return Err(self.refuse(shown, "a hard link to the root"));
        };
        let tpath = self
            .dir(parent, shown, false)?
            .join(std::ffi::OsStr::from_bytes(name));
        if tpath == path {
            return Err(self.refuse(shown, "a hard link to itself"));
        }
        remove_existing(path)?;
        // linkat without AT_SYMLINK_FOLLOW: a symlink is linked, not its
        // target.
        std::fs::hard_link(&tpath, path).map_err(ImageError::io_at("link", path))
    }

    /// The entry's PAX xattrs this importer keeps: `user.*` and
    /// `security.capability`.
    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| self.refuse(shown, &format!("bad PAX header: {e}")))?
        else {
            return Ok(out);
        };
        for ext in exts {
            let ext = ext.map_err(|e| self.refuse(shown, &format!("bad PAX header: {e}")))?;
            let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if name.starts_with(b"user.") || name == b"security.capability" {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            } else {
                tracing::debug!(
                    path = shown,
                    xattr = %String::from_utf8_lossy(name),
                    "dropping an xattr of the archive"
                );
            }
        }
        Ok(out)
    }

    fn apply_xattrs(&self, path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        for (name, value) in xattrs {
            set_xattr(path, name, value)?;
        }
        Ok(())
    }

    /// Directory owners, modes and mtimes, now that their children are in.
    fn finish(self) -> Result<()> {
        for (path, m) in self.dirs.iter().rev() {
            // Replaced by a later entry (a file, a symlink): not a directory now.
            match std::fs::symlink_metadata(path) {
                Ok(md) if md.is_dir() => {}
                _ => continue,
            }
            std::os::unix::fs::lchown(path, Some(m.uid), Some(m.gid))
                .map_err(ImageError::io_at("chown", path))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m.mode))
                .map_err(ImageError::io_at("chmod", path))?;
            if let Some(t) = m.mtime {
                set_mtime(path, t)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_inside_the_layer() {
        let c = |p: &str| {
            components(p.as_bytes()).map(|v| {
                v.iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
        };
        assert_eq!(c("./etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(c("/etc//x/").as_deref(), Some("etc/x"));
        assert_eq!(c("a/../b").as_deref(), Some("b"));
        assert_eq!(c("./").as_deref(), Some(""));
        assert_eq!(c("../evil"), None);
        assert_eq!(c("a/../../evil"), None);
        assert_eq!(c("/../etc"), None);
    }

    #[test]
    fn a_layer_that_unpacks_past_the_import_budget_is_refused() {
        let mut ar = tar::Builder::new(Vec::new());
        for (name, len) in [("small", 10usize), ("big", 4096)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(len as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            ar.append_data(&mut h, name, &vec![0u8; len][..])
                .expect("tar");
        }
        let data = ar.into_inner().expect("tar");
        let dir = std::env::temp_dir().join(format!("boxd-oci-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut budget = 1000;
        let err =
            extract(&mut &data[..], &dir, "layer x", &mut budget).expect_err("past the budget");
        assert!(err.to_string().contains("GiB of files"), "{err}");
        assert_eq!(budget, 990, "the small file was counted");
        assert!(
            !dir.join("big").exists(),
            "nothing of the big file was written"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_gzipped_archive_that_grows_past_the_limit_is_refused() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("boxd-oci-gunzip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 3 << 20]).expect("gzip");
        std::fs::write(dir.join("a.tgz"), z.finish().expect("gzip")).expect("write");
        let mut quiet = |_| {};
        let err = gunzip(
            &dir.join("a.tgz"),
            &dir.join("a.tar"),
            "a.tgz",
            1 << 20,
            &mut quiet,
        )
        .expect_err("past the limit");
        assert!(
            err.to_string().contains("decompresses to more than"),
            "{err}"
        );
        assert!(
            std::fs::metadata(dir.join("a.tar")).map_or(0, |m| m.len()) <= 1 << 20,
            "more than the limit was written"
        );
        gunzip(
            &dir.join("a.tgz"),
            &dir.join("b.tar"),
            "a.tgz",
            4 << 20,
            &mut quiet,
        )
        .expect("within the limit");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_host_platform_is_chosen_from_an_index() {
        let d = |arch: &str, digest: char| Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{}", digest.to_string().repeat(64)),
            size: None,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
            annotations: None,
        };
        let list = vec![d("s390x", 'a'), d(host_arch(), 'b'), d("riscv64", 'c')];
        assert!(choose(list, "x").unwrap().digest.ends_with('b'));
        let err = choose(vec![d("s390x", 'a'), d("riscv64", 'c')], "x")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("linux/s390x") && err.contains(host_arch()),
            "{err}"
        );
        // One image is taken whatever its platform.
        assert!(choose(vec![d("s390x", 'a')], "x").is_ok());
    }
}
