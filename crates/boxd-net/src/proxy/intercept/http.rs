//! The HTTP/1.1 codec of intercepted connections: parsing and checking a
//! box's request heads, parsing upstream response heads, the chunked
//! transfer coding, and the short error answers the proxy sends itself.
//!
//! Request checks (each refusal carries the status to answer):
//! - syntax by `httparse`, plus what it lets through: a bare CR anywhere
//!   in the head, obs-fold (a header line starting with SP/HTAB) → 400;
//!   more than [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers → 431; a
//!   version other than HTTP/1.0 or 1.1 → 505;
//! - identity: exactly one `Host`, naming the verified TLS server name
//!   (case-insensitive, no port or `:443`), else 421 (400 when missing or
//!   repeated); an absolute-form target must name the same host (421) and
//!   is rewritten to origin-form; `CONNECT` → 405; asterisk- and
//!   authority-form → 400;
//! - framing (RFC 9112 §6, request smuggling): `Transfer-Encoding` and
//!   `Content-Length` together → 400; a `Transfer-Encoding` other than
//!   exactly `chunked` → 501 (400 on HTTP/1.0 or when not a coding list);
//!   `Content-Length` values that differ or are not digits → 400;
//! - `Expect` other than `100-continue` → 417; `Upgrade` other than
//!   `websocket` → 400 (an upgraded connection is tunnelled, so only the
//!   upgrade request itself is checked and audited).
//!
//! Owns: those rules and the byte formats. Never: does I/O, sees a secret
//! value, or puts a header value or query string into a refusal's text
//! (refusals are shown to the box and recorded in audit events).

use crate::policy::{Host, HostName};
use crate::proxy::sniff::trim_ows;

/// Longest request or response head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes after the last chunk.
pub const MAX_TRAILERS: usize = 64 * 1024;
/// Largest chunk size accepted (keeps arithmetic far from overflow).
const MAX_CHUNK_SIZE: u64 = 1 << 48;

/// Why a request is answered by the proxy itself. `why` names the rule
/// broken, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: String,
}

impl Refusal {
    pub fn new(status: u16, why: impl Into<String>) -> Self {
        Refusal {
            status,
            why: why.into(),
        }
    }
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// One header field as the box sent it (value without surrounding OWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A checked request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The origin-form target to send (`/path?query`).
    pub target: String,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub headers: Vec<Header>,
    pub body: Body,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The box asked to close after this exchange.
    pub close: bool,
    /// An `Upgrade` request (`Connection: upgrade` and an `Upgrade` field).
    pub upgrade: bool,
}

impl RequestHead {
    /// The target's path (no query), for audit events.
    pub fn path(&self) -> &str {
        split_target(&self.target).0
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// `(path, query)` of an origin-form target.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// What could be read of a request head that was refused: the method
/// and path, for the audit event, when the request line parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    pub method: String,
    pub path: String,
}

/// Parses and checks one request head at the start of `buf`, bound to
/// `sni`. `Ok(None)`: incomplete, read more. `Ok(Some((head, len)))`: the
/// head took `len` bytes.
pub fn parse_request(
    buf: &[u8],
    sni: &HostName,
) -> Result<Option<(RequestHead, usize)>, (Refusal, Partial)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(buf);
    let partial = Partial {
        method: req.method.unwrap_or_default().to_owned(),
        path: split_target(req.path.unwrap_or_default()).0.to_owned(),
    };
    let len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err((
                    Refusal::new(431, "request head larger than 64 KiB"),
                    partial,
                ));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                Refusal::new(431, format!("more than {MAX_HEADERS} header fields")),
                partial,
            ))
        }
        Err(httparse::Error::Version) => {
            return Err((
                Refusal::new(505, "only HTTP/1.1 and HTTP/1.0 are supported"),
                partial,
            ))
        }
        Err(e) => {
            return Err((
                Refusal::new(400, format!("malformed request: {e}")),
                partial,
            ))
        }
    };
    let fail = |status: u16, why: &str| Err((Refusal::new(status, why), partial.clone()));
    if len > MAX_HEAD {
        return fail(431, "request head larger than 64 KiB");
    }
    if let Some(why) = line_trouble(&buf[..len]) {
        return fail(400, why);
    }
    let method = req.method.unwrap_or_default().to_owned();
    let raw_target = req.path.unwrap_or_default();
    let minor = req.version.unwrap_or(1);
    let headers = owned_headers(req.headers);

    if method == "CONNECT" {
        return fail(
            405,
            "CONNECT is not allowed inside an intercepted connection",
        );
    }
    // Identity: exactly one Host, naming the TLS server name.
    let hosts: Vec<&Header> = headers.iter().filter(|h| h.is("host")).collect();
    match hosts.as_slice() {
        [one] => {
            if !names_sni(&one.value, sni) {
                return fail(
                    421,
                    &format!("the Host header does not name the TLS server name {sni}"),
                );
            }
        }
        [] => return fail(400, "no Host header"),
        _ => return fail(400, "more than one Host header"),
    }
    let target = if raw_target.starts_with('/') {
        raw_target.to_owned()
    } else if raw_target == "*" {
        return fail(400, "asterisk-form request targets are not allowed");
    } else {
        match absolute_form(raw_target) {
            Some((authority, rest)) => {
                if authority.contains('@') {
                    return fail(400, "user information in the request target");
                }
                if !names_sni(authority.as_bytes(), sni) {
                    return fail(
                        421,
                        &format!("the request target does not name the TLS server name {sni}"),
                    );
                }
                if rest.is_empty() {
                    "/".to_owned()
                } else if rest.starts_with('?') {
                    format!("/{rest}")
                } else {
                    rest.to_owned()
                }
            }
            None => return fail(400, "request target is not origin- or absolute-form"),
        }
    };

    let body = match framing(&headers, minor) {
        Ok(b) => b,
        Err(r) => return Err((r, partial)),
    };
    let mut expect_continue = false;
    for h in headers.iter().filter(|h| h.is("expect")) {
        if h.value.eq_ignore_ascii_case(b"100-continue") {
            expect_continue = true;
        } else {
            return fail(417, "only Expect: 100-continue is supported");
        }
    }
    let tokens = connection_tokens(&headers);
    let close = tokens.iter().any(|t| t == "close")
        || (minor == 0 && !tokens.iter().any(|t| t == "keep-alive"));
    let upgrades = list_tokens(&headers, "upgrade");
    if !upgrades.is_empty() && upgrades != ["websocket"] {
        // Anything else (h2c, TLS) would carry further requests past the
        // per-request checks and audit.
        return fail(400, "only WebSocket upgrades are supported");
    }
    let upgrade = tokens.iter().any(|t| t == "upgrade") && !upgrades.is_empty();
    Ok(Some((
        RequestHead {
            method,
            target,
            minor,
            headers,
            body,
            expect_continue: expect_continue && minor == 1 && body != Body::None,
            close,
            upgrade,
        },
        len,
    )))
}

/// A bare CR (not followed by LF), or a header line starting with
/// whitespace (obs-fold): both make parsers disagree, so both are refused.
fn line_trouble(head: &[u8]) -> Option<&'static str> {
    for (i, &b) in head.iter().enumerate() {
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Some("bare CR in the request head");
        }
        if b == b'\n' && matches!(head.get(i + 1), Some(b' ' | b'\t')) {
            return Some("obsolete line folding in the request head");
        }
    }
    None
}

/// The parsed header fields as owned [`Header`]s, values without their
/// surrounding whitespace.
fn owned_headers(parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: trim_ows(h.value).to_vec(),
        })
        .collect()
}

/// `https://authority/rest` (or `http://`) → `(authority, rest)`.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let lower = target.get(..8).map(str::to_ascii_lowercase);
    let after = if lower.as_deref() == Some("https://") {
        &target[8..]
    } else if target.get(..7).map(str::to_ascii_lowercase).as_deref() == Some("http://") {
        &target[7..]
    } else {
        return None;
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    if after[end..].starts_with('#') {
        return None;
    }
    Some((&after[..end], &after[end..]))
}

/// Does the authority `raw` (`host`, `host:`, `host:443`) name `sni`?
pub fn names_sni(raw: &[u8], sni: &HostName) -> bool {
    let Ok(s) = std::str::from_utf8(raw) else {
        return false;
    };
    let host = match s.rsplit_once(':') {
        Some((h, port)) => {
            if !(port.is_empty() || port == "443") {
                return false;
            }
            h
        }
        None => s,
    };
    matches!(Host::parse(host), Ok(Host::Name(n)) if &n == sni)
}

/// The comma-separated tokens of every `Connection` field, lowercase.
fn connection_tokens(headers: &[Header]) -> Vec<String> {
    list_tokens(headers, "connection")
}

fn list_tokens(headers: &[Header], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.is(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(trim_ows(t)).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The `Content-Length` of `headers`: `Ok(None)` when absent; every value
/// (fields and comma-separated list members) must be the same digits.
fn content_length(headers: &[Header]) -> Result<Option<u64>, &'static str> {
    let mut found: Option<u64> = None;
    for h in headers.iter().filter(|h| h.is("content-length")) {
        for part in h.value.split(|&b| b == b',') {
            let part = trim_ows(part);
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err("Content-Length is not a number");
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("Content-Length is not a number")?;
            match found {
                Some(prev) if prev != n => return Err("conflicting Content-Length values"),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// The request body's framing (RFC 9112 §6.1–6.3, strictly).
fn framing(headers: &[Header], minor: u8) -> Result<Body, Refusal> {
    let has_te = headers.iter().any(|h| h.is("transfer-encoding"));
    let length = content_length(headers).map_err(|why| Refusal::new(400, why))?;
    if !has_te {
        return Ok(match length {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        });
    }
    if length.is_some() {
        return Err(Refusal::new(
            400,
            "both Transfer-Encoding and Content-Length (request smuggling)",
        ));
    }
    if minor == 0 {
        return Err(Refusal::new(
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    let codings = list_tokens(headers, "transfer-encoding");
    if codings.len() == 1 && codings[0] == "chunked" {
        return Ok(Body::Chunked);
    }
    let all_tokens = !codings.is_empty()
        && codings
            .iter()
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    // The exact value of each field must be a plain coding list too:
    // `chunked` hidden behind odd spelling is refused, not guessed at.
    if all_tokens {
        Err(Refusal::new(
            501,
            "only Transfer-Encoding: chunked is supported",
        ))
    } else {
        Err(Refusal::new(400, "malformed Transfer-Encoding"))
    }
}

/// How a response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    UntilEof,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The head's length in the buffer.
    pub len: usize,
    pub body: ResponseBody,
    /// The connection closes after this response.
    pub close: bool,
}

/// Parses one response head at the start of `buf` (answering a `HEAD`
/// request when `head_request`). `Ok(None)`: incomplete. Errors name the
/// problem (never a value).
pub fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err("response head larger than 64 KiB".into()),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let minor = resp.version.unwrap_or(1);
    let headers = owned_headers(resp.headers);
    let tokens = connection_tokens(&headers);
    let mut close = tokens.iter().any(|t| t == "close")
        || (minor == 0 && !tokens.iter().any(|t| t == "keep-alive"));
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseBody::None
    } else if headers.iter().any(|h| h.is("transfer-encoding")) {
        // A length beside a coding is ignored, and the connection is not
        // reused (RFC 9112 §6.3 3).
        if headers.iter().any(|h| h.is("content-length")) {
            close = true;
        }
        let codings = list_tokens(&headers, "transfer-encoding");
        if codings.last().map(String::as_str) == Some("chunked") {
            ResponseBody::Chunked
        } else {
            close = true;
            ResponseBody::UntilEof
        }
    } else {
        match content_length(&headers) {
            Ok(Some(n)) => ResponseBody::Length(n),
            Ok(None) => {
                close = true;
                ResponseBody::UntilEof
            }
            Err(why) => return Err(format!("response: {why}")),
        }
    };
    Ok(Some(ResponseHead {
        status,
        len,
        body,
        close,
    }))
}

/// A piece of a chunked body, as the decoder finds it.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkEvent<'a> {
    /// Body data (chunk framing removed).
    Data(&'a [u8]),
    /// One trailer field line, without its CRLF.
    Trailer(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    Done,
}

/// An incremental, strict decoder of the chunked transfer coding: sizes
/// in hex (at most 2^48), extensions (dropped), CRLF line ends only,
/// lines of at most [`MAX_CHUNK_LINE`], trailers of at most
/// [`MAX_TRAILERS`] bytes. Feeding stops at the end of the message, so
/// what follows (a pipelined request) is never taken for body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes bytes of `input` (all of them, or up to the end of the
    /// message), reporting data and trailers to `out`. Returns how many
    /// bytes were consumed.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut out: impl FnMut(ChunkEvent<'_>),
    ) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out(ChunkEvent::Data(&input[i..i + take]));
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataCr => {
                    if input[i] != b'\r' {
                        return Err("chunk data not followed by CRLF");
                    }
                    i += 1;
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if input[i] != b'\n' {
                        return Err("chunk data not followed by CRLF");
                    }
                    i += 1;
                    self.state = ChunkState::Size;
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let b = input[i];
                    i += 1;
                    if b != b'\n' {
                        if self.line.len() >= MAX_CHUNK_LINE {
                            return Err("chunk line too long");
                        }
                        self.line.push(b);
                        continue;
                    }
                    let mut line = std::mem::take(&mut self.line);
                    if line.pop() != Some(b'\r') {
                        return Err("chunk line not ended by CRLF");
                    }
                    if self.state == ChunkState::Size {
                        let size = chunk_size(&line)?;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                    } else if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else {
                        self.trailer_bytes += line.len() + 2;
                        if self.trailer_bytes > MAX_TRAILERS {
                            return Err("trailers too large");
                        }
                        if !is_field_line(&line) {
                            return Err("malformed trailer field");
                        }
                        out(ChunkEvent::Trailer(&line));
                    }
                    line.clear();
                    self.line = line;
                }
            }
        }
        Ok(i)
    }
}

/// `1*HEXDIG [ BWS ";" extensions ]`.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err("malformed chunk size");
    }
    let rest = &line[digits..];
    let rest_trimmed = trim_ows(rest);
    if !(rest.is_empty() || rest_trimmed.first() == Some(&b';')) {
        return Err("malformed chunk size");
    }
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("control character in a chunk extension");
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = u64::from(char::from(b).to_digit(16).ok_or("malformed chunk size")?);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or("chunk size too large")?;
    }
    if size > MAX_CHUNK_SIZE {
        return Err("chunk size too large");
    }
    Ok(size)
}

/// `token ":" OWS value OWS` with no control character but HTAB.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The reason phrase boxd sends with its own answers.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete answer from boxd itself: `text/plain` body `boxd: {why}`,
/// `Connection: close`.
pub fn error_response(status: u16, why: &str) -> Vec<u8> {
    let body = format!("boxd: {why}\n");
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sni() -> HostName {
        HostName::parse("api.example.test").unwrap()
    }

    fn parse(raw: &str) -> Result<Option<(RequestHead, usize)>, (Refusal, Partial)> {
        parse_request(raw.as_bytes(), &sni())
    }

    fn status_of(raw: &str) -> u16 {
        match parse(raw) {
            Err((r, _)) => r.status,
            Ok(Some(_)) => 0,
            Ok(None) => 1,
        }
    }

    #[test]
    fn a_plain_request_parses() {
        let raw = "GET /v1/x?a=1 HTTP/1.1\r\nHost: API.example.test:443\r\nX-A:  b \r\n\r\nNEXT";
        let (head, len) = parse(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 4);
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/v1/x?a=1");
        assert_eq!(head.path(), "/v1/x");
        assert_eq!(head.body, Body::None);
        assert!(!head.close);
        assert_eq!(head.headers[1].value, b"b");
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: api.ex").unwrap(), None);
    }

    #[test]
    fn identity_rules() {
        for (raw, status) in [
            ("GET / HTTP/1.1\r\nHost: evil.example.test\r\n\r\n", 421),
            ("GET / HTTP/1.1\r\nHost: api.example.test:8443\r\n\r\n", 421),
            ("GET / HTTP/1.1\r\nHost: api.example.test.evil\r\n\r\n", 421),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nHost: api.example.test\r\nhost: api.example.test\r\n\r\n",
                400,
            ),
            (
                "GET https://evil.example.test/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
                421,
            ),
            (
                "GET https://api.example.test@evil.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
                400,
            ),
            (
                "CONNECT evil.test:443 HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
                405,
            ),
            ("OPTIONS * HTTP/1.1\r\nHost: api.example.test\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: api.example.test\r\n\r\n", 505),
        ] {
            assert_eq!(status_of(raw), status, "{raw:?}");
        }
        let (head, _) =
            parse("GET HTTPS://api.example.test?q=1 HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.target, "/?q=1");
        let (head, _) = parse(
            "GET https://api.example.test:443/a/b HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.target, "/a/b");
    }

    #[test]
    fn framing_rules() {
        let h = "POST / HTTP/1.1\r\nHost: api.example.test\r\n";
        for (extra, status) in [
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Transfer-Encoding: gzip, chunked\r\n", 501),
            ("Transfer-Encoding: chunked, chunked\r\n", 501),
            ("Transfer-Encoding: xchunked\r\n", 501),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                501,
            ),
            ("Transfer-Encoding: \"chunked\"\r\n", 400),
            ("Content-Length: 5\r\nContent-Length: 6\r\n", 400),
            ("Content-Length: 5, 6\r\n", 400),
            ("Content-Length: +5\r\n", 400),
            ("Content-Length: 0x5\r\n", 400),
            ("Content-Length: 99999999999999999999\r\n", 400),
            ("Expect: something\r\nContent-Length: 1\r\n", 417),
            ("X: a\rb\r\n", 400),
            ("X: a\r\n b\r\n", 400),
        ] {
            assert_eq!(status_of(&format!("{h}{extra}\r\n")), status, "{extra:?}");
        }
        let ok = |extra: &str| parse(&format!("{h}{extra}\r\n")).unwrap().unwrap().0;
        assert_eq!(
            ok("Content-Length: 5\r\ncontent-length: 5\r\n").body,
            Body::Length(5)
        );
        assert_eq!(ok("Content-Length: 5, 5\r\n").body, Body::Length(5));
        assert_eq!(ok("Transfer-Encoding: Chunked\r\n").body, Body::Chunked);
        assert_eq!(ok("Content-Length: 0\r\n").body, Body::None);
        let e = ok("Content-Length: 3\r\nExpect: 100-Continue\r\n");
        assert!(e.expect_continue);
        let h10 = "POST / HTTP/1.0\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status_of(h10), 400);
        let c = parse("GET / HTTP/1.0\r\nHost: api.example.test\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert!(c.close);
        let u = parse("GET /ws HTTP/1.1\r\nHost: api.example.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert!(u.upgrade && !u.close);
        let h2c = "GET / HTTP/1.1\r\nHost: api.example.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n";
        assert_eq!(status_of(h2c), 400);
    }

    #[test]
    fn limits() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: api.example.test\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(status_of(&big), 431);
        assert_eq!(status_of(&big[..MAX_HEAD + 10]), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status_of(&format!(
                "GET / HTTP/1.1\r\nHost: api.example.test\r\n{many}\r\n"
            )),
            431
        );
    }

    #[test]
    fn refusals_never_show_values() {
        let raw =
            "GET /p?secretquery=1 HTTP/1.1\r\nHost: other.example.test\r\nX: topsecret\r\n\r\n";
        let (r, partial) = parse(raw).unwrap_err();
        assert!(
            !r.why.contains("other.example") && !r.why.contains("secret"),
            "{r:?}"
        );
        assert_eq!(partial.path, "/p");
    }

    #[test]
    fn responses() {
        let r = |raw: &str, head: bool| parse_response(raw.as_bytes(), head).unwrap().unwrap();
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false).body,
            ResponseBody::Length(3)
        );
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).body,
            ResponseBody::None
        );
        assert_eq!(
            r("HTTP/1.1 204 No Content\r\n\r\n", false).body,
            ResponseBody::None
        );
        assert_eq!(
            r("HTTP/1.1 304 NM\r\nContent-Length: 9\r\n\r\n", false).body,
            ResponseBody::None
        );
        let c = r(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((c.body, c.close), (ResponseBody::Chunked, false));
        let e = r("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((e.body, e.close), (ResponseBody::UntilEof, true));
        assert!(r("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).close);
        assert!(
            r(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .close
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", false).is_err());
        assert!(parse_response(&vec![b'a'; MAX_HEAD + 1], false).is_err());
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n", false).unwrap(), None);
    }

    /// Data, trailers and bytes consumed.
    type Decoded = (Vec<u8>, Vec<Vec<u8>>, usize);

    /// Decodes `input` fed in pieces split at `cuts`.
    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<Decoded, &'static str> {
        let mut dec = ChunkedDecoder::new();
        let (mut data, mut trailers, mut used) = (Vec::new(), Vec::new(), 0);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort_unstable();
        let mut start = 0;
        for end in bounds {
            if end < start || dec.is_done() {
                continue;
            }
            let n = dec.feed(&input[start..end], |e| match e {
                ChunkEvent::Data(d) => data.extend_from_slice(d),
                ChunkEvent::Trailer(t) => trailers.push(t.to_vec()),
            })?;
            used += n;
            if dec.is_done() {
                break;
            }
            start = end;
        }
        Ok((data, trailers, used))
    }

    #[test]
    fn chunked_strict() {
        let msg = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        let (data, trailers, used) = decode_split(msg, &[]).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers, vec![b"X-T: 1".to_vec()]);
        assert_eq!(&msg[used..], b"GET /next");
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\r\n",
        ] {
            assert!(
                decode_split(bad, &[]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(decode_split(long.as_bytes(), &[]).is_err());
    }

    proptest! {
        #[test]
        fn chunked_any_split_decodes_the_same(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut msg = Vec::new();
            let mut want = Vec::new();
            for p in &pieces {
                msg.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                msg.extend_from_slice(p);
                msg.extend_from_slice(b"\r\n");
                want.extend_from_slice(p);
            }
            msg.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\nPIPELINED");
            let (data, trailers, used) = decode_split(&msg, &cuts).unwrap();
            prop_assert_eq!(data, want);
            prop_assert_eq!(trailers, vec![b"X-Trailer: t".to_vec()]);
            prop_assert_eq!(&msg[used..], b"PIPELINED");
        }

        #[test]
        fn request_parsing_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&raw, &sni());
            let _ = parse_response(&raw, false);
            let _ = decode_split(&raw, &[3, 7]);
        }
    }
}
