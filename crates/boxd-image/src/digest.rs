//! Content digests of layer directories: one sha256 over a canonical walk
//! of the tree, so a layer's name is what it holds, whoever made it.
//!
//! The walk visits entries in byte order of their names and feeds, for
//! each, its relative path, kind, permission bits, owner, extended
//! attributes and then its content (a file's bytes, a symlink's target, a
//! device's numbers), each length-prefixed so no two trees share an
//! encoding. Times are left out: the same files built twice are one layer.
//! It never follows a symlink and never opens anything but regular files
//! and directories (`O_NOFOLLOW`).

use crate::error::{ImageError, Result};
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What a walk found besides the digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Apparent bytes of regular file data.
    pub bytes: u64,
    /// Entries, the root included.
    pub entries: u64,
}

/// `sha256:<hex>` of the tree at `root` (a directory), and its stats.
pub fn tree_digest(root: &Path) -> Result<(String, TreeStats)> {
    let mut h = Sha256::new();
    let mut stats = TreeStats::default();
    walk(root, b"", &mut h, &mut stats)?;
    Ok((format!("sha256:{}", hex(&h.finalize())), stats))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` is `sha256:` and 64 lower-case hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn walk(path: &Path, rel: &[u8], h: &mut Sha256, stats: &mut TreeStats) -> Result<()> {
    let md = std::fs::symlink_metadata(path).map_err(ImageError::io_at("stat", path))?;
    let ft = md.file_type();
    let kind: &[u8] = if ft.is_dir() {
        b"d"
    } else if ft.is_file() {
        b"f"
    } else if ft.is_symlink() {
        b"l"
    } else if ft.is_char_device() {
        b"c"
    } else if ft.is_block_device() {
        b"b"
    } else if ft.is_fifo() {
        b"p"
    } else {
        b"s"
    };
    stats.entries += 1;
    field(h, rel);
    field(h, kind);
    h.update((md.mode() & 0o7777).to_le_bytes());
    h.update(md.uid().to_le_bytes());
    h.update(md.gid().to_le_bytes());
    for (name, value) in xattrs(path)? {
        field(h, &name);
        field(h, &value);
    }
    field(h, b"");
    if ft.is_file() {
        stats.bytes += md.len();
        h.update(md.len().to_le_bytes());
        let mut f = open_nofollow(path)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(ImageError::io_at("read", path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(ImageError::io_at("readlink", path))?;
        field(h, target.as_os_str().as_bytes());
    } else if ft.is_char_device() || ft.is_block_device() {
        h.update(md.rdev().to_le_bytes());
    } else if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(ImageError::io_at("list", path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(ImageError::io_at("list", path))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let mut child = rel.to_vec();
            child.push(b'/');
            child.extend_from_slice(name.as_bytes());
            walk(&path.join(&name), &child, h, stats)?;
        }
        // Closes the directory, so `a/` + `b` differs from `a/b`.
        field(h, b"..");
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(ImageError::io_at("open", path))
}

/// Extended attributes of `path` itself (not a symlink's target), sorted.
pub fn xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::Invalid(format!("{} has a NUL byte", path.display())))?;
    let names = read_sized(path, |buf, len| {
        // SAFETY: `buf` has `len` writable bytes (or is null with len 0).
        unsafe { libc::llistxattr(c.as_ptr(), buf, len) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // SELinux labels belong to the host, not to the layer.
        if name == b"security.selinux" {
            continue;
        }
        let cname = CString::new(name).map_err(|_| ImageError::Invalid("xattr name".into()))?;
        let value = read_sized(path, |buf, len| {
            // SAFETY: as above.
            unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        })?;
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Calls a size-probing libc getter until the buffer is big enough.
fn read_sized(path: &Path, call: impl Fn(*mut libc::c_char, usize) -> isize) -> Result<Vec<u8>> {
    for _ in 0..8 {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(ImageError::io_at("read the xattrs of", path)(e));
        }
        let mut buf = vec![0u8; n as usize];
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(ImageError::io_at("read the xattrs of", path)(e));
        }
    }
    Err(ImageError::Corrupt(format!(
        "the xattrs of {} keep changing",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("boxd-digest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_digest_is_the_content_not_the_times_and_changes_with_any_byte() {
        let a = tmp("a");
        std::fs::create_dir(a.join("etc")).unwrap();
        std::fs::write(a.join("etc/x"), b"hello").unwrap();
        std::os::unix::fs::symlink("etc/x", a.join("link")).unwrap();
        let (d1, s1) = tree_digest(&a).unwrap();
        assert!(is_digest(&d1), "{d1}");
        assert_eq!(s1.bytes, 5);
        assert_eq!(s1.entries, 4);
        // Rewriting the same bytes later: the same digest.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(a.join("etc/x"), b"hello").unwrap();
        assert_eq!(tree_digest(&a).unwrap().0, d1);
        std::fs::write(a.join("etc/x"), b"hellO").unwrap();
        let d2 = tree_digest(&a).unwrap().0;
        assert_ne!(d2, d1);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(a.join("etc/x"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert_ne!(tree_digest(&a).unwrap().0, d2, "mode bits count");
        // A file moved into a sibling folder is another tree.
        let b = tmp("b");
        std::fs::create_dir(b.join("etc")).unwrap();
        std::fs::write(b.join("etcx"), b"hello").unwrap();
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
}
