//! The relay wire contract, sans I/O.
//!
//! `hermes-protocol` is everything the gateway and a relay connector must
//! agree on, as plain types and pure functions: no sockets, no async, no
//! clocks, no randomness. The transport feeds it bytes and timestamps; it
//! hands back frames, keys, chunks and verdicts. That makes every rule of
//! `relay-contract.md` testable with vectors and fuzzable.
//!
//! # A tour
//!
//! **Frames.** [`GatewayFrame`] is what the gateway sends, [`ConnectorFrame`]
//! what the connector sends. Both encode to one compact JSON line and both
//! decode (the stub connector reads the gateway's frames):
//!
//! ```
//! use hermes_protocol::{GatewayFrame, WireFrame};
//!
//! let ack = GatewayFrame::InboundAck { buffer_id: "b1".into() };
//! assert_eq!(ack.encode(), "{\"type\":\"inbound_ack\",\"bufferId\":\"b1\"}\n");
//! assert_eq!(GatewayFrame::decode_line(ack.encode().trim_end().as_bytes()), Ok(ack));
//! ```
//!
//! **Streaming.** WebSocket messages do not align with frames. Push each
//! message into a [`FrameDecoder`] and pull complete frames out; a bad line is
//! one typed [`DecodeError`] and never hides the lines after it; a frame of an
//! unknown `type` decodes to an `Unknown` variant you count and skip:
//!
//! ```
//! use hermes_protocol::{ConnectorFrame, DecodeError, FrameDecoder};
//!
//! let mut decoder = FrameDecoder::<ConnectorFrame>::new();
//! decoder.push(b"{\"type\":\"going_idle_ack\"}\nnot json\n{\"type\":\"shiny\"}\n{\"ty")?;
//! assert_eq!(decoder.next_frame(), Some(Ok(ConnectorFrame::GoingIdleAck)));
//! assert!(matches!(decoder.next_frame(), Some(Err(DecodeError::InvalidJson { .. }))));
//! assert_eq!(decoder.next_frame(), Some(Ok(ConnectorFrame::Unknown { frame_type: "shiny".into() })));
//! assert_eq!(decoder.next_frame(), None); // `{"ty` waits for the rest of its line
//! # Ok::<(), DecodeError>(())
//! ```
//!
//! If a bad `inbound` or `passthrough_forward` carried a `bufferId`,
//! [`DecodeError::buffer_id`] returns it so the deliberate drop can be acked.
//!
//! **Payloads.** A [`Descriptor`] says what the connector's platform can do
//! (length limit and its [`LenUnit`], edit support, markdown dialect, ops);
//! a [`MessageEvent`] with its [`SessionSource`] is an inbound message; a
//! [`PassthroughForward`] is a webhook request with its exact body bytes; an
//! [`Action`] travels in an `outbound` frame under a [`RequestId`] and is
//! answered by an [`ActionResult`].
//!
//! **Sessions and replies.** [`session_key`] maps a source to its
//! conversation, byte-identical to the Python gateway. [`split_message`]
//! cuts a reply to the descriptor's limit, keeping code fences intact:
//!
//! ```
//! use hermes_protocol::{LenUnit, split_message};
//!
//! let chunks = split_message("first paragraph\n\nsecond one", 20, LenUnit::Chars, false);
//! assert_eq!(chunks, ["first paragraph\n\n", "second one"]);
//! ```
//!
//! **Link auth.** [`auth::make_token`] mints the upgrade bearer,
//! [`auth::verify_token`] checks one against a rotation list (constant-time),
//! [`auth::sign_delivery`]/[`auth::verify_delivery`] handle legacy HTTP
//! delivery signatures. [`url::dial_url`] and [`url::http_endpoint`] derive
//! every connector URL from the one configured value.
//!
//! Errors are typed per area ([`DecodeError`], [`DescriptorError`],
//! [`ForwardError`], [`AuthError`]); nothing here panics on peer input.

pub mod action;
pub mod auth;
pub mod decoder;
pub mod descriptor;
pub mod enroll;
pub mod event;
pub mod forward;
pub mod frame;
mod json;
pub mod session;
pub mod split;
pub mod url;

pub use action::{Action, ActionResult, ChatInfo, Metadata, RequestId};
pub use auth::{
    AuthError, VerifiedToken, make_token, make_token_with_exp, sign, sign_delivery,
    verify_delivery, verify_token,
};
pub use decoder::{DecodeError, DecodeLimits, FrameDecoder};
pub use descriptor::{Descriptor, DescriptorError};
pub use event::{MessageEvent, MessageType, PromptResponse, ReplyRoute, SessionSource};
pub use forward::{DEFAULT_MAX_BODY_BYTES, ForwardError, PassthroughForward};
pub use frame::{CommandSpec, ConnectorFrame, GatewayFrame, WireFrame};
pub use session::{SessionKey, SessionKeySettings, session_key};
pub use split::{LenUnit, SplitChunk, split_message, split_message_chunks};
pub use url::{Endpoint, dial_url, http_endpoint, is_loopback_host, is_plaintext};
