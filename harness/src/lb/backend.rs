//! What the LB balances over. A backend is anything that can be dialled for
//! a new client connection and probed for health: for kind, a node's
//! `InternalIP:NodePort`; for the emulator, a node whose dialer applies
//! kube-proxy's rules itself (so a request crosses one proxy hop, not two).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::net::TcpStream;

/// The outcome of dialling a backend for one client connection.
#[derive(Debug)]
pub enum Dial {
    /// A connection to whoever serves the request (a pod, a NodePort).
    Connected(TcpStream),
    /// The node silently drops the connection (kube-proxy with
    /// `externalTrafficPolicy: Local` and no local endpoint): the LB keeps the
    /// client connection open and unanswered, so the client sees a timeout.
    Dropped,
    /// The node rejects the connection (kube-proxy with no endpoint at all
    /// for `Cluster`): the LB resets the client connection.
    Refused,
    /// Any other dial failure.
    Failed(io::Error),
}

/// Dials a backend. Implementations must be cheap to call concurrently.
pub trait Dialer: Send + Sync + 'static {
    /// Open a connection on behalf of the client at `client`.
    fn dial(&self, client: SocketAddr) -> BoxFuture<'static, Dial>;
}

/// A plain TCP dialer: a real node's `InternalIP:NodePort`.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    pub addr: SocketAddr,
}

impl Dialer for TcpDialer {
    fn dial(&self, _client: SocketAddr) -> BoxFuture<'static, Dial> {
        let addr = self.addr;
        Box::pin(async move {
            match crate::net::connect(addr).await {
                Ok(s) => Dial::Connected(s),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Dial::Refused,
                Err(e) => Dial::Failed(e),
            }
        })
    }
}

/// Where the LB's health probe goes for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// HTTP GET, healthy iff 200 (kube-proxy's `healthCheckNodePort` for
    /// `Local`, or `:10256/healthz` for `Cluster`).
    Http { addr: SocketAddr, path: String },
    /// TCP connect succeeds.
    Tcp { addr: SocketAddr },
}

/// One backend of the LB pool.
#[derive(Clone)]
pub struct BackendSpec {
    /// The node's name (`zdt-worker2`): admin API and events use it.
    pub name: String,
    pub dialer: Arc<dyn Dialer>,
    pub probe: ProbeTarget,
}

impl std::fmt::Debug for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSpec")
            .field("name", &self.name)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}
