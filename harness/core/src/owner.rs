//! Who made a thing: every docker object, kind cluster marker and temp dir
//! zdt creates records the process that owns it (run id, host, boot, pid
//! and the pid's start time), so `zdt clean` removes what belongs to
//! processes that are gone and keeps what a live run is using.
//!
//! A pid alone is not enough: pids are reused, so the start time
//! (`/proc/PID/stat` field 22, clock ticks after boot) must match too, and
//! the boot id tells a pid of this boot from one of the last. A record made
//! on another host (a zdt in a container sharing the Docker socket, a
//! remote `DOCKER_HOST`) cannot be checked from here: it is neither live nor
//! gone, and only `zdt clean --force` takes it.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Label (and marker-file key) prefix of the owner fields.
const PREFIX: &str = "zdt.owner.";
/// The run-id label every zdt docker object carries.
pub const RUN_LABEL: &str = "zdt.run";

/// The process that made something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The run (or, for process-wide things such as temp dirs, the process's
    /// run id, [`process_run_id`]).
    pub run: String,
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id` when it was made; empty if unknown.
    pub boot: String,
    pub pid: u32,
    /// The pid's start time in clock ticks after boot (`/proc/PID/stat`
    /// field 22).
    pub start: u64,
}

/// What became of an owner, as far as this host can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The owning process still runs: what it made is in use.
    Alive,
    /// The owner is gone; the reason says how that is known.
    Gone(String),
    /// It cannot be told from here (another host, no record at all).
    Unknown(String),
}

impl Owner {
    /// This process, for `run`.
    pub fn current(run: &str) -> Owner {
        let pid = std::process::id();
        Owner {
            run: run.to_owned(),
            host: hostname(),
            boot: boot_id(),
            pid,
            // Our own stat is always readable.
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// The docker labels (or marker-file lines) carrying this owner.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (RUN_LABEL.to_owned(), self.run.clone()),
            (format!("{PREFIX}host"), self.host.clone()),
            (format!("{PREFIX}boot"), self.boot.clone()),
            (format!("{PREFIX}pid"), self.pid.to_string()),
            (format!("{PREFIX}start"), self.start.to_string()),
        ])
    }

    /// The owner recorded in `labels`, if the labels carry one (objects
    /// made before zdt recorded owners carry none).
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        let get = |k: &str| labels.get(&format!("{PREFIX}{k}"));
        Some(Owner {
            run: labels.get(RUN_LABEL).cloned().unwrap_or_default(),
            host: get("host")?.clone(),
            boot: get("boot").cloned().unwrap_or_default(),
            pid: get("pid")?.parse().ok()?,
            start: get("start")?.parse().ok()?,
        })
    }

    /// `key=value` lines, for a marker file.
    pub fn to_text(&self) -> String {
        let mut lines: Vec<String> = self
            .labels()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        lines.sort();
        lines.concat()
    }

    /// The owner in a marker file's text.
    pub fn from_text(text: &str) -> Option<Owner> {
        let labels = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Owner::from_labels(&labels)
    }

    /// Is the owner still running? Checked on this host only.
    pub fn liveness(&self) -> Liveness {
        if self.host != hostname() {
            return Liveness::Unknown(format!(
                "made on host `{}`, this is `{}`",
                self.host,
                hostname()
            ));
        }
        let boot = boot_id();
        if !self.boot.is_empty() && !boot.is_empty() && self.boot != boot {
            return Liveness::Gone(format!("pid {} ran before the last reboot", self.pid));
        }
        match start_time(self.pid) {
            Some(t) if t == self.start => Liveness::Alive,
            Some(_) => Liveness::Gone(format!(
                "pid {} exited (the pid now belongs to another process)",
                self.pid
            )),
            None if pid_exists(self.pid) => Liveness::Unknown(format!(
                "pid {} exists but its start time cannot be read",
                self.pid
            )),
            None => Liveness::Gone(format!("pid {} exited", self.pid)),
        }
    }

    /// `pid 123 on host h (run R)`, for listings.
    pub fn describe(&self) -> String {
        let run = if self.run.is_empty() {
            String::new()
        } else {
            format!(", run {}", self.run)
        };
        format!("pid {} on {}{run}", self.pid, self.host)
    }
}

/// This process's run id, for things that belong to the process rather
/// than to one variant (temp dirs): `<pid>-<start ticks>`, unique on a host
/// for as long as the boot lasts.
pub fn process_run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id();
        format!("{pid}-{}", start_time(pid).unwrap_or(0))
    })
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// after boot. `None` when there is no such process (or it is hidden).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted from the last `)`: the text
/// after it starts at field 3.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks existence/permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This host's name (the kernel's, as `uname -n`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        // Fields 3… after `) `; field 22 is the 20th of them.
        let fields: Vec<String> = (3..=30).map(|i| i.to_string()).collect();
        let stat = format!("42 (a) b (c) {}", fields.join(" "));
        assert_eq!(parse_start_time(&stat), Some(22));
        assert_eq!(parse_start_time("42 (x) R 1"), None);
    }

    #[test]
    fn this_process_is_alive_and_round_trips_through_labels_and_text() {
        let me = Owner::current("run-1");
        assert!(me.start > 0);
        assert_eq!(me.liveness(), Liveness::Alive);
        assert_eq!(Owner::from_labels(&me.labels()), Some(me.clone()));
        assert_eq!(Owner::from_text(&me.to_text()), Some(me));
    }

    #[test]
    fn a_reused_pid_an_exited_pid_and_another_host_are_told_apart() {
        let me = Owner::current("r");
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(matches!(reused.liveness(), Liveness::Gone(m) if m.contains("another process")));
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let exited = Owner {
            pid: 99_999_999,
            ..me.clone()
        };
        assert!(matches!(exited.liveness(), Liveness::Gone(m) if m.contains("exited")));
        let elsewhere = Owner {
            host: format!("{}-other", me.host),
            ..me
        };
        assert!(matches!(elsewhere.liveness(), Liveness::Unknown(m) if m.contains("host")));
    }

    #[test]
    fn labels_without_an_owner_are_not_one() {
        let labels = HashMap::from([(RUN_LABEL.to_owned(), "r".to_owned())]);
        assert_eq!(Owner::from_labels(&labels), None);
    }
}
