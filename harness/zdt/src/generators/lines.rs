//! What crosses between zdt and its generator pods: the settings (one JSON
//! value in the pod's environment) and the generator's reports (one JSON
//! object per line on its stdout, which is the pod's log). Times are
//! relative to the shared start; the histograms are hdrhistogram's V2
//! compressed encoding in base64, so the merge is exact.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use zdt_core::events::duration_ns;
use zdt_traffic::merge::{EncodedHistograms, MergeError};
use zdt_traffic::{Part, Settings, Snapshot, Summary};

/// How often a generator reads the barrier ConfigMap.
pub const BARRIER_POLL: Duration = Duration::from_millis(100);
/// How often a generator reports progress.
pub const PROGRESS_TICK: Duration = Duration::from_secs(1);
/// The barrier ConfigMap's key for the start time (RFC 3339, the API
/// server's clock).
pub const START_KEY: &str = "start";
/// Its key for zdt's own clock offset from the API server, in ns.
pub const RUN_OFFSET_KEY: &str = "runOffsetNs";
/// Its key telling the generators not to start (the value says why).
pub const ABORT_KEY: &str = "abort";

/// A generator's settings (the `ZDT_GENERATOR` environment variable).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// What this generator sends: its share of the rate, the rest as the
    /// scenario says; the target is the LB as seen from inside the cluster.
    pub settings: Settings,
    /// The barrier: a ConfigMap in this namespace.
    pub namespace: String,
    pub barrier: String,
    /// How long to wait for the start time before giving up.
    #[serde(with = "duration_ns")]
    pub start_timeout: Duration,
    /// The clock bound ([`super::CLOCK_BOUND`]), carried so both sides
    /// apply the same one.
    #[serde(with = "duration_ns")]
    pub clock_bound: Duration,
}

/// One line of a generator's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// Up, clock measured, waiting for the start time.
    Ready {
        index: u32,
        /// Its clock minus the API server's, ns.
        clock_offset_ns: i64,
        #[serde(with = "duration_ns")]
        clock_uncertainty: Duration,
    },
    /// Sending: request 0 was due this long after the shared start.
    Started {
        #[serde(with = "duration_ns")]
        late: Duration,
        total: u64,
    },
    Progress(Snapshot),
    /// The end: the summary (times from the shared start) and the
    /// histograms behind it.
    Result(Box<ResultLine>),
    /// It could not run; the message says why.
    Error {
        message: String,
    },
}

/// A generator's result (boxed in [`Line`]: it is by far the largest).
#[derive(Debug, Serialize, Deserialize)]
pub struct ResultLine {
    pub summary: Summary,
    pub histograms: EncodedHistograms,
    /// The float fields exactly (JSON may lose their last bit).
    pub achieved_rate_bits: u64,
    pub throughput_bits: u64,
}

impl ResultLine {
    pub fn new(part: &Part) -> Result<Self, MergeError> {
        Ok(Self {
            summary: part.summary.clone(),
            histograms: part.histograms.encode()?,
            achieved_rate_bits: part.summary.achieved_rate.to_bits(),
            throughput_bits: part.summary.throughput.to_bits(),
        })
    }

    /// The part, its times moved onto the run's clock: `start` is the
    /// shared start there.
    pub fn into_part(self, start: Duration) -> Result<Part, MergeError> {
        let mut summary = self.summary;
        summary.achieved_rate = f64::from_bits(self.achieved_rate_bits);
        summary.throughput = f64::from_bits(self.throughput_bits);
        summary.started_at += start;
        Ok(Part {
            summary,
            histograms: self.histograms.decode()?,
        })
    }
}

impl Line {
    /// The line as written (no newline).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a report line always serialises")
    }

    pub fn decode(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;
    use zdt_core::clock::Clock;

    #[test]
    fn every_line_reads_back_as_written() {
        let lines = [
            Line::Ready {
                index: 3,
                clock_offset_ns: -1_234_567,
                clock_uncertainty: Duration::from_micros(800),
            },
            Line::Started {
                late: Duration::from_micros(150),
                total: 1000,
            },
            Line::Progress(Snapshot {
                done: 10,
                successes: 9,
                p99: Duration::from_millis(3),
                max_lag: Duration::from_micros(20),
            }),
            Line::Error {
                message: "no start".into(),
            },
        ];
        for l in lines {
            let text = l.encode();
            assert!(!text.contains('\n'), "{text}");
            assert_eq!(
                format!("{:?}", Line::decode(&text).unwrap()),
                format!("{l:?}")
            );
        }
        assert!(Line::decode("{\"started\":{}}").is_err());
    }

    #[tokio::test]
    async fn a_result_line_carries_the_part_exactly() {
        // A real attack on a port nothing listens on: every request fails
        // fast, which is a result like any other.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let settings = Settings::new(
            &format!("http://127.0.0.1:{port}/"),
            "200/s".parse().unwrap(),
            Duration::from_millis(300),
        )
        .unwrap();
        let part = zdt_traffic::Attack::start(settings, Clock::start(), CancellationToken::new())
            .await
            .unwrap()
            .finish_with_histograms()
            .await
            .unwrap();
        assert!(part.summary.requests > 0);
        let text = Line::Result(Box::new(ResultLine::new(&part).unwrap())).encode();
        let Line::Result(back) = Line::decode(&text).unwrap() else {
            panic!("not a result: {text}");
        };
        let start = Duration::from_secs(7);
        let back = back.into_part(start).unwrap();
        let mut want = part.summary.clone();
        want.started_at += start;
        assert_eq!(back.summary, want);
        assert_eq!(back.histograms, part.histograms);
    }
}
