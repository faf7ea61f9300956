//! The box's side of an intercepted connection as one stream: the bytes
//! the proxy already read while sniffing (the ClientHello) are replayed
//! first, then the socket is read. Counts every byte read from and
//! written to the box (TLS records included), for the connection's audit
//! event.
//!
//! Owns: that replay and the counts. Never: interprets the bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Byte counts of a [`Prefixed`] stream, readable after the stream is
/// gone (a failed handshake consumes it).
#[derive(Debug, Default)]
pub struct Counts {
    /// Bytes handed to the reader (prefix included).
    read: AtomicU64,
    /// Bytes written to the inner stream.
    written: AtomicU64,
}

impl Counts {
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// `prefix`, then `inner`.
pub struct Prefixed<'c, S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
    counts: &'c Counts,
}

impl<'c, S> Prefixed<'c, S> {
    pub fn new(prefix: Vec<u8>, inner: S, counts: &'c Counts) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
            counts,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            this.counts.read.fetch_add(n as u64, Ordering::Relaxed);
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            this.counts.read.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_the_prefix_then_reads_on_and_counts() {
        let (a, mut b) = tokio::io::duplex(64);
        let counts = Counts::default();
        let mut p = Prefixed::new(b"hello ".to_vec(), a, &counts);
        b.write_all(b"world").await.unwrap();
        drop(b);
        let mut got = Vec::new();
        p.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");
        assert_eq!(counts.read(), 11);
    }
}
