//! Units people write in scenario files and on the command line:
//! durations (`10s`, `250ms`, `1m30s`, `1.5s`) and rates (`5000/s`, `300/m`).
//!
//! Both parse from strings only — a bare `10` is an error that says which
//! unit to add, because "10 what?" is exactly the mistake that makes a chaos
//! experiment silently wrong.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parse failure with the fix in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub String);

const DURATION_UNITS: &[(&str, f64)] = &[
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
];

/// A duration written with units, e.g. `10s`, `250ms`, `1m30s`, `1.5s`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const ZERO: Dur = Dur(Duration::ZERO);

    pub fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    pub fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Self {
        Dur(d)
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Self {
        d.0
    }
}

impl FromStr for Dur {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        if s.is_empty() {
            return Err(UnitError(
                "empty duration: write e.g. `10s` or `250ms`".into(),
            ));
        }
        if s == "0" {
            return Ok(Dur::ZERO);
        }
        if s.starts_with('-') {
            return Err(UnitError(format!(
                "duration `{s}` is negative: durations count forward, write e.g. `10s`"
            )));
        }
        let mut rest = s;
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(UnitError(format!(
                    "`{s}` is not a duration: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. `10s`"
                )));
            }
            let number: f64 = rest[..num_len].parse().map_err(|_| {
                UnitError(format!("`{}` in `{s}` is not a number", &rest[..num_len]))
            })?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            if unit.is_empty() {
                return Err(UnitError(format!(
                    "duration `{s}` needs a unit: write `{s}s` for seconds or `{s}ms` for milliseconds"
                )));
            }
            let scale = DURATION_UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    UnitError(format!(
                        "unknown duration unit `{unit}` in `{s}`: use ns, us, ms, s, m or h"
                    ))
                })?;
            total += number * scale;
            rest = &rest[unit_len..];
        }
        if !total.is_finite() || total > 1e9 {
            return Err(UnitError(format!("duration `{s}` is too large")));
        }
        Ok(Dur(Duration::from_secs_f64(total)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns == 0 {
            write!(f, "0s")
        } else if ns.is_multiple_of(1_000_000_000) {
            let s = ns / 1_000_000_000;
            if s.is_multiple_of(3600) {
                write!(f, "{}h", s / 3600)
            } else if s.is_multiple_of(60) {
                write!(f, "{}m", s / 60)
            } else {
                write!(f, "{s}s")
            }
        } else if ns.is_multiple_of(1_000_000) {
            write!(f, "{}ms", ns / 1_000_000)
        } else if ns.is_multiple_of(1_000) {
            write!(f, "{}us", ns / 1_000)
        } else {
            write!(f, "{ns}ns")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = StringOrNumber::deserialize(d)?;
        match raw {
            StringOrNumber::String(s) => s.parse().map_err(serde::de::Error::custom),
            StringOrNumber::Number(0.0) => Ok(Dur::ZERO),
            // Suggesting `-1s` would suggest another invalid value.
            StringOrNumber::Number(n) if n < 0.0 || !n.is_finite() => {
                Err(serde::de::Error::custom(format!(
                    "duration `{n}` is negative: durations count forward, write e.g. `10s`"
                )))
            }
            StringOrNumber::Number(n) => Err(serde::de::Error::custom(format!(
                "duration `{n}` needs a unit: write `{n}s` for seconds or `{n}ms` for milliseconds"
            ))),
        }
    }
}

/// Requests per second, written `5000/s`, `300/m`, `2/ms`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate {
    per_second: f64,
}

impl Rate {
    /// The most the generator is asked to schedule: one request a
    /// microsecond. Its timers cannot pace finer, and one machine reaches
    /// about 50,000/s (README, Benchmarks); a higher rate would only queue
    /// requests that are late before they are sent.
    pub const MAX_PER_SECOND: f64 = 1_000_000.0;

    /// A rate in requests per second; must be finite, > 0 and at most
    /// [`Rate::MAX_PER_SECOND`].
    pub fn per_second(per_second: f64) -> Result<Self, UnitError> {
        if per_second > Self::MAX_PER_SECOND && per_second.is_finite() {
            Err(UnitError(format!(
                "rate {per_second}/s is more than the generator can schedule (at most 1000000/s, one request a microsecond; one machine sends about 50000/s): write e.g. `5000/s`"
            )))
        } else if per_second.is_finite() && per_second > 0.0 {
            Ok(Rate { per_second })
        } else {
            Err(UnitError(format!(
                "rate must be > 0 (got {per_second}/s): write e.g. `5000/s`"
            )))
        }
    }

    pub fn get(self) -> f64 {
        self.per_second
    }

    /// The gap between two consecutive requests.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }

    /// How many requests are due in `d` (rounded down).
    pub fn count_in(self, d: Duration) -> u64 {
        (self.per_second * d.as_secs_f64() + 1e-9).floor() as u64
    }
}

impl FromStr for Rate {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        let Some((num, unit)) = s.split_once('/') else {
            return Err(UnitError(format!(
                "rate `{s}` needs a unit: write `{s}/s` (per second) or `{s}/m` (per minute)"
            )));
        };
        let n: f64 = num.trim().parse().map_err(|_| {
            UnitError(format!(
                "`{}` in rate `{s}` is not a number: write e.g. `5000/s`",
                num.trim()
            ))
        })?;
        let per = match unit.trim() {
            "s" | "1s" => 1.0,
            "ms" => 1e-3,
            "m" | "1m" => 60.0,
            "h" | "1h" => 3600.0,
            other => {
                let d: Dur = other.parse().map_err(|_| {
                    UnitError(format!(
                        "unknown rate unit `/{other}` in `{s}`: use /s, /m or /h"
                    ))
                })?;
                d.0.as_secs_f64()
            }
        };
        if per <= 0.0 {
            return Err(UnitError(format!("rate `{s}` has a zero time unit")));
        }
        let per_second = n / per;
        Rate::per_second(per_second).map_err(|e| {
            if per_second > 0.0 {
                e
            } else {
                UnitError(format!("rate must be > 0 (got `{s}`): write e.g. `5000/s`"))
            }
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.per_second;
        if r >= 1.0 && (r - r.round()).abs() < 1e-9 {
            write!(f, "{}/s", r.round() as u64)
        } else if (r * 60.0 - (r * 60.0).round()).abs() < 1e-6 {
            write!(f, "{}/m", (r * 60.0).round() as u64)
        } else {
            write!(f, "{r}/s")
        }
    }
}

impl Serialize for Rate {
    /// As displayed (`5000/s`, `20000/m`) when that reads back to the same
    /// rate, else every digit (`500.00000000000006/s`): a rate that crosses
    /// a process boundary or a file is the rate that was sent.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let shown = self.to_string();
        let exact = shown
            .parse::<Rate>()
            .is_ok_and(|r| r.per_second.to_bits() == self.per_second.to_bits());
        if exact {
            s.serialize_str(&shown)
        } else {
            // f64's Display is the shortest text that parses back to it.
            s.collect_str(&format_args!("{}/s", self.per_second))
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StringOrNumber::deserialize(d)? {
            StringOrNumber::String(s) => s.parse().map_err(serde::de::Error::custom),
            // Suggesting `0/s` would suggest another invalid value.
            StringOrNumber::Number(n) if n <= 0.0 || n.is_nan() => Err(serde::de::Error::custom(
                format!("rate must be > 0 (got `{n}`): write e.g. `5000/s`"),
            )),
            StringOrNumber::Number(n) => Err(serde::de::Error::custom(format!(
                "rate `{n}` needs a unit: write `{n}/s` (per second) or `{n}/m` (per minute)"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(f64),
}

/// `#[serde(with = "zdt_core::units::opt_nanos")]`: an optional duration as
/// whole nanoseconds (a JSON number), `null` when absent.
pub mod opt_nanos {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        for (text, ms) in [
            ("10s", 10_000),
            ("250ms", 250),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("0", 0),
            ("0s", 0),
            ("2h", 7_200_000),
        ] {
            assert_eq!(text.parse::<Dur>().unwrap().0.as_millis(), ms, "{text}");
        }
        assert_eq!(
            "100us".parse::<Dur>().unwrap().0,
            Duration::from_micros(100)
        );
    }

    #[test]
    fn durations_reject_with_the_fix() {
        let e = "10".parse::<Dur>().unwrap_err().0;
        assert!(e.contains("`10s`"), "{e}");
        let e = "10x".parse::<Dur>().unwrap_err().0;
        assert!(e.contains("unknown duration unit `x`"), "{e}");
        assert!("s".parse::<Dur>().is_err());
        assert!("".parse::<Dur>().is_err());
        assert!("1..2s".parse::<Dur>().is_err());
    }

    #[test]
    fn durations_display_round_trips() {
        for text in ["10s", "250ms", "90s", "2m", "1h", "100us", "0s", "1500ms"] {
            let d: Dur = text.parse().unwrap();
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d, "{text}");
        }
        assert_eq!("1m30s".parse::<Dur>().unwrap().to_string(), "90s");
    }

    #[test]
    fn rates_parse() {
        assert_eq!("5000/s".parse::<Rate>().unwrap().get(), 5000.0);
        assert_eq!("300/m".parse::<Rate>().unwrap().get(), 5.0);
        assert_eq!("2/ms".parse::<Rate>().unwrap().get(), 2000.0);
        assert_eq!("10/500ms".parse::<Rate>().unwrap().get(), 20.0);
        assert_eq!(
            "5000/s".parse::<Rate>().unwrap().interval(),
            Duration::from_micros(200)
        );
        assert_eq!(
            "5000/s"
                .parse::<Rate>()
                .unwrap()
                .count_in(Duration::from_secs(60)),
            300_000
        );
    }

    #[test]
    fn rates_reject_with_the_fix() {
        let e = "5000".parse::<Rate>().unwrap_err().0;
        assert!(e.contains("`5000/s`"), "{e}");
        let e = "0/s".parse::<Rate>().unwrap_err().0;
        assert!(e.contains("must be > 0"), "{e}");
        let e = "-5/s".parse::<Rate>().unwrap_err().0;
        assert!(e.contains("must be > 0"), "{e}");
        let e = "5/fortnight".parse::<Rate>().unwrap_err().0;
        assert!(e.contains("/s, /m or /h"), "{e}");
    }

    #[test]
    fn serde_uses_strings_and_explains_bare_numbers() {
        #[derive(Deserialize, Serialize)]
        struct T {
            d: Dur,
            r: Rate,
        }
        let t: T = serde_json::from_str(r#"{"d":"10s","r":"300/m"}"#).unwrap();
        assert_eq!(t.d, Dur::from_secs(10));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"d":"10s","r":"5/s"}"#
        );
        let e = serde_json::from_str::<T>(r#"{"d":10,"r":"1/s"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`10s`"), "{e}");
    }

    #[test]
    fn rates_serialize_exactly() {
        // Displayed `18/m`, which reads back as 0.3.
        let scaled = Rate::per_second(0.1 + 0.2).unwrap();
        for r in [
            scaled,
            Rate::per_second(1000.0 / 3.0).unwrap(),
            Rate::per_second(1e-7).unwrap(),
            Rate::per_second(123456.789).unwrap(),
            "300/m".parse().unwrap(),
        ] {
            let json = serde_json::to_string(&r).unwrap();
            let back: Rate = serde_json::from_str(&json).unwrap();
            assert_eq!(back.get().to_bits(), r.get().to_bits(), "{json}");
        }
        assert_eq!(
            serde_json::to_string(&scaled).unwrap(),
            r#""0.30000000000000004/s""#
        );
    }

    /// Issue #17 item 5: every hint names a value that parses.
    #[test]
    fn hints_only_suggest_values_that_validate() {
        let dur = |y: &str| serde_json::from_str::<Dur>(y).unwrap_err().to_string();
        let rate = |y: &str| serde_json::from_str::<Rate>(y).unwrap_err().to_string();
        assert_eq!(
            dur("-1"),
            "duration `-1` is negative: durations count forward, write e.g. `10s`"
        );
        assert_eq!(
            dur("\"-1s\""),
            "duration `-1s` is negative: durations count forward, write e.g. `10s`"
        );
        assert_eq!(rate("0"), "rate must be > 0 (got `0`): write e.g. `5000/s`");
        assert_eq!(
            rate("\"0/s\""),
            "rate must be > 0 (got `0/s`): write e.g. `5000/s`"
        );
        assert!("10s".parse::<Dur>().is_ok() && "5000/s".parse::<Rate>().is_ok());
    }

    #[test]
    fn a_rate_the_generator_cannot_schedule_is_refused() {
        let e = "1e9/s".parse::<Rate>().unwrap_err().to_string();
        assert_eq!(
            e,
            "rate 1000000000/s is more than the generator can schedule (at most 1000000/s, one request a microsecond; one machine sends about 50000/s): write e.g. `5000/s`"
        );
        assert!("1000000/s".parse::<Rate>().is_ok());
    }
}
