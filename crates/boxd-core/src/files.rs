//! Files in a box: write, read, list, stat, mkdir, rename, remove, upload
//! of several files, and download (a file's bytes, a folder as a tar
//! archive), all through the box's agent.
//!
//! Owns turning caller paths into clean box paths (`paths::box_path`)
//! before the box is touched, the bounds of a read, and the audit of every
//! change (paths and sizes, never contents). The agent does the I/O,
//! inside the box's own mount namespace: nothing here opens a host path.
//! Never a wire format (encodings such as base64 are the front ends').

use crate::error::{CoreError, CoreResult};
use crate::paths::{self, box_path};
use crate::service::{BoxService, Busy, Caller};

pub use boxd_agent::protocol::{FileKind, FileStat};
use boxd_store::BoxRow;
use serde_json::json;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// Largest whole file one read returns.
pub const MAX_READ: u64 = 64 << 20;
/// Largest ranged read (`length`).
pub const MAX_RANGE: u64 = 8 << 20;
/// Entries of a folder listing page when the caller names no limit.
pub const LIST_DEFAULT: usize = 1_000;
/// Most entries of one folder listing page.
pub const LIST_MAX: usize = 10_000;
/// How many symlinks a stat follows at most.
const MAX_HOPS: usize = 40;

/// A folder entry with its full path.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: String,
    pub stat: FileStat,
}

/// One page of a folder listing.
#[derive(Debug, Clone)]
pub struct DirPage {
    pub entries: Vec<FileInfo>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A download under way: the file's bytes, or a folder as a tar archive.
pub struct Download {
    pub path: String,
    pub is_dir: bool,
    /// Ends early (a short read) if the box fails mid-way.
    pub body: tokio::io::DuplexStream,
}

/// Several files written into one box as one audited upload.
pub struct Upload {
    svc: Arc<BoxService>,
    caller: Caller,
    row: BoxRow,
    live: Busy,
    written: Vec<String>,
}

impl Upload {
    /// Checks a destination path (before its content is read).
    pub fn destination(&self, path: &str) -> CoreResult<String> {
        box_path(path)
    }

    /// Writes one file (`dest` from [`Upload::destination`]).
    pub async fn write<R: AsyncRead + Unpin>(
        &mut self,
        dest: String,
        content: &mut R,
    ) -> CoreResult<()> {
        self.live
            .handle
            .agent()
            .write_file_from(&dest, content, None)
            .await?;
        self.written.push(dest);
        Ok(())
    }

    /// The files written so far.
    pub fn written(&self) -> &[String] {
        &self.written
    }

    /// Records the upload (`bytes` in all); answers the paths written.
    pub fn finish(self, bytes: u64) -> CoreResult<Vec<String>> {
        if self.written.is_empty() {
            return Err(CoreError::invalid("the upload has no files"));
        }
        self.svc.audit(
            &self.caller.team_id,
            Some(&self.caller),
            Some(&self.row),
            "file.upload",
            json!({"paths": self.written, "files": self.written.len(), "bytes": bytes}),
        );
        Ok(self.written)
    }
}

/// What a final symlink chain starting at `s` points to (at most
/// [`MAX_HOPS`] links, each resolved from its own folder).
async fn follow_links(agent: &boxd_agent::AgentClient, mut s: FileStat) -> CoreResult<FileStat> {
    let mut hops = 0;
    while s.kind == FileKind::Symlink && hops < MAX_HOPS {
        let Some(target) = &s.link_target else { break };
        let next = if target.starts_with('/') {
            box_path(target)?
        } else {
            box_path(&format!("{}/{target}", paths::parent(&s.path)))?
        };
        s = agent.stat(&next).await?;
        hops += 1;
    }
    Ok(s)
}

impl BoxService {
    fn audit_file(&self, caller: &Caller, row: &BoxRow, kind: &str, data: serde_json::Value) {
        self.audit(&caller.team_id, Some(caller), Some(row), kind, data);
    }

    /// Writes `data` to `path` (replacing it atomically); answers the clean path.
    pub async fn write_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        data: &[u8],
    ) -> CoreResult<String> {
        let path = box_path(path)?;
        let (row, live) = self.running(caller, id).await?;
        live.handle.agent().write_file(&path, data, None).await?;
        self.audit_file(
            caller,
            &row,
            "file.write",
            json!({"path": path, "bytes": data.len()}),
        );
        Ok(path)
    }

    /// A file's bytes: all of it (at most [`MAX_READ`]), or `length`
    /// bytes (at most [`MAX_RANGE`]) from `offset`. Only a regular file is
    /// read (a symlink is followed inside the box); the agent seeks and
    /// sends only the bytes asked for, and no more than the limit is ever
    /// held here.
    pub async fn read_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        offset: Option<u64>,
        length: Option<u64>,
    ) -> CoreResult<Vec<u8>> {
        let path = box_path(path)?;
        if let Some(len) = length.filter(|l| *l > MAX_RANGE) {
            return Err(CoreError::invalid(format!(
                "length {len} is over the limit of {MAX_RANGE} bytes per read"
            )));
        }
        let (_, live) = self.running(caller, id).await?;
        Ok(live
            .handle
            .agent()
            .read_range(&path, offset.unwrap_or(0), length, MAX_READ)
            .await?)
    }

    /// One page of a folder's entries (default `/workspace/home`), sorted
    /// by name: those after `cursor` (the `next_cursor` of the page
    /// before), at most `limit` ([`LIST_DEFAULT`] when absent, at most
    /// [`LIST_MAX`]).
    pub async fn list_page(
        &self,
        caller: &Caller,
        id: &str,
        folder: Option<&str>,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> CoreResult<DirPage> {
        let limit = limit.unwrap_or(LIST_DEFAULT);
        if limit == 0 || limit > LIST_MAX {
            return Err(CoreError::invalid(format!(
                "limit {limit} is out of range: list 1 to {LIST_MAX} entries per page"
            )));
        }
        let dir = paths::folder(folder)?;
        let (_, live) = self.running(caller, id).await?;
        let agent = live.handle.agent();
        let mut entries: Vec<FileInfo> = Vec::new();
        let mut after = cursor.map(str::to_string);
        loop {
            let want = (limit - entries.len()) as u32;
            let (page, more) = agent.list_page(&dir, after.as_deref(), want).await?;
            let got = page.len();
            entries.extend(page.into_iter().map(|stat| FileInfo {
                path: paths::join(&dir, &stat.name),
                stat,
            }));
            after = entries.last().map(|e| e.stat.name.clone()).or(after);
            if !more || got == 0 {
                return Ok(DirPage {
                    entries,
                    next_cursor: None,
                });
            }
            if entries.len() >= limit {
                return Ok(DirPage {
                    entries,
                    next_cursor: after,
                });
            }
        }
    }

    /// What `path` is; with `follow`, what a final symlink chain (at most
    /// 40 links, each resolved from its own folder) points to.
    pub async fn stat(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        follow: bool,
    ) -> CoreResult<FileStat> {
        let path = box_path(path)?;
        let (_, live) = self.running(caller, id).await?;
        let agent = live.handle.agent();
        let s = agent.stat(&path).await?;
        if follow {
            follow_links(agent, s).await
        } else {
            Ok(s)
        }
    }

    /// Creates a folder; without `parents` its parent must exist and the
    /// folder must not.
    pub async fn mkdir(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        parents: bool,
    ) -> CoreResult<String> {
        let path = box_path(path)?;
        let (row, live) = self.running(caller, id).await?;
        let agent = live.handle.agent();
        if !parents {
            if agent.stat(&path).await.is_ok() {
                return Err(CoreError::conflict(format!("{path} already exists")));
            }
            let parent = paths::parent(&path);
            match agent.stat(parent).await {
                Ok(s) if s.kind == FileKind::Dir => {}
                _ => {
                    return Err(CoreError::not_found(format!(
                        "parent folder {parent} does not exist; pass parents=true to create it"
                    )))
                }
            }
        }
        agent.mkdir(&path).await?;
        self.audit_file(caller, &row, "file.mkdir", json!({"path": path}));
        Ok(path)
    }

    /// Moves `from` to `to`; answers the clean `to`.
    pub async fn rename(
        &self,
        caller: &Caller,
        id: &str,
        from: &str,
        to: &str,
    ) -> CoreResult<String> {
        let (from, to) = (box_path(from)?, box_path(to)?);
        let (row, live) = self.running(caller, id).await?;
        live.handle.agent().rename(&from, &to).await?;
        self.audit_file(caller, &row, "file.rename", json!({"from": from, "to": to}));
        Ok(to)
    }

    /// Removes a file or folder; a folder that is not empty only with
    /// `recursive`.
    pub async fn remove(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> CoreResult<String> {
        let path = box_path(path)?;
        let (row, live) = self.running(caller, id).await?;
        let agent = live.handle.agent();
        if !recursive {
            let s = agent.stat(&path).await?;
            if s.kind == FileKind::Dir && !agent.list_page(&path, None, 1).await?.0.is_empty() {
                return Err(CoreError::invalid(format!(
                    "{path} is a folder that is not empty; pass recursive=true to remove it"
                )));
            }
        }
        agent.remove(&path).await?;
        self.audit_file(caller, &row, "file.remove", json!({"path": path}));
        Ok(path)
    }

    /// Starts an upload of files into the box.
    pub async fn start_upload(self: &Arc<Self>, caller: &Caller, id: &str) -> CoreResult<Upload> {
        let (row, live) = self.running(caller, id).await?;
        Ok(Upload {
            svc: self.clone(),
            caller: caller.clone(),
            row,
            live,
            written: Vec::new(),
        })
    }

    /// Starts sending `path`: a regular file's bytes, or a folder as a tar
    /// archive, streamed through a small buffer (never held whole). What
    /// the box refuses at once (not found, a FIFO or device) is this call's
    /// error, before any byte is sent.
    pub async fn download(&self, caller: &Caller, id: &str, path: &str) -> CoreResult<Download> {
        let path = box_path(path)?;
        let (_, live) = self.running(caller, id).await?;
        let agent = live.handle.agent();
        // A symlink to a folder downloads the folder.
        let s = follow_links(agent, agent.stat(&path).await?).await?;
        let is_dir = s.kind == FileKind::Dir;
        let stream = if is_dir {
            agent.open_tar(&s.path).await?
        } else {
            agent.open_read(&path).await?
        };
        let (mut tx, rx) = tokio::io::duplex(256 << 10);
        let p = path.clone();
        // The transfer is a call in flight until its last byte.
        let busy = live.clone();
        tokio::spawn(async move {
            let _busy = busy;
            // On failure the body ends early; the reader sees a short read.
            if let Err(e) = stream.copy_to(&mut tx).await {
                tracing::warn!(path = %p, error = %e, "download ended early");
            }
        });
        Ok(Download {
            path,
            is_dir,
            body: rx,
        })
    }
}
