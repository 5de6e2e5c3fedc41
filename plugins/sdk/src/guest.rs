//! The component glue (wasm32 only): bindings for the `converter-plugin`
//! world, conversions between the WIT types and this crate's native types,
//! and the panic hook that reports guest panics to the host.
//!
//! A converter crate never uses this module directly; it writes
//! `export_converter!(MyConverter);` and the macro wires everything here.

use crate::{
    Config, ConvertError, Converter, Level, Media, MessageEvent, Outcome, OutputCaps, PluginInfo,
    PromptResponse, ReplyRoute, Request, Source,
};

wit_bindgen::generate!({
    world: "converter-plugin",
    path: "../../wit/0.2.0",
    // The export macro must be reachable from the converter crates, through
    // `export_converter!` below.
    pub_export_macro: true,
    export_macro_name: "__export_converter_plugin",
    default_bindings_module: "hermes_converter_sdk::guest",
});

use self::hermes::converter::host as wit_host;
use self::hermes::converter::types as wit;

/// Log a line through the host's `log` import.
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit::Level::Trace,
        Level::Debug => wit::Level::Debug,
        Level::Info => wit::Level::Info,
        Level::Warn => wit::Level::Warn,
        Level::Error => wit::Level::Error,
    };
    wit_host::log(level, message);
}

/// The prefix of the log line the panic hook writes; the host recognises it
/// and reports the trap that follows as a panic carrying this message.
pub const PANIC_LOG_PREFIX: &str = "guest panicked: ";

/// Install (once per instance) a panic hook that logs the panic message at
/// error level before the guest traps. Without it the host would only see an
/// `unreachable` trap; std's default hook writes to stderr, which the host
/// captures too, but `log` is the channel every host reads.
pub fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = match info.payload().downcast_ref::<&str>() {
                Some(s) => (*s).to_owned(),
                None => match info.payload().downcast_ref::<String>() {
                    Some(s) => s.clone(),
                    None => "Box<dyn Any>".to_owned(),
                },
            };
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            wit_host::log(
                wit::Level::Error,
                &format!("{PANIC_LOG_PREFIX}{message}{location}"),
            );
        }));
    });
}

/// The caps in force, read through the host's `limits` import.
pub fn output_caps() -> OutputCaps {
    let l = wit_host::limits();
    let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
    OutputCaps {
        max_events: n(l.max_events),
        max_event_text_bytes: n(l.max_event_text_bytes),
        max_output_bytes: n(l.max_output_bytes),
        max_media: n(l.max_media),
    }
}

/// The tenant configuration, read through the host's `config` import.
pub struct HostConfig;

impl Config for HostConfig {
    fn get(&self, key: &str) -> Option<String> {
        wit_host::config(key)
    }
}

/// `describe` for converter `C`.
pub fn describe<C: Converter>() -> wit::PluginInfo {
    install_panic_hook();
    let PluginInfo {
        name,
        version,
        platforms,
    } = C::describe();
    wit::PluginInfo {
        name,
        version,
        platforms,
    }
}

/// `tenant-of` for converter `C`.
pub fn tenant_of<C: Converter>(req: wit::Request) -> Option<String> {
    install_panic_hook();
    C::tenant_of(&request_from_wit(req))
}

/// `convert` for converter `C`.
pub fn convert<C: Converter>(req: wit::Request) -> wit::Outcome {
    install_panic_hook();
    let outcome = C::convert(&request_from_wit(req), &HostConfig);
    let outcome = if C::CHECK_OUTPUT_CAPS {
        crate::check_output_caps(outcome)
    } else {
        outcome
    };
    outcome_to_wit(outcome)
}

fn request_from_wit(req: wit::Request) -> Request {
    Request {
        platform: req.platform,
        bot_id: req.bot_id,
        method: req.method,
        path: req.path,
        headers: req.headers,
        body: req.body,
        profile: req.profile,
    }
}

fn outcome_to_wit(outcome: Outcome) -> wit::Outcome {
    match outcome {
        Outcome::Events(events) => {
            wit::Outcome::Events(events.into_iter().map(event_to_wit).collect())
        }
        Outcome::Ignored(reason) => wit::Outcome::Ignored(reason),
        Outcome::Error(ConvertError { kind, message }) => wit::Outcome::Error(wit::ConvertError {
            kind: kind.as_str().to_owned(),
            message,
        }),
    }
}

fn event_to_wit(event: MessageEvent) -> wit::MessageEvent {
    wit::MessageEvent {
        text: event.text,
        message_type: event.message_type.as_str().to_owned(),
        source: source_to_wit(event.source),
        message_id: event.message_id,
        reply_to_message_id: event.reply_to_message_id,
        media: event
            .media
            .into_iter()
            .map(|Media { url, content_type }| wit::Media { url, content_type })
            .collect(),
        prompt_response: event.prompt_response.map(
            |PromptResponse {
                 prompt_id,
                 option_id,
                 label,
                 prompt_message_id,
             }| wit::PromptResponse {
                prompt_id,
                option_id,
                label,
                prompt_message_id,
            },
        ),
        reply_route: match event.reply_route {
            ReplyRoute::Send => wit::ReplyRoute::Send,
            ReplyRoute::FollowUp(kind) => wit::ReplyRoute::FollowUp(kind),
        },
    }
}

fn source_to_wit(s: Source) -> wit::Source {
    wit::Source {
        platform: s.platform,
        chat_id: s.chat_id,
        chat_type: s.chat_type.as_str().to_owned(),
        chat_name: s.chat_name,
        user_id: s.user_id,
        user_name: s.user_name,
        thread_id: s.thread_id,
        chat_topic: s.chat_topic,
        user_id_alt: s.user_id_alt,
        chat_id_alt: s.chat_id_alt,
        scope_id: s.scope_id,
        parent_chat_id: s.parent_chat_id,
        message_id: s.message_id,
        profile: s.profile,
        is_bot: s.is_bot,
        message_is_edit: s.message_is_edit,
    }
}
