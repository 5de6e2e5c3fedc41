//! The seams between the session layer and the crates around it.
//!
//! The session logic talks to the relay through [`Egress`] and to the plugin
//! host through [`Converter`]. The real implementations live in
//! [`crate::adapters`] (for `hermes_transport::RelayHandle` and
//! `hermes_plugin_host::PluginHost`); tests use in-memory fakes, so queueing,
//! interrupts and reply routing are tested without sockets or wasm.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hermes_protocol::action::{Action, ActionResult};
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::forward::PassthroughForward;

use crate::incoming::Incoming;
use crate::metrics::ForwardDrop;

/// The relay side: where replies, interrupts and acks go.
pub trait Egress: Send + Sync + 'static {
    /// Sends one request/response action and waits for its result. Never
    /// hangs and never fails outside the result (relay-contract §4).
    fn request(&self, action: Action) -> impl Future<Output = ActionResult> + Send;

    /// Completes once the link is connected again (at once when it is), or
    /// when it never will be (closed, revoked). A reply that found no
    /// connection waits on this and is sent again: `not_connected` means
    /// nothing was written, so a retry cannot duplicate it.
    fn until_connected(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Fire-and-forget `interrupt` egress for `session_key` (a local `/stop`).
    /// Completes once the frame is queued (or there is no connection).
    fn interrupt(&self, session_key: &str, reason: Option<&str>)
    -> impl Future<Output = ()> + Send;

    /// `inbound_ack` for a buffered delivery that was queued or deliberately
    /// dropped. Completes once the frame is queued (or there is no connection).
    fn ack(&self, buffer_id: &str) -> impl Future<Output = ()> + Send;

    /// The descriptor that governs replies on `platform`: that platform's
    /// descriptor when the connector sent one, else the connection default
    /// (or the placeholder before any handshake).
    fn descriptor(&self, platform: &str) -> Arc<Descriptor>;
}

/// The link's lifecycle beyond single actions, used by [`crate::Gateway`].
pub trait Relay: Egress {
    /// Sends `going_idle` and waits up to `timeout` for `going_idle_ack`
    /// (relay-contract §7.3); inbound keeps flowing meanwhile.
    fn going_idle(&self, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// Settles pending requests and closes the link with a normal close code.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Whether the connector revoked this gateway's access (relay-contract §6.2).
    fn is_revoked(&self) -> bool;
}

/// What a converter made of one forward.
#[derive(Debug)]
pub enum Converted {
    /// One or more events, each with its reply route and metadata.
    Events(Vec<Incoming>),
    /// No event: the forward is dropped on purpose and its `bufferId` acked,
    /// except for [`ForwardDrop::Deferred`], which is left unacked so the
    /// connector redelivers it.
    Dropped {
        /// Which counter the drop goes to.
        reason: ForwardDrop,
        /// The plugin and its reason or error, for the log.
        detail: String,
    },
}

/// The converter side: turns a passthrough forward into events.
pub trait Converter: Send + Sync + 'static {
    /// Routes and converts one forward. Never panics; every failure is a
    /// [`Converted::Dropped`].
    fn convert(&self, forward: &PassthroughForward) -> impl Future<Output = Converted> + Send;

    /// The lane a forward is converted in (see [`crate::lanes`]): forwards
    /// of one lane are handed off in arrival order, lanes are independent.
    /// Computed without running any converter; by default the platform.
    fn lane(&self, forward: &PassthroughForward) -> Arc<str> {
        Arc::from(forward.platform.as_str())
    }
}

impl<T: Converter> Converter for Arc<T> {
    fn convert(&self, forward: &PassthroughForward) -> impl Future<Output = Converted> + Send {
        T::convert(self, forward)
    }

    fn lane(&self, forward: &PassthroughForward) -> Arc<str> {
        T::lane(self, forward)
    }
}
