//! The LB as a container on the real Docker Engine: a FROM scratch image of
//! the test-built zdt binary, two `zdt serve` backends and `zdt lb` on a
//! private network, the LB published on 127.0.0.1. Pausing one backend
//! (its kernel still accepts TCP, nothing answers HTTP) must take it out of
//! the LB within the probe budget. Skipped, with the reason printed, only
//! when no Docker Engine answers.
//!
//! Everything a test makes — the image, networks, its own containers and
//! the ones zdt's code under test starts — is in a [`ZdtMade`] guard,
//! which removes it on drop, also when an assertion fails. A test's own
//! containers start through zdt's `docker::run_container` (what the kind
//! provider uses), not a container library of their own. The helpers here
//! serve `cluster_docker` too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use zdt_cluster::docker as zd;
use zdt_cluster::lb_image::{self as image, BuiltImage, Linkage};
use zdt_lb::{AdminClient, Health};

/// The tests here take turns: both build an image and publish ports on
/// loopback, and a `start_container` failed once (error not captured) while
/// the other test ran beside it on Docker 20.10.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What `zdt serve` prints on stderr once it listens.
pub(crate) const SERVE_READY: &str = "zdt serve: listening on";
/// What `zdt lb` prints on stderr once its admin API listens (after the
/// frontend).
pub(crate) const LB_READY: &str = "zdt lb: admin API on";

/// The Docker Engine as zdt's own code reaches it (`docker::connect` agrees
/// on an API version), or `None` once the reason to skip is printed.
pub(crate) async fn docker_or_skip() -> Option<Docker> {
    match zd::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            // The error says that no Docker Engine answers, and why.
            println!("skipped: {e}");
            None
        }
    }
}

/// A name no other test (or test process) uses: `prefix-pid-nanos`.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// What a test made, through zdt's own code: the image `lb_image::build`
/// made, networks `docker::create_network` made, containers. Removed on
/// drop, also when an assertion fails: containers first, then networks,
/// then images.
#[derive(Default)]
pub(crate) struct ZdtMade {
    pub(crate) containers: Vec<String>,
    pub(crate) networks: Vec<String>,
    pub(crate) images: Vec<String>,
    /// Kind clusters whose owner markers zdt made (a fake kind deletes no
    /// node containers, which would take the markers along).
    pub(crate) kind_markers: Vec<String>,
}

impl Drop for ZdtMade {
    fn drop(&mut self) {
        let containers = std::mem::take(&mut self.containers);
        let networks = std::mem::take(&mut self.networks);
        let images = std::mem::take(&mut self.images);
        let markers = std::mem::take(&mut self.kind_markers);
        // Drop cannot await, and this thread may be inside the test's
        // runtime: remove from a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let d = match zd::connect().await {
                    Ok(d) => d,
                    Err(e) => return eprintln!("cleanup: {e}"),
                };
                for c in &containers {
                    if let Err(e) = zd::remove_container(&d, c).await {
                        eprintln!("cleanup: {e}");
                    }
                }
                for n in &networks {
                    if let Err(e) = zd::remove_network(&d, n).await {
                        eprintln!("cleanup: {e}");
                    }
                }
                for i in &images {
                    if let Err(e) = zd::remove_image(&d, i).await {
                        eprintln!("cleanup: {e}");
                    }
                }
                for m in &markers {
                    if let Err(e) = zdt_cluster::kind_owner::release_cluster(&d, m).await {
                        eprintln!("cleanup: {e}");
                    }
                }
            })
        })
        .join();
    }
}

/// This build's `zdt` binary as a FROM scratch image `tag`, built by zdt's
/// own `lb_image::build`; `made` removes it.
pub(crate) async fn build_image(
    d: &Docker,
    made: &mut ZdtMade,
    tag: &str,
    run_id: &str,
) -> BuiltImage {
    made.images.push(tag.to_owned());
    image::build(d, Path::new(env!("CARGO_BIN_EXE_zdt")), tag, run_id)
        .await
        .unwrap()
}

/// A container of the test image: named `name`, on `network`, running
/// `zdt <args>` under docker-init as zdt runs its own containers (so
/// SIGTERM reaches zdt), with `ports` published on 127.0.0.1 (any free
/// port). [`TestContainer::start`] starts it and waits for `ready` on its
/// stderr.
pub(crate) fn zdt_container(
    built: &BuiltImage,
    name: &str,
    network: &str,
    args: &[&str],
    ports: &[u16],
    ready: &'static str,
) -> TestContainer {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    TestContainer {
        spec: zd::ContainerSpec {
            name: name.to_owned(),
            image: built.tag.clone(),
            cmd: args.iter().map(|a| a.to_string()).collect(),
            network: Some(network.to_owned()),
            publish: ports.iter().map(|p| (*p, loopback)).collect(),
            init: true,
            ..zd::ContainerSpec::default()
        },
        ready,
    }
}

/// A test container not yet started (see [`zdt_container`]).
pub(crate) struct TestContainer {
    spec: zd::ContainerSpec,
    ready: &'static str,
}

impl TestContainer {
    /// Copy `data` to `path` in the container before it starts.
    pub(crate) fn with_file(mut self, path: &str, data: Vec<u8>) -> Self {
        self.spec.files.push((path.to_owned(), data, 0o644));
        self
    }

    /// Label it like a container zdt made for run `run_id` (`zdt clean`
    /// sees it), plus `labels`.
    pub(crate) fn with_labels(mut self, run_id: &str, labels: &[(&str, &str)]) -> Self {
        self.spec.run_id = Some(run_id.to_owned());
        self.spec
            .labels
            .extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Start it (`made` removes it) and wait until its stderr says it is
    /// ready; a container that exits or stays silent for 30 s fails the
    /// test with what it printed.
    pub(crate) async fn start(self, d: &Docker, made: &mut ZdtMade) -> zd::RunningContainer {
        let c = zd::run_container(d, &self.spec).await.unwrap();
        made.containers.push(c.id.clone());
        let options = bollard::query_parameters::LogsOptionsBuilder::new()
            .follow(true)
            .stderr(true)
            .stdout(true)
            .build();
        let mut logs = d.logs(&c.id, Some(options));
        let mut seen = String::new();
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(out)) = logs.next().await {
                if let bollard::container::LogOutput::StdErr { message } = &out {
                    seen.push_str(&String::from_utf8_lossy(message));
                    if seen.contains(self.ready) {
                        return true;
                    }
                } else {
                    seen.push_str(&out.to_string());
                }
            }
            false
        })
        .await;
        assert!(
            waited == Ok(true),
            "container {} never printed {:?} on stderr ({}): {seen}",
            self.spec.name,
            self.ready,
            if waited.is_err() { "30 s" } else { "it exited" }
        );
        c
    }
}

/// Freeze a container's processes (its kernel side still accepts TCP).
pub(crate) async fn pause(d: &Docker, c: &zd::RunningContainer) {
    d.pause_container(&c.id).await.unwrap();
}

/// Backends `b1` and `b2`, `zdt serve` on port 8080 of `network` (it
/// answers with its pod's name in `X-Pod`), each with its address there.
async fn serve_backends(
    d: &Docker,
    made: &mut ZdtMade,
    built: &BuiltImage,
    run_id: &str,
    network: &str,
) -> HashMap<&'static str, (zd::RunningContainer, IpAddr)> {
    zd::create_network(d, network, None, Some(run_id))
        .await
        .unwrap();
    made.networks.push(network.to_owned());
    let mut pods = HashMap::new();
    for pod in ["b1", "b2"] {
        let serve = [
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--pod",
            pod,
            "--node",
            pod,
        ];
        let name = format!("{run_id}-{pod}");
        let c = zdt_container(built, &name, network, &serve, &[], SERVE_READY)
            .start(d, made)
            .await;
        let ip = c.ipv4.expect("backend has an address on the test network");
        pods.insert(pod, (c, IpAddr::V4(ip)));
    }
    pods
}

/// One HTTP request on a new connection; the `X-Pod` header of the answer.
async fn get_pod(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        if !text.starts_with("HTTP/1.1 200") {
            return Err(format!("unexpected answer: {text:?}"));
        }
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-pod").then(|| v.trim().to_owned())
            })
            .ok_or_else(|| format!("no X-Pod header in {text:?}"))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_container_stops_using_a_paused_backend_within_its_probe_budget() {
    let _turn = SERIAL.lock().await;
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let run_id = unique("test-lb");
    let tag = format!("zdt-test:{run_id}");
    let mut made = ZdtMade::default();
    let started = Instant::now();
    let built = build_image(&docker, &mut made, &tag, &run_id).await;
    assert!(matches!(built.linkage, Linkage::Dynamic { .. }));
    println!(
        "image {} ({:.1} MB, dynamic: {:?}) built in {:?}",
        built.tag,
        built.size as f64 / 1e6,
        built.linkage,
        started.elapsed()
    );

    let network = format!("zdt-{run_id}");
    let pods = serve_backends(&docker, &mut made, &built, &run_id, &network).await;

    let probe_interval = Duration::from_millis(500);
    let probe_timeout = Duration::from_millis(300);
    let unhealthy_threshold = 2u32;
    let backends: Vec<serde_json::Value> = ["b1", "b2"]
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p,
                "address": format!("{}:8080", pods[p].1),
                "probe": format!("http://{}:8080/healthz", pods[p].1),
            })
        })
        .collect();
    let config = serde_json::json!({
        "frontend": "0.0.0.0:8080",
        "admin": "0.0.0.0:9090",
        "profile": "custom",
        "probe": {
            "interval": "500ms",
            "timeout": "300ms",
            "unhealthyThreshold": unhealthy_threshold,
            "healthyThreshold": 1
        },
        "backends": backends,
    });
    let lb_args = ["lb", "--config", "/etc/zdt/lb.json"];
    let lb = zdt_container(
        &built,
        &format!("{run_id}-lb"),
        &network,
        &lb_args,
        &[8080, 9090],
        LB_READY,
    )
    .with_file("/etc/zdt/lb.json", config.to_string().into_bytes())
    .start(&docker, &mut made)
    .await;
    let front = lb.published(8080).expect("the frontend is published");
    let admin = AdminClient::new(lb.published(9090).expect("the admin API is published"));

    // The admin API listens (the container said so); the probes
    // may still be on their way to two healthy backends.
    if let Err(e) = admin.wait_healthy(2, Duration::from_secs(20)).await {
        panic!("LB never had 2 healthy backends: {e}");
    }

    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..40 {
        let pod = get_pod(front, Duration::from_secs(2)).await.unwrap();
        *seen.entry(pod).or_default() += 1;
    }
    assert!(
        seen.contains_key("b1") && seen.contains_key("b2"),
        "{seen:?}"
    );

    let paused_at = Instant::now();
    pause(&docker, &pods["b1"].0).await;
    let budget = probe_interval * unhealthy_threshold + probe_timeout;
    let tolerance = Duration::from_millis(1500);
    let detected = loop {
        let list = admin.list().await.unwrap();
        let b1 = list.iter().find(|b| b.name == "b1").unwrap();
        if b1.health == Health::Unhealthy {
            break paused_at.elapsed();
        }
        assert!(
            paused_at.elapsed() < budget + tolerance * 2,
            "b1 still {:?} after {:?}: {b1:?}",
            b1.health,
            paused_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("paused backend marked unhealthy after {detected:?} (budget {budget:?})");
    assert!(
        detected <= budget + tolerance,
        "took {detected:?}, budget {budget:?}"
    );
    assert!(
        detected >= probe_timeout,
        "marked unhealthy implausibly early: {detected:?}"
    );
    for _ in 0..30 {
        assert_eq!(
            get_pod(front, Duration::from_secs(2)).await.unwrap(),
            "b2",
            "the LB still sent a new connection to the paused backend"
        );
    }
}

/// The kind provider's LB path on a plain docker network: the config
/// rendered from the run's `LbConfig` (`lb_container::lb_file`), the
/// container started and awaited by `lb_container::start`, and the chaos
/// steps' admin operations through `LbControl::Remote` — the same calls a
/// run on kind makes, with two `zdt serve` containers standing in for the
/// workers' NodePorts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_providers_lb_container_is_driven_through_its_admin_api() {
    let _turn = SERIAL.lock().await;
    use zdt_cluster::lb_container;
    use zdt_cluster::LbControl;
    use zdt_core::units::Dur;
    use zdt_lb::{BackendConfig, LbConfig, ProbeSettings};

    let Some(d) = docker_or_skip().await else {
        return;
    };
    let run_id = unique("test-lbc");
    let tag = format!("zdt-test:{run_id}");
    let mut made = ZdtMade::default();
    let built = build_image(&d, &mut made, &tag, &run_id).await;
    let network = format!("zdt-{run_id}");

    let pods = serve_backends(&d, &mut made, &built, &run_id, &network).await;
    let backends = ["b1", "b2"]
        .map(|pod| {
            let ip = pods[pod].1;
            BackendConfig {
                name: pod.into(),
                address: format!("{ip}:8080"),
                probe: Some(format!("http://{ip}:8080/healthz")),
            }
        })
        .to_vec();

    let config = LbConfig {
        probe: ProbeSettings {
            interval: Dur::from_millis(300),
            timeout: Dur::from_millis(300),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        },
        ..LbConfig::default()
    };
    let file = lb_container::lb_file(&config, backends);
    let lb = lb_container::start(&d, &tag, &network, &file, &run_id)
        .await
        .unwrap();
    // Removed with the backends if the test fails before shutdown does.
    made.containers.push(lb.container.id.clone());
    assert!(lb.frontend.ip().is_loopback(), "{:?}", lb.frontend);
    // As the kind provider does: the container's event lines forwarded
    // into the run's events, on the run's clock.
    let clock = zdt_core::clock::Clock::start();
    let (events, mut rx) = zdt_core::events::EventSink::channel(clock);
    let watch = tokio_util::sync::CancellationToken::new();
    lb_container::follow_events(d.clone(), lb.container.id.clone(), events, watch.clone());
    let control = LbControl::Remote {
        frontend: lb.frontend,
        admin: lb.admin.clone(),
        container: lb.container.id.clone(),
        watch: Some(watch.drop_guard()),
    };
    let checked = control
        .wait_ready(2, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        checked,
        format!("2 backends healthy (probed by zdt's LB) at {}", lb.frontend)
    );
    let admin = control.admin();
    // Every event up to now, then one call's: the events with `reason` for
    // `node`, which must be stamped between the run-clock times before and
    // after the call (the LB emits them while it handles the request; the
    // slack covers the wall-clock reading that maps Docker's timestamps).
    let mut log: Vec<zdt_core::events::Event> = Vec::new();
    let slack = Duration::from_millis(50);
    async fn expect_event(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<zdt_core::events::Event>,
        log: &mut Vec<zdt_core::events::Event>,
        reason: &str,
        node: &str,
    ) -> zdt_core::events::Event {
        if let Some(ev) = log
            .iter()
            .find(|e| e.reason == reason && e.node.as_deref() == Some(node))
        {
            return ev.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(ev)) => {
                    log.push(ev.clone());
                    if ev.reason == reason && ev.node.as_deref() == Some(node) {
                        return ev;
                    }
                }
                _ => panic!(
                    "no {reason} event for {node} from the LB container within 10 s; got {:?}",
                    log.iter().map(|e| (&e.reason, &e.node)).collect::<Vec<_>>()
                ),
            }
        }
    }
    let in_window = |ev: &zdt_core::events::Event, before: Duration, after: Duration| {
        println!(
            "{} for {:?} stamped {:?}; the admin call ran {before:?}..{after:?}",
            ev.reason, ev.node, ev.at
        );
        assert!(
            ev.at + slack >= before && ev.at <= after + slack,
            "{} stamped {:?}, the call ran {before:?}..{after:?} on the run clock",
            ev.reason,
            ev.at
        );
    };
    assert_eq!(admin.backend_count().await.unwrap(), 2);

    let frontend = lb.frontend;
    let spread = |n: usize| async move {
        let mut seen = HashMap::<String, usize>::new();
        for _ in 0..n {
            let pod = get_pod(frontend, Duration::from_secs(2)).await.unwrap();
            *seen.entry(pod).or_default() += 1;
        }
        seen
    };
    let seen = spread(40).await;
    assert!(
        seen.contains_key("b1") && seen.contains_key("b2"),
        "{seen:?}"
    );
    // Both were added, probed and went healthy, each event in order and
    // before the run saw two healthy backends (events before the follow
    // began are read too: `docker logs` starts at the container's start).
    for b in ["b1", "b2"] {
        let added = expect_event(&mut rx, &mut log, "Added", b).await;
        let probed = expect_event(&mut rx, &mut log, "ProbeSucceeded", b).await;
        let healthy = expect_event(&mut rx, &mut log, "Healthy", b).await;
        assert!(
            added.at <= probed.at && probed.at <= healthy.at,
            "{b}: Added {:?}, ProbeSucceeded {:?}, Healthy {:?}",
            added.at,
            probed.at,
            healthy.at
        );
        assert!(healthy.at <= clock.now(), "{healthy:?}");
    }

    // lbDrainBackend: no new connections to b1, and the run hears of it
    // (the admin-API poll this replaces saw health changes only).
    let before = clock.now();
    admin.drain("b1", None).await.unwrap();
    let after = clock.now();
    let draining = expect_event(&mut rx, &mut log, "Draining", "b1").await;
    in_window(&draining, before, after);
    let seen = spread(30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["b2"], "{seen:?}");
    // lbRestoreBackend (also the run's undo): b1 takes connections again.
    let before = clock.now();
    admin.restore("b1").await.unwrap();
    let after = clock.now();
    let restored = expect_event(&mut rx, &mut log, "Restored", "b1").await;
    in_window(&restored, before, after);
    assert!(restored.at > draining.at);
    admin
        .wait_healthy(2, Duration::from_secs(10))
        .await
        .unwrap();
    let seen = spread(40).await;
    assert!(
        seen.contains_key("b1") && seen.contains_key("b2"),
        "{seen:?}"
    );
    // lbRemoveBackend: b2 leaves the pool.
    let before = clock.now();
    admin.remove("b2").await.unwrap();
    let after = clock.now();
    in_window(
        &expect_event(&mut rx, &mut log, "Removed", "b2").await,
        before,
        after,
    );
    assert_eq!(admin.backend_count().await.unwrap(), 1);
    let seen = spread(30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["b1"], "{seen:?}");
    let err = admin.drain("nope", None).await.unwrap_err().to_string();
    assert!(err.contains("no backend named `nope`"), "{err}");

    // A hung backend: the LB's failed probes, then its Unhealthy verdict,
    // reach the events (what error-window attribution reads), stamped after
    // the pause and at the LB's probe cadence.
    log.clear();
    let paused = clock.now();
    pause(&d, &pods["b1"].0).await;
    let unhealthy = expect_event(&mut rx, &mut log, "Unhealthy", "b1").await;
    let failed: Vec<Duration> = log
        .iter()
        .filter(|e| e.reason == "ProbeFailed" && e.node.as_deref() == Some("b1"))
        .map(|e| e.at)
        .collect();
    // The LB reports the first failure (a change of result), and Unhealthy
    // at the second (the threshold), one probe interval later as the LB
    // timed it (300 ms interval and timeout: 300 to 600 ms).
    assert_eq!(
        failed.len(),
        1,
        "one ProbeFailed before Unhealthy: {failed:?}"
    );
    assert!(
        paused <= failed[0] + slack && failed[0] < unhealthy.at,
        "paused {paused:?}, probe failed {failed:?}, Unhealthy {:?}",
        unhealthy.at
    );
    let gap = unhealthy.at - failed[0];
    println!(
        "paused at {paused:?}; ProbeFailed {:?}, Unhealthy {:?} ({gap:?} later)",
        failed[0], unhealthy.at
    );
    assert!(
        gap >= Duration::from_millis(200) && gap <= Duration::from_millis(800),
        "first and second failed probes {gap:?} apart; the interval is 300 ms"
    );
    assert!(
        unhealthy.message.contains("consecutive failed probes"),
        "{}",
        unhealthy.message
    );
    d.unpause_container(&pods["b1"].0.id).await.unwrap();

    // Shutting the LB down removes its container.
    control.shutdown().await;
    let gone = d.inspect_container(&lb.container.id, None).await;
    assert!(
        matches!(
            gone,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        ),
        "{gone:?}"
    );
}
