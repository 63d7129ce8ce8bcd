//! Moving bytes both ways between a client and its backend connection.
//!
//! Written for the LB's common case, a short request and response on a
//! fresh connection, where tokio's `copy_bidirectional` spends more than it
//! must (docs/bench-lb.md):
//! - it zeroes an 8 KiB buffer per direction per connection; here reads go
//!   into one scratch buffer per thread, and only bytes the destination
//!   would not take yet are kept, per connection;
//! - it shuts down the write side of both sockets once both directions are
//!   done, just before they are closed anyway; here only the direction that
//!   ends first passes its EOF on with `shutdown`, and the close sends the
//!   other FIN;
//! - after every read it reads again until the socket says would-block;
//!   here a short read counts as dry, as in haproxy, and the reactor's next
//!   event says when there is more.

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::Shutdown;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One read's worth, per thread.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Splice both ways until both directions have ended; the caller closes
/// both sockets right after.
///
/// The client's first bytes (an HTTP request, a TLS hello) have usually
/// arrived by the time the backend is connected; they are read and sent on
/// at once, as haproxy does, instead of waiting for the reactor to report
/// the fresh sockets ready: that wait is a scheduler round trip per
/// connection under load (docs/bench-lb.md has the figures).
pub(crate) async fn splice(client: &TcpStream, upstream: &TcpStream) -> io::Result<()> {
    let mut up = Pump::default();
    let mut down = Pump::default();
    up.step(client, upstream, true)?;
    std::future::poll_fn(|cx| {
        let up_done = up.poll(cx, client, upstream, !down.ended);
        let down_done = down.poll(cx, upstream, client, !up.ended);
        match (up_done, down_done) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction: reads from `src`, writes to `dst`.
#[derive(Default)]
struct Pump {
    /// Read but not yet taken by `dst`; nothing more is read until it is.
    pending: Vec<u8>,
    /// `src` said EOF and everything before it reached `dst`.
    ended: bool,
}

impl Pump {
    /// Ready once this direction has ended. `pass_eof`: shut down `dst`'s
    /// write side when it does (false when the other direction has ended
    /// already and both sockets are about to be closed).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        pass_eof: bool,
    ) -> Poll<io::Result<()>> {
        while !self.ended {
            while !self.pending.is_empty() {
                let n = ready!(poll_write(cx, dst, &self.pending))?;
                self.pending.drain(..n);
            }
            // Readiness first, so a dry socket costs no read; the budget
            // check in it also keeps a busy connection from starving the
            // others.
            ready!(src.poll_read_ready(cx))?;
            self.step(src, dst, pass_eof)?;
        }
        Poll::Ready(Ok(()))
    }

    /// One read from `src`, written on to `dst` as far as it takes it; both
    /// are tried even where tokio has seen no readiness yet (a fresh
    /// socket). A short read means `src` is dry, and tokio is told so, as
    /// haproxy assumes: the next poll waits for the reactor instead of
    /// trying a read that could only say would-block, or, after a response,
    /// an EOF that the reactor reports anyway.
    fn step(&mut self, src: &TcpStream, dst: &TcpStream, pass_eof: bool) -> io::Result<()> {
        SCRATCH_BUF.with_borrow_mut(|buf| {
            let mut short = None;
            let read = attempt(src, Interest::READABLE, || {
                match (&*SockRef::from(src)).read(buf) {
                    Ok(n) if n > 0 && n < buf.len() => {
                        short = Some(n);
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    other => other,
                }
            });
            let n = match (short, read) {
                (Some(n), _) => n,
                (None, Ok(0)) => {
                    self.ended = true;
                    if pass_eof {
                        SockRef::from(dst).shutdown(Shutdown::Write)?;
                    }
                    return Ok(());
                }
                (None, Ok(n)) => n,
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                (None, Err(e)) => return Err(e),
            };
            let mut sent = 0;
            while sent < n {
                match send(dst, &buf[sent..n]) {
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            self.pending.extend_from_slice(&buf[sent..n]);
            Ok(())
        })
    }
}

/// `op`, one syscall on `sock`, inside tokio's `try_io`, so that a
/// would-block clears the readiness tokio had seen before the call (one
/// that arrives meanwhile is kept); where tokio has seen none, `op` runs
/// anyway, as there is nothing to clear.
fn attempt<R>(
    sock: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    let mut tried = false;
    let result = sock.try_io(interest, || {
        tried = true;
        op()
    });
    if tried {
        result
    } else {
        op()
    }
}

/// One `send` to `dst`, tried past tokio's readiness (see [`attempt`]).
fn send(dst: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    match attempt(dst, Interest::WRITABLE, || {
        SockRef::from(dst).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }) {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        other => other,
    }
}

fn poll_write(cx: &mut Context<'_>, dst: &TcpStream, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        ready!(dst.poll_write_ready(cx))?;
        match send(dst, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return Poll::Ready(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair: (the end `splice` gets, the far end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(listener.accept(), far);
        (near.unwrap().0, far.unwrap())
    }

    /// The client's and the backend's ends of a running splice.
    async fn spliced() -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let (lb_client, client) = pair().await;
        let (lb_upstream, backend) = pair().await;
        let task = tokio::spawn(async move { splice(&lb_client, &lb_upstream).await });
        (client, backend, task)
    }

    /// A splice that stops moving bytes would hang the test, not fail it.
    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(20), f)
            .await
            .expect("the exchange stalled")
    }

    #[tokio::test]
    async fn carries_a_large_exchange_and_half_closes() {
        within(large_exchange()).await
    }

    async fn large_exchange() {
        let (mut client, mut backend, spliced) = spliced().await;
        // Larger than the scratch buffer and the socket buffers, so both
        // directions meet a full destination and keep bytes pending.
        let request: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let response: Vec<u8> = request.iter().rev().copied().collect();
        let req = request.clone();
        let send = tokio::spawn(async move {
            client.write_all(&req).await.unwrap();
            // Half-close: the request is complete, the response still comes.
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got = Vec::new();
        // The client's EOF reaches the backend as EOF.
        backend.read_to_end(&mut got).await.unwrap();
        assert!(
            got == request,
            "request changed on the way ({} bytes)",
            got.len()
        );
        backend.write_all(&response).await.unwrap();
        drop(backend);
        let back = send.await.unwrap();
        assert!(
            back == response,
            "response changed on the way ({} bytes)",
            back.len()
        );
        spliced.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn backend_eof_reaches_the_client_while_it_still_sends() {
        within(backend_eof_first()).await
    }

    async fn backend_eof_first() {
        let (mut client, mut backend, spliced) = spliced().await;
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut req = [0u8; 18];
        backend.read_exact(&mut req).await.unwrap();
        backend
            .write_all(b"HTTP/1.0 200 OK\r\n\r\nok")
            .await
            .unwrap();
        backend.shutdown().await.unwrap();
        let mut resp = Vec::new();
        client.read_to_end(&mut resp).await.unwrap();
        assert_eq!(resp, b"HTTP/1.0 200 OK\r\n\r\nok");
        // The client's side is still open, so the splice is too.
        assert!(!spliced.is_finished());
        client.write_all(b"late").await.unwrap();
        let mut late = [0u8; 4];
        backend.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"late");
        drop(client);
        spliced.await.unwrap().unwrap();
    }
}
