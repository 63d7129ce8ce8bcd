//! The generator in a child process: the zdt binary re-executes itself with
//! a hidden subcommand and runs the attack there.
//!
//! Why: without keep-alive, every connection a node silently drops is held
//! for the whole client timeout, on the client side and on the in-process
//! LB's side. At 5000/s with a 10 s timeout that is ~17,000 sockets on each
//! side; in one process that is twice the fds, past the 20,000 hard limit
//! some machines impose. In a child, the generator's sockets live in their
//! own fd table, and the generator is scheduled apart from the emulator, so
//! the emulator's work cannot delay its timers.
//!
//! Protocol (one JSON object per line):
//! - parent → child stdin: one [`Request`] line, then nothing; closing
//!   stdin (or SIGTERM/SIGINT) cancels the attack, which still reports the
//!   partial summary.
//! - child → parent stdout: `started` (t0 on the parent's clock and the
//!   request count), `progress` snapshots every [`PROGRESS_TICK`], and last
//!   `summary` (or `error`).
//!
//! The parent's clock origin crosses the process boundary as a
//! CLOCK_MONOTONIC reading, the clock `Instant` is on Linux and which every
//! process shares, so the child's offsets line up with the parent's events.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use super::lock::lock;
use super::{Attack, Progress, ProgressSource, Settings, Snapshot, Summary, TrafficError};
use zdt_core::clock::Clock;
use zdt_core::events::duration_ns;
use zdt_core::units::Rate;

/// The hidden subcommand the child runs (`zdt traffic-child`).
pub const SUBCOMMAND: &str = "traffic-child";
/// How often the child reports progress.
pub const PROGRESS_TICK: Duration = Duration::from_millis(200);
/// How long a child may take to say it started (resolve, open raw output).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cancelled child may take to report its partial summary: a
/// cancel aborts in-flight requests at once, so this is generous.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of the child's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

/// Parent → child: the settings, exactly (their serde form is exact).
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// The parent's clock origin on CLOCK_MONOTONIC, in ns.
    origin_monotonic_ns: u64,
    settings: Settings,
    /// The source addresses of the network the child joined before it
    /// started (an emulated cluster's); empty on the host's stack.
    #[serde(default)]
    sources: Vec<std::net::Ipv4Addr>,
    /// Whether that network binds its sockets to loopback
    /// ([`zdt_core::netns::Net::binds_loopback`]).
    #[serde(default)]
    loopback: bool,
}

/// Why the child has no request to run; the parent shows the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("the request line is not a traffic request ({0}); `zdt {SUBCOMMAND}` is run by zdt itself", SUBCOMMAND = SUBCOMMAND)]
    Decode(#[source] serde_json::Error),
    #[error("no request on stdin; `zdt {SUBCOMMAND}` is run by zdt itself", SUBCOMMAND = SUBCOMMAND)]
    Missing,
    #[error("reading stdin: {0}")]
    Read(#[source] std::io::Error),
    #[error("the stdin thread died")]
    StdinThread,
    #[error("the parent's clock origin is in this process's future: CLOCK_MONOTONIC differs")]
    ClockOrigin,
}

impl Request {
    fn new(settings: &Settings, clock: Clock) -> Self {
        Self {
            origin_monotonic_ns: origin_monotonic_ns(clock),
            settings: settings.clone(),
            sources: if settings.net.is_private() {
                settings.net.sources().to_vec()
            } else {
                Vec::new()
            },
            loopback: settings.net.binds_loopback(),
        }
    }

    fn settings(self) -> Result<(Settings, Clock), RequestError> {
        let clock =
            clock_from_monotonic_ns(self.origin_monotonic_ns).ok_or(RequestError::ClockOrigin)?;
        let mut settings = self.settings;
        if !self.sources.is_empty() {
            settings.net = zdt_core::netns::Net::joined(&self.sources, self.loopback);
        }
        Ok((settings, clock))
    }
}

/// Child → parent, one per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    Started {
        /// t0 on the parent's clock.
        #[serde(with = "duration_ns")]
        started_at: Duration,
        total: u64,
    },
    Progress(Snapshot),
    Summary {
        summary: Box<Summary>,
        /// The float fields exactly (JSON may lose their last bit).
        achieved_rate_bits: u64,
        throughput_bits: u64,
    },
    Error {
        message: String,
    },
}

fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local timespec it is given;
    // CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `clock`'s origin as a CLOCK_MONOTONIC reading (std's `Instant` is that
/// clock on Linux, but does not expose its value).
fn origin_monotonic_ns(clock: Clock) -> u64 {
    let (now, mono) = (Instant::now(), monotonic_now());
    let origin = mono.saturating_sub(now.saturating_duration_since(clock.origin()));
    u64::try_from(origin.as_nanos()).unwrap_or(u64::MAX)
}

/// The clock whose origin is the CLOCK_MONOTONIC reading `origin_ns`.
fn clock_from_monotonic_ns(origin_ns: u64) -> Option<Clock> {
    let (now, mono) = (Instant::now(), monotonic_now());
    let since = mono.checked_sub(Duration::from_nanos(origin_ns))?;
    now.checked_sub(since).map(Clock::with_origin)
}

fn protocol(what: impl std::fmt::Display) -> TrafficError {
    TrafficError::Child(format!("it broke the protocol: {what}"))
}

/// Start the generator in `exe` and wait until it says it started.
pub(crate) async fn start(
    exe: &Path,
    settings: Settings,
    clock: Clock,
    cancel: CancellationToken,
) -> Result<Attack, TrafficError> {
    // The same checks, and the same typed errors, as in-process.
    settings.validate()?;
    let request = serde_json::to_string(&Request::new(&settings, clock))
        .map_err(|e| TrafficError::Internal(format!("settings to JSON: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a terminal's Ctrl-C reaches only the
        // parent, which then cancels the child and still gets its summary.
        .process_group(0);
    // Spawned from a runtime worker thread, which lives as long as the
    // runtime that owns this attack.
    zdt_core::process::die_with_parent(cmd.as_std_mut());
    settings.net.join_before_exec(cmd.as_std_mut(), false);
    let mut child = cmd.spawn().map_err(|e| {
        TrafficError::Child(format!(
            "cannot start `{} {SUBCOMMAND}`: {e}; {} names the zdt binary to use",
            exe.display(),
            zdt_core::process::EXE_ENV
        ))
    })?;
    let stderr = StderrTail::spawn(&mut child);
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(TrafficError::Internal(
            "child pipes were not created".into(),
        ));
    };
    let mut lines = BufReader::new(stdout).lines();
    // A child that died at once fails the write; its exit says why below.
    let _ = stdin.write_all(format!("{request}\n").as_bytes()).await;
    let _ = stdin.flush().await;

    let first = tokio::select! {
        r = tokio::time::timeout(START_TIMEOUT, lines.next_line()) => r,
        _ = cancel.cancelled() => {
            return Err(TrafficError::Child("cancelled before the generator started".into()));
        }
    };
    let (started_at, total) = match first {
        Ok(Ok(Some(line))) => match serde_json::from_str::<Report>(&line) {
            Ok(Report::Started { started_at, total }) => (started_at, total),
            Ok(Report::Error { message }) => {
                let _ = child.wait().await;
                return Err(TrafficError::Child(message));
            }
            Ok(other) => return Err(protocol(format!("{other:?} before `started`"))),
            Err(e) => {
                return Err(protocol(format!(
                    "`{}` is not a report ({e}); is `{}` a zdt binary?",
                    excerpt(&line),
                    exe.display()
                )))
            }
        },
        Ok(Ok(None)) | Ok(Err(_)) => {
            let status = child.wait().await;
            return Err(exited(status, "before it started", &stderr).await);
        }
        Err(_) => {
            return Err(TrafficError::Child(format!(
                "it did not start within {START_TIMEOUT:?}; it was killed"
            )))
        }
    };

    let latest = Arc::new(Mutex::new(Snapshot::default()));
    let progress = Progress {
        source: ProgressSource::Child(latest.clone()),
        count: total,
        t0: clock.instant(started_at),
    };
    let abort = cancel.child_token();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(supervise(
        Supervised {
            child,
            stdin: Some(stdin),
            lines,
            stderr,
            latest,
            rate: settings.load.rate,
        },
        abort.clone(),
        tx,
    ));
    Ok(Attack::from_parts(progress, rx, abort))
}

struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: StderrTail,
    latest: Arc<Mutex<Snapshot>>,
    rate: Rate,
}

/// Relay the child's reports until it exits, ask it to stop on cancel, and
/// hand the summary (or why there is none) to [`Attack::finish`].
async fn supervise(
    mut c: Supervised,
    stop: CancellationToken,
    done: tokio::sync::oneshot::Sender<Result<Summary, TrafficError>>,
) {
    let mut outcome: Option<Result<Summary, TrafficError>> = None;
    let mut deadline: Option<TokioInstant> = None;
    loop {
        let kill_at = deadline.unwrap_or_else(TokioInstant::now);
        tokio::select! {
            line = c.lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<Report>(&line) {
                    Ok(Report::Progress(s)) => *lock(&c.latest) = s,
                    Ok(Report::Summary { summary, achieved_rate_bits, throughput_bits }) => {
                        let mut s = *summary;
                        // Exactly what the child computed.
                        s.rate = c.rate;
                        s.achieved_rate = f64::from_bits(achieved_rate_bits);
                        s.throughput = f64::from_bits(throughput_bits);
                        *lock(&c.latest) = Snapshot {
                            done: s.requests,
                            successes: s.successes,
                            p99: s.latency.p99,
                            max_lag: s.schedule_lag.max,
                        };
                        outcome = Some(Ok(s));
                    }
                    Ok(Report::Error { message }) => outcome = Some(Err(TrafficError::Child(message))),
                    Ok(Report::Started { .. }) => outcome = Some(Err(protocol("a second `started`"))),
                    Err(e) => {
                        outcome = Some(Err(protocol(format!("`{}` is not a report ({e})", excerpt(&line)))));
                        let _ = c.child.start_kill();
                        break;
                    }
                },
                // stdout closed: the child is exiting.
                Ok(None) => break,
                Err(e) => {
                    outcome.get_or_insert(Err(protocol(format!("reading its output: {e}"))));
                    let _ = c.child.start_kill();
                    break;
                }
            },
            _ = stop.cancelled(), if c.stdin.is_some() => {
                // EOF on its stdin is the child's cancel: it aborts what is
                // in flight and still reports the partial summary.
                c.stdin = None;
                deadline = Some(TokioInstant::now() + STOP_GRACE);
            }
            _ = tokio::time::sleep_until(kill_at), if deadline.is_some() => {
                let _ = c.child.start_kill();
                outcome.get_or_insert(Err(TrafficError::Child(format!(
                    "it did not stop within {STOP_GRACE:?} of the cancel; it was killed"
                ))));
                break;
            }
        }
    }
    // Its stdout is closed, so it is exiting; a child that closed stdout
    // and lingers is killed rather than waited for.
    let status = match tokio::time::timeout(STOP_GRACE, c.child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            let _ = c.child.start_kill();
            c.child.wait().await
        }
    };
    let result = match outcome {
        Some(Ok(summary)) => {
            if !matches!(&status, Ok(s) if s.success()) {
                tracing::warn!(
                    "the traffic generator process reported its summary, then {status:?}"
                );
            }
            Ok(summary)
        }
        Some(Err(e)) => Err(e),
        None => Err(exited(status, "before its summary", &c.stderr).await),
    };
    let _ = done.send(result);
}

/// The error for a child that exited without the report it owed.
async fn exited(
    status: std::io::Result<ExitStatus>,
    when: &str,
    stderr: &StderrTail,
) -> TrafficError {
    use std::os::unix::process::ExitStatusExt;
    let how = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("could not be waited for ({e})"),
    };
    let tail = stderr.finish().await;
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{tail}")
    };
    TrafficError::Child(format!("it {how} {when}{tail}"))
}

fn excerpt(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// The child's stderr: relayed to this process's log, and the last lines
/// kept for error messages.
struct StderrTail {
    tail: Arc<Mutex<VecDeque<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StderrTail {
    fn spawn(child: &mut Child) -> Self {
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let task = child.stderr.take().map(|stderr| {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(target: "zdt::traffic::child", "{line}");
                    let mut t = lock(&tail);
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
        });
        Self { tail, task }
    }

    /// The kept lines, once the child's stderr has closed (bounded wait:
    /// a grandchild could hold it open).
    async fn finish(&self) -> String {
        if let Some(task) = &self.task {
            let deadline = TokioInstant::now() + Duration::from_secs(2);
            while !task.is_finished() && TokioInstant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        lock(&self.tail)
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for StderrTail {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// How the child's run ended: it reported a summary, or an error (a bad
/// request, or an attack that could not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Summary,
    Error,
}

/// What stops the child from talking to its parent at all.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot start the stdin thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot encode a report: {0}")]
    Encode(serde_json::Error),
    #[error("cannot write to the parent: {0}")]
    Write(std::io::Error),
}

/// Cancel `cancel` on SIGTERM or SIGINT: how a generator process run by
/// zdt (a child, a pod) is told to stop and still report what it has.
pub fn cancel_on_stop_signals(cancel: &CancellationToken) -> std::io::Result<()> {
    for kind in [
        tokio::signal::unix::SignalKind::terminate(),
        tokio::signal::unix::SignalKind::interrupt(),
    ] {
        let mut signal = tokio::signal::unix::signal(kind)?;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if signal.recv().await.is_some() {
                cancel.cancel();
            }
        });
    }
    Ok(())
}

/// `zdt traffic-child`: the child's side. Reads the request from stdin,
/// runs the attack, reports on stdout.
pub async fn run_child() -> Result<ChildEnd, ChildError> {
    let mut out = tokio::io::stdout();
    let cancel = CancellationToken::new();
    // stdin on a plain thread: tokio's stdin would be a blocking task the
    // runtime waits for at shutdown, and the parent keeps stdin open.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    {
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name("zdt-child-stdin".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut line = String::new();
                let first = stdin.read_line(&mut line).map(|_| line);
                let _ = first_tx.send(first);
                // Then wait for EOF: the parent cancelled, or died.
                let _ = std::io::copy(&mut stdin, &mut std::io::sink());
                cancel.cancel();
            })
            .map_err(ChildError::Thread)?;
    }
    cancel_on_stop_signals(&cancel).map_err(ChildError::Signal)?;

    let request = match first_rx.await {
        Ok(Ok(line)) if !line.trim().is_empty() => {
            serde_json::from_str::<Request>(&line).map_err(RequestError::Decode)
        }
        Ok(Ok(_)) => Err(RequestError::Missing),
        Ok(Err(e)) => Err(RequestError::Read(e)),
        Err(_) => Err(RequestError::StdinThread),
    };
    // Either error goes to the parent as its message.
    let started = match request.and_then(Request::settings) {
        Ok((settings, clock)) => Attack::start(settings, clock, cancel.clone())
            .await
            .map(|a| (a, clock))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (attack, clock) = match started {
        Ok(a) => a,
        Err(message) => {
            send(&mut out, &Report::Error { message }).await?;
            return Ok(ChildEnd::Error);
        }
    };
    let progress = attack.progress();
    send(
        &mut out,
        &Report::Started {
            started_at: clock.offset(progress.t0()),
            total: progress.total(),
        },
    )
    .await?;
    let finish = attack.finish();
    tokio::pin!(finish);
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            r = &mut finish => break r,
            _ = tick.tick() => send(&mut out, &Report::Progress(progress.snapshot())).await?,
        }
    };
    match result {
        Ok(summary) => {
            let report = Report::Summary {
                achieved_rate_bits: summary.achieved_rate.to_bits(),
                throughput_bits: summary.throughput.to_bits(),
                summary: Box::new(summary),
            };
            send(&mut out, &report).await?;
            Ok(ChildEnd::Summary)
        }
        Err(e) => {
            send(
                &mut out,
                &Report::Error {
                    message: e.to_string(),
                },
            )
            .await?;
            Ok(ChildEnd::Error)
        }
    }
}

async fn send(out: &mut tokio::io::Stdout, report: &Report) -> Result<(), ChildError> {
    let mut line = serde_json::to_vec(report).map_err(ChildError::Encode)?;
    line.push(b'\n');
    out.write_all(&line)
        .await
        .and(out.flush().await)
        .map_err(ChildError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RawOutput;

    #[test]
    fn the_clock_origin_survives_the_monotonic_round_trip() {
        let clock = Clock::start();
        let ns = origin_monotonic_ns(clock);
        let back = clock_from_monotonic_ns(ns).expect("origin in the past");
        let diff = if back.origin() > clock.origin() {
            back.origin() - clock.origin()
        } else {
            clock.origin() - back.origin()
        };
        assert!(diff < Duration::from_millis(1), "{diff:?}");
        assert!(clock_from_monotonic_ns(u64::MAX).is_none());
    }

    #[test]
    fn settings_cross_exactly() {
        let mut s = Settings::new(
            "http://127.0.0.1:9/x?y=1",
            Rate::per_second(1000.0 / 3.0).unwrap(),
            Duration::from_millis(1500),
        )
        .unwrap();
        s.load.method = ::http::Method::POST;
        s.load.headers = vec![("X-A".into(), "b".into())];
        s.load.body = b"\0body".to_vec();
        s.load.keep_alive = true;
        s.load.timeout = Duration::from_millis(250).into();
        s.load.bucket = Duration::from_millis(100).into();
        s.load.max_in_flight = 7;
        s.pool_cap = 3;
        s.raw = Some(RawOutput::from_path("/tmp/raw.csv").unwrap());
        let line = serde_json::to_string(&Request::new(&s, Clock::start())).unwrap();
        let (back, _) = serde_json::from_str::<Request>(&line)
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(back.load.rate.get().to_bits(), s.load.rate.get().to_bits());
        assert_eq!(back.target.url(&back.load.path), s.target.url(&s.load.path));
        assert_eq!(
            (
                &back.load.method,
                &back.load.headers,
                &back.load.body,
                back.load.keep_alive
            ),
            (
                &s.load.method,
                &s.load.headers,
                &s.load.body,
                s.load.keep_alive
            )
        );
        assert_eq!(
            (back.load.duration, back.load.timeout, back.load.bucket),
            (s.load.duration, s.load.timeout, s.load.bucket)
        );
        // And everything else, so a new field cannot be left behind.
        assert_eq!(back.load, s.load);
        assert_eq!(back.target, s.target);
        assert_eq!((back.pool_cap, back.raw), (s.pool_cap, s.raw));
    }

    #[test]
    fn a_bad_request_says_what_it_is() {
        let e = serde_json::from_str::<Request>("{}").map_err(RequestError::Decode);
        let e = e.unwrap_err().to_string();
        assert!(
            e.starts_with("the request line is not a traffic request (")
                && e.ends_with("; `zdt traffic-child` is run by zdt itself"),
            "{e}"
        );
        let late = Request {
            origin_monotonic_ns: u64::MAX,
            settings: Settings::new(
                "http://127.0.0.1:9/",
                Rate::per_second(1.0).unwrap(),
                Duration::from_secs(1),
            )
            .unwrap(),
            sources: Vec::new(),
            loopback: false,
        };
        assert!(matches!(late.settings(), Err(RequestError::ClockOrigin)));
    }
}
