//! Every Twilio case of both corpora, natively, in both modes.

use hermes_converter_sdk::{Converter, testing};
use hermes_plugin_twilio::Twilio;

#[test]
fn synthetic_corpus() {
    let dir = testing::corpus_dir(env!("CARGO_MANIFEST_DIR"), "corpus");
    testing::assert_corpus_passes(&dir, "twilio", Twilio::convert);
}

#[test]
fn outside_corpus() {
    let dir = testing::corpus_dir(env!("CARGO_MANIFEST_DIR"), "corpus-outside");
    testing::assert_corpus_passes(&dir, "twilio", Twilio::convert);
}

/// Mutants of every twilio corpus body, both modes: no input panics the
/// converter (HERMES_FUZZ_SECS, default 2 s; a crash is saved under
/// target/fuzz-crashes and becomes a regression test).
#[test]
fn fuzz_smoke() {
    testing::fuzz_converter(env!("CARGO_MANIFEST_DIR"), "twilio", Twilio::convert);
}
