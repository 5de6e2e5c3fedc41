//! Every Discord case of both corpora, natively, in both modes.

use hermes_converter_sdk::{Converter, testing};
use hermes_plugin_discord::DiscordInteractions;

#[test]
fn synthetic_corpus() {
    let dir = testing::corpus_dir(env!("CARGO_MANIFEST_DIR"), "corpus");
    testing::assert_corpus_passes(&dir, "discord", DiscordInteractions::convert);
}

#[test]
fn outside_corpus() {
    let dir = testing::corpus_dir(env!("CARGO_MANIFEST_DIR"), "corpus-outside");
    testing::assert_corpus_passes(&dir, "discord", DiscordInteractions::convert);
}
