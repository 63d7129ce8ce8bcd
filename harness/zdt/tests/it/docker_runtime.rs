//! The emulator's `docker` runtime end to end: zdt-tiny-server packed into
//! a local image (`docker import` of the binary and the libraries `ldd`
//! names — no registry, no Dockerfile build), run as a pod's container from
//! that image in the cluster's network, answering on its pod IP, stopped by
//! SIGTERM with the image's CMD (`--shutdown bad`: exit 0 at once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zdt_core::clock::Clock;
use zdt_core::emulated::{ContainerRun, RunEngine};
use zdt_core::events::EventSink;
use zdt_core::netns::{Block, Net};
use zdt_emulator::node::app::Behaviour;
use zdt_emulator::node::runtime::{ContainerSpec, Engine, Runtime};
use zdt_emulator::RuntimeChoice;

const SERVER: &str = env!("CARGO_BIN_EXE_zdt-tiny-server");

fn docker_ok() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The binary plus its shared libraries, laid out as a root filesystem.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(SERVER, root.join("zdt-tiny-server")).unwrap();
    let ldd = Command::new("ldd").arg(SERVER).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let dst = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dst).unwrap();
        }
    }
    root
}

struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_image_runs_as_the_pod_in_the_cluster_network() {
    if !docker_ok() {
        eprintln!("SKIPPED: no Docker Engine answers `docker info`");
        return;
    }
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: no private network here ({why})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let image = format!("zdt-tiny-test:{}", std::process::id());
    let _cleanup = RemoveImage(image.clone());
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let imported = Command::new("docker")
        .args([
            "import",
            "--change",
            r#"ENTRYPOINT ["/zdt-tiny-server"]"#,
            "--change",
            r#"CMD ["--shutdown", "bad"]"#,
            "--change",
            "ENV PORT=8080",
            "-",
            &image,
        ])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(
        tar.wait().unwrap().success(),
        "tar of the root filesystem failed"
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );

    let net = Net::private(
        &[Block {
            addr: std::net::Ipv4Addr::new(10, 244, 0, 1),
            len: 16,
        }],
        &[],
    )
    .unwrap();
    let run = BTreeMap::from([(
        "app".to_owned(),
        ContainerRun {
            runtime: RunEngine::Docker,
            ..ContainerRun::default()
        },
    )]);
    let rt = Runtime::with_run(
        RuntimeChoice::Builtin,
        run,
        EventSink::discard(Clock::start()),
        net.clone(),
    )
    .unwrap();
    let spec = ContainerSpec {
        namespace: "default".into(),
        pod: "tiny-1".into(),
        node: "zdt-worker".into(),
        container: "app".into(),
        image: image.clone(),
        app: Behaviour::default(),
        ip: std::net::Ipv4Addr::new(10, 244, 1, 9),
        port: 8080,
        // The image's PORT (8080) stays; the pod adds its IP.
        env: vec![("POD_IP".into(), "10.244.1.9".into())],
        command: Vec::new(),
        args: Vec::new(),
    };
    let c = rt.start(&spec).await.unwrap();
    assert_eq!(c.engine(), Engine::Docker);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let probe = zdt_core::net::http_status(&net, c.addr(), "/healthz", "test");
        if let Ok(Ok(code)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the image never listened on {}; its output: {:?}",
            c.addr(),
            c.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 200);
    c.signal(libc::SIGTERM);
    let exit = tokio::time::timeout(Duration::from_secs(10), c.exited())
        .await
        .unwrap();
    // The image's CMD chose the bad shutdown: exit 0 at once on SIGTERM.
    assert_eq!(exit.code, Some(0), "{exit:?}; output {:?}", c.log_tail());
    assert!(
        c.log_tail().iter().any(|l| l.contains("shutdown bad")),
        "{:?}",
        c.log_tail()
    );
}
