//! `zdt lb --config FILE` as a process: serves, answers its admin API,
//! prints events as JSON lines, stops on SIGTERM; bad configs exit 2 with a
//! message naming the field.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zdt_lb::{AdminClient, Health};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zdt_lb_serves_its_config_and_stops_on_sigterm() {
    serves_and_stops(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zdt_lb_on_several_threads_serves_and_stops_too() {
    serves_and_stops(&["--threads", "3"]).await;
}

#[test]
fn zero_threads_is_refused_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args(["lb", "--config", "unused.yaml", "--threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
}

/// Echo the client's "ping" as "pong": the request goes through the LB's
/// first-bytes path, the answer through the splice.
async fn serves_and_stops(extra_args: &[&str]) {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = backend.accept().await {
            let mut req = [0u8; 4];
            if s.read_exact(&mut req).await.is_ok() && &req == b"ping" {
                let _ = s.write_all(b"pong").await;
            }
        }
    });
    let (front, admin) = (free_port(), free_port());
    let mut cfg = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    write!(
        cfg,
        "frontend: 127.0.0.1:{front}\nprofile: gcp\nprobe: {{ interval: 200ms }}\nbackends:\n  - name: w1\n    address: {backend_addr}\n"
    )
    .unwrap();
    let mut child = crate::zdt_child()
        .args(["lb", "--config"])
        .arg(cfg.path())
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(extra_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = AdminClient::new(format!("127.0.0.1:{admin}").parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.wait_healthy(1, Duration::from_secs(5)).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                let _ = child.kill();
                panic!("zdt lb never became healthy: {e}");
            }
        }
    }
    let list = client.list().await.unwrap();
    assert_eq!(list[0].name, "w1");
    assert_eq!(list[0].health, Health::Healthy);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", front))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"ping")
        .await
        .unwrap();
    let mut buf = [0u8; 4];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
        .await
        .unwrap();
    assert_eq!(&buf, b"pong");
    drop(s);

    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is an event"))
        .collect();
    assert!(events
        .iter()
        .any(|e| e["reason"] == "Healthy" && e["node"] == "w1" && e["source"] == "lb"));
}

#[test]
fn a_bad_config_exits_2_naming_the_field() {
    let mut cfg = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    write!(
        cfg,
        "frontend: 127.0.0.1:0\nbackends:\n  - name: w1\n    address: 127.0.0.1:1\n    probe: ftp://nowhere\n"
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args(["lb", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backends[w1].probe"), "{err}");
}
