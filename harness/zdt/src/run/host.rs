//! Limits of the machine a run's traffic meets before it meets the cluster.
//! A warning up front is cheaper than a report full of errors nobody can
//! attribute.

/// Connection-tracking entries a run at `rate` new connections/s leaves
/// behind: two per request (client to LB, LB to pod), each kept for the
/// TIME_WAIT timeout after it closes.
pub fn conntrack_entries(rate_per_s: f64, time_wait_s: u64) -> u64 {
    (rate_per_s * 2.0 * time_wait_s as f64).ceil() as u64
}

/// A warning when this machine's connection-tracking table is too small
/// for `rate` new connections/s: when it is full the kernel drops packets,
/// and clients see connect timeouts that are not the cluster's doing.
pub fn conntrack_warning(rate_per_s: f64) -> Option<String> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let max = read("nf_conntrack_max")?;
    let time_wait = read("nf_conntrack_tcp_timeout_time_wait")?;
    warning(rate_per_s, max, time_wait)
}

fn warning(rate_per_s: f64, max: u64, time_wait: u64) -> Option<String> {
    let need = conntrack_entries(rate_per_s, time_wait);
    // Other traffic on the machine needs room too.
    if need <= max / 10 * 8 {
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
