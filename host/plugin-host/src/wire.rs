//! The JSON form of a converted event: the wire MessageEvent of
//! relay-contract §5.1 with every optional key written (`null` when unset),
//! plus `is_bot`, the reply route and the plugin's metadata. This is what
//! `hermes-gateway convert` prints (cli.md) and what the end-to-end corpus
//! test compares, so it is defined once, here.

use std::collections::BTreeMap;

use hermes_protocol::event::{EveryKey, MessageEvent, MessageType, SessionSource};
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
    source: EveryKey<'a>,
    message_id: &'a Option<String>,
    reply_to_message_id: &'a Option<String>,
    media_urls: &'a [String],
    /// The content type of each media url (WIT 0.2 plugins); omitted when
    /// the plugin named none.
    #[serde(skip_serializing_if = "no_media_types")]
    media_types: &'a [Option<String>],
    prompt_response: Option<WirePrompt<'a>>,
    /// Mirrors `source.is_bot`, as the corpus lists it on the event.
    is_bot: bool,
    reply_route: WireRoute<'a>,
    metadata: BTreeMap<&'a str, &'a str>,
}

fn no_media_types(types: &&[Option<String>]) -> bool {
    types.iter().all(Option::is_none)
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
            source: s.every_key(),
            message_id: &e.message_id,
            reply_to_message_id: &e.reply_to_message_id,
            media_urls: &e.media_urls,
            media_types: &c.media_types,
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
