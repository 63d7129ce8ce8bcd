//! The `docker` engine: a container image from the local Docker, run as a
//! process in the cluster's network namespace.
//!
//! Docker cannot start a container in a network namespace it did not make
//! (`--network` takes `none`, `host`, a Docker network or another
//! container), and the emulator's pods must be in *its* namespace, where
//! their pod IP is. So Docker supplies the image and nothing else: the
//! image's filesystem is exported once per run (`docker create` + `docker
//! export`) and its entrypoint runs chrooted into it, joined to the
//! cluster's network like nginx, with the image's env, working directory
//! and STOPSIGNAL. What is not modelled: cgroup limits, mount and PID
//! namespaces, volumes, the image's USER (the process runs as zdt's user).
//! The image's code, files and signal handling are the real ones.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

use super::kubelet::signal_number;

/// An image ready to run: its root filesystem on disk and its config.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: String,
    pub rootfs: PathBuf,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub stop_signal: Option<i32>,
}

/// The part of `docker image inspect`'s `.Config` the engine uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ImageConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: String,
    stop_signal: Option<String>,
}

/// `docker ARGS` → stdout, or a sentence saying what failed.
async fn docker(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            format!("`docker` cannot be run ({e}); install Docker or use runtime `host`")
        })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Export `image` (which must exist locally: nothing is pulled) into
/// `dir/rootfs` and read its config.
pub async fn export(image: &str, dir: &Path) -> Result<Image, String> {
    let inspect = docker(&["image", "inspect", "--format", "{{json .Config}}", image])
        .await
        .map_err(|e| {
            if e.contains("No such image") || e.contains("No such object") {
                format!("image {image} is not in the local Docker (`docker build`/`docker load` it first; zdt pulls nothing for the emulator)")
            } else {
                e
            }
        })?;
    let config: ImageConfig = serde_json::from_slice(&inspect)
        .map_err(|e| format!("cannot read `docker image inspect {image}`: {e}"))?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)
        .map_err(|e| format!("cannot create {}: {e}", rootfs.display()))?;
    // `create` needs a command for images without one; it is never run.
    let id = docker(&["create", "--network", "none", image, "/zdt-export-only"]).await?;
    let id = String::from_utf8_lossy(&id).trim().to_owned();
    let exported = extract(&id, &rootfs).await;
    let _ = docker(&["rm", "-f", &id]).await;
    exported?;
    let env = config
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv, String::new()),
        })
        .collect();
    Ok(Image {
        reference: image.to_owned(),
        rootfs,
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
        env,
        working_dir: config.working_dir,
        stop_signal: config.stop_signal.as_deref().and_then(signal_number),
    })
}

/// `docker export ID | tar -x -C rootfs`.
async fn extract(id: &str, rootfs: &Path) -> Result<(), String> {
    let mut export = std::process::Command::new("docker")
        .args(["export", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`docker export` cannot be run: {e}"))?;
    let stdout = export.stdout.take().expect("piped");
    let tar = tokio::process::Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(rootfs)
        .stdin(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("`tar` cannot be run: {e}"))?;
    let status = tokio::task::spawn_blocking(move || export.wait_with_output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if !status.status.success() {
        return Err(format!(
            "`docker export {id}` failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        ));
    }
    if !tar.status.success() {
        return Err(format!(
            "unpacking the image into {} failed: {}",
            rootfs.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    Ok(())
}

impl Image {
    /// The process's argv, as Kubernetes combines a pod spec with an image:
    /// `command` replaces the entrypoint (and drops its cmd), `args`
    /// replaces the cmd.
    pub fn argv(&self, command: &[String], args: &[String]) -> Vec<String> {
        let (entry, rest) = match (command.is_empty(), args.is_empty()) {
            (false, _) => (command, args),
            (true, false) => (self.entrypoint.as_slice(), args),
            (true, true) => (self.entrypoint.as_slice(), self.cmd.as_slice()),
        };
        entry.iter().chain(rest).cloned().collect()
    }

    /// The image's env with the container's on top.
    pub fn env(&self, container: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        for (k, v) in container {
            env.retain(|(n, _)| n != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    /// `program` as a path inside the image (a bare name searched on the
    /// image's `PATH`), checked to exist there.
    pub fn find_program(&self, program: &str, env: &[(String, String)]) -> Result<String, String> {
        let inside = |p: &str| self.rootfs.join(p.trim_start_matches('/'));
        if program.contains('/') {
            let abs = if program.starts_with('/') {
                program.to_owned()
            } else {
                format!("{}/{program}", self.working_dir.trim_end_matches('/'))
            };
            return if inside(&abs).exists() {
                Ok(abs)
            } else {
                Err(format!("{program} is not in image {}", self.reference))
            };
        }
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .find(|p| inside(p).exists())
            .ok_or_else(|| format!("{program} is not on the PATH of image {}", self.reference))
    }

    /// Make `cmd` chroot into the image and change to its working
    /// directory before it executes (after it joined the network).
    pub fn enter_before_exec(&self, cmd: &mut std::process::Command) {
        let root = std::ffi::CString::new(self.rootfs.as_os_str().as_encoded_bytes())
            .expect("a temp dir path has no NUL");
        let wd = if self.working_dir.is_empty() {
            "/".to_owned()
        } else {
            self.working_dir.clone()
        };
        let wd = std::ffi::CString::new(wd).unwrap_or_else(|_| c"/".to_owned());
        // SAFETY: chroot and chdir are async-signal-safe; the strings were
        // made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(wd.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        Image {
            reference: "app:1".into(),
            rootfs: PathBuf::from("/nonexistent"),
            entrypoint: vec!["/server".into()],
            cmd: vec!["--mode".into(), "bad".into()],
            env: vec![("PATH".into(), "/bin".into()), ("MODE".into(), "x".into())],
            working_dir: String::new(),
            stop_signal: None,
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pod_command_and_args_combine_with_the_image_as_kubernetes_does() {
        let i = image();
        assert_eq!(i.argv(&[], &[]), v(&["/server", "--mode", "bad"]));
        assert_eq!(i.argv(&[], &v(&["--x"])), v(&["/server", "--x"]));
        assert_eq!(i.argv(&v(&["/other"]), &[]), v(&["/other"]));
        assert_eq!(i.argv(&v(&["/o"]), &v(&["a"])), v(&["/o", "a"]));
        let env = i.env(&[("MODE".into(), "graceful".into())]);
        assert_eq!(
            env,
            vec![
                ("PATH".to_owned(), "/bin".to_owned()),
                ("MODE".to_owned(), "graceful".to_owned())
            ]
        );
    }
}
