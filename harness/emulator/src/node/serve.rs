//! `zdt serve`: a small HTTP backend answering 200 with `X-Pod`/`X-Node`
//! headers, with nginx's stop-signal semantics (SIGTERM fast, SIGQUIT
//! graceful). Used in containers and as the emulator's pod fallback.
//!
//! The in-process [`Server`] is the whole thing; the binary only maps real
//! signals onto [`ServerHandle::signal`], so tests drive exactly the code a
//! container runs.
//!
//! Stop semantics, as nginx (`ngx_process_cycle.c`) behaves:
//! - [`Signal::Term`] (SIGTERM, SIGINT): fast shutdown. The listener closes
//!   and every connection — in-flight requests and idle keep-alive ones — is
//!   cut at once.
//! - [`Signal::Quit`] (SIGQUIT): graceful shutdown. The listener closes (new
//!   connections are refused), idle keep-alive connections are closed,
//!   in-flight requests finish and their response carries
//!   `Connection: close`; the server exits when the last one is done.
//! - [`Signal::Kill`]: what SIGKILL does to a process: everything is gone.
//! - Any other signal is ignored (nginx reopens logs on SIGUSR1, reloads on
//!   SIGHUP: neither stops serving), which is how a pod that ignores its stop
//!   signal is modelled.
//!
//! Real apps are not instant, so three knobs make it slower: `delay` before
//! each response and `body_delay` between a response's head and its body
//! (requests are in flight when a stop signal arrives), and `start_delay`
//! before it listens (an app warming up refuses connections; a stop signal
//! during the warm-up ends it at once).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use zdt_core::netns::Net;

/// What one server answers and where.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free port (see
    /// [`ServerHandle::addr`]).
    pub listen: SocketAddr,
    /// Value of the `X-Pod` response header.
    pub pod: String,
    /// Value of the `X-Node` response header.
    pub node: String,
    /// Wait this long before answering each request (not `/healthz`).
    pub delay: Duration,
    /// Send each response's head at once and its body this long later
    /// (not `/healthz`): a download or a stream in progress.
    pub body_delay: Duration,
    /// The network the server listens in (the cluster's).
    pub net: Net,
    /// Listen only this long after start, like an app warming up: the port
    /// is bound (and reserved) at once, but connections are refused until
    /// then. A stop signal meanwhile ends the server at once.
    pub start_delay: Duration,
}

impl ServeConfig {
    pub fn new(listen: SocketAddr, pod: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            listen,
            pod: pod.into(),
            node: node.into(),
            delay: Duration::ZERO,
            body_delay: Duration::ZERO,
            start_delay: Duration::ZERO,
            net: Net::host(),
        }
    }
}

/// A signal as the server understands it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGTERM / SIGINT: fast shutdown.
    Term,
    /// SIGQUIT: graceful shutdown.
    Quit,
    /// SIGKILL: gone at once.
    Kill,
    /// Any other signal number: ignored, as nginx ignores e.g. SIGUSR1.
    Other(i32),
}

impl Signal {
    /// The server's reading of a POSIX signal number.
    pub fn from_number(signo: i32) -> Signal {
        match signo {
            libc::SIGTERM | libc::SIGINT => Signal::Term,
            libc::SIGQUIT => Signal::Quit,
            libc::SIGKILL => Signal::Kill,
            other => Signal::Other(other),
        }
    }
}

/// How the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerExit {
    /// After [`Signal::Quit`], once every in-flight request finished.
    Graceful,
    /// After [`Signal::Term`]: connections were cut.
    Fast,
    /// After [`Signal::Kill`] or the handle was dropped.
    Killed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Cut,
}

/// ServerState state read by the accept loop and every connection.
struct ServerState {
    config: ServeConfig,
    phase: watch::Sender<Phase>,
    paused: watch::Sender<bool>,
}

/// A running server. Dropping the handle kills it (like `kill_on_drop`), so
/// no server outlives its owner.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<ServerState>,
    /// Signals that arrived while paused wait here, as a stopped process's
    /// pending signals do.
    pending: std::sync::Mutex<Vec<Signal>>,
    kill: CancellationToken,
    exit: watch::Receiver<Option<ServerExit>>,
}

/// The in-process HTTP server.
pub struct Server;

impl Server {
    /// Bind `config.listen` and start serving in the background (after
    /// `config.start_delay`).
    pub async fn start(config: ServeConfig) -> std::io::Result<ServerHandle> {
        let (socket, addr) = if config.start_delay.is_zero() {
            let listener = config.net.listen(config.listen, 1024)?;
            let addr = listener.local_addr()?;
            (Socket::Listening(listener), addr)
        } else {
            // Bound but not listening: the port is ours, and a connect gets
            // a RST (connection refused) as from an app not up yet.
            let socket = TcpSocket::from_std_stream(config.net.tcp_socket(&config.listen)?.into());
            socket.bind(config.listen)?;
            let addr = socket.local_addr()?;
            (Socket::WarmingUp(socket), addr)
        };
        let shared = Arc::new(ServerState {
            config,
            phase: watch::channel(Phase::Serving).0,
            paused: watch::channel(false).0,
        });
        let kill = CancellationToken::new();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(run(socket, shared.clone(), kill.clone(), exit_tx));
        Ok(ServerHandle {
            addr,
            shared,
            pending: std::sync::Mutex::new(Vec::new()),
            kill,
            exit,
        })
    }
}

impl ServerHandle {
    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Deliver a signal. While paused only [`Signal::Kill`] acts at once;
    /// others act on [`ServerHandle::resume`], as for a stopped process.
    pub fn signal(&self, signal: Signal) {
        if signal == Signal::Kill {
            self.kill.cancel();
            return;
        }
        if *self.shared.paused.borrow() {
            self.pending.lock().expect("pending lock").push(signal);
            return;
        }
        self.apply(signal);
    }

    fn apply(&self, signal: Signal) {
        match signal {
            Signal::Term => {
                self.shared.phase.send_replace(Phase::Cut);
            }
            Signal::Quit => {
                // A fast shutdown already under way is not slowed down.
                self.shared.phase.send_if_modified(|p| {
                    if *p == Phase::Serving {
                        *p = Phase::Draining;
                        true
                    } else {
                        false
                    }
                });
            }
            Signal::Kill => self.kill.cancel(),
            Signal::Other(signo) => {
                tracing::debug!(addr = %self.addr, signo, "serve: signal ignored");
            }
        }
    }

    /// SIGSTOP: stop accepting and answering; the kernel still completes
    /// handshakes into the backlog, and requests wait unanswered.
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// SIGCONT: carry on, then act on signals that arrived meanwhile.
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        for s in pending {
            self.apply(s);
        }
    }

    /// How the server ended, once it has (`None` while it runs).
    pub fn exit_status(&self) -> Option<ServerExit> {
        *self.exit.borrow()
    }

    /// Resolves when the server has exited: the listener is closed and every
    /// connection is gone.
    pub fn exited(&self) -> impl Future<Output = ServerExit> + Send + 'static {
        let mut rx = self.exit.clone();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v.expect("checked is_some"),
                // The server task vanished (runtime shutting down): it is gone.
                Err(_) => ServerExit::Killed,
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// The server's socket before it serves.
enum Socket {
    Listening(TcpListener),
    /// Bound, to `listen()` once the start delay is over.
    WarmingUp(TcpSocket),
}

/// Backlog once a warmed-up server listens (tokio's `bind` default).
const BACKLOG: u32 = 1024;

/// Wait out the start delay. `Err` is how the server ended instead: an app
/// that has not installed its signal handlers yet dies of any stop signal.
async fn warm_up(
    socket: Socket,
    shared: &ServerState,
    kill: &CancellationToken,
) -> Result<TcpListener, ServerExit> {
    let socket = match socket {
        Socket::Listening(l) => return Ok(l),
        Socket::WarmingUp(s) => s,
    };
    let mut phase = shared.phase.subscribe();
    let mut paused = shared.paused.subscribe();
    tokio::select! {
        biased;
        _ = kill.cancelled() => return Err(ServerExit::Killed),
        p = async { phase.wait_for(|p| *p != Phase::Serving).await.map(|p| *p) } => {
            return Err(if matches!(p, Ok(Phase::Cut)) { ServerExit::Fast } else { ServerExit::Graceful });
        }
        // A stopped process does not get on with its warm-up.
        _ = async {
            tokio::time::sleep(shared.config.start_delay).await;
            let _ = paused.wait_for(|p| !*p).await;
        } => {}
    }
    socket.listen(BACKLOG).map_err(|e| {
        tracing::warn!(error = %e, "serve: cannot listen after the start delay");
        ServerExit::Killed
    })
}

async fn run(
    socket: Socket,
    shared: Arc<ServerState>,
    kill: CancellationToken,
    exit: watch::Sender<Option<ServerExit>>,
) {
    let listener = match warm_up(socket, &shared, &kill).await {
        Ok(l) => l,
        Err(status) => {
            let _ = exit.send(Some(status));
            return;
        }
    };
    // Every connection task holds a clone of `alive`; when all are dropped,
    // `all_done` yields None (mini-redis' shutdown pattern).
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let mut phase = shared.phase.subscribe();
    let mut paused = shared.paused.subscribe();
    let status = loop {
        tokio::select! {
            biased;
            _ = kill.cancelled() => break ServerExit::Killed,
            p = async { phase.wait_for(|p| *p != Phase::Serving).await.map(|p| *p) } => {
                break if matches!(p, Ok(Phase::Cut)) { ServerExit::Fast } else { ServerExit::Graceful };
            }
            // A paused process does not call accept(): handshakes pile up in
            // the backlog.
            accepted = async {
                if paused.wait_for(|p| !*p).await.is_err() {
                    std::future::pending::<()>().await;
                }
                listener.accept().await
            } => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone(), kill.clone(), alive.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // let the run know the machine, not the pod, failed.
                    zdt_core::hostfault::record(e.raw_os_error());
                    tracing::warn!(error = %e, "serve: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    };
    // Stop listening first: from here new connections are refused.
    drop(listener);
    drop(alive);
    let status = match status {
        ServerExit::Graceful => {
            // Biased, phase first: a TERM cuts the connections, so when it
            // arrives `all_done` becomes ready too and must not win the race.
            tokio::select! {
                biased;
                _ = kill.cancelled() => ServerExit::Killed,
                _ = async { let _ = phase.wait_for(|p| *p == Phase::Cut).await; } => {
                    let _ = all_done.recv().await;
                    ServerExit::Fast
                }
                _ = all_done.recv() => ServerExit::Graceful,
            }
        }
        other => {
            // Connection tasks watch the same phase/kill and drop at once.
            let _ = all_done.recv().await;
            other
        }
    };
    let _ = exit.send(Some(status));
}

async fn connection(
    stream: TcpStream,
    shared: Arc<ServerState>,
    kill: CancellationToken,
    _alive: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let mut phase = shared.phase.subscribe();
    let svc_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| respond(svc_shared.clone(), req, peer));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        if !draining && *phase.borrow_and_update() == Phase::Draining {
            // Idle keep-alive connections close now; busy ones after the
            // response in progress.
            conn.as_mut().graceful_shutdown();
            draining = true;
        }
        if *phase.borrow() == Phase::Cut {
            return; // dropping `conn` closes the socket mid-request
        }
        tokio::select! {
            _ = kill.cancelled() => return,
            _ = conn.as_mut() => return,
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn respond(
    shared: Arc<ServerState>,
    req: Request<Incoming>,
    peer: Option<std::net::SocketAddr>,
) -> Result<Response<Body>, Infallible> {
    let mut paused = shared.paused.subscribe();
    let _ = paused.wait_for(|p| !*p).await;
    let config = &shared.config;
    let health = req.uri().path() == "/healthz";
    if !health && !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
        let _ = paused.wait_for(|p| !*p).await;
    }
    let body = if health {
        Bytes::from_static(b"ok\n")
    } else {
        Bytes::from(format!("pod {} on node {}\n", config.pod, config.node))
    };
    let length = HeaderValue::from(body.len());
    let body = if health || config.body_delay.is_zero() {
        Full::new(body).boxed_unsync()
    } else {
        // The head goes now, the body later: the response is in flight
        // with bytes already received, so a client cannot replay it.
        let delay = config.body_delay;
        let later = futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            let _ = paused.wait_for(|p| !*p).await;
            Ok::<_, Infallible>(Frame::data(body))
        });
        StreamBody::new(later).boxed_unsync()
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, length);
    if let Ok(v) = HeaderValue::from_str(&config.pod) {
        headers.insert("x-pod", v);
    }
    if let Ok(v) = HeaderValue::from_str(&config.node) {
        headers.insert("x-node", v);
    }
    // Who connected, as echo servers say: the client itself behind a
    // pass-through LB, the proxy behind one that terminates TCP.
    if let Some(v) = peer.and_then(|p| HeaderValue::from_str(&p.to_string()).ok()) {
        headers.insert("x-client", v);
    }
    if *shared.phase.borrow() != Phase::Serving {
        // nginx answers the requests it finishes while shutting down
        // gracefully with `Connection: close`.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}
