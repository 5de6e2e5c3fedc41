//! Strict JSON (RFC 8259) for webhook bodies.
//!
//! Lenient parsers accept things that let two parties read the same bytes
//! differently: duplicate object keys (first wins or last wins?), lone
//! surrogate escapes (not a Unicode string at all), raw control characters.
//! A converter must refuse those (`invalid_json`), so it cannot use a lenient
//! parser. [`parse`] accepts exactly RFC 8259 JSON and additionally refuses
//! duplicate keys, lone surrogates and nesting deeper than [`MAX_DEPTH`].
//!
//! The tree it builds borrows from the input: strings without escapes and
//! every number stay slices of the body, so a typical interaction parses with
//! one allocation per object or array and none per field. Numbers keep their
//! exact text, which is what lets a converter tell an id sent as a number
//! from one sent as a string, and render an integer "as given" without a trip
//! through `i64` or `f64`.
//!
//! (Why one file of this length: a parser is one recursive-descent state
//! machine over one cursor; its parts only make sense read together.)
//!
//! ```
//! use hermes_converter_sdk::json;
//!
//! let v = json::parse(r#"{"id":"18446744073709551615","n":2.50}"#).unwrap();
//! assert_eq!(v.get("id").and_then(json::Value::as_str), Some("18446744073709551615"));
//! assert_eq!(v.get("n").and_then(json::Value::as_number).map(|n| n.as_str()), Some("2.50"));
//! assert!(json::parse(r#"{"a":1,"a":2}"#).is_err());
//! ```
//!
//! Why one file of this length: a parser is one state machine (lexer, the
//! duplicate-key and surrogate rules, the depth bound, the borrowed tree);
//! split, its invariants would be spread over files that only make sense
//! together.

use std::borrow::Cow;

use crate::{ConvertError, ErrorKind};

mod parser;

/// The deepest nesting of arrays and objects [`parse`] accepts: `[[1]]` has
/// depth 2, so 128 nested arrays parse and 129 do not. The limit also bounds
/// the parser's recursion, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// Why a document is not strict JSON. Offsets are byte offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The input ended inside a value.
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// A byte that cannot start or continue a value here.
    #[error("unexpected character at byte {offset}")]
    UnexpectedCharacter {
        /// Where.
        offset: usize,
    },
    /// A raw control character (U+0000 to U+001F) inside a string.
    #[error("raw control character in string at byte {offset}")]
    ControlCharacter {
        /// Where.
        offset: usize,
    },
    /// A backslash escape that RFC 8259 does not define.
    #[error("invalid escape at byte {offset}")]
    InvalidEscape {
        /// Where.
        offset: usize,
    },
    /// A `\u` escape of a surrogate that is not half of a valid pair.
    #[error("lone surrogate escape at byte {offset}")]
    LoneSurrogate {
        /// Where.
        offset: usize,
    },
    /// A number outside the grammar, or too large for a double.
    #[error("invalid number at byte {offset}")]
    InvalidNumber {
        /// Where.
        offset: usize,
    },
    /// An object names the same key twice.
    #[error("duplicate object key at byte {offset}")]
    DuplicateKey {
        /// Where the object that holds the duplicate starts.
        offset: usize,
    },
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} at byte {offset}")]
    TooDeep {
        /// Where.
        offset: usize,
    },
    /// Something other than whitespace after the document.
    #[error("trailing characters at byte {offset}")]
    TrailingCharacters {
        /// Where.
        offset: usize,
    },
}

impl From<JsonError> for ConvertError {
    fn from(e: JsonError) -> Self {
        ConvertError::new(ErrorKind::InvalidJson, e.to_string())
    }
}

/// A JSON number, kept as its exact source text (which [`parse`] validated
/// against the RFC 8259 grammar and checked to fit a finite double).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number<'a>(&'a str);

impl<'a> Number<'a> {
    /// The number exactly as written, e.g. `-3.0`, `12`, `1e21`.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// True when written without fraction or exponent (`12`, `-0`).
    pub fn is_integer_literal(&self) -> bool {
        !self.0.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
    }

    /// The nearest double (correctly rounded).
    pub fn as_f64(&self) -> f64 {
        // The grammar was checked at parse time, so this cannot fail; NaN is
        // an unreachable fallback rather than a panic.
        self.0.parse().unwrap_or(f64::NAN)
    }

    /// The value as an `i64`, when it is an integer literal in range.
    pub fn as_i64(&self) -> Option<i64> {
        if self.is_integer_literal() {
            self.0.parse().ok()
        } else {
            None
        }
    }
}

/// An object's members in document order (keys are unique: [`parse`]
/// refuses duplicates).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Value<'a>)>);

impl<'a> Object<'a> {
    /// The member named `key`.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// True when the object has a member named `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The members in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed JSON value that borrows from the input where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Number(Number<'a>),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object.
    Object(Object<'a>),
}

impl<'a> Value<'a> {
    /// The member `key` of an object; `None` for other values.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(o) => o.get(key),
            _ => None,
        }
    }

    /// Like [`Value::get`], but a `null` member counts as absent.
    pub fn get_present(&self, key: &str) -> Option<&Value<'a>> {
        self.get(key).filter(|v| !v.is_null())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<Number<'a>> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the JSON type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// The same value as a [`serde_json::Value`]. Integer literals that fit
    /// `u64`/`i64` stay integers; every other number becomes the nearest
    /// double. Object members keep their order only if serde_json's
    /// `preserve_order` feature is on.
    pub fn to_serde(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => {
                let text = n.as_str();
                let number = if n.is_integer_literal() {
                    text.parse::<u64>()
                        .map(serde_json::Number::from)
                        .or_else(|_| text.parse::<i64>().map(serde_json::Number::from))
                        .ok()
                } else {
                    None
                };
                number
                    .or_else(|| serde_json::Number::from_f64(n.as_f64()))
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_serde).collect()),
            Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_serde()))
                    .collect(),
            ),
        }
    }
}

/// Typed field access for converters: a field that is absent (or `null`) is
/// [`ErrorKind::MissingField`], one of the wrong JSON type
/// [`ErrorKind::InvalidField`]. Error messages name the key.
impl<'a> Value<'a> {
    /// A required string member.
    pub fn str_field(&self, key: &str) -> Result<&str, ConvertError> {
        self.opt_str_field(key)?.ok_or_else(|| missing(key))
    }

    /// An optional string member (`null` counts as absent).
    pub fn opt_str_field(&self, key: &str) -> Result<Option<&str>, ConvertError> {
        match self.get_present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// A required integer member (an integer literal that fits `i64`).
    pub fn int_field(&self, key: &str) -> Result<i64, ConvertError> {
        self.opt_int_field(key)?.ok_or_else(|| missing(key))
    }

    /// An optional integer member (`null` counts as absent).
    pub fn opt_int_field(&self, key: &str) -> Result<Option<i64>, ConvertError> {
        match self.get_present(key) {
            None => Ok(None),
            Some(v) => v
                .as_number()
                .and_then(|n| n.as_i64())
                .map(Some)
                .ok_or_else(|| wrong_type(key, "an integer", v)),
        }
    }

    /// An optional array member (`null` counts as absent).
    pub fn opt_array_field(&self, key: &str) -> Result<Option<&[Value<'a>]>, ConvertError> {
        match self.get_present(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(wrong_type(key, "an array", other)),
        }
    }

    /// A required object member, returned as the value (so the accessors
    /// above chain).
    pub fn object_field(&self, key: &str) -> Result<&Value<'a>, ConvertError> {
        self.opt_object_field(key)?.ok_or_else(|| missing(key))
    }

    /// An optional object member (`null` counts as absent).
    pub fn opt_object_field(&self, key: &str) -> Result<Option<&Value<'a>>, ConvertError> {
        match self.get_present(key) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v)),
            Some(other) => Err(wrong_type(key, "an object", other)),
        }
    }
}

fn missing(key: &str) -> ConvertError {
    ConvertError::new(ErrorKind::MissingField, format!("missing field `{key}`"))
}

fn wrong_type(key: &str, want: &str, got: &Value<'_>) -> ConvertError {
    ConvertError::new(
        ErrorKind::InvalidField,
        format!("field `{key}` must be {want}, not {}", got.type_name()),
    )
}

/// Parse one strict JSON document (surrounding whitespace allowed, nothing
/// else; a byte-order mark is not whitespace).
pub fn parse(text: &str) -> Result<Value<'_>, JsonError> {
    parser::document(text)
}

/// Parse strictly, then convert to a [`serde_json::Value`] (see
/// [`Value::to_serde`]). Slower than [`parse`]; for callers that want
/// serde_json's tree.
pub fn parse_to_serde(text: &str) -> Result<serde_json::Value, JsonError> {
    parse(text).map(|v| v.to_serde())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn accepts_rfc8259_values() {
        let v =
            parse(" {\"a\":[1,-0.5e3,true,false,null,\"x\\u00e9\\ud83c\\udf89\\n\\/\"],\"b\":{}} ")
                .unwrap();
        let a = v.get("a").and_then(Value::as_array).unwrap();
        assert_eq!(a.len(), 6);
        assert_eq!(a[1].as_number().unwrap().as_str(), "-0.5e3");
        assert_eq!(a[5].as_str(), Some("xé🎉\n/"));
        assert!(v.get("b").and_then(Value::as_object).unwrap().is_empty());
    }

    #[test]
    fn depth_limit_is_128_inclusive() {
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        assert!(matches!(
            parse(&nested(MAX_DEPTH + 1)),
            Err(JsonError::TooDeep { .. })
        ));
        assert!(matches!(
            parse(&nested(100_000)),
            Err(JsonError::TooDeep { .. })
        ));
        let objects = format!(
            "{}1{}",
            "{\"k\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(parse(&objects), Err(JsonError::TooDeep { .. })));
    }

    #[test]
    fn refuses_what_lenient_parsers_accept() {
        for bad in [
            "{\"a\":1,\"a\":1}",
            "\"\\ud800\"",
            "\"\\ud800\\u0041\"",
            "\"\\udc00\"",
            "\"a\u{7}b\"",
            "\"a\nb\"",
            "{\"a\":1} x",
            "{\"a\":1,}",
            "[1,]",
            "// c\n{}",
            "\u{feff}{}",
            "01",
            "1.",
            "-",
            "1e",
            "1e400",
            "+1",
            "NaN",
            "'a'",
            "\"\\x\"",
            "{\"a\" 1}",
            "",
            "[",
            "\"abc",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_found_in_large_objects() {
        let mut members: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(parse(&format!("{{{}}}", members.join(","))).is_ok());
        members.push("\"k3\":0".to_owned());
        assert!(matches!(
            parse(&format!("{{{}}}", members.join(","))),
            Err(JsonError::DuplicateKey { .. })
        ));
        // Keys equal after unescaping are duplicates too.
        assert!(parse("{\"a\":1,\"\\u0061\":2}").is_err());
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        // The string scanner skips 8-byte words; a special byte at any
        // position inside or after a word must still be seen.
        for len in 0..40 {
            let plain = "é".repeat(len / 2) + &"a".repeat(len % 2);
            assert_eq!(
                parse(&format!("\"{plain}\"")).unwrap().as_str(),
                Some(plain.as_str())
            );
            for special in ["\u{1}", "\u{1f}", "\n"] {
                let text = format!("\"{plain}{special}xyz\"");
                assert!(
                    matches!(parse(&text), Err(JsonError::ControlCharacter { .. })),
                    "{text:?}"
                );
            }
            let escaped = format!("\"{plain}\\u0041\"");
            assert_eq!(
                parse(&escaped).unwrap().as_str(),
                Some(format!("{plain}A").as_str())
            );
        }
    }

    #[test]
    fn numbers_keep_their_text() {
        let v = parse("[18446744073709551616, 2.50, 1e21]").unwrap();
        let texts: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_number().unwrap().as_str())
            .collect();
        assert_eq!(texts, ["18446744073709551616", "2.50", "1e21"]);
        let serde = parse_to_serde("{\"big\":18446744073709551615,\"neg\":-5,\"f\":0.1}").unwrap();
        assert_eq!(serde["big"].as_u64(), Some(u64::MAX));
        assert_eq!(serde["neg"].as_i64(), Some(-5));
        assert_eq!(serde["f"].as_f64(), Some(0.1));
    }
}
