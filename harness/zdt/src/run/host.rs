//! Limits of the machine a run's traffic meets before it meets the cluster.
//! A warning up front is cheaper than a report full of errors nobody can
//! attribute.

/// Connection-tracking entries a run at `rate` new connections/s leaves
/// behind: two per request (client to LB, LB to pod), each kept for the
/// TIME_WAIT timeout after it closes.
pub fn conntrack_entries(rate_per_s: f64, time_wait_s: u64) -> u64 {
    (rate_per_s * 2.0 * time_wait_s as f64).ceil() as u64
}

/// The entries of a `max`-entry table a run may use: other traffic on the
/// machine needs room too.
fn conntrack_room(max: u64) -> u64 {
    max / 10 * 8
}

/// What one variant's traffic asks of the machine's network stack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// New connections per second (0 with keep-alive).
    pub new_connections_per_s: f64,
    /// Connections the generator may hold open at once.
    pub open_at_once: u64,
}

/// The machine's limits the host's stack imposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `nf_conntrack_max` and the TIME_WAIT timeout, when connection
    /// tracking is loaded.
    pub conntrack: Option<(u64, u64)>,
    /// The hard open-files limit (the soft one is raised to it).
    pub open_files: u64,
}

impl Limits {
    pub fn read() -> Limits {
        let read = |name: &str| -> Option<u64> {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let conntrack = read("nf_conntrack_max").zip(read("nf_conntrack_tcp_timeout_time_wait"));
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit with a valid pointer to a local struct.
        let open_files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_max
        } else {
            u64::MAX
        };
        Limits {
            conntrack,
            open_files,
        }
    }
}

/// Descriptors zdt keeps for itself besides the generator's sockets.
const FD_RESERVE: u64 = 1024;

/// Why traffic of `demand` cannot run on the host's stack with `limits`,
/// with the fix; `None` when it fits. Only for an emulated cluster that
/// could not have a network of its own (`why_shared` says why): there the
/// host's table and limits carry every hop.
pub fn refusal(demand: Demand, limits: Limits, why_shared: &str) -> Option<String> {
    let mut problems = Vec::new();
    let mut max_rate = f64::INFINITY;
    if let Some((max, time_wait)) = limits.conntrack {
        let need = conntrack_entries(demand.new_connections_per_s, time_wait);
        let room = conntrack_room(max);
        if need > room {
            max_rate = max_rate.min(room as f64 / (2.0 * time_wait as f64));
            problems.push(format!(
                "at {:.0} new connections/s the host's connection-tracking table needs about \
                 {need} entries (2 per request, kept {time_wait} s after close) but holds {max}",
                demand.new_connections_per_s
            ));
        }
    }
    let need_fds = demand.open_at_once.saturating_add(FD_RESERVE);
    if need_fds > limits.open_files {
        problems.push(format!(
            "the generator may hold {} connections open but the open-files limit is {}",
            demand.open_at_once, limits.open_files
        ));
    }
    if problems.is_empty() {
        return None;
    }
    let rate_fix = if max_rate.is_finite() {
        format!(
            "run at `--rate {}/s` or less, ",
            (max_rate.floor() as u64).max(1)
        )
    } else {
        String::new()
    };
    Some(format!(
        "the emulated cluster cannot have a network of its own here ({why_shared}), so its \
         traffic would use the host's network stack, and {}. A run past those limits measures \
         the machine, not the cluster. Fix: let zdt make network namespaces (run as root, or \
         enable unprivileged user namespaces), or {rate_fix}or use `keepAlive: true`, or \
         lower `traffic.maxInFlight`. zdt changes no sysctl or limit itself.",
        problems.join("; and ")
    ))
}

/// A warning when this machine's connection-tracking table is too small
/// for `rate` new connections/s: when it is full the kernel drops packets,
/// and clients see connect timeouts that are not the cluster's doing.
pub fn conntrack_warning(rate_per_s: f64) -> Option<String> {
    let (max, time_wait) = Limits::read().conntrack?;
    warning(rate_per_s, max, time_wait)
}

fn warning(rate_per_s: f64, max: u64, time_wait: u64) -> Option<String> {
    let need = conntrack_entries(rate_per_s, time_wait);
    if need <= conntrack_room(max) {
        return None;
    }
    let suggest = need.next_power_of_two().max(1 << 20);
    Some(format!(
        "zdt: warning: at {rate_per_s:.0} new connections/s a run leaves about {need} \
         connection-tracking entries (2 per request, kept {time_wait} s after close), \
         but this machine's table holds {max}; when it is full the kernel drops packets \
         and the run shows connect timeouts the cluster did not cause. Raise it with \
         `sysctl -w net.netfilter.nf_conntrack_max={suggest}` (or shorten \
         net.netfilter.nf_conntrack_tcp_timeout_time_wait), or use keepAlive: true"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_seed_on_a_default_host_and_names_a_rate_that_fits() {
        let defaults = Limits {
            conntrack: Some((262_144, 120)),
            open_files: 20_000,
        };
        let seed = Demand {
            new_connections_per_s: 5000.0,
            open_at_once: 10_000,
        };
        let why = "user namespaces are disabled";
        let r = refusal(seed, defaults, why).expect("1.2 million entries do not fit 262,144");
        assert!(r.contains("--rate 873/s"), "{r}");
        assert!(r.contains(why), "{r}");
        assert!(r.contains("1200000"), "{r}");
        // The rate it names fits.
        let fits = Demand {
            new_connections_per_s: 873.0,
            ..seed
        };
        assert_eq!(refusal(fits, defaults, why), None);
        // Too many open connections for the descriptor limit.
        let held = Demand {
            new_connections_per_s: 100.0,
            open_at_once: 19_500,
        };
        let r = refusal(held, defaults, why).expect("19,500 + reserve > 20,000");
        assert!(r.contains("open-files limit is 20000"), "{r}");
        assert!(!r.contains("--rate"), "{r}");
        // No connection tracking loaded: only descriptors count.
        let untracked = Limits {
            conntrack: None,
            ..defaults
        };
        assert_eq!(refusal(seed, untracked, why), None);
    }

    #[test]
    fn warns_only_when_the_table_is_too_small_for_the_rate() {
        // 5000/s for 120 s of TIME_WAIT, two entries each: 1.2 million.
        assert_eq!(conntrack_entries(5000.0, 120), 1_200_000);
        let w = warning(5000.0, 262_144, 120).expect("262,144 is too small");
        assert!(w.contains("nf_conntrack_max=2097152"), "{w}");
        assert!(w.contains("1200000"), "{w}");
        assert_eq!(warning(500.0, 262_144, 120), None);
        assert_eq!(warning(5000.0, 2_097_152, 120), None);
        assert!(warning(5000.0, 262_144, 10).is_none());
    }
}
