//! Host-side bindings of `wit/converter.wit` and the conversion of a guest's
//! output into protocol types, with the output caps applied.

use hermes_protocol::event::{MessageEvent, MessageType, PromptResponse, SessionSource};

use crate::limits::Limits;
use crate::outcome::{ConvertedEvent, RejectKind, ReplyRoute};

wasmtime::component::bindgen!({
    world: "converter-plugin",
    path: "../../wit",
    // Calls into the guest are async (they yield to the runtime between CPU
    // slices); the host's own imports (`log`, `config`) answer at once.
    exports: { default: async },
});

pub(crate) use self::exports::hermes::converter::converter::{Outcome, PluginInfo, Request};
use self::hermes::converter::types as wit;

/// The WIT package this host implements.
pub(crate) const PACKAGE: &str = "hermes:converter";
/// Its version.
pub(crate) const API_VERSION: &str = "0.1.0";

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

/// `media-urls` per event (the SDK's `MAX_MEDIA_URLS`).
pub(crate) const MAX_MEDIA_URLS: usize = 64;

/// `metadata` pairs per event (the SDK's `MAX_METADATA_PAIRS`).
pub(crate) const MAX_METADATA_PAIRS: usize = 64;

/// Bytes charged per string and per list element on top of the string
/// bytes, so that many tiny items count too (the SDK's
/// `OUTPUT_ELEMENT_OVERHEAD`; both sides must measure alike, or the SDK's
/// own check would let through what the host refuses as a fault).
pub(crate) const ELEMENT_OVERHEAD: usize = 16;

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
/// [`ELEMENT_OVERHEAD`] per string, per media url, per metadata pair and
/// for the event itself (the SDK's `output_size`).
fn event_size(e: &wit::MessageEvent) -> usize {
    const O: usize = ELEMENT_OVERHEAD;
    let st = |v: &str| v.len() + O;
    let opt = |o: &Option<String>| o.as_deref().map_or(0, st);
    let s = &e.source;
    O + st(&e.text)
        + opt(&e.message_id)
        + opt(&e.reply_to_message_id)
        + e.media_urls.iter().map(|u| O + st(u)).sum::<usize>()
        + e.metadata
            .iter()
            .map(|(k, v)| O + st(k) + st(v))
            .sum::<usize>()
        + e.prompt_response.as_ref().map_or(0, |p| {
            st(&p.prompt_id) + st(&p.option_id) + opt(&p.label) + opt(&p.prompt_message_id)
        })
        + st(&s.platform)
        + st(&s.chat_id)
        + [
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
        ]
        .into_iter()
        .map(opt)
        .sum::<usize>()
        + match &e.reply_route {
            wit::ReplyRoute::Send => 0,
            wit::ReplyRoute::FollowUp(k) => st(k),
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

/// Whether a plugin's `hermes:converter` version can run on this host: the
/// same major version and a minor version no newer than the host's (0.x
/// included: a plugin built against an older minor keeps loading, as the
/// spec requires; every minor release of the WIT package only adds). The
/// patch level never matters.
pub(crate) fn version_compatible(plugin: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let _patch: u64 = it.next()?.parse().ok()?;
        Some((major, minor))
    }
    let (Some(p), Some(h)) = (parse(plugin), parse(API_VERSION)) else {
        return false;
    };
    p.0 == h.0 && p.1 <= h.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK turns over-cap output into a rejection before it reaches the
    /// host; that only works while both sides measure the same way.
    #[test]
    fn caps_agree_with_the_sdk() {
        use hermes_converter_sdk as sdk;
        let limits = Limits::default();
        assert_eq!(limits.max_events, sdk::MAX_EVENTS);
        assert_eq!(limits.max_event_text_bytes, sdk::MAX_EVENT_TEXT_BYTES);
        assert_eq!(limits.max_output_bytes, sdk::MAX_OUTPUT_BYTES);
        assert_eq!(MAX_MEDIA_URLS, sdk::MAX_MEDIA_URLS);
        assert_eq!(MAX_METADATA_PAIRS, sdk::MAX_METADATA_PAIRS);
        assert_eq!(ELEMENT_OVERHEAD, sdk::OUTPUT_ELEMENT_OVERHEAD);
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

    #[test]
    fn versions() {
        assert!(version_compatible("0.1.0"));
        assert!(version_compatible("0.1.7"), "patch levels do not matter");
        assert!(version_compatible("0.0.3"), "an older minor keeps loading");
        assert!(
            !version_compatible("0.2.0"),
            "a newer minor than the host's"
        );
        assert!(!version_compatible("1.0.0"), "another major");
        assert!(!version_compatible("9.0.0"));
        assert!(!version_compatible("garbage"));
        assert!(!version_compatible("0.1"));
    }
}
