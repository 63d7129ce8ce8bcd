//! `workload.manifests` as a Helm chart, through a fake `helm` on PATH:
//! helm cannot be installed here, so these tests check the boundary only —
//! the exact `helm template` call, that its output is what zdt validates
//! and runs, and what the user sees when helm fails or is missing. The
//! fake is a shell script each test writes; it logs its argv and prints a
//! canned rendering (or fails).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const ZDT: &str = env!("CARGO_BIN_EXE_zdt");

/// What the fake chart renders: names no plain manifest has.
const RENDERED: &str = "---
# Source: shop/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop-web
spec:
  replicas: 2
  selector:
    matchLabels: {app: shop-web}
  template:
    metadata:
      labels: {app: shop-web}
    spec:
      containers:
        - name: web
          image: shop/web:1.4
          ports: [{containerPort: 8080}]
---
# Source: shop/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: shop-web
spec:
  type: LoadBalancer
  selector: {app: shop-web}
  ports: [{port: 80, targetPort: 8080}]
";

struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    /// A chart dir, a values file, a scenario naming both, a fake helm.
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir_all(p.join("chart/templates")).unwrap();
        std::fs::write(
            p.join("chart/Chart.yaml"),
            "apiVersion: v2\nname: shop\nversion: 0.1.0\n",
        )
        .unwrap();
        std::fs::write(p.join("values-prod.yaml"), "replicas: 2\n").unwrap();
        std::fs::write(p.join("rendered.yaml"), RENDERED).unwrap();
        std::fs::write(
            p.join("scenario.yaml"),
            "apiVersion: zdt/v1alpha1\nkind: Scenario\nname: chart\n\
             workload:\n  manifests: chart\n  service: shop-web\n  deployment: shop-web\n\
             \x20 helm:\n    release: shop\n    values: [values-prod.yaml]\n\
             traffic:\n  rate: 10/s\n  duration: 1s\n",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("bin")).unwrap();
        let helm = p.join("bin/helm");
        std::fs::write(
            &helm,
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$FAKE_HELM_LOG\"\n\
             if [ -n \"$FAKE_HELM_FAIL\" ]; then echo 'Error: template: shop/templates/deployment.yaml:3: bad value' >&2; exit 1; fi\n\
             cat \"$FAKE_HELM_OUTPUT\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// `zdt validate scenario.yaml` with `path` as PATH: (exit code, output).
    fn validate(&self, path: &str, fail: bool) -> (i32, String) {
        let mut cmd = Command::new(ZDT);
        cmd.arg("validate")
            .arg(self.path("scenario.yaml"))
            .env("NO_COLOR", "1")
            .env("PATH", path)
            .env("FAKE_HELM_LOG", self.path("argv.log"))
            .env("FAKE_HELM_OUTPUT", self.path("rendered.yaml"));
        if fail {
            cmd.env("FAKE_HELM_FAIL", "1");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn with_fake(&self) -> String {
        format!("{}:/usr/bin:/bin", self.path("bin").display())
    }
}

fn abs(p: &Path) -> String {
    std::path::absolute(p).unwrap().display().to_string()
}

#[test]
fn a_chart_renders_through_helm_template_with_release_namespace_and_values() {
    let f = Fixture::new();
    let (code, out) = f.validate(&f.with_fake(), false);
    // The scenario names `shop-web`, which only the chart's rendering has:
    // validating it means zdt used helm's output.
    assert_eq!(code, 0, "{out}");
    let calls = f.calls();
    assert_eq!(
        calls,
        vec![format!(
            "template shop {} --namespace default -f {}",
            abs(&f.path("chart")),
            abs(&f.path("values-prod.yaml"))
        )],
        "helm is called once, with the release, chart, namespace and values in order"
    );
}

#[test]
fn helm_output_without_the_named_deployment_is_a_scenario_error() {
    let f = Fixture::new();
    std::fs::write(
        f.path("rendered.yaml"),
        RENDERED.replace(
            "name: shop-web\nspec:\n  replicas",
            "name: other\nspec:\n  replicas",
        ),
    )
    .unwrap();
    let (code, out) = f.validate(&f.with_fake(), false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no Deployment named `shop-web`"), "{out}");
}

#[test]
fn a_failing_helm_shows_its_command_and_error() {
    let f = Fixture::new();
    let (code, out) = f.validate(&f.with_fake(), true);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("`helm template shop"), "{out}");
    assert!(out.contains("bad value"), "helm's stderr is shown: {out}");
}

#[test]
fn a_missing_helm_names_the_install() {
    let f = Fixture::new();
    let empty = f.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, out) = f.validate(&empty.display().to_string(), false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("helm is needed"), "{out}");
    assert!(out.contains("https://helm.sh/docs/intro/install/"), "{out}");
    assert!(f.calls().is_empty());
}

#[test]
fn helm_settings_without_a_chart_are_refused() {
    let f = Fixture::new();
    std::fs::remove_file(f.path("chart/Chart.yaml")).unwrap();
    std::fs::write(f.path("chart/x.yaml"), RENDERED).unwrap();
    let (code, out) = f.validate(&f.with_fake(), false);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("`helm` settings need `workload.manifests` to be a Helm chart"),
        "{out}"
    );
}
