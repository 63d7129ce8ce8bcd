//! zdt's own image (`zdt-local:<hash>`, [`zdt_core::in_cluster`]): on kind
//! it is built from the zdt binary with that binary as its entrypoint
//! (`/zdt`) and nothing else; here the container runs the zdt binary on
//! this machine ([`zdt_core::process::zdt_exe`]) with the pod spec's
//! `command`/`args`, `$(VAR)` expanded against the container's env as the
//! kubelet does.

use zdt_core::in_cluster::IMAGE_ENTRYPOINT;

use super::env::expand;

/// A zdt container the emulator cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZdtImageError {
    #[error("container {pod}: image {image} is zdt's, which holds only {IMAGE_ENTRYPOINT}; `command: [{program}]` cannot run there (give `command: [\"{IMAGE_ENTRYPOINT}\"]` or none, and the subcommand in `args`)")]
    Command {
        pod: String,
        image: String,
        program: String,
    },
    #[error("container {pod}: image {image} runs the zdt binary, but this process is not zdt and {env} is unset; set {env} to the zdt binary to run", env = zdt_core::process::EXE_ENV)]
    NoBinary { pod: String, image: String },
}

/// The arguments after the program for a container of zdt's image: the
/// pod spec's `command` must be empty or start with the entrypoint.
pub fn args(
    pod: &str,
    image: &str,
    command: &[String],
    args: &[String],
    env: &[(String, String)],
) -> Result<Vec<String>, ZdtImageError> {
    let rest = match command.split_first() {
        None => &[][..],
        Some((program, rest)) if program == IMAGE_ENTRYPOINT || program == "zdt" => rest,
        Some((program, _)) => {
            return Err(ZdtImageError::Command {
                pod: pod.to_owned(),
                image: image.to_owned(),
                program: program.clone(),
            })
        }
    };
    Ok(rest.iter().chain(args).map(|a| expand(a, env)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_is_the_entrypoint_or_nothing_and_args_expand() {
        let env = vec![("JOB_COMPLETION_INDEX".to_owned(), "2".to_owned())];
        let a = args(
            "p",
            "zdt-local:1",
            &[],
            &strings(&["generator", "--index", "$(JOB_COMPLETION_INDEX)"]),
            &env,
        )
        .unwrap();
        assert_eq!(a, ["generator", "--index", "2"]);
        let a = args(
            "p",
            "zdt-local:1",
            &strings(&["/zdt", "generator"]),
            &strings(&["-v"]),
            &env,
        )
        .unwrap();
        assert_eq!(a, ["generator", "-v"]);
        let e = args("p", "zdt-local:1", &strings(&["sh", "-c", "x"]), &[], &env).unwrap_err();
        assert!(e.to_string().contains("/zdt"), "{e}");
    }
}
