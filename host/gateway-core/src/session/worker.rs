//! The worker of one session: its turns in order, one at a time.

use super::*;
use tracing::Instrument;

impl<E: Egress, A: Agent> Sessions<E, A> {
    /// The worker of one session: runs its turns in order until the queue is
    /// empty, handing each answer to the session's delivery chain.
    pub(super) async fn work(self, key: SessionKey) {
        let inner = &self.inner;
        loop {
            let Some(places) = lock(&inner.state)
                .sessions
                .get(&key)
                .map(|s| Arc::clone(&s.reply_places))
            else {
                return;
            };
            // A place for the reply first, then a turn slot: a session whose
            // replies are backed up waits without holding a slot others need.
            // This is the only wait on reply results (see the module docs).
            let permits = async {
                let place = places.acquire_owned().await;
                let slot = Arc::clone(&inner.turn_slots).acquire_owned().await;
                (place, slot)
            };
            let permits = tokio::select! {
                permits = permits => permits,
                () = inner.all_turns.cancelled() => {
                    self.abandon(&key);
                    return;
                }
            };
            // The semaphores are never closed, so this only guards against the impossible.
            let (Ok(place), Ok(_slot)) = permits else {
                self.abandon(&key);
                return;
            };
            let (queued, cancel) = {
                let mut state = lock(&inner.state);
                let Some(session) = state.sessions.get_mut(&key) else {
                    return;
                };
                let Some(queued) = session.waiting.pop_front() else {
                    // Empty: this worker ends. The session is forgotten once
                    // its replies are out too; a later event spawns a fresh worker.
                    session.worker = false;
                    retire_if_idle(&mut state, &key, &inner.metrics);
                    return;
                };
                let cancel = inner.all_turns.child_token();
                session.running = Some(cancel.clone());
                state.queued_total = state.queued_total.saturating_sub(1);
                state.queued_bytes = state.queued_bytes.saturating_sub(queued.bytes);
                state.report(&inner.metrics);
                (queued, cancel)
            };
            inner.room.notify_waiters();
            if let Some(acked) = &queued.acked {
                acked.cancelled().await;
            }
            // Every log line of the turn (agent, delivery failures) carries
            // what an operator follows one conversation by.
            let origin = queued.incoming.origin.as_ref();
            let span = tracing::info_span!(
                "turn",
                session_key = key.as_str(),
                platform = queued.incoming.event.source.platform.as_str(),
                plugin = origin.map(|o| o.plugin.as_str()),
                tenant = origin.and_then(|o| o.tenant.as_deref()),
            );
            let reply = self
                .run_turn(&key, queued.incoming, cancel, place)
                .instrument(span)
                .await;
            if let Some(session) = lock(&inner.state).sessions.get_mut(&key) {
                session.running = None;
            }
            if let Some(reply) = reply {
                self.hand_off(&key, reply);
            }
        }
    }

    /// Puts `reply` in `key`'s delivery chain, starting the chain's task if
    /// none runs: replies go out strictly in the order handed off.
    pub(super) fn hand_off(&self, key: &SessionKey, reply: Reply) {
        let inner = &self.inner;
        let mut state = lock(&inner.state);
        let Some(session) = state.sessions.get_mut(key) else {
            return;
        };
        session.replies.push_back(reply);
        if !session.delivering {
            session.delivering = true;
            let this = self.clone();
            let key = key.clone();
            inner.tasks.spawn(async move { this.deliver(key).await });
        }
    }

    /// Drops whatever still waits in `key`'s queue and ends its worker: only
    /// when the drain's grace period ran out (the count is logged by
    /// [`drain`](Self::drain)). Its delivery chain, if any, winds down on its
    /// own (every reply's token is cancelled by then).
    pub(super) fn abandon(&self, key: &SessionKey) {
        let mut state = lock(&self.inner.state);
        if let Some(session) = state.sessions.get_mut(key) {
            let waiting = std::mem::take(&mut session.waiting);
            let dropped = waiting.len();
            let bytes: usize = waiting.iter().map(|q| q.bytes).sum();
            session.worker = false;
            state.queued_total = state.queued_total.saturating_sub(dropped);
            state.queued_bytes = state.queued_bytes.saturating_sub(bytes);
            for _ in 0..dropped {
                self.inner.metrics.turn_cancelled();
            }
            retire_if_idle(&mut state, key, &self.inner.metrics);
        }
        drop(state);
        self.inner.room.notify_waiters();
    }
}
