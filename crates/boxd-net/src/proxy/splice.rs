//! Carrying an allowed connection's bytes both ways without copying them
//! through userspace: `splice(2)` moves them socket → pipe → socket as
//! page references, driven by tokio's readiness (`readable`/`writable` +
//! `try_io`), so a spliced connection costs no thread and no buffer of
//! its own — only two pipes, which hold pages only while bytes are in
//! flight.
//!
//! Owns: the two pipes of one connection and the two pump loops. A
//! half-close (EOF from one side) is passed on as a shutdown of the other
//! side's write half; the other direction goes on until its own EOF. No
//! idle timeout. Never: looks at the bytes, or leaves a pipe fd behind
//! (they are `OwnedFd`s, closed with the connection).
//!
//! When pipes cannot be made (fd limit), the caller falls back to
//! `tokio::io::copy_bidirectional_with_sizes`.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked of one `splice` call (the pipe takes what it can hold).
const CHUNK: usize = 1 << 20;
/// Pipe capacity asked for (the default is 64 KiB; best effort).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// One direction's pipe.
pub(crate) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two fds into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both fds are open and ours alone.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Bigger pipes mean fewer calls per byte; the default works too.
        // SAFETY: F_SETPIPE_SZ on a pipe fd we own.
        let _ = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok(Pipe { r, w })
    }
}

/// The pipes for both directions of one connection.
pub(crate) fn pipes() -> io::Result<(Pipe, Pipe)> {
    Ok((Pipe::new()?, Pipe::new()?))
}

/// One `splice(2)` call, non-blocking on both ends.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: splice between two fds the caller keeps open for the call;
    // null offsets (neither is a file with a position we track).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Moves bytes from `src` to `dst` through `pipe` until `src` ends,
/// adding what reached `dst` to `moved`.
async fn pump(src: &TcpStream, dst: &TcpStream, pipe: &Pipe, moved: &mut u64) -> io::Result<()> {
    loop {
        // The pipe is empty here, so EAGAIN can only mean "src has nothing".
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice_once(src.as_raw_fd(), pipe.w.as_raw_fd(), CHUNK)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // EOF: pass the half-close on.
            return match SockRef::from(dst).shutdown(Shutdown::Write) {
                Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                _ => Ok(()),
            };
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice_once(pipe.r.as_raw_fd(), dst.as_raw_fd(), left)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    left = left.saturating_sub(m);
                    *moved += m as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Splices `client` and `upstream` both ways until both directions have
/// ended; returns the bytes delivered upstream and to the client, and the
/// error that cut the connection, if one did (the other direction is
/// dropped then).
pub(crate) async fn bidirectional(
    client: &TcpStream,
    upstream: &TcpStream,
    (up_pipe, down_pipe): (Pipe, Pipe),
) -> (u64, u64, Option<io::Error>) {
    let (mut up, mut down) = (0u64, 0u64);
    let r = tokio::try_join!(
        pump(client, upstream, &up_pipe, &mut up),
        pump(upstream, client, &down_pipe, &mut down),
    );
    (up, down, r.err())
}
