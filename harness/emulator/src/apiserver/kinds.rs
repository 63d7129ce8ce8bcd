//! The k8s-openapi type behind each stored [`Resource`]: the one place that
//! maps the emulator's resources to Kubernetes' own type definitions, used
//! by the decoder check ([`super::shape`]) and the OpenAPI documents
//! ([`super::openapi`]).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, Node, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::store::Resource;

/// Something done with the Kubernetes type of a resource.
pub trait KindVisitor {
    type Out;
    fn visit<T: DeserializeOwned + JsonSchema>(self) -> Self::Out;
}

/// Run `v` with the k8s-openapi type that `resource` stores. The match is
/// exhaustive: a new resource must name its type here.
pub fn with_type<V: KindVisitor>(resource: Resource, v: V) -> V::Out {
    match resource {
        Resource::Namespaces => v.visit::<Namespace>(),
        Resource::Nodes => v.visit::<Node>(),
        Resource::Pods => v.visit::<Pod>(),
        Resource::Services => v.visit::<Service>(),
        Resource::EndpointSlices => v.visit::<EndpointSlice>(),
        Resource::Deployments => v.visit::<Deployment>(),
        Resource::ReplicaSets => v.visit::<ReplicaSet>(),
        Resource::Jobs => v.visit::<Job>(),
        Resource::PodDisruptionBudgets => v.visit::<PodDisruptionBudget>(),
        Resource::CoreEvents => v.visit::<CoreEvent>(),
        Resource::ConfigMaps => v.visit::<ConfigMap>(),
        Resource::Events => v.visit::<Event>(),
        Resource::ServiceAccounts => v.visit::<ServiceAccount>(),
        Resource::Roles => v.visit::<Role>(),
        Resource::RoleBindings => v.visit::<RoleBinding>(),
    }
}
