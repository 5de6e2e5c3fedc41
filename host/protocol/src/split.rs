//! Length units and the reply splitter.
//!
//! Platforms limit message length in different units: Discord counts Unicode
//! scalar values, Telegram counts UTF-16 code units. [`LenUnit`] measures in
//! either; [`split_message`] cuts a reply into chunks that fit, preferring
//! paragraph, then line, then word boundaries, and never splitting a code
//! point (so never a surrogate pair either).
//!
//! The chunks concatenate exactly to the input, with one exception: when
//! code blocks render (`code_blocks == true`) and a cut lands inside a
//! ```` ``` ```` fence, the chunk is closed with a fence and the next chunk
//! re-opens it with the same info string, so both halves still render as
//! code. Those added markers count toward the limit. [`split_message_chunks`]
//! exposes the pieces (re-opened fence, original text, closing fence)
//! separately.
//!
//! A reply is cut into at most [`MAX_CHUNKS_PER_REPLY`] chunks: the rest is
//! dropped and the last chunk ends with [`TRUNCATION_MARKER`]. Splitting is
//! linear in the input: each chunk measures only the text it may hold.

use serde::{Serialize, Serializer};

/// How a platform counts message length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LenUnit {
    /// Unicode scalar values.
    #[default]
    Chars,
    /// UTF-16 code units.
    Utf16,
}

impl LenUnit {
    /// Parse a descriptor `len_unit`; anything but `utf16` is `Chars`.
    pub fn parse(s: &str) -> Self {
        if s == "utf16" {
            LenUnit::Utf16
        } else {
            LenUnit::Chars
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LenUnit::Chars => "chars",
            LenUnit::Utf16 => "utf16",
        }
    }

    /// Cost of one char in this unit (1, or 2 for a UTF-16 surrogate pair).
    pub fn char_units(self, c: char) -> usize {
        match self {
            LenUnit::Chars => 1,
            LenUnit::Utf16 => c.len_utf16(),
        }
    }

    /// Length of `s` in this unit.
    pub fn measure(self, s: &str) -> usize {
        match self {
            LenUnit::Chars => s.chars().count(),
            LenUnit::Utf16 => s.encode_utf16().count(),
        }
    }
}

impl Serialize for LenUnit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One chunk of a split message, in its three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitChunk {
    /// Added fence re-opening a code block cut by the previous chunk
    /// (```` ```info\n ````), or empty.
    pub reopen: String,
    /// The chunk's slice of the original text.
    pub body: String,
    /// Added fence closing a code block this chunk cuts (```` ``` ```` or
    /// ```` \n``` ````), or empty.
    pub close: String,
    /// [`TRUNCATION_MARKER`] on the last chunk of a reply cut at
    /// [`MAX_CHUNKS_PER_REPLY`] (when the limit leaves room for it), else empty.
    pub truncation: &'static str,
}

impl SplitChunk {
    /// The text to send: `reopen + body + close + truncation`.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(
            self.reopen.len() + self.body.len() + self.close.len() + self.truncation.len(),
        );
        s.push_str(&self.reopen);
        s.push_str(&self.body);
        s.push_str(&self.close);
        s.push_str(self.truncation);
        s
    }
}

/// Longest closing marker (`\n` + three backticks).
const MAX_CLOSE_UNITS: usize = 4;
/// Most units a single char can cost (a surrogate pair).
const MAX_CHAR_UNITS: usize = 2;

/// Most chunks one reply is split into. A reply that would need more is cut:
/// the text after the last chunk is dropped. 64 chunks of Discord's 2000 chars
/// is 128 000 chars, far more than anyone reads in a chat, while a runaway
/// agent with a tiny platform limit would otherwise flood the chat (and the
/// connector) with tens of thousands of messages.
pub const MAX_CHUNKS_PER_REPLY: usize = 64;

/// Appended to the last chunk of a reply cut at [`MAX_CHUNKS_PER_REPLY`].
pub const TRUNCATION_MARKER: &str = "…(truncated)";

/// Split `text` into chunks of at most `max_units` (measured in `unit`).
///
/// An empty text yields no chunks. When `max_units` cannot hold even one
/// char, each chunk still takes one char so the split always terminates.
///
/// At most [`MAX_CHUNKS_PER_REPLY`] chunks are returned. When the text needs
/// more, the rest is dropped and the last chunk ends with
/// [`TRUNCATION_MARKER`], counted toward the limit. A limit too small to hold
/// the marker and a char (plus a closing fence, when the cut is inside a code
/// block) gets no marker, just the cut.
pub fn split_message(
    text: &str,
    max_units: usize,
    unit: LenUnit,
    code_blocks: bool,
) -> Vec<String> {
    split_message_chunks(text, max_units, unit, code_blocks)
        .iter()
        .map(SplitChunk::render)
        .collect()
}

/// Like [`split_message`], but returns each chunk's added markers separately
/// from its slice of the original text. The bodies concatenate exactly to
/// `text`, or to a prefix of it when the reply was cut at
/// [`MAX_CHUNKS_PER_REPLY`].
pub fn split_message_chunks(
    text: &str,
    max_units: usize,
    unit: LenUnit,
    code_blocks: bool,
) -> Vec<SplitChunk> {
    let fences = if code_blocks {
        fence_events(text)
    } else {
        Vec::new()
    };
    let marker_units = unit.measure(TRUNCATION_MARKER);
    let mut chunks = Vec::new();
    let mut pos = 0;
    while let Some(rest) = text.get(pos..).filter(|r| !r.is_empty()) {
        // "```" + info + "\n"; ASCII costs one unit in either unit. `None`
        // when the info string alone is over the limit (measured no further,
        // so a huge info line costs O(limit) per chunk, not O(line)).
        let info = fence_state(&fences, pos);
        let reopen_units = match info {
            Some(info) => measure_within(info, max_units, unit).map(|u| u + 4),
            None => Some(0),
        };
        // Markers are only worth adding when they leave room for text; with
        // an absurdly small limit we send plain slices instead.
        let markers = code_blocks
            && reopen_units.is_some_and(|r| r + MAX_CLOSE_UNITS + MAX_CHAR_UNITS <= max_units);
        let (reopen, reopen_units) = match info {
            Some(info) if markers => (format!("```{info}\n"), reopen_units.unwrap_or(0)),
            _ => (String::new(), 0),
        };
        let mut budget = max_units.saturating_sub(reopen_units);
        if measure_within(rest, budget, unit).is_some() {
            chunks.push(SplitChunk {
                reopen,
                body: rest.to_owned(),
                close: String::new(),
                truncation: "",
            });
            break;
        }
        let last = chunks.len() + 1 >= MAX_CHUNKS_PER_REPLY;
        let mut truncation = if last && marker_units + MAX_CHAR_UNITS <= budget {
            budget -= marker_units;
            TRUNCATION_MARKER
        } else {
            ""
        };
        let mut cut = choose_cut(rest, budget, unit);
        if markers && fence_state(&fences, pos + cut).is_some() {
            if !truncation.is_empty() && budget < MAX_CLOSE_UNITS + MAX_CHAR_UNITS {
                // No room for both the marker and the fence: the fence wins,
                // so the last chunk still renders as code.
                truncation = "";
                budget += marker_units;
            }
            // This cut needs a closing fence: choose again with room for it.
            cut = choose_cut(rest, budget.saturating_sub(MAX_CLOSE_UNITS), unit);
        }
        let body = rest.get(..cut).unwrap_or(rest);
        let close = if markers && fence_state(&fences, pos + cut).is_some() {
            if body.ends_with('\n') { "```" } else { "\n```" }
        } else {
            ""
        };
        chunks.push(SplitChunk {
            reopen,
            body: body.to_owned(),
            close: close.to_owned(),
            truncation,
        });
        if last {
            break;
        }
        pos += body.len();
    }
    chunks
}

/// Length of `s` in `unit` if it is at most `limit`, else `None`. Stops
/// counting past the limit, so the cost is O(limit), not O(`s`): measuring the
/// whole remaining text for every chunk made splitting quadratic.
fn measure_within(s: &str, limit: usize, unit: LenUnit) -> Option<usize> {
    let mut used = 0usize;
    for c in s.chars() {
        used += unit.char_units(c);
        if used > limit {
            return None;
        }
    }
    Some(used)
}

/// Byte length of the best first chunk of `rest` within `budget` units.
/// Always > 0 for a non-empty `rest`.
fn choose_cut(rest: &str, budget: usize, unit: LenUnit) -> usize {
    let mut used = 0;
    let mut end = 0;
    for (i, c) in rest.char_indices() {
        let cost = unit.char_units(c);
        if used + cost > budget {
            break;
        }
        used += cost;
        end = i + c.len_utf8();
    }
    if end == 0 {
        // Nothing fits: progress by one char anyway.
        return rest.chars().next().map_or(rest.len(), char::len_utf8);
    }
    if end >= rest.len() {
        return end;
    }
    let window = rest.get(..end).unwrap_or(rest);
    let paragraph = |w: &str| w.rfind("\n\n").map(|i| i + 2);
    let line = |w: &str| w.rfind('\n').map(|i| i + 1);
    let word = |w: &str| {
        w.char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8())
    };
    // First look for a boundary in the second half of the window, so a
    // paragraph break near the start does not produce a tiny chunk; then
    // anywhere; else a hard cut.
    for min in [end / 2, 1] {
        for find in [&paragraph as &dyn Fn(&str) -> Option<usize>, &line, &word] {
            if let Some(cut) = find(window).filter(|&c| c >= min.max(1)) {
                return cut;
            }
        }
    }
    end
}

/// Fence transitions: `(byte offset of the fence line, state after it)`,
/// where the state is `Some(info)` inside a block and `None` outside.
fn fence_events(text: &str) -> Vec<(usize, Option<String>)> {
    let mut events = Vec::new();
    let mut inside = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line
            .trim_end_matches(['\n', '\r'])
            .trim_start_matches([' ', '\t']);
        if let Some(after) = content.strip_prefix("```") {
            if !inside {
                inside = true;
                events.push((offset, Some(after.trim().to_owned())));
            } else if after.trim_start_matches('`').trim().is_empty() {
                // A closing fence carries no info string (CommonMark).
                inside = false;
                events.push((offset, None));
            }
        }
        offset += line.len();
    }
    events
}

/// Fence state at byte `at`: the state after the last fence line that starts
/// before `at`.
fn fence_state(events: &[(usize, Option<String>)], at: usize) -> Option<&str> {
    let idx = events.partition_point(|(o, _)| *o < at);
    idx.checked_sub(1)
        .and_then(|i| events.get(i))
        .and_then(|(_, state)| state.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk_and_empty_text_none() {
        assert_eq!(split_message("hello", 5, LenUnit::Chars, true), ["hello"]);
        assert!(split_message("", 5, LenUnit::Chars, true).is_empty());
    }

    #[test]
    fn prefers_paragraph_then_line_then_word() {
        let text = "aaaa bbbb\ncccc\n\ndddd eeee";
        // Window of 20 chars holds the paragraph break at 16.
        assert_eq!(
            split_message(text, 20, LenUnit::Chars, false),
            ["aaaa bbbb\ncccc\n\n", "dddd eeee"]
        );
        // Window of 12 holds only the line break at 10; the next window
        // ("cccc\n\ndddd ") prefers its paragraph break over the space.
        assert_eq!(
            split_message(text, 12, LenUnit::Chars, false),
            ["aaaa bbbb\n", "cccc\n\n", "dddd eeee"]
        );
        // Window of 8 holds only a space.
        assert_eq!(
            split_message("aaaa bbbb cccc", 8, LenUnit::Chars, false),
            ["aaaa ", "bbbb ", "cccc"]
        );
    }

    #[test]
    fn hard_cut_without_boundaries() {
        assert_eq!(
            split_message("abcdefghij", 4, LenUnit::Chars, false),
            ["abcd", "efgh", "ij"]
        );
    }

    #[test]
    fn utf16_never_splits_a_surrogate_pair() {
        // Each emoji costs 2 UTF-16 units: a limit of 3 fits one.
        assert_eq!(
            split_message("😀😀😀", 3, LenUnit::Utf16, false),
            ["😀", "😀", "😀"]
        );
        assert_eq!(
            split_message("😀😀😀", 3, LenUnit::Chars, false),
            ["😀😀😀"]
        );
    }

    #[test]
    fn too_small_limit_still_progresses() {
        assert_eq!(
            split_message("😀ab", 1, LenUnit::Utf16, false),
            ["😀", "a", "b"]
        );
        assert_eq!(split_message("ab", 0, LenUnit::Chars, false), ["a", "b"]);
    }

    #[test]
    fn cut_inside_fence_closes_and_reopens_with_info() {
        let text = "intro\n```rust\nlet a = 1;\nlet b = 2;\nlet c = 3;\n```\nend";
        let chunks = split_message(text, 30, LenUnit::Chars, true);
        assert_eq!(
            chunks,
            // The second window would end right before the closing fence, so
            // it needs a close marker; re-cut with room for it, one line less.
            [
                "intro\n```rust\nlet a = 1;\n```",
                "```rust\nlet b = 2;\n```",
                "```rust\nlet c = 3;\n```\nend"
            ]
        );
        for c in &chunks {
            assert!(c.chars().count() <= 30, "{c:?} too long");
        }
        // Without code-block rendering the text is split plainly.
        let plain = split_message(text, 30, LenUnit::Chars, false);
        assert_eq!(plain.concat(), text);
    }

    #[test]
    fn chunk_bodies_rejoin_even_with_fences() {
        let text = "```\nfn main() {}\n```\n\n```py\nprint(1)\nprint(2)\n```";
        let chunks = split_message_chunks(text, 14, LenUnit::Chars, true);
        let bodies: String = chunks.iter().map(|c| c.body.as_str()).collect();
        assert_eq!(bodies, text);
        assert!(chunks.iter().any(|c| c.reopen == "```py\n"), "{chunks:?}");
    }

    #[test]
    fn huge_reply_with_tiny_utf16_limit_is_capped_quickly() {
        // 800 KB of words and emoji; with 16 UTF-16 units a chunk this needs
        // ~60 000 chunks. It used to take ~30 s (each chunk re-measured the
        // whole rest) and flooded the chat; now it is capped and linear.
        let text = "word 😀 ".repeat(800_000 / "word 😀 ".len());
        let started = std::time::Instant::now();
        let chunks = split_message_chunks(&text, 16, LenUnit::Utf16, true);
        println!("800 KB split in {:?}", started.elapsed());
        assert_eq!(chunks.len(), MAX_CHUNKS_PER_REPLY, "capped");
        for c in &chunks {
            let units = LenUnit::Utf16.measure(&c.render());
            assert!(units <= 16, "{c:?} is {units} UTF-16 units");
        }
        let bodies: String = chunks.iter().map(|c| c.body.as_str()).collect();
        assert!(text.starts_with(&bodies) && bodies.len() < text.len());
        let last = chunks.last().map(SplitChunk::render).unwrap_or_default();
        assert!(last.ends_with(TRUNCATION_MARKER), "last chunk {last:?}");
        assert!(
            chunks.iter().rev().skip(1).all(|c| c.truncation.is_empty()),
            "only the last chunk is marked"
        );
    }

    #[test]
    fn exactly_the_cap_is_not_truncated() {
        let text = "abcd".repeat(MAX_CHUNKS_PER_REPLY);
        let chunks = split_message(&text, 4, LenUnit::Chars, false);
        assert_eq!(chunks.len(), MAX_CHUNKS_PER_REPLY);
        assert_eq!(chunks.concat(), text, "nothing dropped, no marker");
        let more = format!("{text}e");
        let chunks = split_message(&more, 4, LenUnit::Chars, false);
        assert_eq!(chunks.len(), MAX_CHUNKS_PER_REPLY);
        assert_eq!(
            chunks.concat(),
            "abcd".repeat(MAX_CHUNKS_PER_REPLY - 1) + "abcd"
        );
        // 20 chars leave room for the marker: the last chunk carries it.
        let chunks = split_message(&"x".repeat(20 * 70), 20, LenUnit::Chars, false);
        assert_eq!(chunks.len(), MAX_CHUNKS_PER_REPLY);
        assert_eq!(
            chunks.last().map(String::as_str),
            Some(format!("{}{TRUNCATION_MARKER}", "x".repeat(8)).as_str())
        );
    }

    #[test]
    fn long_fence_info_string_is_not_remeasured_per_chunk() {
        // A single huge "info string" line inside a fence must not make every
        // chunk measure it in full.
        let text = format!("```{}\n{}", "i".repeat(400_000), "body ".repeat(1000));
        let chunks = split_message_chunks(&text, 16, LenUnit::Chars, true);
        assert!(chunks.len() <= MAX_CHUNKS_PER_REPLY);
        assert!(
            chunks.iter().all(|c| c.reopen.is_empty()),
            "info too long to re-open"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                4 => "[a-z]{1,9}",
                2 => Just(" ".to_owned()),
                2 => Just("\n".to_owned()),
                1 => Just("\n\n".to_owned()),
                1 => Just("😀".to_owned()),
                1 => Just("é".to_owned()),
                1 => Just("```rust\n".to_owned()),
                1 => Just("```\n".to_owned()),
                1 => Just("```".to_owned()),
            ],
            0..80,
        )
        .prop_map(|parts| parts.concat())
    }

    fn unit() -> impl Strategy<Value = LenUnit> {
        prop_oneof![Just(LenUnit::Chars), Just(LenUnit::Utf16)]
    }

    proptest! {
        #[test]
        fn chunks_respect_the_limit_and_rejoin(
            text in message(),
            max in 2usize..80,
            unit in unit(),
            code_blocks in any::<bool>(),
        ) {
            let chunks = split_message_chunks(&text, max, unit, code_blocks);
            let rendered = split_message(&text, max, unit, code_blocks);
            prop_assert_eq!(rendered.len(), chunks.len());
            let bodies: String = chunks.iter().map(|c| c.body.as_str()).collect();
            let cut = bodies.len() < text.len();
            prop_assert!(text.starts_with(&bodies), "bodies are a prefix of the text");
            prop_assert!(chunks.len() <= MAX_CHUNKS_PER_REPLY);
            prop_assert!(!cut || chunks.len() == MAX_CHUNKS_PER_REPLY, "text dropped only at the cap");
            for (i, (chunk, out)) in chunks.iter().zip(&rendered).enumerate() {
                prop_assert!(!chunk.body.is_empty());
                prop_assert_eq!(out, &chunk.render());
                prop_assert!(unit.measure(out) <= max, "chunk {:?} is {} > {}", out, unit.measure(out), max);
                prop_assert!(chunk.reopen.is_empty() || (chunk.reopen.starts_with("```") && chunk.reopen.ends_with('\n')));
                prop_assert!(["", "```", "\n```"].contains(&chunk.close.as_str()));
                let is_last = i + 1 == chunks.len();
                // Marker (12) + closing fence (4) + one char (2) fit in 18.
                if cut && is_last && chunk.reopen.is_empty() && max >= 18 {
                    prop_assert_eq!(chunk.truncation, TRUNCATION_MARKER);
                } else if !(cut && is_last) {
                    prop_assert_eq!(chunk.truncation, "");
                }
            }
            if !cut && (!code_blocks || !text.contains("```")) {
                prop_assert_eq!(rendered.concat(), text);
            }
        }

        #[test]
        fn tiny_limits_still_terminate_one_char_at_a_time(text in message(), max in 0usize..2, unit in unit()) {
            let chunks = split_message(&text, max, unit, true);
            let joined = chunks.concat();
            prop_assert!(text.starts_with(&joined));
            prop_assert!(joined.len() == text.len() || chunks.len() == MAX_CHUNKS_PER_REPLY);
            for c in &chunks {
                prop_assert!(unit.measure(c) <= max || c.chars().count() == 1, "chunk {:?}", c);
            }
        }
    }
}
