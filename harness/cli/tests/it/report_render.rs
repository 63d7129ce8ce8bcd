//! Every report rendered from a run's data, and `zdt report OUT` rendering
//! them again from the saved files.

use zdt::report::testing as report_common;

use std::process::Command;

use zdt::report::{self, RunData};

#[test]
fn write_all_renders_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = report_common::run_data();
    let written = report::write_all(dir.path(), &data).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["report.txt", "report.md", "report.html", "junit.xml"]
    );

    let txt = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    assert!(txt.contains("== variant no-mitigation: FAIL"), "{txt}");
    assert!(
        txt.contains("Requests      [total, rate, throughput]         300000"),
        "{txt}"
    );
    assert!(
        txt.contains("Status Codes  [code:count]                      0:8182  200:291818"),
        "{txt}"
    );
    assert!(
        txt.contains("Success       [ratio]                           97.27%"),
        "{txt}"
    );

    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("> **Emulated cluster.**"));
    assert!(
        md.contains("| successRatio | `>= 0.9999` | 0.9727 | **FAILED** |"),
        "{md}"
    );
    assert!(
        md.contains("| lb-remove-first | **PASS** | 300000 | 100.00% | 0 |"),
        "{md}"
    );
    assert!(md.contains("node worker2 had no local endpoint"));
    assert!(
        md.contains("| 0 | drain worker2 | `drain` | worker2 | 20 s | 31.5 s | ok |"),
        "{md}"
    );
    assert!(
        md.contains("profile: azure"),
        "cluster/LB settings as YAML: {md}"
    );
    assert!(md.contains("| zdt version | 0.1.0 |"));
}

#[test]
fn verdict_lines_are_plain_unless_coloured() {
    let s = report_common::summary();
    let out = std::path::Path::new("reports/seed-drain/x");
    let plain = report::print_verdicts(&s, out, false);
    // A headline per variant, each reason under it, then where the reports are.
    let reasons: usize = s.variants.iter().map(|v| v.reasons.len()).sum();
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), s.variants.len() + reasons + 1, "{plain}");
    assert!(
        lines[0].starts_with(
            "FAIL       no-mitigation    success 97.27% (8182/300000 failed)  p99 10.00 s"
        ),
        "{plain}"
    );
    let failed = &s.variants[0];
    for (i, r) in failed.reasons.iter().enumerate() {
        assert_eq!(lines[1 + i], format!("           - {r}"), "{plain}");
    }
    let pass = 1 + failed.reasons.len();
    assert!(
        lines[pass].starts_with("PASS       lb-remove-first  success 100.00%"),
        "{plain}"
    );
    assert!(lines
        .last()
        .unwrap()
        .contains("reports/seed-drain/x/report.html"));
    assert!(!plain.contains('\x1b'));
    let coloured = report::print_verdicts(&s, out, true);
    assert!(coloured.contains("\x1b[1;31mFAIL"));
}

#[test]
fn zdt_report_rerenders_from_saved_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = report_common::run_data();
    report_common::save(dir.path(), &data);

    let loaded = RunData::load(dir.path()).unwrap();
    assert_eq!(loaded.events, data.events);
    assert_eq!(loaded.buckets, data.buckets);
    assert_eq!(loaded.summary.variants.len(), 2);

    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("report")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in report::FILES {
        assert!(dir.path().join(f).exists(), "{f} missing");
        assert!(stdout.contains(f), "{stdout}");
    }
    assert!(stdout.contains("FAIL       no-mitigation"), "{stdout}");
}

#[test]
fn a_corrupt_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    report_common::save(dir.path(), &report_common::run_data());
    std::fs::write(dir.path().join("events.jsonl"), "{\"variant\":\"x\"}\n").unwrap();
    let err = RunData::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("events.jsonl") && err.contains("line 1"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("report")
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("summary.json"));
}

/// A real attack's summary and buckets (against a tiny HTTP server that
/// names its node and pod) go through the reports: report.txt is the
/// traffic module's vegeta text, the timelines split by node and pod.
#[tokio::test]
async fn real_traffic_summary_renders_through_every_report() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // Bounded: the attack sends 20 requests.
        for _ in 0..20 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nX-Node: worker7\r\nX-Pod: nginx-q\r\n\
                          Content-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let settings = zdt_traffic::Settings::new(
        &format!("http://{addr}/"),
        "50/s".parse().unwrap(),
        std::time::Duration::from_millis(400),
    )
    .unwrap();
    let clock = zdt_core::clock::Clock::start();
    let summary = zdt_traffic::attack(settings, clock, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    server.abort();
    assert_eq!(summary.requests, 20);

    let mut data = report_common::run_data();
    let name = data.summary.variants[1].name.clone();
    data.buckets.insert(name.clone(), summary.buckets.clone());
    data.traffic.insert(name.clone(), summary.clone());

    let dir = tempfile::tempdir().unwrap();
    report::write_all(dir.path(), &data).unwrap();
    let txt = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    assert!(
        txt.contains(&zdt_traffic::report::text(&summary)),
        "report.txt holds the traffic module's vegeta text: {txt}"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("node worker7: "), "by-node split from X-Node");
    assert!(html.contains("pod nginx-q: "), "by-pod split from X-Pod");

    // And the same after a save/load round trip.
    report_common::save(dir.path(), &data);
    std::fs::create_dir_all(dir.path().join("traffic")).unwrap();
    std::fs::write(
        dir.path().join("traffic").join(format!("{name}.json")),
        serde_json::to_string(&summary).unwrap(),
    )
    .unwrap();
    let loaded = RunData::load(dir.path()).unwrap();
    assert_eq!(loaded.traffic.get(&name), Some(&summary));
    assert_eq!(loaded.buckets.get(&name), Some(&summary.buckets));
}

/// Saved reports are re-rendered from their JSON, so floats must come back
/// bit for bit. serde_json's default parser can miss by one ulp (seen on an
/// achieved rate, 52.498718230669716 read back as 52.49871823066971); the
/// `float_roundtrip` feature makes it exact.
#[test]
fn floats_survive_the_json_round_trip_exactly() {
    for x in [52.498718230669716_f64, 0.1 + 0.2, 1e-300, 4999.913849484408] {
        let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
        assert_eq!(back.to_bits(), x.to_bits(), "{x:?} came back as {back:?}");
    }
}
