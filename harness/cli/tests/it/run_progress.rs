//! `zdt run`'s live progress through the binary: under a pseudo-terminal
//! (`script`) it shows each variant's phases, the chaos steps and an error
//! window as they happen; with stderr in a file it writes plain timestamped
//! lines at a low rate and no escape byte, `-v` logs included, while two
//! variants run at once (`--jobs 2`).

use std::path::{Path, PathBuf};

use crate::drain_scenario::DrainScenario;
use std::process::{Command, Stdio};

/// The shared drain, long enough for an error window to open and close.
fn scenario(dir: &Path) -> PathBuf {
    DrainScenario {
        name: "progress",
        description: "A drain under traffic, for the progress test",
        duration: "14s",
        timeout: "1s",
        drain_at: "3s",
    }
    .write(dir)
}

fn has_script() -> bool {
    Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn on_a_terminal_a_run_shows_its_phases_chaos_steps_and_error_windows() {
    if !has_script() {
        eprintln!("skipped: `script` (util-linux) is not installed, so no pseudo-terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    let command = format!(
        "{} run {} --variant local --out {}",
        env!("CARGO_BIN_EXE_zdt"),
        file.display(),
        out.display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it
    // wrote (stdout and stderr alike) to its own stdout.
    let run = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{seen}");
    for phase in ["workload", "LB ready", "due "] {
        assert!(
            seen.contains(phase),
            "no `{phase}` on the terminal:\n{seen}"
        );
    }
    assert!(
        seen.contains("chaos: step 1 `drain` (drain) on"),
        "the drain step as it fired:\n{seen}"
    );
    assert!(
        seen.contains("error window opened"),
        "the drain's error window as it opened:\n{seen}"
    );
    assert!(seen.contains("PASS"), "{seen}");
    // The bars move the cursor, but NO_COLOR means no colour.
    assert!(
        !seen.contains("\x1b[32m") && !seen.contains("\x1b[1;32m"),
        "{seen:?}"
    );
}

#[test]
fn off_a_terminal_a_run_prints_plain_lines_at_a_low_rate_without_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    let log = dir.path().join("stderr.log");
    let run = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("-v")
        .arg("run")
        .arg(&file)
        .args(["--jobs", "2", "--out"])
        .arg(&out)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    let stderr = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{text}");
    assert!(
        !stderr.contains(&0x1b) && !run.stdout.contains(&0x1b),
        "escape bytes off a terminal:\n{text:?}"
    );
    assert!(text.contains("run phase:"), "-v logs are there:\n{text}");
    for variant in ["progress/local", "progress/cluster-policy"] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!(" {variant}: ")))
            .collect();
        for phase in ["cluster", "workload", "LB ready", "traffic", "teardown"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.ends_with(&format!("{variant}: {phase}"))),
                "no `{phase}` line for {variant}:\n{text}"
            );
        }
        assert!(
            lines.iter().any(|l| l.contains("chaos: step 1 `drain`")),
            "{text}"
        );
        // 14 s of traffic, a progress line every 10 s.
        let progress = lines.iter().filter(|l| l.contains("requests done")).count();
        assert!(
            (1..=2).contains(&progress),
            "{progress} progress lines for {variant}:\n{text}"
        );
        // Timestamped: `HH:MM:SSZ variant: …`.
        assert!(
            lines
                .iter()
                .all(|l| l.as_bytes().get(8) == Some(&b'Z') && l.as_bytes()[2] == b':'),
            "{text}"
        );
    }
    assert!(
        text.contains("progress/local: t+") && text.contains("error window opened"),
        "{text}"
    );
    // Each variant's line as it ends, then side by side at the end, with the
    // time each spent outside traffic: the same lines `zdt report` prints.
    let (as_they_end, at_the_end) = stdout
        .split_once("zdt: progress\n")
        .expect("the final list");
    let lines = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines()
            .filter(|l| l.contains("outside traffic"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(lines(at_the_end).len(), 2, "{stdout}");
    assert_eq!(lines(as_they_end), lines(at_the_end), "{stdout}");
}
