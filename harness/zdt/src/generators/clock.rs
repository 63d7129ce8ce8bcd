//! A wall clock's offset from the API server's, read from the `Date` header
//! of its responses. `Date` has whole seconds, so one response says little;
//! the moment it ticks does: requests go out back to back until two
//! consecutive responses carry different seconds, and the server's clock
//! passed that whole second between the first request's send and the second
//! one's answer. The offset is the middle of that window, its uncertainty
//! half the window (a few round trips). Bounded: at most [`MAX_SAMPLES`]
//! requests within [`MAX_SPAN`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Requests at most per measurement.
pub const MAX_SAMPLES: usize = 1500;
/// Time at most per measurement (the `Date` header ticks once a second).
pub const MAX_SPAN: Duration = Duration::from_millis(2500);
/// The pause between requests.
const SPACING: Duration = Duration::from_millis(1);

/// This clock minus the API server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    pub offset: SignedDuration,
    /// The true offset is within this of `offset`, either way.
    pub uncertainty: Duration,
}

impl ClockOffset {
    /// This offset relative to `other`'s (both against the same server):
    /// the difference, with both uncertainties added.
    pub fn relative_to(&self, other: &ClockOffset) -> ClockOffset {
        ClockOffset {
            offset: self.offset - other.offset,
            uncertainty: self.uncertainty + other.uncertainty,
        }
    }

    /// How far apart the two clocks may be at worst.
    pub fn worst(&self) -> Duration {
        self.offset.unsigned_abs() + self.uncertainty
    }

    pub fn offset_ns(&self) -> i64 {
        i64::try_from(self.offset.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// Why no offset could be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    #[error("asking the API server the time: {0}")]
    Request(#[source] kube::Error),
    #[error(
        "the API server's response has no usable `Date` header ({0}); its clock cannot be compared"
    )]
    NoDate(String),
    #[error("the API server's `Date` did not tick within {MAX_SPAN:?} ({samples} requests)")]
    NoTick { samples: usize },
}

/// One request: sent and answered on this clock, and the server's `Date`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub sent: Timestamp,
    pub answered: Timestamp,
    pub date: Timestamp,
}

/// The offset from the first pair of consecutive samples whose `Date`
/// differs (the server's clock was at the later `Date` exactly somewhere in
/// `[first.sent, second.answered]`).
pub(crate) fn from_samples(samples: &[Sample]) -> Option<ClockOffset> {
    samples.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        (b.date > a.date).then(|| {
            let window = b.answered.duration_since(a.sent);
            let middle = a.sent + window / 2;
            ClockOffset {
                offset: middle.duration_since(b.date),
                uncertainty: window.unsigned_abs() / 2,
            }
        })
    })
}

fn parse_date(value: &str) -> Option<Timestamp> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()
}

async fn sample(client: &kube::Client) -> Result<Sample, ClockError> {
    let request = http::Request::get("/version")
        .body(Vec::new())
        .expect("a static request is valid");
    let sent = Timestamp::now();
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(ClockError::Request)?;
    let answered = Timestamp::now();
    let header = response.headers().get(http::header::DATE);
    let date = header
        .and_then(|v| v.to_str().ok())
        .and_then(parse_date)
        .ok_or_else(|| {
            ClockError::NoDate(match header {
                Some(v) => format!("`{}`", String::from_utf8_lossy(v.as_bytes())),
                None => "none".into(),
            })
        })?;
    Ok(Sample {
        sent,
        answered,
        date,
    })
}

/// Measure this clock's offset from the API server's.
pub async fn measure(client: &kube::Client) -> Result<ClockOffset, ClockError> {
    let began = tokio::time::Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    while samples.len() < MAX_SAMPLES && began.elapsed() < MAX_SPAN {
        let s = sample(client).await?;
        if let Some(last) = samples.last() {
            if s.date > last.date {
                return Ok(from_samples(&[*last, s]).expect("the date ticked"));
            }
        }
        samples.push(s);
        tokio::time::sleep(SPACING).await;
    }
    Err(ClockError::NoTick {
        samples: samples.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn the_offset_is_the_middle_of_the_tick_window() {
        // This clock is 300 ms ahead: the server's second 1 (local 1300 ms)
        // falls between the request sent at 1290 and the one answered at
        // 1304.
        let s = |sent: i64, answered: i64, server_s: i64| Sample {
            sent: at(sent),
            answered: at(answered),
            date: at(server_s * 1000),
        };
        let samples = [s(1280, 1284, 0), s(1290, 1294, 0), s(1300, 1304, 1)];
        let o = from_samples(&samples).unwrap();
        assert_eq!(o.offset, SignedDuration::from_millis(297));
        assert_eq!(o.uncertainty, Duration::from_millis(7));
        assert!(o.worst() >= Duration::from_millis(300));
        assert!(from_samples(&samples[..2]).is_none());
        let zero = ClockOffset {
            offset: SignedDuration::from_millis(-3),
            uncertainty: Duration::from_millis(1),
        };
        let rel = o.relative_to(&zero);
        assert_eq!(rel.offset, SignedDuration::from_millis(300));
        assert_eq!(rel.uncertainty, Duration::from_millis(8));
        assert_eq!(rel.offset_ns(), 300_000_000);
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some("1994-11-06T08:49:37Z".parse().unwrap())
        );
        assert_eq!(parse_date("yesterday"), None);
    }
}
