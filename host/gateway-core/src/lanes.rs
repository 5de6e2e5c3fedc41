//! Conversions in flight, in lanes.
//!
//! Forwards are converted concurrently, and the events they yield are handed
//! to the sessions in arrival order — but only *within a lane*. A lane is
//! what the converter routes a forward to before any guest runs (for the
//! plugin host: the plugin a platform's forwards enter through), so the
//! forwards of one conversation, which always take the same lane, keep
//! their order, while a slow converter holds back only its own lane: a
//! Discord command is never queued behind an `acme` webhook that takes
//! 50 ms to convert (conversion.md §3.1, fairness).
//!
//! Each lane is bounded (count and body bytes): past that, a forward is
//! refused at once — the slow lane sheds its own backlog — instead of
//! filling the shared window. The whole window is bounded too (count and
//! bytes); when it is full the gateway stops reading the link
//! (backpressure), which only happens when every lane is busy.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;

/// Bounds of the conversion window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimits {
    /// Forwards in flight across all lanes; at this many the link is not
    /// read until one is handed off.
    pub total: usize,
    /// Body bytes in flight across all lanes (same effect).
    pub total_bytes: usize,
    /// Forwards in flight in one lane; more are refused.
    pub per_lane: usize,
    /// Body bytes in flight in one lane; more are refused.
    pub per_lane_bytes: usize,
}

impl Default for LaneLimits {
    fn default() -> Self {
        Self {
            total: 1024,
            total_bytes: 64 << 20,
            per_lane: 256,
            per_lane_bytes: 16 << 20,
        }
    }
}

struct Slot<T> {
    seq: u64,
    bytes: usize,
    done: Option<T>,
}

struct Lane<T> {
    slots: VecDeque<Slot<T>>,
    bytes: usize,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Self {
            slots: VecDeque::new(),
            bytes: 0,
        }
    }
}

/// A lane refused a forward: it already holds its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneFull {
    /// The lane.
    pub lane: Arc<str>,
    /// Forwards in it.
    pub in_flight: usize,
}

/// Conversions in flight, handed off in arrival order within each lane.
pub struct Lanes<'a, T> {
    limits: LaneLimits,
    running: FuturesUnordered<BoxFuture<'a, (Arc<str>, u64, T)>>,
    lanes: HashMap<Arc<str>, Lane<T>>,
    ready: VecDeque<T>,
    next_seq: u64,
    len: usize,
    bytes: usize,
}

impl<'a, T: Send + 'a> Lanes<'a, T> {
    /// An empty window with these bounds.
    pub fn new(limits: LaneLimits) -> Self {
        Self {
            limits,
            running: FuturesUnordered::new(),
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            next_seq: 0,
            len: 0,
            bytes: 0,
        }
    }

    /// Whether another forward may be read from the link.
    pub fn has_room(&self) -> bool {
        self.len < self.limits.total && self.bytes < self.limits.total_bytes
    }

    /// Forwards in flight, or converted and waiting for a lane predecessor.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is in flight or waiting to be handed off.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.ready.is_empty()
    }

    /// Starts `conversion` in `lane`, weighing `bytes`; refused when the
    /// lane holds its share already.
    pub fn push(
        &mut self,
        lane: Arc<str>,
        bytes: usize,
        conversion: impl std::future::Future<Output = T> + Send + 'a,
    ) -> Result<(), LaneFull> {
        let entry = self.lanes.entry(Arc::clone(&lane)).or_default();
        if !entry.slots.is_empty()
            && (entry.slots.len() >= self.limits.per_lane
                || entry.bytes.saturating_add(bytes) > self.limits.per_lane_bytes)
        {
            return Err(LaneFull {
                lane,
                in_flight: entry.slots.len(),
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        entry.slots.push_back(Slot {
            seq,
            bytes,
            done: None,
        });
        entry.bytes += bytes;
        self.len += 1;
        self.bytes += bytes;
        self.running
            .push(Box::pin(async move { (lane, seq, conversion.await) }));
        Ok(())
    }

    /// The next result whose lane predecessors have all been handed off;
    /// `None` when nothing is in flight. Cancel-safe: a result that
    /// completes while the caller stops waiting is kept for the next call.
    pub async fn next(&mut self) -> Option<T> {
        loop {
            if let Some(out) = self.ready.pop_front() {
                return Some(out);
            }
            let (lane, seq, out) = self.running.next().await?;
            self.complete(&lane, seq, out);
        }
    }

    fn complete(&mut self, lane: &Arc<str>, seq: u64, out: T) {
        let Some(entry) = self.lanes.get_mut(lane) else {
            return;
        };
        if let Some(slot) = entry.slots.iter_mut().find(|s| s.seq == seq) {
            slot.done = Some(out);
        }
        while entry.slots.front().is_some_and(|s| s.done.is_some()) {
            let Some(slot) = entry.slots.pop_front() else {
                break;
            };
            entry.bytes -= slot.bytes;
            self.len -= 1;
            self.bytes -= slot.bytes;
            if let Some(out) = slot.done {
                self.ready.push_back(out);
            }
        }
        if entry.slots.is_empty() {
            self.lanes.remove(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    fn limits() -> LaneLimits {
        LaneLimits {
            total: 8,
            total_bytes: 1000,
            per_lane: 3,
            per_lane_bytes: 500,
        }
    }

    async fn gate(rx: oneshot::Receiver<()>, out: &'static str) -> &'static str {
        let _ = rx.await;
        out
    }

    #[tokio::test]
    async fn a_slow_lane_holds_back_only_itself_and_order_holds_within_a_lane() {
        let mut lanes = Lanes::new(limits());
        let (slow_tx, slow_rx) = oneshot::channel();
        let (a1_tx, a1_rx) = oneshot::channel();
        let (a2_tx, a2_rx) = oneshot::channel();
        lanes
            .push("slow".into(), 1, gate(slow_rx, "slow"))
            .expect("room");
        lanes
            .push("fast".into(), 1, gate(a1_rx, "fast-1"))
            .expect("room");
        lanes
            .push("fast".into(), 1, gate(a2_rx, "fast-2"))
            .expect("room");
        // The second fast one finishes first: it waits for the first.
        a2_tx.send(()).expect("gate");
        a1_tx.send(()).expect("gate");
        assert_eq!(lanes.next().await, Some("fast-1"));
        assert_eq!(lanes.next().await, Some("fast-2"));
        assert_eq!(lanes.len(), 1, "the slow one is still in flight");
        slow_tx.send(()).expect("gate");
        assert_eq!(lanes.next().await, Some("slow"));
        assert!(lanes.is_empty());
        assert_eq!(lanes.next().await, None);
    }

    #[tokio::test]
    async fn a_full_lane_refuses_and_the_window_bounds_count_and_bytes() {
        let mut lanes = Lanes::new(limits());
        for _ in 0..3 {
            lanes
                .push("p".into(), 10, std::future::pending::<()>())
                .expect("room");
        }
        let full = lanes.push("p".into(), 10, std::future::pending::<()>());
        assert_eq!(
            full,
            Err(LaneFull {
                lane: "p".into(),
                in_flight: 3
            })
        );
        assert!(lanes.has_room(), "other lanes still fit");
        // Bytes: one lane may not take more than its share...
        assert!(lanes.push("q".into(), 400, std::future::pending()).is_ok());
        assert!(lanes.push("q".into(), 101, std::future::pending()).is_err());
        // ...but a single forward larger than the share still goes alone.
        assert!(lanes.push("r".into(), 600, std::future::pending()).is_ok());
        assert!(
            !lanes.has_room(),
            "1030 bytes in flight, the window holds 1000"
        );
        assert_eq!(lanes.len(), 5);
    }
}
