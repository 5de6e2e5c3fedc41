//! The seams implemented for the real crates: [`Egress`] and [`Relay`] for
//! `hermes_transport::RelayHandle`, [`Converter`] for
//! `hermes_plugin_host::PluginHost`.

use std::sync::Arc;
use std::time::Duration;

use hermes_plugin_host::{Conversion, Outcome, PluginError, PluginHost};
use hermes_protocol::action::{Action, ActionResult, Metadata};
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::forward::PassthroughForward;
use hermes_transport::{AckOutcome, DrainReport, LinkState, RelayHandle, SendOutcome};
use tracing::{debug, info, warn};

use crate::egress::{Converted, Converter, Egress, Relay};
use crate::incoming::Origin;
use crate::metrics::ForwardDrop;
use crate::session::Incoming;

impl Egress for RelayHandle {
    async fn request(&self, action: Action) -> ActionResult {
        // No envelope target: replies go to the connection's default identity.
        RelayHandle::request(self, action, None).await
    }

    async fn until_connected(&self) {
        let mut state = self.state();
        let _ = state
            .wait_for(|s| {
                matches!(
                    s,
                    LinkState::Connected { .. } | LinkState::Revoked | LinkState::Closed
                )
            })
            .await;
    }

    async fn interrupt(&self, session_key: &str, reason: Option<&str>) {
        if RelayHandle::interrupt(self, session_key, reason.map(str::to_owned)).await
            == SendOutcome::NotConnected
        {
            warn!(session_key, "interrupt not egressed: relay not connected");
        }
    }

    async fn ack(&self, buffer_id: &str) {
        match RelayHandle::ack(self, buffer_id).await {
            AckOutcome::Sent => {}
            AckOutcome::Duplicate => debug!(buffer_id, "already acked on this connection"),
            // The connector redelivers; our de-duplication acks it then.
            AckOutcome::NotConnected => debug!(buffer_id, "ack not sent: relay not connected"),
        }
    }

    fn descriptor(&self, platform: &str) -> Arc<Descriptor> {
        self.descriptor_for(platform)
            .unwrap_or_else(|| RelayHandle::descriptor(self))
    }
}

impl Relay for RelayHandle {
    async fn going_idle(&self, timeout: Duration) {
        match self.drain(timeout).await {
            DrainReport::Acknowledged { waited } => {
                info!(?waited, "connector acknowledged going_idle")
            }
            DrainReport::TimedOut => warn!(?timeout, "no going_idle_ack; draining anyway"),
            DrainReport::NotConnected => info!("not connected; nothing to tell the connector"),
        }
    }

    async fn close(&self) {
        RelayHandle::close(self).await;
    }

    fn is_revoked(&self) -> bool {
        matches!(*self.state().borrow(), LinkState::Revoked)
    }
}

impl Converter for PluginHost {
    async fn convert(&self, forward: &PassthroughForward) -> Converted {
        let conversion = PluginHost::convert(self, forward).await;
        converted_from(
            conversion,
            forward.profile.as_deref(),
            self.limits().outer_timeout,
        )
    }

    fn lane(&self, forward: &PassthroughForward) -> Arc<str> {
        self.lane_of(forward)
    }
}

/// Whether a conversion failure is a condition of the host right now rather
/// than of the forward: shutting down or no worker (`Unavailable`), pool or
/// resources exhausted (`Instantiate`), the plugin sitting out a quarantine
/// (`Quarantined`), or the host's outer timeout (`Timeout` after exactly
/// `outer_timeout`: the job waited behind others, the guest's own epoch
/// deadline did not fire). Such a forward is left unacked so the connector
/// redelivers it. Everything else — traps, panics, the memory cap, bad
/// output, the epoch deadline, no route, an incompatible plugin — fails the
/// same way every time, so it is acked as a deliberate drop.
pub fn is_transient(error: &PluginError, outer_timeout: Duration) -> bool {
    match error {
        PluginError::Unavailable(_)
        | PluginError::Instantiate(_)
        | PluginError::Quarantined { .. }
        | PluginError::Overloaded { .. } => true,
        PluginError::Timeout { after } => *after == outer_timeout,
        PluginError::Trap { .. }
        | PluginError::MemoryLimit { .. }
        | PluginError::BadOutput(_)
        | PluginError::Panic { .. }
        | PluginError::NoRoute { .. }
        | PluginError::Incompatible { .. }
        | PluginError::Overreach(_) => false,
    }
}

/// Maps the plugin host's outcome onto the session layer's terms.
///
/// A plugin's own metadata pairs are informational (e.g. `custom_id`) and
/// may carry capability material such as Slack's `response_url`, which the
/// connector vaults itself: they are never copied onto outbound actions.
/// Replies carry only the re-attached scope (relay-contract §5.6).
///
/// `outer_timeout` is the host's [`Limits::outer_timeout`](hermes_plugin_host::Limits),
/// used to tell a transient failure from a deterministic one ([`is_transient`]).
pub fn converted_from(
    conversion: Conversion,
    profile: Option<&str>,
    outer_timeout: Duration,
) -> Converted {
    let plugin = conversion.plugin.as_deref().unwrap_or("<no plugin>");
    let origin = Origin {
        plugin: plugin.to_owned(),
        tenant: conversion.tenant.clone(),
    };
    match conversion.outcome {
        Outcome::Events(events) if !events.is_empty() => Converted::Events(
            events
                .into_iter()
                .map(|e| Incoming {
                    event: e.event,
                    route: e.reply_route,
                    metadata: Metadata::new(),
                    profile: profile.map(str::to_owned),
                    origin: Some(origin.clone()),
                    received: std::time::Instant::now(),
                })
                .collect(),
        ),
        Outcome::Events(_) => Converted::Dropped {
            reason: ForwardDrop::Ignored,
            detail: format!("{plugin}: no events"),
        },
        Outcome::Ignored(reason) => Converted::Dropped {
            reason: ForwardDrop::Ignored,
            detail: format!("{plugin}: {reason}"),
        },
        Outcome::Rejected { kind, message } => Converted::Dropped {
            reason: ForwardDrop::Rejected,
            detail: format!("{plugin}: {}: {message}", kind.as_str()),
        },
        Outcome::Failed(error) => Converted::Dropped {
            reason: if is_transient(&error, outer_timeout) {
                ForwardDrop::Deferred
            } else {
                ForwardDrop::Failed
            },
            detail: format!("{plugin}: {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTER: Duration = Duration::from_secs(10);
    const EPOCH: Duration = Duration::from_secs(2);

    fn failed(error: PluginError) -> ForwardDrop {
        let conversion = Conversion {
            plugin: Some("p".to_owned()),
            tenant: None,
            outcome: Outcome::Failed(error),
        };
        match converted_from(conversion, None, OUTER) {
            Converted::Dropped { reason, .. } => reason,
            other => panic!("a failure converts to nothing, got {other:?}"),
        }
    }

    #[test]
    fn host_conditions_are_deferred_and_plugin_faults_are_dropped() {
        let deferred = [
            PluginError::Unavailable("shutting down".to_owned()),
            PluginError::Instantiate("pool exhausted".to_owned()),
            PluginError::Quarantined {
                remaining: Duration::from_secs(5),
            },
            PluginError::Timeout { after: OUTER },
        ];
        for error in deferred {
            let shown = error.to_string();
            assert_eq!(failed(error), ForwardDrop::Deferred, "{shown}");
        }
        let dropped = [
            PluginError::Trap {
                message: "unreachable".to_owned(),
                guest_output: String::new(),
            },
            PluginError::Timeout { after: EPOCH },
            PluginError::MemoryLimit { limit: 1 },
            PluginError::BadOutput("too many events".to_owned()),
            PluginError::Panic {
                message: "boom".to_owned(),
            },
            PluginError::NoRoute {
                platform: "x".to_owned(),
            },
            PluginError::Incompatible {
                plugin_version: "9.0.0".to_owned(),
                host_version: "0.1.0".to_owned(),
            },
        ];
        for error in dropped {
            let shown = error.to_string();
            assert_eq!(failed(error), ForwardDrop::Failed, "{shown}");
        }
    }
}
