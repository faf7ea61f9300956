//! File endpoints: write, read, list, stat, mkdir, rename, remove,
//! multipart upload and download (a file as its bytes, a folder as a tar
//! archive).
//!
//! Owns the wire side only: text or base64 encodings, the multipart form
//! (`paths` fields paired with `files` parts), download headers. Paths,
//! bounds, the I/O and the audit are the core's.
//! Never resolves a path or touches a file itself.

use super::error::{ApiError, ApiResult};
use super::{Auth, JsonObject, Svc};
use axum::body::Body;
use axum::extract::{Multipart, Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use boxd_api::{
    ErrorBody, FileEntry, FileStat, ListFilesResponse, MkdirRequest, PathResponse,
    ReadFileResponse, RemoveRequest, RenameRequest, WriteFileRequest,
};
use boxd_core::files::FileKind;
use boxd_core::files::LIST_MAX;
use boxd_core::FileInfo;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, UNIX_EPOCH};

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

fn entry(f: FileInfo) -> FileEntry {
    let s = f.stat;
    FileEntry {
        path: f.path,
        size: s.size,
        is_dir: s.kind == FileKind::Dir,
        mod_time: rfc3339(s.modified, s.modified_nsec),
        name: s.name,
    }
}

/// Text (`utf-8`, the default) or `base64`.
fn base64_encoding(encoding: Option<&str>) -> ApiResult<bool> {
    match encoding {
        None | Some("") | Some("utf-8") | Some("utf8") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown encoding {other:?}: use base64 or leave it out for text"
        ))),
    }
}

#[utoipa::path(post, path = "/v2/box/{id}/files/write", tag = "files", request_body = WriteFileRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = PathResponse), (status = 400, body = ErrorBody)))]
pub async fn write(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<WriteFileRequest>,
) -> ApiResult<Json<PathResponse>> {
    let data = if base64_encoding(req.encoding.as_deref())? {
        base64::engine::general_purpose::STANDARD
            .decode(req.content.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("content is not valid base64: {e}")))?
    } else {
        req.content.into_bytes()
    };
    let path = svc.write_file(&caller, &id, &req.path, &data).await?;
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
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Json<ReadFileResponse>> {
    let base64 = base64_encoding(q.encoding.as_deref())?;
    let bytes = svc
        .read_file(&caller, &id, &q.path, q.offset, q.length)
        .await?;
    let content = if base64 {
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    } else {
        String::from_utf8(bytes).map_err(|_| {
            ApiError::bad_request(format!(
                "{} is not UTF-8 text; read it with encoding=base64",
                q.path
            ))
        })?
    };
    Ok(Json(ReadFileResponse { content }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Folder to list (default `/workspace/home`).
    folder: Option<String>,
    /// Entries per page (1 to 10 000). With `limit` or `cursor` the answer
    /// is one page and carries `next_cursor` while more remain; without
    /// both, every entry is streamed in one answer.
    limit: Option<usize>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

/// `"…"` entries of a page, comma-separated, each preceded by a comma
/// unless it is the very first of the answer.
fn encode_entries(out: &mut Vec<u8>, entries: Vec<FileInfo>, first: &mut bool) {
    for e in entries {
        if !*first {
            out.push(b',');
        }
        *first = false;
        // A struct of strings and numbers always serializes.
        if let Ok(v) = serde_json::to_vec(&entry(e)) {
            out.extend_from_slice(&v);
        }
    }
}

#[utoipa::path(get, path = "/v2/box/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "box id or name"), ListQuery),
    responses((status = 200, body = ListFilesResponse), (status = 404, body = ErrorBody)))]
pub async fn list(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    if q.limit.is_some() || q.cursor.is_some() {
        let page = svc
            .list_page(
                &caller,
                &id,
                q.folder.as_deref(),
                q.cursor.as_deref(),
                q.limit,
            )
            .await?;
        return Ok(Json(ListFilesResponse {
            files: page.entries.into_iter().map(entry).collect(),
            next_cursor: page.next_cursor,
        })
        .into_response());
    }
    // Every entry, one page at a time: the first page is fetched before
    // answering (so a missing folder is a 404), the others as the client
    // reads. A box failing mid-way cuts the body short (invalid JSON).
    let svc = svc.0;
    let page = svc
        .list_page(&caller, &id, q.folder.as_deref(), None, Some(LIST_MAX))
        .await?;
    let mut head = b"{\"files\":[".to_vec();
    let mut first = true;
    encode_entries(&mut head, page.entries, &mut first);
    let state = (svc, caller, id, q.folder, page.next_cursor, first, false);
    let rest = futures_util::stream::unfold(
        state,
        |(svc, caller, id, folder, cursor, mut first, done)| async move {
            if done {
                return None;
            }
            let Some(c) = cursor else {
                let state = (svc, caller, id, folder, None, first, true);
                return Some((Ok(bytes::Bytes::from_static(b"]}")), state));
            };
            match svc
                .list_page(&caller, &id, folder.as_deref(), Some(&c), Some(LIST_MAX))
                .await
            {
                Ok(page) => {
                    let mut out = Vec::new();
                    encode_entries(&mut out, page.entries, &mut first);
                    let state = (svc, caller, id, folder, page.next_cursor, first, false);
                    Some((Ok(bytes::Bytes::from(out)), state))
                }
                Err(e) => {
                    tracing::warn!(box_id = %id, error = %e, "listing ended early");
                    let state = (svc, caller, id, folder, None, first, true);
                    Some((Err(std::io::Error::other("listing ended early")), state))
                }
            }
        },
    );
    let head = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) });
    let mut resp = Body::from_stream(head.chain(rest)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
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
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<StatQuery>,
) -> ApiResult<Json<FileStat>> {
    let s = svc
        .stat(&caller, &id, &q.path, q.follow == Some(true))
        .await?;
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
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<MkdirRequest>,
) -> ApiResult<Json<PathResponse>> {
    let parents = req.parents == Some(true);
    let path = svc.mkdir(&caller, &id, &req.path, parents).await?;
    Ok(Json(PathResponse { path }))
}

#[utoipa::path(post, path = "/v2/box/{id}/files/rename", tag = "files", request_body = RenameRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = PathResponse), (status = 404, body = ErrorBody)))]
pub async fn rename(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<RenameRequest>,
) -> ApiResult<Json<PathResponse>> {
    let path = svc.rename(&caller, &id, &req.from, &req.to).await?;
    Ok(Json(PathResponse { path }))
}

#[utoipa::path(post, path = "/v2/box/{id}/files/remove", tag = "files", request_body = RemoveRequest,
    params(("id" = String, Path, description = "box id or name")),
    responses((status = 200, body = PathResponse), (status = 400, body = ErrorBody)))]
pub async fn remove(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonObject(req): JsonObject<RemoveRequest>,
) -> ApiResult<Json<PathResponse>> {
    let recursive = req.recursive == Some(true);
    let path = svc.remove(&caller, &id, &req.path, recursive).await?;
    Ok(Json(PathResponse { path }))
}

#[utoipa::path(post, path = "/v2/box/{id}/files/upload", tag = "files",
    params(("id" = String, Path, description = "box id or name")),
    request_body(content_type = "multipart/form-data",
        description = "pairs of a `paths` text field (destination) and a `files` part (content)"),
    responses((status = 200, description = "uploaded"), (status = 400, body = ErrorBody)))]
pub async fn upload(
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    mut form: Multipart,
) -> ApiResult<Json<serde_json::Value>> {
    let mut upload = svc.start_upload(&caller, &id).await?;
    // The i-th `paths` value is the destination of the i-th `files` part
    // (TS interleaves them, Python sends every path first).
    let mut dests: Vec<String> = Vec::new();
    let mut total: u64 = 0;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), format!("invalid upload: {}", e.body_text()))
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("paths") => dests.push(upload.destination(&field.text().await.map_err(bad)?)?),
            Some("files") => {
                let Some(dest) = dests.get(upload.written().len()).cloned() else {
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
                upload.write(dest, &mut reader).await?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected form field {other:?}: send `paths` and `files`"
                )))
            }
        }
    }
    if upload.written().is_empty() {
        return Err(ApiError::bad_request("the upload has no `files` part"));
    }
    if dests.len() != upload.written().len() {
        return Err(ApiError::bad_request(format!(
            "{} paths but {} files: send one `paths` field per file",
            dests.len(),
            upload.written().len()
        )));
    }
    let written = upload.finish(total)?;
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
    svc: Svc,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    let Some(path) = q.folder.or(q.path) else {
        return Err(ApiError::bad_request(
            "name the file to download with ?folder=",
        ));
    };
    let dl = svc.download(&caller, &id, &path).await?;
    let name = dl.path.rsplit('/').next().unwrap_or("download").to_string();
    let (ctype, disposition) = if dl.is_dir {
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
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::new(dl.body)).into_response();
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
