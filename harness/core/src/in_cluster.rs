//! What zdt and the clusters it drives agree on when zdt itself runs in a
//! pod: the name of zdt's own image (built locally for kind, the running
//! binary on the emulator), its entrypoint, and where a pod finds its
//! service-account files.

/// The repository of zdt's image (`zdt-local:<hash of the binary>`).
pub const IMAGE_REPOSITORY: &str = "zdt-local";

/// The image's entrypoint: the zdt binary.
pub const IMAGE_ENTRYPOINT: &str = "/zdt";

/// Where Kubernetes mounts a pod's service-account token and namespace.
pub const SERVICEACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Names a directory holding the service-account files in place of
/// [`SERVICEACCOUNT_DIR`]: the emulator's containers are host processes
/// without a mount namespace, so it writes them elsewhere and says where.
pub const SERVICEACCOUNT_DIR_ENV: &str = "ZDT_SERVICEACCOUNT_DIR";

/// `zdt-local:<tag>` for the binary whose FNV-1a hash is `hash`.
pub fn image_tag(hash: u64) -> String {
    format!("{IMAGE_REPOSITORY}:{hash:016x}")
}

/// Is `image` zdt's image? Its repository (without tag or digest, and
/// without the `docker.io/library/` a container runtime may add) is
/// [`IMAGE_REPOSITORY`].
pub fn is_zdt_image(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let repository = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    let repository = repository
        .strip_prefix("docker.io/library/")
        .unwrap_or(repository);
    repository == IMAGE_REPOSITORY
}

/// The service-account directory a process in a pod reads:
/// `$ZDT_SERVICEACCOUNT_DIR` when set, else the standard mount.
pub fn serviceaccount_dir() -> std::path::PathBuf {
    std::env::var_os(SERVICEACCOUNT_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| SERVICEACCOUNT_DIR.into(), std::path::PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zdt_images_are_recognised_by_repository() {
        assert!(is_zdt_image(&image_tag(0xabc)));
        assert_eq!(image_tag(0xabc), "zdt-local:0000000000000abc");
        assert!(is_zdt_image("zdt-local"));
        assert!(is_zdt_image("docker.io/library/zdt-local:1"));
        assert!(is_zdt_image("zdt-local@sha256:00"));
        assert!(!is_zdt_image("nginx:1.27"));
        assert!(!is_zdt_image("zdt-local-other:1"));
        assert!(!is_zdt_image("example.com/zdt-local:1"));
    }
}
