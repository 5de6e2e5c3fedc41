//! Counters for the session layer, rendered in the Prometheus text format.
//!
//! Plain relaxed atomics: every counter is monotonic and read only for
//! reporting, so no ordering between them is needed.

use std::fmt::Write as _;
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
    /// A turn, from the agent's start to its answer, by outcome
    /// (`completed`, `failed`, `cancelled`).
    pub turn: Histograms,
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
                "Agent turn duration, by outcome.",
                &["outcome"],
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
    const ALL: [ForwardDrop; 4] = [
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
    const ALL: [EventDrop; 3] = [
        EventDrop::Draining,
        EventDrop::Duplicate,
        EventDrop::Undecodable,
    ];

    fn label(self) -> &'static str {
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
        }
    }

    /// Sets the session gauges (absolute values, so an update that comes
    /// late is corrected by the next).
    pub fn set_sessions(&self, active: usize, queued: usize) {
        self.sessions_active.store(active as u64, Ordering::Relaxed);
        self.queued_messages.store(queued as u64, Ordering::Relaxed);
    }

    /// Appends the counters to `out` in the Prometheus text exposition format.
    pub fn render_prometheus(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // Writing into a String cannot fail; the results are ignored on purpose.
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, value) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        };
        counter(
            "hermes_gateway_events_in_total",
            "Inbound events received.",
            &[("", get(&self.events_in))],
        );
        counter(
            "hermes_gateway_forwards_in_total",
            "Passthrough forwards received.",
            &[("", get(&self.forwards_in))],
        );
        counter(
            "hermes_gateway_forwards_converted_total",
            "Forwards converted into events.",
            &[("", get(&self.forwards_converted))],
        );
        let forward_labels: Vec<String> = ForwardDrop::ALL
            .iter()
            .map(|d| format!("reason=\"{}\"", d.label()))
            .collect();
        let forward_samples: Vec<(&str, u64)> = ForwardDrop::ALL
            .iter()
            .zip(&forward_labels)
            .map(|(d, l)| (l.as_str(), get(&self.forward_drops[*d as usize])))
            .collect();
        counter(
            "hermes_gateway_forwards_dropped_total",
            "Forwards that produced no event.",
            &forward_samples,
        );
        let event_labels: Vec<String> = EventDrop::ALL
            .iter()
            .map(|d| format!("reason=\"{}\"", d.label()))
            .collect();
        let event_samples: Vec<(&str, u64)> = EventDrop::ALL
            .iter()
            .zip(&event_labels)
            .map(|(d, l)| (l.as_str(), get(&self.event_drops[*d as usize])))
            .collect();
        counter(
            "hermes_gateway_events_dropped_total",
            "Events dropped before becoming a turn.",
            &event_samples,
        );
        counter(
            "hermes_gateway_queue_full_waits_total",
            "Deliveries that waited for room in a full queue (backpressure).",
            &[("", get(&self.queue_full_waits))],
        );
        counter(
            "hermes_gateway_interrupts_in_total",
            "Interrupts received from the relay.",
            &[("", get(&self.interrupts_in))],
        );
        counter(
            "hermes_gateway_stops_local_total",
            "User /stop messages handled locally.",
            &[("", get(&self.stops_local))],
        );
        counter(
            "hermes_gateway_turns_total",
            "Agent turns by stage.",
            &[
                ("state=\"started\"", get(&self.turns_started)),
                ("state=\"completed\"", get(&self.turns_completed)),
                ("state=\"cancelled\"", get(&self.turns_cancelled)),
                ("state=\"failed\"", get(&self.turns_failed)),
            ],
        );
        counter(
            "hermes_gateway_replies_total",
            "Reply actions by outcome.",
            &[
                ("outcome=\"ok\"", get(&self.replies_ok)),
                ("outcome=\"failed\"", get(&self.replies_failed)),
                ("outcome=\"ambiguous\"", get(&self.replies_ambiguous)),
            ],
        );
        for (name, help, v) in [
            (
                "hermes_gateway_sessions_active",
                "Sessions with a queued, running or delivering turn.",
                get(&self.sessions_active),
            ),
            (
                "hermes_gateway_queued_messages",
                "Messages queued behind running turns.",
                get(&self.queued_messages),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        self.latency.conversion.render(out);
        self.latency.outbound.render(out);
        self.latency.turn.render(out);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_carries_labelled_counts() {
        let m = Metrics::new();
        m.forward_dropped(ForwardDrop::Rejected);
        m.forward_dropped(ForwardDrop::Rejected);
        m.reply_ambiguous();
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(
            out.contains("hermes_gateway_forwards_dropped_total{reason=\"rejected\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("hermes_gateway_forwards_dropped_total{reason=\"ignored\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("hermes_gateway_replies_total{outcome=\"ambiguous\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE hermes_gateway_turns_total counter\n"),
            "{out}"
        );
    }
}
