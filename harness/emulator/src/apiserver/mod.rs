//! The emulator's API server: the Kubernetes REST API subset zdt, kube-rs
//! and `kubectl get/describe/drain` use, over plain HTTP/1.1 on loopback
//! with no authentication. Every error is a `Status` object, as clients
//! expect; nothing a client sends can panic the server.

pub(crate) mod admission;
pub(crate) mod discovery;
mod field_validation;
mod kinds;
mod logs;
mod openapi;
mod pagination;
pub(crate) mod patch;
mod portforward;
pub(crate) mod selectors;
mod served;
mod shape;
mod spdy;
pub mod streaming;
pub(crate) mod table;
mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{
    meta_str, now_rfc3339, ChangeType, DeleteOptions, Propagation, Resource, State, Store,
    StoreError, FOREGROUND_FINALIZER,
};
use crate::{KubeVersion, Timings};
use selectors::{FieldSelector, LabelSelector};

/// The API server refuses request bodies above this (the real one: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A request as the handlers see it: its body already read (see [`handle`]).
pub(crate) type ApiRequest = Request<Full<Bytes>>;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::NotFound { kind, name } => {
                let (plural, group) = kind.split_once('.').unwrap_or((&kind, ""));
                let mut err = ApiError::new(404, "NotFound", message);
                err.details = Some(json!({"name": name, "group": group, "kind": plural}));
                err
            }
            StoreError::AlreadyExists { kind, name } => {
                let (plural, group) = kind.split_once('.').unwrap_or((&kind, ""));
                let mut err = ApiError::new(409, "AlreadyExists", message);
                err.details = Some(json!({"name": name, "group": group, "kind": plural}));
                err
            }
            StoreError::Conflict { .. } => ApiError::new(409, "Conflict", message),
            StoreError::Invalid(_) => ApiError::new(422, "Invalid", message),
            StoreError::Gone { .. } => ApiError::new(410, "Expired", message),
        }
    }
}

/// What the API needs besides the store.
#[derive(Debug, Clone)]
pub struct ApiContext {
    pub version: KubeVersion,
    pub timings: Timings,
    /// The pods' processes, for `log` and `portforward` (None: simulated).
    pub pods: Option<streaming::PodAccess>,
}

struct ApiState {
    store: Arc<Store>,
    ctx: ApiContext,
    addr: SocketAddr,
    cancel: CancellationToken,
}

/// A running API server.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<ApiState>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Serve `store` on 127.0.0.1 (port 0 picks a free one) until `cancel`.
    pub async fn start(
        store: Arc<Store>,
        ctx: ApiContext,
        port: u16,
        cancel: CancellationToken,
    ) -> std::io::Result<ApiServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ApiState {
            store,
            ctx,
            addr,
            cancel: cancel.clone(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(ApiServer {
            addr,
            shared,
            tasks: vec![task],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve the same API on `listener` too (the in-cluster address, in
    /// the cluster's network), until the same cancel token.
    pub fn serve_also(&mut self, listener: TcpListener) {
        self.tasks
            .push(tokio::spawn(accept_loop(listener, self.shared.clone())));
    }

    /// Wait for the accept loops to end (after the cancel token fired).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ApiState>) {
    loop {
        let stream = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("emulator API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let cancel = shared.cancel.clone();
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid response")
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// A parsed request path for a resource.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Version,
    ApiVersions,
    ApiGroups,
    ResourceList(String, String),
    Healthz,
    /// `/openapi/…`, the rest of the path.
    OpenApi(String),
    Object(Target),
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || ApiError::not_found("the server could not find the requested resource");
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz"] | ["livez"] | ["readyz"] => return Ok(Route::Healthz),
        ["api"] => return Ok(Route::ApiVersions),
        ["apis"] => return Ok(Route::ApiGroups),
        ["openapi", rest @ ..] => return Ok(Route::OpenApi(rest.join("/"))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    if !discovery::serves(group, version) {
        return Err(not_found());
    }
    if rest.is_empty() {
        return Ok(Route::ResourceList(group.to_owned(), version.to_owned()));
    }
    let lookup = |plural: &str| Resource::lookup(group, version, plural);
    // `namespaces/NS/RESOURCE…` is a namespaced path unless RESOURCE is a
    // subresource of the namespace itself.
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, tail @ ..] if lookup(r).is_some_and(|res| res.info().namespaced) => {
            (Some((*ns).to_owned()), {
                let mut v = vec![*r];
                v.extend_from_slice(tail);
                v
            })
        }
        // Under a namespace, only the namespace's own subresources are
        // not a namespaced resource: anything else is an unknown resource.
        ["namespaces", _, r, ..] if !matches!(*r, "status" | "finalize") => return Err(not_found()),
        _ => (None, rest.to_vec()),
    };
    let resource = lookup(rest[0]).ok_or_else(not_found)?;
    if rest.len() > 3 {
        return Err(not_found());
    }
    Ok(Route::Object(Target {
        resource,
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    }))
}

fn query_pairs(req: &ApiRequest) -> Vec<(String, String)> {
    let q = req.uri().query().unwrap_or("");
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1") | Some("true"))
    }
}

#[cfg(test)]
impl Query {
    fn of(pairs: &[(&str, &str)]) -> Query {
        Query(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }
}

async fn handle(shared: Arc<ApiState>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    tracing::debug!("emulator API: {method} {}", req.uri());
    // The body is read before anything can refuse the request, as Go's
    // server drains what a handler left: a 404 or 405 answered with the
    // body unread closed the connection under a client still writing it,
    // and the client saw a broken pipe instead of the answer.
    let req = match buffered(req).await {
        Ok(req) => req,
        Err(e) => return error_response(&e),
    };
    // A slow or distant API server (`timings.apiLatency`): every request
    // waits this long before it is served.
    let latency = shared.ctx.timings.api_latency.get();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // A panic in a handler is a zdt bug; the client still gets a Status
    // (and the connection an answer) instead of a dropped socket.
    let outcome = std::panic::AssertUnwindSafe(handle_inner(&shared, req))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ApiError::new(
                500,
                "InternalError",
                format!("the emulator failed on {method} {path}: {what} (a zdt bug: please report it with this request)"),
            ))
        });
    match outcome {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!("emulator API: {method} {path} -> {} {}", e.code, e.message);
            error_response(&e)
        }
    }
}

/// `req` with its body read, up to [`MAX_BODY`] bytes.
async fn buffered(req: Request<Incoming>) -> Result<ApiRequest, ApiError> {
    let (parts, body) = req.into_parts();
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(Request::from_parts(parts, Full::new(c.to_bytes()))),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("the request body is larger than {MAX_BODY} bytes"),
                ))
            } else {
                Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
        }
    }
}

/// The request's head and body (read already, see [`buffered`]).
async fn read_body(req: ApiRequest) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    Ok((parts, bytes))
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid JSON: {e} (send a JSON object)"
        ))
    })
}

fn parse_json_or_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("the apply patch is not valid YAML: {e}")))
}

async fn handle_inner(shared: &Arc<ApiState>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let route = route(req.uri().path())?;
    let query = Query(query_pairs(&req));
    let dry_run = dry_run(&query)?;
    let method = req.method().clone();
    let target = match route {
        Route::Version => return Ok(json_response(200, &discovery::version(shared.ctx.version))),
        Route::Healthz => {
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(full("ok"))
                .expect("valid response"))
        }
        Route::ApiVersions => {
            return Ok(json_response(
                200,
                &discovery::api_versions(&shared.addr.to_string()),
            ))
        }
        Route::ApiGroups => return Ok(json_response(200, &discovery::api_groups())),
        Route::ResourceList(g, v) => {
            return Ok(json_response(200, &discovery::resource_list(&g, &v)))
        }
        Route::OpenApi(rest) => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok());
            return openapi::serve(&method, &rest, accept);
        }
        Route::Object(t) => t,
    };
    let info = target.resource.info();
    if info.namespaced && target.name.is_some() && target.namespace.is_none() {
        return Err(ApiError::not_found(
            "the server could not find the requested resource (a namespaced object needs /namespaces/NS/ in its path)",
        ));
    }
    if !info.namespaced && target.namespace.is_some() {
        return Err(ApiError::not_found(
            "the server could not find the requested resource",
        ));
    }
    let wants_table = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    match (&method, target.name.as_deref(), target.sub.as_deref()) {
        (&Method::GET, None, None) if query.flag("watch") => {
            watch(shared, &target, &query, wants_table)
        }
        (&Method::GET, None, None) => list(shared, &target, &query, wants_table),
        (&Method::GET, Some(name), sub) if sub.is_none() || sub == Some("status") => {
            let ns = target.namespace.as_deref().unwrap_or("");
            let obj = shared
                .store
                .read(|st| served::get(st, target.resource, ns, name))
                .ok_or_else(|| {
                    ApiError::from(StoreError::NotFound {
                        kind: error_kind(target.resource),
                        name: name.to_owned(),
                    })
                })?;
            if wants_table {
                return Ok(json_response(
                    200,
                    &table::table(
                        target.resource,
                        &[&obj],
                        &obj["metadata"]["resourceVersion"],
                    ),
                ));
            }
            Ok(json_response(200, &obj))
        }
        (method, Some(name), Some("scale"))
            if matches!(
                target.resource,
                Resource::Deployments | Resource::ReplicaSets
            ) && (method == Method::GET || method == Method::PUT || method == Method::PATCH) =>
        {
            let ctype = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let method = method.clone();
            let (_, body) = read_body(req).await?;
            scale(shared, dry_run, &target, name, &method, &ctype, &body)
        }
        (&Method::POST, None, None) => {
            let (_, body) = read_body(req).await?;
            let obj = parse_json(&body)?;
            let warnings =
                field_validation::check(target.resource, query.get("fieldValidation"), &obj)?;
            create(shared, dry_run, &target, obj).map(|r| warnings.attach(r))
        }
        (&Method::POST, Some(name), Some("eviction")) if target.resource == Resource::Pods => {
            let (_, body) = read_body(req).await?;
            let ev = if body.is_empty() {
                json!({})
            } else {
                parse_json(&body)?
            };
            evict(
                shared,
                dry_run,
                target.namespace.as_deref().unwrap_or("default"),
                name,
                &ev,
            )
        }
        (&Method::PUT, Some(name), sub) if sub.is_none() || sub == Some("status") => {
            let (_, body) = read_body(req).await?;
            let obj = parse_json(&body)?;
            let warnings =
                field_validation::check(target.resource, query.get("fieldValidation"), &obj)?;
            replace(shared, dry_run, &target, name, obj, sub == Some("status"))
                .map(|r| warnings.attach(r))
        }
        (&Method::PATCH, Some(name), sub) if sub.is_none() || sub == Some("status") => {
            let ctype = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let (_, body) = read_body(req).await?;
            // A JSON patch is a list of operations, not an object to check.
            let mut warnings = field_validation::Warnings::default();
            if !ctype.starts_with("application/json-patch+json") {
                if let Ok(p) = parse_json_or_yaml(&body) {
                    warnings =
                        field_validation::check(target.resource, query.get("fieldValidation"), &p)?;
                }
            }
            patch_object(
                shared,
                dry_run,
                &target,
                name,
                &ctype,
                &body,
                sub == Some("status"),
            )
            .map(|r| warnings.attach(r))
        }
        (&Method::DELETE, Some(name), None) => {
            let (_, body) = read_body(req).await?;
            let (opts, body_dry_run) = delete_options(&query, &body)?;
            let ns = target.namespace.clone().unwrap_or_default();
            let (obj, _) = write(shared, dry_run || body_dry_run, |st| {
                delete_cascading(st, target.resource, &ns, name, &opts)
            })?;
            let mut warnings = field_validation::Warnings::default();
            if target.resource == Resource::Jobs && opts.propagation.is_none() {
                warnings = field_validation::Warnings::of(JOB_ORPHAN_WARNING);
            }
            Ok(warnings.attach(json_response(200, &obj)))
        }
        (_, Some(name), Some(sub))
            if target.resource == Resource::Pods && streaming::handles(sub) =>
        {
            let ns = target.namespace.clone().unwrap_or_default();
            streaming::serve(shared, req, &query, &ns, name, sub)
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )),
    }
}

/// `dryRun=All` (the only value the API accepts besides none).
fn dry_run(query: &Query) -> Result<bool, ApiError> {
    match query.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid dryRun value {other:?}: the only accepted value is \"All\""
        ))),
    }
}

/// A write to the store, or with `dryRun=All` the same write on a copy that
/// is dropped ([`Store::write_dry`]): one code path, so a dry run answers
/// exactly as the write would.
fn write<R>(shared: &ApiState, dry_run: bool, f: impl FnOnce(&mut State) -> R) -> R {
    if dry_run {
        shared.store.write_dry(f)
    } else {
        shared.store.write(f)
    }
}

fn error_kind(resource: Resource) -> String {
    let info = resource.info();
    if info.group.is_empty() {
        info.plural.to_owned()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

fn selectors(query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

fn list(
    shared: &ApiState,
    target: &Target,
    query: &Query,
    wants_table: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(query)?;
    let info = target.resource.info();
    let filtered = ["labelSelector", "fieldSelector"]
        .iter()
        .any(|k| query.get(k).is_some_and(|v| !v.is_empty()));
    let page = shared.store.read(|st| {
        pagination::list(
            st,
            target.resource,
            target.namespace.as_deref(),
            query,
            filtered,
            |o| labels.matches(o) && fields.matches(o),
        )
    })?;
    if wants_table {
        let refs: Vec<&Value> = page.items.iter().collect();
        let mut t = table::table(target.resource, &refs, &page.metadata["resourceVersion"]);
        t["metadata"] = page.metadata;
        return Ok(json_response(200, &t));
    }
    Ok(json_response(
        200,
        &json!({
            "apiVersion": info.api_version(),
            "kind": format!("{}List", info.kind),
            "metadata": page.metadata,
            "items": page.items,
        }),
    ))
}

fn watch(
    shared: &Arc<ApiState>,
    target: &Target,
    query: &Query,
    wants_table: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(query)?;
    let rv: Option<u64> = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {s:?}: must be a number"))
        })?),
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(s.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {s:?}: must be a number"))
        })?),
        None => Duration::from_secs(1800),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let initial_events = query.flag("sendInitialEvents");
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let shared = shared.clone();
    let resource = target.resource;
    let namespace = target.namespace.clone();
    let info = resource.info();
    let latency = shared.ctx.timings.api_latency.get();
    tokio::spawn(async move {
        let matches = |ns: &str, o: &Value| {
            namespace.as_deref().is_none_or(|n| n == ns) && labels.matches(o) && fields.matches(o)
        };
        // `kubectl get -w` asks for Tables: one row per event, the column
        // definitions only in the first (as the real API server does).
        let first_table = std::sync::atomic::AtomicBool::new(true);
        let line = |ty: &str, obj: &Value| {
            let wrapped;
            let obj = if wants_table && ty != "ERROR" && ty != "BOOKMARK" {
                let mut t = table::table(resource, &[obj], &obj["metadata"]["resourceVersion"]);
                if !first_table.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    t["columnDefinitions"] = json!([]);
                }
                wrapped = t;
                &wrapped
            } else {
                obj
            };
            let mut b = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        };
        let bookmark = |rv: u64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            line(
                "BOOKMARK",
                &json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}),
            )
        };
        let mut sub = shared.store.subscribe();
        let mut last = match rv {
            Some(rv) if !initial_events => rv,
            _ => {
                let (initial, now) = shared.store.read(|st| {
                    let now = st.resource_version();
                    let keep = |o: &Value| matches(meta_str(o, "namespace").unwrap_or(""), o);
                    let items = served::list_at(st, resource, namespace.as_deref(), now, &keep)
                        .unwrap_or_default();
                    (items, now)
                });
                for o in &initial {
                    if tx.send(line("ADDED", o)).await.is_err() {
                        return;
                    }
                }
                if initial_events && tx.send(bookmark(now, true)).await.is_err() {
                    return;
                }
                now
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (changes, now) = shared.store.read(|st| {
                (
                    served::changes_since(st, resource, last),
                    st.resource_version(),
                )
            });
            match changes {
                Err(e) => {
                    let err = ApiError::new(410, "Expired", e.to_string());
                    let _ = tx.send(line("ERROR", &err.status())).await;
                    return;
                }
                Ok(changes) => {
                    for c in changes {
                        let new_m = matches(&c.namespace, &c.object);
                        let old_m = c.prev.as_deref().is_some_and(|p| matches(&c.namespace, p));
                        let ty = match (c.kind, old_m, new_m) {
                            (ChangeType::Added, _, true) => Some("ADDED"),
                            (ChangeType::Modified, true, true) => Some("MODIFIED"),
                            (ChangeType::Modified, false, true) => Some("ADDED"),
                            (ChangeType::Modified, true, false) => Some("DELETED"),
                            (ChangeType::Deleted, true, _) => Some("DELETED"),
                            _ => None,
                        };
                        if let Some(ty) = ty {
                            if tx.send(line(ty, &c.object)).await.is_err() {
                                return;
                            }
                        }
                    }
                    last = last.max(now);
                }
            }
            tokio::select! {
                r = sub.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // Watch events reach the client `apiLatency` after the
                    // change (changes made meanwhile ride along, sooner).
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    next_bookmark = tokio::time::Instant::now() + Duration::from_secs(15);
                    if tx.send(bookmark(last, false)).await.is_err() { return; }
                }
                _ = shared.cancel.cancelled() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("valid response"))
}

fn check_namespace(st: &State, target: &Target, obj: &mut Value) -> Result<(), ApiError> {
    let info = target.resource.info();
    if !info.namespaced {
        return Ok(());
    }
    let url_ns = target.namespace.clone().unwrap_or_else(|| "default".into());
    match meta_str(obj, "namespace") {
        Some(ns) if !ns.is_empty() && ns != url_ns => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {}
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["namespace"] = json!(url_ns);
    if st.get(Resource::Namespaces, "", &url_ns).is_none() {
        let mut e = ApiError::not_found(format!("namespaces \"{url_ns}\" not found"));
        e.details = Some(json!({"name": url_ns, "kind": "namespaces"}));
        return Err(e);
    }
    Ok(())
}

fn create(
    shared: &ApiState,
    dry_run: bool,
    target: &Target,
    mut obj: Value,
) -> Result<Response<Body>, ApiError> {
    shape::check_typed(target.resource, &obj)?;
    let info = target.resource.info();
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != info.kind {
            return Err(ApiError::bad_request(format!(
                "the body is a {kind}, but this URL takes a {}",
                info.kind
            )));
        }
    }
    let timings = shared.ctx.timings;
    let created = write(shared, dry_run, |st| {
        check_namespace(st, target, &mut obj)?;
        admission::on_create(st, target.resource, &mut obj, &timings)
            .map_err(|m| ApiError::new(422, "Invalid", m))?;
        st.create(target.resource, obj).map_err(ApiError::from)
    })?;
    Ok(json_response(201, &created))
}

/// PUT: the whole object (or only `.status` through `/status`).
fn replace(
    shared: &ApiState,
    dry_run: bool,
    target: &Target,
    name: &str,
    mut obj: Value,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    shape::check(&obj)?;
    if meta_str(&obj, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&obj, "name").unwrap_or("")
        )));
    }
    let timings = shared.ctx.timings;
    let updated = write(shared, dry_run, |st| {
        check_namespace(st, target, &mut obj)?;
        obj["metadata"]["name"] = json!(name);
        let ns = target.namespace.clone().unwrap_or_default();
        let old =
            st.get(target.resource, &ns, name)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    kind: error_kind(target.resource),
                    name: name.to_owned(),
                })?;
        let obj = merge_subresource(target.resource, &old, obj, status);
        write_update(st, target.resource, &old, obj, &timings)
    })?;
    Ok(json_response(200, &updated))
}

/// Writes through the main resource keep `.status` (for kinds with a status
/// subresource); writes through `/status` change only `.status`.
fn merge_subresource(resource: Resource, old: &Value, mut new: Value, status: bool) -> Value {
    if status {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if let Some(rv) = meta_str(&new, "resourceVersion") {
            out["metadata"]["resourceVersion"] = json!(rv);
        }
        out
    } else {
        if resource.info().status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        new
    }
}

fn write_update(
    st: &mut State,
    resource: Resource,
    old: &Value,
    mut obj: Value,
    timings: &Timings,
) -> Result<Value, ApiError> {
    // Patches can turn a good object into one of the wrong shape.
    shape::check_typed(resource, &obj)?;
    admission::on_update(st, resource, old, &mut obj, timings)
        .map_err(|m| ApiError::new(422, "Invalid", m))?;
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    let updated = st.update(resource, obj)?;
    // A pod whose deletion was waiting only for finalizers goes now.
    Ok(updated)
}

fn patch_object(
    shared: &ApiState,
    dry_run: bool,
    target: &Target,
    name: &str,
    ctype: &str,
    body: &[u8],
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let kind = ctype.split(';').next().unwrap_or("").trim().to_owned();
    let patch = match kind.as_str() {
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => parse_json_or_yaml(body)?,
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => parse_json(body)?,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
            ))
        }
    };
    let timings = shared.ctx.timings;
    let ns = target.namespace.clone().unwrap_or_default();
    let (code, out) = write(shared, dry_run, |st| -> Result<(u16, Value), ApiError> {
        let Some(old) = st.get(target.resource, &ns, name).cloned() else {
            if kind == "application/apply-patch+yaml" && !status {
                let mut obj = patch.clone();
                shape::check_typed(target.resource, &obj)?;
                if meta_str(&obj, "name").is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request(
                        "the name in the apply patch does not match the URL",
                    ));
                }
                if !obj["metadata"].is_object() {
                    obj["metadata"] = json!({});
                }
                obj["metadata"]["name"] = json!(name);
                check_namespace(st, target, &mut obj)?;
                admission::on_create(st, target.resource, &mut obj, &timings)
                    .map_err(|m| ApiError::new(422, "Invalid", m))?;
                return Ok((201, st.create(target.resource, obj)?));
            }
            return Err(StoreError::NotFound {
                kind: error_kind(target.resource),
                name: name.to_owned(),
            }
            .into());
        };
        let mut new = old.clone();
        match kind.as_str() {
            "application/merge-patch+json" => json_patch::merge(&mut new, &patch),
            "application/strategic-merge-patch+json" => patch::strategic_merge(&mut new, &patch),
            "application/json-patch+json" => patch::json_patch(&mut new, &patch)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
            _ => {
                let mut p = patch.clone();
                if let Some(m) = p["metadata"].as_object_mut() {
                    m.remove("managedFields");
                }
                patch::strategic_merge(&mut new, &p)
            }
        }
        if !new.is_object() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "the patch must leave an object",
            ));
        }
        // Identity is not patchable.
        new["metadata"]["name"] = json!(name);
        if target.resource.info().namespaced {
            new["metadata"]["namespace"] = json!(ns);
        }
        let new = merge_subresource(target.resource, &old, new, status);
        Ok((200, write_update(st, target.resource, &old, new, &timings)?))
    })?;
    Ok(json_response(code, &out))
}

/// Apply one manifest object in-process (create, or strategic-merge onto
/// the existing object), with the same admission as the HTTP API. Used by
/// `zdt emulator up --manifests`.
pub fn apply_object(store: &Store, timings: &Timings, obj: Value) -> Result<Value, ApiError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    let resource = Resource::from_kind(api_version, kind).ok_or_else(|| {
        ApiError::not_found(format!(
            "the emulator does not serve {kind} ({api_version}); it serves Namespace, Node, Pod, Service, ConfigMap, EndpointSlice, Deployment, ReplicaSet, Job, PodDisruptionBudget and Event"
        ))
    })?;
    let name = meta_str(&obj, "name")
        .ok_or_else(|| ApiError::bad_request(format!("a {kind} without metadata.name")))?
        .to_owned();
    let info = resource.info();
    let target = Target {
        resource,
        namespace: info
            .namespaced
            .then(|| meta_str(&obj, "namespace").unwrap_or("default").to_owned()),
        name: Some(name.clone()),
        sub: None,
    };
    let ns = target.namespace.clone().unwrap_or_default();
    store.write(|st| {
        let mut obj = obj;
        match st.get(resource, &ns, &name).cloned() {
            None => {
                check_namespace(st, &target, &mut obj)?;
                admission::on_create(st, resource, &mut obj, timings)
                    .map_err(|m| ApiError::new(422, "Invalid", m))?;
                Ok(st.create(resource, obj)?)
            }
            Some(old) => {
                let mut new = old.clone();
                patch::strategic_merge(&mut new, &obj);
                let new = merge_subresource(resource, &old, new, false);
                write_update(st, resource, &old, new, timings)
            }
        }
    })
}

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let sel: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": sel.join(",")},
    })
}

/// `GET/PUT/PATCH deployments|replicasets/NAME/scale` (kubectl scale).
fn scale(
    shared: &ApiState,
    dry_run: bool,
    target: &Target,
    name: &str,
    method: &Method,
    ctype: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let ns = target.namespace.clone().unwrap_or_default();
    let timings = shared.ctx.timings;
    let out = write(shared, dry_run, |st| -> Result<Value, ApiError> {
        let obj =
            st.get(target.resource, &ns, name)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    kind: error_kind(target.resource),
                    name: name.to_owned(),
                })?;
        let current = scale_of(&obj);
        let wanted = match *method {
            Method::GET => return Ok(current),
            Method::PUT => parse_json(body)?,
            _ => {
                let patch = parse_json(body)?;
                let mut s = current.clone();
                match ctype.split(';').next().unwrap_or("").trim() {
                    "application/json-patch+json" => patch::json_patch(&mut s, &patch)
                        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                    _ => json_patch::merge(&mut s, &patch),
                }
                s
            }
        };
        let replicas = wanted["spec"]["replicas"].as_i64().ok_or_else(|| {
            ApiError::new(
                422,
                "Invalid",
                "Scale.spec.replicas: Required value (an integer)",
            )
        })?;
        if replicas < 0 {
            return Err(ApiError::new(
                422,
                "Invalid",
                "Scale.spec.replicas: must be >= 0",
            ));
        }
        let mut next = obj.clone();
        next["spec"]["replicas"] = json!(replicas);
        match meta_str(&wanted, "resourceVersion") {
            Some(rv) if !rv.is_empty() => next["metadata"]["resourceVersion"] = json!(rv),
            _ => {}
        }
        let updated = write_update(st, target.resource, &obj, next, &timings)?;
        Ok(scale_of(&updated))
    })?;
    Ok(json_response(200, &out))
}

/// `DeleteOptions.dryRun` in a body: `["All"]` or none.
fn body_dry_run(options: &Value) -> Result<bool, ApiError> {
    match &options["dryRun"] {
        Value::Null => Ok(false),
        Value::Array(a) if a.is_empty() => Ok(false),
        Value::Array(a) if a.len() == 1 && a[0] == "All" => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "invalid dryRun value {other}: the only accepted value is [\"All\"]"
        ))),
    }
}

/// The delete's options from its body and query; `dryRun` may be in either.
fn delete_options(query: &Query, body: &[u8]) -> Result<(DeleteOptions, bool), ApiError> {
    let mut opts = DeleteOptions::default();
    let mut dry_run = false;
    if !body.is_empty() {
        let v = parse_json(body)?;
        dry_run = body_dry_run(&v)?;
        opts.grace_period_seconds = v["gracePeriodSeconds"].as_i64();
        opts.precondition_uid = v["preconditions"]["uid"].as_str().map(str::to_owned);
        opts.precondition_rv = v["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        opts.propagation = propagation(v["propagationPolicy"].as_str())?;
        if v["orphanDependents"] == true && opts.propagation.is_none() {
            opts.propagation = Some(Propagation::Orphan);
        }
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation = propagation(Some(p))?;
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid gracePeriodSeconds {g:?}: must be a number"
            ))
        })?);
    }
    Ok((opts, dry_run))
}

fn propagation(p: Option<&str>) -> Result<Option<Propagation>, ApiError> {
    match p {
        None | Some("") => Ok(None),
        Some(p) => Propagation::parse(p).map(Some).ok_or_else(|| {
            ApiError::new(
                422,
                "Invalid",
                format!("DeleteOptions.propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
            )
        }),
    }
}

/// What a batch/v1 Job delete without a propagationPolicy warns (upstream's
/// words): that kind defaults to orphaning its pods.
const JOB_ORPHAN_WARNING: &str = "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning";

/// Delete; a Namespace takes everything in it along (the namespace
/// controller's job, done at once here). Dependents through
/// ownerReferences follow the propagation policy: orphaned here, or
/// deleted by the garbage collector controller (background; foreground
/// while the object waits on its `foregroundDeletion` finalizer). A
/// batch/v1 Job's default is Orphan, everything else's Background.
pub fn delete_cascading(
    st: &mut State,
    resource: Resource,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(Value, bool), ApiError> {
    let default = if resource == Resource::Jobs {
        Propagation::Orphan
    } else {
        Propagation::Background
    };
    let policy = opts.propagation.unwrap_or(default);
    let owner = st
        .check_preconditions(resource, namespace, name, opts)?
        .clone();
    let mut opts = opts.clone();
    {
        let owner_uid = meta_str(&owner, "uid").unwrap_or("").to_owned();
        match policy {
            Propagation::Orphan => crate::ownership::orphan(st, namespace, &owner_uid),
            Propagation::Foreground
                if owner["metadata"].get("deletionTimestamp").is_none()
                    && crate::ownership::has_dependents(st, namespace, &owner_uid) =>
            {
                let mut next = owner.clone();
                let finalizers = &mut next["metadata"]["finalizers"];
                if !finalizers.is_array() {
                    *finalizers = json!([]);
                }
                let f = finalizers.as_array_mut().expect("an array");
                if !f.iter().any(|x| x == FOREGROUND_FINALIZER) {
                    f.push(json!(FOREGROUND_FINALIZER));
                }
                st.update(resource, next)?;
                // Checked above; the finalizer moved the resourceVersion.
                opts.precondition_rv = None;
            }
            _ => {}
        }
    }
    let out = st.delete(resource, namespace, name, &opts)?;
    if resource == Resource::Namespaces {
        for r in crate::store::RESOURCES.iter().filter(|r| r.namespaced) {
            let names: Vec<String> = st
                .list(r.resource, Some(name))
                .iter()
                .map(|o| meta_str(o, "name").unwrap_or("").to_owned())
                .collect();
            for n in names {
                let _ = st.delete(r.resource, name, &n, &DeleteOptions::default());
            }
        }
    }
    Ok(out)
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `POST pods/NAME/eviction`: the pod is deleted unless a PDB forbids it
/// (429 with the budget named in `details.causes`, as the real API).
fn evict(
    shared: &ApiState,
    dry_run: bool,
    namespace: &str,
    name: &str,
    eviction: &Value,
) -> Result<Response<Body>, ApiError> {
    let dry_run = dry_run || body_dry_run(&eviction["deleteOptions"])?;
    let opts = DeleteOptions {
        grace_period_seconds: eviction["deleteOptions"]["gracePeriodSeconds"].as_i64(),
        precondition_uid: eviction["deleteOptions"]["preconditions"]["uid"]
            .as_str()
            .map(str::to_owned),
        precondition_rv: None,
        propagation: None,
    };
    write(shared, dry_run, |st| -> Result<(), ApiError> {
        let pod = st
            .get(Resource::Pods, namespace, name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: "pods".into(),
                name: name.to_owned(),
            })?;
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        let terminating = pod["metadata"].get("deletionTimestamp").is_some();
        if terminating || matches!(phase, "Succeeded" | "Failed" | "Pending") {
            st.delete(Resource::Pods, namespace, name, &opts)?;
            return Ok(());
        }
        let pdbs: Vec<Value> = st
            .list(Resource::PodDisruptionBudgets, Some(namespace))
            .into_iter()
            .filter(|pdb| {
                LabelSelector::from_json(&pdb["spec"]["selector"])
                    .map(|s| pdb["spec"].get("selector").is_some() && s.matches(&pod))
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        if pdbs.len() > 1 {
            return Err(ApiError::new(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let Some(mut pdb) = pdbs.into_iter().next() else {
            st.delete(Resource::Pods, namespace, name, &opts)?;
            return Ok(());
        };
        let pdb_name = meta_str(&pdb, "name").unwrap_or("").to_owned();
        let too_many = |cause: String| {
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            );
            e.details = Some(json!({
                "causes": [{"reason": "DisruptionBudget", "message": cause}],
                "retryAfterSeconds": 0
            }));
            e
        };
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
        if pdb["status"]["observedGeneration"].as_i64().unwrap_or(0) < generation {
            return Err(too_many(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )));
        }
        let current = pdb["status"]["currentHealthy"].as_i64().unwrap_or(0);
        let desired = pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0);
        if !pod_ready(&pod) {
            let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            if always || (current >= desired && desired > 0) {
                st.delete(Resource::Pods, namespace, name, &opts)?;
                return Ok(());
            }
        }
        let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(ApiError::new(
                403,
                "Forbidden",
                "pdb disruptions allowed is negative",
            ));
        }
        if allowed == 0 {
            return Err(too_many(format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
            )));
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !pdb["status"]["disruptedPods"].is_object() {
            pdb["status"]["disruptedPods"] = json!({});
        }
        pdb["status"]["disruptedPods"][name] = json!(now_rfc3339());
        st.update(Resource::PodDisruptionBudgets, pdb)?;
        st.delete(Resource::Pods, namespace, name, &opts)?;
        Ok(())
    })?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let Ok(Route::Object(t)) = route("/api/v1/namespaces/default/pods/p1/eviction") else {
            panic!()
        };
        assert_eq!(t.resource, Resource::Pods);
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("p1"));
        assert_eq!(t.sub.as_deref(), Some("eviction"));
        let Ok(Route::Object(t)) = route("/api/v1/namespaces/kube-system") else {
            panic!()
        };
        assert_eq!(t.resource, Resource::Namespaces);
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let Ok(Route::Object(t)) = route("/apis/apps/v1/deployments") else {
            panic!()
        };
        assert_eq!(t.resource, Resource::Deployments);
        assert!(t.namespace.is_none());
        assert!(route("/apis/batch/v1/cronjobs").is_err());
        assert!(route("/api/v1/widgets").is_err());
        assert!(matches!(
            route("/apis/policy/v1"),
            Ok(Route::ResourceList(..))
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("spec.nodeName%3Dw2"), "spec.nodeName=w2");
        assert_eq!(percent_decode("a+in+%28x%2Cy%29"), "a in (x,y)");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
