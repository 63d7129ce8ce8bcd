//! The emulator's container runtime with real processes: nginx (when
//! installed) and the built-in server, the same checks for both.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_emulator::node::app::Behaviour;
use zdt_emulator::node::runtime::{find_nginx, ContainerSpec, Engine, Runtime};
use zdt_emulator::RuntimeChoice;

const LIMIT: Duration = Duration::from_secs(10);

fn spec(pod: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        namespace: "default".into(),
        pod: pod.into(),
        node: "worker-1".into(),
        container: "web".into(),
        image: image.into(),
        app: Behaviour::default(),
        ip: std::net::Ipv4Addr::new(10, 244, 1, 2),
        port: 80,
        env: Vec::new(),
        command: Vec::new(),
        args: Vec::new(),
    }
}

fn slow(pod: &str, start_delay: Duration, response_delay: Duration) -> ContainerSpec {
    ContainerSpec {
        app: Behaviour {
            start_delay,
            response_delay,
            body_delay: Duration::ZERO,
        },
        ..spec(pod, "nginx:1.27")
    }
}

/// One GET with keep-alive off; returns (status, headers lowercased).
async fn get(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    timeout(LIMIT, s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))?;
    Ok((code, text))
}

fn engines() -> Vec<RuntimeChoice> {
    let mut v = vec![RuntimeChoice::Builtin];
    if find_nginx().is_some() {
        v.push(RuntimeChoice::Nginx);
    } else {
        eprintln!("nginx is not installed: only the built-in runtime is tested");
    }
    v
}

/// Any live (non-zombie) process in process group `pgid`. Zombies do not
/// count: this machine's PID 1 may be slow to reap orphans.
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

#[tokio::test]
async fn choice_follows_image_and_override() {
    let events = EventSink::discard(Clock::start());
    let builtin = Runtime::new(
        RuntimeChoice::Builtin,
        events.clone(),
        zdt_emulator::Net::host(),
    )
    .unwrap();
    assert_eq!(builtin.engine_for("nginx:1.27"), Engine::Builtin);
    let auto = Runtime::new(
        RuntimeChoice::Auto,
        events.clone(),
        zdt_emulator::Net::host(),
    )
    .unwrap();
    assert_eq!(auto.engine_for("ghcr.io/acme/app:1"), Engine::Builtin);
    let expected = if find_nginx().is_some() {
        Engine::Nginx
    } else {
        Engine::Builtin
    };
    assert_eq!(auto.engine_for("nginx:1.27"), expected);
    let dir = auto.root().to_path_buf();
    assert!(dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("zdt-{}-runtime-", std::process::id())));
    drop(auto);
    assert!(!dir.exists(), "runtime temp dir left behind");
}

#[tokio::test]
async fn containers_answer_with_pod_and_node_headers() {
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();
        let c = rt.start(&spec("web-1", "nginx:1.27")).await.unwrap();
        let (code, text) = get(c.addr()).await.unwrap();
        assert_eq!(code, 200, "{choice:?}");
        assert!(text.contains("x-pod: web-1"), "{choice:?}: {text}");
        assert!(text.contains("x-node: worker-1"), "{choice:?}: {text}");
    }
}

#[tokio::test]
async fn sigquit_is_graceful_exit_zero_and_listener_closed() {
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();
        let c = rt.start(&spec("web-q", "nginx")).await.unwrap();
        // An idle keep-alive connection must be closed by the graceful stop.
        let mut idle = TcpStream::connect(c.addr()).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        assert!(idle.read(&mut buf).await.unwrap() > 0);
        c.signal(libc::SIGQUIT);
        let exit = timeout(LIMIT, c.exited()).await.unwrap();
        assert!(exit.success(), "{choice:?}: {exit:?}");
        assert!(
            matches!(
                timeout(LIMIT, idle.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            ),
            "{choice:?}: idle keep-alive connection not closed"
        );
        let refused = TcpStream::connect(c.addr()).await;
        assert!(
            refused.is_err(),
            "{choice:?}: still listening after SIGQUIT"
        );
        if choice == RuntimeChoice::Nginx {
            let log = c.log_tail().join("\n");
            assert!(log.contains("signal 3 (SIGQUIT)"), "{log}");
        }
    }
}

#[tokio::test]
async fn sigkill_takes_the_whole_container_and_drop_kills() {
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();
        let c = rt.start(&spec("web-k", "nginx")).await.unwrap();
        let pid = c.pid();
        c.signal(libc::SIGKILL);
        let exit = timeout(LIMIT, c.exited()).await.unwrap();
        assert_eq!(exit.signal, Some(libc::SIGKILL), "{choice:?}");
        assert_eq!(exit.exit_code(), 137);
        if let Some(pid) = pid {
            assert!(!group_alive(pid), "nginx worker outlived SIGKILL");
        }

        let c = rt.start(&spec("web-d", "nginx")).await.unwrap();
        let (addr, pid) = (c.addr(), c.pid());
        drop(c);
        if let Some(pid) = pid {
            let deadline = Instant::now() + LIMIT;
            while group_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(!group_alive(pid), "nginx outlived its Container");
        } else {
            let deadline = Instant::now() + LIMIT;
            while TcpStream::connect(addr).await.is_ok() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(TcpStream::connect(addr).await.is_err(), "{choice:?}");
    }
}

#[tokio::test]
async fn runtime_shutdown_kills_every_nginx() {
    if find_nginx().is_none() {
        eprintln!("skipped: nginx is not installed");
        return;
    }
    let rt = Runtime::new(
        RuntimeChoice::Nginx,
        EventSink::discard(Clock::start()),
        zdt_emulator::Net::host(),
    )
    .unwrap();
    let a = rt.start(&spec("a", "nginx")).await.unwrap();
    let b = rt.start(&spec("b", "nginx")).await.unwrap();
    let pids = [a.pid().unwrap(), b.pid().unwrap()];
    rt.shutdown();
    for c in [&a, &b] {
        timeout(LIMIT, c.exited()).await.unwrap();
    }
    for pid in pids {
        assert!(!group_alive(pid));
    }
    assert!(rt.start(&spec("c", "nginx")).await.is_err());
}

#[tokio::test]
async fn ignored_signal_keeps_serving_and_pause_stops_answering() {
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();
        let c = rt.start(&spec("web-p", "nginx")).await.unwrap();
        c.signal(libc::SIGUSR1);
        assert_eq!(get(c.addr()).await.unwrap().0, 200, "{choice:?}");
        assert!(c.exit_status().is_none());

        c.pause();
        let stalled = timeout(Duration::from_millis(500), get(c.addr())).await;
        assert!(stalled.is_err(), "{choice:?}: a paused container answered");
        c.resume();
        assert_eq!(
            timeout(LIMIT, get(c.addr())).await.unwrap().unwrap().0,
            200,
            "{choice:?}"
        );
    }
}

/// A warming-up app: the container is started (it has a pid, it has not
/// exited) but connections are refused until the start delay is over.
#[tokio::test]
async fn start_delay_refuses_connections_until_the_app_listens() {
    let delay = Duration::from_millis(1500);
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();
        let t0 = Instant::now();
        let c = rt
            .start(&slow("web-w", delay, Duration::ZERO))
            .await
            .unwrap();
        assert!(
            t0.elapsed() < delay,
            "{choice:?}: start waited for the warm-up"
        );
        let refused = TcpStream::connect(c.addr()).await;
        assert!(t0.elapsed() < delay, "{choice:?}: machine too slow to tell");
        assert_eq!(
            refused.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{choice:?}: a warming-up app accepted a connection"
        );
        assert!(c.exit_status().is_none(), "{choice:?}");
        let deadline = Instant::now() + LIMIT;
        let answered = loop {
            match get(c.addr()).await {
                Ok((code, _)) => break code,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{choice:?}: never listened: {e}"),
            }
        };
        assert_eq!(answered, 200, "{choice:?}");
        assert!(
            t0.elapsed() >= delay,
            "{choice:?}: answered after {:?}, before the start delay",
            t0.elapsed()
        );
    }
}

/// The stop signal during the warm-up ends the container at once (its app
/// has no handlers yet), and its port stays closed.
#[tokio::test]
async fn stop_signal_during_the_warm_up_ends_the_container() {
    let delay = Duration::from_secs(30);
    for choice in engines() {
        for signo in [libc::SIGTERM, libc::SIGQUIT] {
            let rt = Runtime::new(
                choice,
                EventSink::discard(Clock::start()),
                zdt_emulator::Net::host(),
            )
            .unwrap();
            let c = rt
                .start(&slow("web-s", delay, Duration::ZERO))
                .await
                .unwrap();
            c.signal(signo);
            let exit = timeout(LIMIT, c.exited()).await;
            assert!(exit.is_ok(), "{choice:?} {signo}: still warming up");
            assert!(TcpStream::connect(c.addr()).await.is_err(), "{choice:?}");
            if let Some(pid) = c.pid() {
                assert!(!group_alive(pid), "{choice:?}: the warm-up outlived it");
            }
        }
    }
}

/// Send a slow request and give the server a second (of its two) to read
/// it before the signal; then the response or the cut.
async fn slow_request_then_signal(
    addr: SocketAddr,
    signo: i32,
    c: &zdt_emulator::node::runtime::Container,
) -> (Duration, std::io::Result<String>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.signal(signo);
    let mut buf = Vec::new();
    let read = timeout(LIMIT, s.read_to_end(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    (t0.elapsed(), read.map(|_| text))
}

/// With a response delay, a request is in flight when the stop signal
/// arrives: SIGQUIT (graceful) lets it finish with `Connection: close`,
/// SIGTERM (fast) cuts it without a response.
#[tokio::test]
async fn response_delay_keeps_requests_in_flight_for_the_stop_signal() {
    let delay = Duration::from_secs(2);
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();

        let c = rt
            .start(&slow("web-q", Duration::ZERO, delay))
            .await
            .unwrap();
        let (took, resp) = slow_request_then_signal(c.addr(), libc::SIGQUIT, &c).await;
        let text = resp.unwrap();
        assert!(text.starts_with("http/1.1 200"), "{choice:?}: {text}");
        assert_eq!(
            text.matches("x-pod: web-q").count(),
            1,
            "{choice:?}: {text}"
        );
        assert!(took >= delay, "{choice:?}: answered after {took:?}");
        assert!(timeout(LIMIT, c.exited()).await.unwrap().success());

        let c = rt
            .start(&slow("web-t", Duration::ZERO, delay))
            .await
            .unwrap();
        let (took, resp) = slow_request_then_signal(c.addr(), libc::SIGTERM, &c).await;
        match resp {
            Ok(text) => assert!(
                text.is_empty(),
                "{choice:?}: answered under SIGTERM: {text}"
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{choice:?}"),
        }
        assert!(took < delay, "{choice:?}: cut only after {took:?}");
        timeout(LIMIT, c.exited()).await.unwrap();
    }
}

/// With a body delay the head arrives at once (the request is in flight
/// with bytes received): SIGQUIT lets the body follow, SIGTERM cuts it.
#[tokio::test]
async fn body_delay_is_finished_by_sigquit_and_cut_by_sigterm() {
    let delay = Duration::from_secs(2);
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();
        for (signo, finished) in [(libc::SIGQUIT, true), (libc::SIGTERM, false)] {
            let mut app = slow("web-b", Duration::ZERO, Duration::ZERO);
            app.app.body_delay = delay;
            let c = rt.start(&app).await.unwrap();
            let mut s = TcpStream::connect(c.addr()).await.unwrap();
            let t0 = Instant::now();
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = timeout(LIMIT, s.read(&mut chunk)).await.unwrap().unwrap();
                assert!(n > 0, "{choice:?}: closed before the head");
                buf.extend_from_slice(&chunk[..n]);
            }
            assert!(
                t0.elapsed() < delay,
                "{choice:?}: the head waited for the body"
            );
            let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            let head_len = head.find("\r\n\r\n").unwrap() + 4;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{choice:?}: no content-length in {head}"));
            c.signal(signo);
            let rest = timeout(LIMIT, s.read_to_end(&mut buf)).await.unwrap();
            let body = buf.len() - head_len;
            if finished {
                rest.unwrap();
                assert_eq!(body, length, "{choice:?}: body cut under SIGQUIT");
                assert!(timeout(LIMIT, c.exited()).await.unwrap().success());
            } else {
                assert!(body < length, "{choice:?}: body sent under SIGTERM");
                assert!(
                    t0.elapsed() < delay,
                    "{choice:?}: cut only after {:?}",
                    t0.elapsed()
                );
                timeout(LIMIT, c.exited()).await.unwrap();
            }
        }
    }
}

/// Not a check: prints how long starting containers takes (`cargo test -p
/// zdt-emulator --test it measure_start_latency -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_start_latency() {
    for choice in engines() {
        let rt = Runtime::new(
            choice,
            EventSink::discard(Clock::start()),
            zdt_emulator::Net::host(),
        )
        .unwrap();
        let mut times = Vec::new();
        let mut keep = Vec::new();
        for i in 0..10 {
            let t = Instant::now();
            keep.push(rt.start(&spec(&format!("m{i}"), "nginx")).await.unwrap());
            times.push(t.elapsed());
        }
        times.sort();
        let t = Instant::now();
        let three = futures::future::join_all((0..3).map(|i| {
            let rt = rt.clone();
            async move { rt.start(&spec(&format!("c{i}"), "nginx")).await.unwrap() }
        }))
        .await;
        let concurrent = t.elapsed();
        let rss: Vec<u64> = keep
            .iter()
            .filter_map(|c| c.pid())
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.starts_with("VmRSS"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    .unwrap_or(0)
            })
            .collect();
        eprintln!(
            "{choice:?}: start p50 {:?} max {:?}; 3 concurrent {:?}; master RSS kB {:?}",
            times[5],
            times[9],
            concurrent,
            rss.first()
        );
        drop(three);
    }
}

/// A `workload.run` host command runs as the pod's container: in the
/// cluster's network on the pod IP (from the container's env, through
/// `$(VAR)` expansion), recorded as runtime `host`, and stopped by the
/// signal the kubelet sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_command_runs_on_its_pod_ip_and_stops_on_the_stop_signal() {
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: no private network here ({why}); the host runtime needs one");
        return;
    }
    let Some(python) = ["/usr/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIPPED: python3 (the stand-in server) is not installed");
        return;
    };
    let net = zdt_core::netns::Net::private(
        &[zdt_core::netns::Block {
            addr: std::net::Ipv4Addr::new(10, 244, 0, 1),
            len: 16,
        }],
        &[],
    )
    .unwrap();
    let run = std::collections::BTreeMap::from([(
        "web".to_owned(),
        zdt_core::emulated::ContainerRun {
            runtime: zdt_core::emulated::RunEngine::Host,
            command: vec![python.into(), "-m".into(), "http.server".into()],
            args: vec!["--bind".into(), "$(POD_IP)".into(), "$(PORT)".into()],
            ..Default::default()
        },
    )]);
    let (events, mut rx) = EventSink::channel(Clock::start());
    let rt = Runtime::with_run(RuntimeChoice::Builtin, run, events, net.clone()).unwrap();
    let spec = ContainerSpec {
        port: 8080,
        env: vec![
            ("POD_IP".into(), "10.244.1.2".into()),
            ("PORT".into(), "8080".into()),
        ],
        ..spec("own-1", "shop/web:1.4")
    };
    let c = rt.start(&spec).await.unwrap();
    assert_eq!(c.engine(), Engine::Host);
    assert!(c.pid().is_some());
    assert_eq!(c.addr(), "10.244.1.2:8080".parse().unwrap());
    let started = rx.recv().await.unwrap();
    let record = zdt_emulator::node::runtime::PodRuntime::from_event(&started).unwrap();
    assert_eq!(
        (
            record.pod.as_str(),
            record.container.as_str(),
            record.runtime.as_str()
        ),
        ("own-1", "web", "host")
    );
    // It answers on the pod IP once it listens (bounded wait).
    let deadline = Instant::now() + LIMIT;
    let code = loop {
        let probe = zdt_core::net::http_status(&net, c.addr(), "/", "test");
        if let Ok(Ok(code)) = timeout(Duration::from_secs(1), probe).await {
            break code;
        }
        assert!(Instant::now() < deadline, "the host command never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 200);
    c.signal(libc::SIGTERM);
    let exit = timeout(LIMIT, c.exited()).await.unwrap();
    assert_eq!(exit.signal, Some(libc::SIGTERM), "{exit:?}");
}

/// The host runtime refuses a missing program and the host's network
/// stack before any pod starts, saying what to do.
#[tokio::test]
async fn host_commands_are_checked_when_the_runtime_starts() {
    let run = |program: &str| {
        std::collections::BTreeMap::from([(
            "web".to_owned(),
            zdt_core::emulated::ContainerRun {
                command: vec![program.into()],
                ..Default::default()
            },
        )])
    };
    let e = Runtime::with_run(
        RuntimeChoice::Builtin,
        run("sh"),
        EventSink::discard(Clock::start()),
        zdt_emulator::Net::host(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("private network"), "{e}");
    if zdt_core::netns::private_unavailable().is_some() {
        eprintln!("SKIPPED the missing-program half: no private network here");
        return;
    }
    let net = zdt_core::netns::Net::private(&[], &[]).unwrap();
    let e = Runtime::with_run(
        RuntimeChoice::Builtin,
        run("zdt-no-such-server"),
        EventSink::discard(Clock::start()),
        net,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("zdt-no-such-server") && text.contains("not found"),
        "{text}"
    );
}
