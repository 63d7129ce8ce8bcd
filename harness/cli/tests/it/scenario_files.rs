//! Every `tests/data/invalid-*.yaml` makes the real `zdt validate` binary
//! exit 2 with the message and position written in the file's first two
//! lines (`# error: …`, `# at: LINE:COLUMN`); every `valid-*.yaml` exits 0.

use std::path::{Path, PathBuf};
use std::process::Command;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenario/tests/data")
}

fn files(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

/// Runs `zdt validate NAME` inside tests/data, as a user would.
fn validate(name: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .current_dir(data())
        .args(["validate", name])
        // Piped output must not depend on the caller's terminal settings.
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_invalid_file_exits_2_with_its_documented_message_and_place() {
    let names = files("invalid-");
    assert!(names.len() >= 30, "only {} invalid examples", names.len());
    let mut failures = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(data().join(name)).unwrap();
        let mut lines = text.lines();
        let message = lines
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# error: MESSAGE`"));
        let at = lines
            .next()
            .and_then(|l| l.strip_prefix("# at: "))
            .unwrap_or_else(|| panic!("{name}: second line must be `# at: LINE:COLUMN`"));
        let (code, stdout, stderr) = validate(name);
        let want_message = format!("× {message}\n");
        let want_place = format!("[{name}:{at}]");
        if code != Some(2) || !stderr.contains(&want_message) || !stderr.contains(&want_place) {
            failures.push(format!(
                "{name}: exit {code:?}, want 2 with\n  {want_message}  at {want_place}\n--- stdout\n{stdout}--- stderr\n{stderr}"
            ));
        }
        // The line the error is about is shown.
        let line_no: usize = at.split(':').next().unwrap().parse().unwrap();
        let shown = format!("{line_no:>2} │ {}", text.lines().nth(line_no - 1).unwrap());
        if !stderr.contains(shown.trim_end()) {
            failures.push(format!(
                "{name}: the offending line is not shown:\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn each_valid_file_exits_0() {
    let names = files("valid-");
    assert!(names.len() >= 2);
    for name in &names {
        let (code, stdout, stderr) = validate(name);
        assert_eq!(code, Some(0), "{name}\n{stdout}{stderr}");
        assert!(stdout.starts_with(&format!("ok {name} (")), "{stdout}");
    }
}

#[test]
fn validate_reports_every_bad_file_and_still_lists_the_good_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .current_dir(data())
        .args([
            "validate",
            "invalid-unknown-field.yaml",
            "valid-minimal.yaml",
            "invalid-node-index.yaml",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout, "ok valid-minimal.yaml (1 variant)\n");
    assert!(stderr.contains("did you mean `rate`?"), "{stderr}");
    assert!(stderr.contains("node index 5"), "{stderr}");
}

#[test]
fn a_missing_file_is_bad_input() {
    let (code, _, stderr) = validate("no-such-file.yaml");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("cannot read scenario file no-such-file.yaml"),
        "{stderr}"
    );
}
