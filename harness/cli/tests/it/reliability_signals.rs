//! Teardown on every exit path, through the real `zdt` binary on the
//! emulator provider: SIGINT at each phase of a run, and kill -9 followed by
//! `zdt clean`. Each test asserts what a user would check by hand: exit code
//! 3, `summary.json` written and marked incomplete, no process or listening
//! socket of the run left, and no node left cordoned.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

const ZDT: &str = env!("CARGO_BIN_EXE_zdt");

fn nginx_installed() -> bool {
    Path::new("/usr/sbin/nginx").exists()
}

/// A small, fast scenario: 2 workers, 2 replicas, a custom LB profile that
/// probes every 200 ms, 200 req/s for `duration`, one drain at 2 s whose
/// pods sleep `pre_stop` in preStop (a long one keeps the drain running).
fn scenario(dir: &Path, duration: &str, pre_stop: &str) -> PathBuf {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let text = format!(
        r#"apiVersion: zdt/v1alpha1
kind: Scenario
name: reliability
cluster:
  provider: emulator
  kubernetes: "1.31"
  workers: 2
  emulator:
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
    spread: required
    readinessProbe: {{path: /, period: 1s, failureThreshold: 2}}
    preStopSleep: {pre_stop}
    terminationGracePeriod: 60s
traffic:
  rate: 200/s
  duration: {duration}
  timeout: 2s
  keepAlive: false
chaos:
  - name: drain
    at: 2s
    drain:
      node: {{hostingPod: {{app: nginx}}}}
      timeout: 2m
expect:
  successRatio: 0.5
"#,
        manifests = manifests.display()
    );
    let path = dir.join("reliability.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `zdt run`, its output lines streamed to a channel.
struct Run {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    out: PathBuf,
    tmp: PathBuf,
}

fn start_run(dir: &Path, scenario: &Path) -> Run {
    // The run's temp dirs go into a dir of its own: the leftover scan below
    // then cannot confuse this run with another test's.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = dir.join("out");
    let mut child = crate::zdt_child()
        .args(["-v", "run"])
        .arg(scenario)
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", &tmp)
        .env("RUST_LOG", "warn,zdt=info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    Run {
        child,
        lines,
        seen: Vec::new(),
        out,
        tmp,
    }
}

impl Run {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait until an output line contains `needle`.
    fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line with `{needle}` within {within:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for exit (bounded), draining output; returns the exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader threads end with the pipes.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "zdt did not exit within {within:?}; output:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }
}

fn ppid_of(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// Every live descendant of `root` with its start time (to tell a pid
/// reused later from the same process).
fn descendants(root: i32) -> HashMap<i32, u64> {
    let mut parent = HashMap::new();
    let mut start = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
            if let Some((pp, st)) = ppid_of(pid) {
                parent.insert(pid, pp);
                start.insert(pid, st);
            }
        }
    }
    let mut out = HashMap::new();
    for (&pid, _) in parent.iter() {
        let mut p = pid;
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == root => {
                    out.insert(pid, start[&pid]);
                    break;
                }
                Some(&pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    out
}

fn still_alive(procs: &HashMap<i32, u64>) -> Vec<i32> {
    procs
        .iter()
        .filter(|(pid, start)| {
            // A zombie is not a leftover: it holds no socket and no memory.
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state
                .rfind(')')
                .is_some_and(|i| state[i + 2..].starts_with('Z'));
            ppid_of(**pid).is_some_and(|(_, s)| s == **start) && !zombie
        })
        .map(|(pid, _)| *pid)
        .collect()
}

/// nginx processes whose command line points into `tmp` (the run's temp dirs).
fn nginx_in(tmp: &Path) -> Vec<i32> {
    let needle = tmp.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("nginx") && cmd.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// Inodes of LISTEN TCP sockets (v4 and v6).
fn listening_inodes() -> HashSet<u64> {
    listening_inodes_seen_by(&[])
}

/// Listening sockets of this process's network namespace and of the ones
/// `pids` are in (an emulated cluster's data path has its own).
fn listening_inodes_seen_by(pids: &[i32]) -> HashSet<u64> {
    let mut out = HashSet::new();
    let mut files = vec!["/proc/net/tcp".to_owned(), "/proc/net/tcp6".to_owned()];
    files.extend(pids.iter().map(|p| format!("/proc/{p}/net/tcp")));
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st is column 3; 0A = LISTEN; inode is column 9.
            if cols.get(3) == Some(&"0A") {
                if let Some(ino) = cols.get(9).and_then(|i| i.parse().ok()) {
                    out.insert(ino);
                }
            }
        }
    }
    out
}

/// Socket inodes held open by these processes.
fn socket_inodes(pids: impl IntoIterator<Item = i32>) -> HashSet<u64> {
    let mut out = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    if let Ok(ino) = ino.parse() {
                        out.insert(ino);
                    }
                }
            }
        }
    }
    out
}

/// What the run holds right before it is signalled.
struct Held {
    procs: HashMap<i32, u64>,
    listening: HashSet<u64>,
}

fn held(run: &Run) -> Held {
    let procs = descendants(run.pid());
    let mut pids: Vec<i32> = procs.keys().copied().collect();
    pids.push(run.pid());
    let listening: HashSet<u64> = socket_inodes(pids.clone())
        .intersection(&listening_inodes_seen_by(&pids))
        .copied()
        .collect();
    Held { procs, listening }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} must exist: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn events(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The emulator's final node states from the `ClusterDeleted` event.
fn final_nodes(events: &[Value]) -> Vec<Value> {
    let e = events
        .iter()
        .find(|e| e["reason"] == "ClusterDeleted")
        .expect("a ClusterDeleted event with the final state");
    let msg = e["message"].as_str().unwrap();
    let json = msg.strip_prefix("final state: ").unwrap_or(msg);
    let state: Value = serde_json::from_str(json).unwrap();
    state["nodes"].as_array().unwrap().clone()
}

/// No process the run had, no nginx under its temp dir, no socket it
/// listened on.
fn assert_nothing_left(before: &Held, tmp: &Path, output: &str) {
    let left = still_alive(&before.procs);
    assert!(left.is_empty(), "child processes left: {left:?}\n{output}");
    let nginx = nginx_in(tmp);
    assert!(nginx.is_empty(), "nginx processes left: {nginx:?}");
    let still: Vec<_> = before
        .listening
        .intersection(&listening_inodes())
        .copied()
        .collect();
    assert!(still.is_empty(), "listening sockets left: {still:?}");
}

/// Everything an interrupted run must leave true.
fn assert_clean_interrupt(run: &mut Run, before: Held, code: Option<i32>) {
    let output = run.seen.join("\n");
    assert_eq!(
        code,
        Some(3),
        "exit code of an interrupted run; output:\n{output}"
    );
    let summary = read_json(&run.out.join("summary.json"));
    assert_eq!(summary["complete"], false, "{summary}");
    let variants = summary["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 1, "{summary}");
    assert_eq!(variants[0]["verdict"], "INCOMPLETE", "{summary}");

    assert_nothing_left(&before, &run.tmp, &output);

    // A signal that lands while the emulator is still starting drops the
    // half-made cluster (checked above: nothing left); only a cluster that
    // was up has a final state, and no node of it may stay cordoned.
    let evs = events(&run.out);
    let reasons = variants[0]["reasons"].to_string();
    if reasons.contains("interrupted during cluster start") {
        return;
    }
    for node in final_nodes(&evs) {
        assert_eq!(node["unschedulable"], false, "node left cordoned: {node}");
    }
}

/// Interrupt at the first output line containing `needle`. `holds`: the
/// run must by then own pods and listening sockets (so the checks that they
/// are gone afterwards are not vacuous).
fn interrupt_at(needle: &str, pre_stop: &str, holds: bool) -> (Run, tempfile::TempDir) {
    interrupt_with(libc::SIGINT, needle, pre_stop, holds)
}

fn interrupt_with(
    signal: i32,
    needle: &str,
    pre_stop: &str,
    holds: bool,
) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "20s", pre_stop);
    let mut run = start_run(dir.path(), &file);
    run.wait_for(needle, Duration::from_secs(90));
    let before = held(&run);
    if holds {
        assert!(!before.listening.is_empty(), "no listening socket held");
        assert!(!before.procs.is_empty(), "no child process held");
    }
    run.signal(signal);
    let code = run.wait_exit(Duration::from_secs(60));
    assert_clean_interrupt(&mut run, before, code);
    (run, dir)
}

#[test]
fn sigint_during_cluster_start() {
    if !nginx_installed() {
        return;
    }
    interrupt_at("run phase: cluster start", "1s", false);
}

#[test]
fn sigint_while_waiting_for_the_workload() {
    if !nginx_installed() {
        return;
    }
    let (run, _dir) = interrupt_at("run phase: waiting for the workload", "1s", false);
    let summary = read_json(&run.out.join("summary.json"));
    assert!(
        summary["variants"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{summary}"
    );
}

#[test]
fn sigint_during_traffic_before_chaos() {
    if !nginx_installed() {
        return;
    }
    // The phase line comes before the traffic task has sent much; what it
    // held (LB frontend, pod sockets) must all be gone afterwards.
    let (run, _dir) = interrupt_at("run phase: traffic", "1s", true);
    let summary = read_json(&run.out.join("summary.json"));
    assert_eq!(summary["variants"][0]["verdict"], "INCOMPLETE");
}

#[test]
fn sigterm_during_traffic_is_an_interrupt_too() {
    if !nginx_installed() {
        return;
    }
    let (run, _dir) = interrupt_with(libc::SIGTERM, "run phase: traffic", "1s", true);
    assert!(
        run.seen.iter().any(|l| l.contains("zdt: interrupted")),
        "{:?}",
        run.seen
    );
}

#[test]
fn a_second_sigint_forces_exit_without_leaving_processes() {
    if !nginx_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "20s", "1s");
    let mut run = start_run(dir.path(), &file);
    run.wait_for("run phase: traffic", Duration::from_secs(90));
    let before = held(&run);
    assert!(!before.procs.is_empty() && !before.listening.is_empty());
    run.signal(libc::SIGINT);
    run.wait_for("zdt: interrupted", Duration::from_secs(10));
    run.signal(libc::SIGINT);
    // Either the graceful teardown wins the race (3) or the forced exit
    // fires 2 s after the second signal (130); it must not hang.
    let code = run.wait_exit(Duration::from_secs(10));
    assert!(
        matches!(code, Some(3) | Some(130)),
        "exit code {code:?}; output:\n{}",
        run.seen.join("\n")
    );
    // Pods die with zdt (PR_SET_PDEATHSIG) even on the forced path.
    assert_nothing_left(&before, &run.tmp, &run.seen.join("\n"));
}

#[test]
fn a_panic_inside_a_variant_tears_down_and_reports_it() {
    if !nginx_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "5s", "1s");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = dir.path().join("out");
    let mut child = crate::zdt_child()
        .args(["-v", "run"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", &tmp)
        .env("ZDT_FAILPOINT", "load balancer")
        .env("RUST_LOG", "warn,zdt=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The pods are up by the time the LB phase starts: sample what the run
    // holds while it is still alive.
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen_procs = HashMap::new();
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        seen_procs.extend(descendants(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "a panicked variant is INVALID: exit 3"
    );
    assert!(
        !seen_procs.is_empty(),
        "the run never started a pod, so the cleanliness checks are vacuous"
    );
    let summary = read_json(&out.join("summary.json"));
    let v = &summary["variants"][0];
    assert_eq!(v["verdict"], "INVALID", "{summary}");
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("zdt failed inside this variant") && reasons.contains("failpoint"),
        "{reasons}"
    );
    assert!(
        out.join("report.html").exists(),
        "the report is still written"
    );
    let left = still_alive(&seen_procs);
    assert!(
        left.is_empty(),
        "child processes left after a panic: {left:?}"
    );
    assert!(
        nginx_in(&tmp).is_empty(),
        "nginx processes left after a panic"
    );
}

#[test]
fn sigint_during_a_drain_uncordons_the_node() {
    if !nginx_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // preStop 30 s: the drain's eviction waits for the pod far longer than
    // the test takes to interrupt it.
    let file = scenario(dir.path(), "20s", "30s");
    let mut run = start_run(dir.path(), &file);
    run.wait_for("run phase: chaos step `drain`", Duration::from_secs(90));
    // The step starts with the cordon; give it a moment to land (this
    // creates the situation, the assertions below do not depend on timing:
    // the event log must show the cordon).
    std::thread::sleep(Duration::from_millis(1500));
    let before = held(&run);
    assert!(!before.listening.is_empty() && !before.procs.is_empty());
    run.signal(libc::SIGINT);
    let code = run.wait_exit(Duration::from_secs(60));
    let evs = events(&run.out);
    let cordoned = evs.iter().any(|e| {
        let r = e["reason"].as_str().unwrap_or_default().to_lowercase();
        e["source"] == "chaos" && r.contains("cordon") && !r.contains("uncordon")
    });
    assert!(
        cordoned,
        "the drain must have cordoned a node before the interrupt: {evs:#?}"
    );
    assert_clean_interrupt(&mut run, before, code);
}

/// However zdt ends, its cluster's processes end with it: nginx masters
/// die with their parent, their workers with the cluster's PID namespace
/// (its init ends with the network helper), the helpers with zdt.
#[test]
fn kill_9_leaves_no_process_or_listener_of_the_run() {
    if !nginx_installed() {
        return;
    }
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!(
            "SKIPPED: without a network of its own ({why}) nginx workers outlive a kill -9 until `zdt clean`"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "20s", "1s");
    let mut run = start_run(dir.path(), &file);
    run.wait_for("run phase: traffic", Duration::from_secs(90));
    let before = held(&run);
    assert!(!before.listening.is_empty() && !before.procs.is_empty());
    let workers = nginx_in(&run.tmp);
    assert!(workers.len() >= 2, "nginx masters and workers: {workers:?}");
    run.signal(libc::SIGKILL);
    let _ = run.wait_exit(Duration::from_secs(10));
    // The kernel needs a moment to deliver the deaths; 2 s at most.
    let deadline = Instant::now() + Duration::from_secs(2);
    while (!nginx_in(&run.tmp).is_empty() || !still_alive(&before.procs).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_nothing_left(&before, &run.tmp, "after kill -9, without zdt clean");
    let anyone: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    let open = socket_inodes(anyone);
    let kept: Vec<_> = before.listening.intersection(&open).collect();
    assert!(
        kept.is_empty(),
        "listening sockets still open somewhere: {kept:?}"
    );
}

/// `zdt clean` (not a dry run) with `tmp` as TMPDIR and neither kind nor
/// Docker reachable.
fn clean_confined_to(tmp: &Path) -> std::process::Output {
    Command::new(ZDT)
        .arg("clean")
        .env("TMPDIR", tmp)
        .env("ZDT_KIND", "/nonexistent/kind")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap()
}

#[test]
fn kill_9_then_zdt_clean_leaves_nothing() {
    if !nginx_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "20s", "1s");
    let mut run = start_run(dir.path(), &file);
    run.wait_for("run phase: traffic", Duration::from_secs(90));
    let before = held(&run);
    assert!(!before.listening.is_empty() && !before.procs.is_empty());
    assert!(
        !nginx_in(&run.tmp).is_empty(),
        "the run's pods must be nginx processes under its temp dir"
    );
    run.signal(libc::SIGKILL);
    let _ = run.wait_exit(Duration::from_secs(10));
    let pid = run.pid();
    let stale = |tmp: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("zdt-{pid}-"))
            })
            .collect()
    };
    assert!(
        !stale(&run.tmp).is_empty(),
        "a killed run leaves its temp dirs for `zdt clean` to find"
    );

    // `zdt run` warns about them.
    let warn = Command::new(ZDT)
        .args(["run", "/nonexistent/scenario.yaml"])
        .env("TMPDIR", &run.tmp)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&warn.stderr);
    assert!(
        stderr.contains("zdt clean"),
        "`zdt run` must warn about leftovers: {stderr}"
    );

    // `zdt clean` confined to this run: its own TMPDIR, and no kind or
    // Docker reachable — the machine is shared and other runs' clusters and
    // containers are not this test's to remove.
    let clean = clean_confined_to(&run.tmp);
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert!(
        clean.status.success(),
        "zdt clean: {stdout}{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    // Orphaned nginx masters die with their parent (PR_SET_PDEATHSIG) or at
    // `zdt clean`; give the kernel a bounded moment to reap.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (!nginx_in(&run.tmp).is_empty() || !still_alive(&before.procs).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_nothing_left(&before, &run.tmp, &format!("after zdt clean: {stdout}"));
    assert!(stale(&run.tmp).is_empty(), "temp dirs left: {stdout}");

    // Docker, read-only: no container or network of this run. (zdt labels
    // what it creates on kind; the emulator creates none.)
    let dry = Command::new(ZDT)
        .args(["clean", "--dry-run"])
        .env("TMPDIR", &run.tmp)
        .env("ZDT_KIND", "/nonexistent/kind")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&dry.stdout);
    assert!(
        !listed.contains(&format!("run {pid}")) && !listed.contains("temp dir"),
        "{listed}"
    );
}

/// Issue #17 item 2: `zdt clean` (not a dry run) while a run is in its
/// traffic phase lists the run's temp dirs as in use and keeps them; the
/// run completes with its verdict. kind and Docker are out of reach so the
/// shared machine's other clusters and containers are not this test's.
#[test]
fn zdt_clean_during_a_run_keeps_what_the_run_uses() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "6s", "1s");
    let mut run = start_run(dir.path(), &file);
    run.wait_for("run phase: traffic", Duration::from_secs(90));
    let pid = run.pid();
    let clean = clean_confined_to(&run.tmp);
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "zdt clean: {stdout}{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let kept: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("keeping temp dir"))
        .collect();
    assert!(!kept.is_empty(), "the run's temp dirs are listed: {stdout}");
    assert!(
        kept.iter()
            .all(|l| l.contains(&format!("(in use by pid {pid} on "))),
        "{stdout}"
    );
    assert!(!stdout.contains("removing"), "{stdout}");
    let code = run.wait_exit(Duration::from_secs(90));
    let summary = read_json(&run.out.join("summary.json"));
    assert_eq!(code, Some(0), "{}", run.seen.join("\n"));
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["variants"][0]["verdict"], "PASS", "{summary:#}");
}
