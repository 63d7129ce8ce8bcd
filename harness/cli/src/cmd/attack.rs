//! `zdt attack`: the generator standalone, with vegeta's report on stdout.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use miette::{miette, IntoDiagnostic};
use tokio_util::sync::CancellationToken;

use crate::Exit;
use zdt_core::clock::Clock;
use zdt_core::units::{Dur, Rate};
use zdt_traffic::{Attack, Load, Progress, RawOutput, Settings, Summary, Target};

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// vegeta's text report plus zdt's additions.
    Text,
    /// vegeta's JSON report plus zdt's additions (latencies in ns).
    Json,
}

/// `zdt attack URL …`
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Request i is due at t0 + i/rate; latency is measured from that due time (and from the actual send). Exit status 0 when the attack completes, whatever the responses; 2 for bad flags."
)]
pub struct AttackArgs {
    /// Target URL (http://HOST:PORT/PATH).
    pub url: String,
    /// Requests per second, e.g. `5000/s` or `300/m`.
    #[arg(long, default_value = "50/s")]
    pub rate: Rate,
    /// How long to send, e.g. `10s`, `1m`.
    #[arg(long, default_value = "10s")]
    pub duration: Dur,
    /// One timeout covering connect + response headers + body.
    #[arg(long, default_value = "10s")]
    pub timeout: Dur,
    /// Reuse connections (`true`), or one fresh connection per request with
    /// `Connection: close` (`false`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub keepalive: bool,
    /// Requests in flight at most; at the bound the generator waits (and
    /// reports its lag); requests still waiting at the end are "not sent".
    #[arg(long = "max-inflight", default_value_t = zdt_traffic::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// With keep-alive: connections open at most.
    #[arg(long, default_value_t = zdt_traffic::DEFAULT_POOL_CAP)]
    pub connections: usize,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also stream every result to this file (`.csv` or `.jsonl`).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Time bucket width for the per-bucket counts (≥ 100ms).
    #[arg(long, default_value = "1s")]
    pub bucket: Dur,
    /// Request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request body (`@FILE` reads a file).
    #[arg(long)]
    pub body: Option<String>,
    /// Redirects to follow per request, as vegeta's `-redirects`: beyond N
    /// the request fails; `-1` follows none and counts the 3xx as a success.
    #[arg(long, default_value_t = zdt_traffic::DEFAULT_REDIRECTS, allow_negative_numbers = true, value_name = "N")]
    pub redirects: i32,
    /// Re-send a request without side effects on a fresh connection when
    /// its reused keep-alive connection turns out closed before any
    /// response, as Go's client does (counted as "Replayed"); `false`
    /// reports those failures instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub replay: bool,
}

impl AttackArgs {
    /// Flags → validated settings, in this one place: the struct literals
    /// name every field, so a setting added to [`Load`] cannot be skipped
    /// here. Every error names the flag and the fix.
    pub fn settings(&self) -> miette::Result<Settings> {
        check_url(&self.url)?;
        let (target, path) = Target::parse(&self.url).map_err(|e| miette!("URL: {e}"))?;
        let settings = Settings {
            target,
            load: Load {
                method: self.method()?,
                path,
                headers: self.headers()?,
                body: self.body()?,
                rate: self.rate,
                duration: self.duration,
                timeout: self.timeout,
                keep_alive: self.keepalive,
                max_in_flight: self.max_in_flight,
                bucket: self.bucket,
                redirects: self.redirects,
                replay: self.replay,
            },
            pool_cap: self.connections,
            raw: match &self.output {
                Some(path) => {
                    Some(RawOutput::from_path(path).map_err(|e| miette!("--output: {e}"))?)
                }
                None => None,
            },
            net: zdt_core::netns::Net::host(),
        };
        settings.validate().map_err(|e| miette!("{e}"))?;
        Ok(settings)
    }

    fn method(&self) -> miette::Result<http::Method> {
        http::Method::from_bytes(self.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            miette!(
                "--method `{}` is not an HTTP method: use e.g. GET or POST",
                self.method
            )
        })
    }

    fn headers(&self) -> miette::Result<Vec<(String, String)>> {
        self.headers
            .iter()
            .map(|h| match h.split_once(':') {
                Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
                None => Err(miette!("-H `{h}`: write `Name: value`")),
            })
            .collect()
    }

    fn body(&self) -> miette::Result<Vec<u8>> {
        match self.body.as_deref().map(|b| (b, b.strip_prefix('@'))) {
            None => Ok(Vec::new()),
            Some((_, Some(path))) => {
                std::fs::read(path).map_err(|e| miette!("--body @{path}: {e}"))
            }
            Some((text, None)) => Ok(text.as_bytes().to_vec()),
        }
    }
}

/// What the generator's URL parser would misexplain: another scheme (it
/// suggested `http://ftp://…`) and a port past 65535.
fn check_url(url: &str) -> miette::Result<()> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(miette!(
                help = format!(
                    "zdt sends plain HTTP/1.1: write http://{rest} if the target speaks HTTP"
                ),
                "URL `{url}`: scheme `{scheme}` is not supported, only `http`"
            ));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // `[::1]:8080` keeps its port after the bracket, `host:8080` after
        // the colon.
        let port = match authority.strip_prefix('[') {
            Some(v6) => v6.split_once("]:").map(|(_, p)| p),
            None => authority.rsplit_once(':').map(|(_, p)| p),
        };
        if let Some(port) = port {
            if !port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
                return Err(miette!(
                    help = "ports are 1 … 65535, e.g. http://127.0.0.1:8080/",
                    "URL `{url}`: port `{port}` is not a TCP port"
                ));
            }
        }
    }
    Ok(())
}

pub async fn run(args: AttackArgs) -> miette::Result<Exit> {
    let settings = args.settings()?;
    let cancel = CancellationToken::new();
    let attack = Attack::start(settings, Clock::start(), cancel.clone())
        .await
        .map_err(|e| miette!("{e}"))?;
    // Ctrl-C or SIGTERM stops sending; the report still covers what was sent.
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            crate::signals::stop_requested().await;
            cancel.cancel();
        }))
    };
    let bar = std::io::stdout()
        .is_terminal()
        .then(|| progress_bar(attack.progress()));
    let summary = attack.finish().await.map_err(|e| miette!("{e}"))?;
    drop(ctrl_c);
    if let Some(bar) = bar {
        bar.abort();
        let _ = bar.await;
    }
    print_report(&summary, args.format)?;
    Ok(Exit::Pass)
}

fn print_report(summary: &Summary, format: Format) -> miette::Result<()> {
    use std::io::Write;
    let text = match format {
        Format::Text => zdt_traffic::report::text(summary),
        Format::Json => zdt_traffic::report::json(summary),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).into_diagnostic()?;
    out.flush().into_diagnostic()
}

/// Live progress on stderr: elapsed, sent, success, p99 and the largest
/// send lag so far.
fn progress_bar(progress: Progress) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new(progress.total());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        let _clear = scopeguard(bar.clone());
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let snap = progress.snapshot();
            bar.set_position(snap.done);
            let ratio = if snap.done == 0 {
                100.0
            } else {
                snap.successes as f64 / snap.done as f64 * 100.0
            };
            let d = |d| zdt_traffic::report::go_duration(zdt_traffic::report::round(d));
            bar.set_message(format!(
                "success {ratio:.2}%  p99 {}  send lag max {}",
                d(snap.p99),
                d(snap.max_lag)
            ));
        }
    })
}

/// Clears the bar when the progress task ends (or is aborted).
fn scopeguard(bar: indicatif::ProgressBar) -> impl Drop {
    struct Clear(indicatif::ProgressBar);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.0.finish_and_clear();
        }
    }
    Clear(bar)
}
