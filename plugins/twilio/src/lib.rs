//! The first-party Twilio converter (`platform = "twilio"`).
//!
//! Turns a Twilio Messaging (SMS, MMS, WhatsApp) or Voice webhook, a form
//! decoded exactly once, into one agent message, following `conversion.md`
//! §4.2: the sender's number is the chat, the receiving number the tenant
//! scope, media URLs come in index order, a WhatsApp quick reply gives its
//! payload and a voice call its speech or digits. Status callbacks and the
//! first ring of a call are ignored; malformed requests are typed errors in
//! the spec's order.
//!
//! The logic is plain Rust ([`webhook`]) so it is tested and benchmarked
//! natively; the wasm component is the [`export_converter!`] line at the
//! bottom.
//!
//! [`export_converter!`]: hermes_converter_sdk::export_converter

use hermes_converter_sdk::{Config, Converter, Outcome, PluginInfo, Request};

pub mod webhook;

/// The Twilio converter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Twilio;

impl Converter for Twilio {
    fn describe() -> PluginInfo {
        PluginInfo::new("twilio", env!("CARGO_PKG_VERSION"), &["twilio"])
    }

    fn tenant_of(req: &Request) -> Option<String> {
        webhook::tenant_of(req)
    }

    fn convert(req: &Request, _config: &dyn Config) -> Outcome {
        webhook::convert(req).into()
    }
}

#[cfg(target_arch = "wasm32")]
hermes_converter_sdk::export_converter!(Twilio);
