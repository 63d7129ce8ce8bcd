//! Docs that cannot drift from the binary.
//!
//! Every YAML or JSON example in README.md and docs/ carries a marker on the
//! line before its fence saying what it is, and is checked as that:
//!
//! - `<!-- check: scenario -->` a whole scenario file;
//! - `<!-- check: scenario-fragment [at=PATH] [base=FILE] [each-line] -->`
//!   part of one, merged (as a JSON merge patch) into a minimal scenario, or
//!   the scenario FILE of this repository without its variants, at PATH
//!   (dotted; a number indexes a list), each line on its own with `each-line`;
//! - `<!-- check: lb-config -->` a `zdt lb --config` file, without deprecated keys;
//! - `<!-- check: kind-config -->` a kind config zdt accepts; when its first
//!   line names a file of this repository, the file says the same;
//! - `<!-- check: baseline -->` a baseline file.
//!
//! Every field table (a table whose header starts `| field |`, or any table
//! marked so) carries `<!-- fields: TYPE -->`: its first column must be exactly the fields of
//! TYPE's decoder (the union of the tables naming TYPE), or, with
//! `(some)`, a subset of them. Renaming a field in code or docs fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A fenced example: where it is, the marker before it, its text.
struct Example {
    place: String,
    marker: Option<String>,
    body: String,
}

/// A doc file's path from the repository root, and its text.
fn read_doc(file: &Path) -> (String, String) {
    let name = file
        .strip_prefix(repo())
        .unwrap_or(file)
        .display()
        .to_string();
    (name, std::fs::read_to_string(file).unwrap())
}

/// What `<!-- TAG: … -->` on the line before line `i` says, if it is there.
fn marker_before<'a>(lines: &[&'a str], i: usize, tag: &str) -> Option<&'a str> {
    let line = lines.get(i.checked_sub(1)?)?.trim();
    let inner = line.strip_prefix("<!-- ")?.strip_suffix("-->")?;
    Some(inner.strip_prefix(tag)?.strip_prefix(':')?.trim())
}

fn examples(file: &Path) -> Vec<Example> {
    let (name, text) = read_doc(file);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if let Some(lang) = fence.strip_prefix("```") {
            let end = (i + 1..lines.len())
                .find(|j| lines[*j].trim_start().starts_with("```"))
                .unwrap_or_else(|| panic!("{name}:{}: unclosed fence", i + 1));
            if matches!(lang.trim(), "yaml" | "yml" | "json") {
                let marker = marker_before(&lines, i, "check").map(str::to_owned);
                out.push(Example {
                    place: format!("{name}:{}", i + 1),
                    marker,
                    body: lines[i + 1..end].join("\n") + "\n",
                });
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The minimal scenario fragments are merged into.
fn base_scenario() -> Value {
    json!({
        "apiVersion": "zdt/v1alpha1",
        "kind": "Scenario",
        "name": "doc-example",
        "workload": {"manifests": repo().join("manifests/nginx").display().to_string()},
        "traffic": {"rate": "100/s", "duration": "60s"},
    })
}

/// RFC 7386, as variants patch documents.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

/// The place at dotted `path` in `doc`, created on the way: a list element
/// of `chaos` or `variants` starts as the smallest valid step or variant
/// (the first chaos step is `pick`, which cordons a node).
fn at_path<'a>(doc: &'a mut Value, path: &str) -> &'a mut Value {
    let mut here = doc;
    let mut parent = "";
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        here = match seg.parse::<usize>() {
            Ok(i) => {
                if !here.is_array() {
                    *here = Value::Array(Vec::new());
                }
                let list = here.as_array_mut().unwrap();
                while list.len() <= i {
                    list.push(match parent {
                        // A first step that chose a node, for `sameAs: pick`.
                        "chaos" if list.is_empty() => {
                            json!({"name": "pick", "at": "5s", "cordon": {"node": {"index": 0}}})
                        }
                        "chaos" => json!({"name": format!("step{}", list.len()), "at": "10s"}),
                        "variants" => json!({"name": format!("variant{}", list.len())}),
                        _ => json!({}),
                    });
                }
                &mut list[i]
            }
            Err(_) => {
                if !here.is_object() {
                    *here = json!({});
                }
                here.as_object_mut()
                    .unwrap()
                    .entry(seg)
                    .or_insert(Value::Null)
            }
        };
        parent = seg;
    }
    here
}

fn yaml_value(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// Loads `text` as a scenario file in docs/ and expands every variant.
fn check_scenario_text(text: &str) -> Result<(), String> {
    let path = repo().join("docs/doc-example.yaml");
    let file = zdt_scenario::parse(&path, text.to_owned()).map_err(|e| format!("{e:?}"))?;
    file.variants().map(|_| ()).map_err(|e| format!("{e:?}"))
}

fn check_fragment(body: &str, at: &str, base: Option<&str>) -> Result<(), String> {
    let fragment = yaml_value(&dedent(body))?;
    let mut doc = match base {
        None => base_scenario(),
        // Its relative paths resolve from docs/ as from scenarios/.
        Some(file) => {
            let text =
                std::fs::read_to_string(repo().join(file)).map_err(|e| format!("{file}: {e}"))?;
            let mut doc = yaml_value(&text)?;
            doc.as_object_mut().map(|o| o.remove("variants"));
            doc
        }
    };
    merge(at_path(&mut doc, at), fragment);
    check_scenario_text(&serde_json::to_string_pretty(&doc).unwrap())
}

fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").to_owned() + "\n")
        .collect()
}

/// The lines of an `each-line` example: a line and the comment-only lines
/// that continue it.
fn each_line(body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in body.lines() {
        if line.trim_start().starts_with('#') && !out.is_empty() || line.trim().is_empty() {
            continue;
        }
        out.push(line.to_owned());
    }
    out
}

fn check_kind_config(body: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kind.yaml");
    std::fs::write(&file, body).unwrap();
    let mut spec = zdt_cluster::kind::KindSpec::new(3, "1.31");
    spec.config_file = Some(file);
    spec.config_text().map_err(|e| e.to_string())?;
    // `# clusters/NAME.yaml` on the first line: that file, comments aside.
    let first = body.lines().next().unwrap_or("");
    if let Some(named) = first
        .strip_prefix("# ")
        .and_then(|l| l.split([';', ' ']).next())
        .filter(|p| p.ends_with(".yaml"))
    {
        let on_disk = std::fs::read_to_string(repo().join(named))
            .map_err(|e| format!("names {named}, which cannot be read: {e}"))?;
        let strip = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        };
        if strip(&on_disk) != strip(body) {
            return Err(format!("differs from {named}"));
        }
    }
    Ok(())
}

fn check(example: &Example) -> Result<(), String> {
    let Some(marker) = &example.marker else {
        return Err(
            "no `<!-- check: KIND -->` marker on the line before the fence (see harness/cli/tests/it/docs.rs)"
                .into(),
        );
    };
    let mut words = marker.split_whitespace();
    let kind = words.next().unwrap_or("");
    let opts: Vec<&str> = words.collect();
    let at = opts
        .iter()
        .find_map(|o| o.strip_prefix("at="))
        .unwrap_or("");
    let base = opts.iter().find_map(|o| o.strip_prefix("base="));
    match kind {
        "scenario" => check_scenario_text(&example.body),
        "scenario-fragment" if opts.contains(&"each-line") => {
            each_line(&example.body).iter().try_for_each(|line| {
                check_fragment(line, at, base).map_err(|e| format!("`{line}`: {e}"))
            })
        }
        "scenario-fragment" => check_fragment(&example.body, at, base),
        "lb-config" => {
            zdt_lb::LbFile::parse(&example.body).map_err(|e| e.to_string())?;
            match zdt_lb::deprecated_keys(&example.body).as_slice() {
                [] => Ok(()),
                d => Err(format!("uses deprecated keys: {d:?}")),
            }
        }
        "kind-config" => check_kind_config(&example.body),
        "baseline" => serde_json::from_str::<zdt::report::baseline::Baseline>(&example.body)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown check `{other}`")),
    }
}

#[test]
fn every_yaml_and_json_example_in_the_docs_is_what_it_claims() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        for ex in examples(&file) {
            checked += 1;
            if let Err(e) = check(&ex) {
                failures.push(format!("{}: {e}", ex.place));
            }
        }
    }
    assert!(checked >= 10, "only {checked} examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_broken_example_is_caught() {
    // The checker itself: a renamed field, a wrong place, a stale LB key.
    assert!(check_fragment("traffic:\n  keepAlve: true\n", "", None).is_err());
    assert!(check_fragment("keepAlive: true\n", "traffic", None).is_ok());
    assert!(check_fragment("keepAlive: true\n", "cluster", None).is_err());
    let lb = |body: &str| {
        check(&Example {
            place: "test".into(),
            marker: Some("lb-config".into()),
            body: body.into(),
        })
    };
    assert!(lb("frontend: 127.0.0.1:1\nfailOpen: true\n").is_ok());
    assert!(lb("frontend: 127.0.0.1:1\nfail_open: true\n").is_err());
    let unmarked = Example {
        place: "test".into(),
        marker: None,
        body: "a: 1\n".into(),
    };
    assert!(check(&unmarked).is_err());
}

/// The fields a serde-derived struct's decoder accepts, read from the
/// decoder itself (`deserialize_struct` is handed the list).
fn fields_of<T: DeserializeOwned>() -> BTreeSet<String> {
    #[derive(Debug)]
    struct Found(Option<&'static [&'static str]>);
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Found(None)
        }
    }
    struct Capture;
    impl<'de> de::Deserializer<'de> for Capture {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(None))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(Some(fields)))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Capture) {
        Err(Found(Some(fields))) => fields
            .iter()
            // serde lists aliases too; the LB config keeps snake_case ones.
            .filter(|f| !f.contains('_'))
            .map(|f| (*f).to_owned())
            .collect(),
        _ => panic!(
            "{} is not a serde-derived struct",
            std::any::type_name::<T>()
        ),
    }
}

fn schema(name: &str) -> Option<BTreeSet<String>> {
    use zdt_scenario::v1alpha1 as v1;
    Some(match name {
        // `variants` and `sweep` are split off before the rest is decoded.
        "scenario" => {
            let mut f = fields_of::<v1::ScenarioSpec>();
            f.insert("variants".into());
            f.insert("sweep".into());
            f
        }
        "cluster" => fields_of::<v1::ClusterSpec>(),
        "sweep" => fields_of::<zdt_scenario::SweepSpec>(),
        "cluster.emulator" => fields_of::<v1::EmulatorSpec>(),
        "loadBalancer" => fields_of::<v1::LoadBalancerSpec>(),
        "workload" => fields_of::<v1::WorkloadSpec>(),
        "workload.mitigations" => fields_of::<v1::MitigationsSpec>(),
        "workload.run" => fields_of::<v1::ContainerRun>(),
        "readinessProbe" => fields_of::<v1::ProbeSpec>(),
        "traffic" => fields_of::<v1::TrafficSpec>(),
        "chaos" => fields_of::<v1::ChaosStepSpec>(),
        "expect" => fields_of::<v1::ExpectSpec>(),
        "expect.tolerance" => fields_of::<v1::ToleranceSpec>(),
        "lb-config" => fields_of::<zdt_lb::LbFile>(),
        "lb-config.probe" => fields_of::<zdt_lb::config::ProbeOverrides>(),
        "lb-config.backends" => fields_of::<zdt_lb::BackendConfig>(),
        _ => return None,
    })
}

/// Each field table: where, which schema, whether it claims to be whole,
/// and the names in its first column.
fn field_tables(file: &Path) -> Vec<(String, Option<String>, bool, Vec<String>)> {
    let (name, text) = read_doc(file);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let starts_table = line.starts_with('|') && (i == 0 || !lines[i - 1].starts_with('|'));
        if !starts_table {
            continue;
        }
        let marker = marker_before(&lines, i, "fields");
        if marker.is_none() && !line.starts_with("| field |") {
            continue; // not a field table
        }
        let (schema, some) = match marker {
            Some(m) => match m.strip_suffix("(some)") {
                Some(s) => (Some(s.trim().to_owned()), true),
                None => (Some(m.to_owned()), false),
            },
            None => (None, false),
        };
        let names = lines[i + 2..]
            .iter()
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1))
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect();
        out.push((format!("{name}:{}", i + 1), schema, !some, names));
    }
    out
}

#[test]
fn every_field_table_matches_the_decoder() {
    let mut failures = Vec::new();
    let mut whole: BTreeMap<String, (Vec<String>, BTreeSet<String>)> = BTreeMap::new();
    for file in doc_files() {
        for (place, schema_name, complete, names) in field_tables(&file) {
            let Some(schema_name) = schema_name else {
                failures.push(format!(
                    "{place}: field table without `<!-- fields: TYPE -->` on the line before it"
                ));
                continue;
            };
            let Some(fields) = schema(&schema_name) else {
                failures.push(format!("{place}: unknown schema `{schema_name}`"));
                continue;
            };
            for n in &names {
                if !fields.contains(n) {
                    failures.push(format!(
                        "{place}: documents `{n}`, which {schema_name} does not accept (it accepts {fields:?})"
                    ));
                }
            }
            if complete {
                let e = whole.entry(schema_name).or_default();
                e.0.push(place);
                e.1.extend(names);
            }
        }
    }
    for (schema_name, (places, documented)) in &whole {
        let fields = schema(schema_name).unwrap();
        let missing: Vec<&String> = fields.difference(documented).collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{}: {schema_name} accepts {missing:?}, which no table documents",
                places.join(", ")
            ));
        }
    }
    assert!(whole.len() >= 10, "only {} schemas documented", whole.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_error_kinds_table_defines_every_kind_once_in_order() {
    let text = std::fs::read_to_string(repo().join("docs/reports.md")).unwrap();
    let start = text
        .find("<!-- error-kinds -->")
        .expect("docs/reports.md marks its error-kind table with <!-- error-kinds -->");
    let documented: Vec<&str> = text[start..]
        .lines()
        .skip(3) // the marker, the header, the rule
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.trim().trim_matches('`'))
        .collect();
    let kinds: Vec<&str> = zdt_traffic::ErrorKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(documented, kinds);
}
