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
use boxd_agent::AgentClient;
use boxd_store::BoxRow;
use serde_json::json;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// Largest whole file one read returns.
pub const MAX_READ: u64 = 64 << 20;
/// Largest ranged read (`length`).
pub const MAX_RANGE: u64 = 8 << 20;
/// How many symlinks a stat follows at most.
const MAX_HOPS: usize = 40;

/// A folder entry with its full path.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: String,
    pub stat: FileStat,
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
    /// bytes (at most [`MAX_RANGE`]) from `offset`.
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
        let agent = live.handle.agent();
        let stat = agent.stat(&path).await?;
        if stat.kind == FileKind::Dir {
            return Err(CoreError::invalid(format!(
                "{path} is a folder; list it instead"
            )));
        }
        if length.is_none() && stat.size > MAX_READ {
            return Err(CoreError::TooLarge(format!(
                "{path} is {} bytes; one read returns at most {MAX_READ}: download it or read \
                 it in ranges (offset, length)",
                stat.size
            )));
        }
        let data = agent.read_file(&path).await?;
        let start = (offset.unwrap_or(0) as usize).min(data.len());
        let end = match length {
            Some(len) => start.saturating_add(len as usize).min(data.len()),
            None => data.len(),
        };
        Ok(data[start..end].to_vec())
    }

    /// The entries of a folder (default `/workspace/home`).
    pub async fn list_dir(
        &self,
        caller: &Caller,
        id: &str,
        folder: Option<&str>,
    ) -> CoreResult<Vec<FileInfo>> {
        let dir = paths::folder(folder)?;
        let (_, live) = self.running(caller, id).await?;
        let entries = live.handle.agent().list_dir(&dir).await?;
        Ok(entries
            .into_iter()
            .map(|stat| FileInfo {
                path: paths::join(&dir, &stat.name),
                stat,
            })
            .collect())
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
        let mut s = agent.stat(&path).await?;
        let mut hops = 0;
        while follow && s.kind == FileKind::Symlink && hops < MAX_HOPS {
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
            if s.kind == FileKind::Dir && !agent.list_dir(&path).await?.is_empty() {
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

    /// Starts sending `path`: a file's bytes, or a folder as a tar archive.
    pub async fn download(&self, caller: &Caller, id: &str, path: &str) -> CoreResult<Download> {
        let path = box_path(path)?;
        let (_, live) = self.running(caller, id).await?;
        let s = live.handle.agent().stat(&path).await?;
        let is_dir = s.kind == FileKind::Dir;
        let (mut tx, rx) = tokio::io::duplex(256 << 10);
        let agent: AgentClient = live.handle.agent().clone();
        let p = path.clone();
        // The transfer is a call in flight until its last byte.
        let busy = live.clone();
        tokio::spawn(async move {
            let _busy = busy;
            let sent = if is_dir {
                agent.tar_out(&p, &mut tx).await
            } else {
                agent.read_file_to(&p, &mut tx).await
            };
            // On failure the body ends early; the reader sees a short read.
            if let Err(e) = sent {
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
