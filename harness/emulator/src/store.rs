//! The emulator's etcd + registry: every object as JSON, keyed by
//! resource/namespace/name, one global resourceVersion counter, and a
//! bounded history of changes so a watch can start from any recent
//! resourceVersion (older ones get 410 Gone, as from a real API server).
//!
//! All mutations go through [`Store::write`], which runs a closure on the
//! locked state: the API server and the controllers compose several reads
//! and writes into one atomic step (an eviction checks the PDB, decrements
//! it and deletes the pod without another writer in between).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};
use tokio::sync::watch;

/// How many changes a watch may lag behind before it gets 410 Gone.
const HISTORY: usize = 20_000;

/// The kinds of object the emulator stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Namespaces,
    Nodes,
    Pods,
    Services,
    EndpointSlices,
    Deployments,
    ReplicaSets,
    /// batch/v1 Job
    Jobs,
    PodDisruptionBudgets,
    /// core/v1 Event
    CoreEvents,
    /// Stored and served, not interpreted (manifests mount nginx configs).
    ConfigMaps,
    /// events.k8s.io/v1 Event
    Events,
    /// Stored and served, not enforced: the API checks no caller (zdt's
    /// generator Job on a real cluster brings its own, which the emulator
    /// must accept when a kind cluster is emulated in tests).
    ServiceAccounts,
    /// rbac.authorization.k8s.io/v1 Role, stored, not enforced.
    Roles,
    /// rbac.authorization.k8s.io/v1 RoleBinding, stored, not enforced.
    RoleBindings,
}

/// What the API serves about a resource (discovery, paths, kinds).
#[derive(Debug)]
pub struct ResourceInfo {
    pub resource: Resource,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource whose writes only touch `.status`.
    pub status: bool,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        resource: Resource::Namespaces,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        status: true,
    },
    ResourceInfo {
        resource: Resource::Nodes,
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        status: true,
    },
    ResourceInfo {
        resource: Resource::Pods,
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        status: true,
    },
    ResourceInfo {
        resource: Resource::Services,
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        status: true,
    },
    ResourceInfo {
        resource: Resource::CoreEvents,
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
    },
    ResourceInfo {
        resource: Resource::ConfigMaps,
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        status: false,
    },
    ResourceInfo {
        resource: Resource::EndpointSlices,
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
    },
    ResourceInfo {
        resource: Resource::Deployments,
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        status: true,
    },
    ResourceInfo {
        resource: Resource::ReplicaSets,
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        status: true,
    },
    ResourceInfo {
        resource: Resource::Jobs,
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        status: true,
    },
    ResourceInfo {
        resource: Resource::PodDisruptionBudgets,
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        status: true,
    },
    ResourceInfo {
        resource: Resource::Events,
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
    },
    ResourceInfo {
        resource: Resource::ServiceAccounts,
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        status: false,
    },
    ResourceInfo {
        resource: Resource::Roles,
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
    },
    ResourceInfo {
        resource: Resource::RoleBindings,
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
    },
];

impl Resource {
    pub fn info(self) -> &'static ResourceInfo {
        RESOURCES
            .iter()
            .find(|r| r.resource == self)
            .expect("every Resource has a RESOURCES row")
    }

    /// The resource of a manifest's `apiVersion` and `kind`.
    pub fn from_kind(api_version: &str, kind: &str) -> Option<Resource> {
        RESOURCES
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .map(|r| r.resource)
    }

    /// The resource served at `group/version` under `plural`.
    pub fn lookup(group: &str, version: &str, plural: &str) -> Option<Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .map(|r| r.resource)
    }
}

/// What a change did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One entry of the change history.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub resource: Resource,
    pub namespace: String,
    pub kind: ChangeType,
    pub object: Arc<Value>,
    /// The object before the change (for watches whose selector the object
    /// moved into or out of).
    pub prev: Option<Arc<Value>>,
}

/// Why a store operation was refused; the API maps these to Status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again")]
    Conflict { plural: String, name: String },
    #[error("{0}")]
    Invalid(String),
    #[error("too old resource version: {asked} ({oldest})")]
    Gone { asked: u64, oldest: u64 },
}

type Key = (Resource, String, String);

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`; for pods `None` means the pod's
    /// terminationGracePeriodSeconds (default 30).
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `propagationPolicy`; `None` is the kind's default.
    pub propagation: Option<Propagation>,
}

/// What a delete does to the object's dependents (ownerReferences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their reference to the object and stay.
    Orphan,
    /// The object goes now; the garbage collector takes the dependents.
    Background,
    /// The object stays (finalizer `foregroundDeletion`) until the garbage
    /// collector has deleted its dependents.
    Foreground,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Orphan" => Some(Propagation::Orphan),
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            _ => None,
        }
    }
}

/// The finalizer of a foreground deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The locked state; [`Store::write`] and [`Store::read`] lend it out.
#[derive(Debug)]
pub struct State {
    history_cap: usize,
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    uid_counter: u64,
    name_counter: u64,
}

impl State {
    /// The objects and counters, without the watch history a write never
    /// reads.
    fn dry_copy(&self) -> State {
        State {
            history_cap: self.history_cap,
            rv: self.rv,
            objects: self.objects.clone(),
            history: VecDeque::new(),
            uid_counter: self.uid_counter,
            name_counter: self.name_counter,
        }
    }
}

/// The object store; shared as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self::with_history(HISTORY)
    }

    /// A store keeping the last `cap` changes for watches.
    pub fn with_history(cap: usize) -> Self {
        let (changed, _) = watch::channel(1);
        Self {
            state: Mutex::new(State {
                history_cap: cap.max(1),
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                uid_counter: 0,
                name_counter: 0,
            }),
            changed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in a closure; keep
        // serving rather than poisoning the whole emulator.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the locked state; watchers are woken afterwards if it
    /// changed anything.
    pub fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (out, rv, before) = {
            let mut st = self.lock();
            let before = st.rv;
            let out = f(&mut st);
            (out, st.rv, before)
        };
        if rv != before {
            self.changed.send_replace(rv);
        }
        out
    }

    /// Run `f` on a copy of the state that is then dropped: a server-side
    /// dry run. It answers as the write would (defaults, generated names,
    /// conflicts, validation errors), but nothing is stored, no
    /// resourceVersion moves and no watcher or controller wakes.
    pub fn write_dry<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut copy = self.lock().dry_copy();
        f(&mut copy)
    }

    /// Run `f` on the locked state without changing it.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Wake every subscriber without a change (controllers that also read
    /// state kept outside the store, such as node heartbeats). A write that
    /// changes nothing does not wake anyone.
    pub fn wake(&self) {
        self.changed.send_modify(|_| {});
    }

    /// Wakes on every change; the value is the newest resourceVersion.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.read(|st| st.get(resource, namespace, name).cloned())
    }

    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.read(|st| st.list(resource, namespace).into_iter().cloned().collect())
    }

    pub fn resource_version(&self) -> u64 {
        self.read(|st| st.rv)
    }

    pub fn create(&self, resource: Resource, obj: Value) -> Result<Value, StoreError> {
        self.write(|st| st.create(resource, obj))
    }

    pub fn update(&self, resource: Resource, obj: Value) -> Result<Value, StoreError> {
        self.write(|st| st.update(resource, obj))
    }

    /// Changes of `resource` after `rv` (in order), or Gone when the
    /// history no longer reaches back that far.
    pub fn changes_since(&self, resource: Resource, rv: u64) -> Result<Vec<Change>, StoreError> {
        self.read(|st| st.changes_since(resource, rv))
    }
}

/// `metadata.*` accessors on a JSON object.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn namespace_of(obj: &Value) -> &str {
    meta_str(obj, "namespace").unwrap_or("")
}

/// RFC 3339 with second precision, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Timestamps with a fraction (MicroTime, used by events) are accepted too.
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl State {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(resource, namespace.to_owned(), name.to_owned()))
    }

    /// Objects of `resource`, in one namespace or all; sorted by
    /// namespace then name (what kubectl shows).
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<&Value> {
        let lo = (resource, namespace.unwrap_or("").to_owned(), String::new());
        self.objects
            .range(lo..)
            .take_while(|((r, ns, _), _)| *r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v)
            .collect()
    }

    /// The object whose uid is `uid`, if any (ownerReference resolution).
    pub fn uid_exists(&self, resource: Resource, namespace: &str, uid: &str) -> bool {
        self.list(resource, Some(namespace))
            .iter()
            .any(|o| meta_str(o, "uid") == Some(uid))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, resource: Resource, kind: ChangeType, obj: &Value, prev: Option<Value>) {
        let change = Change {
            rv: self.rv,
            resource,
            namespace: namespace_of(obj).to_owned(),
            kind,
            object: Arc::new(obj.clone()),
            prev: prev.map(Arc::new),
        };
        self.history.push_back(change);
        while self.history.len() > self.history_cap {
            self.history.pop_front();
        }
    }

    fn random_suffix(&mut self) -> String {
        // Unique and kube-looking; not random so runs are reproducible.
        self.name_counter += 1;
        let mut n = self
            .name_counter
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
        (0..5)
            .map(|_| {
                let c = NAME_CHARS[(n % NAME_CHARS.len() as u64) as usize];
                n /= NAME_CHARS.len() as u64;
                c as char
            })
            .collect()
    }

    fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        uid_of(self.uid_counter)
    }

    /// The uid the next [`State::create`] assigns: admission that derives
    /// fields from it (a Job's selector) runs in the same write, before it.
    pub fn next_uid(&self) -> String {
        uid_of(self.uid_counter + 1)
    }
}

fn uid_of(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (n.wrapping_mul(2654435761)) & 0xffff_ffff,
        (n >> 3) & 0xffff,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n
    )
}

impl State {
    /// Create: fills uid, creationTimestamp, resourceVersion, generation,
    /// a name from generateName; sets apiVersion/kind.
    pub fn create(&mut self, resource: Resource, mut obj: Value) -> Result<Value, StoreError> {
        let info = resource.info();
        if !obj.is_object() {
            return Err(StoreError::Invalid(format!(
                "{} must be a JSON object",
                info.kind
            )));
        }
        obj["apiVersion"] = json!(info.api_version());
        obj["kind"] = json!(info.kind);
        let namespace = if info.namespaced {
            let ns = meta_str(&obj, "namespace").unwrap_or("default").to_owned();
            meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            ns
        } else {
            meta_mut(&mut obj).remove("namespace");
            String::new()
        };
        let name = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match meta_str(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let prefix = prefix.to_owned();
                    loop {
                        let candidate = format!("{prefix}{}", self.random_suffix());
                        if self.get(resource, &namespace, &candidate).is_none() {
                            break candidate;
                        }
                    }
                }
                _ => {
                    return Err(StoreError::Invalid(format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        info.kind
                    )))
                }
            },
        };
        validate_name(info.kind, &name)?;
        let key = (resource, namespace, name.clone());
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                kind: kind_for_error(info),
                name,
            });
        }
        let rv = self.next_rv();
        let uid = self.new_uid();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(uid));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        self.objects.insert(key, obj.clone());
        self.record(resource, ChangeType::Added, &obj, None);
        Ok(obj)
    }

    /// Replace an existing object. A `metadata.resourceVersion` in `obj`
    /// must match (409 otherwise); none means "last write wins". uid,
    /// creationTimestamp and deletion fields are kept; `generation` goes up
    /// when `spec` changed. A write that changes nothing is not a change
    /// (no new resourceVersion, no watch event), as in Kubernetes.
    pub fn update(&mut self, resource: Resource, mut obj: Value) -> Result<Value, StoreError> {
        let info = resource.info();
        if !obj.is_object() {
            return Err(StoreError::Invalid(format!(
                "{} must be a JSON object",
                info.kind
            )));
        }
        let namespace = if info.namespaced {
            meta_str(&obj, "namespace").unwrap_or("default").to_owned()
        } else {
            String::new()
        };
        let name = meta_str(&obj, "name").unwrap_or("").to_owned();
        let key = (resource, namespace.clone(), name.clone());
        let Some(old) = self.objects.get(&key) else {
            return Err(StoreError::NotFound {
                kind: kind_for_error(info),
                name,
            });
        };
        if let Some(rv) = meta_str(&obj, "resourceVersion") {
            if !rv.is_empty() && Some(rv) != meta_str(old, "resourceVersion") {
                return Err(StoreError::Conflict {
                    plural: plural_for_error(info),
                    name,
                });
            }
        }
        let old = old.clone();
        obj["apiVersion"] = json!(info.api_version());
        obj["kind"] = json!(info.kind);
        {
            let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
            let m = meta_mut(&mut obj);
            if info.namespaced {
                m.insert("namespace".into(), json!(namespace));
            }
            for keep in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(keep) {
                    Some(v) => m.insert(keep.into(), v.clone()),
                    None => m.remove(keep),
                };
            }
        }
        if obj.get("spec") != old.get("spec") {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(g);
        }
        if obj == old {
            return Ok(old);
        }
        // An object being deleted goes once its last finalizer is removed.
        let finalizers_done = obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if resource != Resource::Pods
            && obj["metadata"].get("deletionTimestamp").is_some()
            && finalizers_done
        {
            self.objects.insert(key, obj);
            return Ok(self
                .remove(resource, &namespace, &name)
                .expect("just inserted"));
        }
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key, obj.clone());
        self.record(resource, ChangeType::Modified, &obj, Some(old));
        Ok(obj)
    }

    /// Remove an object now (the end of a graceful deletion, or a kind
    /// without one). Returns the removed object with its final
    /// resourceVersion.
    pub fn remove(&mut self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let key = (resource, namespace.to_owned(), name.to_owned());
        let mut obj = self.objects.remove(&key)?;
        let prev = obj.clone();
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(resource, ChangeType::Deleted, &obj, Some(prev));
        Some(obj)
    }

    /// The object a delete with `opts` would act on, or why not (missing,
    /// or a uid/resourceVersion precondition that does not hold).
    pub fn check_preconditions(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<&Value, StoreError> {
        let info = resource.info();
        let Some(obj) = self.get(resource, namespace, name) else {
            return Err(StoreError::NotFound {
                kind: kind_for_error(info),
                name: name.to_owned(),
            });
        };
        if let Some(uid) = &opts.precondition_uid {
            if meta_str(obj, "uid") != Some(uid.as_str()) {
                return Err(StoreError::Conflict {
                    plural: plural_for_error(info),
                    name: name.to_owned(),
                });
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if meta_str(obj, "resourceVersion") != Some(rv.as_str()) {
                return Err(StoreError::Conflict {
                    plural: plural_for_error(info),
                    name: name.to_owned(),
                });
            }
        }
        Ok(obj)
    }

    /// Delete as the API does. Pods bound to a node get a deletionTimestamp
    /// and stay until their kubelet reports them gone (grace 0, unbound or
    /// finished pods go at once); objects with finalizers wait for them;
    /// everything else goes now. Returns the object and whether it is gone.
    pub fn delete(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), StoreError> {
        let obj = self.check_preconditions(resource, namespace, name, opts)?;
        let mut obj = obj.clone();
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let graceful = if resource == Resource::Pods {
            let bound = obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let finished = matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded") | Some("Failed")
            );
            let default_grace = obj["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            let grace = opts.grace_period_seconds.unwrap_or(default_grace).max(0);
            if bound && !finished && grace > 0 {
                Some(grace)
            } else {
                None
            }
        } else {
            None
        };
        match graceful {
            Some(grace) => {
                // A second delete may only shorten the grace period.
                let current = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
                if current.is_some_and(|c| c <= grace) {
                    return Ok((obj, false));
                }
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                let m = meta_mut(&mut obj);
                if current.is_none() {
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                }
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                let old = self.get(resource, namespace, name).cloned();
                let rv = self.next_rv();
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.objects.insert(
                    (resource, namespace.to_owned(), name.to_owned()),
                    obj.clone(),
                );
                self.record(resource, ChangeType::Modified, &obj, old);
                Ok((obj, false))
            }
            None if has_finalizers && resource != Resource::Pods => {
                if obj["metadata"].get("deletionTimestamp").is_none() {
                    obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    let old = self.get(resource, namespace, name).cloned();
                    let rv = self.next_rv();
                    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                    self.objects.insert(
                        (resource, namespace.to_owned(), name.to_owned()),
                        obj.clone(),
                    );
                    self.record(resource, ChangeType::Modified, &obj, old);
                }
                Ok((obj, false))
            }
            None => {
                let gone = self.remove(resource, namespace, name).expect("exists");
                Ok((gone, true))
            }
        }
    }

    /// The objects of `resource` as they were at resourceVersion `rv`
    /// (sorted as [`State::list`]): today's, with the changes made since
    /// undone. Gone when the history no longer reaches back that far.
    pub fn list_at(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Value>, StoreError> {
        let current = self.list(resource, namespace).into_iter().cloned();
        if rv >= self.rv {
            return Ok(current.collect());
        }
        let mut objects: BTreeMap<(String, String), Value> = current
            .map(|o| ((namespace_of(&o).to_owned(), name_of(&o).to_owned()), o))
            .collect();
        for c in self.changes_since(resource, rv)?.iter().rev() {
            if namespace.is_some_and(|n| n != c.namespace) {
                continue;
            }
            let key = (c.namespace.clone(), name_of(&c.object).to_owned());
            match (c.kind, &c.prev) {
                (ChangeType::Added, _) => {
                    objects.remove(&key);
                }
                (_, Some(prev)) => {
                    objects.insert(key, (**prev).clone());
                }
                (_, None) => {}
            }
        }
        Ok(objects.into_values().collect())
    }

    pub fn changes_since(&self, resource: Resource, rv: u64) -> Result<Vec<Change>, StoreError> {
        let oldest = self.history.front().map(|c| c.rv).unwrap_or(self.rv + 1);
        // `rv` itself need not be in the history (it may be an unrelated
        // change); what matters is that nothing after it was dropped.
        if rv + 1 < oldest && rv < self.rv {
            return Err(StoreError::Gone { asked: rv, oldest });
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self
            .history
            .range(start..)
            .filter(|c| c.resource == resource)
            .cloned()
            .collect())
    }
}

fn kind_for_error(info: &ResourceInfo) -> String {
    // Kubernetes names the group-qualified resource in these messages
    // (`pods "x" not found`, `deployments.apps "x" not found`).
    if info.group.is_empty() {
        info.plural.to_owned()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

fn plural_for_error(info: &ResourceInfo) -> String {
    kind_for_error(info)
}

/// DNS-1123 subdomain, as metadata.name must be for these kinds.
fn validate_name(kind: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{kind} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"containers": []}})
    }

    #[test]
    fn create_update_conflict_and_generation() {
        let store = Store::new();
        let a = store.create(Resource::Pods, pod("a")).unwrap();
        assert_eq!(a["kind"], "Pod");
        assert_eq!(a["metadata"]["generation"], 1);
        let err = store.create(Resource::Pods, pod("a")).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }));

        let mut b = a.clone();
        b["metadata"]["labels"] = json!({"x": "y"});
        let b = store.update(Resource::Pods, b).unwrap();
        assert_ne!(
            b["metadata"]["resourceVersion"],
            a["metadata"]["resourceVersion"]
        );
        assert_eq!(
            b["metadata"]["generation"], 1,
            "metadata changes keep generation"
        );
        assert!(matches!(
            store.update(Resource::Pods, a.clone()).unwrap_err(),
            StoreError::Conflict { .. }
        ));
        let mut c = b.clone();
        c["spec"]["nodeName"] = json!("n1");
        let c = store.update(Resource::Pods, c).unwrap();
        assert_eq!(c["metadata"]["generation"], 2);
        let rv = store.resource_version();
        let same = store.update(Resource::Pods, c.clone()).unwrap();
        assert_eq!(same, c);
        assert_eq!(store.resource_version(), rv, "no-op update is not a change");
    }

    #[test]
    fn generate_name_and_history() {
        let store = Store::new();
        let start = store.resource_version();
        let mut names = std::collections::HashSet::new();
        for _ in 0..50 {
            let p = store
                .create(
                    Resource::Pods,
                    json!({"metadata": {"generateName": "web-"}}),
                )
                .unwrap();
            let n = name_of(&p).to_owned();
            assert!(n.starts_with("web-") && n.len() == 9, "{n}");
            names.insert(n);
        }
        assert_eq!(names.len(), 50);
        let changes = store.changes_since(Resource::Pods, start).unwrap();
        assert_eq!(changes.len(), 50);
        assert!(store
            .changes_since(Resource::Nodes, start)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn watch_history_is_bounded_and_too_old_is_gone() {
        let store = Store::with_history(5);
        let start = store.resource_version();
        for i in 0..10 {
            store.create(Resource::Pods, pod(&format!("p{i}"))).unwrap();
        }
        let err = store.changes_since(Resource::Pods, start).unwrap_err();
        assert!(matches!(err, StoreError::Gone { .. }), "{err:?}");
        assert!(err.to_string().starts_with("too old resource version"));
        let recent = store.resource_version() - 3;
        assert_eq!(
            store.changes_since(Resource::Pods, recent).unwrap().len(),
            3
        );
    }

    #[test]
    fn a_list_at_an_older_version_undoes_later_changes() {
        let store = Store::with_history(100);
        store.create(Resource::Pods, pod("a")).unwrap();
        let at = store.resource_version();
        let mut b = store.get(Resource::Pods, "default", "a").unwrap();
        b["metadata"]["labels"] = json!({"v": "2"});
        store.update(Resource::Pods, b).unwrap();
        store.create(Resource::Pods, pod("c")).unwrap();
        let then = store.read(|s| s.list_at(Resource::Pods, None, at)).unwrap();
        assert_eq!(then.len(), 1);
        assert!(then[0]["metadata"].get("labels").is_none(), "{}", then[0]);
        let now = store.read(|s| s.list_at(Resource::Pods, Some("default"), s.resource_version()));
        assert_eq!(now.unwrap().len(), 2);
        let small = Store::with_history(1);
        small.create(Resource::Pods, pod("a")).unwrap();
        small.create(Resource::Pods, pod("b")).unwrap();
        small.create(Resource::Pods, pod("c")).unwrap();
        let err = small
            .read(|s| s.list_at(Resource::Pods, None, 1))
            .unwrap_err();
        assert!(matches!(err, StoreError::Gone { .. }));
    }

    #[test]
    fn pod_delete_is_graceful_when_bound() {
        let store = Store::new();
        store.create(Resource::Pods, pod("unbound")).unwrap();
        let mut bound = pod("bound");
        bound["spec"]["nodeName"] = json!("n1");
        store.create(Resource::Pods, bound).unwrap();
        let (gone_obj, gone) = store
            .write(|s| {
                s.delete(
                    Resource::Pods,
                    "default",
                    "unbound",
                    &DeleteOptions::default(),
                )
            })
            .unwrap();
        assert!(gone && name_of(&gone_obj) == "unbound");
        let opts = DeleteOptions {
            grace_period_seconds: Some(7),
            ..Default::default()
        };
        let (obj, gone) = store
            .write(|s| s.delete(Resource::Pods, "default", "bound", &opts))
            .unwrap();
        assert!(!gone);
        assert_eq!(obj["metadata"]["deletionGracePeriodSeconds"], 7);
        assert!(obj["metadata"]["deletionTimestamp"].is_string());
        let zero = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let (_, gone) = store
            .write(|s| s.delete(Resource::Pods, "default", "bound", &zero))
            .unwrap();
        assert!(gone, "grace 0 removes at once");
    }
}
