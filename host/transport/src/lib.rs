//! The gateway's one link to a relay connector (relay-contract §4, §6, §7).
//!
//! [`RelayLink::spawn`] starts a supervisor task that dials the connector
//! over an authenticated WebSocket (a fresh `Authorization: Bearer` token per
//! dial), announces the configured identities with `hello`, and waits for the
//! first `descriptor`. Each connection then runs exactly one reader task and
//! one writer task:
//!
//! - the **reader** decodes frames with the protocol's `FrameDecoder`, resolves
//!   `outbound_result`s, and hands events, interrupts and forwards to the
//!   layer above through a channel bounded by count and by bytes. When
//!   either bound is reached the reader stops reading the socket:
//!   backpressure, never drops. A bad frame is logged, counted and skipped;
//!   the reader never dies of input.
//! - the **writer** owns the socket's sink: queued frames (one per WebSocket
//!   message, from a queue bounded by count and by bytes), keepalive pings,
//!   and the close frame.
//!
//! A plaintext `ws://` / `http://` URL is refused unless its host is
//! loopback or [`DevAllowances::plaintext`] is set.
//!
//! Outbound actions are correlated by `requestId` in a pending map the link
//! owns; every entry is removed whatever happens, and every caller gets a
//! result (relay-contract §4) — never a hang.
//!
//! When a connection ends the supervisor settles every pending request with
//! the connection-lost result and re-dials on a capped, jittered exponential
//! ladder, applying the 4401 rules of §6.2 (cold-start retry, `expired`
//! re-dial at once, a second post-handshake 4401 latches
//! [`LinkState::Revoked`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), hermes_transport::ConfigError> {
//! use hermes_transport::{RelayConfig, RelayLink, InboundItem};
//!
//! let config = RelayConfig::new("https://relay.example", Some("gw-1"), Some("secret"), false)?;
//! let (relay, mut inbound) = RelayLink::spawn(config);
//! while let Some(item) = inbound.recv().await {
//!     if let InboundItem::Event { event, buffer_id } = item {
//!         let chat = event.source.chat_id.clone();
//!         relay.send(chat, "hello", None, Default::default()).await;
//!         if let Some(id) = buffer_id {
//!             relay.ack(id).await;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod config;
mod connection;
pub mod connector_api;
mod handle;
mod inbound;
mod shared;
mod state;
mod supervisor;
mod tls;

pub use config::{
    BackoffConfig, ConfigError, Credentials, DEFAULT_INBOUND_BYTE_BUDGET, DEFAULT_MAX_PARTIAL_LINE,
    DEFAULT_OUTBOUND_BYTE_BUDGET, DevAllowances, Identity, KeepaliveConfig, RelayConfig,
};
pub use handle::{RelayHandle, RelayLink, Target};
pub use state::{
    AckOutcome, DISCONNECTS, DrainReport, FRAMES_IN, FRAMES_OUT, InboundItem, LinkCounters,
    LinkState, SendOutcome,
};
