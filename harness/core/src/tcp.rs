//! Outgoing TCP connections for the generator, the LB and the emulated
//! kube-proxy: one `connect` that every hop uses, so each hop gets the same
//! two fixes.
//!
//! - **No event-loop turn for a finished handshake.** A fresh tokio socket
//!   starts with no readiness, so `TcpStream::connect` always waits for the
//!   reactor to report it writable, even when (as on loopback and on a
//!   docker bridge) the handshake finished inside `connect(2)`. Under load
//!   that wait is a scheduler round trip per connection. Here the socket is
//!   asked whether it is connected first, and only waits when it is not.
//! - **Loopback source addresses.** A 127.0.0.0/8 target is dialled from
//!   one of several loopback source addresses in turn: every connection to
//!   one address and port needs its own ephemeral port, and at thousands of
//!   new connections per second, with thousands held open (a blackholed
//!   node) and the rest in TIME_WAIT, the ~28,000 ports of one source
//!   address run short. The kernel's port search in connect() then burns a
//!   whole core (seen at 5000/s with 14,000 held connections).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

/// Loopback source addresses a loopback target is dialled from, in turn.
const LOOPBACK_SOURCES: u32 = 32;

/// Open a TCP connection to `addr` in the host's network stack.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    connect_traced(addr, &mut None).await
}

/// [`connect`], also setting `local` to the connection's local address as
/// soon as the kernel chose it, so a connect that fails still has one.
pub async fn connect_traced(
    addr: SocketAddr,
    local: &mut Option<SocketAddr>,
) -> io::Result<TcpStream> {
    dial(addr, local)?.finish().await
}

/// A `connect(2)` started outside any reactor, for a caller that waits
/// for the handshake its own way (the generator's polled connections).
#[derive(Debug)]
pub struct Dialed {
    /// The non-blocking socket.
    pub stream: std::net::TcpStream,
    /// The handshake was still under way when `connect(2)` returned: the
    /// socket turns writable, or reports its error, when it ends.
    pub in_progress: bool,
}

impl Dialed {
    /// Into the reactor, waiting for the handshake only if it is not done.
    pub async fn finish(self) -> io::Result<TcpStream> {
        let stream = TcpStream::from_std(self.stream)?;
        if self.in_progress {
            stream.writable().await?;
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
            stream.peer_addr()?;
        }
        Ok(stream)
    }
}

/// [`connect_traced`] without the reactor: the connect started, from the
/// host's stack (loopback sources spread).
pub fn dial(addr: SocketAddr, local: &mut Option<SocketAddr>) -> io::Result<Dialed> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::from(libc::SOCK_STREAM | libc::SOCK_NONBLOCK),
        Some(Protocol::TCP),
    )?;
    if let SocketAddr::V4(v4) = addr {
        if v4.ip().is_loopback() {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed) % LOOPBACK_SOURCES;
            // Choose the port at connect() time, per 4-tuple, not at bind()
            // time per address: otherwise each source address gets only its
            // own share of the range.
            set_bind_address_no_port(&socket);
            socket.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1 + n as u8), 0)).into())?;
        }
    }
    dial_socket(socket, addr, local)
}

/// Start connecting a fresh non-blocking `socket` to `addr`.
pub(crate) fn dial_socket(
    socket: Socket,
    addr: SocketAddr,
    local: &mut Option<SocketAddr>,
) -> io::Result<Dialed> {
    let in_progress = match socket.connect(&addr.into()) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) => return Err(e),
    };
    // The port is bound once connect() started.
    *local = socket.local_addr().ok().and_then(|a| a.as_socket());
    let stream = std::net::TcpStream::from(socket);
    // getpeername() succeeds once the handshake is done; until then (or
    // after it failed) it says ENOTCONN, and the reactor tells the rest.
    let in_progress = in_progress && stream.peer_addr().is_err();
    Ok(Dialed {
        stream,
        in_progress,
    })
}

pub(crate) fn set_bind_address_no_port(socket: &Socket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the
    // size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connects_and_carries_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            peer
        });
        let mut c = connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        let peer = server.await.unwrap();
        assert!(peer.ip().is_loopback(), "source {peer}");
    }

    #[tokio::test]
    async fn refused_is_connection_refused() {
        // Bind then drop: the port is closed now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[tokio::test]
    async fn spreads_loopback_sources() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sources = std::collections::HashSet::new();
        for _ in 0..LOOPBACK_SOURCES {
            let _c = connect(addr).await.unwrap();
            let (_s, peer) = listener.accept().await.unwrap();
            sources.insert(peer.ip());
        }
        // Other tests in this process dial too, so the turn may not start
        // at .1; what matters is that many sources are used.
        assert!(sources.len() > 1, "one source address for all: {sources:?}");
    }
}
