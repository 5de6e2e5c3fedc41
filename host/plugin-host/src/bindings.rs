//! Host-side bindings of `wit/0.1.0/converter.wit` and the conversion of a guest's
//! output into protocol types, with the output caps applied.

use hermes_protocol::event::{MessageEvent, MessageType, PromptResponse, SessionSource};

use crate::limits::Limits;
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

/// The WIT package this host implements.
pub(crate) const PACKAGE: &str = hermes_converter_abi::PACKAGE;
/// Its newest version.
pub(crate) const API_VERSION: &str = hermes_converter_abi::CURRENT_VERSION;

pub(crate) fn request(forward: &hermes_protocol::forward::PassthroughForward) -> Request {
    Request {
        platform: forward.platform.clone(),
        bot_id: forward.bot_id.clone(),
        method: forward.method.clone(),
        path: forward.path.clone(),
        headers: forward.headers.clone(),
        body: forward.body.clone(),
        profile: forward.profile.clone(),
    }
}

pub(crate) fn reject_kind(kind: wit::ErrorKind) -> RejectKind {
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

use hermes_converter_abi::caps::{MAX_MEDIA as MAX_MEDIA_URLS, MAX_METADATA_PAIRS};

/// The most wasmtime may copy out of a guest in one call, in its own units
/// (string bytes plus `size_of` of each lifted list element): room for the
/// largest output the caps admit, and no more. Anything a well-behaved guest
/// returns fits; a list bomb fails while being lifted, before the host
/// allocates it.
pub(crate) fn hostcall_fuel(limits: &Limits) -> usize {
    use std::mem::size_of;
    let per_event = size_of::<wit::MessageEvent>()
        + MAX_MEDIA_URLS * size_of::<String>()
        + MAX_METADATA_PAIRS * size_of::<(String, String)>();
    limits
        .max_output_bytes
        .max(limits.max_body_bytes / 16)
        .saturating_add(limits.max_events.saturating_mul(per_event))
}

/// Check a guest's events against the output caps and turn them into
/// protocol events. Any violation rejects the whole output: a partial event
/// list is never delivered.
pub(crate) fn events(
    events: Vec<wit::MessageEvent>,
    limits: &Limits,
) -> Result<Vec<ConvertedEvent>, String> {
    if events.len() > limits.max_events {
        return Err(format!(
            "{} events, at most {} allowed",
            events.len(),
            limits.max_events
        ));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        if e.text.len() > limits.max_event_text_bytes {
            return Err(format!(
                "event {i}: text of {} bytes, at most {} allowed",
                e.text.len(),
                limits.max_event_text_bytes
            ));
        }
        if e.media_urls.len() > MAX_MEDIA_URLS {
            return Err(format!(
                "event {i}: {} media urls, at most {MAX_MEDIA_URLS} allowed",
                e.media_urls.len()
            ));
        }
        if e.metadata.len() > MAX_METADATA_PAIRS {
            return Err(format!(
                "event {i}: {} metadata pairs, at most {MAX_METADATA_PAIRS} allowed",
                e.metadata.len()
            ));
        }
        total = total.saturating_add(event_size(&e));
        if total > limits.max_output_bytes {
            return Err(format!(
                "output larger than {} bytes",
                limits.max_output_bytes
            ));
        }
        out.push(event(e));
    }
    Ok(out)
}

/// An event's size as the caps measure it: string bytes plus
/// `ELEMENT_OVERHEAD` per string, per media url, per metadata pair and
/// for the event itself (the SDK's `output_size`).
fn event_size(e: &wit::MessageEvent) -> usize {
    let mut size = hermes_converter_abi::OutputSize::default();
    let s = &e.source;
    size.element();
    size.string(&e.text);
    for url in &e.media_urls {
        size.element();
        size.string(url);
    }
    for (k, v) in &e.metadata {
        size.element();
        size.string(k);
        size.string(v);
    }
    size.string(&s.platform);
    size.string(&s.chat_id);
    for field in [
        &s.chat_name,
        &s.user_id,
        &s.user_name,
        &s.thread_id,
        &s.chat_topic,
        &s.user_id_alt,
        &s.chat_id_alt,
        &s.scope_id,
        &s.parent_chat_id,
        &s.message_id,
        &s.profile,
        &e.message_id,
        &e.reply_to_message_id,
    ] {
        size.optional(field.as_deref());
    }
    if let Some(p) = &e.prompt_response {
        size.string(&p.prompt_id);
        size.string(&p.option_id);
        size.optional(p.label.as_deref());
        size.optional(p.prompt_message_id.as_deref());
    }
    if let wit::ReplyRoute::FollowUp(kind) = &e.reply_route {
        size.string(kind);
    }
    size.0
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

/// Whether a plugin's `hermes:converter` version can run on this host
/// (see [`hermes_converter_abi::implemented_version`]).
pub(crate) fn version_compatible(plugin: &str) -> bool {
    hermes_converter_abi::implemented_version(plugin).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK turns over-cap output into a rejection before it reaches the
    /// host; that only works while both sides measure the same way (the
    /// caps themselves are one set of constants, `hermes-converter-abi`).
    #[test]
    fn caps_agree_with_the_sdk() {
        use hermes_converter_sdk as sdk;
        // The same event measured by both.
        let mut e = sdk::MessageEvent::new(
            "hello",
            sdk::Source::new("p", "chat", sdk::ChatType::Dm),
            sdk::ReplyRoute::FollowUp("k".to_owned()),
        );
        e.media_urls.push("https://m".to_owned());
        e.metadata.push(("a".to_owned(), "bc".to_owned()));
        e.source.user_id = Some("u1".to_owned());
        let w = wit::MessageEvent {
            text: e.text.clone(),
            message_type: wit::MessageType::Text,
            source: wit::Source {
                platform: "p".to_owned(),
                chat_id: "chat".to_owned(),
                chat_type: wit::ChatType::Dm,
                chat_name: None,
                user_id: Some("u1".to_owned()),
                user_name: None,
                thread_id: None,
                chat_topic: None,
                user_id_alt: None,
                chat_id_alt: None,
                scope_id: None,
                parent_chat_id: None,
                message_id: None,
                profile: None,
                is_bot: false,
                message_is_edit: false,
            },
            message_id: None,
            reply_to_message_id: None,
            media_urls: e.media_urls.clone(),
            prompt_response: None,
            reply_route: wit::ReplyRoute::FollowUp("k".to_owned()),
            metadata: e.metadata.clone(),
        };
        assert_eq!(event_size(&w), sdk::output_size(std::slice::from_ref(&e)));
    }
}
