//! The seams implemented for the real crates: [`Egress`] and [`Relay`] for
//! `hermes_transport::RelayHandle`, [`Converter`] for
//! `hermes_plugin_host::PluginHost`.

use std::sync::Arc;
use std::time::Duration;

use hermes_plugin_host::{Conversion, Outcome, PluginHost};
use hermes_protocol::action::{Action, ActionResult, Metadata};
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::forward::PassthroughForward;
use hermes_transport::{AckOutcome, DrainReport, LinkState, RelayHandle, SendOutcome};
use tracing::{debug, info, warn};

use crate::egress::{Converted, Converter, Egress, Relay};
use crate::metrics::ForwardDrop;
use crate::session::{Incoming, ReplyRoute};

impl Egress for RelayHandle {
    async fn request(&self, action: Action) -> ActionResult {
        // No envelope target: replies go to the connection's default identity.
        RelayHandle::request(self, action, None).await
    }

    async fn interrupt(&self, session_key: &str, reason: Option<&str>) {
        if RelayHandle::interrupt(self, session_key, reason.map(str::to_owned)).await == SendOutcome::NotConnected {
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
        self.descriptor_for(platform).unwrap_or_else(|| RelayHandle::descriptor(self))
    }
}

impl Relay for RelayHandle {
    async fn going_idle(&self, timeout: Duration) {
        match self.drain(timeout).await {
            DrainReport::Acknowledged { waited } => info!(?waited, "connector acknowledged going_idle"),
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
        converted_from(conversion, forward.profile.as_deref())
    }
}

/// Maps the plugin host's outcome onto the session layer's terms.
///
/// A plugin's own metadata pairs are informational (e.g. `custom_id`) and
/// may carry capability material such as Slack's `response_url`, which the
/// connector vaults itself: they are never copied onto outbound actions.
/// Replies carry only the re-attached scope (relay-contract §5.6).
pub fn converted_from(conversion: Conversion, profile: Option<&str>) -> Converted {
    let plugin = conversion.plugin.as_deref().unwrap_or("<no plugin>");
    match conversion.outcome {
        Outcome::Events(events) if !events.is_empty() => Converted::Events(
            events
                .into_iter()
                .map(|e| Incoming {
                    event: e.event,
                    route: match e.reply_route {
                        hermes_plugin_host::ReplyRoute::Send => ReplyRoute::Send,
                        hermes_plugin_host::ReplyRoute::FollowUp { kind } => ReplyRoute::FollowUp { kind },
                    },
                    metadata: Metadata::new(),
                    profile: profile.map(str::to_owned),
                })
                .collect(),
        ),
        Outcome::Events(_) => {
            Converted::Dropped { reason: ForwardDrop::Ignored, detail: format!("{plugin}: no events") }
        }
        Outcome::Ignored(reason) => {
            Converted::Dropped { reason: ForwardDrop::Ignored, detail: format!("{plugin}: {reason}") }
        }
        Outcome::Rejected { kind, message } => Converted::Dropped {
            reason: ForwardDrop::Rejected,
            detail: format!("{plugin}: {}: {message}", kind.as_str()),
        },
        Outcome::Failed(error) => {
            Converted::Dropped { reason: ForwardDrop::Failed, detail: format!("{plugin}: {error}") }
        }
    }
}
