//! Keep-alive connections read when the attack loop wakes anyway, with the
//! kernel's receive timestamp as the response's end.
//!
//! On a VM every sleep and wake-up of the generator's thread costs more
//! than the request itself (a context switch, a timer interrupt, exits to
//! the hypervisor): ~15 µs of CPU each, measured on the 2-core benchmark
//! VM. A keep-alive request cost two of them — the timer at its due time
//! and the response's readiness a few tens of µs later. A pooled
//! connection is therefore not in the runtime's epoll at all: the attack
//! loop wakes at the next due time (or to poll, see [`Ticker::tick`]) and
//! the connections read what arrived meanwhile. The latency still ends
//! when the response arrived, not when it was read: the socket carries the
//! kernel's receive timestamp of each segment (`SO_TIMESTAMPNS`), and
//! [`PolledConn::arrived`] is the one of the last byte read.

use std::io::{self, Write};
use std::mem::{size_of, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::lock::lock;

/// The connections of one attack waiting for the attack loop's next
/// wake-up.
pub(crate) struct Ticker {
    waiting: Mutex<Vec<Waker>>,
    /// Reads that returned bytes since the previous tick.
    reads: AtomicU64,
    /// A socket that asks for receive stamps for as long as the attack
    /// runs. The kernel switches stamping on for everyone while any socket
    /// asks (a static key, flipped by a deferred work item: code patching
    /// on every CPU); when the pool's last connection closes (the server
    /// closed them all) it would flip off, and the responses on the next
    /// connections would carry no stamp until it is back on.
    _stamps: OwnedFd,
}

impl Ticker {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let stamps = unsafe { OwnedFd::from_raw_fd(raw) };
        ask_for_stamps(stamps.as_raw_fd())?;
        Ok(Self {
            waiting: Mutex::default(),
            reads: AtomicU64::default(),
            _stamps: stamps,
        })
    }

    /// Lets every waiting connection try again (they run once the caller
    /// yields).
    pub fn tick(&self) -> Tick {
        let mut woke = false;
        for waker in lock(&self.waiting).drain(..) {
            waker.wake();
            woke = true;
        }
        Tick {
            woke,
            read: self.reads.swap(0, Ordering::Relaxed) > 0,
        }
    }

    fn wait(&self, waker: &Waker) {
        lock(&self.waiting).push(waker.clone());
    }
}

/// What a [`Ticker::tick`] did.
pub(crate) struct Tick {
    /// It woke a waiting connection.
    pub woke: bool,
    /// A read returned bytes since the previous tick (a poll that found
    /// nothing can back off).
    pub read: bool,
}

/// A connected socket outside the runtime's epoll, tried again at each
/// [`Ticker::tick`].
pub(crate) struct PolledConn {
    stream: std::net::TcpStream,
    ticker: Arc<Ticker>,
    arrived: Option<Instant>,
    /// A request was just written: its response cannot be there before
    /// the server has run, so the first read waits for a tick without
    /// trying.
    wrote: bool,
}

impl PolledConn {
    /// A fresh connection to `addr` from `net`. `local` gets the local
    /// address as soon as there is one.
    pub async fn dial(
        net: &zdt_core::netns::Net,
        addr: SocketAddr,
        local: &mut Option<SocketAddr>,
        ticker: Arc<Ticker>,
    ) -> io::Result<Self> {
        let dialed = net.dial(addr, local)?;
        // A handshake that finished inside connect(2) (loopback, a bridge)
        // needs no reactor at all; one still under way waits in the
        // runtime's epoll, so its end is seen when it happens, not at the
        // next tick.
        let stream = if dialed.in_progress {
            dialed.finish().await?.into_std()?
        } else {
            dialed.stream
        };
        ask_for_stamps(stream.as_raw_fd())?;
        Ok(Self {
            stream,
            ticker,
            arrived: None,
            wrote: false,
        })
    }

    /// The connection's local address (what the LB saw as the client).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// When the last bytes read reached this host (the kernel's receive
    /// timestamp; the read itself when the kernel gave none).
    pub fn arrived(&self) -> Option<Instant> {
        self.arrived
    }

    /// One `recvmsg` into `into`: the byte count and, for a read that
    /// returned bytes, how long ago the last of them arrived.
    fn recv(&self, into: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<Duration>)> {
        let mut iov = libc::iovec {
            iov_base: into.as_mut_ptr().cast(),
            iov_len: into.len(),
        };
        // Room for one control message holding a timespec, u64-aligned as
        // cmsghdr needs.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 8]>() as _;
        // SAFETY: `msg` points at `iov` (over `into`, which the kernel only
        // writes) and at `control`, both alive for the call.
        let n = unsafe { libc::recvmsg(self.stream.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n == 0 {
            return Ok((0, None));
        }
        let mut stamp = None;
        // SAFETY: walking the control messages the kernel wrote into
        // `control`, as cmsg(3) describes; a timestamp's data is a timespec.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        // The stamp is on the realtime clock: compare it with that clock
        // now, so only the age crosses over to the monotonic one.
        let age = stamp.and_then(|s| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|now| now.saturating_sub(s))
        });
        Ok((n, Some(age.unwrap_or_default())))
    }
}

/// Asks the kernel to stamp what `fd` receives (`SO_TIMESTAMPNS`).
fn ask_for_stamps(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a socket descriptor and a c_int option of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsyncRead for PolledConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.wrote) {
            this.ticker.wait(cx.waker());
            return Poll::Pending;
        }
        loop {
            // SAFETY: recvmsg only writes the bytes it reports.
            match this.recv(unsafe { buf.unfilled_mut() }) {
                Ok((n, age)) => {
                    // SAFETY: the kernel initialised `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if let Some(age) = age {
                        let now = Instant::now();
                        this.arrived = Some(now.checked_sub(age).unwrap_or(now));
                        this.ticker.reads.fetch_add(1, Ordering::Relaxed);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    this.ticker.wait(cx.waker());
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for PolledConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            // std's write on a socket is send(MSG_NOSIGNAL): no SIGPIPE.
            match (&this.stream).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    this.ticker.wait(cx.waker());
                    return Poll::Pending;
                }
                r => {
                    this.wrote = r.is_ok();
                    return Poll::Ready(r);
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pair of connected sockets: the polled client end and the server's.
    async fn pair(ticker: &Arc<Ticker>) -> (PolledConn, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let net = zdt_core::netns::Net::host();
        let addr = listener.local_addr().unwrap();
        let mut local = None;
        let client = PolledConn::dial(&net, addr, &mut local, ticker.clone());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let conn = client.unwrap();
        assert_eq!(local, conn.local_addr(), "the local address is reported");
        (conn, accepted.unwrap().0)
    }

    /// Ticks every millisecond until `f` is done (at most 5 s).
    async fn ticking<T>(ticker: &Ticker, f: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(f);
        for _ in 0..5000 {
            tokio::select! {
                out = &mut f => return out,
                _ = tokio::time::sleep(Duration::from_millis(1)) => { ticker.tick(); }
            }
        }
        panic!("not done within 5000 ticks");
    }

    #[tokio::test]
    async fn a_refused_dial_fails_with_the_error() {
        let ticker = Arc::new(Ticker::new().unwrap());
        // Bind then drop: the port is closed now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let net = zdt_core::netns::Net::host();
        let mut local = None;
        let dial = PolledConn::dial(&net, addr, &mut local, ticker.clone());
        let err = dial.await.err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(local.is_some(), "a failed dial still has its local address");
    }

    #[tokio::test]
    async fn reads_wait_for_a_tick_and_keep_the_arrival_time() {
        let ticker = Arc::new(Ticker::new().unwrap());
        let (mut conn, mut server) = pair(&ticker).await;
        // The kernel turns receive stamps on lazily (a work item after the
        // first socket asks): the first responses may come without one,
        // and then end when read. Within a few round trips they have one.
        for round in 0..20 {
            conn.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            let reader = tokio::spawn(async move {
                let mut buf = Vec::with_capacity(16);
                conn.read_buf(&mut buf).await.unwrap();
                let arrived = conn.arrived();
                (conn, buf, arrived)
            });
            // The reader waits for a tick.
            tokio::task::yield_now().await;
            let sent = Instant::now();
            server.write_all(b"pong").await.unwrap();
            // Readiness alone does not wake the reader: wait well past it.
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(!reader.is_finished(), "the reader ran without a tick");
            let ticked = Instant::now();
            ticker.tick();
            let (back, buf, arrived) = reader.await.unwrap();
            conn = back;
            assert_eq!(buf, b"pong");
            assert!(ticker.tick().read, "the read is counted");
            let arrived = arrived.expect("a read with bytes has an arrival time");
            assert!(
                arrived >= sent - Duration::from_millis(1),
                "{arrived:?} {sent:?}"
            );
            // The kernel's stamp: well before the tick 30 ms later.
            if arrived + Duration::from_millis(20) < ticked {
                return;
            }
            eprintln!("round {round}: no receive stamp yet");
        }
        panic!("no response carried the kernel's receive stamp in 20 rounds");
    }

    #[tokio::test]
    async fn eof_and_errors_come_through() {
        let ticker = Arc::new(Ticker::new().unwrap());
        let (mut conn, server) = pair(&ticker).await;
        drop(server);
        let mut buf = Vec::with_capacity(16);
        // The FIN may take a moment on loopback: tick until the read ends.
        let read = conn.read_buf(&mut buf);
        let n = ticking(&ticker, read).await.unwrap();
        assert_eq!(n, 0, "EOF");
    }
}
