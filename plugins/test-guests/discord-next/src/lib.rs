//! A candidate Discord converter, `discord-next`, for the shadow and canary
//! tests: it renders a slash command as `/<name> (next)` — differently from
//! `discord-interactions`, which renders its options — and panics (a trap,
//! a plugin fault) on a command named `boom`. Everything else about it is
//! an ordinary converter. Natively the crate is empty.

#[cfg(target_arch = "wasm32")]
mod next {
    use hermes_converter_sdk::json;
    use hermes_converter_sdk::{
        ChatType, Config, ConvertError, Converter, MessageEvent, MessageType, Outcome, PluginInfo,
        ReplyRoute, Request, Source,
    };

    /// The candidate.
    pub struct Next;

    fn convert(req: &Request) -> Result<Outcome, ConvertError> {
        let body = req.body_text("application/json")?;
        let root = json::parse(body)?;
        let name = root.object_field("data")?.str_field("name")?;
        if name == "boom" {
            panic!("discord-next cannot render `boom`");
        }
        let mut source = Source::new("discord", root.str_field("channel_id")?, ChatType::Group);
        source.scope_id = root.opt_str_field("guild_id")?.map(str::to_owned);
        source.user_id = root
            .opt_object_field("member")?
            .map(|m| m.object_field("user").and_then(|u| u.str_field("id")))
            .transpose()?
            .map(str::to_owned);
        let mut event = MessageEvent::new(
            format!("/{name} (next)"),
            source,
            ReplyRoute::FollowUp("discord.interaction_token".to_owned()),
        );
        event.message_type = MessageType::Command;
        Ok(Outcome::event(event))
    }

    impl Converter for Next {
        fn describe() -> PluginInfo {
            PluginInfo::new("discord-next", env!("CARGO_PKG_VERSION"), &["discord"])
        }

        fn tenant_of(req: &Request) -> Option<String> {
            let body = std::str::from_utf8(&req.body).ok()?;
            let root = json::parse(body).ok()?;
            root.opt_str_field("guild_id")
                .ok()
                .flatten()
                .map(str::to_owned)
        }

        fn convert(req: &Request, _config: &dyn Config) -> Outcome {
            convert(req).unwrap_or_else(Outcome::Error)
        }
    }
}

#[cfg(target_arch = "wasm32")]
hermes_converter_sdk::export_converter!(next::Next);
