//! What each container's process wrote (stdout and stderr, line by line,
//! each with the time it was read), kept per pod and container the way the
//! kubelet keeps container log files, so `kubectl logs` (and `-f`) shows
//! it. Like the kubelet's `containerLogMaxSize`, a container keeps its last
//! [`MAX_LOG_BYTES`]; older lines are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::sync::watch;

/// The kubelet's default `containerLogMaxSize` (10 Mi).
pub const MAX_LOG_BYTES: usize = 10 * 1024 * 1024;

/// One line a container wrote, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at: Timestamp,
    pub text: String,
}

#[derive(Debug, Default)]
struct Buf {
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// Lines dropped from the front: the sequence number of `lines[0]`.
    dropped: u64,
    /// Output streams still open; the log is complete at 0 once `exited`.
    writers: usize,
    exited: bool,
}

impl Buf {
    fn complete(&self) -> bool {
        self.exited && self.writers == 0
    }
}

/// One container's output. Writers push lines; readers take them from a
/// sequence number on and wait on [`ContainerLog::subscribe`] for more.
#[derive(Debug)]
pub struct ContainerLog {
    buf: Mutex<Buf>,
    changed: watch::Sender<()>,
}

impl ContainerLog {
    /// A log that `writers` output streams will write to.
    pub fn new(writers: usize) -> Arc<ContainerLog> {
        Arc::new(ContainerLog {
            buf: Mutex::new(Buf {
                writers,
                ..Buf::default()
            }),
            changed: watch::channel(()).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, text: String) {
        {
            let mut b = self.lock();
            b.bytes += text.len() + 1;
            b.lines.push_back(LogLine {
                at: Timestamp::now(),
                text,
            });
            while b.bytes > MAX_LOG_BYTES {
                let Some(old) = b.lines.pop_front() else {
                    break;
                };
                b.bytes -= old.text.len() + 1;
                b.dropped += 1;
            }
        }
        self.changed.send_replace(());
    }

    /// One output stream reached its end.
    pub fn writer_done(&self) {
        {
            let mut b = self.lock();
            b.writers = b.writers.saturating_sub(1);
        }
        self.changed.send_replace(());
    }

    /// The container's process exited (its streams may still drain).
    pub fn exited(&self) {
        self.lock().exited = true;
        self.changed.send_replace(());
    }

    /// The last `n` lines' text.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let b = self.lock();
        let skip = b.lines.len().saturating_sub(n);
        b.lines.iter().skip(skip).map(|l| l.text.clone()).collect()
    }

    /// Lines from sequence number `from` on, the next sequence number, and
    /// whether nothing more will come.
    pub fn since(&self, from: u64) -> (Vec<LogLine>, u64, bool) {
        let b = self.lock();
        let start = from.saturating_sub(b.dropped) as usize;
        let lines: Vec<LogLine> = b.lines.iter().skip(start).cloned().collect();
        let next = b.dropped + b.lines.len() as u64;
        (lines, next, b.complete())
    }

    /// The sequence number the `n`-th line from the end has (the start of
    /// `--tail=n`).
    pub fn seq_of_last(&self, n: usize) -> u64 {
        let b = self.lock();
        b.dropped + b.lines.len().saturating_sub(n) as u64
    }

    /// Wakes whenever a line arrives or the log completes.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// A pod's containers' logs, by container name.
type PodEntry = HashMap<String, Arc<ContainerLog>>;

/// Every container's log on the cluster, by pod and container name: what
/// the API server's `pods/NAME/log` reads. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PodLogs {
    inner: Arc<Mutex<HashMap<(String, String), PodEntry>>>,
}

impl PodLogs {
    /// A container of pod `namespace/pod` started writing to `log`.
    pub fn insert(&self, namespace: &str, pod: &str, container: &str, log: Arc<ContainerLog>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((namespace.to_owned(), pod.to_owned()))
            .or_default()
            .insert(container.to_owned(), log);
    }

    pub fn get(&self, namespace: &str, pod: &str, container: &str) -> Option<Arc<ContainerLog>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_owned(), pod.to_owned()))
            .and_then(|c| c.get(container).cloned())
    }

    /// The pod is gone: its logs go with it (as the kubelet removes the
    /// pod's log directory).
    pub fn forget(&self, namespace: &str, pod: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_owned(), pod.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_and_complete_after_exit_and_every_writer() {
        let log = ContainerLog::new(2);
        log.push("a".into());
        log.push("b".into());
        let (lines, next, done) = log.since(0);
        assert_eq!(lines.len(), 2);
        assert_eq!((next, done), (2, false));
        assert_eq!(log.seq_of_last(1), 1);
        assert_eq!(log.since(1).0[0].text, "b");
        log.exited();
        log.writer_done();
        assert!(!log.since(2).2, "one stream still open");
        log.writer_done();
        assert!(log.since(2).2);
        assert_eq!(log.tail(1), vec!["b".to_owned()]);
    }

    #[test]
    fn old_lines_are_dropped_beyond_the_size_limit() {
        let log = ContainerLog::new(1);
        let line = "x".repeat(1023);
        for _ in 0..(MAX_LOG_BYTES / 1024 + 10) {
            log.push(line.clone());
        }
        let (lines, next, _) = log.since(0);
        assert_eq!(lines.len(), MAX_LOG_BYTES / 1024);
        assert_eq!(next, (MAX_LOG_BYTES / 1024 + 10) as u64);
    }
}
