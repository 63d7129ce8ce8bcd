//! Warnings when `--rate`, `--duration` or a rate scale change what the
//! scenario's `expect:` assumes (the seed scenario as the example).

use std::path::Path;

use zdt_core::units::Rate;
use zdt_scenario::{self as scenario, assumption_warnings, AssumptionWarning, Overrides, Scenario};

fn seed(variant: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/seed-drain.yaml");
    scenario::load(path)
        .unwrap()
        .variants()
        .unwrap()
        .into_iter()
        .find(|v| v.variant == variant)
        .unwrap()
}

fn run_with(written: &Scenario, o: Overrides) -> Vec<AssumptionWarning> {
    let run = written.clone().with_overrides(&o).unwrap();
    assumption_warnings(written, &run)
}

#[test]
fn the_scenario_as_written_has_nothing_to_warn_about() {
    for v in ["published", "lb-first", "k8s-1.31", "no-mitigation"] {
        let s = seed(v);
        assert_eq!(assumption_warnings(&s, &s.clone()), vec![], "{v}");
    }
}

#[test]
fn a_shorter_run_warns_that_the_ratio_and_the_error_window_change() {
    let s = seed("published");
    let w = run_with(
        &s,
        Overrides {
            duration: Some("20s".parse().unwrap()),
            ..Overrides::default()
        },
    );
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(
        matches!(w[0], AssumptionWarning::DurationChangesRatio { factor, direction: "larger", .. } if (factor - 3.0).abs() < 1e-9),
        "{text:?}"
    );
    assert!(text[0].contains("93.0000 %–99.0000 %"), "{text:?}");
    // The drain at 10 s plus the Azure probe budget (2 × 5 s + the probe
    // timeout) does not fit in 20 s.
    assert!(
        w.iter()
            .any(|w| matches!(w, AssumptionWarning::EndsBeforeDetection { step: 1, .. })),
        "{text:?}"
    );
}

#[test]
fn a_rate_too_low_for_the_ratio_bound_is_named() {
    let s = seed("lb-first"); // successRatio ≥ 99.99 %: 30 of 300,000 as written
    let w = run_with(
        &s,
        Overrides {
            rate: Some(Rate::per_second(50.0).unwrap()),
            ..Overrides::default()
        },
    );
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{text:?}");
    assert!(
        matches!(
            &w[0],
            AssumptionWarning::TooFewRequests {
                side: "≥",
                requests: 3000,
                written_requests: 300000,
                ..
            }
        ),
        "{text:?}"
    );
    // The test suite's tenth of the rate: 3 of lb-first's 30,000 requests
    // decide its bound, while published's 93–99 % band is 300–2,100 wide.
    let scaled = s.clone().scaled(0.1);
    assert_eq!(assumption_warnings(&s, &scaled).len(), 1);
    let published = seed("published");
    assert_eq!(
        assumption_warnings(&published, &published.clone().scaled(0.1)),
        vec![]
    );
}
