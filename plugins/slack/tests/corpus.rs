//! Every Slack case of both corpora, natively, in both modes.

use std::path::PathBuf;

use hermes_converter_sdk::{Converter, testing};
use hermes_plugin_slack::Slack;

const PLATFORM: &str = "slack";

fn corpus_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

fn run(name: &str) {
    let dir = corpus_dir(name);
    let report = testing::run_corpus(&dir, PLATFORM, Slack::convert)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let listed = testing::manifest_count(&dir, PLATFORM).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name}: {} {PLATFORM} cases, positional {} passed, named {} passed",
        report.cases, report.passed[0], report.passed[1]
    );
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    assert!(listed > 0, "{name} lists no {PLATFORM} cases");
    assert_eq!(
        report.cases, listed,
        "{name}: ran {} of the {listed} {PLATFORM} cases",
        report.cases
    );
    assert_eq!(
        report.passed,
        [listed, listed],
        "{name}: not every case passed in both modes"
    );
}

#[test]
fn synthetic_corpus() {
    run("corpus");
}

#[test]
fn outside_corpus() {
    run("corpus-outside");
}
