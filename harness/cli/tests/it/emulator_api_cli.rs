//! `zdt emulator up` runs until Ctrl-C (SIGINT) with a kubeconfig kubectl
//! can use.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_up_serves_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let mut child = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args([
            "emulator",
            "up",
            "--workers",
            "2",
            "--runtime",
            "builtin",
            "--kubeconfig",
        ])
        .arg(&kc)
        .arg("--manifests")
        .arg(&manifests)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .expect("the emulator announces itself within 20 s")
            .unwrap()
            .expect("stderr stays open while it runs");
        seen.push(line.clone());
        if line.contains("Ctrl-C stops it") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l == "applied Deployment/nginx"),
        "{seen:?}"
    );
    let kubeconfig = std::fs::read_to_string(&kc).unwrap();
    assert!(
        kubeconfig.contains("server: http://127.0.0.1:"),
        "{kubeconfig}"
    );
    if std::path::Path::new("/usr/bin/kubectl").exists() {
        let out = Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "nodes", "-o", "name"])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 3, "{text}");
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
