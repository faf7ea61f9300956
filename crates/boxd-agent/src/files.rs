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
use std::io::{self, Read, Seek, SeekFrom, Write};
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
    if e.raw_os_error() == Some(libc::ELOOP) {
        // A symlink loop, or a "magic" /proc link an open refused.
        return ErrorBody {
            kind: ErrorKind::InvalidInput,
            message: format!(
                "{what} {}: too many symlinks, or a /proc link to an open file (not followed)",
                path.display()
            ),
        };
    }
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

/// Most entries one `ListDir` answer carries.
pub const LIST_PAGE: usize = 5_000;
/// Most bytes of names, paths and link targets in one answer, so it stays
/// well inside one frame whatever the names are.
const LIST_PAGE_BYTES: usize = 2 << 20;

/// One page of a folder's entries, sorted by name.
#[derive(Debug)]
pub struct DirPage {
    pub entries: Vec<FileStat>,
    /// Entries after the last one here remain.
    pub more: bool,
}

/// The entries of a folder whose names sort after `after`, sorted by name:
/// at most `limit` (and at most [`LIST_PAGE`]) of them.
pub fn list_dir(path: &Path, after: Option<&str>, limit: usize) -> Result<DirPage, ErrorBody> {
    let rd = fs::read_dir(path).map_err(|e| io_err("list", path, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| io_err("list", path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if after.is_none_or(|a| name.as_str() > a) {
            names.push((name, entry.path()));
        }
    }
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let limit = limit.clamp(1, LIST_PAGE);
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let mut taken = 0usize;
    for (name, p) in &names {
        if entries.len() >= limit || bytes >= LIST_PAGE_BYTES {
            break;
        }
        taken += 1;
        // An entry removed since the folder was read is left out.
        if let Ok(md) = fs::symlink_metadata(p) {
            let stat = to_stat(p, &md, name.clone());
            bytes += 128
                + stat.name.len()
                + stat.path.len()
                + stat.link_target.as_ref().map_or(0, String::len);
            entries.push(stat);
        }
    }
    Ok(DirPage {
        entries,
        more: taken < names.len(),
    })
}

/// How much of a file one read sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadBounds {
    /// Where to start.
    pub offset: u64,
    /// How many bytes at most from `offset`; the rest of the file when absent.
    pub length: Option<u64>,
    /// The most this read may send: a whole-file read of a bigger file is
    /// refused (too large) before a byte is sent.
    pub max: Option<u64>,
}

/// What a non-regular file is, for an error message.
fn type_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

fn not_regular(what: &str, path: &Path, ft: &fs::FileType) -> ErrorBody {
    if ft.is_dir() {
        return ErrorBody {
            kind: ErrorKind::IsADirectory,
            message: format!("{what} {}: is a folder; list it instead", path.display()),
        };
    }
    ErrorBody {
        kind: ErrorKind::InvalidInput,
        message: format!(
            "{what} {}: is {}; only regular files can be read",
            path.display(),
            type_name(ft)
        ),
    }
}

/// `open(2)` flags of every read: never blocks (a FIFO's open returns at
/// once), never makes a terminal the agent's, closed on exec.
const READ_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Opens `path` read-only without blocking. Symlinks are followed; the
/// agent lives after `pivot_root`, so they resolve inside the box root.
/// Where the kernel has `openat2`, "magic" links (`/proc/<pid>/fd/N`,
/// `/proc/<pid>/exe`), which could name a file outside the box's tree, are
/// refused; `nofollow` refuses a final symlink too.
fn open_nonblocking(path: &Path, nofollow: bool) -> io::Result<fs::File> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let flags = READ_FLAGS | if nofollow { libc::O_NOFOLLOW } else { 0 };
    // `struct open_how` of openat2(2) (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` is a valid NUL-terminated string and `how` a valid
    // `open_how` of the size passed; the result is a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = if fd >= 0 {
        fd as libc::c_int
    } else {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // An older kernel, or a filter that refuses the call: plain open.
            Some(libc::ENOSYS) | Some(libc::EPERM) => {
                // SAFETY: as above; `open` returns a new fd or -1.
                let fd = unsafe { libc::open(c.as_ptr(), flags) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                fd
            }
            _ => return Err(e),
        }
    };
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

/// Opens a regular file for reading. Anything else (a folder, a FIFO, a
/// device, a socket) is refused naming what it is — checked before the
/// open (a device is never opened) and again on the opened descriptor, so
/// a file swapped in between is caught too.
pub fn open_regular(path: &Path) -> Result<(fs::File, fs::Metadata), ErrorBody> {
    let before = fs::metadata(path).map_err(|e| io_err("read", path, e))?;
    if !before.is_file() {
        return Err(not_regular("read", path, &before.file_type()));
    }
    let f = open_nonblocking(path, false).map_err(|e| io_err("read", path, e))?;
    let md = f.metadata().map_err(|e| io_err("read", path, e))?;
    if !md.is_file() {
        return Err(not_regular("read", path, &md.file_type()));
    }
    Ok((f, md))
}

fn too_large(path: &Path, max: u64) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::TooLarge,
        message: format!(
            "read {}: the file is over the limit of {max} bytes per read; download it or read \
             it in ranges (offset, length)",
            path.display()
        ),
    }
}

/// Sends the bytes of the regular file `path` that `bounds` selects to
/// `out`: a seek and a bounded read, never more than `bounds.max`.
pub fn read_to(path: &Path, bounds: ReadBounds, out: &mut dyn Write) -> Result<u64, ErrorBody> {
    let (mut f, md) = open_regular(path)?;
    let limit = match (bounds.length, bounds.max) {
        (Some(len), Some(max)) if len > max => {
            return Err(invalid(&format!(
                "length {len} is over the limit of {max} bytes per read"
            )))
        }
        (Some(len), _) => len,
        (None, Some(max)) => {
            if md.len() > max {
                return Err(too_large(path, max));
            }
            max
        }
        (None, None) => u64::MAX,
    };
    if bounds.offset > 0 {
        f.seek(SeekFrom::Start(bounds.offset))
            .map_err(|e| io_err("read", path, e))?;
    }
    let n = io::copy(&mut (&mut f).take(limit), out).map_err(|e| io_err("read", path, e))?;
    if bounds.length.is_none() && bounds.max.is_some() && n == limit {
        // The file grew past the limit while it was read (or reports a
        // size smaller than its contents, as /proc files do).
        let mut probe = [0u8; 1];
        if f.read(&mut probe).map_err(|e| io_err("read", path, e))? > 0 {
            return Err(too_large(path, limit));
        }
    }
    Ok(n)
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
/// it, a folder as its contents (relative names). Symlinks stay symlinks;
/// FIFOs, devices and sockets become entries without contents (never
/// opened); each regular file is opened without following a symlink and
/// without blocking, checked to be the file that was listed, and sent as
/// exactly the size its header says.
pub fn tar_out(path: &Path, out: &mut dyn Write) -> Result<(), ErrorBody> {
    let md = fs::symlink_metadata(path).map_err(|e| io_err("archive", path, e))?;
    let mut b = tar::Builder::new(out);
    let res = if md.is_dir() {
        append_tree(&mut b, path)
    } else {
        let name = path
            .file_name()
            .ok_or_else(|| invalid("path has no file name"))?;
        append_entry(&mut b, path, Path::new(name), &md)
    };
    res.and_then(|_| b.finish())
        .map_err(|e| io_err("archive", path, e))
}

/// Appends the folder `root` and everything under it, named `./<relative>`.
fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path) -> io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (full, name) = if rel.as_os_str().is_empty() {
            (root.to_path_buf(), PathBuf::from("."))
        } else {
            (root.join(&rel), Path::new(".").join(&rel))
        };
        let md = match fs::symlink_metadata(&full) {
            Ok(md) => md,
            // Removed since its folder was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.as_os_str().is_empty() => {
                continue
            }
            Err(e) => return Err(e),
        };
        append_entry(b, &full, &name, &md)?;
        if md.is_dir() {
            for entry in fs::read_dir(&full)? {
                stack.push(rel.join(entry?.file_name()));
            }
        }
    }
    Ok(())
}

/// Appends one entry described by `md` (from `lstat`).
fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    full: &Path,
    name: &Path,
    md: &fs::Metadata,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(md, tar::HeaderMode::Complete);
    if md.file_type().is_symlink() {
        let target = fs::read_link(full)?;
        h.set_size(0);
        return b.append_link(&mut h, name, target);
    }
    if !md.is_file() {
        h.set_size(0);
        return b.append_data(&mut h, name, io::empty());
    }
    let f = open_nonblocking(full, true)?;
    let now = f.metadata()?;
    if !now.is_file() || now.ino() != md.ino() || now.dev() != md.dev() {
        return Err(io::Error::other(format!(
            "{} was replaced while it was archived",
            full.display()
        )));
    }
    h.set_metadata_in_mode(&now, tar::HeaderMode::Complete);
    let size = now.len();
    // Exactly `size` bytes: a file that shrinks meanwhile is padded with
    // zeros, one that grows is cut at the size its header announced.
    let data = f.take(size).chain(io::repeat(0)).take(size);
    b.append_data(&mut h, name, data)
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
        assert_eq!(
            list_dir(&dir.join("sub"), None, 10).unwrap().entries.len(),
            1
        );
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
        assert_eq!(list_dir(&dir, None, 10).unwrap().entries.len(), 3);
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

    fn read(path: &Path, bounds: ReadBounds) -> Result<Vec<u8>, ErrorBody> {
        let mut out = Vec::new();
        read_to(path, bounds, &mut out).map(|_| out)
    }

    #[test]
    fn reads_are_bounded_and_ranged_by_seeking() {
        let dir = tempfile_dir();
        let p = dir.join("f");
        fs::write(&p, b"0123456789").unwrap();
        let whole = ReadBounds {
            max: Some(10),
            ..Default::default()
        };
        assert_eq!(read(&p, whole).unwrap(), b"0123456789");
        let small = ReadBounds {
            max: Some(9),
            ..Default::default()
        };
        assert_eq!(read(&p, small).unwrap_err().kind, ErrorKind::TooLarge);
        let range = ReadBounds {
            offset: 3,
            length: Some(4),
            max: Some(9),
        };
        assert_eq!(read(&p, range).unwrap(), b"3456");
        // A range far past the end of a huge sparse file reads nothing
        // between: only the bytes asked for.
        let sparse = dir.join("sparse");
        let f = fs::File::create(&sparse).unwrap();
        f.set_len(1 << 40).unwrap();
        let tail = ReadBounds {
            offset: (1 << 40) - 16,
            length: Some(64),
            max: Some(64),
        };
        assert_eq!(read(&sparse, tail).unwrap(), vec![0u8; 16]);
        let all = ReadBounds {
            max: Some(1 << 20),
            ..Default::default()
        };
        assert_eq!(read(&sparse, all).unwrap_err().kind, ErrorKind::TooLarge);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fifos_devices_and_folders_are_refused_without_blocking() {
        let dir = tempfile_dir();
        let fifo = dir.join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let b = ReadBounds::default();
        let e = read(&fifo, b).unwrap_err();
        assert!(e.message.contains("FIFO"), "{e:?}");
        let e = read(&link, b).unwrap_err();
        assert!(e.message.contains("character device"), "{e:?}");
        assert_eq!(read(&dir, b).unwrap_err().kind, ErrorKind::IsADirectory);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn listing_pages_by_name() {
        let dir = tempfile_dir();
        for i in 0..25 {
            fs::write(dir.join(format!("f{i:02}")), b"").unwrap();
        }
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = list_dir(&dir, after.as_deref(), 10).unwrap();
            assert!(page.entries.len() <= 10);
            names.extend(page.entries.iter().map(|e| e.name.clone()));
            after = page.entries.last().map(|e| e.name.clone());
            if !page.more {
                break;
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
        assert_eq!(names, expected);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_fifo_in_an_archived_folder_is_an_entry_not_a_read() {
        let dir = tempfile_dir();
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/a"), b"abc").unwrap();
        nix::unistd::mkfifo(
            &dir.join("src/pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let mut buf = Vec::new();
        tar_out(&dir.join("src"), &mut buf).unwrap();
        let mut a = tar::Archive::new(&buf[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            seen.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        assert!(
            seen.contains(&("a".into(), tar::EntryType::Regular)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("pipe".into(), tar::EntryType::Fifo)),
            "{seen:?}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("boxd-files-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
