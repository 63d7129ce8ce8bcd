//! The `host` engine's command: the program a `workload.run` entry names,
//! found on this machine, and the argv/env it gets for one container.
//!
//! A bare program name (no `/`) is looked up next to the running
//! executable first — cargo puts every binary of a workspace in one
//! directory (`target/debug`, `target/release`, under `CARGO_TARGET_DIR`
//! when set), and a test executable in its `deps/` below — then on `PATH`.
//! So `command: [zdt-tiny-server]` finds the server built with the zdt that
//! runs it, debug or release, wherever the target directory is.

use std::path::{Path, PathBuf};

use zdt_core::emulated::ContainerRun;

use super::env::expand;

/// A `workload.run` command that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("workload.run.{key}: `command` is empty; give the program to run, e.g. `command: [./target/release/myapp]`")]
    Empty { key: String },
    #[error("workload.run.{key}: program `{program}` not found (looked in {}); build it (for zdt's example: `cargo build -p zdt --bin zdt-tiny-server`, next to the zdt you run) or give its path", looked.join(", "))]
    NotFound {
        key: String,
        program: String,
        looked: Vec<String>,
    },
    #[error("workload.run.{key}: `{}` is not an executable file", path.display())]
    NotExecutable { key: String, path: PathBuf },
}

/// Directories a bare program name is looked up in, in order.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(up) = dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
        dirs.push(dir);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs
}

/// The program `run.command[0]` names, as an absolute path.
pub fn resolve(key: &str, run: &ContainerRun) -> Result<PathBuf, CommandError> {
    let program = run.command.first().ok_or_else(|| CommandError::Empty {
        key: key.to_owned(),
    })?;
    if program.contains('/') {
        let path = std::path::absolute(program).unwrap_or_else(|_| PathBuf::from(program));
        if !path.exists() {
            return Err(CommandError::NotFound {
                key: key.to_owned(),
                program: program.clone(),
                looked: vec![path.display().to_string()],
            });
        }
        return if zdt_core::process::is_executable(&path) {
            Ok(path)
        } else {
            Err(CommandError::NotExecutable {
                key: key.to_owned(),
                path,
            })
        };
    }
    let dirs = search_dirs();
    dirs.iter()
        .map(|d| d.join(program))
        .find(|p| zdt_core::process::is_executable(p))
        .ok_or_else(|| {
            let mut looked: Vec<String> = dirs
                .iter()
                .take(2)
                .map(|d| d.display().to_string())
                .collect();
            looked.push("PATH".into());
            CommandError::NotFound {
                key: key.to_owned(),
                program: program.clone(),
                looked,
            }
        })
}

/// What one container's process gets: argv after the program, and env.
pub fn invocation(
    run: &ContainerRun,
    container_env: &[(String, String)],
) -> (Vec<String>, Vec<(String, String)>) {
    let mut env = container_env.to_vec();
    for (k, v) in &run.env {
        let v = expand(v, &env);
        env.retain(|(n, _)| n != k);
        env.push((k.clone(), v));
    }
    let args = run
        .command
        .iter()
        .skip(1)
        .chain(&run.args)
        .map(|a| expand(a, &env))
        .collect();
    (args, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &[&str], args: &[&str]) -> ContainerRun {
        ContainerRun {
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            ..ContainerRun::default()
        }
    }

    #[test]
    fn bare_names_are_found_on_path_and_missing_ones_say_where_we_looked() {
        let found = resolve("app", &run(&["sh"], &[])).unwrap();
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        let e = resolve("app", &run(&["zdt-surely-not-a-program"], &[])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("workload.run.app"), "{text}");
        assert!(text.contains("PATH"), "{text}");
        let e = resolve("app", &run(&[], &[])).unwrap_err();
        assert!(matches!(e, CommandError::Empty { .. }), "{e}");
        let plain = tempfile::NamedTempFile::new().unwrap();
        let plain = plain.path().display().to_string();
        let e = resolve("app", &run(&[&plain], &[])).unwrap_err();
        assert!(matches!(e, CommandError::NotExecutable { .. }), "{e}");
    }

    #[test]
    fn args_and_env_expand_against_the_container_env() {
        let mut r = run(
            &["srv", "--listen", "$(POD_IP):$(PORT)"],
            &["--mode", "$(MODE)"],
        );
        r.env.insert("PORT".into(), "8080".into());
        r.env.insert("MODE".into(), "graceful".into());
        let (args, env) = invocation(&r, &[("POD_IP".into(), "10.244.1.2".into())]);
        assert_eq!(args, ["--listen", "10.244.1.2:8080", "--mode", "graceful"]);
        assert!(env.contains(&("PORT".into(), "8080".into())));
    }
}
