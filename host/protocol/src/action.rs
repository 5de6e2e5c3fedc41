//! Outbound actions and their results (relay-contract §4).
//!
//! An [`Action`] travels inside an `outbound` frame with a fresh
//! [`RequestId`]; the connector answers with an `outbound_result` carrying an
//! [`ActionResult`]. The four failures the gateway produces locally have
//! constructors with the contract's exact error texts.

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Correlation id of an outbound request: a UUIDv4 as 32 lowercase hex
/// digits without dashes.
///
/// Ids received from the wire are kept verbatim ([`RequestId::from_wire`]):
/// correlation compares them as opaque strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    /// A UUIDv4 id from 16 random bytes supplied by the caller (this crate
    /// has no randomness source). The version and variant bits are set here.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(hex::encode(bytes))
    }

    /// Wrap an id read from a frame, unchecked.
    pub fn from_wire(id: String) -> Self {
        Self(id)
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the id has the shape this gateway mints (32 lowercase hex
    /// digits with UUIDv4 version and variant nibbles).
    pub fn is_well_formed(&self) -> bool {
        let b = self.0.as_bytes();
        b.len() == 32
            && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            && b.get(12) == Some(&b'4')
            && matches!(b.get(16), Some(b'8' | b'9' | b'a' | b'b'))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Metadata object attached to actions (scope, author, …); always sent,
/// possibly empty.
pub type Metadata = Map<String, Value>;

/// One outbound action, tagged on the wire by `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    /// Post a message.
    Send {
        /// Target chat.
        chat_id: String,
        /// Message text.
        content: String,
        /// Message to reply to; the key is always written (null allowed).
        #[serde(default)]
        reply_to: Option<String>,
        /// Routing metadata; always written.
        #[serde(default)]
        metadata: Metadata,
    },
    /// Replace the text of a message this gateway sent.
    Edit {
        /// Chat of the message.
        chat_id: String,
        /// Message to edit.
        message_id: String,
        /// New text.
        content: String,
        /// Routing metadata; always written.
        #[serde(default)]
        metadata: Metadata,
    },
    /// Show (or, with `content`, clear/replace) a typing/status indicator.
    Typing {
        /// Target chat.
        chat_id: String,
        /// Only to clear or set a status text; omitted otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        /// Routing metadata; always written.
        #[serde(default)]
        metadata: Metadata,
    },
    /// Act on a capability the connector vaulted for this session (e.g. a
    /// Discord interaction token). Never carries a credential itself.
    FollowUp {
        /// Session the capability is bound to.
        session_key: String,
        /// Capability kind, e.g. `discord.interaction_token`.
        kind: String,
        /// Message text.
        content: String,
        /// Routing metadata; always written.
        #[serde(default)]
        metadata: Metadata,
    },
    /// Ask for a chat's name and type.
    GetChatInfo {
        /// Chat to describe.
        chat_id: String,
    },
}

impl Action {
    /// The wire `op` name.
    pub fn op(&self) -> &'static str {
        match self {
            Action::Send { .. } => "send",
            Action::Edit { .. } => "edit",
            Action::Typing { .. } => "typing",
            Action::FollowUp { .. } => "follow_up",
            Action::GetChatInfo { .. } => "get_chat_info",
        }
    }

    /// The action's metadata, when the op carries one (for scope
    /// re-attachment, §5.6).
    pub fn metadata_mut(&mut self) -> Option<&mut Metadata> {
        match self {
            Action::Send { metadata, .. }
            | Action::Edit { metadata, .. }
            | Action::Typing { metadata, .. }
            | Action::FollowUp { metadata, .. } => Some(metadata),
            Action::GetChatInfo { .. } => None,
        }
    }
}

/// Error text for "not connected / closing / revoked, nothing written".
pub const ERR_NOT_CONNECTED: &str = "relay transport not connected";
/// Prefix of the error text for "write failed".
pub const ERR_SEND_FAILED_PREFIX: &str = "relay send failed: ";
/// Error text for "written, no result before the timeout".
pub const ERR_TIMED_OUT: &str = "relay outbound timed out";
/// Error text for "written, connection lost before the result".
pub const ERR_CONNECTION_LOST: &str = "relay transport connection lost";

/// The answer to an outbound action.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionResult {
    /// The connector performed the action.
    pub success: bool,
    /// Id of the created message (`send`, `follow_up`).
    pub message_id: Option<String>,
    /// Failure text.
    pub error: Option<String>,
    /// The connector may have acted although we got no answer: do not
    /// blindly retry a send.
    pub ambiguous: bool,
    /// Every other key of the result object (e.g. `name`, `type`,
    /// `chat_info` for `get_chat_info`).
    pub extra: Map<String, Value>,
}

impl ActionResult {
    /// A success, optionally naming the created message.
    pub fn ok(message_id: Option<String>) -> Self {
        Self {
            success: true,
            message_id,
            ..Self::default()
        }
    }

    /// A definite (non-ambiguous) failure with this text.
    pub fn failure(error: impl Into<String>) -> Self {
        Self {
            success: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// Not connected / closing / revoked: nothing was written.
    pub fn not_connected() -> Self {
        Self::failure(ERR_NOT_CONNECTED)
    }

    /// Writing the frame failed.
    pub fn send_failed(detail: impl fmt::Display) -> Self {
        Self::failure(format!("{ERR_SEND_FAILED_PREFIX}{detail}"))
    }

    /// The frame was written but no result arrived in time.
    pub fn timed_out() -> Self {
        Self {
            ambiguous: true,
            ..Self::failure(ERR_TIMED_OUT)
        }
    }

    /// The frame was written but the connection died before the result.
    pub fn connection_lost() -> Self {
        Self {
            ambiguous: true,
            ..Self::failure(ERR_CONNECTION_LOST)
        }
    }

    /// Read a result object. Lenient by design (the contract has no error
    /// frame; a result is whatever the connector says): a missing or
    /// non-boolean `success` is `false`, numeric message ids are kept in their
    /// JSON spelling, unknown keys go to `extra`.
    pub fn from_map(mut m: Map<String, Value>) -> Self {
        let success = matches!(m.remove("success"), Some(Value::Bool(true)));
        let ambiguous = matches!(m.remove("ambiguous"), Some(Value::Bool(true)));
        let message_id = match m.remove("message_id") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let error = match m.remove("error") {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(other) => Some(other.to_string()),
        };
        Self {
            success,
            message_id,
            error,
            ambiguous,
            extra: m,
        }
    }

    /// Read a result value; a non-object is an unsuccessful empty result.
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Object(m) => Self::from_map(m),
            _ => Self::default(),
        }
    }

    /// Interpret this result as a `get_chat_info` answer for `chat_id`.
    pub fn chat_info(&self, chat_id: &str) -> ChatInfo {
        ChatInfo::from_result(self, chat_id)
    }
}

impl Serialize for ActionResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("success", &self.success)?;
        if let Some(id) = &self.message_id {
            m.serialize_entry("message_id", id)?;
        }
        if let Some(e) = &self.error {
            m.serialize_entry("error", e)?;
        }
        if self.ambiguous {
            m.serialize_entry("ambiguous", &true)?;
        }
        for (k, v) in &self.extra {
            // The typed fields above own these keys.
            if !matches!(k.as_str(), "success" | "message_id" | "error" | "ambiguous") {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ActionResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::from_value)
    }
}

/// Name and type of a chat, from a `get_chat_info` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInfo {
    /// Chat name (falls back to the chat id).
    pub name: String,
    /// Chat type (falls back to `dm`).
    pub chat_type: String,
}

impl ChatInfo {
    /// Extract `{name, type}` from the top level or from under `chat_info`;
    /// a missing value falls back to `name = chat_id`, `type = dm` (§4).
    pub fn from_result(result: &ActionResult, chat_id: &str) -> Self {
        let nested = result.extra.get("chat_info").and_then(Value::as_object);
        let pick = |key: &str| -> Option<String> {
            let top = result.extra.get(key).and_then(Value::as_str);
            let inner = nested.and_then(|n| n.get(key)).and_then(Value::as_str);
            top.or(inner).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        Self {
            name: pick("name").unwrap_or_else(|| chat_id.to_owned()),
            chat_type: pick("type").unwrap_or_else(|| "dm".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_value<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap_or(Value::Null)
    }

    #[test]
    fn request_id_has_uuid_v4_shape() {
        for seed in [[0u8; 16], [0xff; 16], [0x5a; 16]] {
            let id = RequestId::from_random_bytes(seed);
            assert!(id.is_well_formed(), "{id}");
            assert_eq!(id.as_str().len(), 32);
        }
        assert!(!RequestId::from_wire("ABC".into()).is_well_formed());
    }

    #[test]
    fn send_always_writes_reply_to_and_metadata() {
        let a = Action::Send {
            chat_id: "c".into(),
            content: "hi".into(),
            reply_to: None,
            metadata: Map::new(),
        };
        assert_eq!(
            to_value(&a),
            json!({"op": "send", "chat_id": "c", "content": "hi", "reply_to": null, "metadata": {}})
        );
    }

    #[test]
    fn follow_up_has_exactly_its_five_keys() {
        let a = Action::FollowUp {
            session_key: "k".into(),
            kind: "discord.interaction_token".into(),
            content: "done".into(),
            metadata: Map::new(),
        };
        let v = to_value(&a);
        let mut keys: Vec<&str> = v
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(keys, ["content", "kind", "metadata", "op", "session_key"]);
    }

    #[test]
    fn typing_omits_content_unless_set() {
        let a = Action::Typing {
            chat_id: "c".into(),
            content: None,
            metadata: Map::new(),
        };
        assert_eq!(
            to_value(&a),
            json!({"op": "typing", "chat_id": "c", "metadata": {}})
        );
    }

    #[test]
    fn actions_round_trip() {
        let all = [
            Action::Edit {
                chat_id: "c".into(),
                message_id: "m".into(),
                content: "x".into(),
                metadata: Map::new(),
            },
            Action::GetChatInfo {
                chat_id: "c".into(),
            },
            Action::Typing {
                chat_id: "c".into(),
                content: Some(String::new()),
                metadata: Map::new(),
            },
        ];
        for a in all {
            let back: Result<Action, _> = serde_json::from_value(to_value(&a));
            assert_eq!(back.ok(), Some(a));
        }
    }

    #[test]
    fn local_failures_have_contract_texts() {
        let cases = [
            (
                ActionResult::not_connected(),
                "relay transport not connected",
                false,
            ),
            (
                ActionResult::send_failed("broken pipe"),
                "relay send failed: broken pipe",
                false,
            ),
            (ActionResult::timed_out(), "relay outbound timed out", true),
            (
                ActionResult::connection_lost(),
                "relay transport connection lost",
                true,
            ),
        ];
        for (r, text, ambiguous) in cases {
            assert!(!r.success);
            assert_eq!((r.error.as_deref(), r.ambiguous), (Some(text), ambiguous));
        }
        assert_eq!(
            to_value(&ActionResult::timed_out()),
            json!({"success": false, "error": "relay outbound timed out", "ambiguous": true})
        );
    }

    #[test]
    fn result_keeps_unknown_keys() {
        let r =
            ActionResult::from_value(json!({"success": true, "message_id": 42, "extra_key": [1]}));
        assert_eq!((r.success, r.message_id.as_deref()), (true, Some("42")));
        assert_eq!(r.extra.get("extra_key"), Some(&json!([1])));
        assert_eq!(ActionResult::from_value(to_value(&r)), r);
    }

    #[test]
    fn chat_info_top_level_nested_and_missing() {
        let top =
            ActionResult::from_value(json!({"success": true, "name": "General", "type": "group"}));
        assert_eq!(
            top.chat_info("c1"),
            ChatInfo {
                name: "General".into(),
                chat_type: "group".into()
            }
        );
        let nested = ActionResult::from_value(
            json!({"success": true, "chat_info": {"name": "N", "type": "channel"}}),
        );
        assert_eq!(
            nested.chat_info("c1"),
            ChatInfo {
                name: "N".into(),
                chat_type: "channel".into()
            }
        );
        assert_eq!(
            ActionResult::not_connected().chat_info("c1"),
            ChatInfo {
                name: "c1".into(),
                chat_type: "dm".into()
            }
        );
    }
}
