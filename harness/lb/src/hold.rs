//! Connections a node blackholes, held open in a helper process.
//!
//! When kube-proxy drops a new connection (`Dial::Dropped`), the LB keeps
//! the client's socket open and unanswered so the client sees what it would
//! see on a cloud: a timeout. At 5000 req/s with a third of the traffic
//! dropped for up to 10 s that is ~17,000 sockets, which together with the
//! emulator's own would pass a 20,000-descriptor hard limit (the limit on
//! this project's machines, which zdt cannot raise). So the LB hands each
//! such socket to `zdt lb-hold`, a child with a descriptor table of its
//! own, over a Unix socket (SCM_RIGHTS), and closes its copy. The child
//! discards what the client sends and resets the connection when the hold
//! ends; it dies with the LB (PR_SET_PDEATHSIG, and the Unix socket's EOF).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The hidden subcommand the helper runs.
pub const SUBCOMMAND: &str = "lb-hold";

/// Queue between the LB's tasks and the thread that passes sockets on:
/// deep enough for a burst, bounded so a stuck helper cannot hold them all.
const QUEUE: usize = 8192;

/// Hands sockets to the helper process.
pub(crate) struct Holder {
    tx: mpsc::SyncSender<(OwnedFd, Duration)>,
}

impl Holder {
    /// Start `exe lb-hold` and the thread that feeds it.
    pub(crate) fn spawn(exe: &Path) -> io::Result<Holder> {
        let (ours, theirs) = UnixStream::pair()?;
        let (tx, rx) = mpsc::sync_channel::<(OwnedFd, Duration)>(QUEUE);
        let (started_tx, started_rx) = mpsc::channel::<io::Result<()>>();
        let exe = exe.to_owned();
        // The helper is spawned from this thread, which lives exactly as long
        // as the holder: PDEATHSIG fires when the spawning thread exits.
        std::thread::Builder::new()
            .name("lb-hold".into())
            .spawn(move || {
                let mut cmd = std::process::Command::new(&exe);
                cmd.arg(SUBCOMMAND)
                    .stdin(Stdio::from(OwnedFd::from(theirs)))
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .process_group(0);
                zdt_core::process::die_with_parent(&mut cmd);
                let mut child = match cmd.spawn() {
                    Ok(c) => {
                        let _ = started_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                for (fd, hold) in rx {
                    if let Err(e) = send_fd(&ours, fd.as_raw_fd(), hold) {
                        tracing::warn!(error = %e, "lb-hold helper gone; held connections close");
                        break;
                    }
                    // The kernel keeps the socket alive in flight; our copy goes.
                    drop(fd);
                }
                drop(ours);
                let _ = child.kill();
                let _ = child.wait();
            })?;
        started_rx.recv().map_err(|_| {
            io::Error::other("the lb-hold thread ended before starting the helper")
        })??;
        Ok(Holder { tx })
    }

    /// Hand `client` over to be held for `hold`; gives it back when the
    /// helper cannot take it, so the caller holds it itself.
    pub(crate) fn hold(&self, client: TcpStream, hold: Duration) -> Result<(), TcpStream> {
        let std = match client.into_std() {
            Ok(s) => s,
            // Deregistering failed: the socket is still ours, but no longer
            // usable through tokio; closing it is all that is left.
            Err(_) => return Ok(()),
        };
        match self.tx.try_send((OwnedFd::from(std), hold)) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full((fd, _)) | mpsc::TrySendError::Disconnected((fd, _))) => {
                let std = std::net::TcpStream::from(fd);
                match TcpStream::from_std(std) {
                    Ok(s) => Err(s),
                    Err(_) => Ok(()),
                }
            }
        }
    }
}

/// Keep `client` open and unanswered: discard what it sends until it
/// closes, `hold` passes (then reset), or `cut` fires (reset).
pub(crate) async fn hold_unanswered(
    mut client: TcpStream,
    hold: Duration,
    cut: Option<CancellationToken>,
) {
    let mut sink = [0u8; 4096];
    let timer = tokio::time::sleep(hold);
    tokio::pin!(timer);
    let cut = cut.unwrap_or_default();
    loop {
        tokio::select! {
            r = client.read(&mut sink) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = &mut timer => return reset(client),
            _ = cut.cancelled() => return reset(client),
        }
    }
}

/// Close with RST rather than FIN: what a client sees from a cloud LB that
/// rejects, or from a connection cut at the end of connection draining.
pub(crate) fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One message: the hold in milliseconds, with the socket as ancillary data.
fn send_fd(sock: &UnixStream, fd: RawFd, hold: Duration) -> io::Result<()> {
    let payload = u64::try_from(hold.as_millis())
        .unwrap_or(u64::MAX)
        .to_le_bytes();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // u64-aligned room for one SCM_RIGHTS header and one descriptor.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; every pointer set below points into
    // locals that outlive the sendmsg call, and the control buffer is larger
    // than CMSG_SPACE(sizeof(int)).
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        debug_assert!(space <= std::mem::size_of_val(&control));
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
        loop {
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receive one message; `None` at EOF (the LB is gone).
fn recv_fd(sock: &UnixStream) -> io::Result<Option<(OwnedFd, Duration)>> {
    let mut payload = [0u8; 8];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: as in send_fd; the descriptor is taken only from a complete
    // SCM_RIGHTS header the kernel filled in.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n != payload.len()
            || cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "lb-hold: a message without exactly one socket",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
        Ok(Some((
            OwnedFd::from_raw_fd(fd),
            Duration::from_millis(u64::from_le_bytes(payload)),
        )))
    }
}

/// `zdt lb-hold`: stdin is the Unix socket from the LB. Runs until the LB
/// closes it (or dies), then exits, which closes whatever is still held.
pub async fn run() {
    // SAFETY: descriptor 0 is the Unix socket the parent passed as stdin,
    // owned by nobody else in this process.
    let sock = unsafe { UnixStream::from_raw_fd(0) };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // recvmsg blocks: a thread of its own, not a runtime worker.
    std::thread::spawn(move || loop {
        match recv_fd(&sock) {
            Ok(Some(m)) => {
                if tx.send(m).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                eprintln!("zdt lb-hold: {e}");
                return;
            }
        }
    });
    while let Some((fd, hold)) = rx.recv().await {
        let std = std::net::TcpStream::from(fd);
        if std.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(client) = TcpStream::from_std(std) {
            tokio::spawn(hold_unanswered(client, hold, None));
        }
    }
}
