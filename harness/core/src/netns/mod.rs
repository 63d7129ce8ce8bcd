//! The emulated cluster's own network.
//!
//! Every hop of an emulated data path (generator → LB → pod) is a TCP
//! connection. In the host's network stack those connections share the
//! host's connection-tracking table, its ephemeral ports and whatever
//! sysctls the host has, so a run's result would depend on how the machine
//! was tuned. A [`Net::private`] network is a network namespace zdt creates
//! for one cluster: it has only a loopback device, carrying the cluster's
//! addresses (node InternalIPs, pod IPs, the LB's address), tracks no
//! connections (no rule asks it to) and ends with the cluster.
//!
//! How it is held: a helper process, forked (not executed) from this one,
//! unshares a network namespace — inside a new user namespace when zdt is
//! not root, which is what lets a normal user do it — configures its
//! loopback device over rtnetlink, and then hands this process new TCP
//! sockets over a unix socket (SCM_RIGHTS). A socket belongs for life to
//! the namespace it was created in, whichever thread or process later binds
//! or connects it, so this process serves the namespace with no `setns` of
//! its own (which a normal user could not do back into the host's
//! namespace). Child processes (nginx, the traffic generator) join the
//! namespace before they exec ([`Net::join_before_exec`]).
//!
//! Sockets are created ahead in batches by a filler thread so that a
//! connection does not wait for a round trip to the helper.
//!
//! A routed network ([`Net::routed`]) gives each pod a namespace of its
//! own instead ([`Net::sandbox`], see [`Sandbox`]): the pod's IP is on its
//! `eth0`, one end of a veth pair whose other end is in the cluster's
//! namespace, so every pod can listen on `0.0.0.0:containerPort`. Its
//! nodes may have namespaces of their own too ([`Net::node`], see
//! [`NodeNet`]): their pods' sandboxes then hang off them.

mod helper;
mod netlink;
mod node;
mod sandbox;

pub use node::NodeNet;
pub use sandbox::{Joined, Sandbox};

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use socket2::Socket;
use tokio::net::TcpStream;

/// One address block on the namespace's loopback device: every address in
/// `prefix/len` is local there (the kernel adds a local route for the whole
/// prefix of an address on a loopback device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// Why a private network could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("cannot fork the network helper: {0}")]
    Fork(io::Error),
    #[error("cannot create a socket pair for the network helper: {0}")]
    SocketPair(io::Error),
    #[error("{stage} failed in the network helper: {source}{hint}")]
    Helper {
        stage: &'static str,
        source: io::Error,
        hint: &'static str,
    },
    #[error("the network helper did not report: {0}")]
    NoReport(io::Error),
    #[error("cannot open the network helper's namespace {path}: {source}")]
    OpenNs { path: String, source: io::Error },
    #[error("pod sandboxes need a routed network (Net::routed), not {0}")]
    NotRouted(String),
    #[error("`ip` (iproute2) is not installed: looked in PATH, /usr/sbin and /sbin; pod sandboxes are configured with it")]
    NoIp,
    #[error("cannot set up the sandbox of pod IP {ip}: {message}")]
    Sandbox { ip: Ipv4Addr, message: String },
    #[error("cannot set up the namespace of the node with InternalIP {ip}: {message}")]
    Node { ip: Ipv4Addr, message: String },
}

/// Why a tool run in a network ([`Net::run_tool`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// It could not be started or waited for (the message says which).
    #[error("{0}")]
    Run(String),
    /// It ran and failed; its standard error, trimmed.
    #[error("{0}")]
    Failed(String),
}

/// Where a cluster's data-path sockets live: the host's stack (loopback
/// addresses), a private network namespace, or — in a process that joined
/// one ([`Net::joined`]) — the namespace this process is in. Cheap to clone.
#[derive(Clone, Default)]
pub struct Net {
    private: Option<Arc<Private>>,
    /// Set for a pod's sandbox: sockets and joined processes are in its
    /// namespace (`private` is then the cluster's network it hangs off).
    pod: Option<Arc<sandbox::PodNs>>,
    sources: Arc<Sources>,
}

/// Where connections go out from, and how their sockets are set up.
#[derive(Default)]
struct Sources {
    addrs: Vec<Ipv4Addr>,
    next: AtomicUsize,
    /// Bind sockets made here to the loopback device (see the helper).
    bind_lo: bool,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(pod) = &self.pod {
            let kind = if pod.node { "Node" } else { "Pod" };
            return write!(f, "Net::{kind}(pid {})", pod.pid);
        }
        match (&self.private, self.sources.bind_lo) {
            (Some(p), _) if p.helper.mode == helper::Mode::Routed => {
                write!(f, "Net::Routed(pid {})", p.helper.pid())
            }
            (Some(p), _) => write!(f, "Net::Private(pid {})", p.helper.pid()),
            (None, true) => f.write_str("Net::Joined"),
            (None, false) => f.write_str("Net::Host"),
        }
    }
}

impl Net {
    /// The host's network stack.
    pub fn host() -> Net {
        Net::default()
    }

    /// A new private network whose loopback device carries `blocks`.
    /// Connections go out from `sources` in turn (addresses inside
    /// `blocks`; none: the kernel's choice): each source address has its own
    /// ~28,000 ephemeral ports per destination, and a run that holds tens
    /// of thousands of connections to one LB address needs more than one.
    pub fn private(blocks: &[Block], sources: &[Ipv4Addr]) -> Result<Net, NetError> {
        Self::start(blocks, sources, helper::Mode::Loopback)
    }

    /// A new private network like [`Net::private`] whose pods each get a
    /// namespace of their own ([`Net::sandbox`]) with an address in `pods`
    /// (not in `blocks`): each is routed to its sandbox, and the rest of
    /// `pods` to a sink that drops what it gets, as a network drops packets
    /// for an address nobody holds (no error, no reset). Its sockets are
    /// not bound to loopback, and the namespace (not the host) reuses
    /// TIME_WAIT ports and forwards between pods.
    pub fn routed(blocks: &[Block], sources: &[Ipv4Addr], pods: Block) -> Result<Net, NetError> {
        let net = Self::start(blocks, sources, helper::Mode::Routed)?;
        let sink = net.sink(pods)?;
        if let Some(p) = &net.private {
            let _ = p.sink.set(sink);
        }
        Ok(net)
    }

    fn start(blocks: &[Block], sources: &[Ipv4Addr], mode: helper::Mode) -> Result<Net, NetError> {
        let helper = Arc::new(helper::Helper::start(blocks, mode)?);
        let pool = Arc::new(PoolShared {
            pool: Mutex::new(Pool::default()),
            wake: Condvar::new(),
        });
        // The filler holds the helper only while it asks for a batch:
        // dropping the last Net closes the pool, which wakes and ends it.
        let weak = Arc::downgrade(&helper);
        let filler = {
            let pool = pool.clone();
            std::thread::Builder::new()
                .name("zdt-netns-fill".into())
                .spawn(move || fill(pool, weak))
                .map_err(NetError::Fork)?
        };
        let private = Arc::new(Private {
            helper,
            pool,
            filler: Some(filler),
            sink: OnceLock::new(),
        });
        Ok(Net {
            private: Some(private),
            pod: None,
            sources: Arc::new(Sources {
                addrs: sources.to_vec(),
                ..Sources::default()
            }),
        })
    }

    /// The network a process that joined a private one
    /// ([`Net::join_before_exec`]) is in: sockets made here, set up as the
    /// helper sets up its own (bound to loopback when `loopback`: see
    /// [`Net::binds_loopback`]), sent from `sources` in turn.
    pub fn joined(sources: &[Ipv4Addr], loopback: bool) -> Net {
        Net {
            private: None,
            pod: None,
            sources: Arc::new(Sources {
                addrs: sources.to_vec(),
                next: AtomicUsize::new(0),
                bind_lo: loopback,
            }),
        }
    }

    /// True when this network's sockets are bound to its loopback device
    /// (a private network whose every address is there), so that a process
    /// joining it sets its own up alike ([`Net::joined`]).
    pub fn binds_loopback(&self) -> bool {
        match &self.private {
            Some(p) => self.pod.is_none() && p.helper.mode == helper::Mode::Loopback,
            None => self.sources.bind_lo,
        }
    }

    /// True for a routed network, whose pods have sandboxes of their own.
    pub fn is_routed(&self) -> bool {
        self.private
            .as_ref()
            .is_some_and(|p| p.helper.mode == helper::Mode::Routed)
    }

    /// True for a pod's sandbox ([`Sandbox::net`]).
    pub fn is_sandbox(&self) -> bool {
        self.pod.as_ref().is_some_and(|p| !p.node)
    }

    /// True for a node's namespace ([`NodeNet::net`]).
    pub fn is_node(&self) -> bool {
        self.pod.as_ref().is_some_and(|p| p.node)
    }

    /// The same network, but connections leave from the address the
    /// kernel picks (on a private network: the block's own address on
    /// loopback), not from the client addresses. For the cluster's own
    /// connections to pods (the kubelet's probes): a client's connection
    /// DNATed to a pod and a probe of that pod from the same client
    /// address and port would be one 4-tuple at the pod.
    pub fn without_sources(&self) -> Net {
        Net {
            private: self.private.clone(),
            pod: self.pod.clone(),
            sources: Arc::new(Sources {
                addrs: Vec::new(),
                next: AtomicUsize::new(0),
                bind_lo: self.sources.bind_lo,
            }),
        }
    }

    /// The source addresses connections go out from (for a process that
    /// joins this network: see [`Net::joined`]).
    pub fn sources(&self) -> &[Ipv4Addr] {
        &self.sources.addrs
    }

    /// True for a private network namespace.
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// The helper's pid, whose namespaces are the network's — for a pod's
    /// sandbox, its pause process's ([`Net::enter_command`] says how to
    /// enter them).
    pub fn helper_pid(&self) -> Option<u32> {
        if let Some(pod) = &self.pod {
            return Some(pod.pid as u32);
        }
        self.private.as_ref().map(|p| p.helper.pid() as u32)
    }

    /// A new `NETLINK_NETFILTER` socket in this private network or node
    /// (to read NFLOG messages of its rules); `None` on the host's stack
    /// and in a pod's sandbox.
    pub fn netfilter_socket(&self) -> Option<io::Result<OwnedFd>> {
        let p = self.private.as_ref()?;
        match &self.pod {
            Some(node) if node.node => Some(p.helper.netfilter_socket_in(node.net_ns.as_fd())),
            Some(_) => None,
            None => Some(p.helper.netfilter_socket()),
        }
    }

    /// The command that opens a shell in this network, for people who want
    /// to reach pod and node addresses by hand.
    pub fn enter_command(&self) -> Option<String> {
        let p = self.private.as_ref()?;
        let user = if p.helper.user_ns.is_some() {
            " -U --preserve-credentials"
        } else {
            ""
        };
        Some(format!("nsenter -t {}{user} -n", self.helper_pid()?))
    }

    /// A new non-blocking TCP socket in this network, for `addr`'s family
    /// (a private network is IPv4 only).
    pub fn tcp_socket(&self, addr: &SocketAddr) -> io::Result<Socket> {
        match &self.private {
            None => {
                let socket = Socket::new(
                    socket2::Domain::for_address(*addr),
                    socket2::Type::from(libc::SOCK_STREAM | libc::SOCK_NONBLOCK),
                    Some(socket2::Protocol::TCP),
                )?;
                if self.sources.bind_lo {
                    bind_to_loopback(&socket)?;
                }
                Ok(socket)
            }
            Some(_) if addr.is_ipv6() => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an emulated cluster's network is IPv4 only",
            )),
            Some(p) => match &self.pod {
                Some(pod) => p
                    .helper
                    .sockets_in(pod.net_ns.as_fd(), 1)?
                    .pop()
                    .map(Socket::from)
                    .ok_or_else(|| io::Error::other("the network helper sent no socket")),
                None => p.take().map(Socket::from),
            },
        }
    }

    /// Open a TCP connection to `addr` from this network (see
    /// [`crate::tcp::connect`] for what the host stack adds).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.connect_traced(addr, &mut None).await
    }

    /// [`Net::connect`], also setting `local` to the connection's local
    /// address as soon as it has one — even when the connect then fails
    /// (a peer that resets at once), so the failure can be matched with
    /// what the peer recorded.
    pub async fn connect_traced(
        &self,
        addr: SocketAddr,
        local: &mut Option<SocketAddr>,
    ) -> io::Result<TcpStream> {
        self.dial(addr, local)?.finish().await
    }

    /// [`Net::connect_traced`] without the reactor: the connect started,
    /// for a caller that waits for the handshake its own way.
    pub fn dial(
        &self,
        addr: SocketAddr,
        local: &mut Option<SocketAddr>,
    ) -> io::Result<crate::tcp::Dialed> {
        let addrs = &self.sources.addrs;
        if self.private.is_none() && addrs.is_empty() {
            return crate::tcp::dial(addr, local);
        }
        let socket = self.tcp_socket(&addr)?;
        if !addrs.is_empty() {
            let n = self.sources.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
            crate::tcp::set_bind_address_no_port(&socket);
            socket.bind(&SocketAddr::from((addrs[n], 0)).into())?;
        }
        crate::tcp::dial_socket(socket, addr, local)
    }

    /// A listening socket on `addr` in this network. `reuse_port` lets
    /// another socket bind the same address (a reserved port handed on).
    pub fn listen_std(
        &self,
        addr: SocketAddr,
        backlog: i32,
        reuse_port: bool,
    ) -> io::Result<std::net::TcpListener> {
        let socket = self.tcp_socket(&addr)?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket.into())
    }

    /// [`Net::listen_std`] as a tokio listener (inside a runtime).
    pub fn listen(&self, addr: SocketAddr, backlog: i32) -> io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::from_std(self.listen_std(addr, backlog, false)?)
    }

    /// Run `program ARGS` joined to this network with `stdin` as its input
    /// (`nft -f -`, `ip -batch -`); its standard output once it succeeded.
    pub fn run_tool(
        &self,
        program: &std::path::Path,
        args: &[&str],
        stdin: &str,
    ) -> Result<String, ToolError> {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.join_before_exec(&mut cmd, false);
        let mut child = cmd
            .spawn()
            .map_err(|e| ToolError::Run(format!("cannot start {}: {e}", program.display())))?;
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ToolError::Run(e.to_string()))?;
        if !out.status.success() {
            return Err(ToolError::Failed(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Make `cmd`'s process join this network before it executes (nothing
    /// for the host's stack). With `children`, the processes it forks start
    /// in the cluster's PID namespace, which the kernel empties when the
    /// network's helper ends — however zdt ended (nginx's workers). A
    /// process whose children go elsewhere cannot start threads, so a
    /// multi-threaded one (the traffic generator) joins without. The
    /// namespaces' descriptors stay open in this process for as long as
    /// the network lives.
    pub fn join_before_exec(&self, cmd: &mut std::process::Command, children: bool) {
        use std::os::unix::process::CommandExt;
        let Some(p) = &self.private else { return };
        let user = p.helper.user_ns.as_ref().map(AsRawFd::as_raw_fd);
        let net = match &self.pod {
            Some(pod) => pod.net_ns.as_raw_fd(),
            None => p.helper.net_ns.as_raw_fd(),
        };
        let pid = p
            .helper
            .pid_ns
            .as_ref()
            .filter(|_| children)
            .map(AsRawFd::as_raw_fd);
        // SAFETY: setns is async-signal-safe; nothing here allocates.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(user) = user {
                    if libc::setns(user, libc::CLONE_NEWUSER) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    keep_capabilities_across_exec()?;
                }
                if libc::setns(net, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(pid) = pid {
                    if libc::setns(pid, libc::CLONE_NEWPID) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

/// Joining a user namespace gives every capability in it, but executing a
/// program as a uid other than 0 drops them. Making them inheritable and
/// ambient keeps them, so a joined process (nginx on port 80, nft) can do
/// in the namespace what root could, without being uid 0 there.
/// Async-signal-safe: raw system calls on stack memory only.
fn keep_capabilities_across_exec() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget/capset with a v3 header and two data words, as the
    // kernel expects; prctl takes plain integers.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for d in &mut data {
            d.inheritable = d.permitted;
        }
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for cap in 0..64 {
            let word = data[cap / 32].permitted;
            if word & (1 << (cap % 32)) != 0 {
                // EINVAL past the kernel's last capability: nothing to keep.
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                );
            }
        }
    }
    Ok(())
}

/// Where the configuration says `Auto`: `host` keeps emulated clusters on
/// the host's network stack (loopback addresses), as on a machine that
/// cannot make namespaces; `private` gives a cluster one namespace shared
/// by its pods; `pods` demands a namespace per pod ([`Net::routed`], with
/// the nftables data path), which is also what `Auto` picks where it can;
/// `nodes` every node a namespace too ([`Net::node`]).
pub const NETWORK_ENV: &str = "ZDT_NETWORK";

/// Why this process cannot give an emulated cluster a network of its own,
/// or `None` when it can: probed once, as the answer does not change.
pub fn private_unavailable() -> Option<&'static str> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if std::env::var(NETWORK_ENV).is_ok_and(|v| v == "host") {
                return Some(format!("{NETWORK_ENV}=host asks for the host's stack"));
            }
            match Net::private(&[], &[]) {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        })
        .as_deref()
}

/// Sockets made ahead: a connection takes one without waiting for the
/// helper; the filler tops the pool up below [`LOW`].
#[derive(Default)]
struct Pool {
    ready: Vec<OwnedFd>,
    closed: bool,
}

const LOW: usize = 64;
const BATCH: usize = 128;

struct PoolShared {
    pool: Mutex<Pool>,
    wake: Condvar,
}

struct Private {
    helper: Arc<helper::Helper>,
    pool: Arc<PoolShared>,
    /// Joined on drop: while it asks for a batch the filler holds the
    /// helper, and the helper (and the namespace) must be gone when the
    /// network is.
    filler: Option<std::thread::JoinHandle<()>>,
    /// A routed network's sink for pod addresses without a sandbox (its
    /// pause process; it ends with the helper's PID namespace).
    sink: OnceLock<sandbox::PodNs>,
}

impl Private {
    fn take(&self) -> io::Result<OwnedFd> {
        let popped = {
            let mut pool = self.pool.pool.lock().unwrap_or_else(|e| e.into_inner());
            let fd = pool.ready.pop();
            if pool.ready.len() < LOW {
                self.pool.wake.notify_one();
            }
            fd
        };
        match popped {
            Some(fd) => Ok(fd),
            // The filler is behind: ask the helper directly.
            None => self
                .helper
                .sockets(1)?
                .pop()
                .ok_or_else(|| io::Error::other("the network helper sent no socket")),
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        {
            let mut pool = self.pool.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.closed = true;
            pool.ready.clear();
            self.pool.wake.notify_all();
        }
        if let Some(filler) = self.filler.take() {
            let _ = filler.join();
        }
    }
}

fn fill(shared: Arc<PoolShared>, helper: std::sync::Weak<helper::Helper>) {
    loop {
        {
            let pool = shared.pool.lock().unwrap_or_else(|e| e.into_inner());
            let pool = shared
                .wake
                .wait_while(pool, |p| !p.closed && p.ready.len() >= LOW)
                .unwrap_or_else(|e| e.into_inner());
            if pool.closed {
                return;
            }
        }
        let Some(helper) = helper.upgrade() else {
            return;
        };
        match helper.sockets(BATCH) {
            Ok(fds) => {
                let mut pool = shared.pool.lock().unwrap_or_else(|e| e.into_inner());
                // A network dropped meanwhile keeps none.
                if !pool.closed {
                    pool.ready.extend(fds);
                }
            }
            // A dead helper: every later take() asks it directly and
            // returns its error where the data path wants a socket.
            Err(_) => return,
        }
    }
}

/// SO_BINDTODEVICE "lo" (see the helper, which does it to its sockets).
fn bind_to_loopback(socket: &Socket) -> io::Result<()> {
    if bind_fd_to_loopback(socket.as_raw_fd()) == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The system call alone: the helper calls it between fork and exit.
fn bind_fd_to_loopback(fd: RawFd) -> libc::c_int {
    let name = c"lo";
    // SAFETY: setsockopt reads the NUL-terminated name of the length given;
    // an invalid descriptor is an error return, not undefined behaviour.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.count_bytes() as libc::socklen_t + 1,
        )
    }
}

/// Take ownership of a received descriptor.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel just installed `fd` in this process for us
    // (SCM_RIGHTS), and nothing else refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
