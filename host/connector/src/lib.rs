//! A relay connector on loopback that behaves like the production one, for
//! the end-to-end tests and the `dev` command.
//!
//! [`StubConnector::start`] binds `127.0.0.1:0` and serves HTTP: only
//! `/relay` upgrades to a WebSocket (anything else is HTTP 400). The upgrade's
//! bearer token is verified with the protocol crate's verifier against a
//! rotation list; a missing or bad token gets the upgrade and then a close
//! with 4401 and a reason (`missing token`, `expired`, `invalid token`),
//! exactly as production does. After the gateway's first `hello` the
//! configured descriptors are sent; `outbound` actions are answered from a
//! script (success, failure, delay, never); `going_idle` is acknowledged.
//!
//! Tests drive the other direction with [`StubConnector::push_frame`] (or raw
//! text/bytes), [`StubConnector::close`] and
//! [`StubConnector::drop_connection`], and observe everything the stub saw
//! through an [`EventCursor`], which awaits events instead of sleeping.

pub mod ingress;
mod record;
mod stub;

pub use record::{EventCursor, StubEvent, TokenVerdict};
pub use stub::{
    Answer, CLOSE_UNAUTHORIZED, GoingIdle, StubAuth, StubConfig, StubConnector, StubError,
    descriptor_value,
};
