//! The data path: accept (a permit first), pick a backend, dial it through
//! its `Dialer`, then splice both ways until either side is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::backend::Dial;
use super::pool::{Pick, Shared};

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    done: mpsc::Sender<()>,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut backoff = Duration::from_millis(1);
    loop {
        // Backpressure: no slot, no accept; clients queue in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shared.cancel.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.cancel.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = Duration::from_millis(1);
                tokio::spawn(connection(
                    shared.clone(),
                    client,
                    peer,
                    permit,
                    done.clone(),
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "lb accept failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Close with RST rather than FIN: what a client sees from a cloud LB that
/// rejects, or from a connection cut at the end of connection draining.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn connection(
    shared: Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    _done: mpsc::Sender<()>,
) {
    let backend = match shared.pick(peer) {
        Pick::Backend(b) => b,
        Pick::Reject => return reset(client),
    };
    let _active = shared.track(&backend);
    let cut = backend.cut.lock().unwrap().clone();
    let dial = tokio::select! {
        d = backend.spec.dialer.dial(peer) => d,
        _ = cut.cancelled() => return reset(client),
    };
    match dial {
        Dial::Connected(mut upstream) => {
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
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
            let mut sink = [0u8; 4096];
            let hold = tokio::time::sleep(shared.config.hold_dropped);
            tokio::pin!(hold);
            loop {
                tokio::select! {
                    r = client.read(&mut sink) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = &mut hold => return reset(client),
                    _ = cut.cancelled() => return reset(client),
                }
            }
        }
        Dial::Refused => reset(client),
        Dial::Failed(e) => {
            tracing::debug!(backend = %backend.spec.name, error = %e, "lb dial failed");
            reset(client)
        }
    }
}
