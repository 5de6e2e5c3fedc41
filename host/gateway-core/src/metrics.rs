//! Counters for the session layer: atomics to count into, a snapshot to
//! expose (the binary registers them with its metrics layer).
//!
//! Plain relaxed atomics: every counter is monotonic and read only for
//! reporting, so no ordering between them is needed.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::latency::Histograms;

/// The latency histograms (buckets in [`crate::latency::BUCKETS`]).
pub struct Latencies {
    /// A forward's conversion, by the plugin its platform enters through
    /// and its outcome (`events`, `ignored`, `rejected`, `failed`,
    /// `deferred`).
    pub conversion: Histograms,
    /// An outbound request's round trip, by op and result (`success`,
    /// `error`, `timeout`, `disconnected`, `ambiguous`).
    pub outbound: Histograms,
    /// A turn, from the agent's start to its answer, by agent backend
    /// (`echo`, `exec`, `openai`, …) and outcome (`completed`, `failed`,
    /// `cancelled`).
    pub turn: Histograms,
    /// From the frame that carried a message (an `inbound` event or the
    /// passthrough forward it was converted from) to the connector's
    /// success for the first piece of its reply, by platform: what the
    /// user waits, minus the platform's own delivery.
    pub reply: Histograms,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            conversion: Histograms::new(
                "hermes_gateway_conversion_seconds",
                "Time to convert a passthrough forward, by plugin and outcome.",
                &["plugin", "outcome"],
            ),
            outbound: Histograms::new(
                "hermes_relay_outbound_seconds",
                "Outbound request round trip to the connector, by op and result.",
                &["op", "result"],
            ),
            turn: Histograms::new(
                "hermes_gateway_turn_seconds",
                "Agent turn duration, by agent and outcome.",
                &["agent", "outcome"],
            ),
            reply: Histograms::new(
                "hermes_gateway_reply_seconds",
                "From the frame carrying a message to its reply's first piece sent, by platform.",
                &["platform"],
            ),
        }
    }
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Latencies")
    }
}

/// The result label of an outbound request's result, read from the
/// contract's own failure texts (no result is built to compare against).
pub fn outbound_result(result: &hermes_protocol::action::ActionResult) -> &'static str {
    use hermes_protocol::action::{ERR_CONNECTION_LOST, ERR_NOT_CONNECTED, ERR_TIMED_OUT};
    match result.error.as_deref() {
        _ if result.success => "success",
        Some(ERR_NOT_CONNECTED | ERR_CONNECTION_LOST) => "disconnected",
        Some(ERR_TIMED_OUT) => "timeout",
        _ if result.ambiguous => "ambiguous",
        _ => "error",
    }
}

/// Why a passthrough forward produced no turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardDrop {
    /// The converter decided the request needs no turn (e.g. a ping).
    Ignored,
    /// The converter or routing refused the request as invalid input.
    Rejected,
    /// The converter trapped, timed out or otherwise failed deterministically:
    /// redelivering it would fail the same way, so it is acked.
    Failed,
    /// The plugin host could not convert it right now (shutting down, pool
    /// exhausted, plugin quarantined, overloaded): left unacked so the
    /// connector redelivers it.
    Deferred,
}

impl ForwardDrop {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [ForwardDrop; 4] = [
        ForwardDrop::Ignored,
        ForwardDrop::Rejected,
        ForwardDrop::Failed,
        ForwardDrop::Deferred,
    ];

    /// The metric label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            ForwardDrop::Ignored => "ignored",
            ForwardDrop::Rejected => "rejected",
            ForwardDrop::Failed => "failed",
            ForwardDrop::Deferred => "deferred",
        }
    }
}

/// Why an inbound event was dropped before it became a turn. A full queue
/// is not a reason: it holds the delivery back (backpressure) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventDrop {
    /// The gateway is draining and takes no new turns.
    Draining,
    /// The `bufferId` was seen recently: a replay after a reconnect.
    Duplicate,
    /// The transport could not decode the buffered delivery.
    Undecodable,
}

impl EventDrop {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [EventDrop; 3] = [
        EventDrop::Draining,
        EventDrop::Duplicate,
        EventDrop::Undecodable,
    ];

    /// The metric label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            EventDrop::Draining => "draining",
            EventDrop::Duplicate => "duplicate",
            EventDrop::Undecodable => "undecodable",
        }
    }
}

/// Counters of the gateway core. Shared behind an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The latency histograms.
    pub latency: Latencies,
    /// Sessions with a queued, running or delivering turn (gauge).
    sessions_active: AtomicU64,
    /// Messages queued behind running turns (gauge).
    queued_messages: AtomicU64,
    events_in: AtomicU64,
    forwards_in: AtomicU64,
    forwards_converted: AtomicU64,
    forward_drops: [AtomicU64; 4],
    event_drops: [AtomicU64; 3],
    queue_full_waits: AtomicU64,
    interrupts_in: AtomicU64,
    stops_local: AtomicU64,
    turns_started: AtomicU64,
    turns_completed: AtomicU64,
    turns_cancelled: AtomicU64,
    turns_failed: AtomicU64,
    replies_ok: AtomicU64,
    replies_failed: AtomicU64,
    replies_ambiguous: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// A fresh set of counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// An `inbound` event arrived (before de-duplication).
    pub fn event_in(&self) {
        bump(&self.events_in);
    }
    /// A `passthrough_forward` arrived.
    pub fn forward_in(&self) {
        bump(&self.forwards_in);
    }
    /// A converter turned a forward into one or more events.
    pub fn forward_converted(&self) {
        bump(&self.forwards_converted);
    }
    /// A forward produced no event.
    pub fn forward_dropped(&self, why: ForwardDrop) {
        bump(&self.forward_drops[why as usize]);
    }
    /// An event was dropped before becoming a turn.
    pub fn event_dropped(&self, why: EventDrop) {
        bump(&self.event_drops[why as usize]);
    }
    /// A delivery had to wait for room in a full queue (the link is
    /// backpressured meanwhile).
    pub fn queue_full_wait(&self) {
        bump(&self.queue_full_waits);
    }
    /// An `interrupt_inbound` arrived.
    pub fn interrupt_in(&self) {
        bump(&self.interrupts_in);
    }
    /// A user's `/stop` was handled locally.
    pub fn stop_local(&self) {
        bump(&self.stops_local);
    }
    /// A turn began running its agent.
    pub fn turn_started(&self) {
        bump(&self.turns_started);
    }
    /// A turn finished with an agent answer (replies may still have failed).
    pub fn turn_completed(&self) {
        bump(&self.turns_completed);
    }
    /// A turn was cancelled (interrupt, `/stop`, drain).
    pub fn turn_cancelled(&self) {
        bump(&self.turns_cancelled);
    }
    /// The agent failed or timed out; an error reply was sent instead.
    pub fn turn_failed(&self) {
        bump(&self.turns_failed);
    }
    /// A reply action succeeded.
    pub fn reply_ok(&self) {
        bump(&self.replies_ok);
    }
    /// A reply action failed unambiguously (`success: false`).
    pub fn reply_failed(&self) {
        bump(&self.replies_failed);
    }
    /// A reply action failed ambiguously (the connector may have acted).
    pub fn reply_ambiguous(&self) {
        bump(&self.replies_ambiguous);
    }

    /// A point-in-time copy of every counter, for tests and health output.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            events_in: get(&self.events_in),
            forwards_in: get(&self.forwards_in),
            forwards_converted: get(&self.forwards_converted),
            forwards_ignored: get(&self.forward_drops[ForwardDrop::Ignored as usize]),
            forwards_rejected: get(&self.forward_drops[ForwardDrop::Rejected as usize]),
            forwards_failed: get(&self.forward_drops[ForwardDrop::Failed as usize]),
            forwards_deferred: get(&self.forward_drops[ForwardDrop::Deferred as usize]),
            queue_full_waits: get(&self.queue_full_waits),
            dropped_draining: get(&self.event_drops[EventDrop::Draining as usize]),
            dropped_duplicate: get(&self.event_drops[EventDrop::Duplicate as usize]),
            dropped_undecodable: get(&self.event_drops[EventDrop::Undecodable as usize]),
            interrupts_in: get(&self.interrupts_in),
            stops_local: get(&self.stops_local),
            turns_started: get(&self.turns_started),
            turns_completed: get(&self.turns_completed),
            turns_cancelled: get(&self.turns_cancelled),
            turns_failed: get(&self.turns_failed),
            replies_ok: get(&self.replies_ok),
            replies_failed: get(&self.replies_failed),
            replies_ambiguous: get(&self.replies_ambiguous),
            sessions_active: get(&self.sessions_active),
            queued_messages: get(&self.queued_messages),
        }
    }

    /// Sets the session gauges (absolute values, so an update that comes
    /// late is corrected by the next).
    pub fn set_sessions(&self, active: usize, queued: usize) {
        self.sessions_active.store(active as u64, Ordering::Relaxed);
        self.queued_messages.store(queued as u64, Ordering::Relaxed);
    }
}

/// A copy of every counter at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each field mirrors the counter of the same name on `Metrics`
pub struct MetricsSnapshot {
    pub events_in: u64,
    pub forwards_in: u64,
    pub forwards_converted: u64,
    pub forwards_ignored: u64,
    pub forwards_rejected: u64,
    pub forwards_failed: u64,
    pub forwards_deferred: u64,
    pub queue_full_waits: u64,
    pub dropped_draining: u64,
    pub dropped_duplicate: u64,
    pub dropped_undecodable: u64,
    pub interrupts_in: u64,
    pub stops_local: u64,
    pub turns_started: u64,
    pub turns_completed: u64,
    pub turns_cancelled: u64,
    pub turns_failed: u64,
    pub replies_ok: u64,
    pub replies_failed: u64,
    pub replies_ambiguous: u64,
    pub sessions_active: u64,
    pub queued_messages: u64,
}

impl MetricsSnapshot {
    /// Forwards that produced no event, by reason (label, count).
    pub fn forward_drops(&self) -> [(&'static str, u64); 4] {
        ForwardDrop::ALL.map(|d| {
            let n = match d {
                ForwardDrop::Ignored => self.forwards_ignored,
                ForwardDrop::Rejected => self.forwards_rejected,
                ForwardDrop::Failed => self.forwards_failed,
                ForwardDrop::Deferred => self.forwards_deferred,
            };
            (d.label(), n)
        })
    }

    /// Events dropped before becoming a turn, by reason (label, count).
    pub fn event_drops(&self) -> [(&'static str, u64); 3] {
        EventDrop::ALL.map(|d| {
            let n = match d {
                EventDrop::Draining => self.dropped_draining,
                EventDrop::Duplicate => self.dropped_duplicate,
                EventDrop::Undecodable => self.dropped_undecodable,
            };
            (d.label(), n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_carries_labelled_counts() {
        let m = Metrics::new();
        m.forward_dropped(ForwardDrop::Rejected);
        m.forward_dropped(ForwardDrop::Rejected);
        m.event_dropped(EventDrop::Duplicate);
        m.reply_ambiguous();
        m.set_sessions(3, 5);
        let snapshot = m.snapshot();
        assert_eq!(
            snapshot.forward_drops(),
            [
                ("ignored", 0),
                ("rejected", 2),
                ("failed", 0),
                ("deferred", 0)
            ]
        );
        assert_eq!(
            snapshot.event_drops(),
            [("draining", 0), ("duplicate", 1), ("undecodable", 0)]
        );
        assert_eq!(snapshot.replies_ambiguous, 1);
        assert_eq!((snapshot.sessions_active, snapshot.queued_messages), (3, 5));
    }
}
