//! The channel toward the layer above, bounded by count *and* by bytes.
//!
//! The count bound alone is not a memory bound: 256 items of 8 MB each is
//! 2 GB. So the reader also keeps a ledger of the bytes it put in the channel
//! (the length of the line each item came from) and waits, without reading
//! the socket, while the items not yet taken fill the byte budget.
//!
//! The layer above holds a plain `mpsc::Receiver` and does nothing to
//! release bytes. The ledger learns what was taken from the channel itself:
//! a bounded channel returns a slot when its receiver takes an item, so the
//! number of items still inside is `max_capacity - capacity`, and since the
//! channel is FIFO the items taken are the oldest ones. To wait for a take,
//! the reader holds every free slot and asks for one more: only a take can
//! produce it.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::shared::lock;
use crate::state::InboundItem;

/// The receiver is gone: nobody above the link any more.
#[derive(Debug)]
pub(crate) struct Closed;

/// Why [`InboundQueue::try_push`] did not queue an item.
// The item is handed back unboxed, as tokio's `TrySendError` does: boxing it
// would cost an allocation on the path that is already waiting.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum TryPush {
    /// No room (by count or by bytes) right now; the item is handed back.
    Full(InboundItem),
    /// The receiver is gone.
    Closed,
}

/// Sizes of the items in the channel, oldest first, and their sum.
#[derive(Debug, Default)]
struct Ledger {
    sizes: VecDeque<usize>,
    bytes: usize,
}

/// The sending side of the inbound channel. One producer at a time (the
/// current connection's reader); it outlives connections, because items a
/// dead connection queued still occupy memory until they are taken.
#[derive(Debug)]
pub(crate) struct InboundQueue {
    tx: mpsc::Sender<InboundItem>,
    budget: usize,
    ledger: Mutex<Ledger>,
}

impl InboundQueue {
    /// Wrap `tx` with a budget of `budget` bytes.
    pub(crate) fn new(tx: mpsc::Sender<InboundItem>, budget: usize) -> Self {
        Self {
            tx,
            budget,
            ledger: Mutex::new(Ledger::default()),
        }
    }

    /// Whether an item of `size` bytes may be queued now. Anything fits into
    /// an empty channel, so an item larger than the whole budget is delayed,
    /// never stuck.
    fn fits(&self, size: usize) -> bool {
        let in_channel = self.tx.max_capacity() - self.tx.capacity();
        let mut ledger = lock(&self.ledger);
        while ledger.sizes.len() > in_channel {
            let taken = ledger.sizes.pop_front().unwrap_or_default();
            ledger.bytes -= taken;
        }
        ledger.bytes == 0 || ledger.bytes.saturating_add(size) <= self.budget
    }

    fn record(&self, size: usize) {
        let mut ledger = lock(&self.ledger);
        ledger.sizes.push_back(size);
        ledger.bytes = ledger.bytes.saturating_add(size);
    }

    /// Queue `item` (`size` bytes) if there is room now, without waiting.
    #[allow(clippy::result_large_err)] // see `TryPush`
    pub(crate) fn try_push(&self, item: InboundItem, size: usize) -> Result<(), TryPush> {
        if !self.fits(size) {
            return Err(TryPush::Full(item));
        }
        match self.tx.try_send(item) {
            Ok(()) => {
                self.record(size);
                Ok(())
            }
            Err(TrySendError::Full(item)) => Err(TryPush::Full(item)),
            Err(TrySendError::Closed(_)) => Err(TryPush::Closed),
        }
    }

    /// Queue `item` (`size` bytes), waiting for the layer above to take
    /// items until there is room by count and by bytes. Cancel-safe: a
    /// cancelled push queued nothing and holds nothing.
    pub(crate) async fn push(&self, item: InboundItem, size: usize) -> Result<(), Closed> {
        loop {
            if self.fits(size) {
                let slot = self.tx.reserve().await.map_err(|_| Closed)?;
                slot.send(item);
                self.record(size);
                return Ok(());
            }
            self.until_taken().await?;
        }
    }

    /// Wait until the layer above takes at least one item. Holding every
    /// free slot while asking for one more means the request can only be
    /// granted by a take; everything is released on return.
    async fn until_taken(&self) -> Result<(), Closed> {
        let free = self.tx.capacity();
        let _held = if free > 0 {
            Some(self.tx.reserve_many(free).await.map_err(|_| Closed)?)
        } else {
            None
        };
        let _freed_by_a_take = self.tx.reserve().await.map_err(|_| Closed)?;
        Ok(())
    }

    /// Resolves when the receiver is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }

    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        lock(&self.ledger).bytes
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    use super::*;

    fn item(key: &str) -> InboundItem {
        InboundItem::Interrupt {
            session_key: key.to_owned(),
            chat_id: String::new(),
        }
    }

    fn key(item: Option<InboundItem>) -> String {
        match item {
            Some(InboundItem::Interrupt { session_key, .. }) => session_key,
            other => panic!("expected an interrupt, got {other:?}"),
        }
    }

    /// Poll `future` exactly once.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))).await
    }

    #[tokio::test]
    async fn a_full_byte_budget_stops_the_producer_until_an_item_is_taken() {
        // Room for 16 items by count; only 100 bytes.
        let (tx, mut rx) = mpsc::channel(16);
        let queue = InboundQueue::new(tx, 100);
        assert!(queue.try_push(item("a"), 60).is_ok());
        assert!(queue.try_push(item("b"), 40).is_ok());
        let c = match queue.try_push(item("c"), 1) {
            Err(TryPush::Full(c)) => c,
            other => panic!("a third item must not fit 100 bytes, got {other:?}"),
        };
        let mut push = pin!(queue.push(c, 1));
        assert!(
            poll_once(&mut push).await.is_pending(),
            "waits while the budget is full"
        );
        assert!(
            poll_once(&mut push).await.is_pending(),
            "still waits: nothing was taken"
        );
        assert_eq!(key(rx.recv().await), "a");
        assert!(
            matches!(poll_once(&mut push).await, Poll::Ready(Ok(()))),
            "a take makes room and the push completes"
        );
        assert_eq!(queue.queued_bytes(), 41, "`a` released its 60 bytes");
        assert_eq!(key(rx.recv().await), "b");
        assert_eq!(key(rx.recv().await), "c", "nothing lost, order kept");
    }

    #[tokio::test]
    async fn an_item_larger_than_the_budget_passes_once_the_channel_is_empty() {
        let (tx, mut rx) = mpsc::channel(4);
        let queue = InboundQueue::new(tx, 10);
        assert!(
            queue.try_push(item("huge"), 1000).is_ok(),
            "an empty channel takes anything"
        );
        let mut push = pin!(queue.push(item("small"), 1));
        assert!(poll_once(&mut push).await.is_pending());
        assert_eq!(key(rx.recv().await), "huge");
        assert!(matches!(poll_once(&mut push).await, Poll::Ready(Ok(()))));
        assert_eq!(key(rx.recv().await), "small");
    }

    #[tokio::test]
    async fn the_count_bound_still_applies() {
        let (tx, mut rx) = mpsc::channel(1);
        let queue = InboundQueue::new(tx, usize::MAX);
        assert!(queue.try_push(item("a"), 1).is_ok());
        assert!(matches!(
            queue.try_push(item("b"), 1),
            Err(TryPush::Full(_))
        ));
        let mut push = pin!(queue.push(item("b"), 1));
        assert!(poll_once(&mut push).await.is_pending());
        assert_eq!(key(rx.recv().await), "a");
        assert!(matches!(poll_once(&mut push).await, Poll::Ready(Ok(()))));
        assert_eq!(key(rx.recv().await), "b");
    }

    #[tokio::test]
    async fn a_waiting_push_ends_when_the_receiver_is_dropped() {
        let (tx, rx) = mpsc::channel(8);
        let queue = InboundQueue::new(tx, 1);
        assert!(queue.try_push(item("a"), 1).is_ok());
        let mut push = pin!(queue.push(item("b"), 1));
        assert!(poll_once(&mut push).await.is_pending());
        drop(rx);
        assert!(matches!(
            poll_once(&mut push).await,
            Poll::Ready(Err(Closed))
        ));
        assert!(matches!(
            queue.try_push(item("c"), 1),
            Err(TryPush::Closed | TryPush::Full(_))
        ));
    }
}
