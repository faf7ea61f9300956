//! The operator's image endpoints (a boxd extension): `GET /v2/images`,
//! `DELETE /v2/images/{name}`, `POST /v2/images/build` and
//! `POST /v2/images/import?name=`. Builds and imports answer a stream of
//! progress events, one JSON object per line, ending with a `done` or an
//! `error` event.
//!
//! Owns the wire side only: who may call them and what an image is are the
//! core's and `boxd-image`'s.

use super::upstash::error::{ApiError, ApiResult};
use super::upstash::{Auth, JsonObject, Svc};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use boxd_api::{BuildImageRequest, ErrorBody, ImageData, ImagesResponse};
use boxd_core::{ImageJob, ImageSource};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::io::Write;

/// Largest archive `POST /v2/images/import` takes.
pub const MAX_IMPORT_BYTES: u64 = 16 << 30;

#[utoipa::path(get, path = "/v2/images", tag = "images",
    responses((status = 200, body = ImagesResponse), (status = 403, body = ErrorBody)))]
/// Every image of this server (an operator key).
pub async fn list(svc: Svc, Auth(caller): Auth) -> ApiResult<Json<ImagesResponse>> {
    let images = svc
        .list_images(&caller)?
        .into_iter()
        .map(|i| ImageData {
            name: i.name,
            digest: i.digest,
            bytes: i.bytes,
            layers: i.layers,
            created: i.created,
            source: i.source,
        })
        .collect();
    Ok(Json(ImagesResponse { images }))
}

#[utoipa::path(delete, path = "/v2/images/{name}", tag = "images",
    params(("name" = String, Path, description = "image name")),
    responses((status = 200, description = "removed: `{name, deleted, freed_bytes}`"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
/// Removes an image and the layers nothing else uses; refused (409, naming
/// them) while a box or snapshot uses it.
pub async fn delete(
    svc: Svc,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let freed = svc.remove_image(&caller, &name).await?;
    Ok(Json(
        json!({"name": name, "deleted": true, "freed_bytes": freed}),
    ))
}

#[utoipa::path(post, path = "/v2/images/build", tag = "images", request_body = BuildImageRequest,
    responses((status = 200, description = "progress events as JSON lines, then `done` or `error`",
               content_type = "application/x-ndjson"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
/// Builds a runtime's image from Debian packages (minutes the first time;
/// a rebuild with nothing changed reuses every layer).
pub async fn build(
    svc: Svc,
    Auth(caller): Auth,
    JsonObject(req): JsonObject<BuildImageRequest>,
) -> ApiResult<Response> {
    let job = svc.make_image(
        &caller,
        ImageSource::Build {
            runtime: req.runtime,
            no_cache: req.no_cache,
        },
    )?;
    Ok(streamed(job))
}

#[derive(serde::Deserialize)]
pub struct ImportQuery {
    name: String,
}

#[utoipa::path(post, path = "/v2/images/import", tag = "images",
    params(("name" = String, Query, description = "the image's name")),
    request_body(content = Vec<u8>, description = "an OCI image layout as a tar, or a `docker save` archive (optionally gzip)",
                 content_type = "application/octet-stream"),
    responses((status = 200, description = "progress events as JSON lines, then `done` or `error`",
               content_type = "application/x-ndjson"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 413, body = ErrorBody)))]
/// Imports an image archive sent as the request body.
pub async fn import(
    svc: Svc,
    Auth(caller): Auth,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> ApiResult<Response> {
    // A caller who may not import, or a bad name, is refused before
    // their bytes are taken.
    let file = svc.image_upload(&caller, &q.name)?;
    let failed = |what: &str, e: std::io::Error| {
        ApiError::from(boxd_core::CoreError::internal(format!(
            "{what} {}: {e}",
            file.path().display()
        )))
    };
    let mut out = std::fs::File::create(file.path()).map_err(|e| failed("create", e))?;
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the archive: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_IMPORT_BYTES {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("the archive is larger than {MAX_IMPORT_BYTES} bytes"),
            ));
        }
        out.write_all(&chunk).map_err(|e| failed("write", e))?;
    }
    drop(out);
    let job = svc.make_image(
        &caller,
        ImageSource::Import {
            file: file.path().to_path_buf(),
            name: q.name,
        },
    )?;
    Ok(streamed_keeping(job, file))
}

fn streamed(job: ImageJob) -> Response {
    streamed_keeping(job, ())
}

/// The job's events as JSON lines; `keep` lives until the job is done.
fn streamed_keeping<K: Send + 'static>(job: ImageJob, keep: K) -> Response {
    let ImageJob { progress, done } = job;
    let events = tokio_stream_of(progress).map(|e| serde_json::to_value(e).unwrap_or(Value::Null));
    let end = futures_util::stream::once(async move {
        let end = match done.await {
            Ok(Ok(built)) => {
                json!({"event": "done", "name": built.name, "digest": built.digest, "bytes": built.bytes})
            }
            Ok(Err(e)) => json!({"event": "error", "error": e.to_string()}),
            Err(e) => json!({"event": "error", "error": format!("the image task failed: {e}")}),
        };
        drop(keep);
        end
    });
    let body = events
        .chain(end)
        .map(|v| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{v}\n"))));
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
