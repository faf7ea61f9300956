//! Snapshot layers: a box's overlay upper dirs copied into immutable
//! layer directories that later boxes stack (id-mapped, read-only) above
//! their image layers.
//!
//! On disk: `snapshots/<id>/upper-N` (one per overlay of the box, `N` as in
//! the box's `upper-N`). A snapshot is written into
//! `snapshots/.tmp-<id>/`, synced, and renamed into place; anything named
//! `.tmp-*` is a snapshot whose capture did not finish.
//!
//! The copy keeps what overlayfs needs to read the layer as a lower:
//! whiteouts (0:0 character devices), `trusted.overlay.*` xattrs (opaque
//! dirs), every other xattr, modes, hard links, symlinks and times.
//! Ownership is shifted from the box's host id range to box-relative ids
//! (`host_base + n` → `n`), the form image layers have, so the id-mapped
//! mount of any later box shows the same owners; an id outside the range
//! (overlay's own files) becomes 65534 (nobody). File data is cloned
//! (`FICLONE`) where the filesystem can, else copied in the kernel
//! (`copy_file_range`).

use crate::error::{Result, RuntimeError};
use crate::idmap::IDS_PER_BOX;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const NOBODY: u32 = 65534;

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    RuntimeError::io(format!("{what} {}", p.display()))
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::Setup(format!("path {} contains NUL", p.display())))
}

fn last(what: &str, p: &Path) -> RuntimeError {
    io(what, p)(std::io::Error::last_os_error())
}

/// Copies a tree with ownership shifted; returns the bytes of file data.
pub struct Copier {
    base: u32,
    links: HashMap<(u64, u64), std::path::PathBuf>,
    pub bytes: u64,
}

impl Copier {
    /// `base`: the host id box root maps to.
    pub fn new(base: u32) -> Copier {
        Copier {
            base,
            links: HashMap::new(),
            bytes: 0,
        }
    }

    fn shift(&self, id: u32) -> u32 {
        if id >= self.base && id - self.base < IDS_PER_BOX {
            id - self.base
        } else {
            NOBODY
        }
    }

    /// Copies `src` (a directory) to `dst` (which must not exist).
    pub fn copy_tree(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let md = std::fs::symlink_metadata(src).map_err(io("stat", src))?;
        self.copy_entry(src, dst, &md)
    }

    fn copy_entry(&mut self, src: &Path, dst: &Path, md: &std::fs::Metadata) -> Result<()> {
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(dst).map_err(io("create", dst))?;
            self.attrs(src, dst, md)?;
            let mut entries: Vec<_> = std::fs::read_dir(src)
                .map_err(io("read", src))?
                .collect::<std::io::Result<_>>()
                .map_err(io("read", src))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let s = e.path();
                let m = std::fs::symlink_metadata(&s).map_err(io("stat", &s))?;
                self.copy_entry(&s, &dst.join(e.file_name()), &m)?;
            }
            // After the children: creating them changed the times.
            return set_times(dst, md);
        }
        if md.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                return std::fs::hard_link(first, dst).map_err(io("link", dst));
            }
            self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
        }
        if ft.is_file() {
            self.copy_file(src, dst, md)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src).map_err(io("readlink", src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(io("symlink", dst))?;
        } else {
            // Devices (overlay whiteouts are 0:0 character devices), fifos, sockets.
            let c = cpath(dst)?;
            // SAFETY: mknod on a valid C path.
            if unsafe { libc::mknod(c.as_ptr(), md.mode() as libc::mode_t, md.rdev()) } != 0 {
                return Err(last("mknod", dst));
            }
        }
        self.attrs(src, dst, md)?;
        set_times(dst, md)
    }

    fn copy_file(&mut self, src: &Path, dst: &Path, md: &std::fs::Metadata) -> Result<()> {
        let from = File::open(src).map_err(io("open", src))?;
        let to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)
            .map_err(io("create", dst))?;
        let len = md.len();
        self.bytes += len;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: FICLONE between two open descriptors.
        if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
            return Ok(());
        }
        let mut left = len;
        while left > 0 {
            // SAFETY: copy_file_range on two open descriptors, null offsets
            // (the files' own positions).
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    std::ptr::null_mut(),
                    left.min(1 << 30) as usize,
                    0,
                )
            };
            if n < 0 {
                return Err(last("copy to", dst));
            }
            if n == 0 {
                break; // the file shrank: the box is frozen, so it was not us
            }
            left -= n as u64;
        }
        Ok(())
    }

    /// Owner (shifted), mode and every xattr.
    fn attrs(&self, src: &Path, dst: &Path, md: &std::fs::Metadata) -> Result<()> {
        let c = cpath(dst)?;
        let (uid, gid) = (self.shift(md.uid()), self.shift(md.gid()));
        // SAFETY: lchown on a valid C path.
        if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
            return Err(last("chown", dst));
        }
        if !md.file_type().is_symlink() {
            // After chown, which clears set-id bits.
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(io("chmod", dst))?;
        }
        copy_xattrs(src, dst)
    }
}

fn set_times(dst: &Path, md: &std::fs::Metadata) -> Result<()> {
    let c = cpath(dst)?;
    let ts = [
        libc::timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        libc::timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    ];
    // SAFETY: utimensat on a valid C path with two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(last("set times of", dst));
    }
    Ok(())
}

fn copy_xattrs(src: &Path, dst: &Path) -> Result<()> {
    let (cs, cd) = (cpath(src)?, cpath(dst)?);
    let mut names = vec![0u8; 4096];
    // SAFETY: llistxattr into a buffer of the given size.
    let n = unsafe { libc::llistxattr(cs.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let n = if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) {
        // SAFETY: as above, asking for the size first.
        let need = unsafe { libc::llistxattr(cs.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            return Err(last("list xattrs of", src));
        }
        names.resize(need as usize, 0);
        // SAFETY: as above.
        unsafe { libc::llistxattr(cs.as_ptr(), names.as_mut_ptr().cast(), names.len()) }
    } else {
        n
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(());
        }
        return Err(io("list xattrs of", src)(e));
    }
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let cname = CString::new(name).expect("split at NUL");
        let mut val = vec![0u8; 256];
        let mut len;
        loop {
            // SAFETY: lgetxattr into a buffer of the given size.
            len = unsafe {
                libc::lgetxattr(
                    cs.as_ptr(),
                    cname.as_ptr(),
                    val.as_mut_ptr().cast(),
                    val.len(),
                )
            };
            if len >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
                break;
            }
            val.resize(val.len() * 4, 0);
        }
        if len < 0 {
            return Err(last("read an xattr of", src));
        }
        // SAFETY: lsetxattr with a value buffer of `len` bytes.
        if unsafe {
            libc::lsetxattr(
                cd.as_ptr(),
                cname.as_ptr(),
                val.as_ptr().cast(),
                len as usize,
                0,
            )
        } != 0
        {
            return Err(last("write an xattr of", dst));
        }
    }
    Ok(())
}

/// Flushes the filesystem holding `p` (one `syncfs`, cheaper than an
/// fsync per file), so a rename after it publishes complete data.
pub fn sync_fs(p: &Path) -> Result<()> {
    let f = File::open(p).map_err(io("open", p))?;
    // SAFETY: syncfs on an open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(last("sync the filesystem of", p));
    }
    Ok(())
}

/// Size on disk of a tree's file data (apparent sizes).
pub fn tree_bytes(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else if md.is_file() {
        md.len()
    } else {
        0
    }
}
