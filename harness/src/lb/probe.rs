//! Health probes: one task per backend, probing on a fixed schedule (start
//! to start, like the clouds), each probe bounded by the timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backend::ProbeTarget;
use super::pool::{Backend, Shared};

pub(crate) async fn probe_loop(
    shared: Arc<Shared>,
    backend: Arc<Backend>,
    phase: Duration,
    _done: mpsc::Sender<()>,
) {
    let settings = shared.config.probe;
    let interval = settings.interval.get();
    let timeout = settings.timeout.get();
    let cancel = backend.probe_cancel.clone();
    let mut next = Instant::now() + phase;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = cancel.cancelled() => return,
        }
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, probe_once(&backend.spec.probe)) => {
                r.unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
            }
            _ = cancel.cancelled() => return,
        };
        shared.record_probe(&backend, result);
        next += interval;
        // A probe slower than the interval delays the next one rather than
        // firing a burst to catch up.
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

/// One probe: `Ok` iff healthy.
pub(crate) async fn probe_once(target: &ProbeTarget) -> Result<(), String> {
    match target {
        ProbeTarget::Tcp { addr } => TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("connect: {e}")),
        ProbeTarget::Http { addr, path } => {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: zdt-lb-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            // Only the status line matters.
            let mut buf = [0u8; 256];
            let mut len = 0;
            loop {
                let n = s
                    .read(&mut buf[len..])
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    break;
                }
                len += n;
                if buf[..len].windows(2).any(|w| w == b"\r\n") || len == buf.len() {
                    break;
                }
            }
            let line = String::from_utf8_lossy(&buf[..len]);
            let line = line.lines().next().unwrap_or_default();
            let status = line
                .strip_prefix("HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(|code| code.parse::<u16>().ok());
            match status {
                Some(200) => Ok(()),
                Some(code) => Err(format!("HTTP {code}")),
                None if len == 0 => Err("connection closed without a response".into()),
                None => Err(format!("not an HTTP response: {line:?}")),
            }
        }
    }
}
