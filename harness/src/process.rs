//! Child processes that must not outlive zdt: nginx pods, the traffic
//! generator, the LB's connection holder. A run killed with SIGKILL gets no
//! chance to clean up, so the kernel does it.

use std::os::unix::process::CommandExt;

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
