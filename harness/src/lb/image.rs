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
pub use crate::cluster::docker::{MANAGED_LABEL as LABEL_MANAGED, RUN_LABEL as LABEL_RUN};

/// The labels for objects created by `run_id`.
pub fn labels(run_id: &str) -> HashMap<String, String> {
    crate::cluster::docker::managed_labels(Some(run_id))
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

/// A minimal ustar writer: regular files and directories are all the build
/// context needs.
struct Tar {
    buf: Vec<u8>,
}

impl Tar {
    fn new() -> Self {
        Self { buf: Vec::new() }
    }

    fn entry(&mut self, path: &str, data: &[u8], mode: u32, dir: bool) {
        let mut h = [0u8; 512];
        let (prefix, name) = if path.len() <= 100 {
            ("", path)
        } else {
            let split = path[..path.len().min(155)]
                .rfind('/')
                .expect("tar paths over 100 bytes need a directory");
            (&path[..split], &path[split + 1..])
        };
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let s = format!("{:0width$o}\0", value, width = field.len() - 1);
            field.copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], if dir { 0 } else { data.len() as u64 });
        octal(&mut h[136..148], 0);
        h[156] = if dir { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.buf.extend_from_slice(&h);
        if !dir {
            self.buf.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.buf.extend(std::iter::repeat_n(0u8, pad));
        }
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        // Parent directories first, so any extractor is happy.
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i + 1];
            if !self.has_dir(dir) {
                self.entry(dir, &[], 0o755, true);
            }
            at += i + 1;
        }
        self.entry(path, data, mode, false);
    }

    fn has_dir(&self, dir: &str) -> bool {
        self.buf.chunks(512).any(|c| {
            c.len() == 512 && c[156] == b'5' && c.starts_with(dir.as_bytes()) && c[dir.len()] == 0
        })
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }
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
    let mut tar = Tar::new();
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

/// Put one file into a created (not yet started) container: how `zdt lb`
/// gets its config into a scratch image, which has no shell.
pub async fn upload_file(
    docker: &Docker,
    container: &str,
    path: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), ImageError> {
    let mut tar = Tar::new();
    tar.file(path.trim_start_matches('/'), data, mode);
    let options = bollard::query_parameters::UploadToContainerOptions {
        path: "/".into(),
        ..Default::default()
    };
    docker
        .upload_to_container(
            container,
            Some(options),
            bollard::body_full(tar.finish().into()),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_have_valid_checksums_and_parent_dirs() {
        let mut t = Tar::new();
        t.file("rootfs/lib/x86_64-linux-gnu/libc.so.6", b"abc", 0o755);
        let buf = t.finish();
        let headers: Vec<&[u8]> = buf.chunks(512).collect();
        // rootfs/, rootfs/lib/, rootfs/lib/x86_64-linux-gnu/, the file, its
        // data block, two zero blocks.
        assert_eq!(headers.len(), 7);
        for h in &headers[..4] {
            let stored =
                u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap().trim(), 8).unwrap();
            let mut copy = h.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            assert_eq!(stored, copy.iter().map(|&b| u32::from(b)).sum::<u32>());
        }
        assert_eq!(headers[0][156], b'5');
        assert!(headers[3].starts_with(b"rootfs/lib/x86_64-linux-gnu/libc.so.6\0"));
        assert_eq!(&headers[4][..3], b"abc");
    }

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
