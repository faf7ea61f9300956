//! The Upstash API's error type and its one wire format, `{"error": "..."}`.
//!
//! Owns the one mapping from the box service's errors to HTTP statuses,
//! and the middleware that turns every other non-JSON error
//! response (axum's extractor rejections, 404/405 fallbacks) into the same
//! JSON shape. Messages must say what to do; they never carry secret values.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use boxd_api::ErrorBody;
use boxd_core::CoreError;

/// An error answer: a status and a message for the user.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    /// A feature a later part of boxd owns: never a fake success.
    pub fn not_implemented(feature: &str) -> ApiError {
        CoreError::NotBuilt(feature.to_string()).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // 5xx are logged (with the request id) by `errors`.
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The one mapping from the box service's errors to this API's statuses.
impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let status = match &e {
            CoreError::NotFound(_) => StatusCode::NOT_FOUND,
            CoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            CoreError::Conflict(_) => StatusCode::CONFLICT,
            CoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            CoreError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            CoreError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            CoreError::NotBuilt(_) => StatusCode::NOT_IMPLEMENTED,
            CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Largest error body the middleware rewrites (rejection texts are short).
const MAX_ERROR_BODY: usize = 64 << 10;

/// The response header that names the request in boxd's log.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Request ids: the daemon's start time and a counter (unique per daemon
/// and across restarts; they name log lines, they grant nothing).
fn request_id() -> String {
    static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let started = *STARTED.get_or_init(boxd_core::now_ms);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{started:x}-{n:x}")
}

/// Middleware around every route: gives the request an id (the
/// `x-request-id` answer header, and a log span), logs every 5xx with it,
/// and answers a 500 in the caller's terms only — which request failed and
/// its id — since its text may hold database errors, host paths or netlink
/// errors: the details are in the log under that id. Other errors become
/// JSON by [`json_errors`].
pub async fn errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let id = request_id();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let response = next.run(req).instrument(span).await;
    let status = response.status();
    let mut response = if status == StatusCode::INTERNAL_SERVER_ERROR {
        let (parts, body) = response.into_parts();
        let detail = axum::body::to_bytes(body, MAX_ERROR_BODY)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        tracing::error!(request_id = %id, %method, %path, error = %detail, "request failed");
        let message = format!(
            "{method} {path} failed inside boxd (request id {id}); the operator finds what \
             went wrong in boxd's log under that id"
        );
        let body = serde_json::to_vec(&ErrorBody { error: message }).unwrap_or_default();
        let mut r = Response::from_parts(parts, Body::from(body));
        r.headers_mut().remove(header::CONTENT_LENGTH);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    } else {
        if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
            tracing::warn!(request_id = %id, %method, %path, %status, "request failed");
        }
        json_errors(response).await
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// Any 4xx/5xx that is not JSON yet (axum's own rejections and
/// fallbacks) becomes `{"error": "<its text>"}`.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than this endpoint accepts (see max_json_body_bytes / \
             max_upload_bytes in the boxd config)"
                .to_string()
        }
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this path".to_string(),
        StatusCode::NOT_FOUND if text.is_empty() => "no such endpoint".to_string(),
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
        _ => text,
    };
    let body = serde_json::to_vec(&ErrorBody { error: message }).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is never read, so the connection cannot
        // carry another request: say so, or a keep-alive client reuses it
        // and its next request fails.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Response::from_parts(parts, Body::from(body))
}
