//! An in-process Kubernetes: the API subset zdt and `kubectl` use, served
//! over HTTP on loopback, plus the controllers and data path (kubelet,
//! endpoints, kube-proxy) that decide whether a request during a drain
//! succeeds. See docs/emulator.md for what is and is not modelled.

pub mod cli;
pub mod config;

pub use config::{EmulatorConfig, KubeVersion, KubeVersionError, RuntimeChoice, Timings};
