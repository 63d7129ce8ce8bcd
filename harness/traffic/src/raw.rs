//! The optional raw result stream: one line per request, CSV or JSON lines,
//! written by a background thread so file I/O never blocks the runtime.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::summary::ErrorKind;
use super::TrafficError;

/// The raw stream's format, chosen by the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawFormat {
    /// `.csv`, with a header line.
    Csv,
    /// `.jsonl` / `.ndjson`: one JSON object per line.
    JsonLines,
}

/// Where to stream every request's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawOutput {
    pub path: PathBuf,
    pub format: RawFormat,
}

impl RawOutput {
    /// The format from the extension: `.csv`, `.jsonl`, `.ndjson`.
    pub fn from_path(path: impl Into<PathBuf>) -> Result<Self, TrafficError> {
        let path = path.into();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => RawFormat::Csv,
            Some("jsonl" | "ndjson") => RawFormat::JsonLines,
            _ => {
                return Err(TrafficError::Settings(format!(
                    "raw output `{}`: unknown format; name the file `*.csv` or `*.jsonl`",
                    path.display()
                )))
            }
        };
        Ok(Self { path, format })
    }
}

/// One line of the raw stream. Times are offsets on the run's clock, so
/// they line up with the run's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    pub seq: u64,
    #[serde(with = "zdt_core::events::duration_ns")]
    pub due: Duration,
    #[serde(with = "zdt_core::units::opt_nanos")]
    pub sent: Option<Duration>,
    /// From the due time; `None` when not sent.
    #[serde(with = "zdt_core::units::opt_nanos")]
    pub latency: Option<Duration>,
    /// From the actual send.
    #[serde(with = "zdt_core::units::opt_nanos")]
    pub latency_uncorrected: Option<Duration>,
    pub status: u16,
    pub error: Option<ErrorKind>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(with = "opt_name")]
    pub node: Option<Arc<str>>,
    #[serde(with = "opt_name")]
    pub pod: Option<Arc<str>>,
}

/// Backend names are shared (`Arc<str>`) so a record costs no allocation.
mod opt_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub(crate) fn serialize<S: Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(v),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Arc::from))
    }
}

/// The sending end, held by the aggregator.
pub(crate) struct RawSink {
    tx: mpsc::Sender<RawRecord>,
}

impl RawSink {
    pub fn send(&self, record: RawRecord) {
        // The writer only goes away on an I/O error, reported at the end.
        let _ = self.tx.send(record);
    }
}

/// The writer thread; `finish` flushes and reports the first I/O error.
pub(crate) struct RawWriter {
    thread: JoinHandle<io::Result<()>>,
    path: PathBuf,
}

/// Create the file now (so a bad path fails before any traffic) and start
/// the writer thread.
pub(crate) fn start(output: &RawOutput) -> Result<(RawSink, RawWriter), TrafficError> {
    let file = File::create(&output.path).map_err(|e| TrafficError::RawOutput {
        path: output.path.clone(),
        source: e,
    })?;
    let (tx, rx) = mpsc::channel::<RawRecord>();
    let format = output.format;
    let thread = std::thread::Builder::new()
        .name("zdt-raw-results".into())
        .spawn(move || write_all(BufWriter::with_capacity(256 * 1024, file), format, rx))
        .map_err(|e| TrafficError::RawOutput {
            path: output.path.clone(),
            source: e,
        })?;
    Ok((
        RawSink { tx },
        RawWriter {
            thread,
            path: output.path.clone(),
        },
    ))
}

impl RawWriter {
    /// Wait for the writer to drain (every `RawSink` must be dropped first).
    pub fn finish(self) -> Result<(), TrafficError> {
        let path = self.path;
        match self.thread.join() {
            Ok(r) => r.map_err(|e| TrafficError::RawOutput { path, source: e }),
            Err(_) => Err(TrafficError::RawOutput {
                path,
                source: io::Error::other("the raw result writer panicked"),
            }),
        }
    }
}

pub const CSV_HEADER: &str =
    "seq,due_ns,sent_ns,latency_ns,latency_uncorrected_ns,status,error,bytes_in,bytes_out,node,pod";

fn write_all(
    mut out: BufWriter<File>,
    format: RawFormat,
    rx: mpsc::Receiver<RawRecord>,
) -> io::Result<()> {
    if format == RawFormat::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    for r in rx {
        match format {
            RawFormat::Csv => write_csv(&mut out, &r)?,
            RawFormat::JsonLines => {
                serde_json::to_writer(&mut out, &r)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()
}

fn write_csv(out: &mut impl Write, r: &RawRecord) -> io::Result<()> {
    let ns = |d: Option<Duration>| d.map(|d| d.as_nanos().to_string()).unwrap_or_default();
    writeln!(
        out,
        "{},{},{},{},{},{},{},{},{},{},{}",
        r.seq,
        r.due.as_nanos(),
        ns(r.sent),
        ns(r.latency),
        ns(r.latency_uncorrected),
        r.status,
        r.error.map(|e| e.as_str()).unwrap_or(""),
        r.bytes_in,
        r.bytes_out,
        csv_field(r.node.as_deref()),
        csv_field(r.pod.as_deref()),
    )
}

/// Backend names come from response headers: quote anything CSV-special.
fn csv_field(v: Option<&str>) -> String {
    match v {
        None => String::new(),
        Some(v) if v.contains([',', '"', '\n', '\r']) => format!("\"{}\"", v.replace('"', "\"\"")),
        Some(v) => v.to_string(),
    }
}

/// Read a raw JSON-lines stream back (post-analysis, tests).
pub fn read_json_lines(path: &Path) -> io::Result<Vec<RawRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(io::Error::other))
        .collect()
}
