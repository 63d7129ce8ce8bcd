//! Live progress of `zdt run` on stderr.
//!
//! On a terminal: one line per variant (indicatif), showing its phase and,
//! while its traffic runs, a bar of requests done against the schedule
//! with the live success ratio and achieved rate; chaos steps and error
//! windows are printed above the lines as they happen.
//!
//! Off a terminal (CI logs, a pipe, a file): plain timestamped lines at a
//! low rate — every phase change, chaos step and error window, and a
//! progress line every [`PLAIN_EVERY`] while traffic runs. Never an escape
//! code there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use zdt::run::Phase;
use zdt_core::events::{Event, Source};
use zdt_traffic::{Load, Progress};

/// How often a progress line is printed off a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// How often a terminal line is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(250);

/// Where progress goes.
#[derive(Clone)]
enum Output {
    Terminal(MultiProgress),
    Plain,
}

/// The live display of a run: told by the run's observer what happens.
pub struct Live {
    out: Output,
    variants: Mutex<HashMap<String, Arc<Line>>>,
}

/// One variant's line.
struct Line {
    id: String,
    /// The terminal's line (None off a terminal).
    bar: Option<ProgressBar>,
    /// Its traffic's start on the variant's clock, to show chaos steps at
    /// traffic time as the reports do.
    traffic_at: Mutex<Option<Duration>>,
}

impl Live {
    /// Lines on a terminal when `terminal`, plain lines otherwise.
    pub fn new(terminal: bool) -> Self {
        let out = if terminal {
            Output::Terminal(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Output::Plain
        };
        Self {
            out,
            variants: Mutex::default(),
        }
    }

    fn line(&self, id: &str) -> Arc<Line> {
        let mut all = self.variants.lock().expect("progress lock");
        all.entry(id.to_owned())
            .or_insert_with(|| {
                let bar = match &self.out {
                    Output::Terminal(multi) => {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(spinner_style());
                        bar.set_prefix(id.to_owned());
                        bar.enable_steady_tick(DRAW_EVERY);
                        Some(bar)
                    }
                    Output::Plain => None,
                };
                Arc::new(Line {
                    id: id.to_owned(),
                    bar,
                    traffic_at: Mutex::new(None),
                })
            })
            .clone()
    }

    /// A line above the variants' lines (a plain line off a terminal).
    fn say(&self, text: &str) {
        match &self.out {
            Output::Terminal(multi) => {
                // Printed above the bars; if the terminal went away there is
                // nobody to tell.
                let _ = multi.println(text);
            }
            Output::Plain => eprintln!("{} {text}", stamp()),
        }
    }

    /// Run `f` (printing to stdout) without the bars drawing over it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.out {
            Output::Terminal(multi) => multi.suspend(f),
            Output::Plain => f(),
        }
    }

    pub fn phase(&self, id: &str, phase: Phase) {
        let line = self.line(id);
        match &line.bar {
            Some(bar) => {
                if phase != Phase::Traffic {
                    bar.set_style(spinner_style());
                }
                bar.set_message(phase.label().to_owned());
            }
            None => self.say(&format!("{id}: {}", phase.label())),
        }
    }

    pub fn event(&self, id: &str, event: &Event) {
        let line = self.line(id);
        if event.source == Source::Traffic && event.reason == "TrafficStarted" {
            *line.traffic_at.lock().expect("progress lock") = Some(event.at);
        }
        if event.source != Source::Chaos {
            return;
        }
        let at = match *line.traffic_at.lock().expect("progress lock") {
            Some(t0) => format!("t+{:.1}s", event.at.saturating_sub(t0).as_secs_f64()),
            None => format!("{:.1}s", event.at.as_secs_f64()),
        };
        let word = match event.reason.as_str() {
            "StepFailed" => "chaos step FAILED",
            _ => "chaos",
        };
        self.say(&format!("{id}: {at} {word}: {}", event.message));
    }

    /// Follow a variant's traffic until the returned guard is dropped.
    pub fn traffic(self: &Arc<Self>, id: &str, progress: Progress, load: &Load) -> Follow {
        let line = self.line(id);
        if let Some(bar) = &line.bar {
            bar.set_length(progress.total());
            bar.set_position(0);
            bar.set_style(bar_style());
        }
        let live = self.clone();
        let rate = load.rate.get();
        let duration = load.duration.get();
        Follow(tokio::spawn(async move {
            follow(live, line, progress, rate, duration).await;
        }))
    }

    /// A variant ended: its line goes (the verdict is printed instead).
    pub fn finished(&self, id: &str) {
        let line = self.variants.lock().expect("progress lock").remove(id);
        if let (Some(line), Output::Terminal(multi)) = (line, &self.out) {
            if let Some(bar) = &line.bar {
                bar.finish_and_clear();
                multi.remove(bar);
            }
        }
    }
}

/// Stops following a variant's traffic when dropped.
pub struct Follow(JoinHandle<()>);

impl Drop for Follow {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:25} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The wall-clock time for plain lines.
fn stamp() -> String {
    jiff::Timestamp::now().strftime("%H:%M:%SZ").to_string()
}

/// Draw (or print) a variant's traffic progress and watch for error
/// windows until aborted or the traffic is done.
async fn follow(
    live: Arc<Live>,
    line: Arc<Line>,
    progress: Progress,
    rate: f64,
    duration: Duration,
) {
    let every = if line.bar.is_some() {
        DRAW_EVERY
    } else {
        Duration::from_secs(1)
    };
    let mut tick = tokio::time::interval(every);
    let mut windows = Windows::default();
    let mut last_second = (Duration::ZERO, 0u64, 0u64);
    let mut last_plain = Duration::ZERO;
    loop {
        tick.tick().await;
        let snap = progress.snapshot();
        let elapsed = progress.elapsed();
        let due = ((elapsed.as_secs_f64() * rate) as u64).min(progress.total());
        // The last second's completions: the achieved rate and the error
        // windows both come from these.
        let (t, done, ok) = last_second;
        let span = elapsed.saturating_sub(t);
        let mut achieved = None;
        if span >= Duration::from_secs(1) {
            let d_done = snap.done.saturating_sub(done);
            let d_ok = snap.successes.saturating_sub(ok);
            achieved = Some(d_done as f64 / span.as_secs_f64());
            if let Some(text) = windows.second(elapsed, d_done, d_ok) {
                live.say(&format!("{}: {text}", line.id));
            }
            last_second = (elapsed, snap.done, snap.successes);
        }
        let ratio = if snap.done == 0 {
            1.0
        } else {
            snap.successes as f64 / snap.done as f64
        };
        match &line.bar {
            Some(bar) => {
                bar.set_position(snap.done);
                let mut msg = format!("due {due} · success {:.3}%", ratio * 100.0);
                if let Some(r) = achieved {
                    msg.push_str(&format!(" · {r:.0}/s"));
                }
                if windows.open.is_some() {
                    msg.push_str(" · ERRORS");
                }
                bar.set_message(msg);
            }
            None => {
                if elapsed.saturating_sub(last_plain) >= PLAIN_EVERY {
                    last_plain = elapsed;
                    live.say(&format!(
                        "{}: traffic {:.0}s/{:.0}s, {}/{} requests done (due {due}), success {:.3}%, {:.0}/s",
                        line.id,
                        elapsed.as_secs_f64().min(duration.as_secs_f64()),
                        duration.as_secs_f64(),
                        snap.done,
                        progress.total(),
                        ratio * 100.0,
                        snap.done as f64 / elapsed.as_secs_f64().max(1e-3),
                    ));
                }
            }
        }
        if snap.done >= progress.total() {
            return;
        }
    }
}

/// Error windows from per-second completions: a window opens with a second
/// that has errors after a second without, and closes with the next second
/// without errors. Requests are counted as they complete, so a window of
/// timeouts shows a timeout after the requests were sent.
#[derive(Debug, Default)]
struct Windows {
    /// A second with completions and no errors was seen.
    clean_seen: bool,
    /// The open window: its start (traffic time) and errors so far.
    open: Option<(Duration, u64)>,
}

impl Windows {
    /// Account one second ending at `at` with `done` completions of which
    /// `ok` succeeded; returns the line to print when a window opens or
    /// closes.
    fn second(&mut self, at: Duration, done: u64, ok: u64) -> Option<String> {
        let errors = done.saturating_sub(ok);
        match (&mut self.open, errors) {
            (None, 0) => {
                self.clean_seen |= done > 0;
                None
            }
            (None, e) if self.clean_seen => {
                self.open = Some((at, e));
                Some(format!(
                    "t+{:.0}s error window opened: {e} of {done} requests completed in the last second failed",
                    at.as_secs_f64()
                ))
            }
            // Errors from the start are no window opening after successes.
            (None, _) => None,
            (Some((_, total)), e) if e > 0 => {
                *total += e;
                None
            }
            (Some((start, total)), _) => {
                let text = format!(
                    "t+{:.0}s error window closed: {total} errors over {:.0}s",
                    at.as_secs_f64(),
                    at.saturating_sub(*start).as_secs_f64().max(1.0)
                );
                self.open = None;
                Some(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_window_opens_on_errors_after_successes_and_closes_on_a_clean_second() {
        let mut w = Windows::default();
        assert_eq!(w.second(s(1), 200, 200), None);
        let opened = w.second(s(2), 200, 130).expect("opens");
        assert!(
            opened.contains("t+2s error window opened: 70 of 200"),
            "{opened}"
        );
        assert_eq!(w.second(s(3), 200, 150), None, "stays open");
        let closed = w.second(s(4), 200, 200).expect("closes");
        assert!(closed.contains("120 errors over 2s"), "{closed}");
        assert_eq!(w.second(s(5), 200, 200), None);
    }

    #[test]
    fn errors_from_the_first_second_open_no_window() {
        let mut w = Windows::default();
        assert_eq!(w.second(s(1), 200, 0), None);
        assert_eq!(w.second(s(2), 0, 0), None);
        assert!(w.second(s(3), 200, 200).is_none());
        assert!(
            w.second(s(4), 100, 90).is_some(),
            "now after a clean second"
        );
    }
}
