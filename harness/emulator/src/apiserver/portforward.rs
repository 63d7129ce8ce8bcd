//! `pods/NAME/portforward`: kubectl's `port-forward` (for `svc/…` kubectl
//! picks a pod itself) and other clients'. Three ways in, as upstream:
//!
//! - SPDY/3.1 `portforward.k8s.io`, as the kubelet serves it: per forwarded
//!   connection the client opens an `error` and a `data` stream (headers
//!   `streamType`, `port`, `requestID`); the data stream carries the bytes,
//!   the error stream a message if the pod's port cannot be reached;
//! - the same SPDY session tunnelled in WebSocket binary messages
//!   (`SPDY/3.1+portforward.k8s.io`), what kubectl ≥ 1.31 tries first;
//! - WebSocket channels (`v4.channel.k8s.io`, the Python client): `ports=`
//!   in the query, per port a data channel 2i and an error channel 2i+1,
//!   each first carrying the port (2 bytes, little-endian), every message
//!   prefixed with its channel byte.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spdy::{Frame, FrameReader, FrameWriter, RST_REFUSED};
use super::streaming::PodAccess;
use super::websocket::{self, Message, MessageReader};
use super::{full, query_pairs, ApiError, Body};
use crate::store::{meta_str, Resource, Store};

const PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const CHANNELS: &str = "v4.channel.k8s.io";

/// How the client speaks.
enum Way {
    Spdy,
    Tunnel,
    Channels(Vec<u16>),
}

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
    req: super::ApiRequest,
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
    let way = if upgrade.contains("websocket") {
        let offered = header("sec-websocket-protocol");
        let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
        if offered.contains(&TUNNEL.to_ascii_lowercase().as_str()) {
            Way::Tunnel
        } else if offered.contains(&CHANNELS) {
            let ports: Vec<u16> = query_pairs(&req)
                .into_iter()
                .filter(|(k, _)| k == "ports" || k == "port")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .map(|p| p.trim().to_owned())
                        .collect::<Vec<_>>()
                })
                .map(|p| {
                    p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
                        ApiError::bad_request(format!("invalid port {p:?}: ports must be 1-65535"))
                    })
                })
                .collect::<Result<_, _>>()?;
            if ports.is_empty() {
                return Err(ApiError::bad_request(
                    "query parameter \"port\" is required (ports=80,8080)",
                ));
            }
            Way::Channels(ports)
        } else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("port-forward over WebSockets takes the subprotocol {TUNNEL} or {CHANNELS} (offered: {})", offered.join(", ")),
            ));
        }
    } else if upgrade.starts_with("spdy/3.1") {
        let protocols = header("x-stream-protocol-version");
        if !protocols.is_empty() && !protocols.split(',').any(|p| p.trim() == PROTOCOL) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("unable to upgrade: the emulator speaks only the {PROTOCOL} protocol (asked for {protocols})"),
            ));
        }
        Way::Spdy
    } else {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "port-forward needs a connection upgrade: to SPDY/3.1 (Upgrade: SPDY/3.1, X-Stream-Protocol-Version: portforward.k8s.io) or to a WebSocket, as kubectl sends",
        ));
    };
    // The key is case-sensitive (base64), unlike the headers above.
    let ws_key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
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
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    let response = match &way {
        Way::Spdy => response
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", PROTOCOL),
        Way::Tunnel | Way::Channels(_) => response
            .header(header::UPGRADE, "websocket")
            .header("Sec-WebSocket-Accept", websocket::accept_key(&ws_key))
            .header(
                "Sec-WebSocket-Protocol",
                if matches!(way, Way::Tunnel) {
                    TUNNEL
                } else {
                    CHANNELS
                },
            ),
    };
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!("emulator API: port-forward upgrade failed: {e}");
                return;
            }
        };
        match way {
            Way::Spdy => session(io, target, cancel).await,
            Way::Tunnel => tunnel(io, target, cancel).await,
            Way::Channels(ports) => channels(io, target, ports, cancel).await,
        }
    });
    Ok(response.body(full(Bytes::new())).expect("valid response"))
}

type WsWriter<IO> = Arc<tokio::sync::Mutex<tokio::io::WriteHalf<IO>>>;

/// Send one frame; false once the connection is gone.
async fn send<IO: tokio::io::AsyncWrite>(wr: &WsWriter<IO>, opcode: u8, payload: &[u8]) -> bool {
    wr.lock()
        .await
        .write_all(&websocket::frame(opcode, payload))
        .await
        .is_ok()
}

/// kubectl's tunnel: the SPDY session's bytes in binary messages.
async fn tunnel<IO>(io: IO, target: Arc<Target>, cancel: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let wr: WsWriter<IO> = Arc::new(tokio::sync::Mutex::new(wr));
    let (inner, outer) = tokio::io::duplex(64 * 1024);
    let spdy = tokio::spawn(session(inner, target, cancel.clone()));
    let (mut from_spdy, mut to_spdy) = tokio::io::split(outer);
    let wr_out = wr.clone();
    let outbound = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = from_spdy.read(&mut buf).await {
            if n == 0 || !send(&wr_out, websocket::BINARY, &buf[..n]).await {
                break;
            }
        }
    });
    let mut reader = MessageReader::new(rd);
    loop {
        let message = tokio::select! {
            m = reader.next() => m,
            _ = cancel.cancelled() => break,
        };
        match message {
            Ok(Message::Binary(data)) => {
                if to_spdy.write_all(&data).await.is_err() {
                    break;
                }
            }
            Ok(Message::Ping(p)) => {
                send(&wr, websocket::PONG, &p).await;
            }
            Ok(Message::Close) | Err(_) => break,
        }
    }
    let _ = to_spdy.shutdown().await;
    let _ = spdy.await;
    outbound.abort();
}

/// The channel protocol: one connection per asked port, for the whole
/// WebSocket.
async fn channels<IO>(io: IO, target: Arc<Target>, ports: Vec<u16>, cancel: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let wr: WsWriter<IO> = Arc::new(tokio::sync::Mutex::new(wr));
    let mut to_pods = HashMap::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data, error] {
            let [lo, hi] = port.to_le_bytes();
            send(&wr, websocket::BINARY, &[ch, lo, hi]).await;
        }
        match target.connect(*port).await {
            Ok(conn) => {
                let _ = conn.set_nodelay(true);
                let (mut pod_rd, pod_wr) = conn.into_split();
                to_pods.insert(data, pod_wr);
                let wr = wr.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    buf[0] = data;
                    while let Ok(n) = pod_rd.read(&mut buf[1..]).await {
                        if n == 0 || !send(&wr, websocket::BINARY, &buf[..=n]).await {
                            break;
                        }
                    }
                }));
            }
            Err(e) => {
                let mut m = vec![error];
                m.extend_from_slice(
                    format!(
                        "error forwarding port {port} to pod {}, uid {}: {e}",
                        target.pod, target.uid
                    )
                    .as_bytes(),
                );
                send(&wr, websocket::BINARY, &m).await;
            }
        }
    }
    let all_read = async {
        for r in readers {
            let _ = r.await;
        }
    };
    tokio::pin!(all_read);
    let mut reader = MessageReader::new(rd);
    loop {
        let message = tokio::select! {
            m = reader.next() => m,
            _ = &mut all_read => break,
            _ = cancel.cancelled() => break,
        };
        match message {
            Ok(Message::Binary(data)) => {
                let Some((ch, bytes)) = data.split_first() else {
                    continue;
                };
                if let Some(pod) = to_pods.get_mut(ch) {
                    if pod.write_all(bytes).await.is_err() {
                        to_pods.remove(ch);
                    }
                }
            }
            Ok(Message::Ping(p)) => {
                send(&wr, websocket::PONG, &p).await;
            }
            Ok(Message::Close) | Err(_) => break,
        }
    }
    send(&wr, websocket::CLOSE, &[]).await;
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
