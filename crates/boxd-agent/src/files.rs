//! File operations inside the box: read, atomic write, stat, list, mkdir -p,
//! rename, recursive remove, and tar streams in both directions.
//!
//! The agent runs after `pivot_root` in the box's own mount namespace, so
//! every path — and every symlink in it — resolves inside the box root: the
//! host filesystem is simply not there to reach. Relative paths are taken
//! from the box's default working directory. These functions are blocking;
//! the server runs them off the async thread. They never follow a request
//! outside the box and never touch the agent's control socket.

use crate::protocol::{ErrorBody, ErrorKind, FileKind, FileStat};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Resolves a request path: absolute as given, relative from the default cwd.
pub fn resolve(path: &str) -> Result<PathBuf, ErrorBody> {
    if path.is_empty() {
        return Err(invalid("empty path"));
    }
    if path.contains('\0') {
        return Err(invalid("path contains a NUL byte"));
    }
    let p = Path::new(path);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(crate::DEFAULT_CWD).join(p)
    })
}

fn invalid(msg: &str) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::InvalidInput,
        message: msg.to_string(),
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> ErrorBody {
    ErrorBody::from_io(&format!("{what} {}", path.display()), &e)
}

/// Metadata of `path` (not following a final symlink).
pub fn stat(path: &Path) -> Result<FileStat, ErrorBody> {
    let md = fs::symlink_metadata(path).map_err(|e| io_err("stat", path, e))?;
    Ok(to_stat(path, &md, path.display().to_string()))
}

fn to_stat(path: &Path, md: &fs::Metadata, name: String) -> FileStat {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat {
        name,
        path: path.display().to_string(),
        kind,
        size: md.len(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        modified: md.mtime(),
        modified_nsec: md.mtime_nsec(),
        inode: md.ino(),
        link_target: if ft.is_symlink() {
            fs::read_link(path).ok().map(|t| t.display().to_string())
        } else {
            None
        },
    }
}

/// Entries of a directory, sorted by name.
pub fn list_dir(path: &Path) -> Result<Vec<FileStat>, ErrorBody> {
    let rd = fs::read_dir(path).map_err(|e| io_err("list", path, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| io_err("list", path, e))?;
        let p = entry.path();
        if let Ok(md) = fs::symlink_metadata(&p) {
            out.push(to_stat(
                &p,
                &md,
                entry.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Opens a regular file for streaming out.
pub fn open_for_read(path: &Path) -> Result<fs::File, ErrorBody> {
    let f = fs::File::open(path).map_err(|e| io_err("read", path, e))?;
    let md = f.metadata().map_err(|e| io_err("read", path, e))?;
    if md.is_dir() {
        return Err(ErrorBody {
            kind: ErrorKind::IsADirectory,
            message: format!("read {}: is a directory", path.display()),
        });
    }
    Ok(f)
}

/// Writes `data` to `path` atomically: a temporary file in the same folder,
/// then `rename` over the target. Missing parent folders are created.
pub fn write_atomic(path: &Path, data: &mut dyn Read, mode: Option<u32>) -> Result<u64, ErrorBody> {
    if path.is_dir() {
        return Err(ErrorBody {
            kind: ErrorKind::IsADirectory,
            message: format!("write {}: is a directory", path.display()),
        });
    }
    let parent = path
        .parent()
        .ok_or_else(|| invalid("cannot write to the root folder"))?;
    if path.file_name().is_none() {
        return Err(invalid("path has no file name"));
    }
    fs::create_dir_all(parent).map_err(|e| io_err("create folder", parent, e))?;
    // Not derived from the file's name: a name of up to 255 bytes (the
    // longest a folder entry can be) must still leave room for it.
    let tmp = parent.join(format!(".boxd-write-{}-{}", std::process::id(), unique()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let n = io::copy(data, &mut f)?;
        let perm = match mode {
            Some(m) => m & 0o7777,
            // Keep the mode of the file being replaced.
            None => fs::metadata(path)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o644),
        };
        f.set_permissions(fs::Permissions::from_mode(perm))?;
        f.flush()?;
        fs::rename(&tmp, path)?;
        Ok(n)
    })();
    result.map_err(|e: io::Error| {
        let _ = fs::remove_file(&tmp);
        io_err("write", path, e)
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn mkdir_p(path: &Path) -> Result<(), ErrorBody> {
    fs::create_dir_all(path).map_err(|e| io_err("mkdir", path, e))
}

pub fn rename(from: &Path, to: &Path) -> Result<(), ErrorBody> {
    fs::rename(from, to).map_err(|e| {
        ErrorBody::from_io(
            &format!("rename {} to {}", from.display(), to.display()),
            &e,
        )
    })
}

/// Removes a file, a symlink (not its target) or a whole folder.
pub fn remove(path: &Path) -> Result<(), ErrorBody> {
    if path == Path::new("/") {
        return Err(invalid("refusing to remove the box's root folder"));
    }
    let md = fs::symlink_metadata(path).map_err(|e| io_err("remove", path, e))?;
    if md.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(|e| io_err("remove", path, e))
}

/// Writes a tar archive of `path` to `out`: a file as one entry named after
/// it, a folder as its contents (relative names). Symlinks stay symlinks.
pub fn tar_out(path: &Path, out: &mut dyn Write) -> Result<(), ErrorBody> {
    let md = fs::symlink_metadata(path).map_err(|e| io_err("archive", path, e))?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let res = if md.is_dir() {
        b.append_dir_all(".", path)
    } else {
        let name = path
            .file_name()
            .ok_or_else(|| invalid("path has no file name"))?;
        b.append_path_with_name(path, name)
    };
    res.and_then(|_| b.finish())
        .map_err(|e| io_err("archive", path, e))
}

/// Extracts a tar archive into the folder `path` (created if missing).
/// Entries with absolute names or `..` components are skipped by `tar`.
pub fn tar_in(path: &Path, input: &mut dyn Read) -> Result<(), ErrorBody> {
    fs::create_dir_all(path).map_err(|e| io_err("create folder", path, e))?;
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.set_overwrite(true);
    a.unpack(path).map_err(|e| io_err("extract into", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_atomic_and_keeps_mode() {
        let dir = tempfile_dir();
        let p = dir.join("sub/a.txt");
        write_atomic(&p, &mut &b"one"[..], Some(0o600)).unwrap();
        write_atomic(&p, &mut &b"two"[..], None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // No temporary files are left behind.
        assert_eq!(list_dir(&dir.join("sub")).unwrap().len(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_of_up_to_255_bytes_are_written() {
        let dir = tempfile_dir();
        for len in [245, 250, 255] {
            let p = dir.join("x".repeat(len));
            write_atomic(&p, &mut &b"long"[..], None).unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"long");
        }
        assert_eq!(list_dir(&dir).unwrap().len(), 3);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tar_round_trip_of_a_folder() {
        let dir = tempfile_dir();
        fs::create_dir_all(dir.join("src/deep")).unwrap();
        fs::write(dir.join("src/deep/x.bin"), [0u8, 1, 2, 255]).unwrap();
        std::os::unix::fs::symlink("deep/x.bin", dir.join("src/link")).unwrap();
        let mut buf = Vec::new();
        tar_out(&dir.join("src"), &mut buf).unwrap();
        tar_in(&dir.join("dst"), &mut &buf[..]).unwrap();
        assert_eq!(
            fs::read(dir.join("dst/deep/x.bin")).unwrap(),
            [0u8, 1, 2, 255]
        );
        assert_eq!(
            fs::read_link(dir.join("dst/link")).unwrap(),
            Path::new("deep/x.bin")
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn root_and_empty_paths_are_refused() {
        assert!(remove(Path::new("/")).is_err());
        assert!(resolve("").is_err());
        assert!(resolve("a\0b").is_err());
        assert_eq!(resolve("x").unwrap(), Path::new("/workspace/home/x"));
    }

    fn tempfile_dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("boxd-files-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
