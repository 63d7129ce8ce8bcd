//! A sweep's report: the smallest value that met `expect:` per variant,
//! beside the predicted one, in Markdown, HTML and a well-formed SVG.

use zdt::report::{sweep, testing};
use zdt::run::Verdict;
use zdt_scenario::SweepPoint;

fn sweep_summary() -> zdt::run::RunSummary {
    let mut s = testing::summary();
    s.variants.clear();
    for (base, pass_from) in [("k8s-1.27", None), ("k8s-1.31", Some(2))] {
        for (index, value) in ["0s", "5s", "12s", "20s"].into_iter().enumerate() {
            let pass = pass_from.is_some_and(|from| index >= from);
            let mut v = testing::variant(
                &format!("{base}@{value}"),
                if pass { Verdict::Pass } else { Verdict::Fail },
                if pass { 0 } else { 1500 },
            );
            v.sweep = Some(SweepPoint {
                field: "workload.mitigations.preStopSleep".into(),
                value: value.into(),
                index,
                base: base.into(),
            });
            v.sweep_predicted_pass = Some(pass);
            s.variants.push(v);
        }
    }
    // Out of order on purpose: a sweep run with --jobs ends in any order.
    s.variants.reverse();
    s
}

#[test]
fn the_smallest_passing_value_is_called_out_per_variant() {
    let s = sweep_summary();
    let (field, series) = sweep::series(&s).expect("a sweep");
    assert_eq!(field, "workload.mitigations.preStopSleep");
    let answers = sweep::answers(field, &series);
    assert_eq!(
        answers,
        [
            "preStopSleep ≥ 12s meets `expect:` with `k8s-1.31`; predicted: ≥ 12s",
            "no swept preStopSleep meets `expect:` with `k8s-1.27`; predicted: none",
        ]
    );
    let mut md = Vec::new();
    sweep::markdown(&mut md, &s).unwrap();
    let md = String::from_utf8(md).unwrap();
    assert!(md.contains("| k8s-1.31 | 12s | Pass |"), "{md}");
}

#[test]
fn the_plot_is_well_formed_and_names_each_answer() {
    let svg = sweep::chart(&sweep_summary()).expect("a plot");
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert!(svg.contains("k8s-1.31 (≥ 12s)") && svg.contains("k8s-1.27 (none)"));
    // Every element's attributes are unique (a duplicate makes the file
    // unreadable for XML parsers, browsers excepted).
    for tag in svg.split('<').skip(1) {
        let head = tag.split('>').next().unwrap_or("");
        let mut names: Vec<&str> = head
            .split_whitespace()
            .skip(1)
            .filter_map(|a| a.split_once('=').map(|(n, _)| n))
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate attribute in <{head}>");
    }
}

#[test]
fn a_run_that_is_no_sweep_has_no_sweep_section() {
    let s = testing::summary();
    assert!(sweep::series(&s).is_none());
    assert!(sweep::chart(&s).is_none());
    let mut md = Vec::new();
    sweep::markdown(&mut md, &s).unwrap();
    assert!(md.is_empty());
}
