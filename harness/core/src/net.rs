//! How a load balancer reaches its backends ([`Dialer`]) and how a probe
//! asks for a health status ([`http_status`]); the connect every hop uses
//! is [`connect`].

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

pub use crate::tcp::connect;

/// What [`Dialer::dial`] returns.
pub type DialFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Dial> + Send>>;

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

/// What [`Dialer::dial_traced`] returns: the outcome and the pod the
/// node's rules chose, when the dialer knows it.
pub type TracedDialFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Dial, Option<String>)> + Send>>;

/// Dials a backend. Implementations must be cheap to call concurrently.
pub trait Dialer: Send + Sync + 'static {
    /// Open a connection on behalf of the client at `client`.
    fn dial(&self, client: SocketAddr) -> DialFuture;

    /// [`Dialer::dial`], also naming the pod the connection went to. The
    /// route is chosen before this returns (the future only connects), so
    /// a caller that stamps the time before calling it orders the choice
    /// correctly against route changes. A dialer that cannot see pods (a
    /// real node's NodePort) names none.
    fn dial_traced(&self, client: SocketAddr) -> TracedDialFuture {
        let dial = self.dial(client);
        Box::pin(async move { (dial.await, None) })
    }
}

/// An L4 pass-through data path a load balancer programs instead of
/// proxying (Azure's, AWS NLB's and GCP's LBs forward packets to the node
/// without terminating TCP): the LB keeps probing and deciding which
/// backends take new connections, the packets never reach its process.
pub trait PassThrough: Send + Sync + 'static {
    /// From now on send new connections to these backends (by name), in
    /// the LB's selection; none: reset them. Returns once the data path
    /// forwards that way, so an event emitted after it is not early.
    fn route_to(&self, backends: &[String]) -> io::Result<()>;

    /// Where each connection went so far (taken): the data path's own
    /// record of its decisions.
    fn connections(&self) -> Vec<crate::provenance::ConnRecord>;
}

/// A plain TCP dialer: a real node's `InternalIP:NodePort`.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    pub addr: SocketAddr,
}

impl Dialer for TcpDialer {
    fn dial(&self, _client: SocketAddr) -> DialFuture {
        let addr = self.addr;
        Box::pin(async move {
            match connect(addr).await {
                Ok(s) => Dial::Connected(s),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Dial::Refused,
                Err(e) => Dial::Failed(e),
            }
        })
    }
}

/// Why an HTTP health probe got no status code.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("send: {0}")]
    Send(io::Error),
    #[error("read: {0}")]
    Read(io::Error),
    #[error("connection closed without a response")]
    Closed,
    #[error("not an HTTP response: {0:?}")]
    NotHttp(String),
}

/// One HTTP/1.1 `GET path` with `Connection: close`, as health probes send
/// it (cloud LBs and the kubelet alike); returns the status code. Only the
/// status line is read.
pub async fn http_status(
    net: &crate::netns::Net,
    addr: SocketAddr,
    path: &str,
    user_agent: &str,
) -> Result<u16, ProbeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = net.connect(addr).await.map_err(ProbeError::Connect)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(ProbeError::Send)?;
    let mut buf = [0u8; 256];
    let mut len = 0;
    loop {
        let n = s.read(&mut buf[len..]).await.map_err(ProbeError::Read)?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(2).any(|w| w == b"\r\n") || len == buf.len() {
            break;
        }
    }
    if len == 0 {
        return Err(ProbeError::Closed);
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| ProbeError::NotHttp(line.to_owned()))
}
