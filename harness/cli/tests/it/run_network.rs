//! The emulated cluster's own network, through the real `zdt` binary: the
//! addresses the API shows carry traffic; without a network of its own a
//! run the host cannot carry is refused up front; a machine that runs out
//! of descriptors makes the variant INVALID, naming the cause.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

fn private_network() -> bool {
    match zdt_core::netns::private_unavailable() {
        None => true,
        Some(why) => {
            eprintln!("SKIPPED: no network namespaces here: {why}");
            false
        }
    }
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

#[test]
fn pod_addresses_from_the_api_answer_inside_the_clusters_network() {
    if !private_network() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let mut up = Command::new(ZDT)
        .args([
            "emulator",
            "up",
            "--workers",
            "2",
            "--runtime",
            "builtin",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .arg("--manifests")
        .arg(&manifests)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stderr.take().unwrap()).lines();
    let mut enter = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("nsenter -t ") {
            let cmd = line[at..].split(" curl").next().unwrap().to_owned();
            enter = Some(cmd);
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let enter = enter.expect("zdt emulator up prints how to enter the network");
    // Pods get their IPs once running; wait for two.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ips = loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "pods", "-o", "jsonpath={.items[*].status.podIP}"])
            .output()
            .expect("kubectl runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let ips: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if ips.len() >= 2 || Instant::now() > deadline {
            break ips;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(ips.len() >= 2, "two pods with IPs: {ips:?}");
    for ip in &ips {
        assert!(ip.starts_with("10.244."), "{ip}");
        let mut argv = enter.split_whitespace();
        let out = Command::new(argv.next().unwrap())
            .args(argv)
            .args(["curl", "-s", "-m", "5", &format!("http://{ip}/")])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl to {ip}: {out:?}");
        assert!(body.starts_with("pod "), "the pod at {ip} answered: {body}");
        // The host's own stack does not have the address.
        let host = std::net::TcpListener::bind(format!("{ip}:0")).unwrap_err();
        assert_eq!(
            host.raw_os_error(),
            Some(libc::EADDRNOTAVAIL),
            "{ip}: {host}"
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let status = up.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
