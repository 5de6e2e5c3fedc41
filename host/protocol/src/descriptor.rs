//! The connector's capability descriptor (relay-contract §3.3).
//!
//! Parsing applies the contract's forgiving rules for optional or out-of-range
//! values (length 0/negative/non-integer → 4096, unknown unit → chars,
//! malformed `supported_ops` → legacy set) and is strict only about required
//! keys, which fail with a [`DescriptorError`] naming the key.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::split::LenUnit;

/// Message length used when the descriptor's value is unusable.
pub const DEFAULT_MAX_MESSAGE_LENGTH: usize = 4096;

/// Ops every connector supports when `supported_ops` is absent or empty.
pub const LEGACY_OPS: [&str; 4] = ["send", "edit", "typing", "follow_up"];

/// Emoji used when the descriptor does not name one.
pub const DEFAULT_EMOJI: &str = "🔌";

/// Why a descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The descriptor value is not a JSON object.
    #[error("descriptor is not a JSON object")]
    NotAnObject,
    /// A required key is absent.
    #[error("descriptor is missing required key `{0}`")]
    MissingKey(&'static str),
    /// A required key has the wrong JSON type.
    #[error("descriptor key `{0}` has the wrong type")]
    WrongType(&'static str),
}

/// What the connector can do on the platform it fronts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    /// Contract version (1).
    pub contract_version: i64,
    /// Platform name, e.g. `discord`.
    pub platform: String,
    /// Human label.
    pub label: String,
    /// Per-message limit, counted in [`Descriptor::len_unit`]; always ≥ 1.
    pub max_message_length: usize,
    /// The platform can stream draft edits.
    pub supports_draft_streaming: bool,
    /// `edit` may be sent.
    pub supports_edit: bool,
    /// The platform has threads.
    pub supports_threads: bool,
    /// Markdown dialect (`plain`, `markdown_v2`, `discord`, …).
    pub markdown_dialect: String,
    /// Unit in which `max_message_length` is counted.
    pub len_unit: LenUnit,
    /// Emoji for status lines.
    pub emoji: String,
    /// Free-form hint for the agent's prompt.
    pub platform_hint: String,
    /// The connector guarantees PII-safe data.
    pub pii_safe: bool,
    /// Effective op list: what the connector listed, or [`LEGACY_OPS`] when
    /// the list was absent, empty or malformed.
    pub supported_ops: Vec<String>,
}

fn legacy_ops() -> Vec<String> {
    LEGACY_OPS.iter().map(|s| (*s).to_owned()).collect()
}

fn req_string(m: &mut Map<String, Value>, key: &'static str) -> Result<String, DescriptorError> {
    match m.remove(key) {
        None => Err(DescriptorError::MissingKey(key)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DescriptorError::WrongType(key)),
    }
}

fn req_bool(m: &mut Map<String, Value>, key: &'static str) -> Result<bool, DescriptorError> {
    match m.remove(key) {
        None => Err(DescriptorError::MissingKey(key)),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(DescriptorError::WrongType(key)),
    }
}

fn opt_string(m: &mut Map<String, Value>, key: &str, default: &str) -> String {
    // Optional keys are additive-evolution territory: a value we cannot use
    // takes the default rather than refusing the whole descriptor.
    match m.remove(key) {
        Some(Value::String(s)) => s,
        _ => default.to_owned(),
    }
}

impl Descriptor {
    /// The descriptor assumed before any handshake (§3.3): platform as
    /// configured, label `Relay`, 4096 chars, edit supported, dialect `plain`.
    pub fn placeholder(platform: &str) -> Self {
        Self {
            contract_version: 1,
            platform: platform.to_owned(),
            label: "Relay".to_owned(),
            max_message_length: DEFAULT_MAX_MESSAGE_LENGTH,
            supports_draft_streaming: false,
            supports_edit: true,
            supports_threads: false,
            markdown_dialect: "plain".to_owned(),
            len_unit: LenUnit::Chars,
            emoji: DEFAULT_EMOJI.to_owned(),
            platform_hint: String::new(),
            pii_safe: false,
            supported_ops: legacy_ops(),
        }
    }

    /// Parse a descriptor object with the §3.3 rules.
    pub fn from_value(value: Value) -> Result<Self, DescriptorError> {
        match value {
            Value::Object(m) => Self::from_map(m),
            _ => Err(DescriptorError::NotAnObject),
        }
    }

    pub(crate) fn from_map(mut m: Map<String, Value>) -> Result<Self, DescriptorError> {
        let contract_version = match m.remove("contract_version") {
            None => return Err(DescriptorError::MissingKey("contract_version")),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or(DescriptorError::WrongType("contract_version"))?,
            Some(_) => return Err(DescriptorError::WrongType("contract_version")),
        };
        let platform = req_string(&mut m, "platform")?;
        let label = req_string(&mut m, "label")?;
        let max_message_length = match m.remove("max_message_length") {
            None => return Err(DescriptorError::MissingKey("max_message_length")),
            // Only a positive JSON integer is usable; 0, negative, fractional
            // or non-numeric values all mean "unknown" → 4096.
            Some(Value::Number(n)) => match n.as_u64() {
                Some(len) if len > 0 => usize::try_from(len).unwrap_or(usize::MAX),
                _ => DEFAULT_MAX_MESSAGE_LENGTH,
            },
            Some(_) => DEFAULT_MAX_MESSAGE_LENGTH,
        };
        let supports_draft_streaming = req_bool(&mut m, "supports_draft_streaming")?;
        let supports_edit = req_bool(&mut m, "supports_edit")?;
        let supports_threads = req_bool(&mut m, "supports_threads")?;
        let markdown_dialect = req_string(&mut m, "markdown_dialect")?;
        let len_unit = LenUnit::parse(&req_string(&mut m, "len_unit")?);
        let pii_safe = matches!(m.remove("pii_safe"), Some(Value::Bool(true)));
        let supported_ops = match m.remove("supported_ops") {
            Some(Value::Array(items)) => {
                let mut ops = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => ops.push(s),
                        // One bad entry makes the list malformed: treat as
                        // empty (→ legacy set), never half a list.
                        _ => {
                            ops.clear();
                            break;
                        }
                    }
                }
                ops
            }
            _ => Vec::new(),
        };
        let supported_ops = if supported_ops.is_empty() {
            legacy_ops()
        } else {
            supported_ops
        };
        Ok(Self {
            contract_version,
            platform,
            label,
            max_message_length,
            supports_draft_streaming,
            supports_edit,
            supports_threads,
            markdown_dialect,
            len_unit,
            emoji: opt_string(&mut m, "emoji", DEFAULT_EMOJI),
            platform_hint: opt_string(&mut m, "platform_hint", ""),
            pii_safe,
            supported_ops,
        })
    }

    /// Whether the connector accepts `op` (`send`, `edit`, `get_chat_info`…).
    /// `edit` additionally requires [`Descriptor::supports_edit`].
    pub fn supports_op(&self, op: &str) -> bool {
        if op == "edit" && !self.supports_edit {
            return false;
        }
        self.supported_ops.iter().any(|o| o == op)
    }

    /// Whether fenced code blocks render (any dialect but `plain` or empty).
    pub fn code_blocks(&self) -> bool {
        !(self.markdown_dialect.is_empty() || self.markdown_dialect == "plain")
    }
}

impl<'de> Deserialize<'de> for Descriptor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        Self::from_value(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!({
            "contract_version": 1, "platform": "discord", "label": "Discord",
            "max_message_length": 2000, "supports_draft_streaming": false,
            "supports_edit": true, "supports_threads": true,
            "markdown_dialect": "discord", "len_unit": "chars"
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = full();
        if let Some(m) = v.as_object_mut() {
            m.insert(key.to_owned(), value);
        }
        v
    }

    fn without(key: &str) -> Value {
        let mut v = full();
        if let Some(m) = v.as_object_mut() {
            m.remove(key);
        }
        v
    }

    #[test]
    fn full_descriptor_parses_with_optional_defaults() {
        let d = Descriptor::from_value(full()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.max_message_length, 2000);
        assert_eq!(d.emoji, "🔌");
        assert_eq!(d.platform_hint, "");
        assert!(!d.pii_safe);
        assert_eq!(d.supported_ops, ["send", "edit", "typing", "follow_up"]);
        assert!(d.code_blocks());
        assert!(!d.supports_op("get_chat_info"));
    }

    #[test]
    fn every_required_key_is_named_when_missing() {
        for key in [
            "contract_version",
            "platform",
            "label",
            "max_message_length",
            "supports_draft_streaming",
            "supports_edit",
            "supports_threads",
            "markdown_dialect",
            "len_unit",
        ] {
            let err = Descriptor::from_value(without(key));
            assert!(
                matches!(err, Err(DescriptorError::MissingKey(k)) if k == key),
                "missing {key}: got {err:?}"
            );
        }
    }

    #[test]
    fn mistyped_required_key_is_named() {
        assert_eq!(
            Descriptor::from_value(with("supports_edit", json!("yes"))),
            Err(DescriptorError::WrongType("supports_edit"))
        );
        assert_eq!(
            Descriptor::from_value(with("platform", json!(7))),
            Err(DescriptorError::WrongType("platform"))
        );
    }

    #[test]
    fn unusable_lengths_fall_back_to_4096() {
        for bad in [json!(0), json!(-5), json!(12.5), json!("2000"), json!(null)] {
            let d = Descriptor::from_value(with("max_message_length", bad.clone()));
            assert_eq!(d.map(|d| d.max_message_length), Ok(4096), "value {bad}");
        }
    }

    #[test]
    fn unknown_len_unit_is_chars() {
        let d = Descriptor::from_value(with("len_unit", json!("bytes")));
        assert_eq!(d.map(|d| d.len_unit), Ok(LenUnit::Chars));
        let d = Descriptor::from_value(with("len_unit", json!("utf16")));
        assert_eq!(d.map(|d| d.len_unit), Ok(LenUnit::Utf16));
    }

    #[test]
    fn supported_ops_rules() {
        let listed =
            Descriptor::from_value(with("supported_ops", json!(["send", "get_chat_info"])))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(listed.supports_op("get_chat_info"));
        assert!(!listed.supports_op("typing"));
        for malformed in [
            json!("send"),
            json!(["send", 3]),
            json!([]),
            json!({"a": 1}),
        ] {
            let d = Descriptor::from_value(with("supported_ops", malformed.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.supported_ops, LEGACY_OPS, "value {malformed}");
        }
    }

    #[test]
    fn edit_needs_supports_edit() {
        let d = Descriptor::from_value(with("supports_edit", json!(false)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.supports_op("edit"));
        assert!(d.supports_op("send"));
    }

    #[test]
    fn plain_or_empty_dialect_has_no_code_blocks() {
        for dialect in ["plain", ""] {
            let d = Descriptor::from_value(with("markdown_dialect", json!(dialect)))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!d.code_blocks(), "dialect {dialect:?}");
        }
    }

    #[test]
    fn placeholder_matches_the_contract() {
        let p = Descriptor::placeholder("relay");
        assert_eq!(
            (
                p.platform.as_str(),
                p.label.as_str(),
                p.max_message_length,
                p.supports_edit,
                p.supports_threads
            ),
            ("relay", "Relay", 4096, true, false)
        );
        assert_eq!(
            (p.markdown_dialect.as_str(), p.len_unit),
            ("plain", LenUnit::Chars)
        );
        assert!(!p.supports_draft_streaming && !p.pii_safe);
    }

    #[test]
    fn serialized_descriptor_parses_back_identically() {
        let mut d = Descriptor::placeholder("telegram");
        d.len_unit = LenUnit::Utf16;
        d.supported_ops.push("get_chat_info".into());
        let v = serde_json::to_value(&d).unwrap_or(Value::Null);
        assert_eq!(Descriptor::from_value(v), Ok(d));
    }
}
