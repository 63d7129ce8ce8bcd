//! Failures that are the machine's, not the cluster's: a process out of
//! descriptors, a kernel out of buffers or local ports, a full
//! connection-tracking table. A request that failed for one of these says
//! nothing about zero-downtime, so a run that saw any is not a verdict on
//! the cluster (zdt calls it INVALID and names the cause).
//!
//! The generator counts its own per request; zdt's in-process parts (the
//! LB, the emulated pods and kube-proxies) [`record`] theirs in this
//! process-wide tally, which a run reads before and after each variant.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// One kind of host-side failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostFault {
    /// EMFILE: the process's open-files limit.
    TooManyOpenFiles,
    /// ENFILE: the system-wide file table.
    FileTableFull,
    /// ENOBUFS: the kernel's socket buffers.
    NoBufferSpace,
    /// EADDRNOTAVAIL: no free local port (or address) for a connection.
    NoLocalPort,
    /// ENOMEM in a socket call.
    OutOfMemory,
    /// The connection-tracking table dropped packets (it was full).
    ConntrackDrop,
    /// The connection-tracking table could not insert an entry.
    ConntrackInsertFailed,
}

impl HostFault {
    pub const ALL: [HostFault; 7] = [
        HostFault::TooManyOpenFiles,
        HostFault::FileTableFull,
        HostFault::NoBufferSpace,
        HostFault::NoLocalPort,
        HostFault::OutOfMemory,
        HostFault::ConntrackDrop,
        HostFault::ConntrackInsertFailed,
    ];

    /// The host fault an errno means, if it means one.
    pub fn from_errno(errno: i32) -> Option<HostFault> {
        match errno {
            libc::EMFILE => Some(HostFault::TooManyOpenFiles),
            libc::ENFILE => Some(HostFault::FileTableFull),
            libc::ENOBUFS => Some(HostFault::NoBufferSpace),
            libc::EADDRNOTAVAIL => Some(HostFault::NoLocalPort),
            libc::ENOMEM => Some(HostFault::OutOfMemory),
            _ => None,
        }
    }

    /// What it is and what usually fixes it, for a verdict's reason.
    pub fn explain(self) -> &'static str {
        match self {
            HostFault::TooManyOpenFiles => {
                "too many open files (EMFILE): a process hit its open-files limit"
            }
            HostFault::FileTableFull => "the system's file table is full (ENFILE)",
            HostFault::NoBufferSpace => "the kernel ran out of socket buffers (ENOBUFS)",
            HostFault::NoLocalPort => "no local port was free for a new connection (EADDRNOTAVAIL)",
            HostFault::OutOfMemory => "the kernel refused memory for a socket (ENOMEM)",
            HostFault::ConntrackDrop => {
                "a connection-tracking table on the data path (the host's, or the emulated \
                 cluster's network's) was full and dropped packets"
            }
            HostFault::ConntrackInsertFailed => {
                "a connection-tracking table on the data path (the host's, or the emulated \
                 cluster's network's) failed to insert entries: packets of new connections \
                 were dropped"
            }
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&f| f == self).unwrap_or(0)
    }
}

impl std::fmt::Display for HostFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&name)
    }
}

/// Counts by kind.
pub type HostFaults = BTreeMap<HostFault, u64>;

static TALLY: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Count a failure of this process's own data path when `errno` is a host
/// fault; returns whether it was.
pub fn record(errno: Option<i32>) -> bool {
    match errno.and_then(HostFault::from_errno) {
        Some(f) => {
            TALLY[f.index()].fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// This process's tally so far (subtract an earlier one for a window).
pub fn tally() -> HostFaults {
    HostFault::ALL
        .iter()
        .map(|&f| (f, TALLY[f.index()].load(Ordering::Relaxed)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// `after - before`, kind by kind, keeping only kinds that grew.
pub fn since(before: &HostFaults, after: &HostFaults) -> HostFaults {
    after
        .iter()
        .map(|(&f, &n)| (f, n.saturating_sub(before.get(&f).copied().unwrap_or(0))))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// Add `more` into `into`.
pub fn add(into: &mut HostFaults, more: &HostFaults) {
    for (&f, &n) in more {
        *into.entry(f).or_default() += n;
    }
}

/// The connection-tracking table's drop and insert-failure counters in
/// the network namespace of process `pid` — this process's when `None` —
/// (`/proc/PID/net/stat/nf_conntrack`, summed over CPUs); `None` when
/// connection tracking is not loaded there.
pub fn conntrack_counters(pid: Option<u32>) -> Option<HostFaults> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/net/stat/nf_conntrack"),
        None => "/proc/net/stat/nf_conntrack".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    parse_conntrack_stat(&text)
}

/// [`conntrack_counters`] summed over the network namespaces of `pids`;
/// `None` when connection tracking is loaded in none of them.
pub fn conntrack_counters_in(pids: &[Option<u32>]) -> Option<HostFaults> {
    let mut out: Option<HostFaults> = None;
    for pid in pids {
        if let Some(c) = conntrack_counters(*pid) {
            add(out.get_or_insert_with(HostFaults::new), &c);
        }
    }
    out
}

fn parse_conntrack_stat(text: &str) -> Option<HostFaults> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let wanted = [
        (HostFault::ConntrackDrop, column("drop")),
        (HostFault::ConntrackDrop, column("early_drop")),
        (HostFault::ConntrackInsertFailed, column("insert_failed")),
    ];
    let mut out = HostFaults::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        for (fault, col) in wanted {
            let Some(v) = col.and_then(|c| fields.get(c)) else {
                continue;
            };
            let n = u64::from_str_radix(v, 16).ok()?;
            *out.entry(fault).or_default() += n;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_counters_are_summed_over_cpus_from_hex() {
        let text = "entries  clashres  found  new  invalid  ignore  delete  delete_list  insert  insert_failed  drop  early_drop  icmp_error  expect_new  expect_create  expect_delete  search_restart\n\
                    00000010  00000000  00000000  00000000  00000000  00000000  00000000  00000000  00000000  00000001  0000000a  00000000  00000000  00000000  00000000  00000000  00000000\n\
                    00000010  00000000  00000000  00000000  00000000  00000000  00000000  00000000  00000000  00000000  00000006  00000002  00000000  00000000  00000000  00000000  00000000\n";
        let c = parse_conntrack_stat(text).unwrap();
        assert_eq!(c[&HostFault::ConntrackDrop], 10 + 6 + 2);
        assert_eq!(c[&HostFault::ConntrackInsertFailed], 1);
    }

    #[test]
    fn only_host_errnos_are_host_faults_and_windows_subtract() {
        assert_eq!(
            HostFault::from_errno(libc::EMFILE),
            Some(HostFault::TooManyOpenFiles)
        );
        assert_eq!(HostFault::from_errno(libc::ECONNREFUSED), None);
        assert!(!record(Some(libc::ECONNRESET)));
        assert!(!record(None));
        let before = tally();
        assert!(record(Some(libc::ENOBUFS)));
        let window = since(&before, &tally());
        assert_eq!(window.get(&HostFault::NoBufferSpace), Some(&1));
        assert_eq!(HostFault::NoLocalPort.to_string(), "no-local-port");
    }
}
