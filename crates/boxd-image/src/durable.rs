//! Durable, atomic replacement of the files boxd reads back after a crash
//! or a reboot: `box.json` (adoption), image manifests and tags, the
//! storage pool image; and the filesystem flush before a rename publishes
//! a tree (a layer, a snapshot).
//!
//! One mechanism, the `atomic-write-file` crate: the data goes into a
//! temporary file with a unique random name beside the target (created
//! exclusively, so two writers never share one), which is fsynced, renamed
//! over the target, and then its directory is fsynced. A reader, or a
//! restart after a power cut, finds the old file or the whole new one —
//! never a torn or empty file, nor a rename the disk forgot. This module
//! never writes a target in place and never makes a file visible before
//! its data is on disk; there is no "fast, not durable" variant.

use atomic_write_file::unix::OpenOptionsExt as _;
use atomic_write_file::{AtomicWriteFile, OpenOptions};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Replaces `path` with `data`, durably (see the module docs); a new file
/// gets `mode` (less the umask), an existing one's mode is not kept.
pub fn write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace_with(path, mode, |f| {
        let mut f: &File = f;
        f.write_all(data)
    })
}

/// Like [`write`], but `fill` writes the new contents into the (still
/// invisible) file itself, e.g. by handing it to a formatter; nothing
/// appears at `path` unless `fill` succeeds.
pub fn replace_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<()> {
    let file = open(path, mode)?;
    match fill(file.as_file()) {
        Ok(()) => file.commit(),
        Err(e) => {
            // The error that matters is `fill`'s; the temporary file is
            // removed either way (on drop if `discard` fails).
            let _ = file.discard();
            Err(e)
        }
    }
}

fn open(path: &Path, mode: u32) -> io::Result<AtomicWriteFile> {
    OpenOptions::new()
        .mode(mode)
        .preserve_mode(false)
        .preserve_owner(false)
        .open(path)
}

/// Makes renames and removals of entries of the directory `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes the filesystem holding `p` (one `syncfs`, cheaper than an
/// fsync per file), so a rename after it publishes complete data.
pub fn sync_fs(p: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(p)?;
    // SAFETY: syncfs on an open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A fresh folder under the temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("boxd-durable-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Pages of `path` in the page cache not yet written to disk
    /// (`cachestat(2)`, Linux 6.5+; `None` where it is missing).
    fn dirty_pages(path: &Path) -> Option<u64> {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            cache: u64,
            dirty: u64,
            writeback: u64,
            evicted: u64,
            recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        let f = File::open(path).unwrap();
        let range = Range { off: 0, len: 0 };
        let mut st = Stat::default();
        // SAFETY: cachestat fills `st`; both structs match the kernel's.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                &range as *const Range,
                &mut st as *mut Stat,
                0u32,
            )
        };
        (rc == 0).then_some(st.dirty + st.writeback)
    }

    #[test]
    fn a_written_file_is_on_disk_when_write_returns() {
        let d = TempDir::new("synced");
        let path = d.0.join("box.json");
        write(&path, &vec![b'x'; 64 << 10], 0o644).unwrap();
        match dirty_pages(&path) {
            Some(dirty) => assert_eq!(dirty, 0, "box.json left in the page cache unwritten"),
            None => crate::test_skip::skip(
                "cachestat(2) is missing (Linux 6.5+): cannot see the page cache",
            ),
        }
        assert_eq!(names(&d.0), ["box.json"]);
    }

    #[test]
    fn concurrent_writers_of_one_file_neither_fail_nor_tear_it() {
        let d = TempDir::new("concurrent");
        let path = d.0.join("box.json");
        let writers: Vec<_> = (0..8u8)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write(&path, &vec![b'a' + w; 16 << 10], 0o644)?;
                    }
                    Ok::<_, io::Error>(())
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap().expect("a writer failed");
        }
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 16 << 10);
        assert!(
            data.iter().all(|&b| b == data[0]),
            "torn: two writers mixed"
        );
        assert_eq!(names(&d.0), ["box.json"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary_file() {
        let d = TempDir::new("fill");
        let path = d.0.join("pool.img");
        write(&path, b"old", 0o600).unwrap();
        let err = replace_with(&path, 0o600, |f| {
            let mut f: &File = f;
            f.write_all(b"half")?;
            Err(io::Error::other("formatter failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "formatter failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(&d.0), ["pool.img"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
