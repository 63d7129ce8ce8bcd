//! What an attack sends: one request, repeated at a constant rate.
//!
//! This is the one type for it. A scenario's `traffic:` section validates
//! into it, `zdt attack`'s flags convert into it, and it crosses to the
//! generator's child process as it is (its serde form is exact), so no
//! setting has a second copy to be forgotten in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TrafficError;
use zdt_core::units::{Dur, Rate};

/// The default bound on requests in flight: high enough that a 10 s timeout
/// storm at 5000/s never hits it, low enough to stay within the fd limit.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100_000;
/// The smallest time bucket.
pub const MIN_BUCKET: Duration = Duration::from_millis(100);
/// Redirects followed per request unless told otherwise (vegeta's default).
pub const DEFAULT_REDIRECTS: i32 = 10;
/// The largest in-flight bound accepted.
const MAX_IN_FLIGHT: usize = 1_000_000;

/// The request and its schedule. Build with [`Load::new`] (or a struct
/// literal, which makes every field a decision); [`Load::validate`] checks
/// ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Load {
    #[serde(with = "method")]
    pub method: http::Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Extra request headers, in order (`Host`/`User-Agent` override the
    /// defaults; `Connection` and `Content-Length` are managed by the
    /// generator).
    #[serde(with = "headers")]
    pub headers: Vec<(String, String)>,
    #[serde(with = "body", default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<u8>,
    pub rate: Rate,
    pub duration: Dur,
    /// One timeout covering connect + response head + body, from the send.
    pub timeout: Dur,
    /// false: a fresh TCP connection per request with `Connection: close`.
    pub keep_alive: bool,
    /// Requests in flight at most; beyond it the generator waits and the
    /// lag is reported (requests still waiting at the end: not sent).
    pub max_in_flight: usize,
    /// Width of the time buckets (≥ 100 ms).
    pub bucket: Dur,
    /// Redirects followed per request, as vegeta's `-redirects`: beyond
    /// this many the request fails ("stopped after N redirects"); `-1`
    /// follows none and counts the 3xx response as it is (a success).
    #[serde(default = "default_redirects")]
    pub redirects: i32,
    /// Send a request again on a fresh connection when the reused
    /// keep-alive connection it went out on turns out closed before any
    /// response, as Go's client does (only requests without side effects,
    /// or any request whose write failed). Replays are counted. `false`:
    /// such a request fails, as a client without retries would see it.
    #[serde(default = "yes")]
    pub replay: bool,
}

fn default_redirects() -> i32 {
    DEFAULT_REDIRECTS
}

fn yes() -> bool {
    true
}

impl Load {
    /// GET `/` at `rate` for `duration`, with a 10 s timeout, no keep-alive
    /// (the scenario default), 1 s buckets, vegeta's 10 redirects and
    /// replays on.
    pub fn new(rate: Rate, duration: Dur) -> Self {
        Self {
            method: http::Method::GET,
            path: "/".into(),
            headers: Vec::new(),
            body: Vec::new(),
            rate,
            duration,
            timeout: Dur::from_secs(10),
            keep_alive: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            bucket: Dur::from_secs(1),
            redirects: DEFAULT_REDIRECTS,
            replay: true,
        }
    }

    /// Checks ranges; each message names the setting and the fix.
    pub fn validate(&self) -> Result<(), TrafficError> {
        let bad = |m: String| Err(TrafficError::Settings(m));
        let duration = self.duration.get();
        if duration.is_zero() {
            return bad("duration must be > 0: write e.g. `10s`".into());
        }
        if self.rate.count_in(duration) == 0 {
            return bad(format!(
                "rate {} for {duration:?} sends no request: raise the rate or the duration",
                self.rate
            ));
        }
        if self.timeout.get().is_zero() {
            return bad("timeout must be > 0: write e.g. `10s`".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return bad(format!(
                "max in-flight {} is out of range: use 1..={MAX_IN_FLIGHT}",
                self.max_in_flight
            ));
        }
        if self.bucket.get() < MIN_BUCKET {
            return bad(format!(
                "bucket {:?} is too small: use ≥ 100ms",
                self.bucket.get()
            ));
        }
        if self.redirects < -1 {
            return bad(format!(
                "redirects {} is out of range: use -1 (follow none) or 0 and up",
                self.redirects
            ));
        }
        if !self.path.starts_with('/') {
            return bad(format!("request path `{}` must start with `/`", self.path));
        }
        for (k, v) in &self.headers {
            let name_ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok();
            if !name_ok || http::HeaderValue::from_str(v).is_err() {
                return bad(format!(
                    "header `{k}: {v}` is not a valid HTTP header: write `Name: value`"
                ));
            }
        }
        Ok(())
    }

    /// Whether the request may go again on a fresh connection after the
    /// reused one was found closed: as Go's net/http, only one without side
    /// effects (an idempotent method, no body).
    pub(crate) fn replayable(&self) -> bool {
        self.body.is_empty()
            && matches!(
                self.method,
                http::Method::GET
                    | http::Method::HEAD
                    | http::Method::OPTIONS
                    | http::Method::TRACE
            )
    }
}

/// The method as its name.
mod method {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(m: &http::Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<http::Method, D::Error> {
        let name = String::deserialize(d)?;
        http::Method::from_bytes(name.as_bytes())
            .map_err(|_| de::Error::custom(format!("method `{name}` is not an HTTP method")))
    }
}

/// Headers as a mapping (as a scenario file writes them), read back in
/// order and with repeated names kept (as `-H` may give them).
mod headers {
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        h: &[(String, String)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(h.iter().map(|(k, v)| (k, v)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(pair) = map.next_entry()? {
                    out.push(pair);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// The body as text when it is UTF-8 (readable in a report), else as its
/// bytes.
mod body {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_bytes(b),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrBytes {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match TextOrBytes::deserialize(d)? {
            TextOrBytes::Text(t) => t.into_bytes(),
            TextOrBytes::Bytes(b) => b,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Load {
        Load {
            method: http::Method::POST,
            path: "/x?y=1".into(),
            headers: vec![
                ("X-B".into(), "2".into()),
                ("X-A".into(), "1".into()),
                ("X-B".into(), "3".into()),
            ],
            body: b"\0\xffbody".to_vec(),
            rate: Rate::per_second(1000.0 / 3.0).unwrap(),
            duration: Dur::from_millis(1500),
            timeout: Dur::from_millis(250),
            keep_alive: true,
            max_in_flight: 7,
            bucket: Dur::from_millis(100),
            redirects: -1,
            replay: false,
        }
    }

    #[test]
    fn json_round_trip_is_exact() {
        for load in [
            full(),
            Load::new("5000/s".parse().unwrap(), Dur::from_secs(60)),
        ] {
            let json = serde_json::to_string(&load).unwrap();
            let back: Load = serde_json::from_str(&json).unwrap();
            assert_eq!(back, load, "{json}");
            assert_eq!(back.rate.get().to_bits(), load.rate.get().to_bits());
        }
    }

    #[test]
    fn serialized_form_is_readable() {
        let mut load = full();
        load.body = b"hello".to_vec();
        let v = serde_json::to_value(&load).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["body"], "hello");
        assert_eq!(v["timeout"], "250ms");
        assert_eq!(v["maxInFlight"], 7);
        assert_eq!(v["headers"]["X-A"], "1");
        let plain = serde_json::to_value(Load::new("5/s".parse().unwrap(), Dur::from_secs(1)));
        assert!(
            plain.unwrap().get("body").is_none(),
            "an empty body is left out"
        );
    }

    #[test]
    fn validate_names_the_setting() {
        let msg = |edit: fn(&mut Load)| {
            let mut l = full();
            edit(&mut l);
            l.validate().unwrap_err().to_string()
        };
        assert!(full().validate().is_ok());
        assert!(msg(|l| l.duration = Dur::ZERO).contains("duration must be > 0"));
        assert!(msg(|l| l.max_in_flight = 0).contains("max in-flight 0"));
        assert!(msg(|l| l.bucket = Dur::from_millis(10)).contains("≥ 100ms"));
        assert!(msg(|l| l.path = "x".into()).contains("must start with `/`"));
        assert!(msg(|l| l.redirects = -2).contains("redirects -2 is out of range"));
        assert!(msg(|l| l.headers = vec![("a b".into(), "c".into())]).contains("`a b: c`"));
    }
}
