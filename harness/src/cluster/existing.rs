//! The existing provider: a cluster from a kubeconfig context (in progress).
