//! `zdt emulator up` runs until Ctrl-C (SIGINT) or SIGTERM with a
//! kubeconfig kubectl can use, and cleans up alike after either.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The emulator's stderr up to its "… stops it." line (at most 20 s).
async fn announced(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) -> Vec<String> {
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
        if line.contains("Ctrl-C or SIGTERM stops it") {
            return seen;
        }
    }
}

/// `zdt emulator up` with 2 workers, built-in pods and the repo's nginx
/// workload, its kubeconfig written to `kc`: the child (killed on drop)
/// and the lines it announced itself with; the rest of its stderr is read
/// and dropped.
pub(crate) async fn up_with_nginx(kc: &std::path::Path) -> (tokio::process::Child, Vec<String>) {
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let mut child = Command::from(crate::zdt_child())
        .args(["emulator", "up", "--workers", "2", "--runtime", "builtin"])
        .arg("--kubeconfig")
        .arg(kc)
        .arg("--manifests")
        .arg(&manifests)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let seen = announced(&mut lines).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_up_serves_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let (mut child, seen) = up_with_nginx(&kc).await;
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

/// Processes whose command line points into `dir` (the pods' nginx
/// masters and workers run with their config in the emulator's temp dirs).
fn processes_in(dir: &std::path::Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rfind(')')
            .is_some_and(|i| state[i + 2..].starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// Issue #17 item 6: SIGTERM used to kill `zdt emulator up` by its
/// default action (exit 143), leaving `zdt-<pid>-runtime-*` temp dirs and
/// the pods' nginx processes; it must clean up as SIGINT does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_up_cleans_up_on_sigterm_as_on_sigint() {
    if zdt_emulator::node::runtime::find_nginx().is_none() {
        eprintln!("skipped: nginx is not installed, so no pod processes to leave behind");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let kc = dir.path().join("kc");
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let mut child = Command::from(crate::zdt_child())
        .args(["emulator", "up", "--workers", "2", "--runtime", "nginx"])
        .arg("--kubeconfig")
        .arg(&kc)
        .arg("--manifests")
        .arg(&manifests)
        .env("TMPDIR", &tmp)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    announced(&mut lines).await;
    // The pods start after their start delay: wait (bounded) until nginx
    // processes run from the emulator's temp dirs, so SIGTERM has
    // something to clean up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_in(&tmp).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no pod processes in {} after 30 s",
            tmp.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dirs = |tmp: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("zdt-{pid}-")))
            .collect()
    };
    assert!(!dirs(&tmp).is_empty(), "the emulator made no temp dir");
    // Keep draining stderr so the child never blocks on a full pipe.
    let rest = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            out.push(l);
        }
        out
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s of SIGTERM")
        .unwrap();
    let stderr = rest.await.unwrap().join("\n");
    assert_eq!(
        status.code(),
        Some(0),
        "exit as after Ctrl-C; stderr:\n{stderr}"
    );
    assert_eq!(
        dirs(&tmp),
        Vec::<String>::new(),
        "temp dirs left after SIGTERM"
    );
    // Reparented workers would have outlived their master by a moment at
    // most; a bounded wait tells "exiting" from "left behind".
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(&tmp).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        processes_in(&tmp),
        Vec::<i32>::new(),
        "pod processes left after SIGTERM"
    );
}

/// Issue #17 item 3 on an existing cluster (here `zdt emulator up`, context
/// `zdt-emulator`): its node names are known once zdt connects, and a
/// chaos step naming another node ends the variant there — before any
/// manifest is applied or any request is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_existing_cluster_a_wrong_node_name_stops_the_run_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let mut child = Command::from(crate::zdt_child())
        .args(["emulator", "up", "--workers", "2", "--runtime", "builtin"])
        .arg("--kubeconfig")
        .arg(&kc)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    announced(&mut lines).await;
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let file = dir.path().join("s.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: zdt/v1alpha1\nkind: Scenario\nname: t\ncluster: {{provider: existing, context: zdt-emulator, allowContexts: [zdt-emulator]}}\nworkload: {{manifests: {}}}\ntraffic: {{rate: 10/s, duration: 30s}}\nchaos:\n  - at: 5s\n    drain: {{node: zdt-worker9}}\n",
            manifests.display()
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let started = Instant::now();
    let out = Command::from(crate::zdt_child())
        .arg("run")
        .arg(&file)
        .args(["--context", "zdt-emulator", "--out"])
        .arg(&out_dir)
        .env("KUBECONFIG", &kc)
        .env("TMPDIR", dir.path())
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    let reasons = summary["variants"][0]["reasons"].to_string();
    assert!(
        reasons.contains("chaos step `step-1` names node `zdt-worker9`, which context \\\"zdt-emulator\\\" does not have (its nodes: zdt-control-plane, zdt-worker, zdt-worker2)"),
        "{reasons}"
    );
    assert_eq!(summary["variants"][0]["requests"], 0, "no traffic was sent");
    // Nothing was applied to the cluster.
    if std::path::Path::new("/usr/bin/kubectl").exists() {
        let deployments = Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "deployments", "-o", "name"])
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&deployments.stdout), "");
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
}

/// The addresses the API shows are the ones packets use: pod IPs from
/// kubectl answer inside the cluster's network, reached the way
/// `zdt emulator up` says, and are not addresses of the host's stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_addresses_from_the_api_answer_inside_the_clusters_network() {
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: no network namespaces here: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let (mut child, seen) = up_with_nginx(&kc).await;
    let enter = seen
        .iter()
        .find_map(|l| l.find("nsenter -t ").map(|at| l[at..].to_owned()))
        .and_then(|l| l.split(" curl").next().map(str::to_owned))
        .unwrap_or_else(|| panic!("zdt emulator up prints how to enter the network: {seen:?}"));
    // Pods get their IPs once running; wait (bounded) for two.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ips = loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "pods", "-o", "jsonpath={.items[*].status.podIP}"])
            .output()
            .await
            .expect("kubectl runs");
        let ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if ips.len() >= 2 || Instant::now() > deadline {
            break ips;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ips.len() >= 2, "two pods with IPs: {ips:?}");
    for ip in &ips {
        assert!(ip.starts_with("10.244."), "{ip}");
        let mut argv = enter.split_whitespace();
        let out = Command::new(argv.next().unwrap())
            .args(argv)
            .args(["curl", "-s", "-m", "5", &format!("http://{ip}/")])
            .output()
            .await
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
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Issue #22: a Job whose image is zdt's own (`zdt-local:…`) runs the zdt
/// binary that runs the emulator, with the pod's args, as an indexed Job
/// on kind would; its output is the pods' logs, during and after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_zdts_image_runs_the_zdt_binary() {
    const KUBECTL: &str = "/usr/bin/kubectl";
    if !std::path::Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let mut child = Command::from(crate::zdt_child())
        .args(["emulator", "up", "--workers", "1", "--runtime", "builtin"])
        .arg("--kubeconfig")
        .arg(&kc)
        .env("TMPDIR", dir.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    announced(&mut lines).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let job = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "zdt-version"},
        "spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "zdt", "image": "zdt-local:0123456789abcdef",
                                "command": ["/zdt"], "args": ["--version"]}],
            }},
        },
    });
    let manifest = dir.path().join("job.json");
    std::fs::write(&manifest, job.to_string()).unwrap();
    let kubectl = |args: &[&str]| {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig").arg(&kc).args(args);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), c.output())
                .await
                .expect("kubectl finishes within 60 s")
                .unwrap();
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
    };
    let (ok, out) = kubectl(&["create", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/zdt-version",
        "--timeout=40s",
    ])
    .await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "get",
        "job",
        "zdt-version",
        "-o",
        "jsonpath={.status.completedIndexes}",
    ])
    .await;
    assert!(
        ok && out == "0,1",
        "upstream writes two indexes as 0,1: {out}"
    );
    let (ok, out) = kubectl(&["logs", "job/zdt-version"]).await;
    let version = format!("zdt {}", env!("CARGO_PKG_VERSION"));
    assert!(ok && out.contains(&version), "{version:?} in {out:?}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
