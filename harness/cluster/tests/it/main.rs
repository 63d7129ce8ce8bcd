//! The zdt-cluster crate's integration tests, one binary: each module was a
//! test binary of its own.

mod emulator_api_glue;
mod emulator_kubectl;
mod emulator_node_dataplane;
mod emulator_node_namespaces;
mod emulator_node_proxy;
mod emulator_packet_rules;
mod emulator_pod_sandboxes;
mod fuzz_apis;
mod kind_config;
mod kind_ready;
mod workload_sources;
