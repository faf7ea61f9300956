//! Splits an `exec-stream` body into the command's output and the trailer
//! that ends it (`docs/UPSTASH_API.md` §3.1):
//!
//! ```text
//! <raw output bytes>event: exit\ndata: {"exit_code":N,"cpu_ns":N}\n\n
//! ```
//!
//! or `event: error\ndata: {"error":"…"}\n\n`. Owns only that parsing: it
//! never does I/O. Output is released as soon as it cannot be the start of
//! a trailer; only a possible trailer prefix is held back. Stricter than
//! the SDKs in one way that matters for a terminal: text that merely looks
//! like a trailer (a command printing `event: exit`) is output unless it is
//! a complete, well-formed trailer at the very end of the stream.

use boxd_api::{ErrorBody, ExitEvent};

const EXIT: &[u8] = b"event: exit\n";
const ERROR: &[u8] = b"event: error\n";
const DATA: &[u8] = b"data:";
/// A held-back candidate longer than this is output, not a trailer.
const MAX_TRAILER: usize = 64 * 1024;

/// How the stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Trailer {
    Exit(ExitEvent),
    Error(String),
}

/// What a byte string starting at a candidate position can be.
#[derive(Debug, PartialEq)]
enum Candidate {
    /// Could still become a trailer when more bytes arrive.
    Partial,
    /// A complete trailer that ends exactly at the end of the buffer.
    Complete(Trailer),
    /// Cannot be the trailer.
    No,
}

fn classify(s: &[u8]) -> Candidate {
    let mut partial = false;
    for marker in [EXIT, ERROR] {
        if s.len() < marker.len() {
            partial |= marker.starts_with(s);
            continue;
        }
        if !s.starts_with(marker) {
            continue;
        }
        let rest = &s[marker.len()..];
        if rest.len() < DATA.len() {
            return if DATA.starts_with(rest) {
                Candidate::Partial
            } else {
                Candidate::No
            };
        }
        if !rest.starts_with(DATA) {
            return Candidate::No;
        }
        let data = &rest[DATA.len()..];
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            return if s.len() > MAX_TRAILER {
                Candidate::No
            } else {
                Candidate::Partial
            };
        };
        return match &data[nl + 1..] {
            [] => Candidate::Partial,
            [b'\n'] => parse_data(marker, &data[..nl]),
            _ => Candidate::No,
        };
    }
    if partial {
        Candidate::Partial
    } else {
        Candidate::No
    }
}

fn parse_data(marker: &[u8], json: &[u8]) -> Candidate {
    let json = json.trim_ascii();
    if marker == EXIT {
        #[derive(serde::Deserialize)]
        struct Lenient {
            exit_code: Option<i32>,
            cpu_ns: Option<u64>,
        }
        match serde_json::from_slice::<Lenient>(json) {
            Ok(l) => Candidate::Complete(Trailer::Exit(ExitEvent {
                exit_code: l.exit_code.unwrap_or(0),
                cpu_ns: l.cpu_ns.unwrap_or(0),
            })),
            Err(_) => Candidate::No,
        }
    } else {
        match serde_json::from_slice::<ErrorBody>(json) {
            Ok(e) => Candidate::Complete(Trailer::Error(e.error)),
            Err(_) => Candidate::No,
        }
    }
}

/// Feed it the body's chunks in order; it returns the bytes that are
/// certainly output.
#[derive(Debug, Default)]
pub struct TrailerParser {
    held: Vec<u8>,
}

impl TrailerParser {
    pub fn new() -> TrailerParser {
        TrailerParser::default()
    }

    /// Adds a chunk; returns the output it releases (possibly empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(off) = self.held[start..].iter().position(|&b| b == b'e') {
            let at = start + off;
            match classify(&self.held[at..]) {
                Candidate::No => start = at + 1,
                Candidate::Partial | Candidate::Complete(_) => {
                    return self.held.drain(..at).collect();
                }
            }
        }
        std::mem::take(&mut self.held)
    }

    /// The stream ended: returns the remaining output and the trailer, if
    /// the stream ended with one.
    pub fn finish(mut self) -> (Vec<u8>, Option<Trailer>) {
        match classify(&self.held) {
            Candidate::Complete(t) => (Vec::new(), Some(t)),
            _ => (std::mem::take(&mut self.held), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in chunks of `n` bytes; returns output and trailer.
    fn run(body: &[u8], n: usize) -> (Vec<u8>, Option<Trailer>) {
        let mut p = TrailerParser::new();
        let mut out = Vec::new();
        for chunk in body.chunks(n.max(1)) {
            out.extend(p.feed(chunk));
        }
        let (rest, t) = p.finish();
        out.extend(rest);
        (out, t)
    }

    fn exit(code: i32, cpu: u64) -> Option<Trailer> {
        Some(Trailer::Exit(ExitEvent {
            exit_code: code,
            cpu_ns: cpu,
        }))
    }

    #[test]
    fn output_and_exit_at_every_chunk_size() {
        let body =
            b"hello\nevery event: ends\nevent: exit\ndata: {\"exit_code\":3,\"cpu_ns\":42}\n\n";
        for n in 1..=body.len() {
            let (out, t) = run(body, n);
            assert_eq!(out, b"hello\nevery event: ends\n", "chunk size {n}");
            assert_eq!(t, exit(3, 42), "chunk size {n}");
        }
    }

    #[test]
    fn error_trailer() {
        let body = b"partial outevent: error\ndata: {\"error\":\"box was deleted\"}\n\n";
        for n in 1..=body.len() {
            let (out, t) = run(body, n);
            assert_eq!(out, b"partial out");
            assert_eq!(t, Some(Trailer::Error("box was deleted".into())));
        }
    }

    #[test]
    fn output_is_released_as_soon_as_it_cannot_be_a_trailer() {
        let mut p = TrailerParser::new();
        assert_eq!(p.feed(b"abc"), b"abc");
        // "eve" could start a trailer: held back.
        assert_eq!(p.feed(b"x eve"), b"x ");
        // "evening" cannot: released.
        assert_eq!(p.feed(b"ning\n"), b"evening\n");
        assert_eq!(p.feed(b"event: e"), b"");
        assert_eq!(p.feed(b"xit\nda"), b"");
        assert_eq!(p.feed(b"ta: {\"exit_code\":0,"), b"");
        assert_eq!(p.feed(b"\"cpu_ns\":1}\n"), b"");
        assert_eq!(p.feed(b"\n"), b"");
        assert_eq!(p.finish(), (Vec::new(), exit(0, 1)));
    }

    #[test]
    fn a_trailer_lookalike_followed_by_more_output_is_output() {
        let fake = b"event: exit\ndata: {\"exit_code\":9,\"cpu_ns\":0}\n\n";
        let mut body = fake.to_vec();
        body.extend_from_slice(b"more\nevent: exit\ndata: {\"exit_code\":0,\"cpu_ns\":5}\n\n");
        for n in 1..=body.len() {
            let (out, t) = run(&body, n);
            let mut want = fake.to_vec();
            want.extend_from_slice(b"more\n");
            assert_eq!(out, want, "chunk size {n}");
            assert_eq!(t, exit(0, 5));
        }
    }

    #[test]
    fn a_marker_with_bad_data_is_output() {
        let (out, t) = run(b"event: exit\nnot data\n", 4);
        assert_eq!(out, b"event: exit\nnot data\n");
        assert_eq!(t, None);
        let (out, t) = run(b"event: exit\ndata: nope\n\n", 3);
        assert_eq!(out, b"event: exit\ndata: nope\n\n");
        assert_eq!(t, None);
    }

    #[test]
    fn missing_fields_default_to_zero_like_the_sdks() {
        let (out, t) = run(b"event: exit\ndata: {}\n\n", 5);
        assert!(out.is_empty());
        assert_eq!(t, exit(0, 0));
    }

    #[test]
    fn eof_without_trailer_flushes_everything() {
        let (out, t) = run(b"cut off mid-stream eve", 7);
        assert_eq!(out, b"cut off mid-stream eve");
        assert_eq!(t, None);
        let (out, t) = run(b"event: exit\ndata: {\"exit_code\":1", 7);
        assert_eq!(out, b"event: exit\ndata: {\"exit_code\":1");
        assert_eq!(t, None);
    }

    #[test]
    fn binary_output_passes_through() {
        let mut body: Vec<u8> = (0..=255u8).collect();
        body.extend_from_slice(b"event: exit\ndata: {\"exit_code\":0,\"cpu_ns\":0}\n\n");
        let (out, t) = run(&body, 13);
        assert_eq!(out, (0..=255u8).collect::<Vec<_>>());
        assert_eq!(t, exit(0, 0));
    }

    #[test]
    fn a_long_unterminated_data_line_is_released() {
        let mut body = b"event: exit\ndata: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_TRAILER + 10));
        let mut p = TrailerParser::new();
        let out = p.feed(&body);
        assert_eq!(out.len(), body.len());
    }
}
