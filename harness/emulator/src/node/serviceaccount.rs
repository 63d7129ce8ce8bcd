//! A container's service-account files. Kubernetes mounts them at
//! `/var/run/secrets/kubernetes.io/serviceaccount`; a container here is a
//! host process without a mount namespace, so each gets a directory of its
//! own under the runtime's temp dir, named by `$ZDT_SERVICEACCOUNT_DIR`
//! ([`zdt_core::in_cluster::SERVICEACCOUNT_DIR_ENV`]), removed with the
//! container. The token is an opaque string: the emulator does not
//! authenticate.

use std::io;
use std::path::{Path, PathBuf};

/// The files of one container; removed on drop.
#[derive(Debug)]
pub struct ServiceAccountDir {
    path: PathBuf,
}

impl ServiceAccountDir {
    /// Write `namespace` and `token` for the container `container` of the
    /// pod with uid `pod_uid`, under `root`.
    pub fn create(
        root: &Path,
        namespace: &str,
        pod_uid: &str,
        container: &str,
    ) -> io::Result<ServiceAccountDir> {
        let path = root
            .join("serviceaccount")
            .join(format!("{pod_uid}-{container}"));
        std::fs::create_dir_all(&path)?;
        let dir = ServiceAccountDir { path };
        std::fs::write(dir.path.join("namespace"), namespace)?;
        std::fs::write(
            dir.path.join("token"),
            format!("zdt-emulator-unauthenticated-{pod_uid}"),
        )?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ServiceAccountDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_and_removed_with_the_container() {
        let root = tempfile::tempdir().unwrap();
        let dir = ServiceAccountDir::create(root.path(), "shop", "u-1", "app").unwrap();
        let path = dir.path().to_owned();
        assert_eq!(
            std::fs::read_to_string(path.join("namespace")).unwrap(),
            "shop"
        );
        assert!(!std::fs::read_to_string(path.join("token"))
            .unwrap()
            .is_empty());
        drop(dir);
        assert!(!path.exists());
    }
}
