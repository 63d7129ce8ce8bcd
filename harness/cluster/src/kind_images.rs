//! The workload's images on kind: every image the manifests name must be
//! in the local Docker (or pullable into it) before the cluster is touched,
//! and is loaded into the cluster's nodes (`kind load docker-image`) before
//! the workload is applied — skipped when every node already has it. So a
//! locally built image (no registry) is what the pods run.
//!
//! Docker is driven through its CLI here, on the same PATH as kind, so the
//! tests' recorded fakes stand in for both.

use std::ffi::OsString;
use std::process::Stdio;

use serde_json::Value;

use crate::kind::KindCli;

/// An image the workload needs that cannot be had, or a load that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("image {image} is not in the local Docker and cannot be pulled ({why}); build it (`docker build -t {image} .`) or `docker load` it before the run")]
    Unavailable { image: String, why: String },
    #[error("`docker` cannot be run ({0}); kind needs a running Docker Engine")]
    NoDocker(String),
    #[error(transparent)]
    Kind(#[from] crate::kind::KindError),
}

/// The images of every container and init container in the objects' pod
/// templates (and bare Pods), in first-seen order, once each.
pub fn workload_images(objects: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in objects {
        let spec = o
            .pointer("/spec/template/spec")
            .or_else(|| (o["kind"] == "Pod").then(|| &o["spec"]));
        let Some(spec) = spec else { continue };
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                if let Some(image) = c["image"].as_str() {
                    if !out.iter().any(|i| i == image) {
                        out.push(image.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// The `docker` CLI, on a given PATH (tests) or the process's.
#[derive(Debug, Clone, Default)]
pub struct DockerCli {
    path: Option<OsString>,
}

impl DockerCli {
    /// `docker` looked up on `path` instead of the process's PATH.
    pub fn on_path(path: impl Into<OsString>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    /// `docker ARGS`: Ok(success), or why it could not run at all.
    async fn status(&self, args: &[&str]) -> Result<(bool, String), ImageError> {
        let mut cmd = tokio::process::Command::new("docker");
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = &self.path {
            cmd.env("PATH", p);
        }
        let out = cmd
            .output()
            .await
            .map_err(|e| ImageError::NoDocker(e.to_string()))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }

    /// Make sure every image is in the local Docker, pulling what is not;
    /// an image that is neither is an error (call before the cluster is
    /// created). Returns the images pulled.
    pub async fn ensure_local(&self, images: &[String]) -> Result<Vec<String>, ImageError> {
        let mut pulled = Vec::new();
        for image in images {
            if self.status(&["image", "inspect", image]).await?.0 {
                continue;
            }
            match self.status(&["pull", image]).await? {
                (true, _) => pulled.push(image.clone()),
                (false, why) => {
                    return Err(ImageError::Unavailable {
                        image: image.clone(),
                        why: if why.is_empty() {
                            "`docker pull` failed".into()
                        } else {
                            why
                        },
                    })
                }
            }
        }
        Ok(pulled)
    }

    /// Load into kind cluster `cluster` every image some node lacks (`kind
    /// load docker-image IMAGE --name CLUSTER`, once per image); returns
    /// the images loaded. Presence is asked of each node's containerd
    /// (`docker exec NODE crictl inspecti IMAGE`).
    pub async fn load_missing(
        &self,
        kind: &KindCli,
        cluster: &str,
        images: &[String],
    ) -> Result<Vec<String>, ImageError> {
        let nodes = kind.run(&["get", "nodes", "--name", cluster]).await?;
        let nodes: Vec<&str> = nodes
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut loaded = Vec::new();
        for image in images {
            let mut missing = false;
            for node in &nodes {
                if !self
                    .status(&["exec", node, "crictl", "inspecti", image])
                    .await?
                    .0
                {
                    missing = true;
                    break;
                }
            }
            if missing || nodes.is_empty() {
                kind.run(&["load", "docker-image", image, "--name", cluster])
                    .await?;
                loaded.push(image.clone());
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_come_from_pod_templates_once_each() {
        let objects = vec![
            serde_json::json!({"kind": "Deployment", "spec": {"template": {"spec": {
                "initContainers": [{"name": "i", "image": "busybox:1"}],
                "containers": [{"name": "a", "image": "app:1"}, {"name": "b", "image": "busybox:1"}]
            }}}}),
            serde_json::json!({"kind": "Service", "spec": {"ports": []}}),
            serde_json::json!({"kind": "Pod", "spec": {"containers": [{"name": "p", "image": "pod:2"}]}}),
        ];
        assert_eq!(workload_images(&objects), ["busybox:1", "app:1", "pod:2"]);
    }
}
