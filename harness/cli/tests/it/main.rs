//! The zdt-cli crate's integration tests, one binary: each module was a
//! test binary of its own.

mod cluster_docker;
mod cluster_existing;
mod docs;
mod drain_scenario;
mod emulator_api_cli;
mod generators;
mod generators_kind;
mod helm_fake;
mod input_checks;
mod kind_cli;
mod kind_e2e;
mod kind_workflow;
mod layers;
mod lb_cli;
mod lb_docker;
mod lb_health;
mod reliability_signals;
mod report_baseline;
mod report_e2e;
mod report_render;
mod run_bad_manifests;
mod run_chaos_failure;
mod run_network;
mod run_progress;
mod run_providers;
mod scenario_files;
mod scenario_seeds;
mod serve;
mod traffic_child;
mod traffic_cli;

/// zdt as a long-lived child of a test: it gets SIGTERM when the thread that
/// spawned it ends, so a test binary killed mid-run leaves no emulator,
/// run or generator behind holding the load lock and its clusters, and zdt
/// tears down what it made (`kill_on_drop` covers only a test that unwinds).
pub(crate) fn zdt_child() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zdt"));
    zdt_core::process::signal_on_parent_death(&mut cmd, libc::SIGTERM);
    cmd
}
