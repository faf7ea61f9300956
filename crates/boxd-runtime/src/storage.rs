//! The storage pool: the filesystem that holds every box's writable layer,
//! every snapshot layer and every volume (`<data>/pool/{boxes,snapshots,
//! volumes}`).
//!
//! With the `btrfs` driver the pool is a btrfs filesystem: a sparse image
//! file (`<data>/pool.img`, made once by `mkfs.btrfs`) on a loop device,
//! or the data directory's own filesystem when that is btrfs already. Each
//! box directory and each volume is a subvolume whose quota group carries
//! its size limit, so a box that writes past its `disk` gets `EDQUOT`
//! ("Disk quota exceeded") and nobody else notices; a subvolume costs ~1 ms
//! to make, nothing to mount. Snapshot captures clone file data (reflinks)
//! instead of copying it, so a snapshot's cost follows the number of files,
//! not their bytes. The `dir` driver keeps plain directories on the data
//! directory's filesystem: no limits, copies instead of clones.
//!
//! The pool stays mounted when the daemon exits (boxes keep running on it);
//! [`unmount`] detaches it once nothing needs it (tests, benches).
//!
//! Never: formats anything but the image file it has just created, enables
//! quotas on a filesystem other than the pool's, or follows a symlink in
//! the paths it makes.

use crate::error::{Result, RuntimeError};
use nix::sys::statfs::{statfs, BTRFS_SUPER_MAGIC};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the pool is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// `btrfs` when it can be made here, else `dir` with a warning.
    #[default]
    Auto,
    /// btrfs or an error saying why not.
    Btrfs,
    /// Plain directories: no disk limits, no cloned snapshots.
    Dir,
}

/// The pool's settings (`[storage]` in the daemon's config).
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    pub driver: Driver,
    /// Size of a new pool image; default: 90% of the free space of the
    /// data directory's filesystem. Only read when the image is made.
    pub size_bytes: Option<u64>,
}

/// The pool as opened: where it is and whether it enforces limits.
#[derive(Debug, Clone)]
pub struct Pool {
    root: PathBuf,
    quotas: bool,
    reason: Option<String>,
}

/// Smallest pool image `mkfs.btrfs` is asked to make.
const MIN_IMAGE: u64 = 1 << 30;

impl Pool {
    /// Opens (and on first use makes) the pool of `data_dir`.
    pub fn open(data_dir: &Path, cfg: &StorageConfig) -> Result<Pool> {
        let root = data_dir.join("pool");
        mkdir(&root, 0o711)?;
        if cfg.driver == Driver::Dir {
            return Ok(Pool::plain(root, "the storage driver is `dir`".into()));
        }
        // A pool the `dir` driver filled (no image, entries in it) stays
        // a dir pool: mounting an image over it would hide its boxes.
        let image = data_dir.join("pool.img");
        let filled = std::fs::read_dir(&root).is_ok_and(|mut rd| rd.next().is_some());
        if !image.exists() && !is_btrfs(&root) && filled {
            let why = format!(
                "{} holds boxes of the `dir` driver (no pool image); move them away to use btrfs",
                root.display()
            );
            if cfg.driver == Driver::Btrfs {
                return Err(storage_err(why));
            }
            tracing::warn!(reason = %why, "keeping the storage pool as plain directories");
            return Ok(Pool::plain(root, why));
        }
        match open_btrfs(data_dir, &root, cfg) {
            Ok(()) => Ok(Pool {
                root,
                quotas: true,
                reason: None,
            }),
            Err(e) if cfg.driver == Driver::Auto => {
                let why = e.to_string();
                tracing::warn!(
                    reason = %why,
                    "the btrfs storage pool is unavailable: boxes get no disk limits and \
                     snapshots copy their files (install btrfs-progs, or set \
                     [storage] driver = \"dir\" to silence this)"
                );
                Ok(Pool::plain(root, why))
            }
            Err(e) => Err(e),
        }
    }

    fn plain(root: PathBuf, reason: String) -> Pool {
        Pool {
            root,
            quotas: false,
            reason: Some(reason),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether size limits are enforced (the btrfs driver).
    pub fn enforces_limits(&self) -> bool {
        self.quotas
    }

    /// Why limits are not enforced (`None` when they are).
    pub fn no_limits_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Makes the empty directory `path` (mode `mode`) inside the pool: a
    /// subvolume limited to `limit` bytes when the pool enforces limits,
    /// a plain directory otherwise. Fails with `AlreadyExists` like mkdir.
    pub fn make_dir(&self, path: &Path, mode: u32, limit: Option<u64>) -> std::io::Result<()> {
        if !self.quotas {
            return std::fs::DirBuilder::new().mode(mode).create(path);
        }
        let parent = path.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
        let name = path.file_name().ok_or(std::io::ErrorKind::InvalidInput)?;
        btrfs::create_subvolume(parent, name.as_encoded_bytes())?;
        let made = (|| {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            if let Some(bytes) = limit {
                btrfs::limit(path, bytes)?;
            }
            Ok(())
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir(path);
        }
        made
    }
}

impl Pool {
    /// Bytes the subvolume at `path` refers to, as its quota group counted
    /// them at the pool's last commit (btrfs commits every 30 s at most);
    /// `None` on a pool without limits or for a plain directory.
    pub fn used_bytes(&self, path: &Path) -> Option<u64> {
        if !self.quotas {
            return None;
        }
        btrfs::referenced(path).ok()
    }

    /// Removes `path` (made by [`Pool::make_dir`]) and everything in it;
    /// absent already is fine. A subvolume goes in one call (the pool
    /// frees its blocks in the background), whatever it holds.
    pub fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        if self.quotas {
            if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
                if btrfs::destroy_subvolume(parent, name.as_encoded_bytes()).is_ok() {
                    return Ok(());
                }
            }
        }
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(p) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(RuntimeError::io(format!("create {}", p.display()))(e))
        }
        _ => Ok(()),
    }
}

fn is_btrfs(p: &Path) -> bool {
    statfs(p).is_ok_and(|s| s.filesystem_type() == BTRFS_SUPER_MAGIC)
}

fn storage_err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Storage(msg.into())
}

/// Makes `root` a btrfs filesystem with quotas on: already one (mounted
/// by an earlier start, or the data dir is btrfs), or the image mounted.
fn open_btrfs(data_dir: &Path, root: &Path, cfg: &StorageConfig) -> Result<()> {
    if !is_btrfs(root) {
        let image = data_dir.join("pool.img");
        if !image.exists() {
            make_image(data_dir, &image, cfg.size_bytes)?;
        }
        loopdev::mount(&image, root)?;
        tracing::info!(image = %image.display(), pool = %root.display(), "storage pool mounted");
    }
    btrfs::enable_quotas(root)
        .map_err(|e| storage_err(format!("enable quotas on {}: {e}", root.display())))
}

/// Removes the temporary files of image formats a crash cut short
/// (`.pool.img.<random>` beside the image, and the fixed `pool.img.tmp` of
/// earlier versions): sparse, but they hold what mkfs had written.
fn remove_unfinished_images(data_dir: &Path, image: &Path) {
    let Some(name) = image.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.");
    let Ok(rd) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) || n == format!("{name}.tmp") {
            tracing::warn!(file = %e.path().display(), "removing an unfinished pool image");
            if let Err(error) = std::fs::remove_file(e.path()) {
                tracing::warn!(file = %e.path().display(), %error, "cannot remove it");
            }
        }
    }
}

/// Creates the sparse image and formats it, under a temporary name so a
/// crash never leaves a half-made image behind the real one.
fn make_image(data_dir: &Path, image: &Path, size: Option<u64>) -> Result<()> {
    remove_unfinished_images(data_dir, image);
    let size = match size {
        Some(s) => s,
        None => {
            let st = statfs(data_dir)
                .map_err(|e| storage_err(format!("statfs {}: {e}", data_dir.display())))?;
            let free = st.blocks_available() as u64 * st.block_size() as u64;
            free / 10 * 9
        }
    };
    if size < MIN_IMAGE {
        return Err(storage_err(format!(
            "a pool of {size} bytes is too small (at least {MIN_IMAGE}); free space on {} or \
             set [storage] size_gib",
            data_dir.display()
        )));
    }
    // The pool holds every box: its image appears at `image` only once it
    // is formatted and on disk (a unique temporary file beside it, fsynced,
    // renamed, the directory fsynced), so a crash never leaves a pool image
    // that does not mount.
    crate::durable::replace_with(image, 0o600, |f| {
        f.set_len(size)?;
        // mkfs.btrfs formats the still unnamed file through its stdin
        // (`/dev/stdin` opens the file itself, read-write for root).
        let out = Command::new("mkfs.btrfs")
            .args(["-q", "-K", "-L", "boxd-pool", "/dev/stdin"])
            .stdin(f.try_clone()?)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(std::io::Error::other(format!(
                "mkfs.btrfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("cannot run mkfs.btrfs ({e}): install btrfs-progs"),
            )),
        }
    })
    .map_err(|e| storage_err(format!("make {}: {e}", image.display())))?;
    tracing::info!(image = %image.display(), bytes = size, "storage pool image made");
    Ok(())
}

/// Detaches `data_dir`'s pool if it is a mount (lazily: boxes still using
/// it keep it until they end; the loop device goes with the last user).
/// For tests and benches: the daemon leaves its pool mounted on purpose.
pub fn unmount(data_dir: &Path) {
    let root = data_dir.join("pool");
    let parent_dev = std::fs::metadata(data_dir).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
    let dev = std::fs::metadata(&root).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
    if let (Ok(a), Ok(b)) = (parent_dev, dev) {
        if a != b {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Attaching the image to a loop device and mounting it.
mod loopdev {
    use super::*;

    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
    const LO_FLAGS_AUTOCLEAR: u32 = 4;

    #[repr(C)]
    struct LoopInfo64 {
        device: u64,
        inode: u64,
        rdevice: u64,
        offset: u64,
        sizelimit: u64,
        number: u32,
        encrypt_type: u32,
        encrypt_key_size: u32,
        flags: u32,
        file_name: [u8; 64],
        crypt_name: [u8; 64],
        encrypt_key: [u8; 32],
        init: [u64; 2],
    }

    #[repr(C)]
    struct LoopConfig {
        fd: u32,
        block_size: u32,
        info: LoopInfo64,
        reserved: [u64; 8],
    }

    const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

    /// Attaches `image` to a free loop device (detached again when its
    /// last user goes) and mounts it at `target`.
    pub fn mount(image: &Path, target: &Path) -> Result<()> {
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(image)
            .map_err(RuntimeError::io(format!("open {}", image.display())))?;
        let control = File::open("/dev/loop-control")
            .map_err(|e| storage_err(format!("open /dev/loop-control: {e}")))?;
        // Another process may take the device between GET_FREE and
        // CONFIGURE (EBUSY): ask again, a bounded number of times.
        for _ in 0..16 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an index.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return Err(storage_err(format!("find a free loop device: {e}")));
            }
            let dev_path = format!("/dev/loop{n}");
            let dev = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&dev_path)
                .map_err(|e| storage_err(format!("open {dev_path}: {e}")))?;
            let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
            info.flags = LO_FLAGS_AUTOCLEAR;
            let name = image.as_os_str().as_encoded_bytes();
            let len = name.len().min(63);
            info.file_name[..len].copy_from_slice(&name[..len]);
            let cfg = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: `cfg` is a valid `struct loop_config` for the call.
            let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EBUSY) {
                    continue;
                }
                return Err(storage_err(format!(
                    "attach {} to {dev_path}: {e}",
                    image.display()
                )));
            }
            let flags = nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOATIME;
            // `dev` stays open until the mount holds the device, so the
            // autoclear cannot detach it in between.
            return nix::mount::mount(
                Some(dev_path.as_str()),
                target,
                Some("btrfs"),
                flags,
                None::<&str>,
            )
            .map_err(|e| {
                storage_err(format!(
                    "mount {} ({dev_path}) at {}: {e}",
                    image.display(),
                    target.display()
                ))
            });
        }
        Err(storage_err(
            "every free loop device was taken by someone else",
        ))
    }
}

/// The btrfs ioctls the pool needs (linux/btrfs.h).
mod btrfs {
    use super::*;

    #[repr(C)]
    struct VolArgs {
        fd: i64,
        name: [u8; 4088],
    }

    #[repr(C)]
    struct QuotaCtlArgs {
        cmd: u64,
        status: u64,
    }

    #[repr(C)]
    struct QgroupLimitArgs {
        qgroupid: u64,
        flags: u64,
        max_rfer: u64,
        max_excl: u64,
        rsv_rfer: u64,
        rsv_excl: u64,
    }

    #[repr(C)]
    struct InoLookupArgs {
        treeid: u64,
        objectid: u64,
        name: [u8; 4080],
    }

    #[repr(C)]
    struct SearchArgs {
        tree_id: u64,
        min_objectid: u64,
        max_objectid: u64,
        min_offset: u64,
        max_offset: u64,
        min_transid: u64,
        max_transid: u64,
        min_type: u32,
        max_type: u32,
        nr_items: u32,
        unused: [u32; 1],
        unused_more: [u64; 4],
        buf: [u8; 4096 - 104],
    }

    const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);
    const _: () = assert!(std::mem::size_of::<SearchArgs>() == 4096);

    const QUOTA_TREE: u64 = 8;
    const QGROUP_INFO_KEY: u32 = 242;
    /// The root directory's inode number in every subvolume.
    const FIRST_FREE_OBJECTID: u64 = 256;
    const QUOTA_CTL_ENABLE: u64 = 1;
    const QGROUP_LIMIT_MAX_RFER: u64 = 1;

    nix::ioctl_write_ptr!(subvol_create, 0x94, 14, VolArgs);
    nix::ioctl_write_ptr!(snap_destroy, 0x94, 15, VolArgs);
    nix::ioctl_readwrite!(tree_search, 0x94, 17, SearchArgs);
    nix::ioctl_readwrite!(ino_lookup, 0x94, 18, InoLookupArgs);
    nix::ioctl_readwrite!(quota_ctl, 0x94, 40, QuotaCtlArgs);
    nix::ioctl_read!(qgroup_limit, 0x94, 43, QgroupLimitArgs);

    fn open_dir(p: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(p)
    }

    fn vol_args(name: &[u8]) -> std::io::Result<VolArgs> {
        if name.is_empty() || name.len() >= 4088 || name.contains(&b'/') || name.contains(&0) {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let mut args = VolArgs {
            fd: 0,
            name: [0; 4088],
        };
        args.name[..name.len()].copy_from_slice(name);
        Ok(args)
    }

    pub fn create_subvolume(parent: &Path, name: &[u8]) -> std::io::Result<()> {
        let args = vol_args(name)?;
        let dir = open_dir(parent)?;
        // SAFETY: `args` is a valid, NUL-terminated `btrfs_ioctl_vol_args`.
        unsafe { subvol_create(dir.as_raw_fd(), &args) }?;
        Ok(())
    }

    /// Deletes subvolume `name` of `parent` (fails if it is a plain dir).
    pub fn destroy_subvolume(parent: &Path, name: &[u8]) -> std::io::Result<()> {
        let args = vol_args(name)?;
        let dir = open_dir(parent)?;
        // SAFETY: as in `create_subvolume`.
        unsafe { snap_destroy(dir.as_raw_fd(), &args) }?;
        Ok(())
    }

    /// Turns quota groups on (a no-op when they are on already).
    pub fn enable_quotas(root: &Path) -> std::io::Result<()> {
        let dir = open_dir(root)?;
        let mut args = QuotaCtlArgs {
            cmd: QUOTA_CTL_ENABLE,
            status: 0,
        };
        // SAFETY: `args` is a valid `btrfs_ioctl_quota_ctl_args`.
        unsafe { quota_ctl(dir.as_raw_fd(), &mut args) }?;
        Ok(())
    }

    /// The referenced bytes of the level-0 quota group of the subvolume
    /// at `path` (its id from `INO_LOOKUP`, its counters from the quota
    /// tree).
    pub fn referenced(path: &Path) -> std::io::Result<u64> {
        let dir = open_dir(path)?;
        let mut look = InoLookupArgs {
            treeid: 0,
            objectid: FIRST_FREE_OBJECTID,
            name: [0; 4080],
        };
        // SAFETY: `look` is a valid `btrfs_ioctl_ino_lookup_args`.
        unsafe { ino_lookup(dir.as_raw_fd(), &mut look) }?;
        let subvol = look.treeid;
        // SAFETY: all-zero is a valid `btrfs_ioctl_search_args`.
        let mut args: SearchArgs = unsafe { std::mem::zeroed() };
        args.tree_id = QUOTA_TREE;
        args.min_type = QGROUP_INFO_KEY;
        args.max_type = QGROUP_INFO_KEY;
        args.min_offset = subvol;
        args.max_offset = subvol;
        args.max_transid = u64::MAX;
        args.nr_items = 1;
        // SAFETY: `args` is a valid `btrfs_ioctl_search_args`.
        unsafe { tree_search(dir.as_raw_fd(), &mut args) }?;
        // One item: a 32-byte search header (transid, objectid, offset,
        // type, len), then `btrfs_qgroup_info_item` (generation, rfer, …).
        let b = &args.buf;
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let item_type = u32::from_le_bytes(b[24..28].try_into().unwrap_or([0; 4]));
        if args.nr_items != 1 || item_type != QGROUP_INFO_KEY || u64_at(16) != subvol {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok(u64_at(32 + 8))
    }

    /// Limits the bytes the subvolume at `path` refers to.
    pub fn limit(path: &Path, bytes: u64) -> std::io::Result<()> {
        let dir = open_dir(path)?;
        // qgroupid 0: the subvolume of the fd.
        let mut args = QgroupLimitArgs {
            qgroupid: 0,
            flags: QGROUP_LIMIT_MAX_RFER,
            max_rfer: bytes,
            max_excl: 0,
            rsv_rfer: 0,
            rsv_excl: 0,
        };
        // SAFETY: `args` is a valid `btrfs_ioctl_qgroup_limit_args`.
        unsafe { qgroup_limit(dir.as_raw_fd(), &mut args) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_pool_images_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("boxd-storage-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for n in [
            ".pool.img.Ab12Cd",
            "pool.img.tmp",
            "pool.img",
            "pool",
            ".other.x",
        ] {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        remove_unfinished_images(&dir, &dir.join("pool.img"));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".other.x", "pool", "pool.img"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
