//! The JSON form of a converted event: the wire MessageEvent of
//! relay-contract §5.1 with every optional key written (`null` when unset),
//! plus `is_bot`, the reply route and the plugin's metadata. This is what
//! `hermes-gateway convert` prints (cli.md) and what the end-to-end corpus
//! test compares, so it is defined once, here.

use std::collections::BTreeMap;

use hermes_protocol::event::{MessageEvent, MessageType, SessionSource};
use serde::{Serialize, Serializer};

use crate::outcome::{ConvertedEvent, ReplyRoute};

impl Serialize for ConvertedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireEvent::from(self).serialize(serializer)
    }
}

/// The wire MessageEvent (§5.1) with every optional key written.
#[derive(Serialize)]
struct WireEvent<'a> {
    text: &'a str,
    message_type: &'a MessageType,
    source: WireSource<'a>,
    message_id: &'a Option<String>,
    reply_to_message_id: &'a Option<String>,
    media_urls: &'a [String],
    prompt_response: Option<WirePrompt<'a>>,
    /// Mirrors `source.is_bot`, as the corpus lists it on the event.
    is_bot: bool,
    reply_route: WireRoute<'a>,
    metadata: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct WireSource<'a> {
    platform: &'a str,
    chat_id: &'a str,
    chat_type: &'a str,
    chat_name: &'a Option<String>,
    user_id: &'a Option<String>,
    user_name: &'a Option<String>,
    thread_id: &'a Option<String>,
    chat_topic: &'a Option<String>,
    user_id_alt: &'a Option<String>,
    chat_id_alt: &'a Option<String>,
    scope_id: &'a Option<String>,
    /// Legacy alias of `scope_id`, written alongside it (§5.1).
    guild_id: &'a Option<String>,
    parent_chat_id: &'a Option<String>,
    message_id: &'a Option<String>,
    profile: &'a Option<String>,
    is_bot: bool,
    message_is_edit: bool,
}

#[derive(Serialize)]
struct WirePrompt<'a> {
    prompt_id: &'a str,
    option_id: &'a str,
    /// Omitted (not `null`) when the plugin gave no label.
    #[serde(skip_serializing_if = "Option::is_none")]
    label: &'a Option<String>,
    prompt_message_id: &'a Option<String>,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireRoute<'a> {
    Send,
    FollowUp { kind: &'a str },
}

impl<'a> From<&'a ConvertedEvent> for WireEvent<'a> {
    fn from(c: &'a ConvertedEvent) -> Self {
        let e: &MessageEvent = &c.event;
        let s: &SessionSource = &e.source;
        WireEvent {
            text: &e.text,
            message_type: &e.message_type,
            source: WireSource {
                platform: &s.platform,
                chat_id: &s.chat_id,
                chat_type: &s.chat_type,
                chat_name: &s.chat_name,
                user_id: &s.user_id,
                user_name: &s.user_name,
                thread_id: &s.thread_id,
                chat_topic: &s.chat_topic,
                user_id_alt: &s.user_id_alt,
                chat_id_alt: &s.chat_id_alt,
                scope_id: &s.scope_id,
                guild_id: &s.scope_id,
                parent_chat_id: &s.parent_chat_id,
                message_id: &s.message_id,
                profile: &s.profile,
                is_bot: s.is_bot,
                message_is_edit: s.message_is_edit,
            },
            message_id: &e.message_id,
            reply_to_message_id: &e.reply_to_message_id,
            media_urls: &e.media_urls,
            prompt_response: e.prompt_response.as_ref().map(|p| WirePrompt {
                prompt_id: &p.prompt_id,
                option_id: &p.option_id,
                label: &p.label,
                prompt_message_id: &p.prompt_message_id,
            }),
            is_bot: s.is_bot,
            reply_route: match &c.reply_route {
                ReplyRoute::Send => WireRoute::Send,
                ReplyRoute::FollowUp { kind } => WireRoute::FollowUp { kind },
            },
            metadata: c
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }
}
