//! The short two-variant drain several CLI tests run on the emulator: a
//! drain behind a Local Service on Kubernetes 1.27 with a fast-probing LB,
//! so the drained node drops new connections until the LB's probes mark it
//! down (an error window opens a few seconds after the drain and closes
//! again); variant `cluster-policy` routes around it.

use std::path::{Path, PathBuf};

/// Where it runs and for how long; the rest is the same for every test.
pub struct DrainScenario<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub duration: &'a str,
    pub timeout: &'a str,
    pub drain_at: &'a str,
}

impl DrainScenario<'_> {
    /// Writes `NAME.yaml` into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
        let text = format!(
            r#"apiVersion: zdt/v1alpha1
kind: Scenario
name: {name}
description: {description}
cluster:
  provider: emulator
  kubernetes: "1.27"
  workers: 3
loadBalancer:
  profile: cloud-provider-kind
  failOpen: true
workload:
  manifests: {manifests}
  service: nginx
  deployment: nginx
  mitigations:
    replicas: 3
    spread: required
    externalTrafficPolicy: Local
    readinessProbe: {{path: /, period: 1s, failureThreshold: 1}}
    preStopSleep: 0s
    terminationGracePeriod: 5s
traffic:
  rate: 100/s
  duration: {duration}
  timeout: {timeout}
  keepAlive: false
chaos:
  - name: drain
    at: {drain_at}
    drain:
      node: {{hostingPod: {{app: nginx}}}}
      timeout: 30s
expect:
  successRatio: 0.5
variants:
  - name: local
  - name: cluster-policy
    patch:
      workload:
        mitigations:
          externalTrafficPolicy: Cluster
"#,
            name = self.name,
            description = self.description,
            manifests = manifests.display(),
            duration = self.duration,
            timeout = self.timeout,
            drain_at = self.drain_at,
        );
        let path = dir.join(format!("{}.yaml", self.name));
        std::fs::write(&path, text).unwrap();
        path
    }
}
