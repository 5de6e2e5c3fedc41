//! The first-party Discord interactions converter (`platform = "discord"`).
//!
//! Turns an interaction webhook (JSON) into one agent message, following
//! `conversion.md` §4.1: slash commands become `/name sub arg …` (positional,
//! or `name:value` with tenant config `options = "named"`), context-menu
//! commands name their target, buttons and selects give their custom id and
//! values, modals their fields, and a `hp1:<prompt>:<option>` button answers
//! a prompt the gateway sent. PINGs and autocomplete are ignored; everything
//! else malformed is a typed error in the spec's order.
//!
//! The logic is plain Rust ([`interaction`], [`text`]) so it is tested and
//! benchmarked natively; the wasm component is the [`export_converter!`]
//! line at the bottom.
//!
//! [`export_converter!`]: hermes_converter_sdk::export_converter

use hermes_converter_sdk::{Config, Converter, Outcome, PluginInfo, Request};

pub mod interaction;
pub mod text;

/// The Discord interactions converter.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscordInteractions;

impl Converter for DiscordInteractions {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "discord-interactions",
            env!("CARGO_PKG_VERSION"),
            &["discord"],
        )
    }

    fn tenant_of(req: &Request) -> Option<String> {
        interaction::tenant_of(req)
    }

    fn convert(req: &Request, config: &dyn Config) -> Outcome {
        let named = config.get("options").is_some_and(|v| v == "named");
        interaction::convert(req, named).into()
    }
}

#[cfg(target_arch = "wasm32")]
hermes_converter_sdk::export_converter!(DiscordInteractions);
