//! Every Slack case of both corpora, natively, in both modes.

use hermes_converter_sdk::{Converter, testing};
use hermes_plugin_slack::Slack;

#[test]
fn synthetic_corpus() {
    let dir = testing::corpus_dir(env!("CARGO_MANIFEST_DIR"), "corpus");
    testing::assert_corpus_passes(&dir, "slack", Slack::convert);
}

#[test]
fn outside_corpus() {
    let dir = testing::corpus_dir(env!("CARGO_MANIFEST_DIR"), "corpus-outside");
    testing::assert_corpus_passes(&dir, "slack", Slack::convert);
}
