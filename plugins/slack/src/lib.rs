//! The first-party Slack converter (`platform = "slack"`).
//!
//! Turns a Slack slash command or interactivity request (a form, the latter
//! with one `payload` field holding JSON) into one agent message, following
//! `conversion.md` §4.3: `/command text`, `action_id value:…` for block
//! actions, `callback_id action_id:value …` for modal submissions. Slack's
//! SSL probe is ignored; malformed requests are typed errors in the spec's
//! order.
//!
//! The logic is plain Rust ([`webhook`]) so it is tested and benchmarked
//! natively; the wasm component is the [`export_converter!`] line at the
//! bottom.
//!
//! [`export_converter!`]: hermes_converter_sdk::export_converter

use hermes_converter_sdk::{Config, Converter, Outcome, PluginInfo, Request};

pub mod webhook;

/// The Slack converter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slack;

impl Converter for Slack {
    fn describe() -> PluginInfo {
        PluginInfo::new("slack", env!("CARGO_PKG_VERSION"), &["slack"])
    }

    fn tenant_of(req: &Request) -> Option<String> {
        webhook::tenant_of(req)
    }

    fn convert(req: &Request, _config: &dyn Config) -> Outcome {
        webhook::convert(req).into()
    }
}

#[cfg(target_arch = "wasm32")]
hermes_converter_sdk::export_converter!(Slack);
