//! The pod subresources a real API server relays to the pod's kubelet:
//! `log` and `portforward` are served (the pods are real processes), `exec`
//! and `attach` (and so `kubectl cp`) are not: there is no container
//! filesystem or process namespace to enter, and saying so beats the 405 a
//! client would otherwise see.

use http::{Method, Response};

use super::{logs, portforward, ApiError, ApiState, Body, Query};
use crate::node::kubelet::PodAddrs;
use crate::node::logs::PodLogs;
use crate::Net;

/// What the API server reaches a pod's container through, when the pods are
/// processes (not in a simulated emulator).
#[derive(Clone)]
pub struct PodAccess {
    pub logs: PodLogs,
    pub addrs: PodAddrs,
    pub net: Net,
}

impl std::fmt::Debug for PodAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodAccess")
            .field("private_network", &self.net.is_private())
            .finish_non_exhaustive()
    }
}

/// Is `sub` of a pod one of these?
pub(super) fn handles(sub: &str) -> bool {
    matches!(sub, "log" | "portforward" | "exec" | "attach")
}

pub(super) fn serve(
    shared: &ApiState,
    req: super::ApiRequest,
    query: &Query,
    namespace: &str,
    name: &str,
    sub: &str,
) -> Result<Response<Body>, ApiError> {
    let access = shared.ctx.pods.as_ref();
    match (sub, req.method()) {
        ("log", &Method::GET) => {
            logs::pod_log(&shared.store, access, &shared.cancel, namespace, name, query)
        }
        ("portforward", &Method::GET | &Method::POST) => portforward::serve(
            &shared.store,
            access,
            &shared.cancel,
            namespace,
            name,
            req,
        ),
        ("exec" | "attach", &Method::GET | &Method::POST) => Err(ApiError::new(
            501,
            "NotImplemented",
            format!(
                "the zdt emulator does not support pods/{sub} (nor `kubectl cp`, which uses exec): its containers are host processes with no filesystem or process namespace of their own to enter. Use `kubectl logs` to see what pod {namespace}/{name} wrote and `kubectl port-forward` to reach its ports; for a shell, run the program yourself or use a kind cluster"
            ),
        )),
        (_, method) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("pods/{sub} does not allow {method}"),
        )),
    }
}
