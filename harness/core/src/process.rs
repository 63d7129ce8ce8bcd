//! Child processes that must not outlive zdt: nginx pods, the traffic
//! generator, the LB's connection holder. A run killed with SIGKILL gets no
//! chance to clean up, so the kernel does it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::owner::{Liveness, Owner};

/// Names a zdt binary to run helper processes (the traffic generator, the
/// LB's connection holder) in, for processes that are not zdt themselves
/// (integration tests: `env!("CARGO_BIN_EXE_zdt")`).
pub const EXE_ENV: &str = "ZDT_TRAFFIC_EXE";

static SELF_EXEC: AtomicBool = AtomicBool::new(false);

/// Called by the zdt binary: this process's own executable has the hidden
/// subcommands, so helpers may run in a copy of it.
pub fn allow_self_exec() {
    SELF_EXEC.store(true, Ordering::Relaxed);
}

/// Where the system tool `name` (`nft`, `ip`) is installed: on `PATH`,
/// then in /usr/sbin and /sbin, which a normal user's `PATH` often lacks.
pub fn system_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A regular file someone may execute.
pub fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The zdt binary helpers run in: `$ZDT_TRAFFIC_EXE` when set, else this
/// process's executable when it is zdt ([`allow_self_exec`]); `None` means
/// in this process (a library user's binary has no hidden subcommands).
pub fn zdt_exe() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(EXE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if SELF_EXEC.load(Ordering::Relaxed) {
        return std::env::current_exe().ok();
    }
    None
}

/// Make `cmd`'s process receive SIGKILL when the thread that spawns it
/// exits (PR_SET_PDEATHSIG). The spawning thread must live as long as the
/// child is wanted: tokio's worker threads do for a runtime's lifetime.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    signal_on_parent_death(cmd, libc::SIGKILL);
}

/// [`die_with_parent`] with `signal` instead of SIGKILL: SIGTERM lets a zdt
/// child tear down what it made.
pub fn signal_on_parent_death(cmd: &mut std::process::Command, signal: libc::c_int) {
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe and nothing here
    // allocates.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong);
            // The parent died before prctl: nobody would kill us later.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Start `cmd`'s process with every signal at its default action. An
/// ignored signal survives exec: zdt started as `zdt run … &` from a script
/// has SIGINT and SIGQUIT ignored, and a container inheriting that would
/// not stop on its stop signal as a container runtime would make it.
pub fn default_signals(cmd: &mut std::process::Command) {
    // SAFETY: sigaction is async-signal-safe; the struct is on the stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            // The standard signals; real-time ones are never ignored by shells.
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
            Ok(())
        });
    }
}

/// A 5000/s run with a 10 s timeout keeps ~10k client sockets and as many
/// LB-side sockets open at once; the default soft limit (often 1024) would
/// turn that into spurious errors, so raise it as far as allowed.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        // Root may raise the hard limit too; try a generous value first.
        let want = libc::rlimit {
            rlim_cur: 262_144,
            rlim_max: 262_144.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The file in each zdt temp dir naming its owner ([`Owner`]).
pub const OWNER_FILE: &str = ".zdt-owner";

/// A zdt temp dir, `$TMPDIR/zdt-<pid>-<purpose>-XXXXXX`, with an
/// [`OWNER_FILE`] inside: the owner (pid and its start time) lets
/// `zdt clean` tell a live run's files from a crashed run's even when the
/// pid has been reused since; the pid in the name is for people.
pub fn temp_dir(purpose: &str) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("zdt-{}-{purpose}-", std::process::id()))
        .tempdir()?;
    let owner = Owner::current(crate::owner::process_run_id());
    std::fs::write(dir.path().join(OWNER_FILE), owner.to_text())?;
    Ok(dir)
}

/// The pid in a `zdt-<pid>-…` name.
fn owning_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("zdt-")?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok().filter(|p| *p > 0)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks existence/permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A zdt temp dir found under `$TMPDIR`, and whether its owner runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZdtTempDir {
    pub path: PathBuf,
    /// From its [`OWNER_FILE`]; `None` for dirs made before zdt wrote one
    /// (or in the instant between creating the dir and writing the file).
    pub owner: Option<Owner>,
    pub liveness: Liveness,
}

/// Every zdt temp dir under `dir`, sorted by path. Without an owner file
/// the pid in the name decides: a live pid keeps the dir (it may be a run
/// that has not written its file yet).
pub fn zdt_temp_dirs(dir: &Path) -> Vec<ZdtTempDir> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<ZdtTempDir> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let pid = owning_pid(&e.file_name().to_string_lossy())?;
            let owner = std::fs::read_to_string(e.path().join(OWNER_FILE))
                .ok()
                .and_then(|t| Owner::from_text(&t));
            let liveness = match &owner {
                Some(o) => o.liveness(),
                None if pid_alive(pid) => Liveness::Alive,
                None => Liveness::Gone(format!("pid {pid} exited")),
            };
            Some(ZdtTempDir {
                path: e.path(),
                owner,
                liveness,
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// zdt temp dirs under `dir` whose owning process is gone.
pub fn stale_temp_dirs(dir: &Path) -> Vec<PathBuf> {
    zdt_temp_dirs(dir)
        .into_iter()
        .filter(|d| matches!(d.liveness, Liveness::Gone(_)))
        .map(|d| d.path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owning_pid_is_read_from_zdt_dirs_only() {
        assert_eq!(owning_pid("zdt-1234-kind-abc"), Some(1234));
        assert_eq!(owning_pid("zdt-x-kind"), None);
        assert_eq!(owning_pid("other-1234-x"), None);
        assert_eq!(owning_pid("zdt-0-x"), None);
    }

    #[test]
    fn only_dead_owners_temp_dirs_are_stale() {
        let root = tempfile::tempdir().unwrap();
        let live = root
            .path()
            .join(format!("zdt-{}-kind-live", std::process::id()));
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let dead = root.path().join("zdt-99999999-kind-dead");
        let foreign = root.path().join("not-zdt-99999999-x");
        for d in [&live, &dead, &foreign] {
            std::fs::create_dir(d).unwrap();
        }
        assert_eq!(stale_temp_dirs(root.path()), vec![dead]);
    }

    #[test]
    fn the_owner_file_decides_over_the_pid_in_the_name() {
        let root = tempfile::tempdir().unwrap();
        let me = Owner::current("r");
        // Our own pid in the name, but the file names a process that
        // started at another time: the pid was reused, the owner is gone.
        let reused = root.path().join(format!("zdt-{}-kind-a", me.pid));
        let live = root.path().join(format!("zdt-{}-kind-b", me.pid));
        for d in [&reused, &live] {
            std::fs::create_dir(d).unwrap();
        }
        let earlier = Owner {
            start: me.start.saturating_sub(1),
            ..me.clone()
        };
        std::fs::write(reused.join(OWNER_FILE), earlier.to_text()).unwrap();
        std::fs::write(live.join(OWNER_FILE), me.to_text()).unwrap();
        assert_eq!(stale_temp_dirs(root.path()), vec![reused]);
    }

    #[test]
    fn temp_dir_records_this_process_as_owner() {
        let dir = temp_dir("test").unwrap();
        let text = std::fs::read_to_string(dir.path().join(OWNER_FILE)).unwrap();
        let owner = Owner::from_text(&text).unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(owner.liveness(), Liveness::Alive);
    }
}
