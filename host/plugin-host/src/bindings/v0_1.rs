//! Bindings of `wit/0.1.0` (frozen) and the mapping of its types into the
//! host's model. 0.1 has closed enums for message type, chat type and error
//! kind, `api-version` in `describe`, and informational `metadata` on events
//! (carried in the model, never onto outbound actions).

use hermes_protocol::event::{MessageEvent, MessageType, PromptResponse, SessionSource};

use super::{GuestOutcome, Info};
use crate::outcome::{ConvertedEvent, RejectKind, ReplyRoute};

wasmtime::component::bindgen!({
    world: "converter-plugin",
    path: "../../wit/0.1.0",
    // Calls into the guest are async (they yield to the runtime between CPU
    // slices); the host's own imports (`log`, `config`) answer at once.
    exports: { default: async },
});

pub(crate) use self::exports::hermes::converter::converter::{Outcome, PluginInfo, Request};
use self::hermes::converter::types as wit;

pub(super) fn info(i: PluginInfo) -> Info {
    Info {
        name: i.name,
        version: i.version,
        platforms: i.platforms,
        api_version: Some(i.api_version),
    }
}

/// What one event may cost in lifted host memory beyond its strings.
pub(super) fn event_fuel() -> usize {
    use hermes_converter_abi::caps::{MAX_MEDIA, MAX_METADATA_PAIRS};
    use std::mem::size_of;
    size_of::<wit::MessageEvent>()
        + MAX_MEDIA * size_of::<String>()
        + MAX_METADATA_PAIRS * size_of::<(String, String)>()
}

pub(super) fn outcome(o: Outcome) -> Result<GuestOutcome, String> {
    Ok(match o {
        Outcome::Events(events) => GuestOutcome::Events(events.into_iter().map(event).collect()),
        Outcome::Ignored(reason) => GuestOutcome::Ignored(reason),
        Outcome::Error(e) => GuestOutcome::Rejected {
            kind: reject_kind(e.kind),
            message: e.message,
        },
    })
}

fn reject_kind(kind: wit::ErrorKind) -> RejectKind {
    match kind {
        wit::ErrorKind::EmptyBody => RejectKind::EmptyBody,
        wit::ErrorKind::PayloadTooLarge => RejectKind::PayloadTooLarge,
        wit::ErrorKind::UnsupportedContentType => RejectKind::UnsupportedContentType,
        wit::ErrorKind::InvalidEncoding => RejectKind::InvalidEncoding,
        wit::ErrorKind::InvalidForm => RejectKind::InvalidForm,
        wit::ErrorKind::InvalidJson => RejectKind::InvalidJson,
        wit::ErrorKind::MissingField => RejectKind::MissingField,
        wit::ErrorKind::InvalidField => RejectKind::InvalidField,
        wit::ErrorKind::UnsupportedType => RejectKind::UnsupportedType,
    }
}

fn event(e: wit::MessageEvent) -> ConvertedEvent {
    let s = e.source;
    let source = SessionSource {
        platform: s.platform,
        chat_id: s.chat_id,
        chat_type: chat_type(s.chat_type).to_owned(),
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
    ConvertedEvent {
        event: MessageEvent {
            text: e.text,
            message_type: message_type(e.message_type),
            source,
            message_id: e.message_id,
            reply_to_message_id: e.reply_to_message_id,
            media_urls: e.media_urls,
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
        media_types: Vec::new(),
        metadata: e.metadata,
    }
}

fn chat_type(t: wit::ChatType) -> &'static str {
    match t {
        wit::ChatType::Dm => "dm",
        wit::ChatType::Group => "group",
        wit::ChatType::Channel => "channel",
        wit::ChatType::Thread => "thread",
        wit::ChatType::Forum => "forum",
    }
}

fn message_type(t: wit::MessageType) -> MessageType {
    match t {
        wit::MessageType::Text => MessageType::Text,
        wit::MessageType::Location => MessageType::Location,
        wit::MessageType::Photo => MessageType::Photo,
        wit::MessageType::Video => MessageType::Video,
        wit::MessageType::Audio => MessageType::Audio,
        wit::MessageType::Voice => MessageType::Voice,
        wit::MessageType::Document => MessageType::Document,
        wit::MessageType::Sticker => MessageType::Sticker,
        wit::MessageType::Command => MessageType::Command,
    }
}
