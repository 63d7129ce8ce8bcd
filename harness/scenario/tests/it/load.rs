//! The library side of the format: defaults, every field, variants,
//! overrides and scaling, as the run sees them.

use std::path::{Path, PathBuf};

use zdt_core::units::{Dur, Rate};
use zdt_scenario::{self as scenario, *};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn d(s: &str) -> Dur {
    s.parse().unwrap()
}

#[test]
fn a_minimal_file_gets_every_default() {
    let file = scenario::load(data("valid-minimal.yaml")).unwrap();
    let v = file.variants().unwrap();
    assert_eq!(v.len(), 1);
    let s = &v[0];
    assert_eq!(s.variant, "default");
    assert_eq!(s.name, "minimal");
    assert_eq!(s.cluster.provider, Provider::Emulator);
    assert_eq!(s.cluster.kubernetes, KubeVersion::new(1, 31));
    assert_eq!(s.cluster.workers, 3);
    assert_eq!(s.cluster.kind_config, None);
    assert_eq!(s.cluster.emulator.kube_proxy_sync_delay, d("1s"));
    assert_eq!(s.cluster.emulator.node_monitor_grace_period, d("40s"));
    assert_eq!(s.load_balancer.profile, LbProfile::Azure);
    assert_eq!(s.load_balancer.probe.interval, None);
    assert!(s.load_balancer.fail_open);
    assert_eq!(s.load_balancer.selection, Selection::Random);
    assert_eq!(s.load_balancer.mode, LbMode::Model);
    assert!(s.workload.manifests.is_absolute());
    assert!(s.workload.manifests.join("deployment.yaml").is_file());
    assert_eq!(s.workload.namespace, "default");
    assert_eq!(s.workload.service, "nginx");
    assert_eq!(s.workload.deployment, "nginx");
    assert_eq!(s.workload.mitigations.pre_stop_sleep, None);
    assert_eq!(
        s.workload.mitigations.pre_stop_sleep_mode,
        PreStopSleepMode::Action
    );
    assert_eq!(s.traffic.load.timeout, d("10s"));
    assert!(!s.traffic.load.keep_alive);
    assert_eq!(s.traffic.load.method, "GET");
    assert_eq!(s.traffic.load.path, "/");
    assert_eq!(s.traffic.load.max_in_flight, 1000); // 100/s × 10s
    assert_eq!(s.traffic.load.bucket, d("1s"));
    assert!(
        s.traffic.load.replay,
        "Go's replay of idempotent requests is on"
    );
    assert_eq!(s.traffic.load.redirects, zdt_traffic::DEFAULT_REDIRECTS);
    assert_eq!(s.traffic.warmup, Dur::ZERO);
    assert!(s.chaos.is_empty());
    assert!(s.expect.success_ratio.is_none());
    assert_eq!(s.expect.min_achieved_rate, 0.999);
    assert_eq!(s.expect.tolerance.success_ratio, 0.001);
    assert_eq!(s.expect.tolerance.latency, 0.2);
}

#[test]
fn every_field_of_the_full_example_arrives() {
    let file = scenario::load(data("valid-full.yaml")).unwrap();
    let v = file.variants().unwrap();
    let s = &v[0];
    assert_eq!(s.variant, "base");
    assert_eq!(s.description.as_deref(), Some("The document as written"));
    assert_eq!(s.cluster.provider, Provider::Kind);
    assert!(s.cluster.kind_config.as_ref().unwrap().is_file());
    assert_eq!(s.cluster.allow_contexts, ["kind-zdt"]);
    assert_eq!(s.cluster.emulator.pod_start_delay, d("500ms"));
    assert_eq!(s.cluster.runtime, RuntimeChoice::Builtin);
    assert_eq!(s.load_balancer.profile, LbProfile::Custom);
    assert_eq!(s.load_balancer.probe.unhealthy_threshold, Some(3));
    assert!(!s.load_balancer.fail_open);
    let probe = s.load_balancer.probe(false);
    assert_eq!(
        (
            probe.interval,
            probe.timeout,
            probe.unhealthy_threshold,
            probe.healthy_threshold
        ),
        (d("4s"), d("2s"), 3, 2)
    );
    let m = &s.workload.mitigations;
    assert_eq!(m.pre_stop_sleep_mode, PreStopSleepMode::Exec);
    let Some(Switch::On(p)) = &m.readiness_probe else {
        panic!("{m:?}")
    };
    assert_eq!((p.path.as_str(), p.period), ("/healthz", d("1s")));
    assert_eq!(
        m.pdb,
        Some(Switch::On(Pdb::MinAvailable(IntOrPercent::Int(2))))
    );
    assert_eq!(m.max_surge, Some(IntOrPercent::Percent("25%".into())));
    assert_eq!(m.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(m.spread, Some(Spread::Preferred));
    assert_eq!(s.workload.patches.len(), 2);
    assert_eq!(s.traffic.load.rate.get(), 5.0);
    assert_eq!(s.traffic.load.duration, d("90s"));
    assert_eq!(
        s.traffic.load.headers,
        [("Content-Type".to_string(), "text/plain".to_string())]
    );
    assert_eq!(s.traffic.load.body, b"hello");
    assert!(!s.traffic.load.replay, "replayIdempotent: false");

    assert_eq!(s.chaos.len(), 20);
    assert_eq!(
        s.chaos[1].start,
        Start::After {
            step: 0,
            delay: Dur::ZERO
        }
    );
    assert_eq!(
        s.chaos[2].start,
        Start::After {
            step: 1,
            delay: d("1s")
        }
    );
    assert_eq!(s.chaos[3].name, "step-4");
    assert_eq!(
        s.chaos[2].action,
        Action::Drain {
            node: NodeSelector::SameAs(0),
            timeout: d("2m"),
            grace_period: Some(d("30s")),
        }
    );
    assert_eq!(
        s.chaos[19].action,
        Action::Wait(Wait::Until {
            condition: WaitCondition::LbHealthy,
            timeout: d("5m")
        })
    );
    let kinds: Vec<&str> = s.chaos.iter().map(|c| c.action.kind()).collect();
    for k in zdt_scenario::v1alpha1::ACTIONS {
        assert!(kinds.contains(k), "the full example lacks `{k}`");
    }

    let e = &s.expect;
    assert_eq!(
        e.success_ratio,
        Some(Bound {
            min: Some(0.9),
            max: Some(1.0)
        })
    );
    let bounds = e.latency.bounds();
    assert_eq!(bounds.len(), 6);
    assert_eq!(
        bounds[3],
        (
            "p99",
            0.99,
            Bound {
                min: Some(d("1ms")),
                max: Some(d("1s"))
            }
        )
    );
    assert_eq!(bounds[4].0, "p99.9");
    assert_eq!(
        e.error_kinds.as_deref(),
        Some(
            &[
                ErrorKindName::Timeout,
                ErrorKindName::Kind(zdt_traffic::ErrorKind::Refused),
                ErrorKindName::Kind(zdt_traffic::ErrorKind::Reset)
            ][..]
        )
    );
    assert_eq!(e.tolerance.latency, 0.25);

    // The second variant: a merge patch removes and replaces fields, the
    // rest of `expect` is inherited.
    let emu = &v[1];
    assert_eq!(emu.cluster.provider, Provider::Emulator);
    assert_eq!(emu.cluster.context, None);
    assert_eq!(
        emu.expect.success_ratio,
        Some(Bound {
            min: Some(0.5),
            max: None
        })
    );
    assert!(emu.expect.latency.bounds().is_empty());
    assert_eq!(emu.expect.max_error_window, Some(d("5s")));
}

#[test]
fn overrides_and_scaling() {
    let s = scenario::load(data("valid-minimal.yaml"))
        .unwrap()
        .variant("default")
        .unwrap();
    let o = Overrides {
        rate: Some("50/s".parse::<Rate>().unwrap()),
        generators: Some(3),
        duration: Some(d("5s")),
        provider: Some(Provider::Kind),
        context: None,
    };
    assert_eq!(s.traffic.generators.count, 1);
    let s2 = s.clone().with_overrides(&o).unwrap();
    assert_eq!(s2.traffic.generators.count, 3);
    assert_eq!(s2.traffic.load.rate.get(), 50.0);
    assert_eq!(s2.traffic.load.duration, d("5s"));
    assert_eq!(s2.cluster.provider, Provider::Kind);
    assert_eq!(s2.traffic.load.max_in_flight, 500);

    let scaled = s.clone().scaled(0.1);
    assert_eq!(scaled.traffic.load.rate.get(), 10.0);
    assert_eq!(scaled.traffic.load.duration, s.traffic.load.duration);

    let seed = scenario::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/seed-drain.yaml"),
    )
    .unwrap()
    .variant("published")
    .unwrap();
    let err = seed
        .clone()
        .with_overrides(&Overrides {
            duration: Some(d("5s")),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("starts at 10s"), "{err}");
    assert!(
        matches!(&err, OverrideError::DurationTooShort { step: 1, at, .. } if *at == d("10s")),
        "{err:?}"
    );
    let err = seed
        .with_overrides(&Overrides {
            generators: Some(0),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_eq!(err, OverrideError::Generators(0));
    assert!(err.to_string().starts_with("--generators 0: "), "{err}");
    let err = s
        .clone()
        .with_overrides(&Overrides {
            duration: Some(Dur::ZERO),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, OverrideError::ZeroDuration);
    assert_eq!(err.to_string(), "--duration must be > 0");

    // keepalive-drain's SIGTERM variant cannot move to a 1.31 kind cluster.
    let sigterm = scenario::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/keepalive-drain.yaml"),
    )
    .unwrap()
    .variant("sigterm")
    .unwrap();
    let err = sigterm
        .with_overrides(&Overrides {
            provider: Some(Provider::Kind),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("needs Kubernetes ≥ 1.33"), "{err}");
    assert!(
        err.to_string()
            .starts_with("--provider kind: `stopSignal` needs"),
        "{err}"
    );
}

#[test]
fn unknown_variant_names_suggest_the_closest() {
    let file = scenario::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/seed-drain.yaml"),
    )
    .unwrap();
    let err = file.variant("lb-frist").unwrap_err();
    assert!(
        err.to_string().contains("did you mean `lb-first`?"),
        "{err}"
    );
    let VariantError::Unknown {
        names, suggestion, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(suggestion.as_deref(), Some("lb-first"));
    assert!(names.iter().any(|n| n == "published"), "{names:?}");
    assert!(file.variant("lb-first").is_ok());
}

#[test]
fn errors_carry_line_and_column_for_plain_output() {
    let err = scenario::load(data("invalid-node-index.yaml")).unwrap_err();
    assert_eq!(err.position(), Some((16, 21)));
    assert!(err.one_line().ends_with(
        "invalid-node-index.yaml:16:21: chaos step 2: node index 5 but the cluster has 3 workers"
    ));
}

#[test]
fn a_sweep_runs_each_value_on_each_variant_it_names() {
    let file = scenario::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/prestop-sweep.yaml"),
    )
    .unwrap();
    assert_eq!(
        file.swept_field(),
        Some("workload.mitigations.preStopSleep")
    );
    let v = file.variants().unwrap();
    let names: Vec<&str> = v.iter().map(|s| s.variant.as_str()).collect();
    assert_eq!(
        names,
        [
            "k8s-1.27@0s",
            "k8s-1.27@5s",
            "k8s-1.27@12s",
            "k8s-1.27@20s",
            "k8s-1.31@0s",
            "k8s-1.31@5s",
            "k8s-1.31@12s",
            "k8s-1.31@20s"
        ]
    );
    let p = &v[2];
    assert_eq!(p.workload.mitigations.pre_stop_sleep, Some(d("12s")));
    assert_eq!(p.cluster.kubernetes, KubeVersion::new(1, 27));
    let point = p.sweep.as_ref().unwrap();
    assert_eq!(
        (point.base.as_str(), point.value.as_str(), point.index),
        ("k8s-1.27", "12s", 2)
    );
    assert_eq!(file.variant_names().len(), 8);
}

#[test]
fn a_command_line_sweep_replaces_the_files_and_checks_its_values() {
    let mut file = scenario::load(data("valid-minimal.yaml")).unwrap();
    file.set_sweep("cluster.kubernetes", &["1.27".into(), "1.31".into()])
        .unwrap();
    let v = file.variants().unwrap();
    let versions: Vec<(String, KubeVersion)> = v
        .iter()
        .map(|s| (s.variant.clone(), s.cluster.kubernetes))
        .collect();
    assert_eq!(
        versions,
        [
            ("default@1.27".to_owned(), KubeVersion::new(1, 27)),
            ("default@1.31".to_owned(), KubeVersion::new(1, 31))
        ]
    );
    let err = file
        .set_sweep("workload.mitigations.preStopSleep", &["ten".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("default@ten"), "{err}");
    let err = file
        .set_sweep("kind", &["x".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be swept"), "{err}");
}
