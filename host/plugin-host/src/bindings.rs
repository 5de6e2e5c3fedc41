//! Host-side bindings of `wit/converter.wit` and the conversion of a guest's
//! output into protocol types, with the output caps applied.

use hermes_protocol::event::{MessageEvent, MessageType, PromptResponse, SessionSource};

use crate::{ConvertedEvent, Limits, RejectKind, ReplyRoute};

wasmtime::component::bindgen!({
    world: "converter-plugin",
    path: "../../wit",
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

/// Bytes of strings in an event (what the caps measure).
fn event_size(e: &wit::MessageEvent) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    let s = &e.source;
    e.text.len()
        + opt(&e.message_id)
        + opt(&e.reply_to_message_id)
        + e.media_urls.iter().map(String::len).sum::<usize>()
        + e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + e.prompt_response.as_ref().map_or(0, |p| {
            p.prompt_id.len() + p.option_id.len() + opt(&p.label) + opt(&p.prompt_message_id)
        })
        + s.platform.len()
        + s.chat_id.len()
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
            wit::ReplyRoute::FollowUp(k) => k.len(),
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

/// Whether a plugin's `hermes:converter` version can run on this host:
/// semver-compatible (same major, or same minor below 1.0) and not newer.
pub(crate) fn version_compatible(plugin: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch = it.next()?.parse().ok()?;
        Some((major, minor, patch))
    }
    let (Some(p), Some(h)) = (parse(plugin), parse(API_VERSION)) else {
        return false;
    };
    let same_track = if h.0 == 0 { p.0 == 0 && p.1 == h.1 } else { p.0 == h.0 };
    same_track && p <= h
}

#[cfg(test)]
mod tests {
    use super::version_compatible;

    #[test]
    fn versions() {
        assert!(version_compatible("0.1.0"));
        assert!(!version_compatible("0.2.0"), "another 0.x minor is a breaking change");
        assert!(!version_compatible("9.0.0"));
        assert!(!version_compatible("0.1.1"), "newer than the host");
        assert!(!version_compatible("garbage"));
    }
}
