//! The existing provider: a cluster from a kubeconfig context — where users
//! outgrow one machine. Traffic goes through the cloud's real load balancer
//! (the Service's `status.loadBalancer.ingress`), and nothing disruptive
//! (drain, node faults, rollouts, deletes) runs unless the context was named
//! on the command line *and* the scenario allows it: a scenario file alone
//! must never be able to drain whatever cluster the kubeconfig happens to
//! point at.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Errors of the existing provider; each says how to fix it.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ExistingError {
    /// A disruptive step on a context that was not named on the command line.
    #[error("refusing disruptive steps on context {actual:?}: it was not named on the command line (a scenario file or the kubeconfig's current context is not enough)")]
    #[diagnostic(
        code(zdt::existing::context_not_named),
        help("name it explicitly: `zdt run FILE --context {actual}`, and list it in the scenario: `cluster: {{ allowContexts: [\"{actual}\"] }}`")
    )]
    ContextNotNamed { actual: String },

    /// The named context is not in the scenario's allow-list.
    #[error("refusing disruptive steps on context {named:?}: the scenario's cluster.allowContexts {allowed} does not list it")]
    #[diagnostic(
        code(zdt::existing::context_not_allowed),
        help("if this cluster may be drained and disrupted, add it to the scenario: `cluster: {{ allowContexts: [\"{named}\"] }}`")
    )]
    ContextNotAllowed { named: String, allowed: String },

    /// The client talks to another context than the one named.
    #[error("refusing disruptive steps: --context {named:?} was named but the client uses context {actual:?}")]
    #[diagnostic(
        code(zdt::existing::context_mismatch),
        help("this is a bug in how the client was built; run with `--context {named}` only")
    )]
    ContextMismatch { named: String, actual: String },

    /// The kubeconfig could not be read or has no usable context.
    #[error("kubeconfig {path}: {message}")]
    #[diagnostic(
        code(zdt::existing::kubeconfig),
        help("`kubectl config get-contexts` lists the contexts; pass one with `--context NAME` (KUBECONFIG selects the file)")
    )]
    Kubeconfig { path: String, message: String },

    /// Reading the Service failed.
    #[error("cannot read Service {namespace}/{name}: {source}")]
    #[diagnostic(code(zdt::existing::service))]
    Service {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    /// The cloud did not give the Service an address in time.
    #[error("Service {namespace}/{name} got no status.loadBalancer.ingress within {waited:?}")]
    #[diagnostic(
        code(zdt::existing::no_ingress),
        help("check that it is `type: LoadBalancer` and look at `kubectl -n {namespace} describe service {name}` for the cloud controller's events (quota, subnet, annotations)")
    )]
    NoIngress {
        namespace: String,
        name: String,
        waited: Duration,
    },
}

pub(crate) type Result<T, E = ExistingError> = std::result::Result<T, E>;

/// Refuse any disruptive step unless the context was named on the command
/// line (`--context NAME`), is the context the client uses, and is in the
/// scenario's allow-list (`cluster.allowContexts`).
pub fn check_disruption_allowed(
    named_context: Option<&str>,
    actual_context: &str,
    allow_list: &[String],
) -> Result<()> {
    let Some(named) = named_context else {
        return Err(ExistingError::ContextNotNamed {
            actual: actual_context.to_owned(),
        });
    };
    if named != actual_context {
        return Err(ExistingError::ContextMismatch {
            named: named.to_owned(),
            actual: actual_context.to_owned(),
        });
    }
    if !allow_list.iter().any(|a| a == named) {
        return Err(ExistingError::ContextNotAllowed {
            named: named.to_owned(),
            allowed: format!("{allow_list:?}"),
        });
    }
    Ok(())
}

/// A cluster reached through a kubeconfig context.
#[derive(Clone)]
pub struct ExistingCluster {
    client: kube::Client,
    context: String,
    named_context: Option<String>,
    kubeconfig: Option<PathBuf>,
}

impl std::fmt::Debug for ExistingCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExistingCluster")
            .field("context", &self.context)
            .field("named_context", &self.named_context)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ExistingCluster {
    /// Load `kubeconfig` (or the default: `$KUBECONFIG`, `~/.kube/config`)
    /// with the context named on the command line, or its current context.
    pub async fn connect(kubeconfig: Option<&Path>, named_context: Option<&str>) -> Result<Self> {
        Self::connect_for_run(kubeconfig, named_context, named_context).await
    }

    /// [`connect`](Self::connect) for `zdt run`: the client uses `context`
    /// (the scenario's `cluster.context`, or `--context`, else the current
    /// one), while only `named_on_cli` counts as named for the safety check.
    /// kube-rs's automatic 429 retry is off, so PDB refusals of evictions
    /// reach the drain code as on the other providers.
    pub(crate) async fn connect_for_run(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        named_on_cli: Option<&str>,
    ) -> Result<Self> {
        let (kc, context) = load_kubeconfig(kubeconfig, context)?;
        let err = |message: String| ExistingError::Kubeconfig {
            path: shown(kubeconfig),
            message,
        };
        let options = KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| err(e.to_string()))?;
        config.default_retry = false;
        let client = kube::Client::try_from(config).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            client,
            context,
            named_context: named_on_cli.map(str::to_owned),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
        })
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The context the client uses.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// [`delete_all`](CreatedObjects::delete_all) from a synchronous
    /// context — a panic unwinding past the run's teardown — on a thread
    /// with its own runtime and a fresh client of the same context (the
    /// run's client belongs to the runtime being unwound). Blocks until done.
    pub(crate) fn delete_blocking(&self, created: &CreatedObjects) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let (kubeconfig, context) = (self.kubeconfig.clone(), self.context.clone());
        std::thread::scope(|scope| {
            scope.spawn(|| {
                rt.block_on(async {
                    match Self::connect_for_run(kubeconfig.as_deref(), Some(&context), None).await
                    {
                        Ok(c) => {
                            let done = created.delete_all(&c.client()).await;
                            tracing::warn!("panic: context {context:?}: {done}");
                        }
                        Err(e) => tracing::warn!(
                            "panic: cannot delete what zdt created in context {context:?} ({e}): {:?}",
                            created.created_names()
                        ),
                    }
                })
            });
        });
    }

    /// [`check_disruption_allowed`] for this cluster.
    pub fn check_disruption_allowed(&self, allow_list: &[String]) -> Result<()> {
        check_disruption_allowed(self.named_context.as_deref(), &self.context, allow_list)
    }
}

fn shown(kubeconfig: Option<&Path>) -> String {
    kubeconfig
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "$KUBECONFIG or ~/.kube/config".to_owned())
}

/// The kubeconfig and the context to use: `context`, else its current one.
fn load_kubeconfig(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(Kubeconfig, String)> {
    let err = |message: String| ExistingError::Kubeconfig {
        path: shown(kubeconfig),
        message,
    };
    let kc = match kubeconfig {
        Some(p) => Kubeconfig::read_from(p),
        None => Kubeconfig::read(),
    }
    .map_err(|e| err(e.to_string()))?;
    let context = match context {
        Some(c) => c.to_owned(),
        None => kc
            .current_context
            .clone()
            .ok_or_else(|| err("no current-context and no --context given".into()))?,
    };
    if !kc.contexts.iter().any(|c| c.name == context) {
        let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(err(format!("no context {context:?} (contexts: {known:?})")));
    }
    Ok((kc, context))
}

/// What a run applied to an existing cluster, so teardown deletes exactly
/// that: the user's cluster must be left as it was found.
///
/// Told apart by a record, not a label: before each object is applied, zdt
/// reads it; one the API server does not have yet is recorded as *created*
/// (before the apply is sent, so a run interrupted mid-request still deletes
/// it), one it has is recorded as *pre-existing* and is never deleted — even
/// though the apply updated it (its changes stay; that is the user's object).
/// A label set on apply could not tell the two apart, because applying also
/// labels an object that was already there. An object someone else creates
/// between zdt's read and its apply (milliseconds) would count as zdt's.
/// The workload's namespace counts the same way: deleted only if zdt
/// created it, and last.
#[derive(Debug, Default)]
pub struct CreatedObjects {
    inner: std::sync::Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    created: Vec<CreatedObject>,
    pre_existing: Vec<String>,
}

/// One object zdt created: where its API is, and how messages name it
/// (`Deployment web/nginx`).
#[derive(Debug, Clone)]
pub struct CreatedObject {
    pub resource: kube::api::ApiResource,
    pub namespace: Option<String>,
    pub name: String,
    pub described: String,
}

impl CreatedObjects {
    /// Record an object zdt is about to create.
    pub fn created(&self, object: CreatedObject) {
        self.lock().created.push(object);
    }

    /// Record an object that was there before the run (`described` names it).
    pub fn pre_existing(&self, described: String) {
        self.lock().pre_existing.push(described);
    }

    /// Whether `described` is recorded already (a manifest's Namespace that
    /// zdt just created for the workload, or an object listed twice).
    pub fn knows(&self, described: &str) -> bool {
        let r = self.lock();
        r.created.iter().any(|o| o.described == described)
            || r.pre_existing.iter().any(|d| d == described)
    }

    /// The objects zdt created, as messages name them, in creation order.
    pub(crate) fn created_names(&self) -> Vec<String> {
        self.lock()
            .created
            .iter()
            .map(|o| o.described.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delete what zdt created, newest first (so the namespace, created
    /// first, goes last), with background propagation: the cluster's garbage
    /// collector removes the ReplicaSets and pods. Returns a one-line account
    /// for the run's log; an object that is already gone counts as deleted.
    pub(crate) async fn delete_all(&self, client: &kube::Client) -> String {
        use kube::api::{Api, DeleteParams, DynamicObject};
        let (created, kept) = {
            let mut r = self.lock();
            (
                std::mem::take(&mut r.created),
                std::mem::take(&mut r.pre_existing),
            )
        };
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for o in created.iter().rev() {
            let api: Api<DynamicObject> = match &o.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &o.resource),
                None => Api::all_with(client.clone(), &o.resource),
            };
            match api.delete(&o.name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(o.described.clone()),
                Err(kube::Error::Api(s)) if s.code == 404 => deleted.push(o.described.clone()),
                Err(e) => failed.push(format!("{} ({e})", o.described)),
            }
        }
        let mut text = format!(
            "deleted the {} object(s) zdt created: [{}]",
            deleted.len(),
            deleted.join(", ")
        );
        if !kept.is_empty() {
            text.push_str(&format!(
                "; left the {} that existed before the run: [{}]",
                kept.len(),
                kept.join(", ")
            ));
        }
        if !failed.is_empty() {
            text.push_str(&format!(
                "; NOT deleted, delete them by hand (`kubectl delete`): [{}]",
                failed.join(", ")
            ));
        }
        text
    }
}

/// The chaos steps that change the cluster (everything but waits; the LB
/// steps act on zdt's LB, which an existing cluster does not have), as
/// `name (action)` for messages.
pub fn disruptive_steps(steps: &[zdt_scenario::ChaosStep]) -> Vec<String> {
    use zdt_scenario::Action;
    steps
        .iter()
        .filter(|s| !matches!(s.action, Action::Wait(_)) && !s.action.needs_lb_admin())
        .map(|s| format!("{} ({})", s.name, s.action.kind()))
        .collect()
}

/// The safety check before a run on an existing cluster touches anything:
/// when the scenario has disruptive steps, the context the run would use
/// (`context`, else the kubeconfig's current one) must be the one named on
/// the command line and be in `allow_list`. Reads only the kubeconfig.
pub fn preflight(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    named_on_cli: Option<&str>,
    allow_list: &[String],
    steps: &[zdt_scenario::ChaosStep],
) -> Result<()> {
    if disruptive_steps(steps).is_empty() {
        return Ok(());
    }
    let (_, actual) = load_kubeconfig(kubeconfig, context)?;
    check_disruption_allowed(named_on_cli, &actual, allow_list)
}

/// One `status.loadBalancer.ingress` entry: clouds give an IP (Azure, GCP)
/// or a hostname (AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressAddr {
    Ip(IpAddr),
    Hostname(String),
}

impl std::fmt::Display for IngressAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngressAddr::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            IngressAddr::Ip(ip) => write!(f, "{ip}"),
            IngressAddr::Hostname(h) => f.write_str(h),
        }
    }
}

/// The Service's ingress addresses, if the cloud has assigned any.
pub fn ingress_of(service: &Service) -> Vec<IngressAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| {
            list.iter()
                .filter_map(|i| {
                    i.ip.as_deref()
                        .and_then(|ip| ip.parse().ok())
                        .map(IngressAddr::Ip)
                        .or_else(|| i.hostname.clone().map(IngressAddr::Hostname))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait until the Service has a `status.loadBalancer.ingress` address (cloud
/// LBs take from seconds to minutes), polling every `poll`, at most
/// `timeout`. Returns the Service as last read, and its addresses.
pub async fn wait_load_balancer_ingress(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<(Service, Vec<IngressAddr>)> {
    let api: kube::Api<Service> = kube::Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    loop {
        let svc = api
            .get(name)
            .await
            .map_err(|source| ExistingError::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })?;
        let addrs = ingress_of(&svc);
        if !addrs.is_empty() {
            return Ok((svc, addrs));
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(ExistingError::NoIngress {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                waited,
            });
        }
        tokio::time::sleep(poll.min(timeout - waited)).await;
    }
}

/// The traffic target `host:port` for a Service behind the cloud's LB: the
/// first ingress address and the Service's first port (or the named one).
pub async fn load_balancer_target(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    port_name: Option<&str>,
    timeout: Duration,
) -> Result<String> {
    let (svc, addrs) =
        wait_load_balancer_ingress(client, namespace, name, Duration::from_secs(2), timeout)
            .await?;
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| port_name.is_none_or(|n| p.name.as_deref() == Some(n)))
        .map(|p| p.port)
        .unwrap_or(80);
    Ok(format!("{}:{port}", addrs[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allowed_only_when_named_matching_and_listed() {
        check_disruption_allowed(Some("staging"), "staging", &allow(&["staging"])).unwrap();
        assert!(matches!(
            check_disruption_allowed(None, "prod", &allow(&["prod"])),
            Err(ExistingError::ContextNotNamed { .. })
        ));
        assert!(matches!(
            check_disruption_allowed(Some("prod"), "prod", &allow(&["staging"])),
            Err(ExistingError::ContextNotAllowed { .. })
        ));
        assert!(matches!(
            check_disruption_allowed(Some("staging"), "prod", &allow(&["staging", "prod"])),
            Err(ExistingError::ContextMismatch { .. })
        ));
        assert!(check_disruption_allowed(Some("x"), "x", &[]).is_err());
    }

    #[test]
    fn ingress_prefers_ip_and_keeps_hostnames() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "status": {"loadBalancer": {"ingress": [
                {"ip": "203.0.113.10"},
                {"hostname": "a1b2.elb.amazonaws.com"}
            ]}}
        }))
        .unwrap();
        assert_eq!(
            ingress_of(&svc),
            vec![
                IngressAddr::Ip("203.0.113.10".parse().unwrap()),
                IngressAddr::Hostname("a1b2.elb.amazonaws.com".into())
            ]
        );
        assert!(ingress_of(&Service::default()).is_empty());
        assert_eq!(
            IngressAddr::Ip("2001:db8::1".parse().unwrap()).to_string(),
            "[2001:db8::1]"
        );
    }
}
