//! A spawned process's stdout and stderr, read as one stream of chunks in
//! the order the pipes became readable.
//!
//! Both pipes sit in one edge-triggered epoll set of their own that is asked
//! for one event at a time. The kernel keeps that set's ready list in the
//! order the pipes became readable (a write queues its pipe at the tail
//! unless it is queued already), so a process that writes stdout then
//! stderr is read stdout first, and the other way round; each chunk is
//! handed over as soon as it is read, and its pipe is queued again behind
//! the other if it still has something to say. (Level-triggered, a pipe
//! would be queued again at every event, before it is read, and so stay
//! ahead of the other pipe's next write.) Two pipes cannot say more: once both hold data, which of
//! their bytes came first is lost in the kernel. This module never buffers
//! one stream, never holds a chunk back for the other, and never prefers
//! one pipe by a fixed or random rule.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Which of the process's output pipes a chunk was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// What each pipe is registered for.
const READ: EpollFlags = EpollFlags::EPOLLIN.union(EpollFlags::EPOLLET);

/// The epoll set, registered with tokio's reactor (it is readable while
/// one of its pipes is).
struct Set(Epoll);

impl AsRawFd for Set {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// A process's stdout and stderr pipes, read through one epoll set.
pub struct OutputPipes {
    set: AsyncFd<Set>,
    /// Indexed like [`STREAMS`]; `None` once that pipe reached its end.
    pipes: [Option<OwnedFd>; 2],
}

fn errno(context: &str, e: Errno) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{context}: {e}"))
}

impl OutputPipes {
    /// Takes the read ends of a process's stdout and stderr pipes.
    pub fn new(stdout: impl Into<OwnedFd>, stderr: impl Into<OwnedFd>) -> io::Result<Self> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| errno("epoll_create", e))?;
        let pipes = [stdout.into(), stderr.into()];
        for (i, fd) in pipes.iter().enumerate() {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|e| errno("pipe O_NONBLOCK", e))?;
            epoll
                .add(fd, EpollEvent::new(READ, i as u64))
                .map_err(|e| errno("epoll_ctl", e))?;
        }
        // SAFETY: `Set` owns the epoll descriptor and never closes or
        // replaces it, so it stays the same open file for the AsyncFd's life.
        let set = unsafe { AsyncFd::register_with_interest(Set(epoll), Interest::READABLE) }?;
        let [out, err] = pipes;
        Ok(OutputPipes {
            set,
            pipes: [Some(out), Some(err)],
        })
    }

    /// Whether either pipe can still deliver data.
    pub fn is_open(&self) -> bool {
        self.pipes.iter().any(Option::is_some)
    }

    /// The next chunk (at most `buf.len()` bytes, in `buf`; `buf` must not
    /// be empty) and the pipe it came from; `None` once both pipes reached their end. A read error
    /// ends that pipe like its end would. Cancel-safe: data is only taken
    /// from a pipe in the same poll that returns it.
    pub async fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<(Stream, usize)>> {
        loop {
            if !self.is_open() {
                return Ok(None);
            }
            let mut ready = self.set.readable().await?;
            let mut event = [EpollEvent::empty()];
            let n = match ready.get_inner().0.wait(&mut event, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(errno("epoll_wait", e)),
            };
            if n == 0 {
                ready.clear_ready();
                continue;
            }
            let i = event[0].data() as usize;
            let Some(fd) = self.pipes.get(i).and_then(Option::as_ref) else {
                continue;
            };
            match nix::unistd::read(fd, buf) {
                Ok(0) => self.close(i),
                Ok(n) => {
                    // Queue the pipe again only now, after the read: if it
                    // still holds data (or its writers are gone) it goes to
                    // the tail, behind a pipe that became readable meanwhile,
                    // and neither pipe starves the other. Edge-triggered
                    // alone, leftover data or an end that came with the data
                    // just read would never be announced.
                    let mut again = EpollEvent::new(READ, i as u64);
                    self.set
                        .get_ref()
                        .0
                        .modify(fd, &mut again)
                        .map_err(|e| errno("epoll_ctl", e))?;
                    return Ok(Some((STREAMS[i], n)));
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => self.close(i),
            }
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(fd) = self.pipes[i].take() {
            // Closing the descriptor drops it from the set anyway; deleting
            // it first only makes that explicit.
            let _ = self.set.get_ref().0.delete(fd.as_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pipe() -> (OwnedFd, std::fs::File) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        (r, std::fs::File::from(w))
    }

    #[tokio::test]
    async fn chunks_come_in_the_order_the_pipes_became_readable() {
        let ((out_r, mut out_w), (err_r, mut err_w)) = (pipe(), pipe());
        let mut pipes = OutputPipes::new(out_r, err_r).expect("pipes");
        let mut buf = [0u8; 64];
        // Both pipes hold data before each read, written in alternating
        // order: only the order they became readable tells them apart.
        for round in 0..50u32 {
            let (first, second) = if round % 2 == 0 {
                ((&mut out_w, Stream::Stdout), (&mut err_w, Stream::Stderr))
            } else {
                ((&mut err_w, Stream::Stderr), (&mut out_w, Stream::Stdout))
            };
            first.0.write_all(b"1").expect("write");
            second.0.write_all(b"2").expect("write");
            for (want, byte) in [(first.1, b'1'), (second.1, b'2')] {
                let (got, n) = pipes.next(&mut buf).await.expect("read").expect("open");
                assert_eq!((got, &buf[..n]), (want, &[byte][..]), "round {round}");
            }
        }
        drop((out_w, err_w));
        assert_eq!(pipes.next(&mut buf).await.expect("read"), None);
    }

    #[tokio::test]
    async fn more_than_a_buffer_is_read_to_its_end_and_the_other_pipe_still_gets_its_turn() {
        let ((out_r, mut out_w), (err_r, mut err_w)) = (pipe(), pipe());
        let mut pipes = OutputPipes::new(out_r, err_r).expect("pipes");
        let writer = std::thread::spawn(move || out_w.write_all(&vec![b'o'; 1 << 20]));
        err_w.write_all(b"e").expect("write");
        drop(err_w);
        let (mut out, mut err) = (0usize, Vec::new());
        let mut buf = [0u8; 4096];
        while let Some((stream, n)) = pipes.next(&mut buf).await.expect("read") {
            match stream {
                Stream::Stdout => out += n,
                Stream::Stderr => err.extend_from_slice(&buf[..n]),
            }
        }
        writer.join().expect("writer").expect("write");
        assert_eq!((out, err), (1 << 20, b"e".to_vec()));
    }
}
