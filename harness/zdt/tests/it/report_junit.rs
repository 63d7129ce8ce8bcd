//! junit.xml parsed with a real XML parser and checked against the common
//! JUnit structure CI systems read (Jenkins/Ant schema: required attributes,
//! element nesting, counts that add up).

use zdt::report::testing as report_common;

use roxmltree::{Document, Node};
use zdt::run::summary::Verdict;

fn render(summary: &zdt::run::summary::RunSummary) -> String {
    let mut buf = Vec::new();
    zdt::report::junit::write(&mut buf, summary).unwrap();
    String::from_utf8(buf).unwrap()
}

fn num(n: Node, attr: &str) -> f64 {
    let v = n
        .attribute(attr)
        .unwrap_or_else(|| panic!("<{}> lacks required attribute {attr}", n.tag_name().name()));
    v.parse()
        .unwrap_or_else(|_| panic!("<{}> {attr}={v:?} is not a number", n.tag_name().name()))
}

fn elements<'a, 'i>(n: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.has_tag_name(name))
}

/// Validates the structure of the common JUnit schema and returns
/// (tests, failures, errors) as counted from the cases.
fn validate(xml: &str) -> (usize, usize, usize) {
    let doc = Document::parse(xml).expect("junit.xml is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    for c in root.children().filter(|c| c.is_element()) {
        assert_eq!(
            c.tag_name().name(),
            "testsuite",
            "only testsuite under testsuites"
        );
    }
    let (mut tests, mut failures, mut errors) = (0, 0, 0);
    for suite in elements(root, "testsuite") {
        assert!(!suite.attribute("name").unwrap_or("").is_empty());
        let ts = suite.attribute("timestamp").expect("timestamp");
        assert_eq!(ts.len(), 19, "ISO 8601 without zone: {ts}");
        assert!(num(suite, "time") >= 0.0);
        num(suite, "skipped");
        let (mut t, mut f, mut e) = (0, 0, 0);
        for child in suite.children().filter(|c| c.is_element()) {
            let name = child.tag_name().name();
            assert!(
                ["properties", "testcase", "system-out", "system-err"].contains(&name),
                "unexpected <{name}> in testsuite"
            );
            if name == "properties" {
                for p in child.children().filter(|c| c.is_element()) {
                    assert_eq!(p.tag_name().name(), "property");
                    assert!(p.attribute("name").is_some() && p.attribute("value").is_some());
                }
            }
        }
        for case in elements(suite, "testcase") {
            t += 1;
            assert!(!case.attribute("name").unwrap_or("").is_empty());
            assert!(!case.attribute("classname").unwrap_or("").is_empty());
            assert!(num(case, "time") >= 0.0);
            let outcomes: Vec<Node> = case.children().filter(|c| c.is_element()).collect();
            assert!(outcomes.len() <= 1, "at most one outcome per case");
            for o in outcomes {
                match o.tag_name().name() {
                    "failure" => f += 1,
                    "error" => e += 1,
                    other => panic!("unexpected <{other}> in testcase"),
                }
                assert!(o.attribute("message").is_some(), "outcome has a message");
                assert!(o.attribute("type").is_some(), "outcome has a type");
            }
        }
        assert_eq!(num(suite, "tests") as usize, t);
        assert_eq!(num(suite, "failures") as usize, f);
        assert_eq!(num(suite, "errors") as usize, e);
        tests += t;
        failures += f;
        errors += e;
    }
    assert_eq!(num(root, "tests") as usize, tests);
    assert_eq!(num(root, "failures") as usize, failures);
    assert_eq!(num(root, "errors") as usize, errors);
    (tests, failures, errors)
}

#[test]
fn one_case_per_variant_and_expectation_with_failures_for_failed_ones() {
    let s = report_common::summary();
    let xml = render(&s);
    let (tests, failures, errors) = validate(&xml);
    assert_eq!(tests, 4, "2 variants x 2 expectations");
    assert_eq!(failures, 2, "the failing variant's two expectations");
    assert_eq!(errors, 0);
    let doc = Document::parse(&xml).unwrap();
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(
        failure.attribute("message").unwrap().contains("got 0.9727"),
        "the failure says what was measured: {:?}",
        failure.attribute("message")
    );
    // Markup in names and descriptions survives escaping.
    assert!(xml.contains("seed-drain/no-mitigation"));
}

#[test]
fn invalid_variants_are_errors_not_failures() {
    let mut s = report_common::summary();
    s.variants[1].verdict = Verdict::Invalid;
    s.variants[1].reasons = vec!["generator fell behind: lag p99 <1.2 s> & rising".into()];
    s.variants[1].expectations.clear();
    let mut third = report_common::variant("incomplete", Verdict::Incomplete, 10);
    third.name = "cut \"short\" <here>".into();
    s.variants.push(third);
    let xml = render(&s);
    let (tests, failures, errors) = validate(&xml);
    assert_eq!(
        tests,
        2 + 1 + 2,
        "an expectation-less variant still has one case"
    );
    assert_eq!(failures, 2);
    assert_eq!(errors, 3);
    let doc = Document::parse(&xml).unwrap();
    let err = doc.descendants().find(|n| n.has_tag_name("error")).unwrap();
    assert_eq!(err.attribute("type"), Some("invalid"));
    assert!(err
        .attribute("message")
        .unwrap()
        .contains("<1.2 s> & rising"));
}
