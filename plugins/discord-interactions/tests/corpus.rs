//! Every Discord case of both corpora, natively, in both modes.

use std::path::PathBuf;

use hermes_converter_sdk::{Converter, testing};
use hermes_plugin_discord::DiscordInteractions;

const PLATFORM: &str = "discord";

fn corpus_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

fn run(name: &str) {
    let dir = corpus_dir(name);
    let report = testing::run_corpus(&dir, PLATFORM, DiscordInteractions::convert)
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

/// The comparison itself must notice a wrong field, or the corpus tests
/// above could pass vacuously.
#[test]
fn the_check_catches_wrong_fields() {
    let cases = testing::load_corpus(&corpus_dir("corpus")).expect("corpus loads");
    let case = cases
        .iter()
        .find(|c| c.file == "discord/guild_slash_simple.json")
        .expect("case present");
    let right = DiscordInteractions::convert(&case.request, testing::Mode::Named.config());
    testing::check_case(case, testing::Mode::Named, &right).expect("the real outcome passes");
    // Positional text under the named mode is wrong.
    let positional =
        DiscordInteractions::convert(&case.request, testing::Mode::Positional.config());
    let err =
        testing::check_case(case, testing::Mode::Named, &positional).expect_err("mode mix-up");
    assert!(err.contains("events[0].text"), "{err}");

    let mut wrong = right.clone();
    if let hermes_converter_sdk::Outcome::Events(events) = &mut wrong {
        events[0].source.user_id = Some("1".into());
    }
    let err = testing::check_case(case, testing::Mode::Named, &wrong).expect_err("wrong user id");
    assert!(err.contains("source.user_id"), "{err}");

    let err = testing::check_case(
        case,
        testing::Mode::Positional,
        &hermes_converter_sdk::Outcome::ignored("ping"),
    )
    .expect_err("wrong outcome");
    assert!(err.contains("outcome"), "{err}");
}
