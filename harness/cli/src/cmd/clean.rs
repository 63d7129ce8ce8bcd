//! `zdt clean`: list or remove what zdt left behind (see
//! `zdt_cluster::clean` for what counts as zdt's).

use zdt_cluster::clean::{describe, execute, plan};
use zdt_cluster::kind::KindCli;

use crate::Exit;

/// `zdt clean`
#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,

    /// Also remove what a running zdt (or one on another host, or an older
    /// zdt that recorded no owner) still uses. Hand-made kind clusters are
    /// never removed.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: CleanArgs) -> miette::Result<Exit> {
    let kind = KindCli::default();
    let plan = plan(&kind, args.force).await;
    for line in describe(&plan, args.dry_run) {
        println!("{line}");
    }
    if args.dry_run {
        return Ok(Exit::Pass);
    }
    let failures = execute(&kind, &plan).await;
    if failures.is_empty() {
        Ok(Exit::Pass)
    } else {
        Err(miette::miette!(
            help = "rerun `zdt clean`; `docker ps -a --filter label=zdt.managed=true` and `kind get clusters` show what is left",
            "zdt clean could not remove everything:\n{}",
            failures.join("\n")
        ))
    }
}
