//! A sanitized webhook request forwarded by the connector (relay-contract
//! §5.2). The body travels as standard padded base64 and is decoded to the
//! exact bytes; header entries that are not `[name, value]` pairs are dropped.
//!
//! The body is bounded *before* it is decoded: the size a padded base64
//! string decodes to follows from its length, so an oversized body is refused
//! as `payload_too_large` without allocating it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// Default bound of a decoded body: 1 MiB, the plugin host's default
/// `max_body_bytes` (a larger body could never be converted anyway).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Why a `forward` object could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The forward is not a JSON object (or not JSON at all).
    #[error("forward is not a JSON object")]
    NotAnObject,
    /// A key has an unusable type.
    #[error("forward field `{0}` is missing or has the wrong type")]
    BadField(&'static str),
    /// `bodyB64` is not standard padded base64 (`invalid_body_encoding`).
    #[error("invalid_body_encoding")]
    InvalidBodyEncoding,
    /// `bodyB64` would decode to more than the bound (`payload_too_large`);
    /// refused before decoding.
    #[error("payload_too_large: body of {size} bytes exceeds {limit}")]
    PayloadTooLarge {
        /// Decoded size the encoded length implies.
        size: usize,
        /// The bound in bytes.
        limit: usize,
    },
}

/// A webhook request the connector already verified and answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassthroughForward {
    /// Platform, e.g. `discord`, `twilio`, `slack`.
    pub platform: String,
    /// Bot/app id (`botId`); default `""`.
    pub bot_id: String,
    /// HTTP method; default `""`.
    pub method: String,
    /// Request path; default `""`.
    pub path: String,
    /// Headers in wire order; names keep their case, duplicates are kept.
    pub headers: Vec<(String, String)>,
    /// Exact body bytes.
    pub body: Vec<u8>,
    /// Target profile (session namespace).
    pub profile: Option<String>,
}

fn string_or_default(
    m: &mut Map<String, Value>,
    key: &'static str,
) -> Result<String, ForwardError> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ForwardError::BadField(key)),
    }
}

/// The number of bytes a standard padded base64 string of this text decodes
/// to (exact for valid input; an upper bound otherwise).
fn decoded_len(b64: &str) -> usize {
    let padding = b64.bytes().rev().take(2).filter(|&b| b == b'=').count();
    (b64.len().div_ceil(4) * 3).saturating_sub(padding)
}

impl PassthroughForward {
    /// Parse a `forward` JSON value, with bodies bounded by
    /// [`DEFAULT_MAX_BODY_BYTES`].
    pub fn from_value(value: Value) -> Result<Self, ForwardError> {
        Self::from_value_with_max_body(value, DEFAULT_MAX_BODY_BYTES)
    }

    /// Parse a `forward` JSON value whose body may decode to at most
    /// `max_body_bytes` bytes.
    pub fn from_value_with_max_body(
        value: Value,
        max_body_bytes: usize,
    ) -> Result<Self, ForwardError> {
        match value {
            Value::Object(m) => Self::from_map(m, max_body_bytes),
            _ => Err(ForwardError::NotAnObject),
        }
    }

    /// Parse a `forward` object from raw JSON bytes (used by the fuzz target
    /// and by tools that hold a bare forward), with the default body bound.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, ForwardError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Self::from_value(v),
            Err(_) => Err(ForwardError::NotAnObject),
        }
    }

    pub(crate) fn from_map(
        mut m: Map<String, Value>,
        max_body_bytes: usize,
    ) -> Result<Self, ForwardError> {
        let platform = match m.remove("platform") {
            Some(Value::String(s)) => s,
            _ => return Err(ForwardError::BadField("platform")),
        };
        let headers = match m.remove("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => entries
                .into_iter()
                .filter_map(|entry| match entry {
                    Value::Array(pair) => {
                        let mut pair = pair.into_iter();
                        match (pair.next(), pair.next(), pair.next()) {
                            (Some(Value::String(name)), Some(Value::String(value)), None) => {
                                Some((name, value))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect(),
            Some(_) => return Err(ForwardError::BadField("headers")),
        };
        let body = match m.remove("bodyB64") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(b64)) => {
                let size = decoded_len(&b64);
                if size > max_body_bytes {
                    return Err(ForwardError::PayloadTooLarge {
                        size,
                        limit: max_body_bytes,
                    });
                }
                STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| ForwardError::InvalidBodyEncoding)?
            }
            Some(_) => return Err(ForwardError::InvalidBodyEncoding),
        };
        let profile = match m.remove("profile") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(ForwardError::BadField("profile")),
        };
        Ok(Self {
            platform,
            bot_id: string_or_default(&mut m, "botId")?,
            method: string_or_default(&mut m, "method")?,
            path: string_or_default(&mut m, "path")?,
            headers,
            body,
            profile,
        })
    }

    /// First header with this name, compared ASCII case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Borrowed `[name, value]` pair for serialization.
struct HeaderPairs<'a>(&'a [(String, String)]);

impl Serialize for HeaderPairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(n, v)| [n, v]))
    }
}

impl Serialize for PassthroughForward {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("platform", &self.platform)?;
        m.serialize_entry("botId", &self.bot_id)?;
        m.serialize_entry("method", &self.method)?;
        m.serialize_entry("path", &self.path)?;
        m.serialize_entry("headers", &HeaderPairs(&self.headers))?;
        m.serialize_entry("bodyB64", &STANDARD.encode(&self.body))?;
        if let Some(p) = &self.profile {
            m.serialize_entry("profile", p)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_to_absent_keys() {
        let f = PassthroughForward::from_value(json!({"platform": "slack"}));
        assert_eq!(
            f,
            Ok(PassthroughForward {
                platform: "slack".into(),
                ..PassthroughForward::default()
            })
        );
    }

    #[test]
    fn unpadded_or_url_safe_base64_is_refused() {
        for bad in ["e30", "-_8=", "e30=\n"] {
            let f = PassthroughForward::from_value(json!({"platform": "x", "bodyB64": bad}));
            assert_eq!(f, Err(ForwardError::InvalidBodyEncoding), "body {bad:?}");
        }
    }

    #[test]
    fn a_body_over_the_bound_is_refused_before_decoding() {
        let forward = |body: &[u8]| json!({"platform": "x", "bodyB64": STANDARD.encode(body)});
        for limit in [0, 1, 2, 3, 4, 1000] {
            let at_limit = vec![7u8; limit];
            let f = PassthroughForward::from_value_with_max_body(forward(&at_limit), limit);
            assert_eq!(
                f.map(|f| f.body),
                Ok(at_limit),
                "exactly {limit} bytes is fine"
            );
            let over = vec![7u8; limit + 1];
            assert_eq!(
                PassthroughForward::from_value_with_max_body(forward(&over), limit),
                Err(ForwardError::PayloadTooLarge {
                    size: limit + 1,
                    limit
                }),
                "{} bytes over a bound of {limit}",
                limit + 1
            );
        }
        // The default bound is the plugin host's 1 MiB.
        let big = forward(&vec![0u8; DEFAULT_MAX_BODY_BYTES + 1]);
        assert!(matches!(
            PassthroughForward::from_value(big),
            Err(ForwardError::PayloadTooLarge { .. })
        ));
        // Not decoded at all: an oversized string that is not even base64 is
        // refused for its size.
        let junk = json!({"platform": "x", "bodyB64": "!".repeat(8)});
        assert!(matches!(
            PassthroughForward::from_value_with_max_body(junk, 4),
            Err(ForwardError::PayloadTooLarge { .. })
        ));
        // Bad base64 under the bound is still `invalid_body_encoding`.
        let bad = json!({"platform": "x", "bodyB64": "!!!!"});
        assert_eq!(
            PassthroughForward::from_value_with_max_body(bad, 4),
            Err(ForwardError::InvalidBodyEncoding)
        );
    }

    #[test]
    fn missing_platform_is_a_bad_field() {
        assert_eq!(
            PassthroughForward::from_value(json!({"bodyB64": ""})),
            Err(ForwardError::BadField("platform"))
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_first_wins() {
        let f = PassthroughForward {
            headers: vec![("X-A".into(), "1".into()), ("x-a".into(), "2".into())],
            ..PassthroughForward::default()
        };
        assert_eq!(f.header("x-A"), Some("1"));
        assert_eq!(f.header("y"), None);
    }

    #[test]
    fn encoding_round_trips_binary_body() {
        let f = PassthroughForward {
            platform: "twilio".into(),
            bot_id: "b".into(),
            method: "POST".into(),
            path: "/sms".into(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: (0u8..=255).collect(),
            profile: Some("coder".into()),
        };
        let v = serde_json::to_value(&f).unwrap_or(Value::Null);
        assert_eq!(PassthroughForward::from_value(v), Ok(f));
    }
}
