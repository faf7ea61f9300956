//! The HTTP client of the client commands: where the daemon is, which API
//! key to send, and how a failed request reads.
//!
//! Owns the connection settings and the error format: every request
//! carries `X-Box-Api-Key`; a non-2xx answer becomes an [`ApiError`] with
//! the server's `{"error": …}` message; an unreachable daemon says so. It
//! never prints and never interprets what an endpoint returns: the
//! commands do that. It never sends the key anywhere but the configured
//! daemon URL (no proxies).

use anyhow::{anyhow, bail, Context, Result};
use boxd_api::{ErrorBody, API_KEY_HEADER};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

/// A non-2xx answer: the server's message and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Builds the error from a status and the raw body: the `error` field of
    /// a JSON body, else the body text itself (shortened), else a generic
    /// message like the SDKs'.
    pub fn from_body(status: u16, body: &[u8]) -> ApiError {
        let message = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) if !b.error.is_empty() => b.error,
            _ => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    format!("request failed with status {status}")
                } else {
                    text.chars().take(300).collect()
                }
            }
        };
        ApiError { status, message }
    }
}

/// The API key to use: `--key`/`BOXD_API_KEY` if given, else the admin key
/// the daemon wrote to `<data-dir>/admin.key`.
pub fn resolve_key(given: Option<&str>, data_dir: &Path) -> Result<String> {
    if let Some(k) = given {
        let k = k.trim();
        if k.is_empty() {
            bail!("the API key given with --key or BOXD_API_KEY is empty");
        }
        return Ok(k.to_string());
    }
    let path = super::admin_key_path(data_dir);
    let how = format!(
        "pass --key or set BOXD_API_KEY (`boxd keys create` makes one), or run as a user \
         who can read {} (the admin key `boxd serve` writes there)",
        path.display()
    );
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => bail!("no API key: {} is empty; {how}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no API key: {how}")
        }
        Err(e) => bail!("no API key: cannot read {}: {e}; {how}", path.display()),
    }
}

/// A client of one daemon.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: String,
}

impl Client {
    /// `url` is the daemon's base URL (a path prefix is kept).
    pub fn new(url: &str, key: String) -> Result<Client> {
        let base = Url::parse(url.trim())
            .with_context(|| format!("--url {url:?} is not a URL (e.g. http://127.0.0.1:7070)"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--url {url:?} must be an http:// URL");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("set up the HTTP client")?;
        Ok(Client { http, base, key })
    }

    /// The daemon's URL as the user gave it, for messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + the path segments, each percent-encoded (a box name can hold
    /// any character).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to `url` with the API key.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http
            .request(method, url)
            .header(API_KEY_HEADER, &self.key)
    }

    /// Sends `req`; a non-2xx answer is an [`ApiError`], an unreachable
    /// daemon a message saying to start it.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(ApiError::from_body(status.as_u16(), &body).into())
    }

    /// Sends `req` and parses the 2xx body as JSON.
    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = self.send(req).await?;
        let url = resp.url().clone();
        let body = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "unexpected answer from {url}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })
    }

    /// Explains a failed request: "cannot reach" for connection failures.
    pub fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(" ({})", root_cause(s)))
                .unwrap_or_default();
            anyhow!(
                "cannot reach boxd at {}: is `boxd serve` running?{cause}",
                self.base()
            )
        } else if e.is_timeout() {
            anyhow!("boxd at {} did not answer in time", self.base())
        } else {
            anyhow!(
                "request to boxd at {} failed: {}",
                self.base(),
                root_cause(&e)
            )
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_read_like_the_sdks() {
        let e = ApiError::from_body(404, br#"{"error":"no box named x"}"#);
        assert_eq!(e.to_string(), "no box named x (HTTP 404)");
        let e = ApiError::from_body(502, b"");
        assert_eq!(e.to_string(), "request failed with status 502 (HTTP 502)");
        let e = ApiError::from_body(405, b"Method Not Allowed");
        assert_eq!(e.to_string(), "Method Not Allowed (HTTP 405)");
    }

    #[test]
    fn segments_are_encoded_and_a_prefix_is_kept() {
        let c = Client::new("http://127.0.0.1:7070/", "k".into()).unwrap();
        assert_eq!(
            c.url(&["v2", "box", "a b/c"]).as_str(),
            "http://127.0.0.1:7070/v2/box/a%20b%2Fc"
        );
        let c = Client::new("http://h:1/prefix", "k".into()).unwrap();
        assert_eq!(c.url(&["v2", "box"]).as_str(), "http://h:1/prefix/v2/box");
        assert!(Client::new("ftp://h", "k".into()).is_err());
        assert!(Client::new("not a url", "k".into()).is_err());
    }

    #[test]
    fn the_key_comes_from_the_flag_then_the_admin_key_file() {
        let dir = std::env::temp_dir().join(format!("boxd-cli-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(resolve_key(Some(" k1 "), &dir).unwrap(), "k1");
        let err = resolve_key(None, &dir).unwrap_err().to_string();
        assert!(
            err.contains("BOXD_API_KEY") && err.contains("admin.key"),
            "{err}"
        );
        std::fs::write(dir.join("admin.key"), "boxd_abc\n").unwrap();
        assert_eq!(resolve_key(None, &dir).unwrap(), "boxd_abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
