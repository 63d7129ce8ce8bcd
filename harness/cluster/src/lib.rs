//! Where the workload runs. Every provider (emulator, kind, existing) hands
//! back the same thing: a kube `Client`, the node addresses the LB needs,
//! and teardown.

pub mod apply;
pub mod chaos;
pub mod clean;
pub mod docker;
pub mod existing;
pub mod kind;
pub mod kind_owner;
pub mod lb_container;
pub mod lb_image;
pub(crate) mod metallb;
pub mod provider;
mod tar;

pub use provider::{
    Cluster, ClusterError, Exposure, LbAdmin, LbAdminError, LbControl, LbSetupError,
};
