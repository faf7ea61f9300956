//! File endpoints: write, read, list, stat, mkdir, rename, remove,
//! multipart upload and download (a file as its bytes, a folder as a tar
//! archive).
//!
//! Owns turning API paths into clean box paths (`paths::box_path`) and the
//! size limits of JSON file transfers. Every write and upload is an audit
//! event (paths and sizes, never contents). The box's agent does the I/O,
//! inside the box's own mount namespace: nothing here opens a host path.

use crate::error::{ApiError, ApiResult};
use crate::paths::{self, box_path};
use crate::state::{AppState, Caller};
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use boxd_agent::protocol::{FileKind, FileStat as AgentStat};
use boxd_api::{
    ErrorBody, FileEntry, FileStat, ListFilesResponse, MkdirRequest, PathResponse,
    ReadFileResponse, RemoveRequest, RenameRequest, WriteFileRequest,
};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Largest file `files/read` returns in one JSON answer.
const MAX_READ: u64 = 64 << 20;
/// Largest ranged read (`length`).
const MAX_RANGE: u64 = 8 << 20;

fn rfc3339(secs: i64, nsec: i64) -> String {
    let t = UNIX_EPOCH + Duration::new(secs.max(0) as u64, nsec.clamp(0, 999_999_999) as u32);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Other => "other",
    }
}

fn entry(dir: &str, s: &AgentStat) -> FileEntry {
    let path = if dir == "/" {
        format!("/{}", s.name)
    } else {
        format!("{dir}/{}", s.name)
    };
    FileEntry {
        name: s.name.clone(),
        path,
        size: s.size,
        is_dir: s.kind == FileKind::Dir,
        mod_time: rfc3339(s.modified, s.modified_nsec),
    }
}

#[utoipa::path(post, path = "/v2/box/{id}/files/write", tag = "files", request_body = WriteFileRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = PathResponse), (status = 400, body = ErrorBody)))]
pub async fn write(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<WriteFileRequest>,
) -> ApiResult<Json<PathResponse>> {
    let (row, live) = st.running(&caller, &id).await?;
    let path = box_path(&req.path)?;
    let data = match req.encoding.as_deref() {
        None | Some("") | Some("utf-8") | Some("utf8") => req.content.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(req.content.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("content is not valid base64: {e}")))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown encoding {other:?}: use base64 or leave it out for text"
            )))
        }
    };
    live.handle.agent().write_file(&path, &data, None).await?;
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "file.write",
        json!({"path": path, "bytes": data.len()}),
    );
    Ok(Json(PathResponse { path }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ReadQuery {
    path: String,
    /// `base64` for binary files.
    encoding: Option<String>,
    offset: Option<u64>,
    /// At most 8 MiB.
    length: Option<u64>,
}

#[utoipa::path(get, path = "/v2/box/{id}/files/read", tag = "files",
    params(("id" = String, Path, description = "box id or name"), ReadQuery),
    responses((status = 200, body = ReadFileResponse), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody)))]
pub async fn read(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Json<ReadFileResponse>> {
    let (_, live) = st.running(&caller, &id).await?;
    let path = box_path(&q.path)?;
    let agent = live.handle.agent();
    let stat = agent.stat(&path).await?;
    if stat.kind == FileKind::Dir {
        return Err(ApiError::bad_request(format!(
            "{path} is a folder; list it with files/list"
        )));
    }
    if let Some(len) = q.length {
        if len > MAX_RANGE {
            return Err(ApiError::bad_request(format!(
                "length {len} is over the limit of {MAX_RANGE} bytes per read"
            )));
        }
    } else if stat.size > MAX_READ {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{path} is {} bytes; files/read returns at most {MAX_READ}: use files/download \
                 or read it in ranges (offset, length)",
                stat.size
            ),
        ));
    }
    let data = agent.read_file(&path).await?;
    let start = (q.offset.unwrap_or(0) as usize).min(data.len());
    let end = match q.length {
        Some(len) => start.saturating_add(len as usize).min(data.len()),
        None => data.len(),
    };
    let bytes = &data[start..end];
    let content = match q.encoding.as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD.encode(bytes),
        None | Some("") | Some("utf-8") | Some("utf8") => String::from_utf8(bytes.to_vec())
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "{path} is not UTF-8 text; read it with encoding=base64"
                ))
            })?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown encoding {other:?}: use base64 or leave it out for text"
            )))
        }
    };
    Ok(Json(ReadFileResponse { content }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Folder to list (default `/workspace/home`).
    folder: Option<String>,
}

#[utoipa::path(get, path = "/v2/box/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "box id or name"), ListQuery),
    responses((status = 200, body = ListFilesResponse), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListFilesResponse>> {
    let (_, live) = st.running(&caller, &id).await?;
    let dir = paths::folder(q.folder.as_deref())?;
    let entries = live.handle.agent().list_dir(&dir).await?;
    Ok(Json(ListFilesResponse {
        files: entries.iter().map(|s| entry(&dir, s)).collect(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct StatQuery {
    path: String,
    /// Follow a final symlink (default: describe the link itself).
    follow: Option<bool>,
}

#[utoipa::path(get, path = "/v2/box/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "box id or name"), StatQuery),
    responses((status = 200, body = FileStat), (status = 404, body = ErrorBody)))]
pub async fn stat(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StatQuery>,
) -> ApiResult<Json<FileStat>> {
    let (_, live) = st.running(&caller, &id).await?;
    let path = box_path(&q.path)?;
    let agent = live.handle.agent();
    let mut s = agent.stat(&path).await?;
    // Follow a bounded chain of links, each resolved from its own folder.
    let mut hops = 0;
    while q.follow == Some(true) && s.kind == FileKind::Symlink && hops < 40 {
        let Some(target) = &s.link_target else { break };
        let next = if target.starts_with('/') {
            box_path(target)?
        } else {
            box_path(&format!("{}/{target}", paths::parent(&s.path)))?
        };
        s = agent.stat(&next).await?;
        hops += 1;
    }
    Ok(Json(FileStat {
        kind: kind_name(s.kind).into(),
        size: s.size,
        mod_time: rfc3339(s.modified, s.modified_nsec),
        inode: s.inode,
        version: format!("{}-{}-{}.{}", s.inode, s.size, s.modified, s.modified_nsec),
    }))
}

#[utoipa::path(post, path = "/v2/box/{id}/files/mkdir", tag = "files", request_body = MkdirRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = PathResponse), (status = 409, body = ErrorBody)))]
pub async fn mkdir(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<MkdirRequest>,
) -> ApiResult<Json<PathResponse>> {
    let (row, live) = st.running(&caller, &id).await?;
    let path = box_path(&req.path)?;
    let agent = live.handle.agent();
    if req.parents != Some(true) {
        // Plain mkdir: the parent must exist and the folder must not.
        if agent.stat(&path).await.is_ok() {
            return Err(ApiError::conflict(format!("{path} already exists")));
        }
        let parent = paths::parent(&path);
        match agent.stat(parent).await {
            Ok(s) if s.kind == FileKind::Dir => {}
            _ => {
                return Err(ApiError::not_found(format!(
                    "parent folder {parent} does not exist; pass parents=true to create it"
                )))
            }
        }
    }
    agent.mkdir(&path).await?;
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "file.mkdir",
        json!({"path": path}),
    );
    Ok(Json(PathResponse { path }))
}

#[utoipa::path(post, path = "/v2/box/{id}/files/rename", tag = "files", request_body = RenameRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = PathResponse), (status = 404, body = ErrorBody)))]
pub async fn rename(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<RenameRequest>,
) -> ApiResult<Json<PathResponse>> {
    let (row, live) = st.running(&caller, &id).await?;
    let (from, to) = (box_path(&req.from)?, box_path(&req.to)?);
    live.handle.agent().rename(&from, &to).await?;
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "file.rename",
        json!({"from": from, "to": to}),
    );
    Ok(Json(PathResponse { path: to }))
}

#[utoipa::path(post, path = "/v2/box/{id}/files/remove", tag = "files", request_body = RemoveRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = PathResponse), (status = 400, body = ErrorBody)))]
pub async fn remove(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<RemoveRequest>,
) -> ApiResult<Json<PathResponse>> {
    let (row, live) = st.running(&caller, &id).await?;
    let path = box_path(&req.path)?;
    let agent = live.handle.agent();
    if req.recursive != Some(true) {
        let s = agent.stat(&path).await?;
        if s.kind == FileKind::Dir && !agent.list_dir(&path).await?.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{path} is a folder that is not empty; pass recursive=true to remove it"
            )));
        }
    }
    agent.remove(&path).await?;
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "file.remove",
        json!({"path": path}),
    );
    Ok(Json(PathResponse { path }))
}

#[utoipa::path(post, path = "/v2/box/{id}/files/upload", tag = "files",
    params(("id" = String, Path, description = "box id or name")),
    request_body(content_type = "multipart/form-data",
        description = "pairs of a `paths` text field (destination) and a `files` part (content)"),
    responses((status = 200, description = "uploaded"), (status = 400, body = ErrorBody)))]
pub async fn upload(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    mut form: Multipart,
) -> ApiResult<Json<serde_json::Value>> {
    let (row, live) = st.running(&caller, &id).await?;
    let agent = live.handle.agent();
    // The i-th `paths` value is the destination of the i-th `files` part
    // (TS interleaves them, Python sends every path first).
    let mut dests: Vec<String> = Vec::new();
    let mut written: Vec<String> = Vec::new();
    let mut total: u64 = 0;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), format!("invalid upload: {}", e.body_text()))
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("paths") => dests.push(box_path(&field.text().await.map_err(bad)?)?),
            Some("files") => {
                let Some(dest) = dests.get(written.len()).cloned() else {
                    return Err(ApiError::bad_request(
                        "each `files` part needs a `paths` field before it naming its destination",
                    ));
                };
                let counted = field.map_ok(|b| {
                    total += b.len() as u64;
                    b
                });
                let mut reader = tokio_util::io::StreamReader::new(
                    counted.map_err(|e| std::io::Error::other(e.body_text())),
                );
                agent.write_file_from(&dest, &mut reader, None).await?;
                written.push(dest);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected form field {other:?}: send `paths` and `files`"
                )))
            }
        }
    }
    if written.is_empty() {
        return Err(ApiError::bad_request("the upload has no `files` part"));
    }
    if dests.len() != written.len() {
        return Err(ApiError::bad_request(format!(
            "{} paths but {} files: send one `paths` field per file",
            dests.len(),
            written.len()
        )));
    }
    st.audit(
        &caller.team_id,
        Some(&caller),
        Some(&row),
        "file.upload",
        json!({"paths": written, "files": written.len(), "bytes": total}),
    );
    Ok(Json(json!({"uploaded": written})))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DownloadQuery {
    /// The file (or folder) to download.
    folder: Option<String>,
    /// Alias of `folder`.
    path: Option<String>,
}

#[utoipa::path(get, path = "/v2/box/{id}/files/download", tag = "files",
    params(("id" = String, Path, description = "box id or name"), DownloadQuery),
    responses((status = 200, description = "a file's bytes, or a folder as a tar archive",
               content_type = "application/octet-stream"),
              (status = 404, body = ErrorBody)))]
pub async fn download(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    let (_, live) = st.running(&caller, &id).await?;
    let path = match q.folder.or(q.path) {
        Some(p) => box_path(&p)?,
        None => {
            return Err(ApiError::bad_request(
                "name the file to download with ?folder=",
            ))
        }
    };
    let s = live.handle.agent().stat(&path).await?;
    let is_dir = s.kind == FileKind::Dir;
    let (mut tx, rx) = tokio::io::duplex(256 << 10);
    let agent = live.handle.agent().clone();
    let p = path.clone();
    tokio::spawn(async move {
        let sent = if is_dir {
            agent.tar_out(&p, &mut tx).await
        } else {
            agent.read_file_to(&p, &mut tx).await
        };
        // On failure the body ends early; the client sees a short read.
        if let Err(e) = sent {
            tracing::warn!(path = %p, error = %e, "download ended early");
        }
    });
    let name = path.rsplit('/').next().unwrap_or("download").to_string();
    let (ctype, disposition) = if is_dir {
        (
            "application/x-tar",
            format!("attachment; filename=\"{name}.tar\""),
        )
    } else {
        (
            "application/octet-stream",
            format!("attachment; filename=\"{name}\""),
        )
    };
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::new(rx)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    if let Ok(v) = header::HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
