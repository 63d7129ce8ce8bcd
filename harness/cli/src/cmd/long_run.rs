//! Before a long `zdt run`: say how long it will take, and ask. A file with
//! 10,000 variants used to start a multi-day run without a word.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use zdt_scenario::{Provider, Scenario};

/// Runs at least this long get their estimate printed.
pub const ANNOUNCE: Duration = Duration::from_secs(10 * 60);
/// Runs at least this long need a yes: `--yes`, or an answer on a terminal.
pub const CONFIRM: Duration = Duration::from_secs(60 * 60);

/// What a variant costs besides its traffic, measured roughly on the
/// project's 2-core machine: an emulator comes up and its workload is
/// ready in seconds, a kind cluster takes a minute or more to create
/// (reused ones less), an existing cluster only needs the workload.
fn setup(provider: Provider) -> Duration {
    match provider {
        Provider::Emulator => Duration::from_secs(10),
        Provider::Kind => Duration::from_secs(90),
        Provider::Existing => Duration::from_secs(30),
    }
}

/// The whole run's wall time, roughly: per variant its warmup, traffic and
/// setup.
pub fn estimate<'a>(variants: impl IntoIterator<Item = &'a Scenario>) -> Duration {
    variants
        .into_iter()
        .map(|v| v.traffic.warmup.get() + v.traffic.load.duration.get() + setup(v.cluster.provider))
        .sum()
}

/// `1 d 3 h`, `2 h 5 min`, `12 min`.
pub fn human(d: Duration) -> String {
    let m = d.as_secs().div_ceil(60);
    let (days, hours, mins) = (m / 1440, (m / 60) % 24, m % 60);
    match (days, hours) {
        (0, 0) => format!("{mins} min"),
        (0, h) => format!("{h} h {mins} min"),
        (d, h) => format!("{d} d {h} h"),
    }
}

/// Print the estimate of a long run and, for a very long one, get a yes.
/// `Err` carries the message for a refusal (exit 2).
pub fn confirm(variants: usize, estimate: Duration, yes: bool) -> Result<(), String> {
    if estimate < ANNOUNCE {
        return Ok(());
    }
    eprintln!(
        "zdt: {variants} variant(s), estimated wall time ≈ {} (traffic plus setup per variant)",
        human(estimate)
    );
    if estimate < CONFIRM || yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(format!(
            "a run of ≈ {} needs --yes to start without asking (or run fewer variants with --variant NAME)",
            human(estimate)
        ));
    }
    eprint!("zdt: start it? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err("not started".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_count_them() {
        assert_eq!(human(Duration::from_secs(12 * 60)), "12 min");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 5 * 60)), "2 h 5 min");
        assert_eq!(human(Duration::from_secs(27 * 3600)), "1 d 3 h");
    }
}
