//! A container's environment as the kubelet builds it: `env:` values in
//! order, `$(VAR)` references expanded against the variables before them,
//! and the downward API (`valueFrom.fieldRef`) filled from the pod and the
//! node, after the `kubernetes` Service's variables the kubelet puts first
//! (`KUBERNETES_SERVICE_HOST`, …). What the model cannot supply (other
//! Services' variables, ConfigMap/Secret keys, resource fields) is left out
//! and reported, never invented.

use k8s_openapi::api::core::v1::{Container, Pod};

/// What the downward API reads besides the pod object itself.
#[derive(Debug, Clone, Copy)]
pub struct PodPlace<'a> {
    /// The pod's IP as the container must bind it.
    pub pod_ip: &'a str,
    pub node_name: &'a str,
    pub node_ip: Option<&'a str>,
    /// Variables the kubelet sets before the container's own.
    pub preset: &'a [(String, String)],
}

/// The `kubernetes` Service's variables, as the kubelet sets them in every
/// container (docker-links style included) for the API at `api`.
pub fn api_service_env(api: std::net::SocketAddr) -> Vec<(String, String)> {
    let (host, port) = (api.ip().to_string(), api.port());
    let url = format!("tcp://{host}:{port}");
    let prefix = format!("KUBERNETES_PORT_{port}_TCP");
    [
        ("KUBERNETES_SERVICE_HOST".to_owned(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_string()),
        ("KUBERNETES_PORT".to_owned(), url.clone()),
        (prefix.clone(), url),
        (format!("{prefix}_PROTO"), "tcp".to_owned()),
        (format!("{prefix}_PORT"), port.to_string()),
        (format!("{prefix}_ADDR"), host),
    ]
    .into()
}

/// The resolved `env:` of `container`, in order, and one line per variable
/// that could not be resolved (for an event).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    place: PodPlace<'_>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut out: Vec<(String, String)> = place.preset.to_vec();
    let mut skipped = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(expand(v, &out)),
            (None, Some(from)) => match &from.field_ref {
                Some(f) => match field(pod, &f.field_path, place) {
                    Some(v) => Some(v),
                    None => {
                        skipped.push(format!(
                            "env {}: fieldRef `{}` is not modelled; left unset",
                            var.name, f.field_path
                        ));
                        None
                    }
                },
                None => {
                    skipped.push(format!(
                        "env {}: only `value` and `valueFrom.fieldRef` are modelled (ConfigMap, Secret and resource references are not); left unset",
                        var.name
                    ));
                    None
                }
            },
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            out.retain(|(k, _)| *k != var.name);
            out.push((var.name.clone(), v));
        }
    }
    (out, skipped)
}

/// A downward-API field of the pod.
fn field(pod: &Pod, path: &str, place: PodPlace<'_>) -> Option<String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: Option<&std::collections::BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_suffix("']")?
            .strip_prefix("['")?;
        Some(map?.get(key).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => Some(place.node_name.to_owned()),
        "spec.serviceAccountName" => Some(
            pod.spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        "status.podIP" | "status.podIPs" => Some(place.pod_ip.to_owned()),
        "status.hostIP" | "status.hostIPs" => place.node_ip.map(str::to_owned),
        _ => keyed("metadata.labels", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", meta.annotations.as_ref())),
    }
}

/// Kubernetes' `$(VAR)` expansion: a reference to a defined variable is
/// replaced, `$$` escapes a `$`, anything else stays as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "app",
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "LISTEN", "value": "$(POD_IP):8080"},
                    {"name": "PRICE", "value": "$$5 $(UNSET)"},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                ]
            }]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn downward_api_and_references_resolve_in_order() {
        let (pod, c) = pod();
        let place = PodPlace {
            pod_ip: "10.244.1.7",
            node_name: "zdt-worker",
            node_ip: Some("172.18.0.3"),
            preset: &api_service_env("10.96.0.1:443".parse().unwrap()),
        };
        let (env, skipped) = container_env(&pod, &c, place);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_IP"), Some("10.244.1.7"));
        assert_eq!(get("POD_NAME"), Some("web-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("LISTEN"), Some("10.244.1.7:8080"));
        assert_eq!(get("PRICE"), Some("$5 $(UNSET)"));
        assert_eq!(get("NODE"), Some("zdt-worker"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(
            env[0].0, "KUBERNETES_SERVICE_HOST",
            "the kubelet's variables come first"
        );
        assert_eq!(get("SECRET"), None);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains("SECRET"), "{skipped:?}");
    }

    #[test]
    fn expansion_leaves_unknown_and_stray_dollars() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("$(A)-$(B)-$-$$(A)", &env), "1-$(B)-$-$(A)");
        assert_eq!(expand("no refs", &env), "no refs");
        assert_eq!(expand("$(A", &env), "$(A");
    }
}
