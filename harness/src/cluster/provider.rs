//! The one shape every provider hands the run: a kube client, the workers,
//! a way to put the workload's Service behind a load balancer, node faults,
//! and teardown. Chaos code never asks which provider it runs on.

use std::net::SocketAddr;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::emulator::{Emulator, EmulatorConfig, NodeFault};
use crate::events::EventSink;
use crate::lb::{Admin, Lb, LbConfig, LbHandle};

/// A provider could not do what the run asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error(transparent)]
    Emulator(#[from] crate::emulator::EmulatorError),
    #[error("load balancer: {0}")]
    Lb(String),
    #[error("{0}")]
    Unsupported(String),
}

/// A cluster the run can drive.
pub enum Cluster {
    Emulator(Box<Emulator>),
}

/// The workload's Service exposed through a load balancer.
pub struct Exposure {
    /// Where traffic goes.
    pub target: SocketAddr,
    pub lb: LbControl,
}

/// How the run talks to the LB in front of the Service.
pub enum LbControl {
    /// zdt's LB model running in this process.
    InProcess(LbHandle),
}

impl LbControl {
    /// The admin operations (remove / drain / restore / wait healthy).
    pub fn admin(&self) -> Admin {
        match self {
            LbControl::InProcess(h) => h.admin(),
        }
    }

    /// Stop the LB and wait for its tasks.
    pub async fn shutdown(self) {
        match self {
            LbControl::InProcess(h) => h.shutdown().await,
        }
    }
}

impl Cluster {
    /// A fresh emulated cluster.
    pub async fn emulator(config: EmulatorConfig, events: EventSink) -> Result<Self, ClusterError> {
        Ok(Cluster::Emulator(Box::new(
            Emulator::start(config, events).await?,
        )))
    }

    /// `emulator`, `kind` or `existing`.
    pub fn provider(&self) -> &'static str {
        match self {
            Cluster::Emulator(_) => "emulator",
        }
    }

    /// A kube client with kube-rs's automatic 429 retry off, so PDB
    /// refusals of evictions reach the drain code (and its events).
    pub fn client(&self) -> Result<Client, ClusterError> {
        match self {
            Cluster::Emulator(e) => {
                let mut config = e.client_config();
                config.default_retry = false;
                Client::try_from(config).map_err(|err| {
                    ClusterError::Unsupported(format!("kube client for {}: {err}", e.url()))
                })
            }
        }
    }

    /// Worker node names in order (`zdt-worker`, `zdt-worker2`, …).
    pub fn workers(&self) -> Vec<String> {
        match self {
            Cluster::Emulator(e) => e
                .nodes()
                .into_iter()
                .filter(|n| !n.control_plane)
                .map(|n| n.name)
                .collect(),
        }
    }

    /// Put `namespace/service` behind a load balancer configured by
    /// `config`, its backends being the workers.
    pub async fn expose(
        &self,
        namespace: &str,
        service: &str,
        config: LbConfig,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<Exposure, ClusterError> {
        match self {
            Cluster::Emulator(e) => {
                let backends = e.lb_backends(namespace, service)?;
                let handle = Lb::start(config, backends, events, cancel)
                    .await
                    .map_err(|e| ClusterError::Lb(e.to_string()))?;
                Ok(Exposure {
                    target: handle.frontend_addr(),
                    lb: LbControl::InProcess(handle),
                })
            }
        }
    }

    /// Stop, pause, kill or resume a node.
    pub async fn node_fault(&self, node: &str, fault: NodeFault) -> Result<(), ClusterError> {
        match self {
            Cluster::Emulator(e) => Ok(e.node_fault(node, fault)?),
        }
    }

    /// Tear down what the provider created; returns a one-line description
    /// of the cluster's final state for the run's log.
    pub async fn teardown(self, _grace: Duration) -> String {
        match self {
            Cluster::Emulator(e) => {
                let state = e.shutdown().await;
                serde_json::to_string(&state).unwrap_or_default()
            }
        }
    }
}
