//! Reading the first bytes a box sends on a connection: a TLS ClientHello
//! (for its SNI) or an HTTP/1.x request head (for its Host and request
//! target), or neither.
//!
//! Owns: an incremental, bounded classifier ([`Sniffer`]) fed with the
//! client's bytes as they arrive, the TLS record/handshake reassembly and
//! ClientHello parser, and the request-line/Host extraction (header
//! parsing by `httparse`). Everything is pure: no I/O, no clock, no
//! policy. Never: panics, allocates beyond its caps ([`MAX_BUFFERED`]),
//! or returns payload bytes in an error (errors name what was wrong, not
//! what was sent).
//!
//! Why a hand-written ClientHello parser (about 150 lines): the proxy
//! needs the SNI and nothing else, over a ClientHello that may be split
//! across TLS records *and* TCP segments. `tls-parser` parses a record at
//! a time (reassembly across records is still ours to write) and brings
//! `nom`, `phf` and `num_enum`; `rustls::server::Acceptor` does the
//! reassembly but links a whole TLS stack into the plain-splice path. The
//! grammar needed here is small and fixed (RFC 8446 §4.1.2, RFC 6066 §3)
//! and is covered by unit and property tests below.

use std::fmt;

/// Longest ClientHello handshake message accepted (real ones, post-quantum
/// key shares included, are 0.5–2 KiB; padding extensions stay far below).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// Longest HTTP request head (request line plus headers) accepted.
pub const MAX_HTTP_HEAD: usize = 16 * 1024;
/// Most TLS records a ClientHello may be split into.
pub const MAX_HELLO_RECORDS: usize = 64;
/// Most client bytes held while the first bytes are inspected.
pub const MAX_BUFFERED: usize = 24 * 1024;
/// Most headers in an HTTP request head.
pub const MAX_HTTP_HEADERS: usize = 128;

const TLS_HANDSHAKE: u8 = 22;
const HS_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ECH: u16 = 0xfe0d;
const TLS_MAX_FRAGMENT: usize = 1 << 14;

/// Why the first bytes could not be read (never contains payload bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniffError {
    /// More bytes than the caps allow (ClientHello, records, request head).
    TooLarge(&'static str),
    /// A TLS handshake record that is not a well-formed ClientHello.
    BadClientHello(&'static str),
    /// An HTTP/1.x request line whose head is not a well-formed request.
    BadHttp(&'static str),
    /// The client closed before the ClientHello or request head was complete.
    Truncated(&'static str),
}

impl fmt::Display for SniffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniffError::TooLarge(what) => write!(f, "{what} too large"),
            SniffError::BadClientHello(why) => write!(f, "malformed TLS ClientHello: {why}"),
            SniffError::BadHttp(why) => write!(f, "malformed HTTP request head: {why}"),
            SniffError::Truncated(what) => write!(f, "client closed inside the {what}"),
        }
    }
}

impl std::error::Error for SniffError {}

/// What a TLS ClientHello said that the proxy cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, as sent (raw bytes:
    /// not validated here; the proxy normalises and compares it).
    pub sni: Option<Vec<u8>>,
    /// An `encrypted_client_hello` extension was present (real ECH or
    /// GREASE: indistinguishable by design). With ECH the real name is in
    /// the encrypted inner hello; the outer SNI is the client-facing name.
    pub ech: bool,
}

/// What an HTTP/1.x request head said that the proxy cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpHead {
    /// The request method.
    pub method: String,
    /// The authority of an absolute-form (`GET http://host/…`) or
    /// authority-form (`CONNECT host:443`) request target, as sent.
    pub target_authority: Option<Vec<u8>>,
    /// The single `Host` header's value, as sent (OWS trimmed).
    pub host: Option<Vec<u8>>,
}

/// The first bytes of a connection, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake record carrying a ClientHello.
    Tls(ClientHello),
    /// An HTTP/1.0 or HTTP/1.1 request.
    Http(HttpHead),
    /// Anything else (or nothing: the client sent no byte first).
    Other,
}

impl FirstBytes {
    /// `tls`, `http` or `tcp`, as audit events name it.
    pub fn protocol(&self) -> &'static str {
        match self {
            FirstBytes::Tls(_) => "tls",
            FirstBytes::Http(_) => "http",
            FirstBytes::Other => "tcp",
        }
    }
}

/// Where an unfinished inspection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not classified yet.
    Unknown,
    /// TLS: waiting for the ClientHello to be complete.
    Tls,
    /// HTTP: the request line is complete, waiting for the end of the head.
    Http,
}

/// The state of one connection's inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Keep reading.
    NeedMore,
    /// Classified; every byte pushed so far is in [`Sniffer::buffered`].
    Done(FirstBytes),
}

/// Incremental classifier of a connection's first bytes. Push what the
/// client sent as it arrives; the bytes are kept (up to
/// [`MAX_BUFFERED`]) so they can be forwarded verbatim once the decision
/// is made. Work per push is bounded: a ClientHello is re-parsed only
/// when a TLS record is complete, a request head only when a possible
/// end of the head has arrived.
#[derive(Debug, Clone)]
pub struct Sniffer {
    buf: Vec<u8>,
    kind: Kind,
    /// Do not re-examine before the buffer is at least this long.
    wait_for: usize,
    /// HTTP: where to resume looking for the end of the head.
    scan_from: usize,
}

impl Default for Sniffer {
    fn default() -> Self {
        Sniffer::new()
    }
}

impl Sniffer {
    pub fn new() -> Self {
        Sniffer {
            buf: Vec::new(),
            kind: Kind::Unknown,
            wait_for: 1,
            scan_from: 0,
        }
    }

    /// The bytes pushed so far.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The bytes pushed so far, to forward.
    pub fn into_buffered(self) -> Vec<u8> {
        self.buf
    }

    /// What the bytes so far look like, as audit events name it: `tls`
    /// or `http` as soon as the start is recognised (even if the rest
    /// turns out malformed), `tcp` otherwise.
    pub fn protocol(&self) -> &'static str {
        match self.kind {
            Kind::Tls => "tls",
            Kind::Http => "http",
            Kind::Unknown => "tcp",
        }
    }

    /// How many more bytes may be pushed before [`MAX_BUFFERED`].
    pub fn room(&self) -> usize {
        MAX_BUFFERED.saturating_sub(self.buf.len())
    }

    /// Adds bytes the client sent and says whether the first bytes are
    /// now classified.
    pub fn push(&mut self, data: &[u8]) -> Result<Progress, SniffError> {
        if data.len() > self.room() {
            return Err(SniffError::TooLarge(match self.kind {
                Kind::Http => "HTTP request head",
                _ => "TLS ClientHello",
            }));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() < self.wait_for {
            return Ok(Progress::NeedMore);
        }
        self.examine()
    }

    /// The client closed its sending side: classify what there is.
    pub fn finish(&mut self) -> Result<FirstBytes, SniffError> {
        match self.examine()? {
            Progress::Done(first) => Ok(first),
            Progress::NeedMore => match self.kind {
                Kind::Tls => Err(SniffError::Truncated("TLS ClientHello")),
                Kind::Http => Err(SniffError::Truncated("HTTP request head")),
                // A prefix of something that might have become a request
                // line (or a lone 0x16): nothing to inspect, plain TCP.
                Kind::Unknown => Ok(FirstBytes::Other),
            },
        }
    }

    fn examine(&mut self) -> Result<Progress, SniffError> {
        if self.kind == Kind::Unknown {
            match classify(&self.buf) {
                Guess::NeedMore => return Ok(Progress::NeedMore),
                Guess::Other => return Ok(Progress::Done(FirstBytes::Other)),
                Guess::Tls => self.kind = Kind::Tls,
                Guess::Http => self.kind = Kind::Http,
            }
        }
        match self.kind {
            Kind::Tls => match client_hello(&self.buf)? {
                Hello::Complete(hello) => Ok(Progress::Done(FirstBytes::Tls(hello))),
                Hello::NeedAtLeast(n) => {
                    if n > MAX_BUFFERED {
                        return Err(SniffError::TooLarge("TLS ClientHello"));
                    }
                    self.wait_for = n;
                    Ok(Progress::NeedMore)
                }
            },
            Kind::Http => {
                // The head ends at an empty line; look only at new bytes
                // (and the three before them, for a split "\r\n\r\n").
                let start = self.scan_from.saturating_sub(3);
                let end_found = has_head_end(&self.buf[start..]);
                self.scan_from = self.buf.len();
                if !end_found {
                    if self.buf.len() > MAX_HTTP_HEAD {
                        return Err(SniffError::TooLarge("HTTP request head"));
                    }
                    return Ok(Progress::NeedMore);
                }
                match http_head(&self.buf)? {
                    Some(head) => Ok(Progress::Done(FirstBytes::Http(head))),
                    None => Ok(Progress::NeedMore),
                }
            }
            Kind::Unknown => Ok(Progress::NeedMore),
        }
    }
}

/// The first guess from a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guess {
    NeedMore,
    Tls,
    Http,
    Other,
}

fn classify(buf: &[u8]) -> Guess {
    match buf.first() {
        None => Guess::NeedMore,
        Some(&TLS_HANDSHAKE) => match buf.get(1..3) {
            None if buf.len() == 1 => Guess::NeedMore,
            None => match buf[1] {
                3 => Guess::NeedMore,
                _ => Guess::Other,
            },
            Some(&[3, minor]) if minor <= 4 => Guess::Tls,
            Some(_) => Guess::Other,
        },
        Some(_) => request_line(buf),
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Is `buf` (so far) an HTTP/1.x request line? Leading empty lines are
/// skipped, as servers do (RFC 9112 §2.2) — so a request after a blank
/// line is inspected like any other.
fn request_line(buf: &[u8]) -> Guess {
    const MAX_LEADING_EOL: usize = 16;
    let lead = buf
        .iter()
        .take(MAX_LEADING_EOL + 1)
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if lead > MAX_LEADING_EOL {
        return Guess::Other;
    }
    let line = &buf[lead..];
    // Method: 1-32 tchars, then one space.
    let method_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    if method_len == line.len() {
        // Only method characters so far (or nothing after empty lines).
        return if method_len <= 32 {
            Guess::NeedMore
        } else {
            Guess::Other
        };
    }
    if method_len == 0 || method_len > 32 || line[method_len] != b' ' {
        return Guess::Other;
    }
    // Target: visible characters up to the next space.
    let rest = &line[method_len + 1..];
    let target_len = rest.iter().take_while(|&&b| b > b' ' && b != 0x7f).count();
    if target_len == rest.len() {
        return if rest.len() > MAX_HTTP_HEAD {
            Guess::Other
        } else {
            Guess::NeedMore
        };
    }
    if target_len == 0 || rest[target_len] != b' ' {
        return Guess::Other;
    }
    // Version: exactly "HTTP/1.0" or "HTTP/1.1", then CRLF or LF.
    let version = &rest[target_len + 1..];
    for expected in [&b"HTTP/1.0\r\n"[..], &b"HTTP/1.1\r\n"[..]] {
        let n = version.len().min(expected.len());
        if version[..n] == expected[..n] {
            return if n == expected.len() {
                Guess::Http
            } else {
                Guess::NeedMore
            };
        }
    }
    let bare_lf = [&b"HTTP/1.0\n"[..], &b"HTTP/1.1\n"[..]];
    if bare_lf.iter().any(|e| version.starts_with(e)) {
        return Guess::Http;
    }
    Guess::Other
}

/// Whether `buf` holds the empty line that ends a request head (a line
/// end, then an optional CR, then LF: `\r\n\r\n`, `\n\n`, `\n\r\n`).
fn has_head_end(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

/// Parses a complete request head; `None` if httparse still wants more.
fn http_head(buf: &[u8]) -> Result<Option<HttpHead>, SniffError> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(buf).map_err(|e| {
        SniffError::BadHttp(match e {
            httparse::Error::TooManyHeaders => "too many headers",
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::NewLine => "invalid line ending",
            httparse::Error::Token => "invalid token",
            httparse::Error::Version => "invalid version",
            _ => "invalid request",
        })
    })?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    if head_len > MAX_HTTP_HEAD {
        return Err(SniffError::TooLarge("HTTP request head"));
    }
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default();
    let target_authority = request_target_authority(&method, target)?;
    let mut host = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(SniffError::BadHttp("more than one Host header"));
            }
            host = Some(trim_ows(h.value).to_vec());
        }
    }
    Ok(Some(HttpHead {
        method,
        target_authority,
        host,
    }))
}

/// `v` without leading and trailing spaces and tabs (HTTP optional
/// whitespace).
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// The authority named by the request target: absolute-form
/// (`scheme://[userinfo@]authority/…`) or authority-form (CONNECT);
/// `None` for origin-form (`/…`) and asterisk-form (`*`).
fn request_target_authority(method: &str, target: &str) -> Result<Option<Vec<u8>>, SniffError> {
    if method == "CONNECT" {
        if target.is_empty() || target.contains(['/', '?', '#', '@']) {
            return Err(SniffError::BadHttp(
                "CONNECT needs an authority-form target",
            ));
        }
        return Ok(Some(target.as_bytes().to_vec()));
    }
    if target.starts_with('/') || target == "*" {
        return Ok(None);
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(SniffError::BadHttp("unrecognised request target form"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(SniffError::BadHttp("invalid URL scheme"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Userinfo ends at the last '@' of the authority.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return Err(SniffError::BadHttp("absolute-form target without a host"));
    }
    Ok(Some(authority.as_bytes().to_vec()))
}

/// Progress of the ClientHello reassembly.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hello {
    Complete(ClientHello),
    /// Not before the buffer holds at least this many bytes.
    NeedAtLeast(usize),
}

/// Reassembles the handshake message from the TLS records at the start of
/// `buf` and parses it once complete.
fn client_hello(buf: &[u8]) -> Result<Hello, SniffError> {
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut records = 0;
    loop {
        if hs.len() >= 4 {
            if hs[0] != HS_CLIENT_HELLO {
                return Err(SniffError::BadClientHello(
                    "first handshake message is not a ClientHello",
                ));
            }
            let len = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
            if len > MAX_CLIENT_HELLO {
                return Err(SniffError::TooLarge("TLS ClientHello"));
            }
            if hs.len() >= 4 + len {
                return parse_client_hello(&hs[4..4 + len]).map(Hello::Complete);
            }
        }
        let Some(header) = buf.get(pos..pos + 5) else {
            return Ok(Hello::NeedAtLeast(pos + 5));
        };
        if header[0] != TLS_HANDSHAKE {
            return Err(SniffError::BadClientHello(
                "non-handshake record inside the ClientHello",
            ));
        }
        if header[1] != 3 {
            return Err(SniffError::BadClientHello("record version is not TLS"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(SniffError::BadClientHello("empty handshake record"));
        }
        if len > TLS_MAX_FRAGMENT {
            return Err(SniffError::BadClientHello("record longer than 2^14"));
        }
        records += 1;
        if records > MAX_HELLO_RECORDS {
            return Err(SniffError::TooLarge("TLS ClientHello record count"));
        }
        let end = pos + 5 + len;
        let Some(fragment) = buf.get(pos + 5..end) else {
            return Ok(Hello::NeedAtLeast(end));
        };
        if hs.len() + fragment.len() > MAX_CLIENT_HELLO + 4 + TLS_MAX_FRAGMENT {
            return Err(SniffError::TooLarge("TLS ClientHello"));
        }
        hs.extend_from_slice(fragment);
        pos = end;
    }
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, why: &'static str) -> Result<&'a [u8], SniffError> {
        if self.data.len() < n {
            return Err(SniffError::BadClientHello(why));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u8(&mut self, why: &'static str) -> Result<u8, SniffError> {
        Ok(self.take(1, why)?[0])
    }

    fn u16(&mut self, why: &'static str) -> Result<u16, SniffError> {
        let b = self.take(2, why)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self, why: &'static str) -> Result<&'a [u8], SniffError> {
        let n = usize::from(self.u8(why)?);
        self.take(n, why)
    }

    fn vec16(&mut self, why: &'static str) -> Result<&'a [u8], SniffError> {
        let n = usize::from(self.u16(why)?);
        self.take(n, why)
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Parses a ClientHello body (RFC 8446 §4.1.2; TLS 1.0–1.2 share the
/// layout) for its server_name and the presence of ECH.
fn parse_client_hello(body: &[u8]) -> Result<ClientHello, SniffError> {
    let mut c = Cursor { data: body };
    let version = c.u16("truncated version")?;
    if version >> 8 != 3 {
        return Err(SniffError::BadClientHello("client version is not TLS"));
    }
    c.take(32, "truncated random")?;
    if c.vec8("truncated session id")?.len() > 32 {
        return Err(SniffError::BadClientHello("session id longer than 32"));
    }
    let suites = c.vec16("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(SniffError::BadClientHello("bad cipher suite list"));
    }
    if c.vec8("truncated compression methods")?.is_empty() {
        return Err(SniffError::BadClientHello("no compression method"));
    }
    let mut hello = ClientHello::default();
    if c.is_empty() {
        return Ok(hello); // No extensions (TLS 1.0–1.2 allow it).
    }
    let mut exts = Cursor {
        data: c.vec16("truncated extensions")?,
    };
    if !c.is_empty() {
        return Err(SniffError::BadClientHello("bytes after the extensions"));
    }
    let mut seen: Vec<u16> = Vec::new();
    while !exts.is_empty() {
        let ty = exts.u16("truncated extension")?;
        let data = exts.vec16("truncated extension")?;
        if seen.contains(&ty) {
            return Err(SniffError::BadClientHello("duplicate extension"));
        }
        seen.push(ty);
        match ty {
            EXT_SERVER_NAME => hello.sni = Some(server_name(data)?),
            EXT_ECH => hello.ech = true,
            _ => {}
        }
    }
    Ok(hello)
}

/// The one `host_name` of a server_name extension (RFC 6066 §3).
fn server_name(data: &[u8]) -> Result<Vec<u8>, SniffError> {
    let mut c = Cursor { data };
    let mut list = Cursor {
        data: c.vec16("truncated server name list")?,
    };
    if !c.is_empty() || list.is_empty() {
        return Err(SniffError::BadClientHello("bad server name list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let ty = list.u8("truncated server name")?;
        let name = list.vec16("truncated server name")?;
        if ty == 0 {
            if host.is_some() {
                return Err(SniffError::BadClientHello("more than one host_name"));
            }
            if name.is_empty() {
                return Err(SniffError::BadClientHello("empty host_name"));
            }
            host = Some(name.to_vec());
        }
    }
    host.ok_or(SniffError::BadClientHello(
        "server_name without a host_name",
    ))
}

/// Test helpers: well-formed ClientHellos to feed the sniffer (used by
/// the unit tests here; the integration tests carry their own copy).
#[cfg(test)]
pub(crate) mod build {
    /// A ClientHello handshake message (type, length, body) with these
    /// extensions (`(type, data)`).
    pub fn hello_msg(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(32);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        let mut ext_bytes = Vec::new();
        for (ty, data) in exts {
            ext_bytes.extend_from_slice(&ty.to_be_bytes());
            ext_bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext_bytes.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext_bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext_bytes);
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// A server_name extension body naming `host`.
    pub fn sni_ext(host: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend_from_slice(&(host.len() as u16).to_be_bytes());
        entry.extend_from_slice(host);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        data
    }

    /// `msg` cut into TLS handshake records of at most `chunk` bytes.
    pub fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(chunk) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// A ClientHello for `host` with `pad` bytes of padding extension, in
    /// records of at most `chunk` bytes.
    pub fn client_hello(host: &str, pad: usize, chunk: usize) -> Vec<u8> {
        let mut exts = vec![(0u16, sni_ext(host.as_bytes())), (10, vec![0, 2, 0, 29])];
        if pad > 0 {
            exts.push((21, vec![0; pad]));
        }
        records(&hello_msg(&exts), chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{client_hello, hello_msg, records, sni_ext};
    use super::*;

    fn sniff_all(data: &[u8]) -> Result<Progress, SniffError> {
        Sniffer::new().push(data)
    }

    fn sniff_bytewise(data: &[u8]) -> Result<Progress, SniffError> {
        let mut s = Sniffer::new();
        let mut last = Progress::NeedMore;
        for b in data {
            last = s.push(std::slice::from_ref(b))?;
            if let Progress::Done(_) = last {
                break;
            }
        }
        Ok(last)
    }

    fn tls_sni(p: Progress) -> Option<Vec<u8>> {
        match p {
            Progress::Done(FirstBytes::Tls(h)) => h.sni,
            other => panic!("not a complete ClientHello: {other:?}"),
        }
    }

    #[test]
    fn client_hello_sni_in_one_record() {
        let ch = client_hello("api.example.test", 0, 16384);
        assert_eq!(
            tls_sni(sniff_all(&ch).unwrap()).as_deref(),
            Some(&b"api.example.test"[..])
        );
    }

    #[test]
    fn client_hello_split_across_records_and_segments() {
        // 3000-byte hello in 700-byte records: five records.
        let ch = client_hello("api.example.test", 3000, 700);
        assert!(ch.iter().filter(|&&b| b == 22).count() >= 5);
        assert_eq!(
            tls_sni(sniff_all(&ch).unwrap()).as_deref(),
            Some(&b"api.example.test"[..])
        );
        // Fed a byte at a time (TCP segments of one byte).
        assert_eq!(
            tls_sni(sniff_bytewise(&ch).unwrap()).as_deref(),
            Some(&b"api.example.test"[..])
        );
        // Records cut inside the handshake header and inside the SNI.
        for chunk in [1, 2, 3, 5, 45, 50] {
            let ch = client_hello("x.example.test", 0, chunk);
            let p = if chunk == 1 {
                // 1-byte records exceed the record cap: refused, not parsed.
                assert!(matches!(sniff_all(&ch), Err(SniffError::TooLarge(_))));
                continue;
            } else {
                sniff_all(&ch)
            };
            match p {
                Ok(p) => assert_eq!(tls_sni(p).as_deref(), Some(&b"x.example.test"[..])),
                Err(SniffError::TooLarge(_)) => assert!(ch.len() / (chunk + 5) > 64),
                Err(e) => panic!("chunk {chunk}: {e}"),
            }
        }
        // Segments cut at every offset of a two-record hello.
        let ch = client_hello("seg.example.test", 100, 90);
        for cut in 1..ch.len() {
            let mut s = Sniffer::new();
            assert_eq!(s.push(&ch[..cut]).unwrap(), Progress::NeedMore, "cut {cut}");
            assert_eq!(
                tls_sni(s.push(&ch[cut..]).unwrap()).as_deref(),
                Some(&b"seg.example.test"[..])
            );
        }
    }

    #[test]
    fn bytes_after_the_hello_are_kept() {
        let mut ch = client_hello("a.example.test", 0, 16384);
        ch.extend_from_slice(&[23, 3, 3, 0, 2, 0xaa, 0xbb]);
        let mut s = Sniffer::new();
        assert!(matches!(
            s.push(&ch).unwrap(),
            Progress::Done(FirstBytes::Tls(_))
        ));
        assert_eq!(s.into_buffered(), ch);
    }

    #[test]
    fn client_hello_without_sni_or_extensions() {
        let msg = hello_msg(&[(10, vec![0, 2, 0, 29])]);
        assert_eq!(tls_sni(sniff_all(&records(&msg, 16384)).unwrap()), None);
        // No extensions block at all (TLS 1.2 allows it).
        let mut msg = hello_msg(&[]);
        msg.truncate(msg.len() - 2);
        let body_len = (msg.len() - 4) as u32;
        msg[1..4].copy_from_slice(&body_len.to_be_bytes()[1..]);
        assert_eq!(tls_sni(sniff_all(&records(&msg, 16384)).unwrap()), None);
    }

    #[test]
    fn ech_is_noticed() {
        let msg = hello_msg(&[(0, sni_ext(b"public.example.test")), (0xfe0d, vec![0; 40])]);
        match sniff_all(&records(&msg, 16384)).unwrap() {
            Progress::Done(FirstBytes::Tls(h)) => {
                assert!(h.ech);
                assert_eq!(h.sni.as_deref(), Some(&b"public.example.test"[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_client_hellos_are_refused() {
        let bad = |exts: &[(u16, Vec<u8>)]| sniff_all(&records(&hello_msg(exts), 16384));
        // Two server_name extensions, two host_names, empty name, bad list length.
        assert!(bad(&[(0, sni_ext(b"a.test")), (0, sni_ext(b"b.test"))]).is_err());
        let mut two = sni_ext(b"a.test");
        two.extend_from_slice(&[0, 0, 6]);
        two.extend_from_slice(b"b.test");
        let list_len = (two.len() - 2) as u16;
        two[..2].copy_from_slice(&list_len.to_be_bytes());
        assert!(bad(&[(0, two)]).is_err());
        assert!(bad(&[(0, sni_ext(b""))]).is_err());
        assert!(bad(&[(0, vec![0, 9, 0, 0, 1, b'a'])]).is_err());
        assert!(bad(&[(0, vec![])]).is_err());
        // Another handshake message than ClientHello.
        let mut msg = hello_msg(&[]);
        msg[0] = 2;
        assert!(sniff_all(&records(&msg, 16384)).is_err());
        // An alert record in the middle.
        let ch = client_hello("a.example.test", 0, 40);
        let mut spliced = ch[..45].to_vec();
        spliced.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        spliced.extend_from_slice(&ch[45..]);
        assert!(sniff_all(&spliced).is_err());
        // Empty record, oversize record, oversize handshake length.
        assert!(sniff_all(&[22, 3, 1, 0, 0]).is_err());
        assert!(sniff_all(&[22, 3, 1, 0x40, 0x01]).is_err());
        assert!(matches!(
            sniff_all(&[22, 3, 1, 0, 4, 1, 0x01, 0, 0]),
            Err(SniffError::TooLarge(_))
        ));
        // A hello body shorter than its fixed fields.
        let mut short = vec![1, 0, 0, 10, 3, 3];
        short.extend_from_slice(&[0; 8]);
        assert!(sniff_all(&records(&short, 100)).is_err());
    }

    #[test]
    fn truncated_hello_is_truncated_and_huge_is_too_large() {
        let ch = client_hello("a.example.test", 0, 16384);
        let mut s = Sniffer::new();
        assert_eq!(s.push(&ch[..ch.len() - 1]).unwrap(), Progress::NeedMore);
        assert!(matches!(s.finish(), Err(SniffError::Truncated(_))));
        let huge = client_hello("a.example.test", MAX_CLIENT_HELLO, 16384);
        assert!(matches!(sniff_all(&huge), Err(SniffError::TooLarge(_))));
        // The same, a chunk at a time: refused once the cap is reached.
        let mut s = Sniffer::new();
        let mut result = Ok(Progress::NeedMore);
        for part in huge.chunks(1000) {
            result = s.push(part);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(SniffError::TooLarge(_))));
    }

    #[test]
    fn non_tls_after_0x16() {
        assert_eq!(sniff_all(&[22]).unwrap(), Progress::NeedMore);
        assert_eq!(sniff_all(&[22, 3]).unwrap(), Progress::NeedMore);
        assert_eq!(
            sniff_all(&[22, 7]).unwrap(),
            Progress::Done(FirstBytes::Other)
        );
        assert_eq!(
            sniff_all(&[22, 3, 9, 0, 1]).unwrap(),
            Progress::Done(FirstBytes::Other)
        );
        let mut s = Sniffer::new();
        s.push(&[22]).unwrap();
        assert_eq!(s.finish().unwrap(), FirstBytes::Other);
    }

    fn http(data: &[u8]) -> HttpHead {
        match sniff_all(data) {
            Ok(Progress::Done(FirstBytes::Http(h))) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(data)),
        }
    }

    #[test]
    fn http_host_with_port_and_forms() {
        let h = http(b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHOST:  Api.Example.Test.:8080 \r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.host.as_deref(), Some(&b"Api.Example.Test.:8080"[..]));
        assert_eq!(h.target_authority, None);
        let h =
            http(b"GET http://user:pw@evil.test:81/p?q HTTP/1.1\r\nHost: api.example.test\r\n\r\n");
        assert_eq!(h.target_authority.as_deref(), Some(&b"evil.test:81"[..]));
        let h = http(b"GET HTTPS://[2001:db8::1]:443 HTTP/1.0\r\n\r\n");
        assert_eq!(
            h.target_authority.as_deref(),
            Some(&b"[2001:db8::1]:443"[..])
        );
        assert_eq!(h.host, None);
        let h = http(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n");
        assert_eq!(h.target_authority.as_deref(), Some(&b"evil.test:443"[..]));
        let h = http(b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert_eq!(h.target_authority, None);
        // Bare LF line endings and leading empty lines, as lenient servers read them.
        let h = http(b"\r\n\nGET / HTTP/1.1\nHost: a.test\n\n");
        assert_eq!(h.host.as_deref(), Some(&b"a.test"[..]));
    }

    #[test]
    fn http_head_split_and_body_kept() {
        let req = b"POST /u HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: 5\r\n\r\nhello";
        let mut s = Sniffer::new();
        for (i, b) in req.iter().enumerate() {
            match s.push(std::slice::from_ref(b)).unwrap() {
                Progress::NeedMore => assert!(i < req.len() - 6, "done only at the empty line"),
                Progress::Done(FirstBytes::Http(h)) => {
                    assert_eq!(h.host.as_deref(), Some(&b"a.example.test"[..]));
                    assert_eq!(i, req.len() - 6);
                    break;
                }
                Progress::Done(other) => panic!("{other:?}"),
            }
        }
        let mut s = Sniffer::new();
        assert!(matches!(
            s.push(req).unwrap(),
            Progress::Done(FirstBytes::Http(_))
        ));
        assert_eq!(s.buffered(), req);
    }

    #[test]
    fn http_errors() {
        let err = |d: &[u8]| sniff_all(d).unwrap_err();
        assert!(matches!(
            err(b"GET / HTTP/1.1\r\nHost: a.test\r\nhost: b.test\r\n\r\n"),
            SniffError::BadHttp(_)
        ));
        assert!(matches!(
            err(b"GET evil.test/ HTTP/1.1\r\n\r\n"),
            SniffError::BadHttp(_)
        ));
        assert!(matches!(
            err(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            SniffError::BadHttp(_)
        ));
        assert!(matches!(
            err(b"GET / HTTP/1.1\r\nHost: a.test\r\n evil.test\r\n\r\n"),
            SniffError::BadHttp(_)
        ));
        assert!(matches!(
            err(b"CONNECT /x HTTP/1.1\r\n\r\n"),
            SniffError::BadHttp(_)
        ));
        // An unterminated head beyond the cap.
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_HTTP_HEAD {
            big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(err(&big), SniffError::TooLarge(_)));
        let mut s = Sniffer::new();
        s.push(b"GET / HTTP/1.1\r\nHost: a").unwrap();
        assert!(matches!(s.finish(), Err(SniffError::Truncated(_))));
    }

    #[test]
    fn text_protocols_are_not_http() {
        for d in [
            &b"SET k v\r\n"[..],
            b"PING\r\n",
            b"EHLO me\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.2\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"get  / HTTP/1.1\r\n",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b" GET / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                sniff_all(d).unwrap(),
                Progress::Done(FirstBytes::Other),
                "{:?}",
                String::from_utf8_lossy(d)
            );
        }
        // Prefixes of a request line wait for more.
        for d in [
            &b"G"[..],
            b"GET",
            b"GET /",
            b"GET / HT",
            b"GET / HTTP/1.1\r",
            b"\r\n",
        ] {
            assert_eq!(sniff_all(d).unwrap(), Progress::NeedMore, "{d:?}");
        }
        // ...and are plain TCP if the client closes there.
        let mut s = Sniffer::new();
        s.push(b"GET / HT").unwrap();
        assert_eq!(s.finish().unwrap(), FirstBytes::Other);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut s = Sniffer::new();
            let _ = s.push(&data);
            let _ = s.finish();
        }

        #[test]
        fn never_panics_on_mutated_hellos(
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..6),
            cut in 0usize..400,
            chunk in 20usize..300,
        ) {
            let mut ch = client_hello("p.example.test", 50, chunk);
            for (i, v) in flips {
                let n = ch.len();
                ch[i % n] = v;
            }
            let cut = cut.min(ch.len());
            let mut s = Sniffer::new();
            if s.push(&ch[..cut]).is_ok() {
                let _ = s.push(&ch[cut..]);
            }
            let _ = s.finish();
        }

        #[test]
        fn split_point_never_changes_the_answer(cut in 0usize..200, chunk in 30usize..400) {
            let ch = client_hello("q.example.test", 120, chunk);
            let cut = cut.min(ch.len());
            let mut s = Sniffer::new();
            let first = s.push(&ch[..cut]).unwrap();
            let done = match first {
                Progress::Done(d) => d,
                Progress::NeedMore => match s.push(&ch[cut..]).unwrap() {
                    Progress::Done(d) => d,
                    Progress::NeedMore => panic!("complete hello not recognised"),
                },
            };
            proptest::prop_assert_eq!(done, FirstBytes::Tls(ClientHello {
                sni: Some(b"q.example.test".to_vec()),
                ech: false,
            }));
        }
    }
}
