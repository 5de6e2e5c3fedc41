//! Small helpers for pulling typed fields out of an already-parsed JSON
//! object. Every frame is parsed once into a `serde_json::Map`; these helpers
//! then *move* values out of it (no re-parse, no clone of strings).

use serde_json::{Map, Value};

/// A field was present with a type we cannot use. Carries the key so callers
/// can build a dotted path (`event.source.chat_id`) for the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrongType(pub(crate) String);

impl WrongType {
    /// Prefix the field path with the name of the enclosing object.
    pub(crate) fn within(self, parent: &str) -> Self {
        WrongType(format!("{parent}.{}", self.0))
    }
}

/// Optional string: absent or `null` → `None`. Numbers are accepted and kept
/// in their JSON spelling because some connectors send numeric ids (Telegram
/// chat ids); anything else is a type error.
pub(crate) fn opt_string(
    map: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<String>, WrongType> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(WrongType(key.to_owned())),
    }
}

/// String with a default for absent or `null`.
pub(crate) fn string_or(
    map: &mut Map<String, Value>,
    key: &str,
    default: &str,
) -> Result<String, WrongType> {
    Ok(opt_string(map, key)?.unwrap_or_else(|| default.to_owned()))
}

/// Required string (no number coercion: envelope keys are ours and exact).
pub(crate) fn req_str(map: &mut Map<String, Value>, key: &str) -> Result<String, WrongType> {
    match map.remove(key) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(WrongType(key.to_owned())),
    }
}

/// Optional envelope string: absent or `null` → `None`, a string → `Some`,
/// anything else is a type error.
pub(crate) fn opt_str_strict(
    map: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<String>, WrongType> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(WrongType(key.to_owned())),
    }
}

/// Boolean with default `false` for absent or `null`.
pub(crate) fn bool_or_false(map: &mut Map<String, Value>, key: &str) -> Result<bool, WrongType> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(WrongType(key.to_owned())),
    }
}

/// Object (absent or `null` → empty map).
pub(crate) fn object_or_empty(
    map: &mut Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, WrongType> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(WrongType(key.to_owned())),
    }
}

/// Required object.
pub(crate) fn req_object(
    map: &mut Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, WrongType> {
    match map.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(WrongType(key.to_owned())),
    }
}

/// Serialize a value that cannot fail to serialize (string-keyed maps of
/// plain data) into `out`. serde_json only errors for non-string map keys or
/// failing `Serialize` impls, neither of which exists in this crate; should
/// that ever change, the frame degrades to `fallback` instead of panicking.
pub(crate) fn to_line<T: serde::Serialize + ?Sized>(value: &T, fallback: &str) -> String {
    let mut out = Vec::with_capacity(128);
    if serde_json::to_writer(&mut out, value).is_err() {
        out.clear();
        out.extend_from_slice(fallback.as_bytes());
    }
    out.push(b'\n');
    // serde_json writes valid UTF-8 only.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
