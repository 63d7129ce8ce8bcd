//! Node spec changes: cordon, uncordon, taints.

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use super::ChaosError;
use zdt_core::events::{EventSink, Source};

fn nodes(client: &Client) -> Api<Node> {
    Api::all(client.clone())
}

async fn set_unschedulable(
    client: &Client,
    events: &EventSink,
    node: &str,
    unschedulable: bool,
) -> Result<(), ChaosError> {
    let verb = if unschedulable { "cordon" } else { "uncordon" };
    nodes(client)
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "unschedulable": unschedulable } })),
        )
        .await
        .map_err(|e| ChaosError::api(format!("{verb} node {node}"), e))?;
    let reason = if unschedulable {
        "Cordoned"
    } else {
        "Uncordoned"
    };
    events.emit(
        Source::Chaos,
        reason,
        format!("node/{node}"),
        Some(node),
        format!("node {node} {verb}ed"),
    );
    Ok(())
}

/// Mark the node unschedulable (`kubectl cordon`).
pub async fn cordon(client: &Client, events: &EventSink, node: &str) -> Result<(), ChaosError> {
    set_unschedulable(client, events, node, true).await
}

/// Mark the node schedulable again (`kubectl uncordon`).
pub async fn uncordon(client: &Client, events: &EventSink, node: &str) -> Result<(), ChaosError> {
    set_unschedulable(client, events, node, false).await
}

/// Add (or replace) a taint with this key and effect. Returns whether the
/// taint was new, so callers can undo only what they added.
pub async fn taint(
    client: &Client,
    events: &EventSink,
    node: &str,
    key: &str,
    value: Option<&str>,
    effect: &str,
) -> Result<bool, ChaosError> {
    let api = nodes(client);
    let mut taints = current_taints(&api, node).await?;
    let existed = taints.iter().any(|t| t.key == key && t.effect == effect);
    taints.retain(|t| !(t.key == key && t.effect == effect));
    taints.push(Taint {
        key: key.to_owned(),
        value: value.map(str::to_owned),
        effect: effect.to_owned(),
        time_added: None,
    });
    replace_taints(&api, node, &taints).await?;
    events.emit(
        Source::Chaos,
        "Tainted",
        format!("node/{node}"),
        Some(node),
        format!("taint {key}={}:{effect} on {node}", value.unwrap_or("")),
    );
    Ok(!existed)
}

/// Remove every taint with this key (any effect).
pub async fn untaint(
    client: &Client,
    events: &EventSink,
    node: &str,
    key: &str,
) -> Result<(), ChaosError> {
    let api = nodes(client);
    let mut taints = current_taints(&api, node).await?;
    let before = taints.len();
    taints.retain(|t| t.key != key);
    if taints.len() != before {
        replace_taints(&api, node, &taints).await?;
        events.emit(
            Source::Chaos,
            "Untainted",
            format!("node/{node}"),
            Some(node),
            format!("taint {key} removed from {node}"),
        );
    }
    Ok(())
}

async fn current_taints(api: &Api<Node>, node: &str) -> Result<Vec<Taint>, ChaosError> {
    let current = api
        .get(node)
        .await
        .map_err(|e| ChaosError::api(format!("get node {node}"), e))?;
    Ok(current.spec.and_then(|s| s.taints).unwrap_or_default())
}

async fn replace_taints(api: &Api<Node>, node: &str, taints: &[Taint]) -> Result<(), ChaosError> {
    // A merge patch replaces the whole list, which is what we want: the list
    // was read just before, and taints have no strategic merge key in all
    // server versions.
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "taints": taints } })),
    )
    .await
    .map_err(|e| ChaosError::api(format!("set taints on node {node}"), e))?;
    Ok(())
}
