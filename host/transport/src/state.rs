//! What the layer above can observe about the link: its state, the items it
//! delivers, counters, and the outcomes of fire-and-forget calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hermes_protocol::decoder::DecodeError;
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::event::MessageEvent;
use hermes_protocol::forward::PassthroughForward;

/// The link's connection state, published on a `watch` channel.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    /// Dialling, upgrading, or waiting for the first descriptor.
    Connecting,
    /// Handshake complete; `descriptor` is this connection's default.
    Connected {
        /// The first descriptor of the connection.
        descriptor: Arc<Descriptor>,
    },
    /// Waiting before the next dial.
    BackingOff {
        /// 1-based rung of the ladder.
        attempt: u32,
        /// How long this wait lasts.
        delay: Duration,
    },
    /// The connector revoked this gateway's credentials (relay-contract
    /// §6.2): no more dials, every call fails fast. Final.
    Revoked,
    /// Closed by [`RelayHandle::close`](crate::RelayHandle::close), or every
    /// handle / the inbound receiver was dropped. Final.
    Closed,
}

impl LinkState {
    /// Whether the link can carry frames right now.
    pub fn is_connected(&self) -> bool {
        matches!(self, LinkState::Connected { .. })
    }

    /// Whether the link will never connect again.
    pub fn is_final(&self) -> bool {
        matches!(self, LinkState::Revoked | LinkState::Closed)
    }
}

/// One item delivered to the layer above, in wire order.
///
/// Items carrying a `buffer_id` came from the connector's durable buffer: the
/// layer above acks them with [`RelayHandle::ack`](crate::RelayHandle::ack)
/// once handed off (relay-contract §5.4).
// Items are moved once from the reader to their consumer; boxing the event
// would cost an allocation per item for no gain (as with the protocol's
// ConnectorFrame).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum InboundItem {
    /// An `inbound` message event.
    Event {
        /// The event.
        event: MessageEvent,
        /// Ack after durable hand-off when present.
        buffer_id: Option<String>,
    },
    /// An `interrupt_inbound`: cancel exactly that session's running turn.
    Interrupt {
        /// The session to cancel.
        session_key: String,
        /// The chat whose typing indicator to clear.
        chat_id: String,
    },
    /// A `passthrough_forward` to convert.
    Forward {
        /// The decoded request.
        forward: PassthroughForward,
        /// Ack after hand-off (or a deliberate drop) when present.
        buffer_id: Option<String>,
    },
    /// A buffered delivery that could not be decoded (for example a forward
    /// with invalid base64): it is dropped on purpose, so the layer above
    /// should still ack `buffer_id` — redelivering it would fail the same way.
    Dropped {
        /// The delivery to ack.
        buffer_id: String,
        /// Why it was dropped.
        error: DecodeError,
    },
}

/// What [`RelayHandle::ack`](crate::RelayHandle::ack) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// `inbound_ack` queued on the current connection.
    Sent,
    /// Already acked on this connection; nothing sent.
    Duplicate,
    /// No connection: the connector will redeliver, so nothing is lost.
    NotConnected,
}

/// What a fire-and-forget frame (`interrupt`) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued on the current connection.
    Sent,
    /// No connection; nothing written.
    NotConnected,
}

/// How a [`RelayHandle::drain`](crate::RelayHandle::drain) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReport {
    /// The connector acknowledged `going_idle`: it buffers for us now.
    Acknowledged {
        /// Time from sending `going_idle` to the ack.
        waited: Duration,
    },
    /// No `going_idle_ack` within the timeout.
    TimedOut,
    /// No connection to send `going_idle` on.
    NotConnected,
}

/// Counters of things the link skipped or survived (relay-contract §2: every
/// bad frame is counted).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) unknown_types: AtomicU64,
    pub(crate) late_results: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) dials: AtomicU64,
    pub(crate) handshakes: AtomicU64,
    pub(crate) frames_in: [AtomicU64; FRAMES_IN.len()],
    pub(crate) frames_out: [AtomicU64; FRAMES_OUT.len()],
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) disconnects: [AtomicU64; DISCONNECTS.len()],
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LinkCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkCounters {
            malformed_frames: get(&self.malformed_frames),
            unknown_types: get(&self.unknown_types),
            late_results: get(&self.late_results),
            timeouts: get(&self.timeouts),
            dials: get(&self.dials),
            handshakes: get(&self.handshakes),
            frames_in: std::array::from_fn(|i| (FRAMES_IN[i], get(&self.frames_in[i]))),
            frames_out: std::array::from_fn(|i| (FRAMES_OUT[i], get(&self.frames_out[i]))),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            disconnects: std::array::from_fn(|i| (DISCONNECTS[i], get(&self.disconnects[i]))),
        }
    }

    /// Counts a connection's end by its reason (one of [`DISCONNECTS`]).
    pub(crate) fn disconnect(&self, reason: &str) {
        if let Some(i) = DISCONNECTS.iter().position(|r| *r == reason) {
            Self::bump(&self.disconnects[i]);
        }
    }

    /// Counts a received frame of `frame_type`.
    pub(crate) fn frame_in(&self, frame_type: &str) {
        let i = FRAMES_IN
            .iter()
            .position(|t| *t == frame_type)
            .unwrap_or(FRAMES_IN.len() - 1);
        Self::bump(&self.frames_in[i]);
    }

    /// Counts a sent frame from its encoded text (`{"type":"…"` first).
    pub(crate) fn frame_out(&self, text: &str) {
        let frame_type = text
            .strip_prefix("{\"type\":\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("");
        let i = FRAMES_OUT
            .iter()
            .position(|t| *t == frame_type)
            .unwrap_or(FRAMES_OUT.len() - 1);
        Self::bump(&self.frames_out[i]);
        self.bytes_out
            .fetch_add(text.len() as u64, Ordering::Relaxed);
    }
}

/// A snapshot of the link's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames that failed to decode (invalid UTF-8/JSON, non-object, missing
    /// or mistyped fields, a bad descriptor after the handshake).
    pub malformed_frames: u64,
    /// Well-formed frames of a `type` this version does not know.
    pub unknown_types: u64,
    /// `outbound_result`s whose `requestId` had no waiter (late or unknown).
    pub late_results: u64,
    /// Outbound actions that timed out.
    pub timeouts: u64,
    /// Dials attempted.
    pub dials: u64,
    /// Handshakes completed (first descriptor received).
    pub handshakes: u64,
    /// Frames received, by `type` ([`FRAMES_IN`]; malformed ones are in
    /// `malformed_frames`).
    pub frames_in: [(&'static str, u64); FRAMES_IN.len()],
    /// Frames sent, by `type` ([`FRAMES_OUT`]).
    pub frames_out: [(&'static str, u64); FRAMES_OUT.len()],
    /// WebSocket payload bytes received.
    pub bytes_in: u64,
    /// WebSocket payload bytes sent.
    pub bytes_out: u64,
    /// Connections (or dials) that ended other than by shutdown, each
    /// followed by a re-dial or a revocation, by reason ([`DISCONNECTS`]).
    pub disconnects: [(&'static str, u64); DISCONNECTS.len()],
}

/// Why a connection ended: the dial failed; the connector closed with 4401;
/// it closed with another code; the connection was lost without a close
/// (reset, EOF, silence, a stalled write, a bad first descriptor, an
/// oversized line).
pub const DISCONNECTS: [&str; 4] = ["dial_failed", "unauthorized", "peer_closed", "lost"];

/// The frame types counted on receipt, `unknown` last.
pub const FRAMES_IN: [&str; 7] = [
    "descriptor",
    "inbound",
    "outbound_result",
    "interrupt_inbound",
    "passthrough_forward",
    "going_idle_ack",
    "unknown",
];

/// The frame types counted on sending, `other` last.
pub const FRAMES_OUT: [&str; 6] = [
    "hello",
    "outbound",
    "interrupt",
    "inbound_ack",
    "going_idle",
    "other",
];
