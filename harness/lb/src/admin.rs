//! The admin API: one implementation ([`Admin`], in-process) behind two
//! doors — direct calls (the run, with the emulator) and HTTP ([`http`],
//! spoken by [`AdminClient`] when the LB runs in a container).
//!
//! HTTP routes (JSON in and out; errors are `{"error": "..."}` with a 4xx/5xx):
//! - `GET /backends` — every backend's [`BackendStatus`]
//! - `GET /backends/{name}`
//! - `POST /backends` — add; body: [`BackendConfig`](super::BackendConfig)
//! - `DELETE /backends/{name}` — remove (established connections are cut
//!   after the LB's drain timeout)
//! - `POST /backends/{name}/drain?timeout=30s` — connection draining
//! - `POST /backends/{name}/restore`
//! - `GET /wait-healthy?count=N&timeout=30s` — 200 once N are healthy, else 504
//! - `GET /healthz` — 200 while the LB runs

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::backend::BackendSpec;
use super::config::BackendConfig;
use super::pool::PoolState;
pub use super::status::{AdminError, BackendStatus, Health};
use zdt_core::units::Dur;

/// The in-process admin API. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    pool: Arc<PoolState>,
}

impl Admin {
    pub(crate) fn new(pool: Arc<PoolState>) -> Self {
        Self { pool }
    }

    /// Every backend with its health, probe state and connection counts, in
    /// the order they were added.
    pub fn list(&self) -> Vec<BackendStatus> {
        self.pool.list()
    }

    pub fn get(&self, name: &str) -> Result<BackendStatus, AdminError> {
        self.pool.get(name)
    }

    /// Add a backend; it is probed from now on and takes new connections
    /// once healthy.
    pub fn add(&self, spec: BackendSpec) -> Result<(), AdminError> {
        self.pool.add(spec, false)
    }

    /// Take a backend out of the pool at once: no new connections, no more
    /// probes; its established connections are cut after the LB's drain
    /// timeout.
    pub fn remove(&self, name: &str) -> Result<(), AdminError> {
        self.pool.remove(name)
    }

    /// Connection draining: no new connections; established ones may finish
    /// within `timeout` (default: the LB's drain timeout), then are cut.
    /// Draining an already draining backend changes nothing.
    pub fn drain(&self, name: &str, timeout: Option<Duration>) -> Result<(), AdminError> {
        self.pool.drain(name, timeout)
    }

    /// Undo a drain: the backend takes new connections again when healthy.
    pub fn restore(&self, name: &str) -> Result<(), AdminError> {
        self.pool.restore(name)
    }

    /// Wait until at least `count` backends are healthy, at most `timeout`.
    pub async fn wait_healthy(&self, count: usize, timeout: Duration) -> Result<(), AdminError> {
        let mut rx = self.pool.subscribe();
        let wait = async {
            loop {
                if self.pool.healthy_count() >= count {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(AdminError::ShuttingDown);
                }
            }
        };
        tokio::select! {
            r = wait => r,
            _ = tokio::time::sleep(timeout) => Err(AdminError::Timeout {
                want: count,
                healthy: self.pool.healthy_count(),
                after: timeout,
            }),
            _ = self.pool.cancel.cancelled() => Err(AdminError::ShuttingDown),
        }
    }

    /// A counter bumped on every probe result and pool change: to watch the
    /// pool without polling.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.pool.subscribe()
    }
}

/// The HTTP admin server.
pub(crate) mod http {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::body::Incoming;
    use hyper::{Method, Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::{Admin, AdminError, BackendConfig, Dur};
    use zdt_core::units::UnitError;

    pub(crate) async fn serve(
        admin: Admin,
        listener: TcpListener,
        cancel: CancellationToken,
        done: mpsc::Sender<()>,
    ) {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = cancel.cancelled() => return,
            };
            let admin = admin.clone();
            let cancel = cancel.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let _done = done;
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(handle(&admin, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = cancel.cancelled() => {}
                }
            });
        }
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    }

    fn error(status: u16, message: impl Into<String>) -> Response<Full<Bytes>> {
        json(status, &serde_json::json!({ "error": message.into() }))
    }

    fn from_admin(e: AdminError) -> Response<Full<Bytes>> {
        error(e.status(), e.to_string())
    }

    fn query(req: &Request<Incoming>) -> HashMap<String, String> {
        req.uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.to_owned(), String::new()),
            })
            .collect()
    }

    /// A query parameter the route cannot use.
    #[derive(Debug, thiserror::Error)]
    enum QueryError {
        #[error("query parameter `{key}`: {source}")]
        Duration {
            key: &'static str,
            #[source]
            source: UnitError,
        },
        #[error("query parameter `count` must be a whole number")]
        Count,
    }

    fn duration(
        q: &HashMap<String, String>,
        key: &'static str,
    ) -> Result<Option<Duration>, QueryError> {
        q.get(key)
            .map(|v| {
                v.parse::<Dur>()
                    .map(Dur::get)
                    .map_err(|source| QueryError::Duration { key, source })
            })
            .transpose()
    }

    async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let q = query(&req);
        let method = req.method().clone();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => json(200, &serde_json::json!({ "status": "ok" })),
            (&Method::GET, ["backends"]) => json(200, &admin.list()),
            (&Method::GET, ["backends", name]) => match admin.get(name) {
                Ok(s) => json(200, &s),
                Err(e) => from_admin(e),
            },
            (&Method::POST, ["backends"]) => {
                let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return error(400, format!("cannot read the request body: {e}")),
                };
                let cfg: BackendConfig = match serde_json::from_slice(&body) {
                    Ok(c) => c,
                    Err(e) => {
                        return error(
                            400,
                            format!(
                                "body must be JSON like {{\"name\": \"worker1\", \"address\": \"10.0.0.2:30080\", \"probe\": \"http://10.0.0.2:10256/healthz\"}}: {e}"
                            ),
                        )
                    }
                };
                let spec = match cfg.resolve().await {
                    Ok(s) => s,
                    Err(e) => return error(400, e.to_string()),
                };
                let name = spec.name.clone();
                match admin.add(spec).and_then(|()| admin.get(&name)) {
                    Ok(s) => json(201, &s),
                    Err(e) => from_admin(e),
                }
            }
            (&Method::DELETE, ["backends", name]) => match admin.remove(name) {
                Ok(()) => json(200, &serde_json::json!({ "removed": name })),
                Err(e) => from_admin(e),
            },
            (&Method::POST, ["backends", name, "drain"]) => {
                let timeout = match duration(&q, "timeout") {
                    Ok(t) => t,
                    Err(e) => return error(400, e.to_string()),
                };
                match admin.drain(name, timeout).and_then(|()| admin.get(name)) {
                    Ok(s) => json(200, &s),
                    Err(e) => from_admin(e),
                }
            }
            (&Method::POST, ["backends", name, "restore"]) => {
                match admin.restore(name).and_then(|()| admin.get(name)) {
                    Ok(s) => json(200, &s),
                    Err(e) => from_admin(e),
                }
            }
            (&Method::GET, ["wait-healthy"]) => {
                let count = match q.get("count").map(|c| c.parse::<usize>()) {
                    None => admin.list().len(),
                    Some(Ok(c)) => c,
                    Some(Err(_)) => return error(400, QueryError::Count.to_string()),
                };
                let timeout = match duration(&q, "timeout") {
                    Ok(t) => t.unwrap_or(Duration::from_secs(30)),
                    Err(e) => return error(400, e.to_string()),
                };
                match admin.wait_healthy(count, timeout).await {
                    Ok(()) => json(200, &admin.list()),
                    Err(e) => from_admin(e),
                }
            }
            (_, ["healthz"] | ["backends"] | ["backends", _] | ["backends", _, "drain" | "restore"] | ["wait-healthy"]) => {
                error(405, format!("method {method} not allowed on {path}"))
            }
            _ => error(
                404,
                format!("no route {path}: use /backends, /backends/{{name}}, /backends/{{name}}/drain, /backends/{{name}}/restore, /wait-healthy"),
            ),
        }
    }
}

/// Speaks the HTTP admin API of an LB running elsewhere (a container).
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
}

impl AdminClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<serde_json::Value, AdminError> {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;

        let unreachable = |message: String| AdminError::Unreachable {
            addr: self.addr,
            message,
        };
        let work = async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| unreachable(format!("connect: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(format!("handshake: {e}")))?;
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method(method)
                .uri(path_and_query)
                .header("host", self.addr.to_string())
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
                .map_err(|e| AdminError::BadRequest(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(format!("{method} {path_and_query}: {e}")))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the response: {e}")))?
                .to_bytes();
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| unreachable(format!("response is not JSON: {e}")))?;
            if status < 300 {
                return Ok(value);
            }
            let message = value["error"].as_str().unwrap_or("").to_owned();
            Err(match status {
                404 if path_and_query.starts_with("/backends/") => {
                    let name = path_and_query["/backends/".len()..]
                        .split('/')
                        .next()
                        .unwrap_or_default();
                    AdminError::NotFound(name.to_owned())
                }
                409 => AdminError::AlreadyExists(message),
                400 => AdminError::BadRequest(message),
                503 => AdminError::ShuttingDown,
                _ => unreachable(format!("HTTP {status}: {message}")),
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, v: serde_json::Value) -> Result<T, AdminError> {
        serde_json::from_value(v).map_err(|e| AdminError::Unreachable {
            addr: self.addr,
            message: format!("unexpected response: {e}"),
        })
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    pub async fn list(&self) -> Result<Vec<BackendStatus>, AdminError> {
        let v = self.call("GET", "/backends", None, Self::TIMEOUT).await?;
        self.parse(v)
    }

    pub async fn add(&self, backend: &BackendConfig) -> Result<BackendStatus, AdminError> {
        let body =
            serde_json::to_vec(backend).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let v = self
            .call("POST", "/backends", Some(body), Self::TIMEOUT)
            .await?;
        self.parse(v)
    }

    pub async fn remove(&self, name: &str) -> Result<(), AdminError> {
        self.call("DELETE", &format!("/backends/{name}"), None, Self::TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn drain(&self, name: &str, timeout: Option<Duration>) -> Result<(), AdminError> {
        let q = timeout.map_or(String::new(), |t| format!("?timeout={}", Dur(t)));
        self.call(
            "POST",
            &format!("/backends/{name}/drain{q}"),
            None,
            Self::TIMEOUT,
        )
        .await
        .map(drop)
    }

    pub async fn restore(&self, name: &str) -> Result<(), AdminError> {
        self.call(
            "POST",
            &format!("/backends/{name}/restore"),
            None,
            Self::TIMEOUT,
        )
        .await
        .map(drop)
    }

    pub async fn wait_healthy(&self, count: usize, timeout: Duration) -> Result<(), AdminError> {
        let path = format!("/wait-healthy?count={count}&timeout={}", Dur(timeout));
        match self
            .call("GET", &path, None, timeout + Duration::from_secs(5))
            .await
        {
            Ok(_) => Ok(()),
            Err(AdminError::Unreachable { message, .. }) if message.starts_with("HTTP 504") => {
                Err(AdminError::Timeout {
                    want: count,
                    healthy: self
                        .list()
                        .await
                        .map(|l| l.iter().filter(|b| b.health == Health::Healthy).count())
                        .unwrap_or(0),
                    after: timeout,
                })
            }
            Err(e) => Err(e),
        }
    }
}
