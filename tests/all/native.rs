//! The first-party converters called natively (no sandbox): every case of
//! both corpora in both tenant modes, and a stable fuzz run from every
//! corpus body (`HERMES_FUZZ_SECS`, 2 s by default; a panic saves the input
//! under `target/fuzz-crashes/` and becomes a regression test). The same
//! cases through the compiled components are in `corpus.rs`.

use std::path::PathBuf;

use hermes_converter_sdk::{Config, Converter, Outcome, Request, testing};
use hermes_plugin_discord::DiscordInteractions;
use hermes_plugin_slack::Slack;
use hermes_plugin_twilio::Twilio;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn corpora(platform: &str, convert: impl Fn(&Request, &dyn Config) -> Outcome + Copy) {
    for corpus in ["corpus", "corpus-outside"] {
        testing::assert_corpus_passes(&data_dir().join(corpus), platform, convert);
    }
}

#[test]
fn discord_corpora() {
    corpora("discord", DiscordInteractions::convert);
}

#[test]
fn twilio_corpora() {
    corpora("twilio", Twilio::convert);
}

#[test]
fn slack_corpora() {
    corpora("slack", Slack::convert);
}

#[test]
fn fuzz_discord() {
    testing::fuzz_converter(&data_dir(), "discord", DiscordInteractions::convert);
}

#[test]
fn fuzz_twilio() {
    testing::fuzz_converter(&data_dir(), "twilio", Twilio::convert);
}

#[test]
fn fuzz_slack() {
    testing::fuzz_converter(&data_dir(), "slack", Slack::convert);
}
