//! The process that holds a private network: forked from zdt (no exec, so
//! no binary is needed and library users get it too), it unshares its
//! namespaces, sets up loopback, then makes TCP sockets on request until
//! zdt closes its end of the channel — or dies, which closes it too.
//!
//! Between fork and exit the child runs only system calls on memory that
//! was prepared before the fork: another thread of zdt may have held the
//! allocator's lock at the fork.
//!
//! In a routed network ([`Mode::Routed`]) it also holds pods' sandboxes:
//! on request it forks a pause process that unshares a network namespace
//! of its own and sleeps until it is killed (or its PID namespace ends with
//! this helper), and it makes sockets in a namespace zdt names by sending
//! its descriptor along with the request (setns there and back: zdt, a
//! multi-threaded process of a normal user, cannot do that itself).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use super::{netlink, owned, Block, NetError};

/// Sockets per request at most (SCM_RIGHTS carries up to 253).
const MAX_BATCH: usize = 128;
/// The request byte that asks for one netfilter netlink socket (NFLOG,
/// conntrack) instead of TCP sockets.
const NETFILTER_REQUEST: u8 = 0xff;
/// The request byte that asks for a pod sandbox: a pause process in a
/// network namespace of its own. The answer is an errno byte and its pid.
const SANDBOX_REQUEST: u8 = 0xfe;
/// Like [`SANDBOX_REQUEST`], for a node: its namespace forwards packets
/// (between its pods and the cluster's network), set by the pause process
/// itself, the only process sure to be in that namespace with the right.
const NODE_REQUEST: u8 = 0xfd;
/// How long the helper may take to set up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the child tells the parent once set up: 0 or an errno, and the stage.
const STAGES: [&str; 7] = [
    "setup",
    "creating the namespaces (unshare)",
    "mapping zdt's user into the new user namespace",
    "configuring the loopback device (rtnetlink)",
    "starting the PID namespace's init",
    "setting the namespace's sysctls",
    "opening the namespace's own descriptor",
];
/// The report: errno, stage, the init's pid.
const REPORT_LEN: usize = 9;

/// What kind of network the helper holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Every address on loopback; TCP sockets bound to it (see `child`).
    Loopback,
    /// Pods in sandboxes of their own behind veth pairs: sockets are not
    /// bound to loopback (their packets leave over a veth), and the
    /// namespace reuses TIME_WAIT ports for any connection and forwards
    /// between pods (sysctls of this namespace only, never the host's).
    Routed,
}

/// The sysctls a routed network sets in its own namespace.
const ROUTED_SYSCTLS: [(&str, &[u8]); 2] = [
    // What `tcp_tw_reuse=2` gives connections bound to loopback: a client
    // port in TIME_WAIT may take a new connection (5000 new connections/s
    // would otherwise exhaust the ports).
    ("/proc/sys/net/ipv4/tcp_tw_reuse", b"1"),
    // A pod's packets to another pod cross this namespace.
    ("/proc/sys/net/ipv4/ip_forward", b"1"),
];

pub(super) struct Helper {
    process: Forked,
    pub mode: Mode,
    pub net_ns: OwnedFd,
    pub user_ns: Option<OwnedFd>,
    /// The PID namespace processes of the cluster start their children in:
    /// its init ends with this helper, and the kernel then ends every
    /// process in it (nginx workers included), however zdt ended.
    pub pid_ns: Option<OwnedFd>,
}

/// The forked helper itself: dropping it ends and reaps it (on every path,
/// a failed setup included) and ends its PID namespace's init.
struct Forked {
    pid: libc::pid_t,
    chan: Mutex<OwnedFd>,
    /// A pidfd of the PID namespace's init, to end it (and with it every
    /// process in the namespace) and know when it is gone.
    init: Option<OwnedFd>,
}

/// Everything the child needs, made before the fork.
struct Plan {
    user_ns: bool,
    bind_lo: bool,
    sysctls: Vec<(CString, &'static [u8])>,
    forward: CString,
    self_net: CString,
    netlink: Vec<Vec<u8>>,
    setgroups: CString,
    uid_map: CString,
    gid_map: CString,
    uid_line: Vec<u8>,
    gid_line: Vec<u8>,
}

impl Helper {
    pub fn start(blocks: &[Block], mode: Mode) -> Result<Helper, NetError> {
        // SAFETY: plain getters.
        let (euid, uid, gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
        let sysctls = match mode {
            Mode::Loopback => &[][..],
            Mode::Routed => &ROUTED_SYSCTLS[..],
        };
        let plan = Plan {
            user_ns: euid != 0,
            bind_lo: mode == Mode::Loopback,
            sysctls: sysctls
                .iter()
                .map(|(path, value)| (CString::new(*path).expect("no NUL"), *value))
                .collect(),
            forward: CString::new(ROUTED_SYSCTLS[1].0).expect("no NUL"),
            self_net: CString::new("/proc/self/ns/net").expect("no NUL"),
            netlink: netlink::setup(blocks),
            setgroups: CString::new("/proc/self/setgroups").expect("no NUL"),
            uid_map: CString::new("/proc/self/uid_map").expect("no NUL"),
            gid_map: CString::new("/proc/self/gid_map").expect("no NUL"),
            // zdt's own ids, not root: a process that joins and executes
            // is then not uid 0 in there, so nginx does not try to switch
            // its workers to a user the namespace does not map; the
            // capabilities it needs come with it as ambient ones
            // (`Net::join_before_exec`).
            uid_line: format!("{uid} {uid} 1").into_bytes(),
            gid_line: format!("{gid} {gid} 1").into_bytes(),
        };
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds has room for the two descriptors.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(NetError::SocketPair(io::Error::last_os_error()));
        }
        // SAFETY: both were just created and are ours alone.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only runs `child`, which makes system calls on
        // memory prepared above and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(NetError::Fork(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: see the module comment.
            unsafe { child(theirs.as_raw_fd(), &plan) }
        }
        drop(theirs);
        let mut process = Forked {
            pid,
            chan: Mutex::new(ours),
            init: None,
        };
        let (errno, stage, init) = process.report()?;
        if errno != 0 {
            let hint = if stage == 1 && plan.user_ns {
                " (user namespaces may be disabled: kernel.unprivileged_userns_clone=0, \
                 user.max_user_namespaces=0, or an AppArmor/container policy)"
            } else {
                ""
            };
            return Err(NetError::Helper {
                stage: STAGES.get(stage as usize).copied().unwrap_or("setup"),
                source: io::Error::from_raw_os_error(errno),
                hint,
            });
        }
        // SAFETY: pidfd_open on a pid; the result is a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, init, 0) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor that nothing else owns.
            process.init = Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        Ok(Helper {
            net_ns: open_ns(pid, "net")?,
            user_ns: if plan.user_ns {
                Some(open_ns(pid, "user")?)
            } else {
                None
            },
            pid_ns: Some(open_ns(init, "pid")?),
            process,
            mode,
        })
    }

    /// The helper's pid (in zdt's PID namespace).
    pub fn pid(&self) -> libc::pid_t {
        self.process.pid
    }

    /// `n` new sockets (at most [`MAX_BATCH`]) from the helper.
    pub fn sockets(&self, n: usize) -> io::Result<Vec<OwnedFd>> {
        self.process.sockets(n, None)
    }

    /// `n` new sockets in the network namespace `ns` (a sandbox's).
    pub fn sockets_in(&self, ns: BorrowedFd<'_>, n: usize) -> io::Result<Vec<OwnedFd>> {
        self.process.sockets(n, Some(ns))
    }

    /// A new `NETLINK_NETFILTER` socket in the namespace.
    pub fn netfilter_socket(&self) -> io::Result<OwnedFd> {
        self.process
            .request(NETFILTER_REQUEST, None)?
            .pop()
            .ok_or_else(|| io::Error::other("the network helper sent no socket"))
    }

    /// A new `NETLINK_NETFILTER` socket in the network namespace `ns` (a
    /// node's).
    pub fn netfilter_socket_in(&self, ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        self.process
            .request(NETFILTER_REQUEST, Some(ns))?
            .pop()
            .ok_or_else(|| io::Error::other("the network helper sent no socket"))
    }

    /// A new pause process in a network namespace of its own; its pid.
    /// A node's (`forwarding`) forwards packets.
    pub fn pause(&self, forwarding: bool) -> io::Result<libc::pid_t> {
        let byte = if forwarding {
            NODE_REQUEST
        } else {
            SANDBOX_REQUEST
        };
        let (data, fds) = self.process.exchange(byte, None)?;
        drop(fds);
        if data[0] != 0 {
            return Err(io::Error::from_raw_os_error(i32::from(data[0])));
        }
        Ok(i32::from_ne_bytes([data[1], data[2], data[3], data[4]]))
    }
}

impl Forked {
    fn report(&self) -> Result<(i32, u8, libc::pid_t), NetError> {
        let chan = self.chan.lock().unwrap_or_else(|e| e.into_inner());
        let mut pfd = libc::pollfd {
            fd: chan.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, SETUP_TIMEOUT.as_millis() as i32) };
        if ready <= 0 {
            return Err(NetError::NoReport(if ready == 0 {
                io::Error::new(io::ErrorKind::TimedOut, "no answer within 10 s")
            } else {
                io::Error::last_os_error()
            }));
        }
        let mut buf = [0u8; REPORT_LEN];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(chan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n != REPORT_LEN as isize {
            return Err(NetError::NoReport(if n < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::new(io::ErrorKind::UnexpectedEof, "the helper exited")
            }));
        }
        Ok((
            i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
            buf[4],
            i32::from_ne_bytes([buf[5], buf[6], buf[7], buf[8]]),
        ))
    }

    fn sockets(&self, n: usize, ns: Option<BorrowedFd<'_>>) -> io::Result<Vec<OwnedFd>> {
        self.request(n.clamp(1, MAX_BATCH) as u8, ns)
    }

    /// Send one request byte (a count of TCP sockets, or
    /// [`NETFILTER_REQUEST`]) and receive the descriptors it brings.
    fn request(&self, byte: u8, ns: Option<BorrowedFd<'_>>) -> io::Result<Vec<OwnedFd>> {
        let (data, out) = self.exchange(byte, ns)?;
        if out.is_empty() {
            // The helper reports socket()'s errno in the first data byte.
            return Err(io::Error::from_raw_os_error(i32::from(data[0])));
        }
        Ok(out)
    }

    /// Send one request byte, with `ns` (a namespace to make sockets in)
    /// attached, and receive the answer's data and descriptors.
    fn exchange(
        &self,
        byte: u8,
        ns: Option<BorrowedFd<'_>>,
    ) -> io::Result<([u8; ANSWER_LEN], Vec<OwnedFd>)> {
        let chan = self.chan.lock().unwrap_or_else(|e| e.into_inner());
        let mut req = [byte];
        let mut req_iov = libc::iovec {
            iov_base: req.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut req_control = [0u64; 4];
        // SAFETY: msghdr is plain data; the fields set below point at live
        // buffers of the lengths given, the control message at one
        // descriptor that outlives the call.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut req_iov;
            msg.msg_iovlen = 1;
            if let Some(ns) = ns {
                let bytes = std::mem::size_of::<RawFd>() as u32;
                msg.msg_control = req_control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
                libc::CMSG_DATA(cmsg)
                    .cast::<RawFd>()
                    .write_unaligned(ns.as_raw_fd());
            }
            libc::sendmsg(chan.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
        };
        if sent != 1 {
            return Err(io::Error::last_os_error());
        }
        let mut data = [0u8; ANSWER_LEN];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: ANSWER_LEN,
        };
        let mut control = [0u64; (MAX_BATCH * 4 + 64) / 8];
        // SAFETY: msghdr is plain data; the fields set below point at live
        // buffers of the lengths given.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: msg describes valid buffers.
        let got = unsafe { libc::recvmsg(chan.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the network helper exited",
            ));
        }
        let mut out = Vec::new();
        // SAFETY: walking the control messages the kernel filled in.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let first = libc::CMSG_DATA(cmsg) as *const RawFd;
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        out.push(owned(first.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok((data, out))
    }
}

/// The answer's data: an errno byte, then (to a sandbox request) a pid.
const ANSWER_LEN: usize = 5;

impl Drop for Forked {
    fn drop(&mut self) {
        let chan = self.chan.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = 0;
        // SAFETY: ending and reaping our own child; its only job after
        // this is to exit (EOF on the channel would do it too).
        unsafe {
            libc::shutdown(chan.as_raw_fd(), libc::SHUT_RDWR);
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut status, 0);
        }
        // The init would follow on its own; ending it here, and waiting
        // until it is gone, means the namespace's processes are gone when
        // the network is (a clean shutdown leaves nothing behind).
        if let Some(init) = &self.init {
            let mut pfd = libc::pollfd {
                fd: init.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: signalling through our own pidfd, then polling it
            // (readable once the process has exited).
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    init.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
                libc::poll(&mut pfd, 1, 5_000);
            }
        }
    }
}

fn open_ns(pid: libc::pid_t, kind: &str) -> Result<OwnedFd, NetError> {
    let path = format!("/proc/{pid}/ns/{kind}");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|source| NetError::OpenNs { path, source })
}

/// The helper. Never returns.
unsafe fn child(chan: RawFd, plan: &Plan) -> ! {
    const CHAN: RawFd = 3;
    let report = |errno: i32, stage: u8, init: libc::pid_t| {
        let mut buf = [0u8; REPORT_LEN];
        buf[..4].copy_from_slice(&errno.to_ne_bytes());
        buf[4] = stage;
        buf[5..].copy_from_slice(&init.to_ne_bytes());
        libc::send(CHAN, buf.as_ptr().cast(), REPORT_LEN, libc::MSG_NOSIGNAL);
    };
    let fail = |stage: u8| -> ! {
        let errno = *libc::__errno_location();
        report(errno, stage, 0);
        libc::_exit(1)
    };
    // Out of the terminal's process group: Ctrl-C is zdt's to handle, and
    // zdt ends this process by closing the channel.
    libc::setpgid(0, 0);
    if chan != CHAN && libc::dup2(chan, CHAN) < 0 {
        libc::_exit(1);
    }
    // Inherited descriptors would keep zdt's sockets alive: a listener zdt
    // closes must stop accepting (a killed pod refuses connections).
    if libc::syscall(libc::SYS_close_range, CHAN as u32 + 1, u32::MAX, 0) != 0 {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let top = lim.rlim_cur.min(1 << 20) as RawFd;
        for fd in CHAN + 1..top {
            libc::close(fd);
        }
    }
    let flags = if plan.user_ns {
        libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWPID
    } else {
        libc::CLONE_NEWNET | libc::CLONE_NEWPID
    };
    if libc::unshare(flags) != 0 {
        fail(1);
    }
    if plan.user_ns {
        for (path, line) in [
            (&plan.setgroups, &b"deny"[..]),
            (&plan.uid_map, &plan.uid_line[..]),
            (&plan.gid_map, &plan.gid_line[..]),
        ] {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, line.as_ptr().cast(), line.len()) != line.len() as isize {
                fail(2);
            }
            libc::close(fd);
        }
    }
    let nl = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
    if nl < 0 {
        fail(3);
    }
    let mut reply = [0u8; 512];
    for m in &plan.netlink {
        if libc::send(nl, m.as_ptr().cast(), m.len(), 0) != m.len() as isize {
            fail(3);
        }
        let n = libc::recv(nl, reply.as_mut_ptr().cast(), reply.len(), 0);
        if n < 0 {
            fail(3);
        }
        match netlink::ack_error(&reply[..n as usize]) {
            Some(0) => {}
            Some(errno) => {
                *libc::__errno_location() = errno;
                fail(3);
            }
            None => {
                *libc::__errno_location() = libc::EPROTO;
                fail(3);
            }
        }
    }
    libc::close(nl);
    for (path, value) in &plan.sysctls {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::write(fd, value.as_ptr().cast(), value.len()) != value.len() as isize {
            fail(5);
        }
        libc::close(fd);
    }
    // To come back to after making sockets in a sandbox's namespace.
    let own_net = libc::open(plan.self_net.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if own_net < 0 {
        fail(6);
    }
    // The PID namespace's init (our next child is its pid 1): it lives
    // until this helper exits (EOF on the pipe), and reaps what is
    // reparented to it (SIGCHLD ignored). When it exits the kernel kills
    // everything in the namespace.
    let mut pipe = [0 as RawFd; 2];
    if libc::pipe(pipe.as_mut_ptr()) != 0 {
        fail(4);
    }
    let init = libc::fork();
    if init < 0 {
        fail(4);
    }
    if init == 0 {
        libc::close(pipe[1]);
        libc::close(CHAN);
        libc::close(own_net);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        let mut b = [0u8; 1];
        loop {
            let n = libc::read(pipe[0], b.as_mut_ptr().cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                libc::_exit(0);
            }
        }
    }
    libc::close(pipe[0]);
    // Pause processes are reaped by the kernel once killed.
    libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    report(0, 0, init);

    let mut fds = [0 as RawFd; MAX_BATCH];
    let mut control = [0u64; (MAX_BATCH * 4 + 64) / 8];
    let mut req_control = [0u64; 8];
    loop {
        let mut req = [0u8; 1];
        let mut req_iov = libc::iovec {
            iov_base: req.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut rmsg: libc::msghdr = std::mem::zeroed();
        rmsg.msg_iov = &mut req_iov;
        rmsg.msg_iovlen = 1;
        rmsg.msg_control = req_control.as_mut_ptr().cast();
        rmsg.msg_controllen = std::mem::size_of_val(&req_control);
        let n = libc::recvmsg(CHAN, &mut rmsg, libc::MSG_CMSG_CLOEXEC);
        if n <= 0 {
            libc::_exit(0);
        }
        // A namespace to make the sockets in (a sandbox's), if attached.
        let mut ns: RawFd = -1;
        let cmsg = libc::CMSG_FIRSTHDR(&rmsg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            ns = libc::CMSG_DATA(cmsg).cast::<RawFd>().read_unaligned();
        }
        if req[0] == SANDBOX_REQUEST || req[0] == NODE_REQUEST {
            let forward = (req[0] == NODE_REQUEST).then_some(&plan.forward);
            let (errno, pid) = pause_child(CHAN, pipe[1], own_net, forward);
            let mut answer = [0u8; ANSWER_LEN];
            answer[0] = errno as u8;
            answer[1..].copy_from_slice(&pid.to_ne_bytes());
            if libc::send(CHAN, answer.as_ptr().cast(), ANSWER_LEN, libc::MSG_NOSIGNAL) < 0 {
                libc::_exit(0);
            }
            if ns >= 0 {
                libc::close(ns);
            }
            continue;
        }
        let mut entered = 0;
        if ns >= 0 {
            if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                entered = *libc::__errno_location();
            }
            libc::close(ns);
        }
        let netfilter = req[0] == NETFILTER_REQUEST;
        let want = if netfilter {
            1
        } else {
            (req[0] as usize).clamp(1, MAX_BATCH)
        };
        let mut made = 0;
        let mut errno = entered as u8;
        while made < want && entered == 0 {
            let fd = if netfilter {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_NETFILTER,
                )
            } else {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_TCP,
                )
            };
            if fd < 0 {
                errno = *libc::__errno_location() as u8;
                break;
            }
            // Bound to the loopback device, as every packet here is, so the
            // kernel treats the connections as loopback traffic: with the
            // default tcp_tw_reuse (2) a new connection may then reuse a
            // port in TIME_WAIT, as it does on 127.0.0.1. Without it, 5000
            // new connections/s leave 300,000 client ports in TIME_WAIT and
            // the port search in connect() starves the generator. (Setting
            // it needs CAP_NET_RAW in the namespace, which only this
            // process is sure to have.)
            if !netfilter && plan.bind_lo && ns < 0 {
                super::bind_fd_to_loopback(fd);
            }
            fds[made] = fd;
            made += 1;
        }
        let mut data = [errno];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if made > 0 {
            let bytes = made * std::mem::size_of::<RawFd>();
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), bytes);
        }
        if ns >= 0 && entered == 0 && libc::setns(own_net, libc::CLONE_NEWNET) != 0 {
            // Sockets made later would be in the wrong namespace.
            libc::_exit(1);
        }
        let sent = libc::sendmsg(CHAN, &msg, libc::MSG_NOSIGNAL);
        for fd in &fds[..made] {
            libc::close(*fd);
        }
        if sent < 0 {
            libc::_exit(0);
        }
    }
}

/// Fork a pause process: it unshares a network namespace of its own (where
/// it writes 1 to the `forward` sysctl, if given), says so, and sleeps
/// until it is killed (by zdt, or by the kernel when the PID namespace's
/// init ends). Returns an errno (0: started) and its pid. It keeps none of
/// the helper's descriptors: the channel must close when the helper dies,
/// and the init's pipe too.
unsafe fn pause_child(
    chan: RawFd,
    init_pipe: RawFd,
    own_net: RawFd,
    forward: Option<&CString>,
) -> (i32, libc::pid_t) {
    let mut ready = [0 as RawFd; 2];
    if libc::pipe(ready.as_mut_ptr()) != 0 {
        return (*libc::__errno_location(), 0);
    }
    let pid = libc::fork();
    if pid < 0 {
        let errno = *libc::__errno_location();
        libc::close(ready[0]);
        libc::close(ready[1]);
        return (errno, 0);
    }
    if pid == 0 {
        libc::close(chan);
        libc::close(init_pipe);
        libc::close(own_net);
        libc::close(ready[0]);
        let mut errno: i32 = if libc::unshare(libc::CLONE_NEWNET) == 0 {
            0
        } else {
            *libc::__errno_location()
        };
        if let (0, Some(path)) = (errno, forward) {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"1".as_ptr().cast(), 1) != 1 {
                errno = *libc::__errno_location();
            }
            if fd >= 0 {
                libc::close(fd);
            }
        }
        libc::write(ready[1], (&errno as *const i32).cast(), 4);
        if errno != 0 {
            libc::_exit(1);
        }
        libc::close(ready[1]);
        loop {
            libc::pause();
        }
    }
    libc::close(ready[1]);
    let mut errno = 0i32;
    let n = libc::read(ready[0], (&mut errno as *mut i32).cast(), 4);
    libc::close(ready[0]);
    if n != 4 {
        return (libc::ECHILD, 0);
    }
    (errno, pid)
}
