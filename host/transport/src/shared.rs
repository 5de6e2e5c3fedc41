//! State shared by the handle, the supervisor and the connection tasks.
//!
//! Every lock here is a `std::sync::Mutex` held for a few map operations and
//! never across an `.await`, so contention is short and there is no async
//! lock to reason about.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hermes_protocol::action::{ActionResult, RequestId};
use hermes_protocol::descriptor::Descriptor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::warn;

use crate::config::RelayConfig;
use crate::state::{Counters, LinkState};

/// One encoded frame for the writer. `request` names the outbound action it
/// carries, so a write failure resolves exactly that caller. `bytes` is the
/// frame's share of the queue's byte budget, returned when the writer drops
/// it after the write.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) text: String,
    pub(crate) request: Option<RequestId>,
    pub(crate) bytes: OwnedSemaphorePermit,
}

/// The writer's queue is gone: the connection ended.
#[derive(Debug)]
pub(crate) struct QueueClosed;

/// The writer's queue, bounded by count (the channel) and by bytes: a
/// semaphore holds one permit per byte of budget; each frame takes its
/// length's worth (at most the whole budget, so a large frame waits for an
/// empty queue instead of forever) and gives it back once written. Frames
/// can be large and partly peer-chosen (an `inbound_ack` echoes the peer's
/// `bufferId`), so a count alone would not bound memory while the peer
/// stops reading.
#[derive(Debug, Clone)]
pub(crate) struct OutboundQueue {
    tx: mpsc::Sender<Outgoing>,
    bytes: Arc<Semaphore>,
    budget: u32,
}

impl OutboundQueue {
    /// A queue of at most `capacity` frames and `budget` bytes (each at
    /// least 1; the byte budget is capped at 4 GiB).
    pub(crate) fn new(capacity: usize, budget: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let budget = u32::try_from(budget).unwrap_or(u32::MAX).max(1);
        let bytes = Arc::new(Semaphore::new(budget as usize));
        (Self { tx, bytes, budget }, rx)
    }

    /// Queue one frame, waiting for room by count and by bytes.
    pub(crate) async fn send(
        &self,
        text: String,
        request: Option<RequestId>,
    ) -> Result<(), QueueClosed> {
        let share = u32::try_from(text.len())
            .unwrap_or(u32::MAX)
            .min(self.budget);
        let bytes = Arc::clone(&self.bytes)
            .acquire_many_owned(share)
            .await
            .map_err(|_| QueueClosed)?;
        self.tx
            .send(Outgoing {
                text,
                request,
                bytes,
            })
            .await
            .map_err(|_| QueueClosed)
    }

    /// Fail every sender still waiting for room: the connection is gone.
    pub(crate) fn close(&self) {
        self.bytes.close();
    }
}

/// The live connection, present only between handshake and teardown.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) writer: OutboundQueue,
    /// `bufferId`s acked on this connection (at most once each, §5.4). A new
    /// connection gets a new slot, so the memory resets on reconnect.
    pub(crate) acked: AckedIds,
}

/// How many acked `bufferId`s a connection remembers. The peer chooses the
/// ids, so the memory is a ring: a connection that lives for days cannot
/// grow it. Forgetting an old id only means a (harmless) second ack if the
/// connector replays something that old on the same connection.
pub(crate) const ACKED_MEMORY: usize = 4096;

/// The same memory's bound in bytes of ids: the peer also chooses their
/// length (up to a whole line), so a count alone would not bound it.
pub(crate) const ACKED_MEMORY_BYTES: usize = 1024 * 1024;

/// Distinct platforms a connection may describe with later descriptors
/// (§3.2). The platform string comes from the peer; past this many, further
/// platforms are ignored rather than growing the map without bound.
pub(crate) const MAX_PLATFORM_DESCRIPTORS: usize = 64;

/// The last [`ACKED_MEMORY`] distinct acked ids (at most
/// [`ACKED_MEMORY_BYTES`] of them), oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct AckedIds {
    order: VecDeque<String>,
    members: HashSet<String>,
    bytes: usize,
}

impl AckedIds {
    /// Remember `id`; `false` when it is already remembered.
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        if self.members.contains(id) {
            return false;
        }
        self.order.push_back(id.to_owned());
        self.members.insert(id.to_owned());
        self.bytes += id.len();
        while self.order.len() > ACKED_MEMORY || self.bytes > ACKED_MEMORY_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.bytes -= oldest.len();
            self.members.remove(&oldest);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// Descriptors of the current connection (§3.2): the first is the default;
/// later ones are kept per platform and never replace it.
#[derive(Debug, Default)]
pub(crate) struct Descriptors {
    pub(crate) default: Option<Arc<Descriptor>>,
    pub(crate) per_platform: HashMap<String, Arc<Descriptor>>,
}

/// Lock a mutex, recovering the data if a panicking thread poisoned it: the
/// maps stay structurally valid whatever happened mid-operation.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    /// Waiters of outbound actions keyed by `requestId`. Owned by the link:
    /// whoever removes an entry resolves it, so each caller gets exactly one
    /// result and no entry outlives its caller.
    pub(crate) pending: Mutex<HashMap<RequestId, oneshot::Sender<ActionResult>>>,
    pub(crate) slot: Mutex<Option<Slot>>,
    pub(crate) descriptors: Mutex<Descriptors>,
    pub(crate) state: watch::Sender<LinkState>,
    /// Bumped on every `going_idle_ack`.
    pub(crate) idle_acks: watch::Sender<u64>,
    pub(crate) counters: Counters,
    pub(crate) placeholder: Arc<Descriptor>,
}

impl Shared {
    pub(crate) fn new(config: RelayConfig) -> Self {
        let placeholder = Arc::new(Descriptor::placeholder(config.default_platform()));
        Self {
            config,
            pending: Mutex::new(HashMap::new()),
            slot: Mutex::new(None),
            descriptors: Mutex::new(Descriptors::default()),
            state: watch::Sender::new(LinkState::Connecting),
            idle_acks: watch::Sender::new(0),
            counters: Counters::default(),
            placeholder,
        }
    }

    pub(crate) fn set_state(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    /// Resolve one pending request; `false` when nobody waits for it (late
    /// or unknown id).
    pub(crate) fn resolve(&self, id: &RequestId, result: ActionResult) -> bool {
        let waiter = lock(&self.pending).remove(id);
        match waiter {
            // The caller may have just given up; either way the entry is gone.
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    /// Resolve every pending request at once with `result()`.
    pub(crate) fn settle_all(&self, result: fn() -> ActionResult) {
        let drained: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(result());
        }
    }

    /// The current connection's writer, if the handshake completed.
    pub(crate) fn writer(&self) -> Option<OutboundQueue> {
        lock(&self.slot).as_ref().map(|s| s.writer.clone())
    }

    pub(crate) fn install(&self, writer: OutboundQueue, descriptor: Arc<Descriptor>) {
        lock(&self.descriptors).default = Some(descriptor);
        *lock(&self.slot) = Some(Slot {
            writer,
            acked: AckedIds::default(),
        });
    }

    pub(crate) fn clear_connection(&self) {
        *lock(&self.slot) = None;
        let mut d = lock(&self.descriptors);
        d.default = None;
        d.per_platform.clear();
    }

    pub(crate) fn add_platform_descriptor(&self, descriptor: Descriptor) {
        let mut d = lock(&self.descriptors);
        if d.per_platform.len() >= MAX_PLATFORM_DESCRIPTORS
            && !d.per_platform.contains_key(&descriptor.platform)
        {
            warn!(
                limit = MAX_PLATFORM_DESCRIPTORS,
                "relay sent descriptors for too many platforms; ignoring another"
            );
            return;
        }
        d.per_platform
            .insert(descriptor.platform.clone(), Arc::new(descriptor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_ids_are_a_bounded_ring() {
        let mut acked = AckedIds::default();
        assert!(acked.insert("first"));
        assert!(
            !acked.insert("first"),
            "a second ack of the same id is refused"
        );
        for i in 0..ACKED_MEMORY {
            assert!(acked.insert(&format!("b{i}")));
        }
        assert_eq!(
            acked.len(),
            ACKED_MEMORY,
            "memory never grows past its bound"
        );
        assert!(acked.insert("first"), "the oldest id was forgotten");
    }

    #[test]
    fn acked_ids_are_bounded_in_bytes_too() {
        let mut acked = AckedIds::default();
        let long = |i: usize| format!("{}{i:08}", "x".repeat(256 * 1024 - 8));
        for i in 0..10 {
            assert!(acked.insert(&long(i)));
        }
        assert_eq!(
            acked.len(),
            ACKED_MEMORY_BYTES / (256 * 1024),
            "peer-chosen long ids cannot grow the memory past its byte bound"
        );
        assert!(acked.bytes <= ACKED_MEMORY_BYTES);
        assert!(!acked.insert(&long(9)), "recent ids are remembered");
        assert!(acked.insert(&long(0)), "old ones are forgotten");
    }

    /// Poll `f` once, without a runtime waker: the test polls again itself.
    fn poll<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn the_outbound_queue_is_bounded_in_bytes() {
        let (queue, mut rx) = OutboundQueue::new(16, 100);
        assert!(queue.send("x".repeat(60), None).await.is_ok());
        assert!(queue.send("y".repeat(40), None).await.is_ok());
        let mut third = std::pin::pin!(queue.send("z".into(), None));
        assert!(poll(third.as_mut()).is_pending(), "100 bytes are queued");
        let first = rx.recv().await.expect("queued");
        assert!(
            poll(third.as_mut()).is_pending(),
            "bytes return only once written"
        );
        drop(first);
        assert!(
            poll(third.as_mut()).is_ready(),
            "a written frame makes room"
        );
        // A frame larger than the whole budget waits for an empty queue.
        let (queue, mut rx) = OutboundQueue::new(16, 10);
        assert!(queue.send("a".into(), None).await.is_ok());
        let mut big = std::pin::pin!(queue.send("b".repeat(1000), None));
        assert!(poll(big.as_mut()).is_pending());
        drop(rx.recv().await);
        assert!(poll(big.as_mut()).is_ready());
        // Closing fails whoever still waits.
        let (queue, _rx) = OutboundQueue::new(16, 1);
        assert!(queue.send("a".into(), None).await.is_ok());
        let mut waiting = std::pin::pin!(queue.send("b".into(), None));
        assert!(poll(waiting.as_mut()).is_pending());
        queue.close();
        assert!(matches!(
            poll(waiting.as_mut()),
            std::task::Poll::Ready(Err(QueueClosed))
        ));
    }

    #[test]
    fn per_platform_descriptors_are_capped() {
        let config = RelayConfig::new("ws://127.0.0.1:1", None, None, true).expect("config");
        let shared = Shared::new(config);
        for i in 0..MAX_PLATFORM_DESCRIPTORS + 10 {
            shared.add_platform_descriptor(Descriptor::placeholder(&format!("p{i}")));
        }
        let d = lock(&shared.descriptors);
        assert_eq!(d.per_platform.len(), MAX_PLATFORM_DESCRIPTORS);
        assert!(
            d.per_platform.contains_key("p0"),
            "earlier platforms are kept"
        );
        drop(d);
        // A platform already known may still be updated at the cap.
        let mut updated = Descriptor::placeholder("p0");
        updated.max_message_length = 7;
        shared.add_platform_descriptor(updated);
        assert_eq!(
            lock(&shared.descriptors).per_platform["p0"].max_message_length,
            7
        );
    }
}
