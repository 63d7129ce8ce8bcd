//! Fuzzing the scenario decoder: mutated versions of the valid files (text
//! mutations and typed value swaps) must come back as `Ok` or as a located
//! `ScenarioError` — never a panic, including while rendering the report.
//!
//! `ZDT_FUZZ_CASES` sets the number of cases per strategy (default 1000);
//! the count that ran is printed (`cargo test -p zdt-scenario --test it fuzz -- --nocapture`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use zdt_scenario::{self as scenario, workload, yaml};

fn corpus() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [root.join("tests/data"), root.join("../../scenarios")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !name.starts_with("invalid-") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("ZDT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Everything a user can make zdt do with a file: load, validate every
/// variant, render the workload, and draw the error report.
fn exercise(path: &Path, text: String) {
    match scenario::parse(path, text).and_then(|f| f.variants()) {
        Ok(variants) => {
            for v in variants {
                let _ = workload::render(&v);
                let _ = v.clone().scaled(0.5);
            }
        }
        Err(e) => {
            // As `zdt validate` draws it.
            let mut report = String::new();
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
                .render_report(&mut report, &e)
                .expect("the report renders");
            assert!(!report.is_empty());
            let _ = e.one_line();
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Indent { line: usize, by: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        Just(":".to_string()),
        Just("- ".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("#".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: *a\n".to_string()),
        Just("!!str ".to_string()),
        Just("|\n".to_string()),
        Just("~".to_string()),
        Just("null".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1e400".to_string()),
        Just(".nan".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("5s".to_string()),
        Just("0/s".to_string()),
        Just("é→✓".to_string()),
        Just("\t".to_string()),
        "[a-zA-Z0-9 :./%-]{1,8}",
    ];
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), token).prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), 1usize..6).prop_map(|(line, by)| Mutation::Indent { line, by }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut i = at % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::Delete { at, len } => {
            let a = boundary(text, *at);
            let b = boundary(text, a + len);
            let b = if b < a { a } else { b };
            format!("{}{}", &text[..a], &text[b..])
        }
        Mutation::Insert { at, text: t } => {
            let a = boundary(text, *at);
            format!("{}{t}{}", &text[..a], &text[a..])
        }
        Mutation::DuplicateLine { line } => {
            if !lines.is_empty() {
                let l = lines[line % n].clone();
                lines.insert(line % n, l);
            }
            lines.join("\n")
        }
        Mutation::SwapLines { a, b } => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
        Mutation::Indent { line, by } => {
            if !lines.is_empty() {
                lines[line % n] = format!("{}{}", " ".repeat(*by), lines[line % n]);
            }
            lines.join("\n")
        }
        Mutation::Truncate { at } => text[..boundary(text, *at)].to_string(),
    }
}

#[test]
fn text_mutations_never_panic() {
    let corpus = corpus();
    let ran = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..corpus.len(), proptest::collection::vec(mutation(), 1..6));
    runner
        .run(&strategy, |(file, mutations)| {
            let (path, text) = &corpus[file];
            let mut t = text.clone();
            for m in &mutations {
                t = apply(&t, m);
            }
            exercise(path, t);
            ran.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let ran = ran.into_inner();
    eprintln!("scenario fuzz: {ran} text-mutation cases ran without a panic");
    assert!(ran >= cases() as usize);
}

/// Replaces one leaf of the document with a value of another type or an
/// edge value, so every field sees nulls, negatives, huge numbers, lists
/// where maps belong, and so on.
#[test]
fn value_swaps_never_panic() {
    let corpus = corpus();
    let docs: Vec<(PathBuf, serde_json::Value)> = corpus
        .iter()
        .map(|(p, t)| (p.clone(), yaml::parse(t).unwrap().to_json()))
        .collect();
    let ran = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let replacement = prop_oneof![
        Just(serde_json::Value::Null),
        Just(serde_json::json!(true)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("0s")),
        Just(serde_json::json!("1ms")),
        Just(serde_json::json!("10000h")),
        Just(serde_json::json!("previous")),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"index": 99})),
        Just(serde_json::json!({"sameAs": "pick"})),
        "[a-z]{1,6}".prop_map(serde_json::Value::from),
    ];
    let strategy = (0..docs.len(), any::<usize>(), replacement);
    runner
        .run(&strategy, |(file, pick, value)| {
            let (path, doc) = &docs[file];
            let mut doc = doc.clone();
            let mut leaves = Vec::new();
            collect_paths(&doc, String::new(), &mut leaves);
            let target = &leaves[pick % leaves.len()];
            if let Some(slot) = doc.pointer_mut(target) {
                *slot = value;
            }
            let text = serde_saphyr::to_string(&doc).unwrap();
            exercise(path, text);
            ran.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let ran = ran.into_inner();
    eprintln!("scenario fuzz: {ran} value-swap cases ran without a panic");
    assert!(ran >= cases() as usize);
}

fn collect_paths(v: &serde_json::Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect_paths(v, format!("{here}/{k}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_paths(v, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
}
