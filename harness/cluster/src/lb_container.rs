//! zdt's LB model as a container on a docker network (kind's, in a run):
//! the image built locally from the running zdt binary, a `zdt lb` config
//! rendered from the run's [`LbConfig`] and backends, the frontend and the
//! admin API published on 127.0.0.1, and the admin API answering before the
//! run is handed the LB. The same code drives the LB whether the network is
//! kind's or a test's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;

use super::docker::{self, DockerError, RunningContainer};
use super::lb_image::ImageError;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_lb::config::{ProbeOverrides, TrafficPolicy};
use zdt_lb::{AdminClient, AdminError, BackendConfig, LbConfig, LbFile, Profile};

/// Container port of the LB's frontend.
pub const FRONTEND_PORT: u16 = 8080;
/// Container port of the LB's HTTP admin API.
pub const ADMIN_PORT: u16 = 9090;
/// How long a started LB container may take until its admin API answers.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Why zdt's LB could not be put in a container and answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LbContainerError {
    #[error("cannot find the running zdt binary to put in the LB image: {0}")]
    NoBinary(#[source] std::io::Error),
    #[error("cannot read {path}: {source}")]
    ReadBinary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Hashing the binary (on a blocking thread) panicked or was cancelled.
    #[error(transparent)]
    Hash(#[from] tokio::task::JoinError),
    #[error("building the LB image {tag} from {binary}: {source}")]
    Build {
        tag: String,
        binary: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("LB container {container} has no published port {port}")]
    NotPublished { container: String, port: u16 },
    /// The container's last log lines follow the reason, when it has any.
    #[error(
        "the LB container {container} did not answer on its admin API within {START_TIMEOUT:?}: {source}{}",
        log_tail(logs)
    )]
    NotAnswering {
        container: String,
        #[source]
        source: AdminError,
        logs: String,
    },
}

fn log_tail(logs: &str) -> String {
    if logs.is_empty() {
        String::new()
    } else {
        format!("\n--- last lines of its log ---\n{logs}")
    }
}

/// The image tag for a zdt binary: its content hash, so the image is built
/// once per binary and reused by every later run.
fn image_tag(binary: &Path) -> Result<String, LbContainerError> {
    let bytes = std::fs::read(binary).map_err(|source| LbContainerError::ReadBinary {
        path: binary.to_owned(),
        source,
    })?;
    Ok(zdt_core::in_cluster::image_tag(super::kind::fnv1a64(
        &bytes,
    )))
}

/// The zdt image for the running binary, built `FROM scratch` unless an
/// image of the same binary exists. Returns its tag.
pub async fn ensure_image(docker: &Docker, run_id: &str) -> Result<String, LbContainerError> {
    let exe = std::env::current_exe().map_err(LbContainerError::NoBinary)?;
    let tag = {
        let exe = exe.clone();
        tokio::task::spawn_blocking(move || image_tag(&exe)).await??
    };
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    if let Err(source) = crate::lb_image::build(docker, &exe, &tag, run_id).await {
        return Err(LbContainerError::Build {
            tag,
            binary: exe,
            source,
        });
    }
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
) -> Result<LbContainer, LbContainerError> {
    let config = serde_json::to_vec_pretty(file).expect("an LB config always serialises");
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let container = docker::run_lb_container(
        docker,
        image,
        network,
        &config,
        &[(FRONTEND_PORT, loopback), (ADMIN_PORT, loopback)],
        Some(run_id),
    )
    .await?;
    let published = |port| {
        container
            .published(port)
            .ok_or_else(|| LbContainerError::NotPublished {
                container: container.name.clone(),
                port,
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
                Err(source) if Instant::now() >= deadline => {
                    return Err(LbContainerError::NotAnswering {
                        container: container.name.clone(),
                        source,
                        logs: last_logs(docker, &container.id).await,
                    })
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

/// Forward the LB container's events into the run's: `zdt lb` prints every
/// event of its pool on stdout as one JSON line ([`zdt_lb::cli`]) — the
/// same [`Event`]s the in-process LB emits: probe results, `Healthy` /
/// `Unhealthy`, `Added`, `Removed`, `Draining`, `Drained`, `Restored`,
/// `ConnectionsCut`, fail-open. They are read with `docker logs --follow
/// --timestamps` (from the container's start, so nothing before the call is
/// missed), parsed back into [`Event`]s and put on the run's clock by
/// [`LogClock`]. Runs until the container is gone or `cancel` fires.
pub fn follow_events(
    docker: Docker,
    container: String,
    events: EventSink,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    tokio::spawn(async move {
        let options = bollard::query_parameters::LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(false)
            .timestamps(true)
            .build();
        let mut stream = docker.logs(&container, Some(options));
        let mut clock = LogClock::new(events.clock());
        let mut pending = String::new();
        loop {
            let chunk = tokio::select! {
                // Cancelled first: the container is removed after the
                // cancel, and its stream's end is then no loss.
                biased;
                _ = cancel.cancelled() => return,
                c = stream.next() => c,
            };
            match chunk {
                None => return,
                Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                    pending.push_str(&String::from_utf8_lossy(&message));
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        if let Some(ev) = clock.stamp(&line) {
                            events.send(ev);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    events.emit(
                        zdt_core::events::Source::Run,
                        "LbEventsLost",
                        "lb",
                        None,
                        format!(
                            "cannot follow the LB container's event lines (`docker logs {container}`): {e}; \
                             the run's log has no LB events from here on (the container's log driver must \
                             support reading, e.g. json-file or local)"
                        ),
                    );
                    return;
                }
            }
        }
    })
}

/// Puts the LB container's event lines on the run's clock. A line is
/// `<docker timestamp> <event JSON>`; the event's `at` counts from the
/// container's own clock (the `zdt lb` process's start), whose origin on the
/// run's clock is unknown. Each line bounds it from above: the event was
/// printed no later than Docker stamped the line, so
/// `origin ≤ docker_time − at`. The smallest bound seen so far is the
/// estimate (off by Docker's fastest read of the container's stdout, well
/// under a millisecond), and an event's run time is `estimate + at`: the
/// LB's own timing, not when zdt happened to read the line — a burst read
/// late keeps its true spacing. Docker's timestamps are wall-clock times;
/// they are turned into run times through one reading of both clocks taken
/// when following starts.
#[derive(Debug, Clone)]
pub struct LogClock {
    /// The wall clock (ns since the epoch) and the run clock at one moment.
    wall_ns: i128,
    run_ns: i128,
    /// The container clock's origin on the run clock (ns), once a line
    /// has bounded it.
    origin_ns: Option<i128>,
}

impl LogClock {
    /// Anchored now on `clock`.
    pub fn new(clock: zdt_core::clock::Clock) -> Self {
        Self::anchored(jiff::Timestamp::now(), clock.now())
    }

    /// Anchored with `wall` being `run` on the run's clock.
    pub fn anchored(wall: jiff::Timestamp, run: Duration) -> Self {
        Self {
            wall_ns: wall.as_nanosecond(),
            run_ns: i128::try_from(run.as_nanos()).unwrap_or(i128::MAX),
            origin_ns: None,
        }
    }

    /// The event on one `docker logs --timestamps` line, with `at` on the
    /// run's clock; `None` for lines that are not events.
    pub fn stamp(&mut self, line: &str) -> Option<zdt_core::events::Event> {
        let (ts, json) = line.trim_end().split_once(' ')?;
        let ts: jiff::Timestamp = ts.parse().ok()?;
        let mut ev: zdt_core::events::Event = serde_json::from_str(json).ok()?;
        let seen = self.run_ns + (ts.as_nanosecond() - self.wall_ns);
        let at = i128::try_from(ev.at.as_nanos()).unwrap_or(i128::MAX);
        let bound = seen - at;
        let origin = self.origin_ns.map_or(bound, |o| o.min(bound));
        self.origin_ns = Some(origin);
        let run_at = (origin + at).max(0);
        ev.at = Duration::from_nanos(u64::try_from(run_at).unwrap_or(u64::MAX));
        Some(ev)
    }
}

/// The container's last log lines (empty when it logged nothing), for an
/// error message.
/// Point the LB's backend `desired.name` at `desired`'s address and probe,
/// when its probe target differs (the LB's backends carry the node's
/// InternalIP in both). The LB resolves a backend once, when it is added,
/// so a node that came back with another address (kind rewrites a
/// restarted node's IP) is removed and added again; the node's
/// connections to the old address are dead already. Returns the probe
/// target it had when it moved, `None` when it was already right.
pub async fn follow_backend(
    admin: &AdminClient,
    desired: &BackendConfig,
) -> Result<Option<String>, AdminError> {
    let want = desired
        .probe
        .clone()
        .unwrap_or_else(|| format!("tcp://{}", desired.address));
    let current = admin.list().await?;
    let had = current.iter().find(|b| b.name == desired.name);
    if had.is_some_and(|b| b.probe == want) {
        return Ok(None);
    }
    if had.is_some() {
        admin.remove(&desired.name).await?;
    }
    admin.add(desired).await?;
    Ok(Some(
        had.map_or_else(|| "none".to_owned(), |b| b.probe.clone()),
    ))
}

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
        text.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(wall: jiff::Timestamp, after: Duration, at_ms: u64, reason: &str) -> String {
        let ev = zdt_core::events::Event {
            at: Duration::from_millis(at_ms),
            source: zdt_core::events::Source::Lb,
            reason: reason.into(),
            object: "node/w1".into(),
            node: Some("w1".into()),
            message: "m".into(),
            since: None,
        };
        let ts = wall
            .checked_add(jiff::SignedDuration::try_from(after).unwrap())
            .unwrap();
        format!("{ts} {}\n", serde_json::to_string(&ev).unwrap())
    }

    #[test]
    fn log_lines_land_on_the_run_clock_at_the_lbs_own_times() {
        let wall: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        // The run clock reads 10 s at that wall time.
        let mut c = LogClock::anchored(wall, Duration::from_secs(10));
        let ms = Duration::from_millis;
        // Docker stamped it 1 s later (run 11 s); the LB says 500 ms after
        // its start: the container started no later than run 10.5 s.
        let ev = c.stamp(&line(wall, ms(1000), 500, "Added")).unwrap();
        assert_eq!((ev.at, ev.reason.as_str()), (ms(11_000), "Added"));
        assert_eq!(ev.node.as_deref(), Some("w1"));
        // A tighter bound (run 12 s − 1.6 s = 10.4 s) moves the origin.
        let ev = c
            .stamp(&line(wall, ms(2000), 1600, "ProbeSucceeded"))
            .unwrap();
        assert_eq!(ev.at, ms(12_000));
        // A line Docker stamped late (run 15 s) keeps the LB's own time:
        // 10.4 s + 2 s, not 15 s.
        let ev = c.stamp(&line(wall, ms(5000), 2000, "Draining")).unwrap();
        assert_eq!(ev.at, ms(12_400));
        // Not event lines: ignored.
        assert!(c
            .stamp("2026-11-26T12:00:01Z zdt lb: frontend 0.0.0.0:8080\n")
            .is_none());
        assert!(c.stamp("{\"no\": \"timestamp\"}\n").is_none());
        assert!(c.stamp("").is_none());
    }

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
