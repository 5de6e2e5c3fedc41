//! The strict parser behind [`parse`](super::parse): recursive descent
//! over bytes, borrowing from the input where it can.

use std::borrow::Cow;

use super::{JsonError, MAX_DEPTH, Number, Object, Value};

/// One document: a value, surrounded by whitespace at most.
pub(super) fn document(text: &str) -> Result<Value<'_>, JsonError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        members: Vec::with_capacity(32),
        items: Vec::with_capacity(16),
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos < parser.bytes.len() {
        return Err(JsonError::TrailingCharacters { offset: parser.pos });
    }
    Ok(value)
}

/// Objects up to this size are checked for duplicate keys pairwise; larger
/// ones by sorting, so a hostile object with many keys costs O(n log n).
const PAIRWISE_DUPLICATE_CHECK: usize = 16;

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Members of the objects being parsed, innermost last: a finished
    /// object moves its members out in one exact-size allocation instead of
    /// growing its own vector member by member.
    members: Vec<(Cow<'a, str>, Value<'a>)>,
    /// The same for array elements.
    items: Vec<Value<'a>>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> JsonError {
        if self.pos >= self.bytes.len() {
            JsonError::UnexpectedEnd
        } else {
            JsonError::UnexpectedCharacter { offset: self.pos }
        }
    }

    /// `depth` is the number of arrays/objects enclosing this value.
    fn value(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected()),
        }
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, JsonError> {
        let end = self.pos + word.len();
        match self.bytes.get(self.pos..end) {
            Some(found) if found == word.as_bytes() => {
                self.pos = end;
                Ok(value)
            }
            Some(_) => Err(JsonError::UnexpectedCharacter { offset: self.pos }),
            None => Err(JsonError::UnexpectedEnd),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            Err(JsonError::TooDeep { offset: self.pos })
        } else {
            Ok(())
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.enter(depth)?;
        self.pos += 1; // '['
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(Vec::new()));
        }
        let first = self.items.len();
        loop {
            self.skip_whitespace();
            let item = self.value(depth)?;
            self.items.push(item);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    // One exact-size allocation per array.
                    return Ok(Value::Array(self.items.drain(first..).collect()));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.enter(depth)?;
        let start = self.pos;
        self.pos += 1; // '{'
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(Object(Vec::new())));
        }
        let first = self.members.len();
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected());
            }
            let key = self.string()?;
            let siblings = self.members.get(first..).unwrap_or_default();
            if siblings.len() < PAIRWISE_DUPLICATE_CHECK && siblings.iter().any(|(k, _)| *k == key)
            {
                return Err(JsonError::DuplicateKey { offset: start });
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.unexpected());
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            self.members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected()),
            }
        }
        // One exact-size allocation per object.
        let members: Vec<(Cow<'a, str>, Value<'a>)> = self.members.drain(first..).collect();
        if members.len() > PAIRWISE_DUPLICATE_CHECK {
            // Keys past the pairwise window were not checked on insertion.
            let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_ref()).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w.first() == w.get(1)) {
                return Err(JsonError::DuplicateKey { offset: start });
            }
        }
        Ok(Value::Object(Object(members)))
    }

    /// A string starting at the opening quote; borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.pos += 1; // '"'
        let start = self.pos;
        // Fast path: skip plain bytes eight at a time, then scan to the
        // closing quote.
        self.skip_plain_bytes();
        loop {
            match self.peek() {
                None => return Err(JsonError::UnexpectedEnd),
                Some(b'"') => {
                    let s = self.slice(start, self.pos)?;
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0x00..=0x1f) => return Err(JsonError::ControlCharacter { offset: self.pos }),
                Some(_) => self.pos += 1,
            }
        }
        // Slow path: the string has escapes.
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(self.slice(start, self.pos)?);
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => return Err(JsonError::UnexpectedEnd),
                Some(b'"') => {
                    out.push_str(self.slice(run, self.pos)?);
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    out.push_str(self.slice(run, self.pos)?);
                    self.escape(&mut out)?;
                    run = self.pos;
                }
                Some(0x00..=0x1f) => return Err(JsonError::ControlCharacter { offset: self.pos }),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Advance over whole 8-byte words that hold no `"`, `\\` or control
    /// character (SWAR: the classic "has a zero byte" bit trick on each
    /// condition), leaving the position at or before the first special byte.
    fn skip_plain_bytes(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            // Bytes below 0x20: x - 0x20 borrows into the high bit; bytes
            // with the high bit already set (UTF-8) are excluded by `!x`.
            let special = has_zero(x ^ (ONES * u64::from(b'"')))
                | has_zero(x ^ (ONES * u64::from(b'\\')))
                | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
            if special != 0 {
                return;
            }
            self.pos += 8;
        }
    }

    /// A sub-slice of the input between positions the scanner stopped at.
    /// Those positions sit next to ASCII bytes, hence on char boundaries.
    fn slice(&self, from: usize, to: usize) -> Result<&'a str, JsonError> {
        self.text
            .get(from..to)
            .ok_or(JsonError::UnexpectedCharacter { offset: from })
    }

    /// One escape starting at the backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let at = self.pos;
        self.pos += 1; // '\\'
        let c = match self.peek() {
            None => return Err(JsonError::UnexpectedEnd),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4()?;
                let c = match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by `\u` + low surrogate.
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(JsonError::LoneSurrogate { offset: at });
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(JsonError::LoneSurrogate { offset: at });
                        }
                        let scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(scalar).ok_or(JsonError::LoneSurrogate { offset: at })?
                    }
                    0xDC00..=0xDFFF => return Err(JsonError::LoneSurrogate { offset: at }),
                    _ => char::from_u32(unit).ok_or(JsonError::InvalidEscape { offset: at })?,
                };
                out.push(c);
                return Ok(());
            }
            Some(_) => return Err(JsonError::InvalidEscape { offset: at }),
        };
        self.pos += 1;
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or(JsonError::UnexpectedEnd)?;
        let mut unit = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(JsonError::InvalidEscape { offset: self.pos }),
            };
            unit = unit * 16 + u32::from(v);
        }
        self.pos += 4;
        Ok(unit)
    }

    fn digits(&mut self) -> usize {
        let from = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - from
    }

    fn number(&mut self) -> Result<Value<'a>, JsonError> {
        let start = self.pos;
        let invalid = JsonError::InvalidNumber { offset: start };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(invalid),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if self.digits() == 0 {
                return Err(invalid);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(invalid);
            }
        }
        let text = self.slice(start, self.pos)?;
        // Integer literals of any length are exact as text; a fraction or
        // exponent must still name a finite double (1e400 does not).
        if !integer && !text.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(invalid);
        }
        Ok(Value::Number(Number(text)))
    }
}
