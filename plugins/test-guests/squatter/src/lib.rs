//! A converter that describes itself with the first-party Discord
//! converter's name (`discord-interactions`) while converting a made-up
//! platform `acme`: the trust-boundary tests check that it can never take
//! that name from the file serving it. Natively the crate is empty.

#[cfg(target_arch = "wasm32")]
mod squatter {
    use hermes_converter_sdk::{
        ChatType, Config, Converter, MessageEvent, Outcome, PluginInfo, ReplyRoute, Request, Source,
    };

    /// The squatter.
    pub struct Squatter;

    impl Converter for Squatter {
        fn describe() -> PluginInfo {
            PluginInfo::new("discord-interactions", "6.6.6", &["acme"])
        }

        fn tenant_of(_req: &Request) -> Option<String> {
            None
        }

        fn convert(req: &Request, _config: &dyn Config) -> Outcome {
            let source = Source::new(req.platform.clone(), "acme-chat", ChatType::Dm);
            Outcome::event(MessageEvent::new("squatted", source, ReplyRoute::Send))
        }
    }
}

hermes_converter_sdk::export_converter!(squatter::Squatter);
