//! `junit.xml` for CI systems: one `<testsuite>` per variant, one
//! `<testcase>` per expectation. A failed expectation is a `<failure>`; an
//! INVALID or INCOMPLETE variant cannot be trusted either way, so each of its
//! cases is an `<error>` (CI shows "broken", not "failed").
//!
//! The layout is the common one (Jenkins/Ant `testsuites > testsuite >
//! testcase > failure|error`, with `name`, `tests`, `failures`, `errors`,
//! `skipped`, `time`, `timestamp` on suites and `name`, `classname`, `time`
//! on cases) that GitLab, GitHub Actions reporters and Jenkins all read.

use std::io::{self, Write};

use super::format::escape;
use super::verdict_word;
use crate::run::summary::{RunSummary, VariantSummary, Verdict};

struct Case {
    name: String,
    outcome: Outcome,
}

enum Outcome {
    Ok,
    Failure { message: String, body: String },
    Error { kind: &'static str, message: String },
}

pub fn write(w: &mut dyn Write, s: &RunSummary) -> io::Result<()> {
    let suites: Vec<(&VariantSummary, Vec<Case>)> =
        s.variants.iter().map(|v| (v, cases(v))).collect();
    let count = |f: fn(&Outcome) -> bool| -> usize {
        suites
            .iter()
            .map(|(_, cs)| cs.iter().filter(|c| f(&c.outcome)).count())
            .sum()
    };
    let tests: usize = suites.iter().map(|(_, cs)| cs.len()).sum();
    let failures = count(|o| matches!(o, Outcome::Failure { .. }));
    let errors = count(|o| matches!(o, Outcome::Error { .. }));
    let total_time: f64 = s.variants.iter().map(duration_s).sum();
    let timestamp = timestamp(&s.started_at);

    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<testsuites name="{}" tests="{tests}" failures="{failures}" errors="{errors}" skipped="0" time="{total_time:.3}">"#,
        escape(&format!("zdt {}", s.scenario))
    )?;
    for (i, (v, cs)) in suites.iter().enumerate() {
        let classname = escape(&format!("zdt.{}.{}", s.scenario, v.name));
        let f = cs
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failure { .. }))
            .count();
        let e = cs
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Error { .. }))
            .count();
        writeln!(
            w,
            r#"  <testsuite name="{}" id="{i}" package="zdt" tests="{}" failures="{f}" errors="{e}" skipped="0" time="{:.3}" timestamp="{timestamp}" hostname="localhost">"#,
            escape(&format!("{}/{}", s.scenario, v.name)),
            cs.len(),
            duration_s(v),
        )?;
        writeln!(w, "    <properties>")?;
        for (name, value) in [
            ("provider", s.provider.as_str()),
            ("emulated", if s.emulated { "true" } else { "false" }),
            ("zdt_version", s.zdt_version.as_str()),
            ("verdict", verdict_word(v.verdict)),
            ("scenario_file", s.file.as_str()),
        ] {
            writeln!(
                w,
                r#"      <property name="{}" value="{}"/>"#,
                escape(name),
                escape(value)
            )?;
        }
        writeln!(
            w,
            r#"      <property name="success_ratio" value="{}"/>"#,
            v.success_ratio
        )?;
        writeln!(
            w,
            r#"      <property name="requests" value="{}"/>"#,
            v.requests
        )?;
        writeln!(w, "    </properties>")?;
        for c in cs {
            let open = format!(
                r#"    <testcase name="{}" classname="{classname}" time="{:.3}""#,
                escape(&c.name),
                duration_s(v)
            );
            match &c.outcome {
                Outcome::Ok => writeln!(w, "{open}/>")?,
                Outcome::Failure { message, body } => {
                    writeln!(w, "{open}>")?;
                    writeln!(
                        w,
                        r#"      <failure message="{}" type="expectation">{}</failure>"#,
                        escape(message),
                        escape(body)
                    )?;
                    writeln!(w, "    </testcase>")?;
                }
                Outcome::Error { kind, message } => {
                    writeln!(w, "{open}>")?;
                    writeln!(
                        w,
                        r#"      <error message="{}" type="{kind}">{}</error>"#,
                        escape(message),
                        escape(message)
                    )?;
                    writeln!(w, "    </testcase>")?;
                }
            }
        }
        let out: Vec<String> = v
            .error_windows
            .iter()
            .map(|e| e.explanation.clone())
            .collect();
        if !out.is_empty() {
            writeln!(
                w,
                "    <system-out>{}</system-out>",
                escape(&out.join("\n"))
            )?;
        }
        writeln!(w, "  </testsuite>")?;
    }
    writeln!(w, "</testsuites>")
}

fn cases(v: &VariantSummary) -> Vec<Case> {
    let untrusted = match v.verdict {
        Verdict::Invalid => Some(("invalid", "run invalid")),
        Verdict::Incomplete => Some(("incomplete", "run incomplete")),
        Verdict::Pass | Verdict::Fail => None,
    };
    let why = if v.reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", v.reasons.join("; "))
    };
    let mut out: Vec<Case> = v
        .expectations
        .iter()
        .map(|e| {
            let name = format!("{} {}", e.name, e.threshold);
            let outcome = match untrusted {
                Some((kind, what)) => Outcome::Error {
                    kind,
                    message: format!("{what}{why}"),
                },
                None if e.ok => Outcome::Ok,
                None => Outcome::Failure {
                    message: format!("{}: expected {}, got {}", e.name, e.threshold, e.actual),
                    body: format!(
                        "expected {} {}\nactual   {}\n{}",
                        e.name,
                        e.threshold,
                        e.actual,
                        v.reasons.join("\n")
                    ),
                },
            };
            Case { name, outcome }
        })
        .collect();
    // A variant with no expectations still gets one case, so CI sees it.
    if out.is_empty() {
        let outcome = match (untrusted, v.verdict) {
            (Some((kind, what)), _) => Outcome::Error {
                kind,
                message: format!("{what}{why}"),
            },
            (None, Verdict::Fail) => Outcome::Failure {
                message: format!("variant failed{why}"),
                body: v.reasons.join("\n"),
            },
            _ => Outcome::Ok,
        };
        out.push(Case {
            name: "verdict".into(),
            outcome,
        });
    }
    out
}

/// How long the variant's traffic ran, from its request count and rate.
fn duration_s(v: &VariantSummary) -> f64 {
    if v.rate.achieved > 0.0 {
        v.requests as f64 / v.rate.achieved
    } else {
        0.0
    }
}

/// JUnit timestamps are ISO 8601 without a zone (read as UTC by CI tools).
fn timestamp(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
        Err(_) => "1970-01-01T00:00:00".into(),
    }
}
