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
//! (overlay's own files) becomes 65534 (nobody). The ids inside xattrs
//! are shifted the same way: the user and group entries of POSIX ACLs
//! (`system.posix_acl_access`, `system.posix_acl_default`) and the root
//! id of v3 file capabilities (`security.capability` set in the box's user
//! namespace). File data is cloned (`FICLONE`) where the filesystem can,
//! else copied in the kernel (`copy_file_range`).
//!
//! It never writes an id-carrying xattr it cannot parse: the capture fails
//! naming the file instead (see [`shifted_xattr`]).

use crate::error::{Result, RuntimeError};
use crate::idmap::IDS_PER_BOX;
use std::borrow::Cow;
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
        copy_xattrs(src, dst, |id| self.shift(id))
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

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
const CAPABILITY: &[u8] = b"security.capability";

/// `posix_acl_xattr_header.a_version`.
const ACL_XATTR_VERSION: u32 = 2;
/// `posix_acl_xattr_entry` tags whose `e_id` is a uid or a gid.
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_1: u32 = 0x0100_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
/// `vfs_ns_cap_data`: magic_etc, two (permitted, inheritable) pairs, rootid.
const VFS_CAP_V3_LEN: usize = 24;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The value xattr `name` gets in the layer: the ids in POSIX ACLs and in
/// v3 file capabilities mapped with `shift`, every other value as it is.
///
/// A value of those names that does not parse is an error (`Err` says
/// why), not copied verbatim: verbatim it would keep the source box's host
/// ids (wrong, or pointing into another box's range, in every restored
/// box), and the kernel hands out only well-formed values, so a malformed
/// one means a damaged filesystem the user should hear about.
fn shifted_xattr<'a>(
    name: &[u8],
    value: &'a [u8],
    shift: impl Fn(u32) -> u32,
) -> std::result::Result<Cow<'a, [u8]>, String> {
    if name == ACL_ACCESS || name == ACL_DEFAULT {
        shift_acl(value, shift).map(Cow::Owned)
    } else if name == CAPABILITY {
        shift_capability(value, shift)
    } else {
        Ok(Cow::Borrowed(value))
    }
}

/// A POSIX ACL xattr: a u32 version (2), then 8-byte entries {tag u16,
/// perm u16, id u32}, little-endian; user and group entries carry ids.
fn shift_acl(value: &[u8], shift: impl Fn(u32) -> u32) -> std::result::Result<Vec<u8>, String> {
    if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
        return Err(format!(
            "a POSIX ACL of {} bytes (want 4 + 8 per entry)",
            value.len()
        ));
    }
    let version = le32(value, 0);
    if version != ACL_XATTR_VERSION {
        return Err(format!("a POSIX ACL of version {version} (want 2)"));
    }
    let mut out = value.to_vec();
    for entry in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        if tag == ACL_USER || tag == ACL_GROUP {
            let id = shift(le32(entry, 4));
            entry[4..8].copy_from_slice(&id.to_le_bytes());
        }
    }
    Ok(out)
}

/// A file capability: revisions 1 and 2 carry no id; revision 3 (set in a
/// user namespace) ends with the host uid of that namespace's root.
fn shift_capability(
    value: &[u8],
    shift: impl Fn(u32) -> u32,
) -> std::result::Result<Cow<'_, [u8]>, String> {
    if value.len() < 4 {
        return Err(format!("a file capability of {} bytes", value.len()));
    }
    match le32(value, 0) & VFS_CAP_REVISION_MASK {
        VFS_CAP_REVISION_1 | VFS_CAP_REVISION_2 => Ok(Cow::Borrowed(value)),
        VFS_CAP_REVISION_3 if value.len() == VFS_CAP_V3_LEN => {
            let mut out = value.to_vec();
            let root = shift(le32(value, 20));
            out[20..24].copy_from_slice(&root.to_le_bytes());
            Ok(Cow::Owned(out))
        }
        VFS_CAP_REVISION_3 => Err(format!(
            "a v3 file capability of {} bytes (want {VFS_CAP_V3_LEN})",
            value.len()
        )),
        rev => Err(format!(
            "a file capability of unknown revision {:#x}",
            rev >> 24
        )),
    }
}

fn copy_xattrs(src: &Path, dst: &Path, shift: impl Fn(u32) -> u32) -> Result<()> {
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
        let val = shifted_xattr(name, &val[..len as usize], &shift).map_err(|why| {
            io(
                &format!("copy xattr {} of", String::from_utf8_lossy(name)),
                src,
            )(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{why}: not copied, so the snapshot is not taken"),
            ))
        })?;
        // SAFETY: lsetxattr with a value buffer of `val.len()` bytes.
        if unsafe {
            libc::lsetxattr(
                cd.as_ptr(),
                cname.as_ptr(),
                val.as_ptr().cast(),
                val.len(),
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
    crate::durable::sync_fs(p).map_err(io("sync the filesystem of", p))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The host range of a box whose root is host id 100000.
    fn shift(id: u32) -> u32 {
        Copier::new(100_000).shift(id)
    }

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = ACL_XATTR_VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    fn cap_v3(magic_etc: u32, root: u32) -> Vec<u8> {
        let mut v = magic_etc.to_le_bytes().to_vec();
        v.extend([0x00, 0x20, 0, 0]); // permitted lo: cap_net_raw
        v.extend([0u8; 12]); // inheritable lo, permitted hi, inheritable hi
        v.extend(root.to_le_bytes());
        v
    }

    const UNDEFINED: u32 = u32::MAX;

    #[test]
    fn acl_user_and_group_ids_are_shifted_and_other_entries_kept() {
        // (user_obj, user, group_obj, group, mask, other) as getfacl writes them.
        let input = acl(&[
            (0x01, 6, UNDEFINED),
            (ACL_USER, 6, 101_234),
            (ACL_USER, 4, 100_000),
            (0x04, 4, UNDEFINED),
            (ACL_GROUP, 4, 102_345),
            (0x10, 6, UNDEFINED),
            (0x20, 0, UNDEFINED),
        ]);
        let want = acl(&[
            (0x01, 6, UNDEFINED),
            (ACL_USER, 6, 1234),
            (ACL_USER, 4, 0),
            (0x04, 4, UNDEFINED),
            (ACL_GROUP, 4, 2345),
            (0x10, 6, UNDEFINED),
            (0x20, 0, UNDEFINED),
        ]);
        for name in [ACL_ACCESS, ACL_DEFAULT] {
            assert_eq!(shifted_xattr(name, &input, shift).unwrap(), want);
        }
    }

    #[test]
    fn acl_ids_outside_the_box_range_become_nobody() {
        for (id, want) in [
            (0, NOBODY),
            (99_999, NOBODY),
            (100_000 + IDS_PER_BOX - 1, IDS_PER_BOX - 1),
            (100_000 + IDS_PER_BOX, NOBODY),
            (u32::MAX, NOBODY),
        ] {
            for tag in [ACL_USER, ACL_GROUP] {
                assert_eq!(
                    shift_acl(&acl(&[(tag, 7, id)]), shift).unwrap(),
                    acl(&[(tag, 7, want)]),
                    "tag {tag:#x} id {id}"
                );
            }
        }
        // An ACL of just its header has nothing to shift.
        assert_eq!(shift_acl(&acl(&[]), shift).unwrap(), acl(&[]));
    }

    #[test]
    fn malformed_acls_are_refused() {
        let good = acl(&[(ACL_USER, 6, 101_234)]);
        let mut v1 = good.clone();
        v1[0] = 1;
        for (bad, why) in [
            (vec![], "0 bytes"),
            (vec![2, 0, 0], "3 bytes"),
            (good[..good.len() - 1].to_vec(), "11 bytes"),
            ([good.as_slice(), &[0]].concat(), "13 bytes"),
            (v1, "version 1"),
        ] {
            let err = shifted_xattr(ACL_ACCESS, &bad, shift).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn v3_capability_root_ids_are_shifted() {
        for (magic, root, want) in [
            (VFS_CAP_REVISION_3, 100_000, 0),
            // The effective bit stays.
            (VFS_CAP_REVISION_3 | 1, 100_000, 0),
            (VFS_CAP_REVISION_3 | 1, 101_000, 1000),
            (VFS_CAP_REVISION_3 | 1, 5, NOBODY),
        ] {
            assert_eq!(
                shifted_xattr(CAPABILITY, &cap_v3(magic, root), shift).unwrap(),
                cap_v3(magic, want),
                "magic {magic:#x} root {root}"
            );
        }
    }

    #[test]
    fn v1_and_v2_capabilities_and_other_xattrs_are_kept_as_they_are() {
        let v2 = cap_v3(VFS_CAP_REVISION_2 | 1, 0)[..20].to_vec();
        let v1 = cap_v3(VFS_CAP_REVISION_1 | 1, 0)[..12].to_vec();
        for (name, value) in [
            (CAPABILITY, v2.as_slice()),
            (CAPABILITY, v1.as_slice()),
            (
                &b"user.note"[..],
                &b"\x02\x00\x00\x00\x02\x00\x06\x00\xa0\x86\x01\x00"[..],
            ),
            (&b"trusted.overlay.opaque"[..], &b"y"[..]),
            (&b"security.selinux"[..], &b""[..]),
        ] {
            let out = shifted_xattr(name, value, shift).unwrap();
            assert!(
                matches!(out, Cow::Borrowed(_)) && *out == *value,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn malformed_capabilities_are_refused() {
        let v3 = cap_v3(VFS_CAP_REVISION_3, 100_000);
        for (bad, why) in [
            (vec![], "0 bytes"),
            (vec![0, 0, 0], "3 bytes"),
            (v3[..20].to_vec(), "v3 file capability of 20 bytes"),
            (
                [v3.as_slice(), &[0]].concat(),
                "v3 file capability of 25 bytes",
            ),
            (cap_v3(0x0400_0000, 100_000), "unknown revision 0x4"),
            (cap_v3(0, 100_000), "unknown revision 0x0"),
        ] {
            let err = shifted_xattr(CAPABILITY, &bad, shift).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
