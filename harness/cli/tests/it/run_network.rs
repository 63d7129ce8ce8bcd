//! The emulated cluster's own network, through the real `zdt` binary:
//! without a network of its own a run the host cannot carry is refused up
//! front; a machine that runs out of descriptors makes the variant INVALID,
//! naming the cause. (That the API's addresses carry traffic is in
//! `emulator_api_cli`.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const ZDT: &str = env!("CARGO_BIN_EXE_zdt");

/// A short run: 2 workers, a fast-probing LB, `rate` for `duration`, each
/// response's body `body_delay` after its head, no chaos.
fn scenario(dir: &Path, rate: &str, duration: &str, body_delay: &str) -> PathBuf {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let text = format!(
        r#"apiVersion: zdt/v1alpha1
kind: Scenario
name: network
cluster:
  provider: emulator
  workers: 2
  emulator:
    runtime: builtin
    podStartDelay: 100ms
    kubeProxySyncDelay: 100ms
loadBalancer:
  profile: custom
  interval: 200ms
  timeout: 200ms
  unhealthyThreshold: 2
  healthyThreshold: 1
workload:
  manifests: {manifests}
  service: nginx
  deployment: nginx
  mitigations:
    replicas: 2
  patches:
    - kind: Deployment
      name: nginx
      patch:
        spec:
          template:
            metadata:
              annotations:
                zdt.io/body-delay: {body_delay}
traffic:
  rate: {rate}
  duration: {duration}
  timeout: 5s
  keepAlive: false
expect:
  successRatio: 0.5
"#,
        manifests = manifests.display()
    );
    let path = dir.join("network.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn without_a_network_of_its_own_a_run_the_host_cannot_carry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "20000/s", "10s", "0s");
    let started = Instant::now();
    let out = Command::new(ZDT)
        .args(["run", file.to_str().unwrap(), "--out"])
        .arg(dir.path().join("out"))
        .env("ZDT_NETWORK", "host")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot have a network of its own here (ZDT_NETWORK=host"),
        "{err}"
    );
    assert!(
        err.contains("zdt changes no sysctl or limit itself"),
        "{err}"
    );
    // 20,000/s × 5 s over 2 workers is past a 20,000 descriptor limit, and
    // with connection tracking loaded the table needs millions of entries.
    assert!(
        err.contains("open-files limit") || err.contains("connection-tracking table"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing started: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused up front"
    );
}

#[test]
fn a_generator_out_of_descriptors_makes_the_variant_invalid_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // 200/s with each body 300 ms late: about 60 connections open at once,
    // more than a generator limited to 40 descriptors can hold.
    let file = scenario(dir.path(), "200/s", "3s", "300ms");
    let wrapper = dir.path().join("limited-zdt");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -n 40\nexec {ZDT} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(ZDT)
        .args(["run", file.to_str().unwrap(), "--out"])
        .arg(&out_dir)
        .env("ZDT_TRAFFIC_EXE", &wrapper)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{err}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    let variant = &summary["variants"][0];
    assert_eq!(variant["verdict"], "INVALID", "{variant}");
    assert!(
        variant["host_faults"]["too-many-open-files"].as_u64() > Some(0),
        "{variant}"
    );
    let reasons = variant["reasons"].to_string();
    assert!(reasons.contains("EMFILE"), "{reasons}");
    assert!(
        reasons.contains("the machine, not the cluster"),
        "{reasons}"
    );
}
