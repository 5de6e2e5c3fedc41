//! Streaming line decoder (relay-contract §2).
//!
//! WebSocket messages are appended with [`FrameDecoder::push`]; complete
//! lines come out of [`FrameDecoder::next_frame`], one frame or one typed
//! error per line. A bad line never hides the lines after it. The trailing
//! partial line is bounded so a peer that never sends `\n` cannot exhaust
//! memory.

use std::marker::PhantomData;

use crate::descriptor::DescriptorError;
use crate::forward::DEFAULT_MAX_BODY_BYTES;
use crate::frame::WireFrame;

/// Default bound of the trailing partial line: 16 MiB.
pub const DEFAULT_MAX_PARTIAL: usize = 16 * 1024 * 1024;

/// Bounds applied to the content of a line while it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest `passthrough_forward` body, decoded; a larger one is
    /// [`DecodeError::PayloadTooLarge`], refused before decoding (default
    /// [`DEFAULT_MAX_BODY_BYTES`], 1 MiB).
    pub max_body_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Once this many consumed bytes sit at the front of the buffer (and they
/// are at least half of it), they are dropped. Compacting lazily keeps
/// `push` amortised O(chunk) instead of shifting the buffer per line.
const COMPACT_THRESHOLD: usize = 64 * 1024;

/// Why a line (or a push) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The line is not UTF-8.
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// The line is not JSON.
    #[error("frame is not valid JSON (line {line}, column {column})")]
    InvalidJson {
        /// Line of the syntax error inside the frame (1-based).
        line: usize,
        /// Column of the syntax error (1-based).
        column: usize,
    },
    /// The line is JSON but not an object.
    #[error("frame is not a JSON object")]
    NotAnObject,
    /// The object has no string `type`.
    #[error("frame has no string `type`")]
    MissingType,
    /// A known frame type with a missing or mistyped field.
    #[error("`{frame_type}` frame: field `{field}` is missing or has the wrong type")]
    BadField {
        /// The frame's `type`.
        frame_type: String,
        /// Dotted path of the field, e.g. `event.source.chat_id`.
        field: String,
        /// The frame's `bufferId`, when it had a readable one.
        buffer_id: Option<String>,
    },
    /// A `descriptor` frame whose descriptor breaks §3.3.
    #[error("descriptor frame: {0}")]
    BadDescriptor(DescriptorError),
    /// A `passthrough_forward` whose `bodyB64` is not standard base64.
    #[error("passthrough_forward: invalid_body_encoding")]
    InvalidBodyEncoding {
        /// The frame's `bufferId`, when it had one (ack the deliberate drop).
        buffer_id: Option<String>,
    },
    /// A `passthrough_forward` whose body would decode to more than
    /// [`DecodeLimits::max_body_bytes`]; refused without decoding it.
    #[error("passthrough_forward: payload_too_large (body of {size} bytes exceeds {limit})")]
    PayloadTooLarge {
        /// The frame's `bufferId`, when it had one (ack the deliberate drop:
        /// a redelivery would be refused the same way).
        buffer_id: Option<String>,
        /// Decoded size the encoded length implies.
        size: usize,
        /// The bound in bytes.
        limit: usize,
    },
    /// The trailing partial line grew past the bound; it was discarded.
    #[error("partial line exceeds {limit} bytes")]
    PartialLineTooLong {
        /// The configured bound in bytes.
        limit: usize,
    },
}

impl DecodeError {
    /// The `bufferId` of the bad frame, when it had a readable one, so a
    /// deliberate drop can still be acked (§5.4).
    pub fn buffer_id(&self) -> Option<&str> {
        match self {
            DecodeError::BadField { buffer_id, .. }
            | DecodeError::InvalidBodyEncoding { buffer_id }
            | DecodeError::PayloadTooLarge { buffer_id, .. } => buffer_id.as_deref(),
            _ => None,
        }
    }

    /// The frame `type` of the bad frame, when it was readable.
    pub fn frame_type(&self) -> Option<&str> {
        match self {
            DecodeError::BadField { frame_type, .. } => Some(frame_type),
            DecodeError::BadDescriptor(_) => Some("descriptor"),
            DecodeError::InvalidBodyEncoding { .. } | DecodeError::PayloadTooLarge { .. } => {
                Some("passthrough_forward")
            }
            _ => None,
        }
    }

    /// Short stable name of the error kind, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::InvalidJson { .. } => "invalid_json",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::MissingType => "missing_type",
            DecodeError::BadField { .. } => "bad_field",
            DecodeError::BadDescriptor(_) => "bad_descriptor",
            DecodeError::InvalidBodyEncoding { .. } => "invalid_body_encoding",
            DecodeError::PayloadTooLarge { .. } => "payload_too_large",
            DecodeError::PartialLineTooLong { .. } => "partial_line_too_long",
        }
    }
}

/// Incremental newline-delimited JSON decoder for frames of type `F`
/// ([`crate::frame::ConnectorFrame`] on the gateway,
/// [`crate::frame::GatewayFrame`] on a connector).
#[derive(Debug)]
pub struct FrameDecoder<F> {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte.
    start: usize,
    /// Bytes in `buf[start..scan]` are known to contain no `\n`.
    scan: usize,
    /// Length of the trailing partial line (bytes after the last `\n`).
    partial: usize,
    max_partial: usize,
    limits: DecodeLimits,
    _frame: PhantomData<fn() -> F>,
}

impl<F: WireFrame> Default for FrameDecoder<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: WireFrame> FrameDecoder<F> {
    /// A decoder with the default 16 MiB partial-line bound.
    pub fn new() -> Self {
        Self::with_max_partial(DEFAULT_MAX_PARTIAL)
    }

    /// A decoder whose trailing partial line may hold at most `bytes` bytes.
    pub fn with_max_partial(bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            partial: 0,
            max_partial: bytes,
            limits: DecodeLimits::default(),
            _frame: PhantomData,
        }
    }

    /// The same decoder, applying `limits` to every line.
    #[must_use]
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits applied to every line.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// The configured partial-line bound.
    pub fn max_partial(&self) -> usize {
        self.max_partial
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Append one WebSocket message.
    ///
    /// If the trailing partial line would exceed the bound, that partial line
    /// is discarded and [`DecodeError::PartialLineTooLong`] returned;
    /// complete lines received before it stay available to `next_frame`.
    /// The peer is misbehaving: the caller should close the connection.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        self.compact();
        let tail = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(nl) => chunk.len() - nl - 1,
            None => self.partial.saturating_add(chunk.len()),
        };
        if tail > self.max_partial {
            // Keep whatever complete lines exist, drop the oversized tail.
            let complete_in_chunk = chunk.len().saturating_sub(tail);
            if let Some(complete) = chunk.get(..complete_in_chunk) {
                if complete.is_empty() {
                    self.buf.truncate(self.buf.len() - self.partial);
                } else {
                    self.buf.extend_from_slice(complete);
                }
            }
            self.scan = self.scan.min(self.buf.len());
            self.partial = 0;
            return Err(DecodeError::PartialLineTooLong {
                limit: self.max_partial,
            });
        }
        self.buf.extend_from_slice(chunk);
        self.partial = tail;
        Ok(())
    }

    /// The next complete line's frame or typed error; `None` when no complete
    /// line is buffered. Blank lines are skipped.
    pub fn next_frame(&mut self) -> Option<Result<F, DecodeError>> {
        self.next_frame_with_len().map(|(frame, _)| frame)
    }

    /// Like [`next_frame`](Self::next_frame), with the length in bytes of the
    /// line the frame came from: a bound on what the frame holds, for callers
    /// that budget memory by bytes.
    pub fn next_frame_with_len(&mut self) -> Option<(Result<F, DecodeError>, usize)> {
        loop {
            let unscanned = self.buf.get(self.scan..)?;
            let Some(offset) = unscanned.iter().position(|&b| b == b'\n') else {
                self.scan = self.buf.len();
                return None;
            };
            let end = self.scan + offset;
            let line_start = self.start;
            self.start = end + 1;
            self.scan = self.start;
            let line = self.buf.get(line_start..end)?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some((F::decode_line_with(line, &self.limits), line.len()));
        }
    }

    /// Drop consumed bytes from the front of the buffer when worthwhile.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.scan = 0;
            self.start = 0;
        } else if self.start >= COMPACT_THRESHOLD && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ConnectorFrame, GatewayFrame};

    fn drain(d: &mut FrameDecoder<ConnectorFrame>) -> Vec<Result<ConnectorFrame, DecodeError>> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn frame_spanning_messages_appears_only_with_its_newline() -> Result<(), DecodeError> {
        let mut d = FrameDecoder::<ConnectorFrame>::new();
        d.push(b"{\"type\":\"going_")?;
        assert_eq!(d.next_frame(), None);
        d.push(b"idle_ack\"}")?;
        assert_eq!(d.next_frame(), None);
        d.push(b"\n")?;
        assert_eq!(d.next_frame(), Some(Ok(ConnectorFrame::GoingIdleAck)));
        assert_eq!(d.next_frame(), None);
        Ok(())
    }

    #[test]
    fn several_frames_blank_lines_and_bad_lines_in_one_message() -> Result<(), DecodeError> {
        let mut d = FrameDecoder::<ConnectorFrame>::new();
        d.push(b"\n  \r\n{\"type\":\"going_idle_ack\"}\nnot json\n[1]\n{\"type\":\"going_idle_ack\"}\n")?;
        let out = drain(&mut d);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out.first(), Some(&Ok(ConnectorFrame::GoingIdleAck)));
        assert!(matches!(
            out.get(1),
            Some(Err(DecodeError::InvalidJson { .. }))
        ));
        assert_eq!(out.get(2), Some(&Err(DecodeError::NotAnObject)));
        assert_eq!(out.get(3), Some(&Ok(ConnectorFrame::GoingIdleAck)));
        Ok(())
    }

    #[test]
    fn oversized_partial_line_is_refused_and_reset() {
        let mut d = FrameDecoder::<GatewayFrame>::with_max_partial(16);
        assert_eq!(d.push(b"0123456789"), Ok(()));
        assert_eq!(
            d.push(b"0123456789"),
            Err(DecodeError::PartialLineTooLong { limit: 16 })
        );
        assert_eq!(d.buffered_len(), 0);
        // The decoder is usable again afterwards.
        assert_eq!(d.push(b"{\"type\":\"going_idle\"}\n"), Ok(()));
        assert_eq!(d.next_frame(), Some(Ok(GatewayFrame::GoingIdle)));
    }

    #[test]
    fn complete_lines_before_an_oversized_tail_survive() {
        let mut d = FrameDecoder::<GatewayFrame>::with_max_partial(8);
        let r = d.push(b"{\"type\":\"going_idle\"}\nAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(r, Err(DecodeError::PartialLineTooLong { limit: 8 }));
        assert_eq!(d.next_frame(), Some(Ok(GatewayFrame::GoingIdle)));
        assert_eq!(d.next_frame(), None);
    }

    #[test]
    fn a_long_complete_line_is_fine_only_its_unfinished_tail_is_bounded() {
        let mut d = FrameDecoder::<GatewayFrame>::with_max_partial(4);
        // 21-byte line delivered whole: the partial bound does not apply.
        assert_eq!(d.push(b"{\"type\":\"going_idle\"}\n"), Ok(()));
        assert_eq!(d.next_frame(), Some(Ok(GatewayFrame::GoingIdle)));
    }

    #[test]
    fn limits_apply_to_every_line_and_lengths_are_reported() -> Result<(), DecodeError> {
        let mut d =
            FrameDecoder::<ConnectorFrame>::new().with_limits(DecodeLimits { max_body_bytes: 2 });
        let big = br#"{"type":"passthrough_forward","forward":{"platform":"x","bodyB64":"AAAA"}}"#;
        let small =
            br#"{"type":"passthrough_forward","forward":{"platform":"x","bodyB64":"AA=="}}"#;
        d.push(&[&big[..], b"\n", &small[..], b"\n"].concat())?;
        assert!(matches!(
            d.next_frame_with_len(),
            Some((Err(DecodeError::PayloadTooLarge { size: 3, limit: 2, .. }), n)) if n == big.len()
        ));
        assert!(matches!(
            d.next_frame_with_len(),
            Some((Ok(ConnectorFrame::PassthroughForward { .. }), n)) if n == small.len()
        ));
        Ok(())
    }

    #[test]
    fn many_small_pushes_compact_the_buffer() -> Result<(), DecodeError> {
        let mut d = FrameDecoder::<ConnectorFrame>::new();
        let line = b"{\"type\":\"going_idle_ack\"}\n";
        for _ in 0..20_000 {
            d.push(line)?;
            assert_eq!(d.next_frame(), Some(Ok(ConnectorFrame::GoingIdleAck)));
        }
        assert!(
            d.buf.len() <= COMPACT_THRESHOLD * 2 + line.len(),
            "buffer grew to {}",
            d.buf.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::action::{Action, ActionResult, RequestId};
    use crate::descriptor::Descriptor;
    use crate::event::{MessageEvent, MessageType, SessionSource};
    use crate::forward::PassthroughForward;
    use crate::frame::{CommandSpec, ConnectorFrame, GatewayFrame};
    use crate::split::LenUnit;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// Any text, including newlines, quotes and non-ASCII, to exercise
    /// escaping: an encoded frame must stay one line.
    fn text() -> impl Strategy<Value = String> {
        "(?s).{0,12}"
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn metadata() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map("[a-z_]{1,8}", text(), 0..3)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    }

    fn source() -> impl Strategy<Value = SessionSource> {
        (
            (
                text(),
                text(),
                text(),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
            ),
            (
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
                any::<bool>(),
                any::<bool>(),
            ),
        )
            .prop_map(|(a, b)| SessionSource {
                platform: a.0,
                chat_id: a.1,
                chat_type: a.2,
                chat_name: a.3,
                user_id: a.4,
                user_name: a.5,
                thread_id: a.6,
                chat_topic: a.7,
                user_id_alt: b.0,
                chat_id_alt: b.1,
                scope_id: b.2,
                parent_chat_id: b.3,
                message_id: b.4,
                profile: b.5,
                is_bot: b.6,
                message_is_edit: b.7,
            })
    }

    fn event() -> impl Strategy<Value = MessageEvent> {
        (
            text(),
            proptest::sample::select(MessageType::ALL.to_vec()),
            source(),
            opt_text(),
            opt_text(),
            proptest::collection::vec(text(), 0..3),
            proptest::option::of((text(), text(), opt_text(), opt_text())),
        )
            .prop_map(
                |(
                    text,
                    message_type,
                    source,
                    message_id,
                    reply_to_message_id,
                    media_urls,
                    prompt,
                )| {
                    MessageEvent {
                        text,
                        message_type,
                        source,
                        message_id,
                        reply_to_message_id,
                        media_urls,
                        prompt_response: prompt.map(
                            |(prompt_id, option_id, label, prompt_message_id)| {
                                crate::event::PromptResponse {
                                    prompt_id,
                                    option_id,
                                    label,
                                    prompt_message_id,
                                }
                            },
                        ),
                    }
                },
            )
    }

    fn forward() -> impl Strategy<Value = PassthroughForward> {
        (
            text(),
            text(),
            text(),
            text(),
            proptest::collection::vec((text(), text()), 0..4),
            proptest::collection::vec(any::<u8>(), 0..200),
            opt_text(),
        )
            .prop_map(|(platform, bot_id, method, path, headers, body, profile)| {
                PassthroughForward {
                    platform,
                    bot_id,
                    method,
                    path,
                    headers,
                    body,
                    profile,
                }
            })
    }

    fn descriptor() -> impl Strategy<Value = Descriptor> {
        (
            text(),
            text(),
            1usize..100_000,
            any::<(bool, bool, bool)>(),
            text(),
            any::<bool>(),
            proptest::collection::vec("[a-z_]{1,12}", 1..5),
        )
            .prop_map(|(platform, label, max, flags, dialect, utf16, ops)| {
                let mut d = Descriptor::placeholder(&platform);
                d.label = label;
                d.max_message_length = max;
                (
                    d.supports_draft_streaming,
                    d.supports_edit,
                    d.supports_threads,
                ) = flags;
                d.markdown_dialect = dialect;
                d.len_unit = if utf16 {
                    LenUnit::Utf16
                } else {
                    LenUnit::Chars
                };
                d.supported_ops = ops;
                d
            })
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            (text(), text(), opt_text(), metadata()).prop_map(
                |(chat_id, content, reply_to, metadata)| Action::Send {
                    chat_id,
                    content,
                    reply_to,
                    metadata
                }
            ),
            (text(), text(), text(), metadata()).prop_map(
                |(chat_id, message_id, content, metadata)| Action::Edit {
                    chat_id,
                    message_id,
                    content,
                    metadata
                }
            ),
            (text(), opt_text(), metadata()).prop_map(|(chat_id, content, metadata)| {
                Action::Typing {
                    chat_id,
                    content,
                    metadata,
                }
            }),
            (text(), text(), text(), metadata()).prop_map(
                |(session_key, kind, content, metadata)| Action::FollowUp {
                    session_key,
                    kind,
                    content,
                    metadata
                }
            ),
            text().prop_map(|chat_id| Action::GetChatInfo { chat_id }),
        ]
    }

    fn result() -> impl Strategy<Value = ActionResult> {
        (
            any::<bool>(),
            opt_text(),
            opt_text(),
            any::<bool>(),
            metadata(),
        )
            .prop_map(
                |(success, message_id, error, ambiguous, extra)| ActionResult {
                    success,
                    message_id,
                    error,
                    ambiguous,
                    extra,
                },
            )
    }

    fn connector_frame() -> impl Strategy<Value = ConnectorFrame> {
        prop_oneof![
            descriptor().prop_map(ConnectorFrame::Descriptor),
            (event(), opt_text())
                .prop_map(|(event, buffer_id)| ConnectorFrame::Inbound { event, buffer_id }),
            (text(), result()).prop_map(|(id, result)| ConnectorFrame::OutboundResult {
                request_id: RequestId::from_wire(id),
                result
            }),
            (text(), text()).prop_map(|(session_key, chat_id)| ConnectorFrame::InterruptInbound {
                session_key,
                chat_id
            }),
            (forward(), opt_text()).prop_map(|(forward, buffer_id)| {
                ConnectorFrame::PassthroughForward { forward, buffer_id }
            }),
            Just(ConnectorFrame::GoingIdleAck),
            "x_[a-z]{1,8}".prop_map(|frame_type| ConnectorFrame::Unknown { frame_type }),
        ]
    }

    fn gateway_frame() -> impl Strategy<Value = GatewayFrame> {
        let manifest = proptest::option::of(proptest::collection::vec(
            (text(), text()).prop_map(|(name, description)| CommandSpec {
                name,
                description,
                options: None,
            }),
            0..3,
        ));
        prop_oneof![
            (text(), text(), manifest).prop_map(|(platform, bot_id, command_manifest)| {
                GatewayFrame::Hello {
                    platform,
                    bot_id,
                    command_manifest,
                }
            }),
            (any::<[u8; 16]>(), action(), opt_text(), opt_text()).prop_map(
                |(bytes, action, platform, bot_id)| {
                    GatewayFrame::Outbound {
                        request_id: RequestId::from_random_bytes(bytes),
                        action,
                        platform,
                        bot_id,
                    }
                }
            ),
            (text(), opt_text()).prop_map(|(session_key, reason)| GatewayFrame::Interrupt {
                session_key,
                reason
            }),
            text().prop_map(|buffer_id| GatewayFrame::InboundAck { buffer_id }),
            Just(GatewayFrame::GoingIdle),
            "x_[a-z]{1,8}".prop_map(|frame_type| GatewayFrame::Unknown { frame_type }),
        ]
    }

    /// Cut `bytes` at the given (unsorted, possibly out-of-range) points.
    fn cut(bytes: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
        points.iter_mut().for_each(|p| *p %= bytes.len() + 1);
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            chunks.extend(bytes.get(prev..p));
            prev = p;
        }
        chunks
    }

    fn round_trip<F: WireFrame + PartialEq + std::fmt::Debug>(
        frames: &[F],
        blank_lines: &[bool],
        points: Vec<usize>,
    ) -> Result<(), TestCaseError> {
        let mut wire = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let line = f.encode();
            prop_assert_eq!(
                line.matches('\n').count(),
                1,
                "frame is not one line: {:?}",
                line
            );
            wire.extend_from_slice(line.as_bytes());
            if blank_lines.get(i).copied().unwrap_or(false) {
                wire.extend_from_slice(b"  \n");
            }
        }
        let mut decoder = FrameDecoder::<F>::new();
        let mut out = Vec::new();
        for chunk in cut(&wire, points) {
            prop_assert_eq!(decoder.push(chunk), Ok(()));
            while let Some(frame) = decoder.next_frame() {
                out.push(frame.map_err(|e| TestCaseError::fail(format!("decode error {e}")))?);
            }
        }
        prop_assert_eq!(decoder.buffered_len(), 0);
        prop_assert_eq!(out.as_slice(), frames);
        Ok(())
    }

    proptest! {
        #[test]
        fn connector_frames_survive_arbitrary_cuts(
            frames in proptest::collection::vec(connector_frame(), 0..6),
            blank_lines in proptest::collection::vec(any::<bool>(), 6),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            round_trip(&frames, &blank_lines, points)?;
        }

        #[test]
        fn gateway_frames_survive_arbitrary_cuts(
            frames in proptest::collection::vec(gateway_frame(), 0..6),
            blank_lines in proptest::collection::vec(any::<bool>(), 6),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            round_trip(&frames, &blank_lines, points)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            points in proptest::collection::vec(any::<usize>(), 0..8),
            max_partial in 1usize..256,
        ) {
            let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
            let mut connector = FrameDecoder::<ConnectorFrame>::with_max_partial(max_partial);
            let mut gateway = FrameDecoder::<GatewayFrame>::with_max_partial(max_partial);
            let mut lines = 0;
            for chunk in cut(&bytes, points) {
                let _ = connector.push(chunk);
                let _ = gateway.push(chunk);
                lines += std::iter::from_fn(|| connector.next_frame()).count();
                std::iter::from_fn(|| gateway.next_frame()).for_each(drop);
                prop_assert!(connector.buffered_len() <= max_partial, "partial line exceeds its bound");
            }
            prop_assert!(lines <= newlines);
        }

        #[test]
        fn frame_shaped_garbage_never_panics(
            frame_type in proptest::sample::select(vec![
                "hello", "outbound", "interrupt", "inbound_ack", "going_idle", "descriptor", "inbound",
                "outbound_result", "interrupt_inbound", "passthrough_forward", "going_idle_ack",
            ]),
            fields in proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "event", "forward", "descriptor", "result", "action", "requestId", "bufferId",
                    "session_key", "chat_id", "reason", "platform", "botId", "command_manifest",
                ]),
                json_value(),
                0..5,
            ),
        ) {
            let mut obj: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            obj.insert("type".into(), Value::String(frame_type.to_owned()));
            let line = Value::Object(obj).to_string();
            let _ = <ConnectorFrame as WireFrame>::decode_line(line.as_bytes());
            let _ = <GatewayFrame as WireFrame>::decode_line(line.as_bytes());
        }
    }

    /// Arbitrary JSON, biased towards objects with the keys frames use.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::String),
            Just(Value::String("e30=".into())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::sample::select(vec![
                        "text",
                        "source",
                        "platform",
                        "chat_id",
                        "headers",
                        "bodyB64",
                        "op",
                        "metadata",
                        "contract_version",
                        "max_message_length",
                        "supported_ops",
                        "len_unit",
                        "label",
                        "media_urls",
                        "prompt_response",
                        "scope_id",
                        "is_bot",
                        "success",
                        "message_id",
                    ]),
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }
}
