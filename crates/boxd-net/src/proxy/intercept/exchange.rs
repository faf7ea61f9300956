//! One intercepted connection, from the two TLS handshakes to its end.
//!
//! 1. Both handshakes run at once: toward the box with the leaf for the
//!    name (the buffered ClientHello replayed first), toward the upstream
//!    over the policy-checked socket with the name as `ServerName`,
//!    verified by the upstream client configuration. If the upstream one
//!    fails, the box still gets a TLS session, and its first request is
//!    answered `502` naming the reason: not a byte of it goes upstream.
//! 2. Requests are read one after another (pipelined ones wait in the
//!    buffer, each gets its turn): head checked ([`super::http`]), body
//!    framing parsed, head rebuilt with the box's rules
//!    ([`super::rewrite`]), body forwarded exactly (or buffered and
//!    substituted when a secret opted in), then the response read and
//!    forwarded. Every request — forwarded, refused or failed — is one
//!    [`HttpEvent`].
//! 3. A `101` answer to an `Upgrade` request turns the connection into a
//!    tunnel of both TLS streams until either side closes.
//!
//! Timeouts ([`ProxyTimeouts`]): handshake, a request head within
//! `request_head` of its first byte, `idle` between requests,
//! `response_head` for each response head. Bodies have none (long
//! uploads and downloads are legitimate).
//!
//! Owns: the per-connection loop and its single upstream connection
//! (never shared). Never: sends a request byte upstream before the
//! upstream certificate is verified and the request checked, emits a
//! value, a header value or a query string, or panics on any input.

use std::io;
use std::net::IpAddr;
use std::time::Instant;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::Zeroizing;

use super::http::{
    error_response, parse_request, parse_response, Body, ChunkEvent, ChunkedDecoder, Partial,
    Refusal, RequestHead, ResponseBody, ResponseHead, CONTINUE,
};
use super::prefixed::{Counts, Prefixed};
use super::rewrite::{self, Findings, ForHost, Scanner};
use super::Interception;
use crate::events::{EventSink, HttpEvent, NetEvent};
use crate::policy::HostName;
use crate::proxy::ProxyTimeouts;
use crate::registry::BoxNet;

/// Largest body buffered for substitution.
pub const MAX_BUFFERED_BODY: usize = 8 << 20;
/// Bytes asked of a stream per read.
const READ_CHUNK: usize = 16 * 1024;
/// Longest path kept in an audit event.
const MAX_SHOWN_PATH: usize = 1024;
/// How long closing the box's side may take.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long, and how much, unread box input is drained before closing.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// Who the connection is for and where its events go.
pub(crate) struct Ctx<'a> {
    pub net: &'a BoxNet,
    pub name: &'a HostName,
    pub upstream_ip: IpAddr,
    pub events: &'a EventSink,
    pub timeouts: ProxyTimeouts,
}

/// How an intercepted connection went, for its connection event.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Bytes read from and written to the box (TLS records).
    pub from_box: u64,
    pub to_box: u64,
    /// Why it failed or was cut, if it did.
    pub error: Option<String>,
    /// The box's side was closed in order (a `502` for an unusable
    /// upstream was answered): no reset, the answer must arrive.
    pub answered: bool,
}

/// A stream and what was read from it but not used yet.
struct Side<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Side<S> {
    fn new(io: S) -> Self {
        Side {
            io,
            buf: Vec::new(),
        }
    }

    /// Reads more into the buffer; 0 at end of stream. Cancel-safe.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        let mut limited = (&mut self.io).take(READ_CHUNK as u64);
        limited.read_buf(&mut self.buf).await
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }
}

/// Serves one intercepted connection: `client` with the already read
/// `buffered` bytes (the ClientHello), `upstream` connected to the
/// policy-checked address of `ctx.name`.
pub(crate) async fn serve(
    ix: &Interception,
    ctx: &Ctx<'_>,
    client: &mut TcpStream,
    buffered: Vec<u8>,
    upstream: TcpStream,
) -> Outcome {
    let counts = Counts::default();
    let (error, answered) = serve_counted(ix, ctx, client, buffered, upstream, &counts).await;
    Outcome {
        from_box: counts.read(),
        to_box: counts.written(),
        error,
        answered,
    }
}

async fn serve_counted(
    ix: &Interception,
    ctx: &Ctx<'_>,
    client: &mut TcpStream,
    buffered: Vec<u8>,
    upstream: TcpStream,
    counts: &Counts,
) -> (Option<String>, bool) {
    let name = ctx.name;
    let config = match ix.leaves.server_config(name) {
        Ok(c) => c,
        Err(e) => return (Some(format!("no leaf certificate for {name}: {e}")), false),
    };
    let box_io = Prefixed::new(buffered, client, counts);
    let box_hs = tokio::time::timeout(
        ctx.timeouts.handshake,
        TlsAcceptor::from(config).accept(box_io),
    );
    let connector = TlsConnector::from(ix.upstream_tls.clone());
    let up_hs = async {
        let server_name = ServerName::try_from(name.as_str().to_owned())
            .map_err(|e| format!("{name} is not a TLS server name: {e}"))?;
        match tokio::time::timeout(
            ctx.timeouts.handshake,
            connector.connect(server_name, upstream),
        )
        .await
        {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(upstream_tls_error(name, &e)),
            Err(_) => Err(format!(
                "upstream TLS handshake with {name} timed out after {:?}",
                ctx.timeouts.handshake
            )),
        }
    };
    let (box_tls, up_tls) = tokio::join!(box_hs, up_hs);
    let box_tls = match box_tls {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return (Some(format!("box TLS handshake: {e}")), false),
        Err(_) => return (Some("box TLS handshake timed out".into()), false),
    };
    let mut bx = Side::new(box_tls);
    let up_tls = match up_tls {
        Ok(tls) => tls,
        Err(why) => {
            refuse_first_request(ctx, &mut bx, &why).await;
            close(&mut bx).await;
            return (Some(why), true);
        }
    };
    let mut up = Side::new(up_tls);
    let result = requests(ctx, &mut bx, &mut up).await;
    close(&mut bx).await;
    (result.err(), false)
}

/// Why the upstream handshake failed, for the box and the audit.
fn upstream_tls_error(name: &HostName, e: &io::Error) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("upstream certificate for {name} failed verification: {why:?}")
        }
        Some(other) => format!("upstream TLS handshake with {name} failed: {other}"),
        None => format!("upstream TLS handshake with {name} failed: {e}"),
    }
}

/// Closes the box's side: TLS close_notify and the write half, then
/// whatever the box still sends is read and dropped for a moment (at most
/// [`LINGER`] and [`LINGER_BYTES`]), so closing with unread input does
/// not reset the connection before the box has read the last answer
/// (a refused request's body, a pipelined rest; RFC 9112 §9.6).
async fn close<S: AsyncRead + AsyncWrite + Unpin>(bx: &mut Side<S>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, bx.io.shutdown()).await;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut drained = 0usize;
    while drained < LINGER_BYTES {
        bx.buf.clear();
        match tokio::time::timeout_at(deadline, bx.fill()).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// One request's audit record, filled in as it goes.
struct Audit {
    method: String,
    path: String,
    started: Instant,
    injected: Vec<String>,
    found: Findings,
}

impl Audit {
    fn new(method: &str, path: &str) -> Self {
        let mut path = path.to_owned();
        if path.len() > MAX_SHOWN_PATH {
            let mut cut = MAX_SHOWN_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
        }
        Audit {
            method: method.to_owned(),
            path,
            started: Instant::now(),
            injected: Vec::new(),
            found: Findings::default(),
        }
    }

    async fn emit(self, ctx: &Ctx<'_>, status: u16, error: Option<String>) {
        let event = HttpEvent {
            box_id: ctx.net.box_id.clone(),
            host: ctx.name.to_string(),
            method: self.method,
            path: self.path,
            status,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            injected_headers: self.injected,
            substituted_secrets: self.found.substituted.iter().cloned().collect(),
            violations: self.found.violations(),
            upstream_ip: Some(ctx.upstream_ip),
            error,
        };
        ctx.events.emit(NetEvent::Http(event)).await;
    }
}

/// What waiting for the next request head gave.
enum Next {
    Head(Box<RequestHead>, usize),
    /// The box closed (or went idle too long, or the upstream closed)
    /// between requests: an orderly end.
    Closed,
    Refused(Refusal, Partial),
    Failed(String),
}

/// Reads the next request head. `up`, when given, is watched while the
/// box is idle: an upstream that closes (or speaks unasked) ends the
/// connection.
async fn next_head<B, U>(ctx: &Ctx<'_>, bx: &mut Side<B>, mut up: Option<&mut Side<U>>) -> Next
where
    B: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if !bx.buf.is_empty() {
            match parse_request(&bx.buf, ctx.name) {
                Ok(Some((head, len))) => return Next::Head(Box::new(head), len),
                Ok(None) => {}
                Err((refusal, partial)) => return Next::Refused(refusal, partial),
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + ctx.timeouts.request_head);
        }
        let read = match deadline {
            Some(d) => match tokio::time::timeout_at(d, bx.fill()).await {
                Ok(r) => r,
                Err(_) => {
                    return Next::Refused(
                        Refusal::new(408, "request head incomplete (slow client)"),
                        Partial::default(),
                    )
                }
            },
            None => {
                let idle = tokio::time::sleep(ctx.timeouts.idle);
                let watch = async {
                    match up.as_mut() {
                        Some(u) => {
                            let _ = u.fill().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    r = bx.fill() => r,
                    () = idle => return Next::Closed,
                    () = watch => return Next::Closed,
                }
            }
        };
        match read {
            Ok(0) if bx.buf.is_empty() => return Next::Closed,
            Ok(0) => {
                return Next::Refused(
                    Refusal::new(400, "connection closed inside a request head"),
                    Partial::default(),
                )
            }
            Ok(_) => {}
            Err(e) => return Next::Failed(format!("read from the box: {e}")),
        }
    }
}

/// The upstream could not be used: the box's first request is answered
/// `502` with `why` and audited; nothing goes upstream.
async fn refuse_first_request<B>(ctx: &Ctx<'_>, bx: &mut Side<B>, why: &str)
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (audit, error) = match next_head::<B, B>(ctx, bx, None).await {
        Next::Head(head, _) => (Audit::new(&head.method, head.path()), why.to_owned()),
        Next::Refused(r, partial) => (
            Audit::new(&partial.method, &partial.path),
            format!("{why} (and the request was refused: {})", r.why),
        ),
        Next::Closed | Next::Failed(_) => return,
    };
    let sent = write_flush(&mut bx.io, &error_response(502, why)).await;
    audit
        .emit(ctx, if sent.is_ok() { 502 } else { 0 }, Some(error))
        .await;
}

async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Answers a request with boxd's own error and records it.
async fn answer<B>(ctx: &Ctx<'_>, bx: &mut Side<B>, audit: Audit, refusal: Refusal)
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let sent = write_flush(&mut bx.io, &error_response(refusal.status, &refusal.why)).await;
    let status = if sent.is_ok() { refusal.status } else { 0 };
    audit.emit(ctx, status, Some(refusal.why)).await;
}

/// The request loop. `Ok` when the connection ended in order.
async fn requests<B, U>(ctx: &Ctx<'_>, bx: &mut Side<B>, up: &mut Side<U>) -> Result<(), String>
where
    B: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let rules = &ctx.net.secrets;
    loop {
        let (req, len) = match next_head(ctx, bx, Some(&mut *up)).await {
            Next::Head(req, len) => (req, len),
            Next::Closed => return Ok(()),
            Next::Failed(e) => return Err(e),
            Next::Refused(refusal, partial) => {
                let audit = Audit::new(&partial.method, &partial.path);
                answer(ctx, bx, audit, refusal).await;
                return Ok(());
            }
        };
        bx.consume(len);
        let mut audit = Audit::new(&req.method, req.path());
        if !up.buf.is_empty() {
            // Bytes past the last response's end: whatever follows could
            // not be matched to a request.
            let r = Refusal::new(502, "upstream sent data after its last response");
            answer(ctx, bx, audit, r).await;
            return Ok(());
        }
        let secrets = ForHost::new(rules, ctx.name);
        let buffer_body = secrets.body_substitution() && req.body != Body::None;
        if buffer_body && matches!(req.body, Body::Length(n) if n > MAX_BUFFERED_BODY as u64) {
            // Refused before the box is asked to send it.
            answer(ctx, bx, audit, body_too_large()).await;
            return Ok(());
        }
        if req.expect_continue {
            if let Err(e) = write_flush(&mut bx.io, CONTINUE).await {
                audit
                    .emit(ctx, 0, Some(format!("write to the box: {e}")))
                    .await;
                return Err(format!("write to the box: {e}"));
            }
        }

        // The body, when a secret opted into body substitution: read
        // whole before anything goes upstream.
        let buffered = if buffer_body {
            match read_body(bx, req.body).await {
                Ok(body) => Some(rewrite::body(&body, &secrets, &mut audit.found)),
                Err(BodyError::Refused(r)) => {
                    answer(ctx, bx, audit, r).await;
                    return Ok(());
                }
                Err(BodyError::Io(e)) => {
                    audit.emit(ctx, 0, Some(e.clone())).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let out = rewrite::outgoing_head(
            &req,
            rules,
            ctx.name,
            &secrets,
            buffered.as_ref().map(|b| b.len()),
            &mut audit.found,
        );
        audit.injected = out.injected;
        let sent = send_request(bx, up, &req, &out.head, buffered.as_ref(), &secrets).await;
        match sent {
            Ok(found_in_body) => {
                for name in found_in_body {
                    audit.found.violation(&name, "body");
                }
            }
            Err(BodyError::Refused(r)) => {
                answer(ctx, bx, audit, r).await;
                return Ok(());
            }
            Err(BodyError::Io(e)) => {
                audit.emit(ctx, 0, Some(e.clone())).await;
                return Err(e);
            }
        }
        drop(out.head);
        drop(buffered);

        // The response (interim ones forwarded, then the final one).
        let resp = loop {
            match response_head(ctx, up, req.is_head()).await {
                Ok(r) if (100..200).contains(&r.status) && r.status != 101 => {
                    let head = up.buf[..r.len].to_vec();
                    up.consume(r.len);
                    if req.minor == 0 {
                        // HTTP/1.0 clients get no interim responses.
                        continue;
                    }
                    if let Err(e) = write_flush(&mut bx.io, &head).await {
                        audit
                            .emit(ctx, 0, Some(format!("write to the box: {e}")))
                            .await;
                        return Err(format!("write to the box: {e}"));
                    }
                }
                Ok(r) => break r,
                Err(refusal) => {
                    answer(ctx, bx, audit, refusal).await;
                    return Ok(());
                }
            }
        };
        if resp.status == 101 && !req.upgrade {
            let r = Refusal::new(502, "upstream switched protocols unasked");
            answer(ctx, bx, audit, r).await;
            return Ok(());
        }
        let head = up.buf[..resp.len].to_vec();
        up.consume(resp.len);
        if let Err(e) = write_flush(&mut bx.io, &head).await {
            let e = format!("write to the box: {e}");
            audit.emit(ctx, 0, Some(e.clone())).await;
            return Err(e);
        }
        if resp.status == 101 {
            audit.emit(ctx, 101, None).await;
            return tunnel(bx, up).await;
        }
        let forwarded = forward_response_body(up, &mut bx.io, resp.body).await;
        let error = forwarded.as_ref().err().cloned();
        audit.emit(ctx, resp.status, error).await;
        forwarded?;
        if resp.close || req.close {
            return Ok(());
        }
    }
}

enum BodyError {
    /// Answered by boxd (bad framing, too large).
    Refused(Refusal),
    /// A side failed or closed.
    Io(String),
}

/// Reads a whole request body (dechunked), at most [`MAX_BUFFERED_BODY`].
async fn read_body<B>(bx: &mut Side<B>, body: Body) -> Result<Zeroizing<Vec<u8>>, BodyError>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let too_large = || BodyError::Refused(body_too_large());
    let mut out = Zeroizing::new(Vec::new());
    match body {
        Body::None => {}
        Body::Length(n) => {
            if n > MAX_BUFFERED_BODY as u64 {
                return Err(too_large());
            }
            let n = n as usize;
            while bx.buf.len() < n {
                fill_body(bx).await?;
            }
            out.extend_from_slice(&bx.buf[..n]);
            bx.consume(n);
        }
        Body::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let mut over = false;
                let used = dec
                    .feed(&bx.buf, |e| {
                        if let ChunkEvent::Data(d) = e {
                            if out.len() + d.len() > MAX_BUFFERED_BODY {
                                over = true;
                            } else {
                                out.extend_from_slice(d);
                            }
                        }
                    })
                    .map_err(|why| BodyError::Refused(Refusal::new(400, why)))?;
                bx.consume(used);
                if over {
                    return Err(too_large());
                }
                if dec.is_done() {
                    break;
                }
                fill_body(bx).await?;
            }
        }
    }
    Ok(out)
}

fn body_too_large() -> Refusal {
    Refusal::new(
        413,
        "request body larger than 8 MiB (bodies are buffered for secret substitution)",
    )
}

async fn fill_body<B>(bx: &mut Side<B>) -> Result<(), BodyError>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    match bx.fill().await {
        Ok(0) => Err(BodyError::Io("the box closed inside a request body".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(BodyError::Io(format!("read from the box: {e}"))),
    }
}

/// Sends the head and the body upstream. A streamed body is scanned for
/// placeholders of secrets not approved for the host: their names are
/// returned.
async fn send_request<B, U>(
    bx: &mut Side<B>,
    up: &mut Side<U>,
    req: &RequestHead,
    head: &[u8],
    buffered: Option<&Zeroizing<Vec<u8>>>,
    secrets: &ForHost<'_>,
) -> Result<Vec<String>, BodyError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let up_err = |e: io::Error| BodyError::Io(format!("write upstream: {e}"));
    up.io.write_all(head).await.map_err(up_err)?;
    let mut scanner = Scanner::new(&secrets.others);
    match (buffered, req.body) {
        (Some(body), _) => up.io.write_all(body).await.map_err(up_err)?,
        (None, Body::None) => {}
        (None, Body::Length(n)) => {
            let mut left = n;
            while left > 0 {
                if bx.buf.is_empty() {
                    fill_body(bx).await?;
                }
                let take = bx
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                scanner.push(&bx.buf[..take]);
                up.io.write_all(&bx.buf[..take]).await.map_err(up_err)?;
                bx.consume(take);
                left -= take as u64;
            }
        }
        (None, Body::Chunked) => {
            let mut dec = ChunkedDecoder::new();
            let mut trailers: Vec<u8> = Vec::new();
            loop {
                let mut out: Vec<u8> = Vec::new();
                let used = dec
                    .feed(&bx.buf, |e| match e {
                        ChunkEvent::Data(d) => {
                            scanner.push(d);
                            out.extend_from_slice(format!("{:x}\r\n", d.len()).as_bytes());
                            out.extend_from_slice(d);
                            out.extend_from_slice(b"\r\n");
                        }
                        ChunkEvent::Trailer(t) => {
                            scanner.push(b"\n");
                            scanner.push(t);
                            trailers.extend_from_slice(t);
                            trailers.extend_from_slice(b"\r\n");
                        }
                    })
                    .map_err(|why| BodyError::Refused(Refusal::new(400, why)))?;
                bx.consume(used);
                if dec.is_done() {
                    out.extend_from_slice(b"0\r\n");
                    out.extend_from_slice(&trailers);
                    out.extend_from_slice(b"\r\n");
                }
                if !out.is_empty() {
                    up.io.write_all(&out).await.map_err(up_err)?;
                }
                if dec.is_done() {
                    break;
                }
                // The framing so far is sent: the upstream sees the body
                // as it comes, without waiting for the end.
                up.io.flush().await.map_err(up_err)?;
                fill_body(bx).await?;
            }
        }
    }
    up.io.flush().await.map_err(up_err)?;
    Ok(scanner.found().map(str::to_owned).collect())
}

/// Reads one response head (within `response_head`). Failures are the
/// answer to send the box.
async fn response_head<U>(
    ctx: &Ctx<'_>,
    up: &mut Side<U>,
    head_request: bool,
) -> Result<ResponseHead, Refusal>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + ctx.timeouts.response_head;
    loop {
        if !up.buf.is_empty() {
            match parse_response(&up.buf, head_request) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(why) => return Err(Refusal::new(502, format!("upstream {why}"))),
            }
        }
        match tokio::time::timeout_at(deadline, up.fill()).await {
            Err(_) => {
                return Err(Refusal::new(
                    504,
                    format!(
                        "no response head from upstream within {:?}",
                        ctx.timeouts.response_head
                    ),
                ))
            }
            Ok(Ok(0)) => {
                return Err(Refusal::new(
                    502,
                    "upstream closed the connection without a complete response",
                ))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Refusal::new(502, format!("read from upstream: {e}"))),
        }
    }
}

/// Forwards a response body from `up` to the box exactly as framed.
async fn forward_response_body<U, W>(
    up: &mut Side<U>,
    to: &mut W,
    body: ResponseBody,
) -> Result<(), String>
where
    U: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let box_err = |e: io::Error| format!("write to the box: {e}");
    let more = |r: io::Result<usize>, what: &str| match r {
        Ok(0) => Err(format!("upstream closed inside {what}")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read from upstream: {e}")),
    };
    match body {
        ResponseBody::None => {}
        ResponseBody::Length(n) => {
            let mut left = n;
            while left > 0 {
                if up.buf.is_empty() {
                    more(up.fill().await, "a response body")?;
                }
                let take = up
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                to.write_all(&up.buf[..take]).await.map_err(box_err)?;
                up.consume(take);
                left -= take as u64;
            }
        }
        ResponseBody::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let used = dec
                    .feed(&up.buf, |_| {})
                    .map_err(|why| format!("upstream chunked body: {why}"))?;
                to.write_all(&up.buf[..used]).await.map_err(box_err)?;
                up.consume(used);
                if dec.is_done() {
                    break;
                }
                to.flush().await.map_err(box_err)?;
                more(up.fill().await, "a chunked response body")?;
            }
        }
        ResponseBody::UntilEof => loop {
            if !up.buf.is_empty() {
                to.write_all(&up.buf).await.map_err(box_err)?;
                up.buf.clear();
                to.flush().await.map_err(box_err)?;
            }
            match up.fill().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("read from upstream: {e}")),
            }
        },
    }
    to.flush().await.map_err(box_err)
}

/// After `101 Switching Protocols`: both TLS streams carried as they are
/// until either side closes.
async fn tunnel<B, U>(bx: &mut Side<B>, up: &mut Side<U>) -> Result<(), String>
where
    B: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !up.buf.is_empty() {
        write_flush(&mut bx.io, &up.buf)
            .await
            .map_err(|e| format!("write to the box: {e}"))?;
        up.buf.clear();
    }
    if !bx.buf.is_empty() {
        write_flush(&mut up.io, &bx.buf)
            .await
            .map_err(|e| format!("write upstream: {e}"))?;
        bx.buf.clear();
    }
    match tokio::io::copy_bidirectional(&mut bx.io, &mut up.io).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("upgraded connection: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::parse_request;
    use super::*;
    use crate::addr::AddressPlan;
    use crate::policy::{EgressPolicy, OperatorNet};
    use crate::secrets::{AttachHeaderRule, PlaceholderSecret, SecretRules};
    use std::sync::Arc;
    use tokio::io::{duplex, DuplexStream};

    const PH: &str = "BOXD_PH_TEST_0123456789abcdef0123456789abcdef";
    const VALUE: &str = "the-secret-value";

    fn host() -> HostName {
        HostName::parse("api.example.test").unwrap()
    }

    fn net() -> BoxNet {
        let rule = AttachHeaderRule::new(
            "api.example.test",
            vec![("X-Key".into(), Zeroizing::new("injected".into()))],
        )
        .unwrap();
        let secret = PlaceholderSecret::new(
            "S",
            &["api.example.test".into()],
            PH.into(),
            Zeroizing::new(VALUE.into()),
            false,
            false,
        )
        .unwrap();
        let rules = SecretRules::new(vec![], vec![rule], vec![secret]).unwrap();
        let addrs = AddressPlan::default().slot(1).unwrap();
        let policy = EgressPolicy::new(None, None, OperatorNet::default());
        BoxNet::new("b", addrs, policy).with_secrets(Arc::new(rules))
    }

    /// A minimal upstream: reads each request (framed with the proxy's
    /// own codec), records it, answers `200` with body `ok`.
    async fn upstream(io: DuplexStream) -> Vec<Vec<u8>> {
        let mut side = Side::new(io);
        let mut seen = Vec::new();
        loop {
            let (head, len) = loop {
                if let Ok(Some(h)) = parse_request(&side.buf, &host()) {
                    break h;
                }
                if side.fill().await.unwrap_or(0) == 0 {
                    return seen;
                }
            };
            let mut req = side.buf[..len].to_vec();
            side.consume(len);
            match head.body {
                Body::None => {}
                Body::Length(n) => {
                    while side.buf.len() < n as usize {
                        side.fill().await.unwrap();
                    }
                    req.extend(side.buf.drain(..n as usize));
                }
                Body::Chunked => {
                    let mut dec = ChunkedDecoder::new();
                    loop {
                        let used = dec.feed(&side.buf, |_| {}).unwrap();
                        req.extend(side.buf.drain(..used));
                        if dec.is_done() {
                            break;
                        }
                        side.fill().await.unwrap();
                    }
                }
            }
            seen.push(req);
            side.io
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn pipelined_requests_split_byte_by_byte_are_each_rewritten_and_audited() {
        let (mut app, box_end) = duplex(1 << 16);
        let (up_end, server_end) = duplex(1 << 16);
        let server = tokio::spawn(upstream(server_end));
        let (sink, mut events) = EventSink::channel(64);
        let proxy = tokio::spawn(async move {
            let net = net();
            let name = host();
            let ctx = Ctx {
                net: &net,
                name: &name,
                upstream_ip: IpAddr::from([127, 0, 0, 1]),
                events: &sink,
                timeouts: ProxyTimeouts::default(),
            };
            let mut bx = Side::new(box_end);
            let mut up = Side::new(up_end);
            requests(&ctx, &mut bx, &mut up).await
        });
        let input = format!(
            "GET /a HTTP/1.1\r\nHost: api.example.test\r\nx-key: mine\r\nX-T: {PH}\r\n\r\n\
             POST /b HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 3\r\n\r\nabc\
             POST /c HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             2;e=1\r\nde\r\n0\r\nX-Trail: 1\r\n\r\n"
        );
        for b in input.as_bytes() {
            app.write_all(&[*b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got.windows(2).filter(|w| w == b"ok").count() < 3 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), app.read(&mut chunk))
                .await
                .expect("responses in time")
                .unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        drop(app);
        assert_eq!(proxy.await.unwrap(), Ok(()));
        let seen: Vec<String> = server
            .await
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        assert_eq!(seen.len(), 3);
        assert!(seen[0].starts_with("GET /a HTTP/1.1\r\n"));
        assert!(
            seen[0].contains(&format!("X-T: {VALUE}\r\n")),
            "{}",
            seen[0]
        );
        assert!(!seen[0].contains("mine") && !seen[0].contains(PH));
        assert!(seen[1].ends_with("\r\n\r\nabc"), "{}", seen[1]);
        // Re-chunked as the data came (here a byte at a time), same data,
        // same trailer, extensions dropped.
        let body = seen[2].split_once("\r\n\r\n").unwrap().1.as_bytes();
        let mut data = Vec::new();
        let used = ChunkedDecoder::new()
            .feed(body, |e| {
                if let ChunkEvent::Data(d) = e {
                    data.extend_from_slice(d);
                }
            })
            .unwrap();
        assert_eq!((data.as_slice(), used), (&b"de"[..], body.len()));
        assert!(seen[2].ends_with("0\r\nX-Trail: 1\r\n\r\n") && !seen[2].contains("e=1"));
        for s in &seen {
            assert_eq!(s.matches("X-Key: injected\r\n").count(), 1, "{s}");
        }
        let mut paths = Vec::new();
        while let Ok(NetEvent::Http(e)) = events.try_recv() {
            assert_eq!(e.status, 200);
            assert_eq!(e.injected_headers, vec!["X-Key".to_owned()]);
            assert!(!serde_json::to_string(&e).unwrap().contains(VALUE));
            paths.push(e.path);
        }
        assert_eq!(paths, vec!["/a", "/b", "/c"]);
    }
}
