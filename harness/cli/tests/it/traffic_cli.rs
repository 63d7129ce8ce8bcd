//! `zdt attack` as a user runs it: bad flags exit 2 with the fix in the
//! message; a completed attack exits 0 with vegeta's JSON on stdout.

use std::process::Command;

fn zdt(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("attack")
        .args(args)
        .output()
        .expect("zdt runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/", l.local_addr().unwrap())
}

#[test]
fn bad_flags_exit_2_with_the_fix() {
    let url = closed_port_url();
    for (args, hint) in [
        (vec![url.as_str(), "--rate", "5000"], "5000/s"),
        (vec![url.as_str(), "--keepalive", "maybe"], "true"),
        (vec![url.as_str(), "--duration", "10"], "10s"),
        (vec![url.as_str(), "--bucket", "10ms"], "100ms"),
        (vec![url.as_str(), "--output", "results.txt"], ".csv"),
        (vec![url.as_str(), "-H", "no-colon"], "Name: value"),
        // The flag keeps its spelling, and reaches the generator's check.
        (
            vec![url.as_str(), "--max-inflight", "0"],
            "max in-flight 0 is out of range",
        ),
        (vec![url.as_str(), "--method", "GE T"], "--method `GE T`"),
        (
            vec![url.as_str(), "--redirects", "-2"],
            "use -1 (follow none)",
        ),
        (vec![url.as_str(), "--replay", "no"], "true"),
        (vec!["https://127.0.0.1/"], "https"),
        (vec!["127.0.0.1:8080"], "http://"),
    ] {
        let (code, _, err) = zdt(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(hint), "{args:?}: `{hint}` not in {err}");
    }
}

#[test]
fn completed_attack_exits_0_with_vegeta_json() {
    let url = closed_port_url();
    let (code, out, err) = zdt(&[
        &url,
        "--rate",
        "100/s",
        "--duration",
        "200ms",
        "--keepalive",
        "false",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(v["requests"], 20);
    assert_eq!(v["status_codes"]["0"], 20);
    assert_eq!(v["success"], 0.0);
    assert_eq!(v["error_kinds"]["refused"], 20);
    assert_eq!(v["due"], 20);
    assert_eq!(v["not_sent"], 0);
    assert_eq!(v["replayed"], 0);
    assert!(
        v["buckets"].is_object(),
        "vegeta's histogram: {}",
        v["buckets"]
    );
    assert!(v["time_buckets"].is_array());
    assert!(v["send_lag"]["max"].is_u64());
    assert!(
        err.is_empty(),
        "no progress bar when stdout is not a terminal: {err}"
    );

    // The switches reach the generator (and a negative count parses).
    let (code, out, err) = zdt(&[
        &url,
        "--rate",
        "100/s",
        "--duration",
        "100ms",
        "--redirects",
        "-1",
        "--replay",
        "false",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Requests      [total, rate, throughput]         10, "),
        "{out}"
    );
    assert!(
        out.contains("Status Codes  [code:count]                      0:10  \n\nSend Lag "),
        "{out}"
    );
    // Error Set: last, holding only the error lines.
    let (_, errors) = out.split_once("Error Set:\n").expect("an Error Set");
    assert_eq!(errors.lines().count(), 1, "{out}");
    assert!(errors.contains("onnection refused"), "{out}");
}
