//! The stub's record of everything it saw, with async waits on it (tests
//! await events; they never sleep).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hermes_protocol::frame::GatewayFrame;
use tokio::sync::watch;

/// How the stub judged a connection's upgrade token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenVerdict {
    /// Verified against the rotation list; `gateway_id` is the token payload.
    Accepted {
        /// The token's payload.
        gateway_id: String,
    },
    /// Refused; the connection was closed with 4401 and this reason.
    Rejected {
        /// The close reason sent (`missing token`, `expired`, `invalid token`).
        reason: String,
    },
    /// The stub runs without authentication (`StubConfig::secrets` empty).
    NotChecked,
}

/// One observable thing that happened at the stub. `conn` numbers
/// WebSocket connections from 1 in upgrade order.
#[derive(Debug, Clone, PartialEq)]
pub enum StubEvent {
    /// A plain HTTP request was refused (wrong path or not an upgrade).
    HttpRejected {
        /// Request path.
        path: String,
        /// Status answered.
        status: u16,
    },
    /// A WebSocket upgrade on `/relay` completed.
    Upgraded {
        /// Connection number.
        conn: u64,
        /// The bearer token presented, if any.
        token: Option<String>,
        /// What the stub made of it.
        verdict: TokenVerdict,
    },
    /// A well-formed frame from the gateway.
    Frame {
        /// Connection number.
        conn: u64,
        /// The frame.
        frame: GatewayFrame,
    },
    /// A line from the gateway that did not decode.
    Malformed {
        /// Connection number.
        conn: u64,
        /// The decode error.
        error: String,
    },
    /// The gateway sent a close frame.
    PeerClosed {
        /// Connection number.
        conn: u64,
        /// Close code (`None` when the frame had none).
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// The gateway sent a keepalive ping (answered with a pong).
    Ping {
        /// Connection number.
        conn: u64,
    },
    /// The connection is over (after a close either way, a drop, or an error).
    Disconnected {
        /// Connection number.
        conn: u64,
    },
}

impl StubEvent {
    /// The connection this event belongs to, if any.
    pub fn conn(&self) -> Option<u64> {
        match self {
            StubEvent::HttpRejected { .. } => None,
            StubEvent::Upgraded { conn, .. }
            | StubEvent::Frame { conn, .. }
            | StubEvent::Malformed { conn, .. }
            | StubEvent::PeerClosed { conn, .. }
            | StubEvent::Ping { conn }
            | StubEvent::Disconnected { conn } => Some(*conn),
        }
    }

    /// The gateway frame, for `Frame` events.
    pub fn frame(&self) -> Option<&GatewayFrame> {
        match self {
            StubEvent::Frame { frame, .. } => Some(frame),
            _ => None,
        }
    }
}

/// Append-only event log plus a change signal. With a limit, only the
/// newest `limit` events are kept (a long `dev` session must not keep every
/// frame, and every bearer token, for as long as it runs); positions stay
/// absolute, and a cursor left behind the oldest kept event resumes there.
#[derive(Debug)]
pub(crate) struct Record {
    events: Mutex<Events>,
    len: watch::Sender<usize>,
    limit: Option<usize>,
}

#[derive(Debug, Default)]
struct Events {
    kept: VecDeque<StubEvent>,
    /// Absolute position of `kept[0]` (how many were forgotten).
    base: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Record {
    /// A record keeping everything (`limit` `None`) or the newest `limit`
    /// events.
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Self {
            events: Mutex::new(Events::default()),
            len: watch::Sender::new(0),
            limit: limit.map(|l| l.max(1)),
        }
    }

    pub(crate) fn push(&self, event: StubEvent) {
        let len = {
            let mut events = lock(&self.events);
            events.kept.push_back(event);
            if let Some(limit) = self.limit {
                while events.kept.len() > limit {
                    events.kept.pop_front();
                    events.base += 1;
                }
            }
            events.base + events.kept.len()
        };
        self.len.send_replace(len);
    }

    /// The events still kept, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<StubEvent> {
        lock(&self.events).kept.iter().cloned().collect()
    }

    /// The event at absolute position `index`, or the oldest kept one after
    /// it when `index` was forgotten: `(its position, the event)`.
    fn get(&self, index: usize) -> Option<(usize, StubEvent)> {
        let events = lock(&self.events);
        let at = index.max(events.base);
        events.kept.get(at - events.base).map(|e| (at, e.clone()))
    }

    fn len(&self) -> usize {
        let events = lock(&self.events);
        events.base + events.kept.len()
    }
}

/// A read position in the stub's event log. [`EventCursor::next`] waits for
/// the next event after the position; cursors are independent.
#[derive(Debug, Clone)]
pub struct EventCursor {
    record: Arc<Record>,
    position: usize,
}

impl EventCursor {
    pub(crate) fn new(record: Arc<Record>, position: usize) -> Self {
        Self { record, position }
    }

    pub(crate) fn at_end(record: Arc<Record>) -> Self {
        let position = record.len();
        Self { record, position }
    }

    /// The next event, waiting for it if need be.
    pub async fn next(&mut self) -> StubEvent {
        let mut changed = self.record.len.subscribe();
        loop {
            if let Some((at, event)) = self.record.get(self.position) {
                self.position = at + 1;
                return event;
            }
            // The record lives as long as this cursor holds it, so the
            // sender cannot be gone; treat it as "no more events" anyway.
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The next event matching `predicate`, skipping (and consuming) the
    /// others.
    pub async fn next_matching(
        &mut self,
        mut predicate: impl FnMut(&StubEvent) -> bool,
    ) -> StubEvent {
        loop {
            let event = self.next().await;
            if predicate(&event) {
                return event;
            }
        }
    }

    /// The next gateway frame matching `predicate`.
    pub async fn next_frame(
        &mut self,
        mut predicate: impl FnMut(&GatewayFrame) -> bool,
    ) -> (u64, GatewayFrame) {
        loop {
            if let StubEvent::Frame { conn, frame } = self.next().await
                && predicate(&frame)
            {
                return (conn, frame);
            }
        }
    }

    /// Events already recorded after the position, without waiting or
    /// advancing.
    pub fn peek_ready(&self) -> Vec<StubEvent> {
        let events = lock(&self.record.events);
        let from = self.position.saturating_sub(events.base);
        events.kept.iter().skip(from).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(conn: u64) -> StubEvent {
        StubEvent::Ping { conn }
    }

    #[tokio::test]
    async fn a_limited_record_keeps_the_newest_and_cursors_resume_at_the_oldest_kept() {
        let record = Arc::new(Record::new(Some(3)));
        let mut early = EventCursor::new(Arc::clone(&record), 0);
        for conn in 1..=5 {
            record.push(ping(conn));
        }
        assert_eq!(record.snapshot(), [ping(3), ping(4), ping(5)]);
        assert_eq!(record.len(), 5, "positions stay absolute");
        assert_eq!(early.peek_ready(), [ping(3), ping(4), ping(5)]);
        assert_eq!(early.next().await, ping(3), "forgotten events are skipped");
        assert_eq!(early.next().await, ping(4));
        let mut late = EventCursor::at_end(Arc::clone(&record));
        record.push(ping(6));
        assert_eq!(late.next().await, ping(6));
        assert_eq!(early.next().await, ping(5));

        let all = Record::new(None);
        for conn in 1..=5 {
            all.push(ping(conn));
        }
        assert_eq!(
            all.snapshot().len(),
            5,
            "without a limit nothing is forgotten"
        );
    }
}
