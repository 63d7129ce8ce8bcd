//! The zdt container image, built locally `FROM scratch` through the Docker
//! Engine API, so the kind provider can run `zdt lb` (and `zdt serve`) on
//! kind's docker network without any registry.
//!
//! The release image holds one static binary (`RUSTFLAGS="-C
//! target-feature=+crt-static" cargo build --release --target
//! x86_64-unknown-linux-gnu`). A dynamically linked binary (what `cargo
//! test` builds) works too: its ELF interpreter and the shared libraries
//! `ldd` lists are copied into the image at their paths. The build context
//! is an in-memory tar: a Dockerfile plus `rootfs/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use futures::StreamExt;

/// Label on everything zdt creates, so `zdt clean` can find it (the same
/// constants the cluster module's docker helpers use).
pub use crate::docker::{MANAGED_LABEL as LABEL_MANAGED, RUN_LABEL as LABEL_RUN};

/// The labels for objects created by `run_id`.
pub fn labels(run_id: &str) -> HashMap<String, String> {
    crate::docker::managed_labels(Some(run_id))
}

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an x86-64 ELF executable: {why}")]
    NotElf { path: PathBuf, why: String },
    #[error("`ldd {path}` failed: {message} (install libc-bin, or build the static binary: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu)")]
    Ldd { path: PathBuf, message: String },
    #[error("docker build of {tag} failed: {message}")]
    Build { tag: String, message: String },
    #[error("Docker Engine: {0}")]
    Docker(#[from] bollard::errors::Error),
}

/// How the binary in the image is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    Static,
    /// With the interpreter and libraries copied into the image.
    Dynamic {
        interpreter: PathBuf,
        libraries: Vec<PathBuf>,
    },
}

/// A built image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub tag: String,
    pub id: String,
    /// Bytes, as `docker images` reports.
    pub size: u64,
    pub linkage: Linkage,
}

/// The ELF interpreter (`PT_INTERP`) of `binary`, or `None` when static.
pub fn elf_interpreter(binary: &Path) -> Result<Option<PathBuf>, ImageError> {
    let data = std::fs::read(binary).map_err(|source| ImageError::Read {
        path: binary.into(),
        source,
    })?;
    let not_elf = |why: &str| ImageError::NotElf {
        path: binary.into(),
        why: why.into(),
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err(not_elf("no ELF magic"));
    }
    if data[4] != 2 || data[5] != 1 {
        return Err(not_elf("not a 64-bit little-endian ELF"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    let phoff = u64_at(0x20).ok_or_else(|| not_elf("truncated header"))?;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = data
            .get(ph..ph + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| not_elf("truncated program headers"))?;
        const PT_INTERP: u32 = 3;
        if p_type == PT_INTERP {
            let off = u64_at(ph + 8).ok_or_else(|| not_elf("truncated PT_INTERP"))?;
            let size = u64_at(ph + 32).ok_or_else(|| not_elf("truncated PT_INTERP"))?;
            let raw = data
                .get(off..off + size)
                .ok_or_else(|| not_elf("PT_INTERP out of bounds"))?;
            let path = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_owned();
            return Ok(Some(PathBuf::from(path)));
        }
    }
    Ok(None)
}

/// The shared libraries `ldd` resolves for `binary` (absolute paths).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ImageError::Ldd {
            path: binary.into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ImageError::Ldd {
            path: binary.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    // Lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
    // `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The build context for `binary`: a Dockerfile and `rootfs/` holding the
/// binary at `/zdt` (plus its interpreter and libraries when dynamic).
pub fn build_context(binary: &Path, run_id: &str) -> Result<(Vec<u8>, Linkage), ImageError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ImageError::Read {
            path: p.into(),
            source,
        })
    };
    let mut tar = crate::tar::Tar::new();
    let linkage = match elf_interpreter(binary)? {
        None => Linkage::Static,
        Some(interpreter) => {
            let mut libraries = shared_libraries(binary)?;
            libraries.retain(|l| *l != interpreter);
            for lib in std::iter::once(&interpreter).chain(&libraries) {
                // Read through symlinks: the image gets the file at the path
                // the loader asks for.
                let rel = lib.to_string_lossy().trim_start_matches('/').to_owned();
                tar.file(&format!("rootfs/{rel}"), &read(lib)?, 0o755);
            }
            Linkage::Dynamic {
                interpreter,
                libraries,
            }
        }
    };
    tar.file("rootfs/zdt", &read(binary)?, 0o755);
    // Docker mounts /etc/hosts, /etc/resolv.conf and /etc/hostname; /tmp is
    // for anything that wants a temp dir.
    tar.entry("rootfs/tmp/", &[], 0o1777, true);
    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nLABEL {LABEL_MANAGED}=true {LABEL_RUN}={run_id}\nENTRYPOINT [\"/zdt\"]\n"
    );
    tar.file("Dockerfile", dockerfile.as_bytes(), 0o644);
    Ok((tar.finish(), linkage))
}

/// Build the image `tag` from `binary` (`scratch` is never pulled).
pub async fn build(
    docker: &Docker,
    binary: &Path,
    tag: &str,
    run_id: &str,
) -> Result<BuiltImage, ImageError> {
    let (binary_owned, run) = (binary.to_owned(), run_id.to_owned());
    let (context, linkage) =
        tokio::task::spawn_blocking(move || build_context(&binary_owned, &run))
            .await
            .map_err(|e| ImageError::Build {
                tag: tag.into(),
                message: e.to_string(),
            })??;
    let options = bollard::query_parameters::BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.into()),
        rm: true,
        forcerm: true,
        labels: Some(labels(run_id)),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| ImageError::Build {
            tag: tag.into(),
            message: format!("{e}\n{log}"),
        })?;
        if let Some(s) = info.stream {
            log.push_str(&s);
        }
        if let Some(detail) = info.error_detail {
            return Err(ImageError::Build {
                tag: tag.into(),
                message: format!("{}\n{log}", detail.message.unwrap_or_default()),
            });
        }
    }
    let inspect = docker.inspect_image(tag).await?;
    Ok(BuiltImage {
        tag: tag.into(),
        id: inspect.id.unwrap_or_default(),
        size: inspect.size.unwrap_or(0).max(0) as u64,
        linkage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_dynamic_and_names_its_interpreter() {
        let me = std::env::current_exe().unwrap();
        let interp = elf_interpreter(&me)
            .unwrap()
            .expect("cargo test binaries are dynamic");
        assert!(interp.to_string_lossy().contains("ld-linux"), "{interp:?}");
        let libs = shared_libraries(&me).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }
}
