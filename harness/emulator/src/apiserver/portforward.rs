//! `pods/NAME/portforward`: kubectl's `port-forward` (for `svc/…` kubectl
//! picks a pod itself). kubectl first tries SPDY tunnelled in a WebSocket
//! and falls back to plain SPDY/3.1 when the upgrade is refused; the
//! emulator serves the plain SPDY protocol `portforward.k8s.io`, as the
//! kubelet does: per forwarded connection the client opens an `error` and a
//! `data` stream (headers `streamType`, `port`, `requestID`); the data
//! stream carries the bytes, the error stream a message if the pod's port
//! cannot be reached.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spdy::{Frame, FrameReader, FrameWriter, RST_REFUSED};
use super::streaming::PodAccess;
use super::{full, ApiError, Body};
use crate::store::{meta_str, Resource, Store};

const PROTOCOL: &str = "portforward.k8s.io";

/// Where a pod's ports are reached from the API server.
struct Target {
    access: PodAccess,
    pod: String,
    uid: String,
    ip: IpAddr,
    /// The first container's declared port, the one the runtime maps on
    /// the host's network stack.
    declared: u16,
}

impl Target {
    async fn connect(&self, port: u16) -> Result<TcpStream, String> {
        let addr = if self.access.net.is_private() {
            // Pods listen on their own IP in the cluster's network.
            SocketAddr::new(self.ip, port)
        } else if port == self.declared {
            self.access
                .addrs
                .get(&self.ip)
                .ok_or_else(|| format!("pod {} has no running container", self.pod))?
        } else {
            return Err(format!(
                "on the host's network stack the emulator maps only the pod's declared containerPort {} (ask for that port, or run with a private network)",
                self.declared
            ));
        };
        self.access
            .net
            .connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))
    }
}

/// Answer the upgrade and serve the SPDY session on the upgraded connection.
pub(super) fn serve(
    store: &Store,
    access: Option<&PodAccess>,
    cancel: &CancellationToken,
    namespace: &str,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pod = store
        .get(Resource::Pods, namespace, name)
        .ok_or_else(|| ApiError::not_found(format!("pods \"{name}\" not found")))?;
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let upgrade = header("upgrade");
    if upgrade.contains("websocket") {
        // kubectl falls back to SPDY on any refused WebSocket upgrade.
        return Err(ApiError::new(
            400,
            "BadRequest",
            "the emulator serves port-forward over SPDY/3.1 (kubectl falls back to it by itself), not over WebSockets",
        ));
    }
    if !upgrade.starts_with("spdy/3.1") {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "port-forward needs a connection upgrade to SPDY/3.1 (Upgrade: SPDY/3.1, X-Stream-Protocol-Version: portforward.k8s.io), as kubectl sends",
        ));
    }
    let protocols = header("x-stream-protocol-version");
    if !protocols.is_empty() && !protocols.split(',').any(|p| p.trim() == PROTOCOL) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("unable to upgrade: the emulator speaks only the {PROTOCOL} protocol (asked for {protocols})"),
        ));
    }
    let Some(access) = access else {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "pods of a simulated emulator are not processes: there is no port to forward to (start it with `zdt emulator up`'s real pods, Emulator::start)",
        ));
    };
    let ip: Option<IpAddr> = pod["status"]["podIP"].as_str().and_then(|s| s.parse().ok());
    let (Some(ip), "Running") = (ip, pod["status"]["phase"].as_str().unwrap_or("")) else {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={}",
            pod["status"]["phase"].as_str().unwrap_or("Pending")
        )));
    };
    let declared = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .unwrap_or(80);
    let target = Arc::new(Target {
        access: access.clone(),
        pod: format!("{namespace}/{name}"),
        uid: meta_str(&pod, "uid").unwrap_or("").to_owned(),
        ip,
        declared,
    });
    let cancel = cancel.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => session(TokioIo::new(upgraded), target, cancel).await,
            Err(e) => tracing::debug!("emulator API: port-forward upgrade failed: {e}"),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", PROTOCOL)
        .body(full(Bytes::new()))
        .expect("valid response"))
}

/// What the writer task sends, in order.
enum Out {
    Reply(u32),
    Raw(Vec<u8>),
}

/// The two streams of one forwarded connection.
#[derive(Default)]
struct Pair {
    port: Option<u16>,
    error: Option<u32>,
    data: Option<u32>,
}

async fn session<IO>(io: IO, target: Arc<Target>, cancel: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let writer = tokio::spawn(async move {
        let mut frames = FrameWriter::new();
        while let Some(out) = out_rx.recv().await {
            let bytes = match out {
                Out::Reply(stream) => frames.syn_reply(stream),
                Out::Raw(b) => b,
            };
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut reader = FrameReader::new(rd);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Bytes from the client per data stream, to its connection's task.
    let mut inbound: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    let mut tasks: HashMap<u32, CancellationToken> = HashMap::new();
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            f = reader.next() => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("emulator API: port-forward session ended: {e}");
                break;
            }
        };
        match frame {
            Frame::SynStream { stream, headers } => {
                let get = |k: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.as_str())
                };
                let port = get("port").and_then(|p| p.parse::<u16>().ok());
                let (Some(kind), Some(port)) = (get("streamtype"), port) else {
                    let _ = out_tx.send(Out::Raw(FrameWriter::rst_stream(stream, RST_REFUSED)));
                    continue;
                };
                let _ = out_tx.send(Out::Reply(stream));
                // Older clients send no requestID: a connection's streams
                // then share the port.
                let key = get("requestid").map_or_else(|| port.to_string(), str::to_owned);
                let pair = pairs.entry(key.clone()).or_default();
                pair.port = Some(port);
                match kind {
                    "error" => pair.error = Some(stream),
                    "data" => pair.data = Some(stream),
                    _ => {
                        let _ = out_tx.send(Out::Raw(FrameWriter::rst_stream(stream, RST_REFUSED)));
                        continue;
                    }
                }
                if let (Some(error), Some(data), Some(port)) = (pair.error, pair.data, pair.port) {
                    pairs.remove(&key);
                    let (tx, rx) = mpsc::unbounded_channel();
                    inbound.insert(data, tx);
                    let stop = cancel.child_token();
                    tasks.insert(data, stop.clone());
                    tokio::spawn(forward(
                        target.clone(),
                        port,
                        error,
                        data,
                        rx,
                        out_tx.clone(),
                        stop,
                    ));
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = inbound.get(&stream) {
                    if !data.is_empty() {
                        let _ = tx.send(data);
                    }
                }
                if fin {
                    // The client sends no more: the pod's side is shut for
                    // writing once what came is written.
                    inbound.remove(&stream);
                }
            }
            Frame::RstStream { stream } => {
                inbound.remove(&stream);
                if let Some(t) = tasks.remove(&stream) {
                    t.cancel();
                }
            }
            Frame::Ping { id } => {
                let _ = out_tx.send(Out::Raw(FrameWriter::ping(id)));
            }
            Frame::GoAway => break,
            Frame::Other => {}
        }
    }
    for t in tasks.values() {
        t.cancel();
    }
    drop(out_tx);
    let _ = writer.await;
}

/// One forwarded connection: the pod's port and the client's data stream,
/// spliced; a failure is written to the error stream, which closes last.
async fn forward(
    target: Arc<Target>,
    port: u16,
    error: u32,
    data: u32,
    mut inbound: mpsc::UnboundedReceiver<Bytes>,
    out: mpsc::UnboundedSender<Out>,
    stop: CancellationToken,
) {
    let conn = tokio::select! {
        c = target.connect(port) => c,
        _ = stop.cancelled() => return,
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            let _ = out.send(Out::Raw(FrameWriter::data(error, true, message.as_bytes())));
            let _ = out.send(Out::Raw(FrameWriter::data(data, true, &[])));
            return;
        }
    };
    let _ = conn.set_nodelay(true);
    let (mut pod_rd, mut pod_wr) = conn.into_split();
    let to_pod = async {
        while let Some(b) = inbound.recv().await {
            if pod_wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = pod_wr.shutdown().await;
    };
    let out_data = out.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match pod_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_data
                        .send(Out::Raw(FrameWriter::data(data, false, &buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = out_data.send(Out::Raw(FrameWriter::data(data, true, &[])));
    };
    tokio::select! {
        _ = async { tokio::join!(to_pod, from_pod) } => {}
        _ = stop.cancelled() => {}
    }
    let _ = out.send(Out::Raw(FrameWriter::data(error, true, &[])));
}
