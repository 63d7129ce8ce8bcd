//! Child processes that must not outlive zdt: nginx pods, the traffic
//! generator, the LB's connection holder. A run killed with SIGKILL gets no
//! chance to clean up, so the kernel does it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

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
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe and nothing here
    // allocates.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            // The parent died before prctl: nobody would kill us later.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
