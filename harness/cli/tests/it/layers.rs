//! The crates are the architecture's layers, so the compiler enforces them;
//! this test keeps it that way: no crate depends on one above it (read from
//! `cargo metadata`), no crate's top-level modules import each other in a
//! cycle, and the integration tests stay one binary per crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each crate's layer: a crate may depend only on crates of a lower one.
const LAYERS: &[(&str, u32)] = &[
    ("zdt-core", 0),
    ("zdt-traffic", 1),
    ("zdt-lb", 1),
    ("zdt-emulator", 1),
    ("zdt-scenario", 2),
    ("zdt-cluster", 3),
    ("zdt", 4),
    ("zdt-cli", 5),
];

fn layer(name: &str) -> Option<u32> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn no_crate_depends_on_a_crate_above_it() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let known: BTreeSet<&str> = LAYERS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, known, "every workspace crate has a layer here");
    let mut wrong = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        let own = layer(name).unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            let Some(theirs) = layer(dep) else { continue };
            // A crate's own tests may enable its test helpers through a
            // dev-dependency on itself.
            if dep == name && d["kind"] == "dev" {
                continue;
            }
            if theirs >= own {
                wrong.push(format!("{name} (layer {own}) → {dep} (layer {theirs})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies that point up or sideways: {wrong:#?}"
    );
}

#[test]
fn integration_tests_are_one_binary_per_crate() {
    let meta = metadata();
    let mut tests = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            if t["kind"].as_array().unwrap().iter().any(|k| k == "test") {
                tests.push(format!("{}:{}", p["name"], t["name"]));
            }
        }
    }
    assert!(tests.len() <= LAYERS.len(), "{tests:#?}");
}

/// The top-level modules a source file refers to by `crate::m`, or by
/// `super::m` from a file directly below the crate root.
fn references(text: &str, super_is_root: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["crate::", "super::"] {
        if prefix == "super::" && !super_is_root {
            continue;
        }
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i + prefix.len();
            from = start;
            let before = (from - prefix.len())
                .checked_sub(1)
                .map(|j| bytes[j] as char);
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[start..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or("").trim())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                vec![&rest[..end]]
            };
            out.extend(
                names
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .map(String::from),
            );
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            return Some(path[i..].to_vec());
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_module_import_cycle() {
    let mut found = Vec::new();
    for (name, _) in LAYERS {
        let dir = repo().join("harness").join(match *name {
            "zdt" => "zdt",
            "zdt-cli" => "cli",
            other => other.trim_start_matches("zdt-"),
        });
        let src = dir.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        for f in &files {
            let Some(top) = top_module(&src, f) else {
                continue;
            };
            let text = std::fs::read_to_string(f).unwrap();
            // Unit tests may reach anywhere in their crate; comments are
            // not imports.
            let code: String = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            // `super::` names the crate root in `src/a.rs` and `src/a/mod.rs`.
            let super_is_root = f.parent() == Some(src.as_path())
                || f.file_name().is_some_and(|n| n == "mod.rs")
                    && f.parent().and_then(Path::parent) == Some(src.as_path());
            let refs = references(&code, super_is_root);
            graph.entry(top.clone()).or_default().extend(
                refs.into_iter()
                    .filter(|r| *r != top && modules.contains(r)),
            );
        }
        if let Some(c) = cycle(&graph) {
            found.push(format!("{name}: {}", c.join(" → ")));
        }
    }
    assert!(found.is_empty(), "module import cycles: {found:#?}");
}

/// `a` for `src/a.rs`, `src/a/mod.rs` and `src/a/b.rs`; `None` for the root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g).map(|c| c.len()), Some(3));
    let refs = references(
        "use crate::{x::Y, z};\nlet a = super::w::f(); my_crate::q",
        true,
    );
    assert_eq!(
        refs,
        ["w", "x", "z"].iter().map(|s| s.to_string()).collect()
    );
}
