//! The generator in a child process (`zdt traffic-child`), through the real
//! zdt binary: the same counts as in-process, cancellation with a partial
//! summary, a clear error when the child is killed or is not zdt, and no
//! child left behind when its parent dies.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use zdt_core::clock::Clock;
use zdt_emulator::node::serve::{ServeConfig, Server};
use zdt_traffic::{Attack, ErrorKind, Settings, Summary, TrafficError};

const ZDT: &str = env!("CARGO_BIN_EXE_zdt");
/// Set in the copy of this test binary that plays a parent about to die.
const HELPER_ENV: &str = "ZDT_TEST_DYING_PARENT";

/// One attack at a time in this file (the machine is small).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn settings(addr: SocketAddr, rate: &str, duration_ms: u64) -> Settings {
    Settings::new(
        &format!("http://{addr}/"),
        rate.parse().unwrap(),
        Duration::from_millis(duration_ms),
    )
    .unwrap()
}

/// Accepts connections and never answers.
async fn silent_server() -> (SocketAddr, AbortOnDropHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            held.spawn(async move {
                let mut sink = [0u8; 512];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, AbortOnDropHandle::new(task))
}

/// The generator processes whose parent is `parent`.
fn generator_children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && cmdline.split(|&b| b == 0).any(|a| a == b"traffic-child") {
            out.push(pid);
        }
    }
    out
}

/// Gone, or a zombie nobody has reaped yet: either way not running.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn counts(s: &Summary) -> impl PartialEq + std::fmt::Debug {
    (
        (s.requests, s.sent, s.successes, s.not_sent, s.cancelled),
        (s.status_codes.clone(), s.errors.clone()),
        (s.by_node.clone(), s.by_pod.clone()),
        s.buckets
            .iter()
            .map(|b| (b.start, b.requests, b.successes, b.by_node.clone()))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_counts_what_the_in_process_generator_counts() {
    let _serial = SERIAL.lock().await;
    let server = Server::start(ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "web-0",
        "worker1",
    ))
    .await
    .unwrap();
    let st = || {
        let mut s = settings(server.addr(), "400/s", 1500);
        s.load.bucket = Duration::from_millis(500).into();
        s
    };
    let clock = Clock::start();
    let local = zdt_traffic::attack(st(), clock, CancellationToken::new())
        .await
        .unwrap();

    let before = clock.now();
    let attack = Attack::start_in_child(Path::new(ZDT), st(), clock, CancellationToken::new())
        .await
        .unwrap();
    let after = clock.now();
    let progress = attack.progress();
    assert_eq!(progress.total(), 600);
    let child = attack.finish().await.unwrap();

    assert_eq!(counts(&child), counts(&local));
    assert_eq!(child.requests, 600);
    assert_eq!(child.successes, 600, "{:?}", child.errors);
    assert_eq!(child.by_pod["web-0"], 600);
    assert_eq!(child.buckets.len(), 3);
    assert_eq!(child.rate, local.rate);
    // t0 is stamped on this process's clock, though taken in the child.
    assert!(
        child.started_at >= before && child.started_at <= after,
        "started_at {:?} outside [{before:?}, {after:?}]",
        child.started_at
    );
    assert!(child.started_at > local.started_at + local.duration);
    let snap = progress.snapshot();
    assert_eq!((snap.done, snap.successes), (600, 600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_gives_a_partial_summary() {
    let _serial = SERIAL.lock().await;
    let (addr, _server) = silent_server().await;
    let cancel = CancellationToken::new();
    // A short timeout, so requests complete (as timeouts) and the child's
    // progress reports have something to show before the cancel.
    let mut st = settings(addr, "500/s", 5000);
    st.load.timeout = Duration::from_millis(200).into();
    let attack = Attack::start_in_child(Path::new(ZDT), st, Clock::start(), cancel.clone())
        .await
        .unwrap();
    let progress = attack.progress();
    let waited = Instant::now();
    while progress.snapshot().done == 0 && waited.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(progress.snapshot().done > 0, "no progress report in 4 s");
    let stopped = Instant::now();
    cancel.cancel();
    let s = tokio::time::timeout(Duration::from_secs(5), attack.finish())
        .await
        .expect("cancel ends the child's attack promptly")
        .unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
    assert!(s.cancelled);
    assert!(s.requests > 0 && s.requests < 2500, "{}", s.requests);
    // Nothing was answered: every request sent timed out or was cut by
    // the cancel while in flight.
    let kind = |k| s.errors.get(&k).copied().unwrap_or(0);
    assert!(kind(ErrorKind::Cancelled) > 0, "{:?}", s.errors);
    assert_eq!(
        kind(ErrorKind::Cancelled) + kind(ErrorKind::ResponseTimeout),
        s.sent,
        "{:?}",
        s.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_is_a_clear_error() {
    let _serial = SERIAL.lock().await;
    let (addr, _server) = silent_server().await;
    let attack = Attack::start_in_child(
        Path::new(ZDT),
        settings(addr, "100/s", 10_000),
        Clock::start(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let children = generator_children(std::process::id());
    assert_eq!(children.len(), 1, "{children:?}");
    // SAFETY: kill(2) on a pid this test's attack just spawned.
    unsafe { libc::kill(children[0] as i32, libc::SIGKILL) };
    let err = tokio::time::timeout(Duration::from_secs(5), attack.finish())
        .await
        .expect("a dead child ends the attack")
        .unwrap_err();
    assert!(matches!(err, TrafficError::Child(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("killed by signal 9") && text.contains("before its summary"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_is_not_zdt_is_a_clear_error() {
    let _serial = SERIAL.lock().await;
    let (addr, _server) = silent_server().await;
    let start = |exe: &'static str| {
        Attack::start_in_child(
            Path::new(exe),
            settings(addr, "100/s", 1000),
            Clock::start(),
            CancellationToken::new(),
        )
    };
    let err = start("/bin/true")
        .await
        .err()
        .expect("true is no generator");
    assert!(
        err.to_string()
            .contains("exited with status 0 before it started"),
        "{err}"
    );
    let err = start("/nonexistent/zdt").await.err().expect("no such file");
    assert!(
        err.to_string()
            .contains("cannot start `/nonexistent/zdt traffic-child`")
            && err.to_string().contains("ZDT_TRAFFIC_EXE"),
        "{err}"
    );
    // `yes traffic-child` answers lines that are not reports.
    let err = start("/usr/bin/yes")
        .await
        .err()
        .expect("yes is no generator");
    assert!(err.to_string().contains("is not a report"), "{err}");
    // Bad settings fail before any process starts, with the in-process error.
    let mut bad = settings(addr, "100/s", 1000);
    bad.load.bucket = Duration::from_millis(10).into();
    let err = Attack::start_in_child(
        Path::new(ZDT),
        bad,
        Clock::start(),
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("bucket too small");
    assert!(matches!(err, TrafficError::Settings(_)), "{err:?}");
}

#[test]
fn the_child_dies_with_its_parent() {
    // The parent is a copy of this test binary running `dying_parent`; it
    // starts a generator child, prints its pid, and is then SIGKILLed, so
    // nothing of its own can clean up.
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "traffic_child::dying_parent",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(parent.stdout.take().unwrap());
    let pid = stdout
        .lines()
        .map_while(Result::ok)
        // (libtest prints `test dying_parent ... ` before it, on the same line)
        .find_map(|l| {
            l.split_once("GENERATOR ")
                .map(|(_, p)| p.trim().parse::<u32>().unwrap())
        })
        .expect("the helper reports its generator's pid");
    assert!(!is_dead(pid), "the generator runs while its parent does");
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_dead(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_dead(pid), "generator {pid} outlived its parent");
}

/// Only does something in the copy started by `the_child_dies_with_its_parent`.
#[tokio::test]
async fn dying_parent() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let (addr, _server) = silent_server().await;
    let attack = Attack::start_in_child(
        Path::new(ZDT),
        settings(addr, "50/s", 30_000),
        Clock::start(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let children = generator_children(std::process::id());
    println!("GENERATOR {}", children[0]);
    // Stay alive until killed (bounded: the test kills within seconds).
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(attack);
}
