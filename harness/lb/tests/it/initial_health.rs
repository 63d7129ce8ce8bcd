//! `InitialHealth`: with `Ready` a backend that passes its check at start is
//! healthy at once, one that fails it is not; with `Probed` every backend
//! waits for its healthy threshold on the profile's schedule.

use zdt_lb::testing as lb_support;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use lb_support::TestBackend;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_lb::{Health, InitialHealth, Lb, LbConfig, ProbeSettings};

/// Slow probes: two passing probes 3 s apart before a backend is healthy.
fn slow_probe() -> ProbeSettings {
    ProbeSettings {
        interval: Dur::from_secs(3),
        timeout: Dur::from_secs(1),
        unhealthy_threshold: 2,
        healthy_threshold: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_backends_are_healthy_at_once_and_failing_ones_are_not() {
    let clock = Clock::start();
    let a = TestBackend::start("a", clock).await;
    let b = TestBackend::start("b", clock).await;
    b.set_healthy(false);
    let started = Instant::now();
    let lb = Lb::start(
        LbConfig {
            probe: slow_probe(),
            initial_health: InitialHealth::Ready,
            ..Default::default()
        },
        vec![a.spec(), b.spec()],
        EventSink::discard(clock),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    lb.admin()
        .wait_healthy(1, Duration::from_secs(2))
        .await
        .expect("a is ready: healthy without waiting for two probes 3 s apart");
    assert!(started.elapsed() < Duration::from_secs(2));
    let admin = lb.admin();
    assert_eq!(admin.get("a").unwrap().health, Health::Healthy);
    assert_ne!(admin.get("b").unwrap().health, Health::Healthy);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probed_backends_wait_for_their_healthy_threshold() {
    let clock = Clock::start();
    let a = TestBackend::start("a", clock).await;
    let lb = Lb::start(
        LbConfig {
            probe: slow_probe(),
            initial_health: InitialHealth::Probed,
            ..Default::default()
        },
        vec![a.spec()],
        EventSink::discard(clock),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // The first probe comes within 3 s, the second 3 s later: not healthy
    // within the first 2.5 s whatever the phase.
    assert!(lb
        .admin()
        .wait_healthy(1, Duration::from_millis(2500))
        .await
        .is_err());
    lb.shutdown().await;
}
