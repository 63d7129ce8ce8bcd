//! The hidden subcommands zdt runs itself as helper processes.

use crate::Exit;

/// `zdt traffic-child`: exit 0 after a summary, 2 after an error report.
pub async fn traffic_child() -> miette::Result<Exit> {
    match zdt_traffic::child::run_child().await {
        Ok(zdt_traffic::child::ChildEnd::Summary) => Ok(Exit::Pass),
        Ok(zdt_traffic::child::ChildEnd::Error) => Ok(Exit::Usage),
        Err(e) => Err(miette::miette!("zdt traffic-child: {e}")),
    }
}

/// `zdt lb-hold`: holds blackholed connections until the LB goes away.
pub async fn lb_hold() -> miette::Result<Exit> {
    zdt_lb::hold::run().await;
    Ok(Exit::Pass)
}

/// `zdt generator`: exit 0 after its result, 2 after an error line (its
/// pod then fails, which zdt reports with the line's message).
pub async fn generator() -> miette::Result<Exit> {
    match zdt::generators::pod::run().await {
        Ok(zdt::generators::pod::GeneratorEnd::Result) => Ok(Exit::Pass),
        Ok(zdt::generators::pod::GeneratorEnd::Error) => Ok(Exit::Usage),
        Err(e) => Err(miette::miette!("zdt generator: {e}")),
    }
}
