//! zdt's LB model as a container on a docker network (kind's, in a run):
//! the image built locally from the running zdt binary, a `zdt lb` config
//! rendered from the run's [`LbConfig`] and backends, the frontend and the
//! admin API published on 127.0.0.1, and the admin API answering before the
//! run is handed the LB. The same code drives the LB whether the network is
//! kind's or a test's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;

use super::docker::{self, RunningContainer};
use crate::lb::config::{ProbeOverrides, TrafficPolicy};
use crate::lb::{AdminClient, BackendConfig, LbConfig, LbFile, Profile};
use crate::units::Dur;

/// Container port of the LB's frontend.
pub const FRONTEND_PORT: u16 = 8080;
/// Container port of the LB's HTTP admin API.
pub const ADMIN_PORT: u16 = 9090;
/// How long a started LB container may take until its admin API answers.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `zdt lb` config for `config` and `backends`: the probe settings are
/// written out in full (profile `custom`), so the container probes exactly
/// as the run's profile and overrides say, whatever its own defaults.
pub fn lb_file(config: &LbConfig, backends: Vec<BackendConfig>) -> LbFile {
    let p = config.probe;
    LbFile {
        frontend: format!("0.0.0.0:{FRONTEND_PORT}"),
        admin: Some(format!("0.0.0.0:{ADMIN_PORT}")),
        profile: Profile::Custom,
        // Irrelevant once every probe field is set; kept explicit.
        external_traffic_policy: TrafficPolicy::Local,
        probe: ProbeOverrides {
            interval: Some(p.interval),
            timeout: Some(p.timeout),
            unhealthy_threshold: Some(p.unhealthy_threshold),
            healthy_threshold: Some(p.healthy_threshold),
        },
        fail_open: config.fail_open,
        selection: config.selection,
        // The container's own open-files limit bounds it (see `Lb::start`).
        max_connections: None,
        drain_timeout: Some(Dur(config.drain_timeout)),
        seed: Some(config.seed),
        hold_dropped: Some(Dur(config.hold_dropped)),
        backends,
    }
}

/// The image tag for a zdt binary: its content hash, so the image is built
/// once per binary and reused by every later run.
fn image_tag(binary: &Path) -> Result<String, String> {
    let bytes =
        std::fs::read(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    Ok(format!("zdt-local:{:016x}", super::kind::fnv1a64(&bytes)))
}

/// The zdt image for the running binary, built `FROM scratch` unless an
/// image of the same binary exists. Returns its tag.
pub async fn ensure_image(docker: &Docker, run_id: &str) -> Result<String, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the running zdt binary to put in the LB image: {e}"))?;
    let tag = {
        let exe = exe.clone();
        tokio::task::spawn_blocking(move || image_tag(&exe))
            .await
            .map_err(|e| e.to_string())??
    };
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    crate::lb::image::build(docker, &exe, &tag, run_id)
        .await
        .map_err(|e| format!("building the LB image {tag} from {}: {e}", exe.display()))?;
    Ok(tag)
}

/// A running LB container and the client of its admin API.
#[derive(Debug, Clone)]
pub struct LbContainer {
    pub container: RunningContainer,
    pub frontend: SocketAddr,
    pub admin: AdminClient,
}

/// Run `zdt lb` from `image` on `network` with `file` as its config, and
/// wait (at most [`START_TIMEOUT`]) until its admin API answers. On failure
/// the container is removed and the error carries its last log lines.
pub async fn start(
    docker: &Docker,
    image: &str,
    network: &str,
    file: &LbFile,
    run_id: &str,
) -> Result<LbContainer, String> {
    let config = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let container = docker::run_lb_container(
        docker,
        image,
        network,
        &config,
        &[(FRONTEND_PORT, loopback), (ADMIN_PORT, loopback)],
        Some(run_id),
    )
    .await
    .map_err(|e| e.to_string())?;
    let published = |port| {
        container.published(port).ok_or_else(|| {
            format!(
                "LB container {} has no published port {port}",
                container.name
            )
        })
    };
    let ready = async {
        let frontend = published(FRONTEND_PORT)?;
        let admin = AdminClient::new(published(ADMIN_PORT)?);
        // docker-proxy accepts on the host port before the process inside
        // listens, so the first calls may be cut: retry until it answers.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match admin.list().await {
                Ok(_) => return Ok((frontend, admin)),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the LB container {} did not answer on its admin API within {START_TIMEOUT:?}: {e}{}",
                        container.name,
                        last_logs(docker, &container.id).await
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    match ready.await {
        Ok((frontend, admin)) => Ok(LbContainer {
            container,
            frontend,
            admin,
        }),
        Err(e) => {
            let _ = docker::remove_container(docker, &container.id).await;
            Err(e)
        }
    }
}

/// How often [`watch_health`] asks the container LB for its backends.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// Mirror the container LB's health transitions into the run's events (the
/// in-process LB emits them itself): every [`WATCH_INTERVAL`], list the
/// backends and emit `Healthy` / `Unhealthy` for each change, stamped when
/// seen — at most one interval after the LB decided. Runs until `cancel`.
pub fn watch_health(
    admin: AdminClient,
    events: crate::events::EventSink,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use crate::lb::Health;
    tokio::spawn(async move {
        let mut last: std::collections::HashMap<String, Health> = Default::default();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
            let Ok(list) = admin.list().await else {
                continue;
            };
            last.retain(|name, _| list.iter().any(|b| &b.name == name));
            for b in list {
                if last.insert(b.name.clone(), b.health) == Some(b.health) {
                    continue;
                }
                let (reason, message) = match b.health {
                    Health::Unknown => continue,
                    Health::Healthy => (
                        "Healthy",
                        format!(
                            "{} consecutive successful probes: receives new connections (seen through the LB container's admin API)",
                            b.consecutive_successes
                        ),
                    ),
                    Health::Unhealthy => (
                        "Unhealthy",
                        format!(
                            "{} consecutive failed probes: no new connections (established ones stay){} (seen through the LB container's admin API)",
                            b.consecutive_failures,
                            b.last_probe_error
                                .as_deref()
                                .map(|e| format!("; last probe: {e}"))
                                .unwrap_or_default()
                        ),
                    ),
                };
                events.emit(
                    crate::events::Source::Lb,
                    reason,
                    format!("node/{}", b.name),
                    Some(b.name.as_str()),
                    message,
                );
            }
        }
    })
}

/// The container's last log lines, for an error message.
async fn last_logs(docker: &Docker, container: &str) -> String {
    use futures::StreamExt;
    let options = bollard::query_parameters::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail("20")
        .build();
    let mut stream = docker.logs(container, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    if text.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- last lines of its log ---\n{}", text.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_config_spells_out_the_runs_probe_settings() {
        let mut config = LbConfig {
            probe: Profile::AwsNlb.probe(false),
            fail_open: false,
            seed: 7,
            ..LbConfig::default()
        };
        config.drain_timeout = Duration::from_secs(12);
        let backends = vec![BackendConfig {
            name: "zdt-x-worker".into(),
            address: "172.18.0.3:30080".into(),
            probe: Some("http://172.18.0.3:10256/healthz".into()),
        }];
        let file = lb_file(&config, backends.clone());
        // Round trip through the text the container reads.
        let text = serde_json::to_string(&file).unwrap();
        let back = LbFile::parse(&text).unwrap();
        assert_eq!(back.probe_settings(), config.probe);
        assert_eq!(back.frontend, "0.0.0.0:8080");
        assert_eq!(back.admin.as_deref(), Some("0.0.0.0:9090"));
        assert!(!back.fail_open);
        assert_eq!(back.seed, Some(7));
        assert_eq!(back.drain_timeout, Some(Dur::from_secs(12)));
        assert_eq!(back.backends, backends);
    }
}
