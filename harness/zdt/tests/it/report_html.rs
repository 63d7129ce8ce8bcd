//! report.html from a run's data: self-contained, one timeline per variant
//! with its markers, escaped text, and the comparison across variants.

use zdt::report::testing as report_common;

use zdt::report::html;

fn render(data: &zdt::report::RunData) -> String {
    let mut buf = Vec::new();
    html::write(&mut buf, data).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn timelines_have_markers_windows_and_splits() {
    let data = report_common::run_data();
    let page = render(&data);
    report_common::check_structure(&page, &["no-mitigation", "lb-remove-first"]);

    // Six events per variant, each a marker with its source.
    assert_eq!(page.matches("class=\"marker event\"").count(), 12);
    assert!(page.contains("class=\"marker event\" data-source=\"lb\" data-reason=\"Unhealthy\""));
    assert!(page.contains("data-source=\"endpoint\" data-reason=\"NoLocalEndpoints\""));
    assert_eq!(page.matches("class=\"marker chaos\"").count(), 2);
    // The failing variant's error window is shaded with its attribution.
    assert_eq!(page.matches("class=\"error-window\"").count(), 1);
    assert!(page.contains("W1: worker2 · 8182 errors"));
    assert!(page.contains("opened by NoLocalEndpoints endpoint/worker2"));
    // Traffic split by node and pod, with the drained node's pod gone.
    assert!(page.contains("class=\"series by-node\""));
    assert!(page.contains("class=\"series by-pod\""));
    assert!(page.contains("&gt;nginx-c2&lt;") || page.contains(">nginx-c2<"));
    assert!(page.contains("class=\"series latency-p99\""));
    assert!(page.contains("class=\"series success-ratio\""));
}

#[test]
fn markup_in_names_is_escaped() {
    let mut data = report_common::run_data();
    data.summary.variants[0].name = "<script>x</script>".into();
    let page = render(&data);
    assert!(!page.contains("<script"));
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(page.contains("variant no-mitigation &lt;with markup &amp; quotes &quot;&gt;"));
}

#[test]
fn a_variant_without_buckets_or_events_still_gets_a_timeline() {
    let mut data = report_common::run_data();
    data.buckets.clear();
    data.events.clear();
    let page = render(&data);
    report_common::check_structure(&page, &["no-mitigation", "lb-remove-first"]);
    assert!(page.contains("no traffic buckets recorded"));
    // Chaos steps come from the summary, so they are still marked.
    assert_eq!(page.matches("class=\"marker chaos\"").count(), 2);
}

#[test]
fn the_structure_check_catches_external_references() {
    let page = render(&report_common::run_data());
    for bad in [
        "<a href=\"https://cdn.example/x\">x</a>",
        "<img src=\"x.png\">",
        "<p>see https://example.com/</p>",
        "<style>@import 'x.css';</style>",
    ] {
        let doctored = page.replace("<footer>", &format!("{bad}<footer>"));
        let caught = std::panic::catch_unwind(|| {
            report_common::check_structure(&doctored, &["no-mitigation", "lb-remove-first"])
        });
        assert!(caught.is_err(), "{bad} must be rejected");
    }
}
