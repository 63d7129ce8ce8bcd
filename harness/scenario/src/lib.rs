//! The scenario file format (`apiVersion: zdt/v1alpha1`, `kind: Scenario`):
//! strict decoding into versioned public types, validation into an internal
//! form with defaults, and `variants:` overlays. See docs/scenario-format.md.
//!
//! ```text
//! text ──yaml::parse──▶ Node tree (spans) ──merge variant patch──▶ Node tree
//!      ──yaml::from_node──▶ v1alpha1::ScenarioSpec ──validate──▶ model::Scenario
//! ```
//!
//! Every step keeps the byte span of each YAML node, so an error anywhere —
//! syntax, unknown field, bad unit, a chaos step naming a 5th worker of 3 —
//! points at the exact line of the file, also inside a variant's patch.

mod assumptions;
pub mod bounds;
mod error;
pub(crate) mod model;
mod sweep;
pub mod v1alpha1;
mod validate;
pub mod workload;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use assumptions::{assumption_warnings, AssumptionWarning};
pub use error::{InvalidScenario, ScenarioError, VariantError};
pub use model::*;
pub use sweep::{SweepPoint, SweepSpec, MAX_VALUES as MAX_SWEEP_VALUES};
pub use validate::{
    check_kubernetes, check_workers, emulator_node_names, Problem, DEFAULT_MANIFESTS,
};

use yaml::{Node, Seg, Value};

/// A scenario file, parsed; [`ScenarioFile::variants`] validates it into
/// runnable [`Scenario`]s.
#[derive(Debug, Clone)]
pub struct ScenarioFile {
    /// The path as given (used in messages).
    pub path: PathBuf,
    /// The file's text.
    pub text: String,
    /// The document without `variants:`.
    base: Node,
    /// `(name, description, patch)` of each variant, in file order.
    variants: Vec<VariantEntry>,
    /// `sweep:` (or `--sweep`): each value crossed with the variants.
    sweep: Option<sweep::Sweep>,
    /// Manifests read (or rendered by kustomize/helm) so far: loading
    /// validates every variant, and later calls must not run helm again.
    manifests: std::sync::Arc<std::sync::Mutex<Manifests>>,
}

/// One variant to build: its patches in order, and its sweep point.
struct Entry {
    name: String,
    description: Option<String>,
    patches: Vec<Node>,
    point: Option<SweepPoint>,
}

/// `node` with every span set to `span` (values from the command line
/// have no place in the file).
fn respan(mut node: Node, span: yaml::Span) -> Node {
    node.span = span;
    node.value = match node.value {
        Value::Seq(items) => Value::Seq(items.into_iter().map(|n| respan(n, span)).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(mut k, v)| {
                    k.span = span;
                    (k, respan(v, span))
                })
                .collect(),
        ),
        other => other,
    };
    node
}

#[derive(Debug, Clone)]
struct VariantEntry {
    name: String,
    description: Option<String>,
    patch: Option<Node>,
}

/// Reads, parses and fully validates a scenario file (the base document and
/// every variant), so a file that loads is a file that can run.
pub fn load(path: impl AsRef<Path>) -> Result<ScenarioFile, ScenarioError> {
    let path = path.as_ref();
    let read = |source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Before reading: a huge file must not be loaded to be refused.
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > bounds::MAX_FILE_BYTES {
        return Err(ScenarioError::TooLarge {
            path: path.to_path_buf(),
            size,
            max: bounds::MAX_FILE_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let file = parse(path, text)?;
    file.variants()?;
    Ok(file)
}

/// Parses scenario text as if it were the file at `path` (relative paths in
/// it resolve against `path`'s directory). Does not validate variants; call
/// [`ScenarioFile::variants`] for that.
pub fn parse(path: &Path, text: String) -> Result<ScenarioFile, ScenarioError> {
    let name = path.display().to_string();
    let mut root = yaml::parse(&text).map_err(|e| {
        let help = if e.message.contains("YAML bomb") {
            "write the values out: a scenario needs no aliases of aliases"
        } else {
            "check the indentation and brackets around this place"
        };
        ScenarioError::invalid(
            &name,
            &text,
            e.span,
            format!("invalid YAML: {}", e.message),
            Some(help.into()),
        )
    })?;
    let too_long: Vec<ScenarioError> = bounds::long_strings(&root)
        .into_iter()
        .map(|t| {
            ScenarioError::invalid(
                &name,
                &text,
                t.span,
                t.message,
                Some("shorten it: it is copied into every report".into()),
            )
        })
        .collect();
    if let Some(e) = ScenarioError::all(too_long) {
        return Err(e);
    }
    if !matches!(root.value, Value::Map(_)) {
        return Err(ScenarioError::invalid(
            &name,
            &text,
            root.span,
            format!(
                "a scenario file is a mapping (`apiVersion: zdt/v1alpha1`, `kind: Scenario`, …), found {}",
                yaml::describe(&root)
            ),
            None,
        ));
    }
    let variants_node = root.take("variants");
    let mut variants = Vec::new();
    if let Some(vnode) = variants_node {
        let headers: Vec<v1alpha1::VariantSpec> =
            yaml::from_node(&vnode).map_err(|e| de_error(&name, &text, e, vnode.span, None))?;
        let Value::Seq(items) = &vnode.value else {
            unreachable!("decoded as a list");
        };
        if items.len() > bounds::MAX_VARIANTS {
            return Err(ScenarioError::invalid(
                &name,
                &text,
                vnode.span,
                format!(
                    "{} variants; a file may have at most {}",
                    items.len(),
                    bounds::MAX_VARIANTS
                ),
                Some("split them over several files; each variant is a full run".into()),
            ));
        }
        if items.is_empty() {
            return Err(ScenarioError::invalid(
                &name,
                &text,
                vnode.span,
                "`variants` is empty".into(),
                Some("remove it, or add `- name: …` entries".into()),
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (h, item) in headers.iter().zip(items) {
            let at = |f: &str| item.locate(&[Seg::from(f)]);
            if let Err(p) = validate::check_name(&[], "variant name", &h.name) {
                return Err(ScenarioError::invalid(
                    &name,
                    &text,
                    at("name"),
                    p.message,
                    None,
                ));
            }
            if seen.contains(&h.name.as_str()) {
                return Err(ScenarioError::invalid(
                    &name,
                    &text,
                    at("name"),
                    format!("variant name `{}` is used twice", h.name),
                    None,
                ));
            }
            seen.push(&h.name);
            let patch = item.get("patch").filter(|p| !p.is_null()).cloned();
            if let Some(p) = &patch {
                if !matches!(p.value, Value::Map(_)) {
                    return Err(ScenarioError::invalid(
                        &name,
                        &text,
                        p.span,
                        format!(
                            "variant `{}`: `patch` must be a mapping (a JSON merge patch on the scenario), found {}",
                            h.name,
                            yaml::describe(p)
                        ),
                        None,
                    ));
                }
                for key in ["variants", "apiVersion", "kind"] {
                    if let Some(k) = p.key(key) {
                        return Err(ScenarioError::invalid(
                            &name,
                            &text,
                            k.span,
                            format!(
                                "variant `{}` patches `{key}`, which variants cannot change",
                                h.name
                            ),
                            None,
                        ));
                    }
                }
            }
            variants.push(VariantEntry {
                name: h.name.clone(),
                description: h.description.clone(),
                patch,
            });
        }
    }
    let sweep = match root.take("sweep") {
        None => None,
        Some(node) => Some(parse_sweep(&name, &text, &node, &variants)?),
    };
    Ok(ScenarioFile {
        manifests: Default::default(),
        path: path.to_path_buf(),
        text,
        base: root,
        variants,
        sweep,
    })
}

/// `sweep:`, checked against the file's variants.
fn parse_sweep(
    name: &str,
    text: &str,
    node: &Node,
    variants: &[VariantEntry],
) -> Result<sweep::Sweep, ScenarioError> {
    let spec: SweepSpec =
        yaml::from_node(node).map_err(|e| de_error(name, text, e, node.span, None))?;
    let values = match node.get("values").map(|v| &v.value) {
        Some(Value::Seq(items)) => items.clone(),
        _ => Vec::new(),
    };
    let at = |f: &str| node.get(f).map_or(node.span, |n| n.span);
    if let Some(names) = &spec.variants {
        for v in names {
            if !variants.iter().any(|e| &e.name == v) {
                let known: Vec<&str> = variants.iter().map(|e| e.name.as_str()).collect();
                return Err(ScenarioError::invalid(
                    name,
                    text,
                    at("variants"),
                    format!(
                        "sweep names variant `{v}`, which the file does not have (its variants: {})",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                    Some("name variants from `variants:`, or leave `variants` out to sweep them all".into()),
                ));
            }
        }
    }
    sweep::Sweep::new(&spec.field, values, spec.variants, node.span).map_err(|m| {
        let place = if m.contains("values") {
            at("values")
        } else {
            at("field")
        };
        ScenarioError::invalid(name, text, place, m, None)
    })
}

fn de_error(
    name: &str,
    text: &str,
    e: yaml::DeError,
    fallback: yaml::Span,
    variant: Option<&str>,
) -> ScenarioError {
    let message = match (variant, &e.unknown_field) {
        (Some(v), Some(_)) => format!("variant `{v}` patches {}", e.message),
        (Some(v), None) => format!("variant `{v}`: {}", e.message),
        (None, _) => e.message,
    };
    ScenarioError::invalid(name, text, e.span.unwrap_or(fallback), message, e.help)
}

impl ScenarioFile {
    /// The scenario's name (from the base document, unvalidated).
    pub fn name(&self) -> Option<&str> {
        match &self.base.get("name")?.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The variant names in file order (`["default"]` without `variants:`),
    /// sweep points in place of the variants they sweep.
    pub fn variant_names(&self) -> Vec<String> {
        self.entries().into_iter().map(|e| e.name).collect()
    }

    /// The swept field, when the file (or `--sweep`) sweeps one.
    pub fn swept_field(&self) -> Option<&str> {
        self.sweep.as_ref().map(|s| s.field.as_str())
    }

    /// Sweep `field` over `values` (each written as in YAML: `10s`, `1.31`)
    /// for every variant, in place of the file's own `sweep:` (`zdt run
    /// --sweep FIELD=VALUES`).
    pub fn set_sweep(&mut self, field: &str, values: &[String]) -> Result<(), ScenarioError> {
        let name = self.path.display().to_string();
        let start = yaml::Span { offset: 0, len: 0 };
        let mut nodes = Vec::with_capacity(values.len());
        for v in values {
            let node = yaml::parse(v).map_err(|e| {
                ScenarioError::invalid(
                    &name,
                    &self.text,
                    start,
                    format!(
                        "--sweep {field}: value `{v}` is not a YAML value: {}",
                        e.message
                    ),
                    None,
                )
            })?;
            // `1.31` is a version far more often than a number: a float
            // stays the text it was written as.
            let node = match node.value {
                Value::Float(_) => yaml::Node::new(Value::Str(v.clone()), start),
                _ => respan(node, start),
            };
            nodes.push(node);
        }
        let sweep = sweep::Sweep::new(field, nodes, None, start).map_err(|m| {
            ScenarioError::invalid(
                &name,
                &self.text,
                start,
                format!("--sweep: {m}"),
                Some("write `--sweep FIELD=V1,V2,…`, e.g. `--sweep workload.mitigations.preStopSleep=0s,5s,10s`".into()),
            )
        })?;
        let before = self.sweep.replace(sweep);
        if let Err(e) = self.variants() {
            self.sweep = before;
            return Err(e);
        }
        Ok(())
    }

    /// The variants to build: each declared one (or `default`), with each
    /// swept one replaced by its points.
    fn entries(&self) -> Vec<Entry> {
        let declared: Vec<Entry> = if self.variants.is_empty() {
            vec![Entry {
                name: "default".into(),
                description: None,
                patches: Vec::new(),
                point: None,
            }]
        } else {
            self.variants
                .iter()
                .map(|v| Entry {
                    name: v.name.clone(),
                    description: v.description.clone(),
                    patches: v.patch.iter().cloned().collect(),
                    point: None,
                })
                .collect()
        };
        let Some(sweep) = &self.sweep else {
            return declared;
        };
        let swept = |e: &Entry| {
            sweep
                .variants
                .as_ref()
                .is_none_or(|names| names.contains(&e.name))
        };
        let mut out = Vec::new();
        for e in declared {
            if !swept(&e) {
                out.push(e);
                continue;
            }
            for (index, value) in sweep.values.iter().enumerate() {
                let mut patches = e.patches.clone();
                patches.push(sweep.patch(value));
                out.push(Entry {
                    name: sweep::Sweep::point_name(&e.name, value),
                    description: e.description.clone(),
                    patches,
                    point: Some(SweepPoint {
                        field: sweep.field.clone(),
                        value: sweep::Sweep::label(value),
                        index,
                        base: e.name.clone(),
                    }),
                });
            }
        }
        out
    }

    /// Every variant, merged and validated, in file order. A file without
    /// `variants:` yields one variant named `default`. The base document
    /// must be a valid scenario on its own either way.
    pub fn variants(&self) -> Result<Vec<Scenario>, ScenarioError> {
        let mut manifests = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        let manifests = &mut *manifests;
        let base = self.build(&self.base, "default", None, None, manifests)?;
        if self.variants.is_empty() && self.sweep.is_none() {
            return Ok(vec![base]);
        }
        // Every variant is checked, so one pass reports every bad one.
        let entries = self.entries();
        let mut good = Vec::with_capacity(entries.len());
        let mut bad = Vec::new();
        for v in entries {
            let mut doc = self.base.clone();
            for p in &v.patches {
                yaml::merge_patch(&mut doc, p);
            }
            let built = self.build(
                &doc,
                &v.name,
                v.description.as_deref(),
                Some(&v.name),
                manifests,
            );
            match built {
                Ok(mut s) => {
                    s.sweep = v.point;
                    good.push(s)
                }
                Err(e) => bad.push(e),
            }
        }
        match ScenarioError::all(bad) {
            Some(e) => Err(e),
            None => Ok(good),
        }
    }

    /// One variant by name.
    pub fn variant(&self, name: &str) -> Result<Scenario, VariantError> {
        let all = self.variants().map_err(VariantError::Invalid)?;
        let names: Vec<String> = all.iter().map(|s| s.variant.clone()).collect();
        all.into_iter()
            .find(|s| s.variant == name)
            .ok_or_else(|| VariantError::Unknown {
                path: self.path.clone(),
                suggestion: yaml::suggest(name, names.iter().map(String::as_str))
                    .map(str::to_string),
                name: name.to_string(),
                names,
            })
    }

    /// One variant, validated. `manifests` holds the manifest directories
    /// read so far, so a file's variants read each directory once (a
    /// thousand variants would otherwise parse the same files a thousand
    /// times).
    fn build(
        &self,
        doc: &Node,
        variant: &str,
        description: Option<&str>,
        label: Option<&str>,
        manifests: &mut Manifests,
    ) -> Result<Scenario, ScenarioError> {
        let name = self.path.display().to_string();
        let spec: v1alpha1::ScenarioSpec =
            yaml::from_node(doc).map_err(|e| de_error(&name, &self.text, e, doc.span, label))?;
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        // Absolute, so the run can change directory and reports name real paths.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let located = |p: Problem| {
            let span = if p.at_key {
                doc.locate_key(&p.path)
            } else {
                doc.locate(&p.path)
            };
            let message = match label {
                Some(v) => format!("variant `{v}`: {}", p.message),
                None => p.message,
            };
            ScenarioError::invalid(&name, &self.text, span, message, p.help)
        };
        let all = |problems: Vec<Problem>| {
            ScenarioError::all(problems.into_iter().map(located).collect())
                .expect("at least one problem")
        };
        let scenario =
            validate::validate(&spec, variant, description, &self.path, &dir).map_err(all)?;
        // Render the workload once so a manifest problem (a missing
        // Deployment, a patch that matches nothing) shows up here, pointing
        // at the field to fix, instead of half-way into a run.
        // Keyed by directory and how it renders (a chart with other values
        // renders other objects).
        let key = (
            scenario.workload.manifests.clone(),
            format!(
                "{:?}/{}",
                scenario.workload.source, scenario.workload.namespace
            ),
        );
        let read = match manifests.get(&key) {
            Some(read) => Ok(read.clone()),
            None => workload::read_manifests(&scenario.workload).inspect(|read| {
                manifests.insert(key.clone(), read.clone());
            }),
        };
        let objects = read
            .and_then(|read| workload::render_from(&scenario, read))
            .map_err(|e| located(render_problem(&e)))?;
        let mut problems = validate::chaos_deployments(&scenario, &objects);
        problems.extend(validate::run_keys(&scenario, &objects));
        if !problems.is_empty() {
            return Err(all(problems));
        }
        Ok(scenario)
    }
}

/// Manifests already read, by directory and rendering.
type Manifests = std::collections::HashMap<(PathBuf, String), Vec<serde_json::Value>>;

/// Where in the scenario a workload rendering error is fixed.
fn render_problem(e: &workload::WorkloadError) -> Problem {
    use workload::WorkloadError as W;
    let path: Vec<Seg> = match e {
        W::Missing { field, .. } => vec!["workload".into(), (*field).into()],
        W::NoContainer { .. } => vec!["workload".into(), "container".into()],
        W::PatchMatchesNothing { index, .. } => {
            vec!["workload".into(), "patches".into(), (index - 1).into()]
        }
        _ => vec!["workload".into(), "manifests".into()],
    };
    let help = miette::Diagnostic::help(e).map(|h| h.to_string());
    Problem {
        path,
        at_key: false,
        message: e.to_string(),
        help,
    }
}
