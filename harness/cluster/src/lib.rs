//! Where the workload runs. Every provider (emulator, kind, existing) hands
//! back the same thing: a kube `Client`, the node addresses the LB needs,
//! and teardown.

pub mod apply;
pub mod chaos;
pub mod clean;
pub mod cloud_provider_kind;
pub mod docker;
pub mod existing;
pub mod kind;
pub mod kind_images;
pub mod kind_owner;
pub mod lb_container;
pub mod lb_image;
pub mod metallb;
pub mod provider;
mod tar;

/// The MetalLB release and manifest digest zdt installs (the nightly
/// workflow checks its download against the same digest).
pub use metallb::{MANIFEST_SHA256 as METALLB_MANIFEST_SHA256, VERSION as METALLB_VERSION};
pub use provider::{
    Cluster, ClusterError, Exposure, LbAdmin, LbAdminError, LbControl, LbSetupError,
};
