//! A kubelet without processes: pods become Running and Ready after the
//! start delay and go as soon as they are deleted. It lets control-plane
//! behaviour (API, scheduler, rollouts, PDBs, kubectl) be tested quickly
//! and without nginx; the data plane (`emulator::kubelet`) runs real
//! processes, probes and grace periods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::now_rfc3339;
use crate::Timings;

/// What a node agent reports about one pod (same shape as the data
/// plane's `PodStatusUpdate`).
#[derive(Debug, Clone)]
pub struct SimStatus {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub status: Value,
    pub gone: bool,
}

#[derive(Debug)]
pub struct SimKubelet {
    node: String,
    host_ip: String,
    subnet: u8,
    timings: Timings,
    tx: mpsc::UnboundedSender<SimStatus>,
    cancel: CancellationToken,
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    next_ip: u32,
    pods: HashMap<String, String>,
    stopped: bool,
}

impl SimKubelet {
    pub fn new(
        node: &str,
        host_ip: &str,
        subnet: u8,
        timings: Timings,
        tx: mpsc::UnboundedSender<SimStatus>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_owned(),
            host_ip: host_ip.to_owned(),
            subnet,
            timings,
            tx,
            cancel,
            state: Mutex::new(SimState::default()),
        })
    }

    pub fn set_stopped(&self, stopped: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.stopped = stopped;
        }
    }

    /// Called with every change of a pod bound to this node.
    pub fn sync(&self, pod: &Value) {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let key = format!("{ns}/{name}/{uid}");
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.stopped {
            return;
        }
        if pod["metadata"].get("deletionTimestamp").is_some() {
            st.pods.remove(&key);
            let _ = self.tx.send(SimStatus {
                namespace: ns,
                name,
                uid,
                status: pod["status"].clone(),
                gone: true,
            });
            return;
        }
        if st.pods.contains_key(&key) {
            return;
        }
        st.next_ip += 1;
        let ip = format!("10.244.{}.{}", self.subnet, st.next_ip % 250 + 2);
        st.pods.insert(key, ip.clone());
        drop(st);
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({
                    "name": c["name"], "image": c["image"], "imageID": "",
                    "containerID": format!("sim://{name}-{}", c["name"].as_str().unwrap_or("")),
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now_rfc3339()}},
                })
            })
            .collect();
        let tx = self.tx.clone();
        let delay = self.timings.pod_start_delay.get();
        let cancel = self.cancel.clone();
        let host_ip = self.host_ip.clone();
        let _node = self.node.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let now = now_rfc3339();
            let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
            let status = json!({
                "phase": "Running",
                "hostIP": host_ip,
                "hostIPs": [{"ip": host_ip}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
                "containerStatuses": containers,
            });
            let _ = tx.send(SimStatus {
                namespace: ns,
                name,
                uid,
                status,
                gone: false,
            });
        });
    }
}
