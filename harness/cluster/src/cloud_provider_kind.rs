//! cloud-provider-kind (`loadBalancer.mode: cloud-provider-kind`): zdt does
//! not run it, but must know when the LB it made for the Service can take
//! traffic. Written to cloud-provider-kind v0.9.0 (pkg/loadbalancer,
//! pkg/constants): one envoy container per LoadBalancer Service on the kind
//! network, labelled `io.x-k8s.cloud-provider-kind.loadbalancer.name=
//! <cluster>/<namespace>/<service>`, its admin API on port 10000, where
//! `/ready` answers `LIVE` once envoy serves its config. cloud-provider-kind
//! itself waits for that answer after each config change; the Service's
//! ingress address is set from the container's address, which does not
//! mean envoy is up.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::docker::DockerError;

/// cloud-provider-kind's container label naming the Service an envoy is for.
pub const LB_NAME_LABEL: &str = "io.x-k8s.cloud-provider-kind.loadbalancer.name";
/// envoy's admin port in cloud-provider-kind's containers.
pub const ENVOY_ADMIN_PORT: u16 = 10000;
/// How long the envoy container may take to answer `LIVE` once the Service
/// has its ingress address.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why cloud-provider-kind's envoy for a Service is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvoyError {
    #[error("listing cloud-provider-kind's containers: {0}")]
    Docker(#[source] Box<DockerError>),
    /// `waiting` says what was missing at the end: no container, a stopped
    /// one, no address on the network, or envoy's `/ready` answer.
    #[error("cloud-provider-kind's envoy for {lb} not ready after {timeout:?}: {waiting}")]
    NotReady {
        lb: String,
        timeout: Duration,
        waiting: String,
    },
}

/// The label value cloud-provider-kind gives the envoy of a Service.
pub fn lb_name(cluster: &str, namespace: &str, service: &str) -> String {
    format!("{cluster}/{namespace}/{service}")
}

/// What envoy's `/ready` answered, from a raw HTTP/1.x response: `None`
/// when it is `200` with the body `LIVE`, else what it said instead.
pub fn ready_answer_waiting(response: &str) -> Option<String> {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let status = head.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    let body = body.trim();
    if code == "200" && body == "LIVE" {
        None
    } else {
        Some(format!(
            "envoy admin /ready answered {code:?} {body:?}, not 200 \"LIVE\""
        ))
    }
}

/// GET `/ready` from envoy's admin API at `addr` (2 s for the whole
/// exchange); `None` when envoy is LIVE.
pub async fn envoy_waiting(addr: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /ready HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Ok(Ok(response)) => ready_answer_waiting(&response),
        Ok(Err(e)) => Some(format!("envoy admin {addr}: {e}")),
        Err(_) => Some(format!("envoy admin {addr}: no answer within 2s")),
    }
}

/// The envoy container's state and address on `network`, or what is
/// missing.
async fn envoy_container(
    docker: &Docker,
    lb: &str,
    network: &str,
) -> Result<Result<Ipv4Addr, String>, DockerError> {
    let label = format!("{LB_NAME_LABEL}={lb}");
    let list = crate::docker::containers_labelled(
        docker,
        &label,
        format!("list containers labelled {label}"),
    )
    .await?;
    let Some(c) = list.first() else {
        return Ok(Err(format!(
            "no container labelled {LB_NAME_LABEL}={lb} (is cloud-provider-kind running?)"
        )));
    };
    let name = c
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default();
    let state = c.state.map(|s| s.to_string()).unwrap_or_default();
    if state != "running" {
        return Ok(Err(format!(
            "envoy container {name} is {state:?}, not running"
        )));
    }
    let ip = c
        .network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref())
        .and_then(|n| n.get(network))
        .and_then(|e| e.ip_address.as_deref())
        .and_then(|ip| ip.parse().ok());
    Ok(ip.ok_or_else(|| format!("envoy container {name} has no address on network {network}")))
}

/// Wait until cloud-provider-kind's envoy container for the Service runs
/// on `network` and its admin API answers `/ready` with `LIVE`, at most
/// `timeout`. Returns the container's address.
pub async fn wait_envoy_ready(
    docker: &Docker,
    network: &str,
    lb: &str,
    timeout: Duration,
) -> Result<Ipv4Addr, EnvoyError> {
    let deadline = Instant::now() + timeout;
    loop {
        let waiting = match envoy_container(docker, lb, network)
            .await
            .map_err(|e| EnvoyError::Docker(Box::new(e)))?
        {
            Ok(ip) => match envoy_waiting(SocketAddr::from((ip, ENVOY_ADMIN_PORT))).await {
                None => return Ok(ip),
                Some(w) => w,
            },
            Err(w) => w,
        };
        if Instant::now() >= deadline {
            return Err(EnvoyError::NotReady {
                lb: lb.to_owned(),
                timeout,
                waiting,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_200_live_is_ready() {
        assert_eq!(
            ready_answer_waiting("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nLIVE\n"),
            None
        );
        assert_eq!(
            ready_answer_waiting("HTTP/1.1 503 Service Unavailable\r\n\r\nPRE_INITIALIZING\n")
                .unwrap(),
            "envoy admin /ready answered \"503\" \"PRE_INITIALIZING\", not 200 \"LIVE\""
        );
        assert!(ready_answer_waiting("HTTP/1.1 200 OK\r\n\r\nDRAINING").is_some());
        assert!(ready_answer_waiting("").is_some());
    }

    /// A one-shot admin API answering `response` to whatever it is asked.
    async fn admin_stub(response: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /ready HTTP/1.0\r\n"));
            stream.write_all(response.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn envoy_is_asked_for_ready_and_its_answer_decides() {
        let live = admin_stub("HTTP/1.1 200 OK\r\n\r\nLIVE\n").await;
        assert_eq!(envoy_waiting(live).await, None);
        let starting = admin_stub("HTTP/1.1 503 Service Unavailable\r\n\r\nPRE_INITIALIZING").await;
        let waiting = envoy_waiting(starting).await.unwrap();
        assert!(waiting.contains("PRE_INITIALIZING"), "{waiting}");
        // Nothing listening: the reason names the address.
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let waiting = envoy_waiting(closed).await.unwrap();
        assert!(waiting.contains(&closed.to_string()), "{waiting}");
    }

    #[test]
    fn the_label_value_is_cluster_namespace_service() {
        assert_eq!(
            lb_name("zdt-0123456789", "web", "nginx"),
            "zdt-0123456789/web/nginx"
        );
    }
}
