//! The gateway core: sessions, turns, interrupts, reply routing and agents.
//!
//! Items arrive from the relay link (`hermes_transport`) as inbound events,
//! interrupts and passthrough forwards. Forwards are converted into events by
//! the plugin host. Every event is keyed by its session key and queued behind
//! the session's running turn; an [`Agent`] answers the turn and the answer
//! goes back the way the event asks ([`ReplyRoute`]): a `send` to the chat or a
//! `follow_up` on a capability the connector holds, split to the platform's
//! length limit, with the chat's scope re-attached so the connector can find
//! the tenant.
//!
//! # A tour
//!
//! - [`Gateway::run`] is the loop a binary starts: it owns the
//!   [`Sessions`], hands forwards to a [`Converter`], and drains on shutdown.
//! - [`Sessions`] is the session layer on its own: submit events, interrupt
//!   sessions, drain. It talks to the relay only through [`Egress`], so it is
//!   tested with in-memory fakes.
//! - [`agent`] holds the backends chosen by `--agent`: `echo`, `exec:COMMAND`,
//!   `openai:BASE_URL`.
//! - [`adapters`] implements the seams for the real transport and plugin host.
//! - [`Metrics`] counts what happened and renders Prometheus text.
//!
//! ```no_run
//! # async fn demo(relay: hermes_transport::RelayHandle,
//! #               inbound: tokio::sync::mpsc::Receiver<hermes_transport::InboundItem>,
//! #               plugins: hermes_plugin_host::PluginHost) {
//! use std::sync::Arc;
//! use hermes_gateway_core::agent::{AgentBackend, AgentOptions};
//! use hermes_gateway_core::{Gateway, GatewayConfig, Metrics};
//!
//! let spec = "exec:./my-agent.sh".parse().expect("a valid --agent spec");
//! let agent = AgentBackend::from_spec(&spec, &AgentOptions::default()).expect("backend builds");
//! let metrics = Arc::new(Metrics::new());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let exit = Gateway::new(GatewayConfig::default(), metrics)
//!     .run(relay, inbound, plugins, agent, shutdown)
//!     .await;
//! # }
//! ```

pub mod adapters;
pub mod agent;
mod egress;
mod gateway;
mod incoming;
pub mod lanes;
pub mod latency;
mod metrics;
mod recent;
mod scope;
mod session;

pub use agent::{Agent, AgentError, ReplySink, TurnInput};
pub use egress::{Converted, Converter, Egress, Relay};
pub use gateway::{ExitReason, Gateway, GatewayConfig};
pub use metrics::{EventDrop, ForwardDrop, Metrics, MetricsSnapshot};
pub use recent::RecentIds;
pub use scope::{ChatScope, ScopeCache};
pub use session::{
    DrainOutcome, Incoming, Origin, ReplyRoute, STOP_COMMAND, STOP_REASON, SessionConfig, Sessions,
    StreamingConfig, Submitted,
};

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
