//! Strict `application/x-www-form-urlencoded` decoding.
//!
//! Webhook forms (Twilio, Slack) are decoded **exactly once**: `+` is a space,
//! `%XX` is the byte `XX`, and nothing else is touched, so a value that is
//! itself percent-encoded text (Twilio's `CallToken`) stays as it is. The
//! decoder refuses what a lenient one would paper over, with the error kinds
//! of the conversion spec:
//!
//! * [`ErrorKind::InvalidEncoding`]: the body, or any decoded key or value,
//!   is not UTF-8 (even a field nobody reads);
//! * [`ErrorKind::InvalidForm`]: a malformed escape (`%ZZ`, a `%` not followed
//!   by two hex digits), or a key repeated with a different value (parameter
//!   pollution; a key repeated with the *same* value is harmless).
//!
//! Encoding is checked over the whole body before form faults, so a body
//! with both kinds of fault is always `invalid_encoding`, as the spec orders.
//!
//! ```
//! use hermes_converter_sdk::form;
//!
//! let f = form::parse(b"Body=50%25+off+%2B+more&From=%2B14155550123").unwrap();
//! assert_eq!(f.get("Body"), Some("50% off + more"));
//! assert_eq!(f.get("From"), Some("+14155550123"));
//! assert!(form::parse(b"a=%ZZ").is_err());
//! ```

use std::borrow::Cow;

use crate::{ConvertError, ErrorKind};

/// Why a body is not a strict form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// The body bytes are not UTF-8.
    #[error("body is not UTF-8 (byte {offset})")]
    BodyNotUtf8 {
        /// The first invalid byte.
        offset: usize,
    },
    /// A percent-decoded key or value is not UTF-8.
    #[error("percent-decoded field {field} is not UTF-8")]
    DecodedNotUtf8 {
        /// Index of the `&`-separated field, from 0.
        field: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("malformed percent escape at byte {offset}")]
    BadEscape {
        /// Where the `%` is.
        offset: usize,
    },
    /// The same key twice with different values.
    #[error("key {key:?} repeated with conflicting values")]
    ConflictingValues {
        /// The key (shortened if long).
        key: String,
    },
}

impl FormError {
    /// The spec's error kind for this fault.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FormError::BodyNotUtf8 { .. } | FormError::DecodedNotUtf8 { .. } => {
                ErrorKind::InvalidEncoding
            }
            FormError::BadEscape { .. } | FormError::ConflictingValues { .. } => {
                ErrorKind::InvalidForm
            }
        }
    }
}

impl From<FormError> for ConvertError {
    fn from(e: FormError) -> Self {
        ConvertError::new(e.kind(), e.to_string())
    }
}

/// A decoded form: each key once, with its value. Borrows from the body for
/// fields that needed no decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Form<'a> {
    /// Sorted by key, keys unique.
    fields: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Form<'a> {
    /// The value of `key` (case-sensitive, as form keys are).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .and_then(|i| self.fields.get(i))
            .map(|(_, v)| v.as_ref())
    }

    /// True when the form has `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// All fields, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// How many distinct keys.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the form has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Decode a form body strictly (see the module docs). Empty `&`-separated
/// pieces are skipped; a piece without `=` is a key with an empty value.
pub fn parse(body: &[u8]) -> Result<Form<'_>, FormError> {
    let text = std::str::from_utf8(body).map_err(|e| FormError::BodyNotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut fields = Vec::new();
    // The first malformed escape, reported only once the whole body is known
    // to be UTF-8 (invalid_encoding outranks invalid_form).
    let mut bad_escape: Option<usize> = None;
    let mut offset = 0;
    for (index, piece) in text.split('&').enumerate() {
        let piece_start = offset;
        offset += piece.len() + 1;
        if piece.is_empty() {
            continue;
        }
        let (raw_key, raw_value, value_start) = match piece.split_once('=') {
            Some((k, v)) => (k, v, piece_start + k.len() + 1),
            None => (piece, "", piece_start + piece.len()),
        };
        let key = decode(raw_key, piece_start, index, &mut bad_escape)?;
        let value = decode(raw_value, value_start, index, &mut bad_escape)?;
        fields.push((key, value));
    }
    if let Some(offset) = bad_escape {
        return Err(FormError::BadEscape { offset });
    }
    // Stable sort keeps arrival order among equal keys; then equal keys must
    // carry equal values.
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let mut conflict = None;
    fields.dedup_by(|later, earlier| {
        if later.0 != earlier.0 {
            return false;
        }
        if later.1 != earlier.1 && conflict.is_none() {
            conflict = Some(shorten(&later.0));
        }
        true
    });
    if let Some(key) = conflict {
        return Err(FormError::ConflictingValues { key });
    }
    Ok(Form { fields })
}

/// Percent-decode one key or value. Malformed escapes are kept literally (so
/// the rest can still be checked for encoding) and the first is recorded.
fn decode<'a>(
    raw: &'a str,
    start: usize,
    field: usize,
    bad_escape: &mut Option<usize>,
) -> Result<Cow<'a, str>, FormError> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    bad_escape.get_or_insert(start + i);
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| FormError::DecodedNotUtf8 { field })
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Error messages quote keys, but never unboundedly.
fn shorten(key: &str) -> String {
    const MAX: usize = 64;
    if key.chars().count() <= MAX {
        key.to_owned()
    } else {
        key.chars().take(MAX).chain(['…']).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    fn kind(body: &[u8]) -> Option<ErrorKind> {
        parse(body).err().map(|e| e.kind())
    }

    #[test]
    fn decodes_exactly_once() {
        let f =
            parse(b"CallToken=%257B%2522a%2522%257D&Body=a+b%2Bc&Empty=&Bare&&x=%C3%A9").unwrap();
        assert_eq!(f.get("CallToken"), Some("%7B%22a%22%7D"));
        assert_eq!(f.get("Body"), Some("a b+c"));
        assert_eq!(f.get("Empty"), Some(""));
        assert_eq!(f.get("Bare"), Some(""));
        assert_eq!(f.get("x"), Some("é"));
        assert_eq!(f.get("missing"), None);
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn keys_are_decoded_too() {
        let f = parse(b"a%20b=1&c+d=2").unwrap();
        assert_eq!(f.get("a b"), Some("1"));
        assert_eq!(f.get("c d"), Some("2"));
    }

    #[test]
    fn repeated_keys() {
        assert!(parse(b"Digits=1&Digits=1").is_ok());
        assert_eq!(
            kind(b"Digits=5678&Digits=1234"),
            Some(ErrorKind::InvalidForm)
        );
        // Equal after decoding counts as the same value.
        assert!(parse(b"a=%2B1&a=+1").is_err());
        assert!(parse(b"a=%2B1&a=%2b1").is_ok());
    }

    #[test]
    fn malformed_escapes() {
        for body in [&b"a=%ZZ"[..], b"a=%2", b"a=%", b"a=%+o", b"%G0=1", b"a=1%"] {
            assert_eq!(kind(body), Some(ErrorKind::InvalidForm), "{body:?}");
        }
    }

    #[test]
    fn encoding_outranks_form_faults() {
        assert_eq!(kind(b"a=%C3%28"), Some(ErrorKind::InvalidEncoding));
        assert_eq!(kind(b"a=\xff"), Some(ErrorKind::InvalidEncoding));
        assert_eq!(kind(b"%FF=1"), Some(ErrorKind::InvalidEncoding));
        // The malformed escape comes first in the body, the bad UTF-8 later.
        assert_eq!(kind(b"a=%ZZ&b=%FF"), Some(ErrorKind::InvalidEncoding));
        assert_eq!(kind(b"a=1&a=2&b=%FF"), Some(ErrorKind::InvalidEncoding));
    }

    #[test]
    fn byte_order_mark_is_part_of_the_first_key() {
        let f = parse("\u{feff}payload=x".as_bytes()).unwrap();
        assert_eq!(f.get("payload"), None);
        assert_eq!(f.get("\u{feff}payload"), Some("x"));
    }
}
