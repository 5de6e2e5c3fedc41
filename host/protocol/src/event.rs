//! The inbound message event (relay-contract §5.1): [`MessageEvent`] and the
//! [`SessionSource`] that says where it came from.
//!
//! Reading follows the wire rules exactly: an absent key takes its default,
//! an explicit `null` is `None`. Writing a [`SessionSource`] always emits the
//! eight core keys (null allowed) and the others only when set, with the scope
//! written under both `scope_id` and its legacy alias `guild_id`.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::json::{self, WrongType};

/// Where a message came from: platform, chat, author, thread, scope.
///
/// `chat_type` is kept as the raw string (`dm`, `group`, `channel`, `thread`,
/// `forum`, or anything a newer connector sends) because the session key
/// embeds it verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSource {
    /// Platform name (`discord`, `telegram`, …); default `relay`.
    pub platform: String,
    /// Chat id; default `""`.
    pub chat_id: String,
    /// Chat type; default `dm`.
    pub chat_type: String,
    /// Human chat name.
    pub chat_name: Option<String>,
    /// Author id.
    pub user_id: Option<String>,
    /// Author display name.
    pub user_name: Option<String>,
    /// Thread (or forum topic) id.
    pub thread_id: Option<String>,
    /// Chat topic text.
    pub chat_topic: Option<String>,
    /// Alternative author id (e.g. Signal UUID); preferred over `user_id` as
    /// the session participant.
    pub user_id_alt: Option<String>,
    /// Alternative chat id.
    pub chat_id_alt: Option<String>,
    /// Tenant scope (Discord guild, Slack team). Read from `scope_id`, else
    /// from the legacy `guild_id`.
    pub scope_id: Option<String>,
    /// Parent chat of a thread.
    pub parent_chat_id: Option<String>,
    /// Platform message id of the triggering message.
    pub message_id: Option<String>,
    /// Target profile (session namespace, §5.3).
    pub profile: Option<String>,
    /// The author is a bot.
    pub is_bot: bool,
    /// The triggering message is an edit.
    pub message_is_edit: bool,
}

impl Default for SessionSource {
    fn default() -> Self {
        Self {
            platform: "relay".to_owned(),
            chat_id: String::new(),
            chat_type: "dm".to_owned(),
            chat_name: None,
            user_id: None,
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
        }
    }
}

impl SessionSource {
    /// Build from a parsed `source` object. On a mistyped key returns the key
    /// name. An explicit `null` for `platform`, `chat_id` or `chat_type`
    /// (which have non-null defaults) takes the default, so downstream code
    /// never sees a missing platform.
    pub(crate) fn from_map(mut m: Map<String, Value>) -> Result<Self, WrongType> {
        let scope_id = json::opt_string(&mut m, "scope_id")?;
        let guild_id = json::opt_string(&mut m, "guild_id")?;
        Ok(Self {
            platform: json::string_or(&mut m, "platform", "relay")?,
            chat_id: json::string_or(&mut m, "chat_id", "")?,
            chat_type: json::string_or(&mut m, "chat_type", "dm")?,
            chat_name: json::opt_string(&mut m, "chat_name")?,
            user_id: json::opt_string(&mut m, "user_id")?,
            user_name: json::opt_string(&mut m, "user_name")?,
            thread_id: json::opt_string(&mut m, "thread_id")?,
            chat_topic: json::opt_string(&mut m, "chat_topic")?,
            user_id_alt: json::opt_string(&mut m, "user_id_alt")?,
            chat_id_alt: json::opt_string(&mut m, "chat_id_alt")?,
            // `scope_id` wins over the legacy alias.
            scope_id: scope_id.or(guild_id),
            parent_chat_id: json::opt_string(&mut m, "parent_chat_id")?,
            message_id: json::opt_string(&mut m, "message_id")?,
            profile: json::opt_string(&mut m, "profile")?,
            is_bot: json::bool_or_false(&mut m, "is_bot")?,
            message_is_edit: json::bool_or_false(&mut m, "message_is_edit")?,
        })
    }

    /// Parse a `source` JSON value (must be an object).
    pub fn from_value(value: Value) -> Result<Self, FieldError> {
        match value {
            Value::Object(m) => Self::from_map(m).map_err(|e| FieldError { field: e.0 }),
            _ => Err(FieldError {
                field: String::new(),
            }),
        }
    }
}

impl Serialize for SessionSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize_keys(serializer, false)
    }
}

impl SessionSource {
    /// This source with every key written, `null` (or `false`) when unset,
    /// in the same order as the wire form: the complete record `convert`
    /// prints and the corpus compares.
    pub fn every_key(&self) -> EveryKey<'_> {
        EveryKey(self)
    }

    /// The eight core keys always; the others only when set, unless
    /// `every_key`.
    fn serialize_keys<S: Serializer>(
        &self,
        serializer: S,
        every_key: bool,
    ) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("platform", &self.platform)?;
        m.serialize_entry("chat_id", &self.chat_id)?;
        m.serialize_entry("chat_type", &self.chat_type)?;
        m.serialize_entry("chat_name", &self.chat_name)?;
        m.serialize_entry("user_id", &self.user_id)?;
        m.serialize_entry("user_name", &self.user_name)?;
        m.serialize_entry("thread_id", &self.thread_id)?;
        m.serialize_entry("chat_topic", &self.chat_topic)?;
        let optional = [
            ("user_id_alt", &self.user_id_alt),
            ("chat_id_alt", &self.chat_id_alt),
            ("scope_id", &self.scope_id),
            ("guild_id", &self.scope_id),
            ("parent_chat_id", &self.parent_chat_id),
            ("message_id", &self.message_id),
            ("profile", &self.profile),
        ];
        for (key, value) in optional {
            if every_key || value.is_some() {
                m.serialize_entry(key, value)?;
            }
        }
        for (key, value) in [
            ("is_bot", self.is_bot),
            ("message_is_edit", self.message_is_edit),
        ] {
            if every_key || value {
                m.serialize_entry(key, &value)?;
            }
        }
        m.end()
    }
}

/// A [`SessionSource`] serialized with every key (see
/// [`SessionSource::every_key`]).
#[derive(Debug, Clone, Copy)]
pub struct EveryKey<'a>(&'a SessionSource);

impl Serialize for EveryKey<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_keys(serializer, true)
    }
}

impl<'de> Deserialize<'de> for SessionSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        Self::from_value(v).map_err(serde::de::Error::custom)
    }
}

/// The kind of message. Unknown wire values read as [`MessageType::Text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageType {
    /// Plain text (default).
    #[default]
    Text,
    /// A shared location.
    Location,
    /// A photo.
    Photo,
    /// A video.
    Video,
    /// An audio file.
    Audio,
    /// A voice note.
    Voice,
    /// A document / file.
    Document,
    /// A sticker.
    Sticker,
    /// A slash command or similar.
    Command,
}

impl MessageType {
    /// Every variant, in wire order.
    pub const ALL: [MessageType; 9] = [
        MessageType::Text,
        MessageType::Location,
        MessageType::Photo,
        MessageType::Video,
        MessageType::Audio,
        MessageType::Voice,
        MessageType::Document,
        MessageType::Sticker,
        MessageType::Command,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Location => "location",
            MessageType::Photo => "photo",
            MessageType::Video => "video",
            MessageType::Audio => "audio",
            MessageType::Voice => "voice",
            MessageType::Document => "document",
            MessageType::Sticker => "sticker",
            MessageType::Command => "command",
        }
    }

    /// Parse the wire spelling; anything unknown is `Text` (§5.1).
    pub fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .unwrap_or(MessageType::Text)
    }
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A user's answer to an interactive prompt (button press, menu choice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptResponse {
    /// Which prompt was answered.
    pub prompt_id: String,
    /// Which option was chosen.
    pub option_id: String,
    /// Human label of the option.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Platform message id of the prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_message_id: Option<String>,
}

impl PromptResponse {
    fn from_map(mut m: Map<String, Value>) -> Result<Self, WrongType> {
        Ok(Self {
            prompt_id: json::string_or(&mut m, "prompt_id", "")?,
            option_id: json::string_or(&mut m, "option_id", "")?,
            label: json::opt_string(&mut m, "label")?,
            prompt_message_id: json::opt_string(&mut m, "prompt_message_id")?,
        })
    }
}

/// An inbound message: what the session layer turns into an agent turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageEvent {
    /// Message text; default `""`.
    pub text: String,
    /// Message kind; default `text`.
    pub message_type: MessageType,
    /// Origin; default `{}` (all source defaults).
    pub source: SessionSource,
    /// Platform message id.
    pub message_id: Option<String>,
    /// Id of the message this one replies to.
    pub reply_to_message_id: Option<String>,
    /// Attached media URLs; default `[]`.
    pub media_urls: Vec<String>,
    /// Answer to an interactive prompt, when this event is one.
    pub prompt_response: Option<PromptResponse>,
}

/// A field of an event/source object had an unusable type. `field` is the
/// dotted path inside the object (empty when the object itself was not an
/// object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` has the wrong type")]
pub struct FieldError {
    /// Dotted path of the offending key.
    pub field: String,
}

impl MessageEvent {
    /// Build from a parsed `event` object.
    pub(crate) fn from_map(mut m: Map<String, Value>) -> Result<Self, WrongType> {
        let text = json::string_or(&mut m, "text", "")?;
        let message_type = match m.remove("message_type") {
            None | Some(Value::Null) => MessageType::Text,
            Some(Value::String(s)) => MessageType::parse(&s),
            // A non-string kind is as unknown as an unknown string.
            Some(_) => MessageType::Text,
        };
        let source = SessionSource::from_map(json::object_or_empty(&mut m, "source")?)
            .map_err(|e| e.within("source"))?;
        let media_urls = match m.remove("media_urls") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut urls = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => urls.push(s),
                        _ => return Err(WrongType("media_urls".to_owned())),
                    }
                }
                urls
            }
            Some(_) => return Err(WrongType("media_urls".to_owned())),
        };
        let prompt_response = match m.remove("prompt_response") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => {
                Some(PromptResponse::from_map(p).map_err(|e| e.within("prompt_response"))?)
            }
            Some(_) => return Err(WrongType("prompt_response".to_owned())),
        };
        Ok(Self {
            text,
            message_type,
            source,
            message_id: json::opt_string(&mut m, "message_id")?,
            reply_to_message_id: json::opt_string(&mut m, "reply_to_message_id")?,
            media_urls,
            prompt_response,
        })
    }

    /// Parse an `event` JSON value (must be an object).
    pub fn from_value(value: Value) -> Result<Self, FieldError> {
        match value {
            Value::Object(m) => Self::from_map(m).map_err(|e| FieldError { field: e.0 }),
            _ => Err(FieldError {
                field: String::new(),
            }),
        }
    }
}

impl Serialize for MessageEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("text", &self.text)?;
        m.serialize_entry("message_type", &self.message_type)?;
        m.serialize_entry("source", &self.source)?;
        m.serialize_entry("message_id", &self.message_id)?;
        m.serialize_entry("reply_to_message_id", &self.reply_to_message_id)?;
        m.serialize_entry("media_urls", &self.media_urls)?;
        if let Some(p) = &self.prompt_response {
            m.serialize_entry("prompt_response", p)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for MessageEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        Self::from_value(v).map_err(serde::de::Error::custom)
    }
}

/// How the answer to an event goes back: one model for the plugin host
/// (what a converter asked for) and the session layer (what a turn sends).
/// Serializes as `{"op":"send"}` / `{"op":"follow_up","kind":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ReplyRoute {
    /// `send` to the event's chat, with `reply_to` = the event's message id.
    Send,
    /// `follow_up` on a capability the connector vaulted for the session, by
    /// kind (`discord.interaction_token`, `slack.response_url`); the gateway
    /// never sees the credential.
    FollowUp {
        /// The capability kind.
        kind: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(v: Value) -> SessionSource {
        match SessionSource::from_value(v) {
            Ok(s) => s,
            Err(e) => panic!("source did not parse: {e}"),
        }
    }

    #[test]
    fn empty_source_takes_defaults() {
        let s = source(json!({}));
        assert_eq!(s.platform, "relay");
        assert_eq!(s.chat_id, "");
        assert_eq!(s.chat_type, "dm");
        assert_eq!(s.user_id, None);
        assert!(!s.is_bot);
    }

    #[test]
    fn scope_id_wins_over_guild_id_and_guild_id_is_read_alone() {
        assert_eq!(
            source(json!({"scope_id": "s", "guild_id": "g"}))
                .scope_id
                .as_deref(),
            Some("s")
        );
        assert_eq!(
            source(json!({"guild_id": "g"})).scope_id.as_deref(),
            Some("g")
        );
        assert_eq!(
            source(json!({"scope_id": null, "guild_id": "g"}))
                .scope_id
                .as_deref(),
            Some("g")
        );
    }

    #[test]
    fn unknown_chat_type_is_kept_raw() {
        assert_eq!(
            source(json!({"chat_type": "supergroup"})).chat_type,
            "supergroup"
        );
    }

    #[test]
    fn numeric_ids_are_kept_in_their_json_spelling() {
        assert_eq!(source(json!({"chat_id": -1001234})).chat_id, "-1001234");
    }

    #[test]
    fn mistyped_source_key_is_named() {
        let err = MessageEvent::from_value(json!({"source": {"user_id": ["x"]}}));
        assert_eq!(
            err,
            Err(FieldError {
                field: "source.user_id".to_owned()
            })
        );
    }

    #[test]
    fn serialization_writes_core_keys_always_and_scope_twice() {
        let s = SessionSource {
            platform: "discord".into(),
            chat_id: "c".into(),
            chat_type: "group".into(),
            scope_id: Some("g1".into()),
            ..SessionSource::default()
        };
        let v = serde_json::to_value(&s).unwrap_or(Value::Null);
        assert_eq!(
            v,
            json!({"platform": "discord", "chat_id": "c", "chat_type": "group", "chat_name": null,
                   "user_id": null, "user_name": null, "thread_id": null, "chat_topic": null,
                   "scope_id": "g1", "guild_id": "g1"})
        );
    }

    #[test]
    fn unset_optional_keys_are_not_written() {
        let v = serde_json::to_value(SessionSource::default()).unwrap_or(Value::Null);
        let keys: Vec<&str> = v
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for k in [
            "scope_id",
            "guild_id",
            "profile",
            "is_bot",
            "user_id_alt",
            "message_id",
        ] {
            assert!(!keys.contains(&k), "{k} written although unset: {v}");
        }
    }

    #[test]
    fn event_defaults_and_unknown_message_type() {
        let e = MessageEvent::from_value(json!({"message_type": "hologram"}));
        assert_eq!(e, Ok(MessageEvent::default()));
        let e = MessageEvent::from_value(
            json!({"message_type": "voice", "media_urls": ["u"], "text": "hi"}),
        )
        .unwrap_or_default();
        assert_eq!(
            (e.message_type, e.media_urls, e.text.as_str()),
            (MessageType::Voice, vec!["u".to_owned()], "hi")
        );
    }

    #[test]
    fn event_round_trips_through_its_wire_form() {
        let e = MessageEvent {
            text: "hello".into(),
            message_type: MessageType::Command,
            source: SessionSource {
                platform: "slack".into(),
                user_id: Some("U1".into()),
                scope_id: Some("T1".into()),
                is_bot: true,
                ..SessionSource::default()
            },
            message_id: Some("m1".into()),
            reply_to_message_id: None,
            media_urls: vec!["https://x/y".into()],
            prompt_response: Some(PromptResponse {
                prompt_id: "p".into(),
                option_id: "o".into(),
                label: Some("Yes".into()),
                prompt_message_id: None,
            }),
        };
        let v = serde_json::to_value(&e).unwrap_or(Value::Null);
        assert_eq!(MessageEvent::from_value(v), Ok(e));
    }
}
