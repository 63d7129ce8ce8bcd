//! What the LB balances over. A backend is anything that can be dialled for
//! a new client connection and probed for health: for kind, a node's
//! `InternalIP:NodePort`; for the emulator, a node whose dialer applies
//! kube-proxy's rules itself (so a request crosses one proxy hop, not two).

use std::net::SocketAddr;
use std::sync::Arc;

use zdt_core::net::Dialer;

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
