//! The generator's connections: sockets outside the runtime's epoll, in an
//! epoll set of their own that the attack loop asks at its wake-ups, with
//! the kernel's receive timestamp as a response's end.
//!
//! On a VM every sleep and wake-up of the generator's thread costs more
//! than the request itself (a context switch, a timer interrupt, exits to
//! the hypervisor): ~15 µs of CPU each, measured on the 2-core benchmark
//! VM. A request whose response woke the thread cost two of them — the
//! timer at its due time and the response's readiness a few tens of µs
//! later. So no connection wakes the loop: the loop wakes at the next due
//! time (or to poll, see [`crate::timer::Wakeups`]) and asks this set
//! which connections have something to read (one `epoll_wait` with no
//! timeout, however many connections wait: a blackholed backend can hold
//! thousands; with a few requests in flight it reads them directly, see
//! [`crate::exchange`]). The latency still ends when the response arrived, not when
//! it was read: each socket carries the kernel's receive timestamp of what
//! it reads (`SO_TIMESTAMPNS`), and [`Conn::recv`] returns the one of the
//! last byte read.

use std::io::{self, Write};
use std::mem::{size_of, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

/// Events taken from the kernel per `epoll_wait`.
pub(crate) const EVENTS: usize = 256;

/// What a ready connection may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    /// Something to read: bytes, the peer's close or an error.
    pub read: bool,
    /// Room to write, or the handshake ended (either way).
    pub write: bool,
    /// The peer closed its side (FIN) or the connection broke. Reported
    /// with whatever else is ready: a FIN that comes with the last bytes of
    /// a response raises no edge of its own.
    pub closed: bool,
}

/// The epoll set of one attack's connections, each named by a token the
/// caller chooses. Edge-triggered: a connection is reported once per
/// change, so an idle pooled connection costs nothing until it is used.
pub(crate) struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
    /// A socket that asks for receive stamps for as long as the attack
    /// runs. The kernel switches stamping on for everyone while any socket
    /// asks (a static key, flipped by a deferred work item: code patching
    /// on every CPU); when the last connection closes (the server closed
    /// them all) it would flip off, and the responses on the next
    /// connections would carry no stamp until it is back on.
    _stamps: OwnedFd,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: as above.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let stamps = unsafe { OwnedFd::from_raw_fd(raw) };
        ask_for_stamps(stamps.as_raw_fd())?;
        Ok(Self {
            epoll,
            events: Vec::with_capacity(EVENTS),
            _stamps: stamps,
        })
    }

    /// Watches `conn` under `token`, for writing too when `write`. Closing
    /// the connection takes it out of the set.
    pub fn add(&self, conn: &Conn, token: u64, write: bool) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, conn, token, write)
    }

    /// Starts or stops watching `conn` for writing.
    pub fn watch_writes(&self, conn: &Conn, token: u64, write: bool) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, conn, token, write)
    }

    fn control(&self, op: libc::c_int, conn: &Conn, token: u64, write: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        if write {
            flags |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; the event is fully initialised.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                op,
                conn.stream.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The connections that became ready since the last call, into `out`,
    /// without waiting. At most [`EVENTS`]: the rest stay reported for the
    /// next call.
    pub fn ready(&mut self, out: &mut Vec<(u64, Ready)>) -> io::Result<()> {
        out.clear();
        // SAFETY: the kernel writes at most `EVENTS` events into the
        // buffer (that is its capacity), which is alive for the call.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel initialised the first `n` events.
        unsafe { self.events.set_len(n as usize) };
        out.extend(self.events.iter().map(|e| {
            let flags = e.events as libc::c_int;
            let token = e.u64;
            let broken = flags & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
            (
                token,
                Ready {
                    read: broken || flags & libc::EPOLLIN != 0,
                    write: broken || flags & libc::EPOLLOUT != 0,
                    closed: broken || flags & libc::EPOLLRDHUP != 0,
                },
            )
        }));
        Ok(())
    }
}

/// A connected (or connecting) non-blocking socket, read and written
/// without the runtime.
pub(crate) struct Conn {
    stream: std::net::TcpStream,
    /// Its local address: what the LB saw as the client.
    local: Option<SocketAddr>,
}

impl Conn {
    /// A fresh connection to `addr` from `net`. `local` gets the local
    /// address as soon as there is one (a connect that fails still has
    /// one). `reused`: it may carry more than one request, so each read
    /// also says whether the peer closed behind the bytes read
    /// ([`Received::more`]). The flag: the handshake is still under way (it
    /// ends when the connection turns writable, see [`Conn::handshake`]).
    pub fn dial(
        net: &zdt_core::netns::Net,
        addr: SocketAddr,
        local: &mut Option<SocketAddr>,
        reused: bool,
    ) -> io::Result<(Self, bool)> {
        let dialed = net.dial(addr, local)?;
        ask_for_stamps(dialed.stream.as_raw_fd())?;
        if reused {
            ask_for_queue_length(dialed.stream.as_raw_fd())?;
        }
        Ok((
            Self {
                stream: dialed.stream,
                local: *local,
            },
            dialed.in_progress,
        ))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// How a handshake that was under way ended (once writable).
    pub fn handshake(&self) -> io::Result<()> {
        match self.stream.take_error()? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One `send` (std's write on a socket is send(MSG_NOSIGNAL): no
    /// SIGPIPE).
    pub fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        (&self.stream).write(bytes)
    }

    /// One `recvmsg` appending to `buf`'s spare capacity.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<Received> {
        let spare = buf.spare_capacity_mut();
        let (n, age, more) = self.recvmsg(spare)?;
        // SAFETY: the kernel initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        let arrived = age.map(|age| {
            let now = Instant::now();
            now.checked_sub(age).unwrap_or(now)
        });
        Ok(Received { n, arrived, more })
    }

    fn recvmsg(&self, into: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<Duration>, bool)> {
        let mut iov = libc::iovec {
            iov_base: into.as_mut_ptr().cast(),
            iov_len: into.len(),
        };
        // Room for two control messages (a timespec and an int),
        // u64-aligned as cmsghdr needs.
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
            return Ok((0, None, false));
        }
        let mut stamp = None;
        let mut more = false;
        // SAFETY: walking the control messages the kernel wrote into
        // `control`, as cmsg(3) describes; a timestamp's data is a timespec.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                } else if (*c).cmsg_level == libc::SOL_TCP && (*c).cmsg_type == libc::TCP_CM_INQ {
                    let queued: libc::c_int =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    more = queued > 0;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        // The stamp is on the realtime clock: compare it with that clock
        // now, so only the age crosses over to the monotonic one. A read
        // without a stamp ends now.
        let age = stamp.and_then(|s| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|now| now.saturating_sub(s))
        });
        Ok((n, Some(age.unwrap_or_default()), more))
    }
}

/// What one [`Conn::recv`] got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes read (0: the peer closed).
    pub n: usize,
    /// When the last of them arrived (a read that returned bytes).
    pub arrived: Option<Instant>,
    /// Something is queued behind them: more bytes, or the peer's FIN (the
    /// kernel counts a FIN as queued, see `TCP_INQ` in tcp(7)). Only on a
    /// connection dialed as `reused`; false otherwise.
    pub more: bool,
}

/// Asks the kernel to say, with each read from `fd`, how much is queued
/// behind it (`TCP_INQ`): that is how a read learns that the peer's FIN
/// came with (or after) the bytes it returned, which raises no event of
/// its own once the bytes were read without asking the epoll set.
fn ask_for_queue_length(fd: RawFd) -> io::Result<()> {
    switch_on(fd, libc::SOL_TCP, libc::TCP_INQ)
}

/// Asks the kernel to stamp what `fd` receives (`SO_TIMESTAMPNS`).
fn ask_for_stamps(fd: RawFd) -> io::Result<()> {
    switch_on(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Sets the int socket option `level`/`option` of `fd` to 1.
fn switch_on(fd: RawFd, level: libc::c_int, option: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a socket descriptor and a c_int option of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A connected pair: the polled client end and the server's.
    fn pair() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let net = zdt_core::netns::Net::host();
        let addr = listener.local_addr().unwrap();
        let mut local = None;
        let (conn, _) = Conn::dial(&net, addr, &mut local, true).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(local, conn.local_addr(), "the local address is reported");
        (conn, server)
    }

    /// Asks `poller` until `token` is reported readable (at most 5 s).
    fn until_readable(poller: &mut Poller, token: u64) {
        let start = Instant::now();
        let mut ready = Vec::new();
        while start.elapsed() < Duration::from_secs(5) {
            poller.ready(&mut ready).unwrap();
            if ready.iter().any(|&(t, r)| t == token && r.read) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("token {token} never readable");
    }

    #[test]
    fn a_refused_dial_fails_with_the_error() {
        // Bind then drop: the port is closed now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let net = zdt_core::netns::Net::host();
        let mut local = None;
        let refused = match Conn::dial(&net, addr, &mut local, false) {
            Err(e) => e,
            // The refusal may come after connect(2) returned.
            Ok((conn, _)) => conn.handshake().err().unwrap_or_else(|| {
                conn.write(b"x")
                    .expect_err("a refused connection cannot write")
            }),
        };
        assert_eq!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
        assert!(local.is_some(), "a failed dial still has its local address");
    }

    #[test]
    fn reads_are_reported_once_and_keep_the_arrival_time() {
        let mut poller = Poller::new().unwrap();
        let (conn, mut server) = pair();
        poller.add(&conn, 7, false).unwrap();
        // The kernel turns receive stamps on lazily (a work item after the
        // first socket asks): the first responses may come without one,
        // and then end when read. Within a few round trips they have one.
        for round in 0..20 {
            conn.write(b"ping").unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
            let sent = Instant::now();
            server.write_all(b"pong").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            until_readable(&mut poller, 7);
            let read_at = Instant::now();
            let mut buf = Vec::with_capacity(16);
            let got = conn.recv(&mut buf).unwrap();
            assert_eq!((got.n, buf.as_slice()), (4, &b"pong"[..]));
            assert!(!got.more, "nothing is queued behind the answer");
            let arrived = got.arrived;
            // Edge-triggered: reported once until something new arrives.
            let mut again = Vec::new();
            poller.ready(&mut again).unwrap();
            assert!(again.is_empty(), "reported twice");
            let arrived = arrived.expect("a read with bytes has an arrival time");
            assert!(
                arrived >= sent - Duration::from_millis(1),
                "{arrived:?} {sent:?}"
            );
            // The kernel's stamp: well before the read 30 ms later.
            if arrived + Duration::from_millis(20) < read_at {
                return;
            }
            eprintln!("round {round}: no receive stamp yet");
        }
        panic!("no response carried the kernel's receive stamp in 20 rounds");
    }

    #[test]
    fn eof_comes_through() {
        let mut poller = Poller::new().unwrap();
        let (conn, server) = pair();
        poller.add(&conn, 1, false).unwrap();
        drop(server);
        until_readable(&mut poller, 1);
        let mut buf = Vec::with_capacity(16);
        assert_eq!(conn.recv(&mut buf).unwrap().n, 0, "EOF");
    }

    #[test]
    fn a_fin_behind_the_bytes_read_is_reported() {
        let mut poller = Poller::new().unwrap();
        let (conn, mut server) = pair();
        poller.add(&conn, 3, false).unwrap();
        server.write_all(b"bye").unwrap();
        server.shutdown(std::net::Shutdown::Write).unwrap();
        // Both the bytes and the FIN have arrived once EOF is readable
        // behind them; wait for the FIN (RDHUP) so the read sees both.
        let start = Instant::now();
        let mut ready = Vec::new();
        while !ready
            .iter()
            .any(|&(t, r): &(u64, Ready)| t == 3 && r.closed)
        {
            assert!(start.elapsed() < Duration::from_secs(5), "no FIN");
            std::thread::sleep(Duration::from_millis(1));
            poller.ready(&mut ready).unwrap();
        }
        let mut buf = Vec::with_capacity(16);
        let got = conn.recv(&mut buf).unwrap();
        assert_eq!((got.n, buf.as_slice()), (3, &b"bye"[..]));
        assert!(got.more, "the FIN queued behind the bytes is reported");
        assert_eq!(conn.recv(&mut buf).unwrap().n, 0, "then EOF");
    }
}
