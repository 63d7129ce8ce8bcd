//! A cloud load-balancer model: an L4 TCP proxy whose backends are the
//! nodes, health-probed like a cloud LB, with an admin API and events.
//!
//! Lifecycle: [`Lb::start`] binds the frontend and starts one probe task per
//! backend; every new client connection goes to one healthy backend and is
//! spliced both ways until either side closes. The returned [`LbHandle`]
//! owns every task: [`LbHandle::shutdown`] (or dropping the handle) stops
//! them. [`Admin`] is the one implementation of list/add/remove/drain/
//! restore; the HTTP admin API ([`LbHandle::serve_admin`]) is a thin layer
//! over it, and [`AdminClient`] speaks that HTTP API from another process.

pub(crate) mod admin;
pub(crate) mod backend;
pub mod config;
pub mod hold;
mod pool;
mod probe;
pub(crate) mod profile;
mod proxy;
mod splice;
mod status;
#[cfg(feature = "testing")]
pub mod testing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use zdt_core::events::EventSink;
use zdt_core::netns::Net;

pub use admin::{Admin, AdminClient};
pub use backend::{BackendSpec, ProbeTarget};
pub use config::{deprecated_keys, BackendConfig, ConfigError, DeprecatedKey, LbFile};
pub use profile::{
    ClusterProbe, Forwarding, InitialHealth, ProbeSettings, ProbeSettingsError, Profile,
    UnknownProfile,
};
pub use status::{AdminError, BackendStatus, Health};
pub use zdt_core::net::{Dial, Dialer, PassThrough, TcpDialer};
pub use zdt_core::provenance::ConnRecord;

/// How a new client connection picks among the eligible backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Uniformly at random from a seeded sequence (Azure's and kind's envoy
    /// `RANDOM` are not sticky either).
    #[default]
    Random,
    /// A hash of the client's address and port and the frontend's (the
    /// 5-tuple, protocol being always TCP): a client port keeps its backend.
    Hash,
}

/// Everything that shapes the LB's behaviour. `LbConfig { frontend, probe,
/// ..Default::default() }` gives the clouds' common choices.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// Where clients connect (`127.0.0.1:0` picks a port).
    pub frontend: SocketAddr,
    pub probe: ProbeSettings,
    /// Whether backends that pass one probe at start are healthy at once
    /// (`Ready`), or need `healthy_threshold` probes first (`Probed`).
    pub initial_health: InitialHealth,
    /// With no healthy backend, send to all (not draining) backends, as
    /// Azure and AWS do; `false` resets new connections instead.
    pub fail_open: bool,
    pub selection: Selection,
    /// At most this many client connections at once; the accept loop waits
    /// for a free slot before accepting (the kernel backlog queues the rest).
    pub max_connections: usize,
    /// How long a removed backend's established connections may continue,
    /// and the default for a drain without its own timeout.
    pub drain_timeout: Duration,
    /// Seeds backend selection and the probes' first-phase offsets, so a run
    /// can be repeated.
    pub seed: u64,
    /// How long a connection whose backend dropped it (`Dial::Dropped`) is
    /// held open unanswered before the LB closes it (the client normally
    /// times out first).
    pub hold_dropped: Duration,
    /// Hold those connections in a `zdt lb-hold` helper started from this
    /// zdt binary, so they do not count against this process's open-files
    /// limit; `None` holds them here.
    pub hold_in: Option<std::path::PathBuf>,
    /// Run the data path (accept loop and connections) on a thread of its
    /// own with a single-threaded runtime, as `zdt lb` does, instead of on
    /// the caller's runtime: in `zdt run` the emulator shares that runtime,
    /// and a connection hopping between its worker threads costs CPU and
    /// latency (docs/bench-lb.md). Probes and the admin API stay on the
    /// caller's runtime.
    pub own_thread: bool,
    /// Keep a [`ConnRecord`] of every accepted connection (its client
    /// address, the backend and pod it went to, the dial's fate), for a run
    /// that attributes each failed request to its own node and pod
    /// ([`LbHandle::connections`]). About 100 bytes per connection.
    pub record_connections: bool,
    /// The network the frontend listens in and probes go out from (an
    /// emulated cluster's own; backends dial through their own dialers).
    pub net: Net,
    /// How the modelled cloud's LB carries connections (its profile's
    /// [`Profile::forwarding`]); only a `pass_through` data path makes
    /// `PassThrough` real, else the LB proxies in this process.
    pub forwarding: Forwarding,
    /// The packet data path to program instead of proxying: nothing then
    /// listens on the frontend, the LB only probes and tells it which
    /// backends take new connections.
    pub pass_through: Option<PassThroughPath>,
}

/// A [`PassThrough`] data path in an [`LbConfig`].
#[derive(Clone)]
pub struct PassThroughPath(pub std::sync::Arc<dyn PassThrough>);

impl std::fmt::Debug for PassThroughPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassThroughPath")
    }
}

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            frontend: SocketAddr::from(([127, 0, 0, 1], 0)),
            probe: Profile::Azure.probe(true),
            initial_health: InitialHealth::Probed,
            fail_open: true,
            selection: Selection::Random,
            max_connections: 65_536,
            drain_timeout: Duration::from_secs(30),
            seed: 0,
            hold_dropped: Duration::from_secs(300),
            hold_in: None,
            own_thread: false,
            record_connections: false,
            net: Net::host(),
            forwarding: Forwarding::default(),
            pass_through: None,
        }
    }
}

/// Why the LB could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LbError {
    /// The frontend or admin address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable; the message names the field.
    #[error("invalid LB config: {0}")]
    Config(#[from] ConfigError),
    /// The data path's own thread ([`LbConfig::own_thread`]) or its
    /// runtime could not be started.
    #[error("cannot start the LB's thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// The load balancer.
pub struct Lb;

impl Lb {
    /// Bind the frontend, start probing `backends`, and serve until the
    /// handle is shut down or dropped, or `cancel` fires. Backends start
    /// `unknown` (not healthy) and become healthy after `healthy_threshold`
    /// successful probes, as on the clouds, or after one with
    /// [`InitialHealth::Ready`]; use [`Admin::wait_healthy`] to wait for
    /// that.
    pub async fn start(
        config: LbConfig,
        backends: Vec<BackendSpec>,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<LbHandle, LbError> {
        config.probe.validate().map_err(ConfigError::from)?;
        if config.max_connections == 0 {
            return Err(ConfigError::NoConnections.into());
        }
        let mut config = config;
        // Each connection holds two descriptors (client + backend). Past the
        // process's limit accept() fails with EMFILE on every try; waiting
        // for a permit instead keeps clients queued in the backlog.
        let fd_budget = open_files_limit().saturating_sub(256) / 2;
        if fd_budget > 0 && config.max_connections > fd_budget {
            // Only a limit somebody asked for is worth a warning; the default
            // is meant to be cut down to what the process may open.
            if config.max_connections != LbConfig::default().max_connections {
                tracing::warn!(
                    "lb max_connections {} exceeds what the open-files limit allows; using {fd_budget}",
                    config.max_connections
                );
            } else {
                tracing::debug!("lb max_connections {fd_budget} (the open-files limit)");
            }
            config.max_connections = fd_budget;
        }
        // A pass-through LB has no socket: the packets go past it.
        let listener = match config.pass_through {
            Some(_) => None,
            None => Some(
                listen(&config.net, config.frontend).map_err(|source| LbError::Bind {
                    addr: config.frontend,
                    source,
                })?,
            ),
        };
        let frontend = match &listener {
            Some(l) => l.local_addr().map_err(|source| LbError::Bind {
                addr: config.frontend,
                source,
            })?,
            None => config.frontend,
        };
        // Our own token, so dropping the handle stops everything without
        // cancelling the caller's token.
        let cancel = cancel.child_token();
        let (done_tx, done_rx) = mpsc::channel(1);
        let pool = pool::PoolState::new(config, frontend, events, cancel.clone(), done_tx.clone());
        for spec in backends {
            pool.add(spec, true)?;
        }
        let thread = match listener {
            None => None,
            Some(listener) if pool.config.own_thread => Some(
                proxy::spawn_on_own_thread(pool.clone(), listener, done_tx)
                    .map_err(LbError::Thread)?,
            ),
            Some(listener) => {
                tokio::spawn(proxy::accept_loop(pool.clone(), listener, done_tx));
                None
            }
        };
        Ok(LbHandle {
            pool,
            frontend,
            cancel,
            done: Some(done_rx),
            thread,
        })
    }
}

/// Bind the frontend with a deep accept backlog: at thousands of new
/// connections per second a short CPU stall would otherwise overflow the
/// default queue and clients would see SYN retransmits (1 s connect delays).
fn listen(net: &Net, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::from_std_stream(net.tcp_socket(&addr)?.into());
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The kernel caps this at net.core.somaxconn.
    socket.listen(65_535)
}

/// The soft RLIMIT_NOFILE (0 when unknown).
fn open_files_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// Owner of a running LB: its tasks stop when this is shut down or dropped.
pub struct LbHandle {
    pool: Arc<pool::PoolState>,
    frontend: SocketAddr,
    cancel: CancellationToken,
    done: Option<mpsc::Receiver<()>>,
    /// The data path's own thread ([`LbConfig::own_thread`]).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LbHandle {
    /// The bound frontend address (with the real port when `:0` was asked).
    pub fn frontend_addr(&self) -> SocketAddr {
        self.frontend
    }

    /// The in-process admin API (cheap to clone, usable after the handle
    /// moved elsewhere; operations fail with `ShuttingDown` once stopped).
    pub fn admin(&self) -> Admin {
        Admin::new(self.pool.clone())
    }

    /// Serve the HTTP admin API on `addr` until the LB stops; returns the
    /// bound address.
    /// The connections recorded so far, taken (empty unless
    /// [`LbConfig::record_connections`]).
    pub fn connections(&self) -> Vec<ConnRecord> {
        match &self.pool.config.pass_through {
            Some(p) => p.0.connections(),
            None => self.pool.take_connections(),
        }
    }

    /// Whether packets pass through to the nodes (no socket of this LB
    /// is on the path), as [`LbConfig::pass_through`] asked.
    pub fn passes_through(&self) -> bool {
        self.pool.config.pass_through.is_some()
    }

    pub async fn serve_admin(&self, addr: SocketAddr) -> Result<SocketAddr, LbError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| LbError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| LbError::Bind { addr, source })?;
        let done = self.pool.task_token().ok_or(AdminError::ShuttingDown)?;
        tokio::spawn(admin::http::serve(
            self.admin(),
            listener,
            self.cancel.clone(),
            done,
        ));
        Ok(bound)
    }

    /// Stop accepting, stop probing, close every connection, and wait until
    /// every task (and the data path's own thread) of this LB has finished.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.pool.close_tasks();
        if let Some(mut done) = self.done.take() {
            // Every task holds a sender; `None` means all of them are gone.
            let _ = done.recv().await;
        }
        if let Some(thread) = self.thread.take() {
            // Its last connection is closed by now; what is left is the
            // runtime winding down.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for LbHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.pool.close_tasks();
    }
}
