//! The cloneable handle the layer above talks to.

use std::sync::Arc;
use std::time::Duration;

use hermes_protocol::action::{Action, ActionResult, Metadata, RequestId};
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::frame::GatewayFrame;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::RelayConfig;
use crate::connection::Control;
use crate::inbound::InboundQueue;
use crate::shared::{Shared, lock};
use crate::state::{AckOutcome, DrainReport, InboundItem, LinkCounters, LinkState, SendOutcome};

/// Envelope `platform` / `botId` of an outbound action, for a reply whose
/// concrete platform is known (relay-contract §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Platform, e.g. `discord`.
    pub platform: String,
    /// Bot id on that platform.
    pub bot_id: String,
}

/// Starts links.
#[derive(Debug)]
pub struct RelayLink;

impl RelayLink {
    /// Start the link's supervisor task and return its handle and the
    /// stream of inbound items.
    ///
    /// Must be called inside a tokio runtime. The link runs until
    /// [`RelayHandle::close`] is called, every handle is dropped, or the
    /// returned receiver is dropped. Capacities of zero are raised to one.
    ///
    /// The receiver is bounded by [`RelayConfig::inbound_capacity`] items and
    /// [`RelayConfig::inbound_byte_budget`] bytes: while either is full the
    /// link stops reading the socket until an item is taken.
    pub fn spawn(mut config: RelayConfig) -> (RelayHandle, mpsc::Receiver<InboundItem>) {
        config.inbound_capacity = config.inbound_capacity.max(1);
        config.outbound_queue = config.outbound_queue.max(1);
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity);
        let inbound = Arc::new(InboundQueue::new(inbound_tx, config.inbound_byte_budget));
        let (control_tx, control_rx) = mpsc::channel(4);
        let shared = Arc::new(Shared::new(config));
        tokio::spawn(crate::supervisor::supervise(
            Arc::clone(&shared),
            control_rx,
            inbound,
        ));
        (
            RelayHandle {
                shared,
                control: control_tx,
            },
            inbound_rx,
        )
    }
}

/// The layer above's view of the link. Cheap to clone; every clone talks to
/// the same connection.
///
/// Every request method returns an [`ActionResult`] and never hangs: local
/// failures (not connected, write failed, timed out, connection lost) are
/// results too (relay-contract §4).
#[derive(Debug, Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
}

/// Removes its pending entry when dropped, whatever path the caller took
/// (result, timeout, or the caller's future being cancelled).
struct PendingEntry<'a> {
    shared: &'a Shared,
    id: RequestId,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

impl RelayHandle {
    /// `send`: post `content` to `chat_id`, optionally replying to a message.
    pub async fn send(
        &self,
        chat_id: impl Into<String>,
        content: impl Into<String>,
        reply_to: Option<String>,
        metadata: Metadata,
    ) -> ActionResult {
        let action = Action::Send {
            chat_id: chat_id.into(),
            content: content.into(),
            reply_to,
            metadata,
        };
        self.request(action, None).await
    }

    /// `edit`: replace the text of a message this gateway sent.
    pub async fn edit(
        &self,
        chat_id: impl Into<String>,
        message_id: impl Into<String>,
        content: impl Into<String>,
        metadata: Metadata,
    ) -> ActionResult {
        let action = Action::Edit {
            chat_id: chat_id.into(),
            message_id: message_id.into(),
            content: content.into(),
            metadata,
        };
        self.request(action, None).await
    }

    /// `typing`: show a typing indicator (or, with `content`, set/clear a
    /// status text).
    pub async fn typing(
        &self,
        chat_id: impl Into<String>,
        content: Option<String>,
        metadata: Metadata,
    ) -> ActionResult {
        let action = Action::Typing {
            chat_id: chat_id.into(),
            content,
            metadata,
        };
        self.request(action, None).await
    }

    /// `follow_up`: act on a capability the connector vaulted for
    /// `session_key` (never carries a credential).
    pub async fn follow_up(
        &self,
        session_key: impl Into<String>,
        kind: impl Into<String>,
        content: impl Into<String>,
        metadata: Metadata,
    ) -> ActionResult {
        let action = Action::FollowUp {
            session_key: session_key.into(),
            kind: kind.into(),
            content: content.into(),
            metadata,
        };
        self.request(action, None).await
    }

    /// `get_chat_info`; read the answer with [`ActionResult::chat_info`].
    pub async fn get_chat_info(&self, chat_id: impl Into<String>) -> ActionResult {
        let action = Action::GetChatInfo {
            chat_id: chat_id.into(),
        };
        self.request(action, None).await
    }

    /// Send any action as `outbound` with a fresh `requestId` and wait for its
    /// `outbound_result`, up to the outbound timeout.
    pub async fn request(&self, action: Action, target: Option<Target>) -> ActionResult {
        let shared = &*self.shared;
        let deadline = Instant::now() + shared.config.outbound_timeout;
        let Some(writer) = shared.writer() else {
            return ActionResult::not_connected();
        };
        let id = RequestId::from_random_bytes(rand::random());
        let (platform, bot_id) = match target {
            Some(t) => (Some(t.platform), Some(t.bot_id)),
            None => (None, None),
        };
        let frame = GatewayFrame::Outbound {
            request_id: id.clone(),
            action,
            platform,
            bot_id,
        };
        let text = frame.encode();
        let (tx, rx) = oneshot::channel();
        lock(&shared.pending).insert(id.clone(), tx);
        let entry = PendingEntry {
            shared,
            id: id.clone(),
        };

        let queued = tokio::time::timeout_at(deadline, writer.send(text, Some(id)));
        match queued.await {
            Ok(Ok(())) => {}
            // The connection went away before the frame reached the writer.
            Ok(Err(_)) => return ActionResult::not_connected(),
            // Nothing was written: the queue stayed full for the whole timeout.
            Err(_) => return ActionResult::send_failed("outbound queue full"),
        }
        let result = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            // The link dropped the waiter without a result: only at teardown.
            Ok(Err(_)) => ActionResult::connection_lost(),
            Err(_) => {
                crate::state::Counters::bump(&shared.counters.timeouts);
                ActionResult::timed_out()
            }
        };
        drop(entry);
        result
    }

    /// Egress a `/stop` for `session_key` as `interrupt` (fire-and-forget).
    pub async fn interrupt(
        &self,
        session_key: impl Into<String>,
        reason: Option<String>,
    ) -> SendOutcome {
        let frame = GatewayFrame::Interrupt {
            session_key: session_key.into(),
            reason,
        };
        self.fire(frame.encode()).await
    }

    /// Send `inbound_ack` for `buffer_id`, at most once per connection. Call
    /// only after the item was durably handed off or deliberately dropped.
    pub async fn ack(&self, buffer_id: impl Into<String>) -> AckOutcome {
        let buffer_id = buffer_id.into();
        let writer = {
            let mut slot = lock(&self.shared.slot);
            let Some(slot) = slot.as_mut() else {
                return AckOutcome::NotConnected;
            };
            if !slot.acked.insert(&buffer_id) {
                return AckOutcome::Duplicate;
            }
            slot.writer.clone()
        };
        let frame = GatewayFrame::InboundAck { buffer_id };
        match writer.send(frame.encode(), None).await {
            Ok(()) => AckOutcome::Sent,
            Err(_) => AckOutcome::NotConnected,
        }
    }

    /// Graceful drain, step one (relay-contract §7.3): send `going_idle` and
    /// wait up to `timeout` for `going_idle_ack`. Inbound items keep flowing
    /// meanwhile; the caller then finishes its turns and calls
    /// [`close`](Self::close).
    pub async fn drain(&self, timeout: Duration) -> DrainReport {
        // Subscribe before sending so an immediate ack is not missed.
        let mut acks = self.shared.idle_acks.subscribe();
        let Some(writer) = self.shared.writer() else {
            return DrainReport::NotConnected;
        };
        let started = Instant::now();
        if writer
            .send(GatewayFrame::GoingIdle.encode(), None)
            .await
            .is_err()
        {
            return DrainReport::NotConnected;
        }
        match tokio::time::timeout(timeout, acks.changed()).await {
            Ok(Ok(())) => DrainReport::Acknowledged {
                waited: started.elapsed(),
            },
            Ok(Err(_)) => DrainReport::NotConnected,
            Err(_) => DrainReport::TimedOut,
        }
    }

    /// Close the link: settle every pending request, send a normal close
    /// frame, stop re-dialling. Returns once the supervisor has finished.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Close { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Watch the connection state.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// The current connection's default descriptor, or the placeholder
    /// (relay-contract §3.3) before any handshake.
    pub fn descriptor(&self) -> Arc<Descriptor> {
        lock(&self.shared.descriptors)
            .default
            .clone()
            .unwrap_or_else(|| Arc::clone(&self.shared.placeholder))
    }

    /// The descriptor for `platform` on the current connection: the default
    /// when it is for that platform (a later descriptor never replaces it,
    /// §3.2), else a later per-platform descriptor.
    pub fn descriptor_for(&self, platform: &str) -> Option<Arc<Descriptor>> {
        let descriptors = lock(&self.shared.descriptors);
        descriptors
            .default
            .as_ref()
            .filter(|d| d.platform == platform)
            .or_else(|| descriptors.per_platform.get(platform))
            .cloned()
    }

    /// Counters of skipped frames, late results, timeouts and dials.
    pub fn counters(&self) -> LinkCounters {
        self.shared.counters.snapshot()
    }

    /// Outbound actions currently waiting for a result.
    pub fn pending_len(&self) -> usize {
        lock(&self.shared.pending).len()
    }

    /// The configuration the link runs with.
    pub fn config(&self) -> &RelayConfig {
        &self.shared.config
    }

    async fn fire(&self, text: String) -> SendOutcome {
        let Some(writer) = self.shared.writer() else {
            return SendOutcome::NotConnected;
        };
        match writer.send(text, None).await {
            Ok(()) => SendOutcome::Sent,
            Err(_) => SendOutcome::NotConnected,
        }
    }
}
