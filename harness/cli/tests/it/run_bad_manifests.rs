//! Manifests zdt cannot run: `zdt run` must stop at the workload, name the
//! object and the field, exit 3 (invalid run) and still write its report.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy of manifests/nginx with `edit` applied, and a short scenario
/// that uses it; returns the scenario path.
fn scenario_with(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    for entry in std::fs::read_dir(repo().join("manifests/nginx")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), manifests.join(entry.file_name())).unwrap();
    }
    edit(&manifests);
    let scenario = dir.join("s.yaml");
    std::fs::write(
        &scenario,
        format!(
            "apiVersion: zdt/v1alpha1
kind: Scenario
name: bad-manifests
cluster:
  provider: emulator
  workers: 2
loadBalancer:
  profile: custom
  interval: 200ms
  timeout: 150ms
  unhealthyThreshold: 2
  healthyThreshold: 1
workload:
  manifests: {}
  service: nginx
  deployment: nginx
traffic:
  rate: 20/s
  duration: 2s
expect:
  successRatio: 0.99
",
            manifests.display()
        ),
    )
    .unwrap();
    scenario
}

/// Run it; (exit code, stdout + stderr, summary.json).
fn run(dir: &Path, scenario: &Path) -> (i32, String, serde_json::Value) {
    let out_dir = dir.join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(&out_dir)
        .env("TMPDIR", dir)
        .output()
        .expect("zdt runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = std::fs::read_to_string(out_dir.join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json ({e}); output:\n{text}"));
    (
        out.status.code().unwrap_or(-1),
        text,
        serde_json::from_str(&summary).unwrap(),
    )
}

#[test]
fn a_kind_the_cluster_does_not_serve_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_with(dir.path(), |m| {
        std::fs::write(
            m.join("db.yaml"),
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: postgres}]}\n",
        )
        .unwrap();
    });
    let (code, text, summary) = run(dir.path(), &scenario);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("StatefulSet `db` (apps/v1): the cluster does not serve this kind"),
        "{text}"
    );
    assert!(
        text.contains("remove the object from the manifests"),
        "{text}"
    );
    assert_eq!(summary["variants"][0]["verdict"], "INVALID");
}

#[test]
fn a_field_of_the_wrong_type_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_with(dir.path(), |m| {
        let path = m.join("deployment.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("containerPort: 80"),
            "the nginx manifest changed"
        );
        std::fs::write(
            &path,
            text.replace("containerPort: 80", "containerPort: \"eighty\""),
        )
        .unwrap();
    });
    let (code, text, summary) = run(dir.path(), &scenario);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(
            "apply Deployment default/nginx: `spec.template.spec.containers[0].ports[0].containerPort`"
        ),
        "{text}"
    );
    assert_eq!(summary["variants"][0]["verdict"], "INVALID");
}
