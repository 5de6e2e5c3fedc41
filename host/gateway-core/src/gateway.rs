//! The gateway loop: relay items in, turns out, graceful drain at the end.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hermes_transport::InboundItem;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::agent::Agent;
use crate::egress::{Converted, Converter, Relay};
use crate::lanes::{LaneLimits, Lanes};
use crate::metrics::{EventDrop, ForwardDrop, Metrics};
use crate::session::{DrainOutcome, Incoming, SessionConfig, Sessions};

/// Settings of the gateway loop.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Queues, bounds and session-key settings.
    pub sessions: SessionConfig,
    /// How long to wait for `going_idle_ack` on shutdown (relay-contract §7.3).
    pub going_idle_timeout: Duration,
    /// How long running and queued turns may take to finish on shutdown
    /// before they are cancelled.
    pub drain_grace: Duration,
    /// Bounds of the conversion window. Results are handed to the sessions
    /// in arrival order within a lane (see [`crate::lanes`]) whatever order
    /// the conversions finish in.
    pub conversions: LaneLimits,
    /// How long a live forward (one without a `bufferId`, which the
    /// connector cannot redeliver) keeps being retried while the plugin host
    /// cannot convert it now (quarantine, a full line, a busy pool): a
    /// buffered forward is left unacked instead, but a live one would
    /// otherwise be lost. Retries back off from 250 ms to 2 s; a quarantined
    /// plugin admits one probe per second.
    pub live_retry: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            sessions: SessionConfig::default(),
            going_idle_timeout: Duration::from_secs(10),
            drain_grace: Duration::from_secs(30),
            conversions: LaneLimits::default(),
            live_retry: Duration::from_secs(10),
        }
    }
}

/// Why [`Gateway::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Shutdown was requested and the drain completed.
    Shutdown(DrainOutcome),
    /// The connector revoked access (exit code 4).
    Revoked,
    /// The link ended without a shutdown request (its inbound channel closed).
    LinkClosed,
}

/// Composes the relay link, the converters, the session layer and an agent.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    metrics: Arc<Metrics>,
}

impl Gateway {
    /// A gateway with `config`, counting into `metrics` (keep a clone for `/metrics`).
    pub fn new(config: GatewayConfig, metrics: Arc<Metrics>) -> Self {
        Self { config, metrics }
    }

    /// Serves `inbound` until `shutdown` fires or the link ends.
    ///
    /// Events go straight to their sessions (waiting for queue room when a
    /// queue is full, which backpressures the link); forwards are converted
    /// first (concurrently, in lanes: see [`crate::lanes`]) and a forward that
    /// yields no event is counted and its `bufferId` acked as a deliberate
    /// drop, unless the plugin host could not convert it right now
    /// ([`ForwardDrop::Deferred`]: left unacked for redelivery); interrupts
    /// cancel their session's turn. On shutdown (relay-contract §7.3): no new
    /// turns first, then `going_idle` while interrupts keep being served and
    /// racing deliveries stay unacked, then queued and running turns get
    /// `drain_grace` before they are cancelled, then the link closes.
    pub async fn run<R, C, A>(
        self,
        relay: R,
        mut inbound: mpsc::Receiver<InboundItem>,
        converter: C,
        agent: A,
        shutdown: CancellationToken,
    ) -> ExitReason
    where
        R: Relay + Clone,
        C: Converter,
        A: Agent,
    {
        let sessions = Sessions::new(
            relay.clone(),
            agent,
            self.config.sessions.clone(),
            Arc::clone(&self.metrics),
        );
        let mut conversions = Lanes::new(self.config.conversions);
        let live_retry = self.config.live_retry;
        let metrics = &self.metrics;
        let convert = |forward: hermes_protocol::forward::PassthroughForward,
                       buffer_id: Option<String>,
                       lane: Arc<str>| {
            let converter = &converter;
            // Every log line of the conversion (plugin failures, retries)
            // carries the forward's platform and buffer id.
            let span = tracing::info_span!(
                "forward",
                platform = forward.platform.as_str(),
                buffer_id = buffer_id.as_deref(),
            );
            let received = std::time::Instant::now();
            async move {
                let started = std::time::Instant::now();
                let mut converted = if buffer_id.is_some() {
                    converter.convert(&forward).await
                } else {
                    convert_live(converter, &forward, live_retry).await
                };
                let outcome = match &converted {
                    Converted::Events(_) => "events",
                    Converted::Dropped { reason, .. } => reason.label(),
                };
                let labels = [&*lane, outcome];
                metrics
                    .latency
                    .conversion
                    .observe(&labels, started.elapsed());
                if let Converted::Events(events) = &mut converted {
                    for incoming in events {
                        incoming.received = received;
                    }
                }
                (converted, buffer_id)
            }
            .instrument(span)
        };

        // Serving. The `inbound` branch is disabled while the conversion
        // window is full, which backpressures the link instead of buffering.
        let link_ended = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break false,
                Some(done) = conversions.next(), if !conversions.is_empty() => {
                    unless_shutdown(&sessions, &shutdown, self.hand_off(&sessions, done)).await;
                }
                item = inbound.recv(), if conversions.has_room() => match item {
                    Some(InboundItem::Forward { forward, buffer_id }) => {
                        if let Some((forward, buffer_id)) = self.forward_in(&sessions, forward, buffer_id).await {
                            let lane = converter.lane(&forward);
                            let bytes = forward.body.len();
                            let converting = convert(forward, buffer_id.clone(), Arc::clone(&lane));
                            if let Err(full) = conversions.push(lane, bytes, converting) {
                                // This lane's own backlog is full: shed it here
                                // (unacked: the connector redelivers a buffered
                                // one) rather than stall every other lane.
                                let detail = format!("lane `{}` full ({} in flight)", full.lane, full.in_flight);
                                let dropped = Converted::Dropped { reason: ForwardDrop::Deferred, detail };
                                self.hand_off(&sessions, (dropped, buffer_id)).await;
                            }
                        }
                    }
                    Some(item) => unless_shutdown(&sessions, &shutdown, self.handle(&sessions, item)).await,
                    None => break true,
                },
            }
        };

        if link_ended {
            // Whatever was being converted is handed off before we stop.
            while let Some(done) = conversions.next().await {
                self.hand_off(&sessions, done).await;
            }
            let revoked = relay.is_revoked();
            let outcome = sessions.drain(self.config.drain_grace).await;
            info!(revoked, ?outcome, "relay link ended");
            return if revoked {
                ExitReason::Revoked
            } else {
                ExitReason::LinkClosed
            };
        }

        // Draining (relay-contract §7.3): stop accepting new turns first, then
        // `going_idle`. Deliveries racing the flip are left unacked (the
        // connector redelivers them to whoever serves next); interrupts are
        // still served; turns already queued were acked and still run.
        sessions.stop_accepting();
        // Forwards still converting were not acked: dropping them lets the
        // connector redeliver them.
        drop(conversions);
        info!("shutdown: asking the connector to buffer for us");
        {
            let mut idle = pin!(relay.going_idle(self.config.going_idle_timeout));
            loop {
                tokio::select! {
                    biased;
                    () = &mut idle => break,
                    item = inbound.recv() => match item {
                        Some(InboundItem::Forward { forward, buffer_id }) => {
                            if self.forward_in(&sessions, forward, buffer_id.clone()).await.is_some() {
                                self.metrics.event_dropped(EventDrop::Draining);
                                info!(buffer_id, "draining: forward not converted and not acked; the connector redelivers it");
                            }
                        }
                        Some(item) => self.handle(&sessions, item).await,
                        None => {
                            idle.as_mut().await;
                            break;
                        }
                    },
                }
            }
        }
        let outcome = sessions.drain(self.config.drain_grace).await;
        info!(?outcome, "turns drained; closing the link");
        relay.close().await;
        if relay.is_revoked() {
            ExitReason::Revoked
        } else {
            ExitReason::Shutdown(outcome)
        }
    }

    /// Counts a forward and filters replays of a delivery already handled
    /// (they are acked again and not converted twice).
    async fn forward_in<E: crate::Egress, A: Agent>(
        &self,
        sessions: &Sessions<E, A>,
        forward: hermes_protocol::forward::PassthroughForward,
        buffer_id: Option<String>,
    ) -> Option<(hermes_protocol::forward::PassthroughForward, Option<String>)> {
        self.metrics.forward_in();
        if let Some(id) = buffer_id.as_deref()
            && sessions.seen_recently(id)
        {
            self.metrics.event_dropped(EventDrop::Duplicate);
            debug!(
                buffer_id = id,
                "replayed forward already handled; acking again"
            );
            sessions.egress().ack(id).await;
            return None;
        }
        Some((forward, buffer_id))
    }

    async fn handle<E: crate::Egress, A: Agent>(
        &self,
        sessions: &Sessions<E, A>,
        item: InboundItem,
    ) {
        match item {
            InboundItem::Event { event, buffer_id } => {
                self.metrics.event_in();
                sessions
                    .submit(vec![Incoming::inbound(event)], buffer_id.as_deref())
                    .await;
            }
            InboundItem::Interrupt {
                session_key,
                chat_id,
            } => sessions.interrupt(&session_key, &chat_id),
            InboundItem::Forward { .. } => {
                // Forwards are converted by the caller; reaching here is a bug
                // in this loop, not in the input. Dropping unacked lets the
                // connector redeliver.
                warn!("forward reached the event path; not handled");
            }
            InboundItem::Dropped { buffer_id, error } => {
                self.metrics.event_dropped(EventDrop::Undecodable);
                warn!(buffer_id, %error, "undecodable buffered delivery dropped; acking so it is not redelivered");
                sessions.egress().ack(&buffer_id).await;
            }
        }
    }

    async fn hand_off<E: crate::Egress, A: Agent>(
        &self,
        sessions: &Sessions<E, A>,
        (converted, buffer_id): (Converted, Option<String>),
    ) {
        let buffer_id = buffer_id.as_deref();
        match converted {
            Converted::Events(events) => {
                self.metrics.forward_converted();
                sessions.submit(events, buffer_id).await;
            }
            Converted::Dropped { reason, detail } => {
                self.metrics.forward_dropped(reason);
                match reason {
                    ForwardDrop::Ignored => {
                        debug!(buffer_id, detail, "forward ignored by its converter")
                    }
                    ForwardDrop::Rejected | ForwardDrop::Failed => {
                        warn!(buffer_id, detail, ?reason, "forward dropped")
                    }
                    ForwardDrop::Deferred => {
                        // A host-side condition, not bad input: not acked (nor
                        // remembered), so the connector redelivers it.
                        warn!(
                            buffer_id,
                            detail, "forward not converted now; left unacked for redelivery"
                        );
                        return;
                    }
                }
                if let Some(id) = buffer_id {
                    sessions.egress().ack(id).await;
                }
            }
        }
    }
}

/// Converts a live forward (no `bufferId`: nobody will redeliver it),
/// retrying while the outcome is [`ForwardDrop::Deferred`] for up to
/// `window`, backing off from 250 ms to 2 s.
async fn convert_live<C: Converter>(
    converter: &C,
    forward: &hermes_protocol::forward::PassthroughForward,
    window: Duration,
) -> Converted {
    let deadline = tokio::time::Instant::now() + window;
    let mut pause = Duration::from_millis(250);
    loop {
        let converted = converter.convert(forward).await;
        let deferred = matches!(
            converted,
            Converted::Dropped {
                reason: ForwardDrop::Deferred,
                ..
            }
        );
        if !deferred || tokio::time::Instant::now() + pause > deadline {
            if deferred {
                warn!(
                    platform = forward.platform,
                    "live forward (no bufferId) still not convertible after {window:?}; it is lost"
                );
            }
            return converted;
        }
        debug!(
            platform = forward.platform,
            ?pause,
            "live forward not convertible now; retrying"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Runs `work`, which may wait for queue room (backpressure). If shutdown
/// fires meanwhile the sessions stop accepting, which ends the wait with the
/// delivery unqueued and unacked, so shutdown is never held up by a full
/// queue.
async fn unless_shutdown<E: crate::Egress, A: Agent>(
    sessions: &Sessions<E, A>,
    shutdown: &CancellationToken,
    work: impl Future<Output = ()>,
) {
    let mut work = pin!(work);
    tokio::select! {
        biased;
        () = &mut work => {}
        () = shutdown.cancelled() => {
            sessions.stop_accepting();
            work.await;
        }
    }
}
