//! A node's agents, one component per file: the kubelet ([`kubelet`], or
//! the process-less [`simkubelet`]), the container runtime ([`runtime`],
//! nginx or the built-in [`serve`] server, with the app behaviour of
//! [`app`]; or the user's own process: [`host_command`], [`docker_image`],
//! zdt itself for zdt's image ([`zdt_image`]),
//! with the env of [`env`] and the files of [`serviceaccount`]) and
//! kube-proxy ([`kube_proxy`]). This module is the glue
//! between the store and them; node faults map onto all of them.

pub mod app;
pub mod docker_image;
pub mod env;
pub mod host_command;
pub mod kube_proxy;
pub mod kubelet;
pub mod logs;
pub mod runtime;
pub mod serve;
pub mod serviceaccount;
pub(crate) mod simkubelet;
pub mod zdt_image;

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::NodeFault;
use kube_proxy::KubeProxy;
use kubelet::{Kubelet, KubeletConfig, PodAddrs, PodStatusUpdate};
use runtime::Runtime;
use simkubelet::{SimKubelet, SimStatus};
use zdt_core::events::EventSink;

/// What runs a node's pods.
pub enum PodAgent {
    Sim(Arc<SimKubelet>),
    Real(Box<RealKubelet>),
}

/// The data plane's kubelet plus what it takes to start a new one when a
/// stopped node comes back (a stopped kubelet is gone for good).
pub struct RealKubelet {
    current: Mutex<Kubelet>,
    config: KubeletConfig,
    runtime: Arc<Runtime>,
    pod_addrs: PodAddrs,
    events: EventSink,
    status_tx: mpsc::UnboundedSender<PodStatusUpdate>,
}

/// One node's agents.
pub struct NodeAgent {
    pub name: String,
    pub control_plane: bool,
    pub pods: PodAgent,
    pub proxy: Option<KubeProxy>,
    fault: Mutex<Option<NodeFault>>,
}

impl NodeAgent {
    pub fn simulated(name: &str, control_plane: bool, sim: Arc<SimKubelet>) -> Self {
        Self {
            name: name.to_owned(),
            control_plane,
            pods: PodAgent::Sim(sim),
            proxy: None,
            fault: Mutex::new(None),
        }
    }

    pub fn real(
        control_plane: bool,
        config: KubeletConfig,
        runtime: Arc<Runtime>,
        pod_addrs: PodAddrs,
        events: EventSink,
        status_tx: mpsc::UnboundedSender<PodStatusUpdate>,
        proxy: KubeProxy,
    ) -> Self {
        let kubelet = Kubelet::new(
            config.clone(),
            runtime.clone(),
            pod_addrs.clone(),
            events.clone(),
            status_tx.clone(),
        );
        Self {
            name: config.node_name.clone(),
            control_plane,
            pods: PodAgent::Real(Box::new(RealKubelet {
                current: Mutex::new(kubelet),
                config,
                runtime,
                pod_addrs,
                events,
                status_tx,
            })),
            proxy: Some(proxy),
            fault: Mutex::new(None),
        }
    }

    /// Hand the node's kubelet the current state of a pod bound to it.
    pub fn sync(&self, pod: &Value) {
        match &self.pods {
            PodAgent::Sim(sim) => sim.sync(pod),
            PodAgent::Real(real) => match serde_json::from_value::<Pod>(pod.clone()) {
                Ok(p) => {
                    let kubelet = real.current.lock().map(|k| k.clone());
                    if let Ok(k) = kubelet {
                        k.sync(p);
                    }
                }
                Err(e) => tracing::warn!(
                    "emulator: pod {}/{} is not a valid Pod for the kubelet: {e}",
                    pod["metadata"]["namespace"],
                    pod["metadata"]["name"]
                ),
            },
        }
    }

    /// Apply a fault. Returns true when the node came back from a stop and
    /// its pods must be synced again (a fresh kubelet knows none).
    pub fn fault(&self, fault: NodeFault) -> bool {
        let previous = self
            .fault
            .lock()
            .map(|mut f| std::mem::replace(&mut *f, (fault != NodeFault::Resume).then_some(fault)))
            .unwrap_or(None);
        match &self.pods {
            PodAgent::Sim(sim) => {
                sim.set_stopped(fault != NodeFault::Resume);
                fault == NodeFault::Resume
            }
            PodAgent::Real(real) => {
                let proxy = self.proxy.as_ref();
                match fault {
                    NodeFault::Stop | NodeFault::Kill => {
                        // The node's packets go first, so what its dying
                        // processes send (resets, FINs) reaches nobody.
                        if let Some(p) = proxy {
                            p.set_down(true);
                        }
                        if let Ok(k) = real.current.lock() {
                            k.stop();
                        }
                        false
                    }
                    NodeFault::Pause => {
                        if let Ok(k) = real.current.lock() {
                            k.pause();
                        }
                        if let Some(p) = proxy {
                            p.set_paused(true);
                        }
                        false
                    }
                    NodeFault::Resume => match previous {
                        Some(NodeFault::Pause) => {
                            if let Ok(k) = real.current.lock() {
                                k.resume();
                            }
                            if let Some(p) = proxy {
                                p.set_paused(false);
                            }
                            false
                        }
                        Some(NodeFault::Stop) | Some(NodeFault::Kill) => {
                            // The node boots again: a new kubelet restarts
                            // the pods still bound to it.
                            let fresh = Kubelet::new(
                                real.config.clone(),
                                real.runtime.clone(),
                                real.pod_addrs.clone(),
                                real.events.clone(),
                                real.status_tx.clone(),
                            );
                            if let Ok(mut k) = real.current.lock() {
                                *k = fresh;
                            }
                            if let Some(p) = proxy {
                                p.set_down(false);
                            }
                            true
                        }
                        _ => false,
                    },
                }
            }
        }
    }

    /// Stop the node's kubelet (every container killed).
    pub fn shutdown(&self) {
        if let PodAgent::Real(real) = &self.pods {
            if let Ok(k) = real.current.lock() {
                k.stop();
            }
        }
    }
}

/// Forward the data plane's reports into the emulator's status channel.
pub async fn forward_statuses(
    mut rx: mpsc::UnboundedReceiver<PodStatusUpdate>,
    tx: mpsc::UnboundedSender<SimStatus>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let u = tokio::select! {
            _ = cancel.cancelled() => return,
            u = rx.recv() => match u { Some(u) => u, None => return },
        };
        let status = serde_json::to_value(&u.status).unwrap_or(Value::Null);
        let sent = tx.send(SimStatus {
            namespace: u.namespace,
            name: u.name,
            uid: u.uid.unwrap_or_default(),
            status,
            gone: u.gone,
        });
        if sent.is_err() {
            return;
        }
    }
}
