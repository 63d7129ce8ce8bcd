//! The LB's health probing and data path against real sockets: timings are
//! asserted against the probe settings, with tolerances for a busy machine.

use zdt_lb::testing as lb_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use lb_support::{ask, healthy_lb, request, EventLog, TestBackend};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_lb::{BackendSpec, Dial, Dialer, Health, Lb, LbConfig, ProbeSettings, ProbeTarget};

/// Scheduling noise allowed on top of the probe budget (2 shared cores).
const TOLERANCE: Duration = Duration::from_millis(400);

fn fast_probe() -> ProbeSettings {
    ProbeSettings {
        interval: Dur::from_millis(250),
        timeout: Dur::from_millis(200),
        unhealthy_threshold: 2,
        healthy_threshold: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backend_leaves_within_the_probe_budget_not_before_the_threshold_and_comes_back() {
    let clock = Clock::start();
    let (events, rx) = EventSink::channel(clock);
    let mut log = EventLog::new(rx);
    let a = TestBackend::start("a", clock).await;
    let b = TestBackend::start("b", clock).await;
    let probe = fast_probe();
    let config = LbConfig {
        probe,
        seed: 7,
        ..Default::default()
    };
    let lb = healthy_lb(
        config,
        vec![a.spec(), b.spec()],
        events,
        2,
        Duration::from_secs(5),
    )
    .await;
    let front = lb.frontend_addr();

    let t_fail = clock.now();
    a.set_healthy(false);
    let mut hits = Vec::new();
    // Bounded: the loop ends at the budget plus margin, at most 400 requests.
    while clock.now() < t_fail + probe.detection_budget() + TOLERANCE + Duration::from_millis(300)
        && hits.len() < 400
    {
        let at = clock.now();
        hits.push((at, ask(front).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unhealthy = log
        .wait_for("Unhealthy", Some("a"), t_fail, Duration::from_secs(2))
        .await;
    let failed: Vec<Duration> = a
        .probes()
        .into_iter()
        .filter(|(t, ok)| *t >= t_fail && !ok)
        .map(|(t, _)| t)
        .collect();
    let failed_before = failed.iter().filter(|t| **t <= unhealthy.at).count();
    assert!(
        failed_before >= probe.unhealthy_threshold as usize,
        "marked unhealthy after only {failed_before} failed probes"
    );
    let took = unhealthy.at - t_fail;
    assert!(
        took <= probe.detection_budget() + TOLERANCE,
        "took {took:?} to mark unhealthy; budget {:?}",
        probe.detection_budget()
    );
    assert!(
        took >= probe.interval.get() * (probe.unhealthy_threshold - 1),
        "marked unhealthy too early: {took:?}"
    );
    // Until the threshold was reached `a` still got new connections...
    assert!(
        hits.iter()
            .any(|(t, who)| who == "a" && *t > failed[0] && *t < unhealthy.at),
        "no connection reached `a` between its first failed probe and the threshold"
    );
    // ...and none once it was marked unhealthy.
    let late: Vec<_> = hits
        .iter()
        .filter(|(t, who)| who == "a" && *t > unhealthy.at + Duration::from_millis(5))
        .collect();
    assert!(
        late.is_empty(),
        "new connections reached unhealthy `a`: {late:?}"
    );
    assert!(hits.iter().any(|(t, who)| who == "b" && *t > unhealthy.at));
    let status = lb.admin().get("a").unwrap();
    assert_eq!(status.health, Health::Unhealthy);
    assert!(
        log.count("ProbeFailed", Some("a")) == 1,
        "ProbeFailed fires on the change only"
    );

    // Back after the healthy threshold.
    let t_ok = clock.now();
    a.set_healthy(true);
    let healthy = log
        .wait_for("Healthy", Some("a"), t_ok, Duration::from_secs(3))
        .await;
    let ok_before = a
        .probes()
        .into_iter()
        .filter(|(t, ok)| *t >= t_ok && *ok && *t <= healthy.at)
        .count();
    assert!(ok_before >= probe.healthy_threshold as usize);
    assert!(healthy.at - t_ok <= probe.interval.get() * 2 + probe.timeout.get() + TOLERANCE);
    let mut back = false;
    for _ in 0..60 {
        if ask(front).await.unwrap() == "a" {
            back = true;
            break;
        }
    }
    assert!(back, "`a` got no new connection after becoming healthy");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_connections_survive_the_backend_turning_unhealthy() {
    let clock = Clock::start();
    let (events, rx) = EventSink::channel(clock);
    let mut log = EventLog::new(rx);
    let a = TestBackend::start("a", clock).await;
    let b = TestBackend::start("b", clock).await;
    let lb = healthy_lb(
        LbConfig {
            probe: fast_probe(),
            seed: 3,
            ..Default::default()
        },
        vec![a.spec(), b.spec()],
        events,
        2,
        Duration::from_secs(5),
    )
    .await;
    // Open connections until one lands on `a` (random selection: bounded).
    let mut on_a = None;
    for _ in 0..64 {
        let mut s = TcpStream::connect(lb.frontend_addr()).await.unwrap();
        if request(&mut s).await.unwrap() == "a" {
            on_a = Some(s);
            break;
        }
    }
    let mut on_a = on_a.expect("no connection landed on `a` in 64 tries");
    let t = clock.now();
    a.set_healthy(false);
    log.wait_for("Unhealthy", Some("a"), t, Duration::from_secs(3))
        .await;
    assert_eq!(request(&mut on_a).await.unwrap(), "a");
    assert_eq!(lb.admin().get("a").unwrap().active_connections, 1);
    drop(on_a);
    lb.shutdown().await;
}

fn lone_unhealthy_backend(fail_open: bool) -> LbConfig {
    LbConfig {
        probe: ProbeSettings {
            interval: Dur::from_millis(200),
            timeout: Dur::from_millis(150),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
        },
        fail_open,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_healthy_backend_fail_open_sends_to_all() {
    let clock = Clock::start();
    let (events, rx) = EventSink::channel(clock);
    let mut log = EventLog::new(rx);
    let a = TestBackend::start("a", clock).await;
    a.set_healthy(false);
    let lb = Lb::start(
        lone_unhealthy_backend(true),
        vec![a.spec()],
        events,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    log.wait_for(
        "Unhealthy",
        Some("a"),
        Duration::ZERO,
        Duration::from_secs(3),
    )
    .await;
    let fo = log
        .wait_for("FailOpen", None, Duration::ZERO, Duration::from_secs(1))
        .await;
    assert_eq!(fo.object, "lb/frontend");
    for _ in 0..5 {
        assert_eq!(ask(lb.frontend_addr()).await.unwrap(), "a");
    }
    assert_eq!(lb.admin().get("a").unwrap().health, Health::Unhealthy);
    lb.shutdown().await;
}

/// The client's view of a connection the LB turned away: reset, or closed
/// without an answer.
async fn turned_away(lb: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(lb).await else {
        return true;
    };
    let _ = s.write_all(b"hello\n").await;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_healthy_backend_reject_resets_new_connections() {
    let clock = Clock::start();
    let (events, rx) = EventSink::channel(clock);
    let mut log = EventLog::new(rx);
    let a = TestBackend::start("a", clock).await;
    a.set_healthy(false);
    let lb = Lb::start(
        lone_unhealthy_backend(false),
        vec![a.spec()],
        events,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    log.wait_for(
        "Unhealthy",
        Some("a"),
        Duration::ZERO,
        Duration::from_secs(3),
    )
    .await;
    log.wait_for(
        "NoHealthyBackends",
        None,
        Duration::ZERO,
        Duration::from_secs(1),
    )
    .await;
    for _ in 0..5 {
        assert!(turned_away(lb.frontend_addr()).await);
    }
    // And it serves again once the probe passes.
    let t = clock.now();
    a.set_healthy(true);
    log.wait_for("Healthy", Some("a"), t, Duration::from_secs(3))
        .await;
    log.wait_for("HealthyBackendsAvailable", None, t, Duration::from_secs(1))
        .await;
    assert_eq!(ask(lb.frontend_addr()).await.unwrap(), "a");
    lb.shutdown().await;
}

/// A node as kube-proxy would make it: drops or rejects every connection.
struct FixedDial(fn() -> Dial);

impl Dialer for FixedDial {
    fn dial(&self, _client: SocketAddr) -> BoxFuture<'static, Dial> {
        let d = (self.0)();
        Box::pin(async move { d })
    }
}

/// Threads of this process named `zdt-lb` (the LB's own data-path thread).
fn lb_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "zdt-lb")
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_own_thread_the_data_path_serves_and_shutdown_cuts_it_and_ends_the_thread() {
    let clock = Clock::start();
    let a = TestBackend::start("a", clock).await;
    let lb = healthy_lb(
        LbConfig {
            probe: fast_probe(),
            own_thread: true,
            ..Default::default()
        },
        vec![a.spec()],
        EventSink::discard(clock),
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(ask(lb.frontend_addr()).await.unwrap(), "a");
    // Answered, so the thread runs (it names itself as it starts).
    assert_eq!(lb_threads(), 1, "the LB's thread is running");
    let mut open = TcpStream::connect(lb.frontend_addr()).await.unwrap();
    assert_eq!(request(&mut open).await.unwrap(), "a");
    assert_eq!(lb.admin().get("a").unwrap().active_connections, 1);

    // Shutdown returns only once the thread's connections are gone (the
    // open one is cut) and the thread has ended.
    tokio::time::timeout(Duration::from_secs(5), lb.shutdown())
        .await
        .expect("shutdown waits for the LB thread's connections, which it cuts");
    let mut buf = [0u8; 8];
    match tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("the open connection survived shutdown: {other:?}"),
    }
    assert_eq!(lb_threads(), 0, "the LB's thread outlived shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_dials_hold_the_client_unanswered_and_refused_dials_reset_it() {
    let clock = Clock::start();
    let health = TestBackend::start("health", clock).await;
    let node = |name: &str, f: fn() -> Dial| BackendSpec {
        name: name.into(),
        dialer: Arc::new(FixedDial(f)),
        probe: ProbeTarget::Tcp { addr: health.app },
    };
    for (spec, dropped) in [
        (node("dropper", || Dial::Dropped), true),
        (node("refuser", || Dial::Refused), false),
    ] {
        let lb = healthy_lb(
            LbConfig {
                probe: lone_unhealthy_backend(true).probe,
                hold_dropped: Duration::from_secs(30),
                ..Default::default()
            },
            vec![spec],
            EventSink::discard(clock),
            1,
            Duration::from_secs(3),
        )
        .await;
        // On loopback the reset can arrive before connect() returns.
        let mut s = match TcpStream::connect(lb.frontend_addr()).await {
            Ok(s) => s,
            Err(e) if !dropped && e.kind() == std::io::ErrorKind::ConnectionReset => {
                lb.shutdown().await;
                continue;
            }
            Err(e) => panic!("connect: {e}"),
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_millis(700), s.read(&mut buf)).await;
        if dropped {
            assert!(
                r.is_err(),
                "a dropped connection must stay open and silent, got {r:?}"
            );
            let mut again = TcpStream::connect(lb.frontend_addr()).await.unwrap();
            assert!(again.write_all(b"more").await.is_ok());
            // The LB accepts the second connection asynchronously: wait for
            // it to be counted (bounded), then both must still be held.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while lb.admin().get("dropper").unwrap().active_connections < 2
                && tokio::time::Instant::now() < deadline
            {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(lb.admin().get("dropper").unwrap().active_connections, 2);
        } else {
            match r {
                Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
                other => panic!("a refused connection must be reset, got {other:?}"),
            }
        }
        lb.shutdown().await;
    }
}

/// The descendants of this process running `zdt lb-hold`, with the number of
/// sockets each holds.
fn lb_hold_helpers() -> Vec<(u32, usize)> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (after the parenthesised command) is the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned));
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid.as_deref() == Some(me.as_str()) && cmdline.contains("lb-hold") {
            let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.flatten()
                        .filter(|f| {
                            std::fs::read_link(f.path())
                                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                        })
                        .count()
                })
                .unwrap_or(0);
            out.push((pid.parse().unwrap(), sockets));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_held_in_the_helper_process_then_reset() {
    let clock = Clock::start();
    let health = TestBackend::start("health", clock).await;
    let lb = healthy_lb(
        LbConfig {
            probe: lone_unhealthy_backend(true).probe,
            hold_dropped: Duration::from_millis(1500),
            hold_in: Some(env!("CARGO_BIN_EXE_zdt").into()),
            ..Default::default()
        },
        vec![BackendSpec {
            name: "dropper".into(),
            dialer: Arc::new(FixedDial(|| Dial::Dropped)),
            probe: ProbeTarget::Tcp { addr: health.app },
        }],
        EventSink::discard(clock),
        1,
        Duration::from_secs(3),
    )
    .await;
    const N: usize = 20;
    let mut clients = Vec::new();
    for _ in 0..N {
        let mut s = TcpStream::connect(lb.frontend_addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        clients.push(s);
    }
    // Every connection reaches the helper (bounded wait), and the LB's own
    // count of them drops back to zero: they are no longer in this process.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let helpers = lb_hold_helpers();
        assert_eq!(helpers.len(), 1, "one lb-hold helper: {helpers:?}");
        // Its stdin (the Unix socket) plus one per held connection.
        if helpers[0].1 > N && lb.admin().get("dropper").unwrap().active_connections == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the helper holds {helpers:?}, the LB still counts {}",
            lb.admin().get("dropper").unwrap().active_connections
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Held means open and silent, then reset when the hold ends.
    let started = std::time::Instant::now();
    for s in &mut clients {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        match r {
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            other => panic!("a held connection must end in a reset, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "reset before the hold: {:?}",
        started.elapsed()
    );
    // The helper goes with the LB.
    lb.shutdown().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !lb_hold_helpers().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lb-hold outlived the LB"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
