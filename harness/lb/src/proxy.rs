//! The data path: accept (a permit first), pick a backend, dial it through
//! its `Dialer`, then splice both ways until either side is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::hold::{hold_unanswered, reset};
use super::pool::{Pick, PoolState};
use super::splice::splice;
use zdt_core::net::Dial;
use zdt_core::provenance::{Fate, Provenance};

fn provenance(node: Option<String>, pod: Option<String>, fate: Fate) -> Provenance {
    Provenance { node, pod, fate }
}

/// Run [`accept_loop`] on a new thread with a single-threaded runtime; the
/// thread ends once the loop has stopped and its last connection closed.
pub(crate) fn spawn_on_own_thread(
    pool: Arc<PoolState>,
    listener: TcpListener,
    done: mpsc::Sender<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Registered with the caller's reactor: move it to the thread's.
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("zdt-lb".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(pool, listener, done).await,
                    Err(e) => tracing::error!(error = %e, "lb: cannot serve the frontend"),
                }
            })
        })
}

/// Accept until cancelled, then wait for the connections to close (they
/// are cut on shutdown), so a runtime of the LB's own can end after this.
pub(crate) async fn accept_loop(
    pool: Arc<PoolState>,
    listener: TcpListener,
    done: mpsc::Sender<()>,
) {
    let connections = tokio_util::task::TaskTracker::new();
    accept_until_cancelled(&pool, listener, &done, &connections).await;
    connections.close();
    connections.wait().await;
}

async fn accept_until_cancelled(
    pool: &Arc<PoolState>,
    listener: TcpListener,
    done: &mpsc::Sender<()>,
    connections: &tokio_util::task::TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(pool.config.max_connections));
    let mut backoff = Duration::from_millis(1);
    loop {
        // Backpressure: no slot, no accept; clients queue in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = pool.cancel.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = pool.cancel.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = Duration::from_millis(1);
                connections.spawn(connection(pool.clone(), client, peer, permit, done.clone()));
                // Serve before accepting more: after a stall the backlog
                // holds a burst, and accepting all of it first puts every
                // response already waiting, and every new request, behind
                // the whole burst. Yielding runs the tasks queued so far,
                // this connection's first (docs/bench-lb.md has the A/B
                // runs).
                tokio::task::yield_now().await;
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and
                // let the run know the machine, not the cluster, failed.
                zdt_core::hostfault::record(e.raw_os_error());
                tracing::warn!(error = %e, "lb accept failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = pool.cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn connection(
    pool: Arc<PoolState>,
    client: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    _done: mpsc::Sender<()>,
) {
    // Stamped before the route is chosen: see `Dialer::dial_traced`.
    let at = pool.events.clock().now();
    let backend = match pool.pick(peer) {
        Pick::Backend(b) => b,
        Pick::Reject => {
            pool.record(peer, at, provenance(None, None, Fate::Rejected));
            return reset(client);
        }
    };
    let _active = pool.track(&backend);
    let cut = backend.cut.lock().unwrap().clone();
    let (dial, pod) = tokio::select! {
        d = backend.spec.dialer.dial_traced(peer) => d,
        _ = cut.cancelled() => return reset(client),
    };
    let fate = match &dial {
        Dial::Connected(_) => Fate::Connected,
        Dial::Dropped => Fate::Dropped,
        Dial::Refused => Fate::Refused,
        Dial::Failed(_) => Fate::DialFailed,
    };
    pool.record(
        peer,
        at,
        provenance(Some(backend.spec.name.clone()), pod, fate),
    );
    match dial {
        Dial::Connected(upstream) => {
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            tokio::select! {
                _ = splice(&client, &upstream) => {}
                // Also fires on LB shutdown: `cut` is a child of its token.
                _ = cut.cancelled() => {
                    reset(upstream);
                    reset(client);
                }
            }
        }
        Dial::Dropped => {
            // The node blackholes the connection: keep the client's open and
            // unanswered, so it sees what it would see on a cloud, a timeout.
            let hold = pool.config.hold_dropped;
            let client = match &pool.holder {
                Some(h) => match h.hold(client, hold) {
                    Ok(()) => return,
                    Err(back) => back,
                },
                None => client,
            };
            hold_unanswered(client, hold, Some(cut)).await
        }
        Dial::Refused => reset(client),
        Dial::Failed(e) => {
            tracing::debug!(backend = %backend.spec.name, error = %e, "lb dial failed");
            reset(client)
        }
    }
}
