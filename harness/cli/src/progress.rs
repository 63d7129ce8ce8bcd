//! Live progress on a terminal while traffic runs: elapsed, sent, success
//! ratio and p99 so far. Off when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use zdt_traffic::Progress;

/// Draws a bar for `progress` until dropped.
pub struct Bar(JoinHandle<()>);

/// A bar labelled `label` for one variant's traffic.
pub fn bar(progress: Progress, label: String) -> Bar {
    Bar(spawn(progress, label))
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawn a task drawing a progress bar for `progress`; abort it to stop.
/// Returns a task that does nothing when stderr is not a terminal.
fn spawn(progress: Progress, label: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(progress.total());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(label);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let snap = progress.snapshot();
            bar.set_position(snap.done);
            let ratio = if snap.done == 0 {
                1.0
            } else {
                snap.successes as f64 / snap.done as f64
            };
            bar.set_message(format!("success {:.3}%", ratio * 100.0));
            if snap.done >= progress.total() {
                bar.finish();
                return;
            }
        }
    })
}
