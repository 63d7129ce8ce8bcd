//! Small real backends on 127.0.0.1 for the LB tests: an "app" port that
//! answers every chunk it reads with its name (after an optional delay),
//! and a health port answering HTTP 200 or 503 that records every probe.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{BackendSpec, Lb, LbConfig, LbHandle, ProbeTarget, TcpDialer};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;

pub struct TestBackend {
    pub name: String,
    pub app: SocketAddr,
    pub health: SocketAddr,
    healthy: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    /// (offset on the test clock, healthy answer) of every probe answered.
    probes: Arc<Mutex<Vec<(Duration, bool)>>>,
    cancel: CancellationToken,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TestBackend {
    pub async fn start(name: &str, clock: Clock) -> Self {
        let cancel = CancellationToken::new();
        let healthy = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (app_addr, health_addr) = (app.local_addr().unwrap(), health.local_addr().unwrap());
        {
            let (cancel, name, delay) = (cancel.clone(), name.to_owned(), delay_ms.clone());
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = tokio::select! {
                        a = app.accept() => a.unwrap(),
                        _ = cancel.cancelled() => return,
                    };
                    let (name, delay, cancel) = (name.clone(), delay.clone(), cancel.clone());
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = tokio::select! {
                                r = s.read(&mut buf) => r.unwrap_or(0),
                                _ = cancel.cancelled() => 0,
                            };
                            if n == 0 {
                                return;
                            }
                            let d = delay.load(Ordering::Relaxed);
                            if d > 0 {
                                tokio::time::sleep(Duration::from_millis(d)).await;
                            }
                            if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        {
            let (cancel, healthy, probes) = (cancel.clone(), healthy.clone(), probes.clone());
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = tokio::select! {
                        a = health.accept() => a.unwrap(),
                        _ = cancel.cancelled() => return,
                    };
                    let (healthy, probes) = (healthy.clone(), probes.clone());
                    tokio::spawn(async move {
                        let mut req = Vec::new();
                        let mut buf = [0u8; 512];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => req.extend_from_slice(&buf[..n]),
                            }
                        }
                        let ok = healthy.load(Ordering::SeqCst);
                        probes.lock().unwrap().push((clock.now(), ok));
                        let status = if ok {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        };
                        let _ = s
                            .write_all(
                                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                    .as_bytes(),
                            )
                            .await;
                    });
                }
            });
        }
        Self {
            name: name.to_owned(),
            app: app_addr,
            health: health_addr,
            healthy,
            delay_ms,
            probes,
            cancel,
        }
    }

    pub fn spec(&self) -> BackendSpec {
        BackendSpec {
            name: self.name.clone(),
            dialer: Arc::new(TcpDialer { addr: self.app }),
            probe: ProbeTarget::Http {
                addr: self.health,
                path: "/healthz".into(),
            },
        }
    }

    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn probes(&self) -> Vec<(Duration, bool)> {
        self.probes.lock().unwrap().clone()
    }
}

/// Start an LB and wait until `healthy` of its backends are (within
/// `within`), as a test that is not about the start-up itself needs.
pub async fn healthy_lb(
    config: LbConfig,
    backends: Vec<BackendSpec>,
    events: EventSink,
    healthy: usize,
    within: Duration,
) -> LbHandle {
    let lb = Lb::start(config, backends, events, CancellationToken::new())
        .await
        .unwrap();
    lb.admin().wait_healthy(healthy, within).await.unwrap();
    lb
}

/// One request through the LB on a new connection: the name of the backend
/// that answered, or the io error the client saw.
pub async fn ask(lb: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(lb).await?;
    request(&mut s).await
}

/// Send one chunk on an open connection and read the backend's name back.
pub async fn request(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"hello\n").await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while !out.ends_with(b"\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// The events a test has seen, in order, with waiting for the next match.
pub struct EventLog {
    rx: tokio::sync::mpsc::UnboundedReceiver<zdt_core::events::Event>,
    pub seen: Vec<zdt_core::events::Event>,
}

impl EventLog {
    pub fn new(rx: tokio::sync::mpsc::UnboundedReceiver<zdt_core::events::Event>) -> Self {
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first event (seen before or arriving within `timeout`) with this
    /// reason and node, at or after `since` on the run clock.
    pub async fn wait_for(
        &mut self,
        reason: &str,
        node: Option<&str>,
        since: Duration,
        timeout: Duration,
    ) -> zdt_core::events::Event {
        let matches = |e: &zdt_core::events::Event| {
            e.reason == reason && e.node.as_deref() == node && e.at >= since
        };
        if let Some(e) = self.seen.iter().find(|e| matches(e)) {
            return e.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {reason} event for {node:?} within {timeout:?}; seen: {:#?}",
                        self.seen
                    )
                })
                .expect("event channel closed");
            self.seen.push(ev.clone());
            if matches(&ev) {
                return ev;
            }
        }
    }

    /// Take whatever arrived so far without waiting.
    pub fn drain_now(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.seen.push(ev);
        }
    }

    pub fn count(&self, reason: &str, node: Option<&str>) -> usize {
        self.seen
            .iter()
            .filter(|e| e.reason == reason && e.node.as_deref() == node)
            .count()
    }
}
