//! A Unix stream socket split into halves that the runtime watches for reading only.
//!
//! Tokio registers a socket for reading and writing at once, edge-triggered. On a Unix
//! stream socket the kernel signals "room to write" to the writer every time the reader
//! takes a message (`unix_write_space`), so each request a daemon reads woke the client's
//! runtime with a writable event nobody waited for, and each answer the client read woke the
//! daemon's: two wake-ups per exchange where one is needed (`perf trace`: two `epoll_wait`
//! returns per request on both sides, BENCHMARKS.md). Here the socket is registered for
//! reading alone; a write goes straight to the socket, and only a write that finds no room
//! (a large answer, an export stream) registers a second descriptor of the socket for
//! writing, for as long as it waits.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The reading half.
pub struct ReadHalf {
    fd: Arc<AsyncFd<OwnedFd>>,
}

/// The writing half.
pub struct WriteHalf {
    fd: Arc<AsyncFd<OwnedFd>>,
    /// A descriptor of the same socket registered for writing, while a write waits for room.
    waiting: Option<AsyncFd<OwnedFd>>,
}

/// Splits `stream` (put in non-blocking mode here) into halves on the current runtime.
pub fn split(stream: std::os::unix::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    stream.set_nonblocking(true)?;
    let fd = Arc::new(register(OwnedFd::from(stream), Interest::READABLE)?);
    Ok((ReadHalf { fd: fd.clone() }, WriteHalf { fd, waiting: None }))
}

/// Splits a Tokio stream the same way.
pub fn split_tokio(stream: tokio::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    split(stream.into_std()?)
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            match guard.try_io(|fd| recv(fd.get_ref(), unfilled)) {
                Ok(Ok(n)) => {
                    // A short read emptied the socket: the next read waits for an event
                    // instead of finding that out with a call that fails.
                    if n < wanted {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match send(self.fd.get_ref(), data) {
                Ok(n) => {
                    self.waiting = None;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.waiting.is_none() {
                let again = self.fd.get_ref().as_fd().try_clone_to_owned()?;
                self.waiting = Some(register(again, Interest::WRITABLE)?);
            }
            let waiting = self.waiting.as_ref().expect("registered above");
            let mut guard = ready!(waiting.poll_write_ready(cx))?;
            guard.clear_ready();
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let how = rustix::net::Shutdown::Write;
        Poll::Ready(rustix::net::shutdown(self.fd.get_ref(), how).map_err(io::Error::from))
    }
}

fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the registration owns `fd`, so the descriptor stays open and names the same
    // socket for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}

fn recv(fd: &OwnedFd, out: &mut [u8]) -> io::Result<usize> {
    let flags = rustix::net::RecvFlags::DONTWAIT;
    rustix::net::recv(fd, out, flags).map(|(n, _)| n).map_err(io::Error::from)
}

/// Never raises SIGPIPE: a peer that closed is an error here like any other.
fn send(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
    rustix::net::send(fd, data, flags).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// 8 MiB written at once, far more than the socket holds: the writer waits for room
    /// (registered for writing only then) and every byte arrives, in order; after the
    /// writer shuts its side, the reader sees the end.
    #[tokio::test]
    async fn a_write_larger_than_the_socket_waits_for_room_and_arrives_whole() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_a_read, mut a_write) = split(a).unwrap();
        let (mut b_read, _b_write) = split(b).unwrap();
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a_write.write_all(&sent).await.unwrap();
            assert!(a_write.waiting.is_none(), "the registration for writing outlived its wait");
            a_write.shutdown().await.unwrap();
            a_write
        });
        let mut got = Vec::new();
        b_read.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data, "{} bytes arrived of {}", got.len(), data.len());
    }
}
