//! Bindings of `wit/0.2.0` and the mapping of its types into the host's
//! model. The open string fields are checked here: a message type or error
//! kind the host does not know, or a chat type that is not a short token,
//! is malformed output (a plugin fault), never passed on.

use hermes_converter_abi::is_token;
use hermes_protocol::event::{MessageEvent, MessageType, PromptResponse, SessionSource};

use super::{GuestOutcome, Info};
use crate::outcome::{ConvertedEvent, RejectKind, ReplyRoute};

wasmtime::component::bindgen!({
    world: "converter-plugin",
    path: "../../wit/0.2.0",
    // As for 0.1: calls into the guest are async, host imports answer at once.
    exports: { default: async },
});

pub(crate) use self::exports::hermes::converter::converter::{Outcome, PluginInfo, Request};
use self::hermes::converter::types as wit;
pub(crate) use self::hermes::converter::types::OutputLimits;

pub(super) fn info(i: PluginInfo) -> Info {
    Info {
        name: i.name,
        version: i.version,
        platforms: i.platforms,
        api_version: Some("0.2.0".to_owned()),
    }
}

/// What one event may cost in lifted host memory beyond its strings.
pub(super) fn event_fuel() -> usize {
    use hermes_converter_abi::caps::MAX_MEDIA;
    use std::mem::size_of;
    size_of::<wit::MessageEvent>() + MAX_MEDIA * size_of::<wit::Media>()
}

pub(super) fn outcome(o: Outcome) -> Result<GuestOutcome, String> {
    Ok(match o {
        Outcome::Events(events) => GuestOutcome::Events(
            events
                .into_iter()
                .enumerate()
                .map(|(i, e)| event(e).map_err(|why| format!("event {i}: {why}")))
                .collect::<Result<_, _>>()?,
        ),
        Outcome::Ignored(reason) => GuestOutcome::Ignored(reason),
        Outcome::Error(e) => GuestOutcome::Rejected {
            kind: RejectKind::parse(&e.kind)
                .ok_or_else(|| format!("unknown error kind {:?}", short(&e.kind)))?,
            message: e.message,
        },
    })
}

/// At most 40 bytes of an unknown value, for a message.
fn short(s: &str) -> &str {
    s.get(..s.floor_char_boundary(40)).unwrap_or(s)
}

fn event(e: wit::MessageEvent) -> Result<ConvertedEvent, String> {
    let message_type = MessageType::ALL
        .into_iter()
        .find(|t| t.as_str() == e.message_type)
        .ok_or_else(|| format!("unknown message type {:?}", short(&e.message_type)))?;
    let s = e.source;
    if !is_token(&s.chat_type) {
        return Err(format!(
            "chat type {:?} is not a short lowercase token",
            short(&s.chat_type)
        ));
    }
    let source = SessionSource {
        platform: s.platform,
        chat_id: s.chat_id,
        chat_type: s.chat_type,
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
    };
    let (media_urls, media_types) = e.media.into_iter().map(|m| (m.url, m.content_type)).unzip();
    Ok(ConvertedEvent {
        event: MessageEvent {
            text: e.text,
            message_type,
            source,
            message_id: e.message_id,
            reply_to_message_id: e.reply_to_message_id,
            media_urls,
            prompt_response: e.prompt_response.map(|p| PromptResponse {
                prompt_id: p.prompt_id,
                option_id: p.option_id,
                label: p.label,
                prompt_message_id: p.prompt_message_id,
            }),
        },
        reply_route: match e.reply_route {
            wit::ReplyRoute::Send => ReplyRoute::Send,
            wit::ReplyRoute::FollowUp(kind) => ReplyRoute::FollowUp { kind },
        },
        media_types,
        metadata: Vec::new(),
    })
}

/// The caps a 0.2 plugin reads through `host.limits`.
pub(crate) fn output_limits(limits: &crate::limits::Limits) -> OutputLimits {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    OutputLimits {
        max_events: n(limits.max_events),
        max_event_text_bytes: n(limits.max_event_text_bytes),
        max_output_bytes: n(limits.max_output_bytes),
        max_media: n(hermes_converter_abi::caps::MAX_MEDIA),
        element_overhead: n(hermes_converter_abi::caps::ELEMENT_OVERHEAD),
    }
}
