//! Writing a run's data: `summary.json`, `events.jsonl` (one event per line
//! with its variant), `buckets.json` (variant → time buckets) and
//! `traffic/VARIANT.json` (the full traffic summary). Written after every
//! variant, so an interrupted run still leaves what it measured.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use zdt_core::events::Event;
use zdt_traffic as traffic;

use super::summary::RunSummary;

/// An event as stored in `events.jsonl`.
#[derive(Serialize)]
struct StoredEvent<'a> {
    variant: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// The run's data so far.
#[derive(Default)]
pub struct RunData {
    pub events: Vec<(String, Event)>,
    pub traffic: BTreeMap<String, traffic::Summary>,
}

/// A run's data could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct OutputError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn io_err(path: &Path, e: impl Into<std::io::Error>) -> OutputError {
    OutputError {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), OutputError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| io_err(path, e))?;
    // Write then rename, so a reader (or a Ctrl-C) never sees half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Write everything to `out` (created if needed); returns the files written.
pub fn write(
    out: &Path,
    summary: &RunSummary,
    data: &RunData,
) -> Result<Vec<PathBuf>, OutputError> {
    std::fs::create_dir_all(out.join("traffic")).map_err(|e| io_err(out, e))?;
    let mut written = Vec::new();

    let p = out.join("summary.json");
    write_json(&p, summary)?;
    written.push(p);

    let p = out.join("events.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).map_err(|e| io_err(&p, e))?);
    for (variant, event) in &data.events {
        serde_json::to_writer(&mut f, &StoredEvent { variant, event })
            .map_err(|e| io_err(&p, e))?;
        f.write_all(b"\n").map_err(|e| io_err(&p, e))?;
    }
    f.flush().map_err(|e| io_err(&p, e))?;
    written.push(p);

    let buckets: BTreeMap<&str, &Vec<traffic::Bucket>> = data
        .traffic
        .iter()
        .map(|(k, v)| (k.as_str(), &v.buckets))
        .collect();
    let p = out.join("buckets.json");
    write_json(&p, &buckets)?;
    written.push(p);

    for (variant, t) in &data.traffic {
        let p = out
            .join("traffic")
            .join(format!("{}.json", sanitize(variant)));
        write_json(&p, t)?;
        written.push(p);
    }
    Ok(written)
}

/// The manifests a variant applies (rendered from a kustomization or a
/// chart, mitigations and patches applied) as `OUT/manifests/VARIANT.yaml`,
/// so a report shows exactly what ran.
pub fn write_manifests(
    out: &Path,
    variant: &str,
    objects: &[serde_json::Value],
) -> Result<PathBuf, OutputError> {
    let dir = out.join("manifests");
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let p = dir.join(format!("{}.yaml", sanitize(variant)));
    let mut text = String::new();
    for o in objects {
        text.push_str("---\n");
        let doc = serde_saphyr::to_string(o)
            .map_err(|e| io_err(&p, std::io::Error::other(e.to_string())))?;
        text.push_str(&doc);
    }
    std::fs::write(&p, text).map_err(|e| io_err(&p, e))?;
    Ok(p)
}

/// Variant names become file names: keep them portable.
pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
