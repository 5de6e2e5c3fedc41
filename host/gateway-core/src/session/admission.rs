//! Admission: a delivery's events go to their sessions' queues, bounded by
//! count and bytes, or wait for room (never dropped, never acked early).

use super::*;

impl<E: Egress, A: Agent> Sessions<E, A> {
    /// Hands the events of one delivery to their sessions, then acks
    /// `buffer_id` (relay-contract §5.4) once every event is queued. A
    /// recently seen `buffer_id` is acked again without queueing anything.
    /// While draining nothing is queued and nothing is acked.
    ///
    /// When a queue the delivery needs is full (its session's, or the
    /// gateway-wide bound), this waits until the whole delivery fits: nothing
    /// is dropped and nothing is acked before it is queued. The wait ends
    /// with [`Submitted::Draining`] if the layer stops accepting meanwhile.
    /// Must be called from within a tokio runtime.
    pub async fn submit(&self, events: Vec<Incoming>, buffer_id: Option<&str>) -> Submitted {
        let inner = &self.inner;
        let keyed: Vec<(SessionKey, Incoming)> = events
            .into_iter()
            .map(|incoming| (self.key_of(&incoming), incoming))
            .collect();
        let need = room_needed(&keyed);
        let acked = buffer_id.map(|_| CancellationToken::new());
        let mut waited = false;
        let stops = loop {
            // Registered before looking, so room freed in between still wakes us.
            let room = inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // The lock is released at the end of this block, before any await.
            let step = {
                let mut state = lock(&inner.state);
                if buffer_id.is_some_and(|id| state.recent.contains(id)) {
                    Step::Duplicate
                } else if !state.accepting {
                    Step::Draining
                } else if self.fits(&state, &need) {
                    let mut stops = Vec::new();
                    for (key, incoming) in keyed {
                        self.capture_scope(&incoming.event);
                        if is_stop(&incoming) {
                            self.stop_locally(&state, &key);
                            stops.push(key);
                        } else {
                            self.enqueue(&mut state, key, incoming, acked.clone());
                        }
                    }
                    if let Some(id) = buffer_id {
                        state.recent.insert(id);
                    }
                    break stops;
                } else {
                    Step::Full
                }
            };
            match step {
                Step::Duplicate => {
                    inner.metrics.event_dropped(EventDrop::Duplicate);
                    debug!(buffer_id, "replayed delivery already handled; acking again");
                    if let Some(id) = buffer_id {
                        inner.egress.ack(id).await;
                    }
                    return Submitted::Duplicate;
                }
                Step::Draining => {
                    for _ in &keyed {
                        inner.metrics.event_dropped(EventDrop::Draining);
                    }
                    info!(
                        buffer_id,
                        "draining: delivery not taken and not acked; the connector redelivers it"
                    );
                    return Submitted::Draining;
                }
                Step::Full => {}
            }
            if !waited {
                waited = true;
                inner.metrics.queue_full_wait();
                info!(
                    buffer_id,
                    "queue full: holding the delivery (and the link) until there is room"
                );
            }
            room.await;
        };
        // Releases the queued turns however this function ends.
        let _release = acked.map(CancellationToken::drop_guard);
        for key in stops {
            inner
                .egress
                .interrupt(key.as_str(), Some(STOP_REASON))
                .await;
        }
        if let Some(id) = buffer_id {
            inner.egress.ack(id).await;
        }
        Submitted::Accepted
    }

    /// Whether every session in `need` (and the gateway-wide bound) has room
    /// for its share of a delivery. An empty queue always takes a delivery,
    /// so one larger than a bound cannot wait forever.
    pub(super) fn fits(&self, state: &State, need: &[(SessionKey, usize, usize)]) -> bool {
        let config = &self.inner.config;
        let total: usize = need.iter().map(|(_, n, _)| n).sum();
        let bytes: usize = need.iter().map(|(_, _, b)| b).sum();
        let total_fits = state.queued_total == 0
            || state.queued_total.saturating_add(total) <= config.max_queued_total;
        let bytes_fit = state.queued_bytes == 0
            || state.queued_bytes.saturating_add(bytes) <= config.max_queued_bytes;
        total_fits
            && bytes_fit
            && need.iter().all(|(key, n, _)| {
                let waiting = state.sessions.get(key).map_or(0, |s| s.waiting.len());
                waiting == 0 || waiting.saturating_add(*n) <= config.queue_per_session
            })
    }

    pub(super) fn capture_scope(&self, event: &MessageEvent) {
        let source = &event.source;
        lock(&self.inner.scopes).capture(
            &source.platform,
            &source.chat_id,
            source.scope_id.as_deref(),
            source.user_id.as_deref(),
        );
    }

    /// `/stop`: cancel the running turn here; the caller then egresses
    /// `interrupt` so the connector can stop the session wherever it runs.
    pub(super) fn stop_locally(&self, state: &State, key: &SessionKey) {
        self.inner.metrics.stop_local();
        let running = state.sessions.get(key).and_then(|s| s.running.as_ref());
        if let Some(token) = running {
            token.cancel();
        }
        info!(
            session_key = key.as_str(),
            cancelled = running.is_some(),
            "user /stop"
        );
    }

    /// Queues `incoming`, spawning the session's worker if it has none. The
    /// caller checked the bounds with [`fits`](Self::fits).
    pub(super) fn enqueue(
        &self,
        state: &mut State,
        key: SessionKey,
        incoming: Incoming,
        acked: Option<CancellationToken>,
    ) {
        let session = state
            .sessions
            .entry(key.clone())
            .or_insert_with(Session::new);
        let bytes = weight(&incoming);
        session.waiting.push_back(Queued {
            incoming,
            bytes,
            acked,
        });
        let spawn_worker = !session.worker;
        session.worker = true;
        state.queued_total += 1;
        state.queued_bytes += bytes;
        state.report(&self.inner.metrics);
        if spawn_worker {
            let this = self.clone();
            self.inner.tasks.spawn(async move { this.work(key).await });
        }
    }
}

/// What [`Sessions::submit`] found when it looked at the state.
pub(super) enum Step {
    Duplicate,
    Draining,
    Full,
}

/// Whether `incoming` is a user's `/stop` (handled at once, never queued).
pub(super) fn is_stop(incoming: &Incoming) -> bool {
    incoming.event.text.trim() == STOP_COMMAND
}

/// How many queue places each session needs for a delivery (`/stop`s take
/// none).
/// Per session of a delivery: how many messages it queues there and their
/// [`weight`] in bytes.
pub(super) fn room_needed(keyed: &[(SessionKey, Incoming)]) -> Vec<(SessionKey, usize, usize)> {
    let mut need: Vec<(SessionKey, usize, usize)> = Vec::new();
    for (key, incoming) in keyed {
        if is_stop(incoming) {
            continue;
        }
        let bytes = weight(incoming);
        match need.iter_mut().find(|(k, _, _)| k == key) {
            Some((_, n, b)) => {
                *n += 1;
                *b += bytes;
            }
            None => need.push((key.clone(), 1, bytes)),
        }
    }
    need
}

/// What a queued message holds in memory, estimated without serializing
/// it: its strings plus a fixed allowance for the rest of the struct and
/// each metadata entry.
pub(super) fn weight(incoming: &Incoming) -> usize {
    let event = &incoming.event;
    let source = &event.source;
    let strings = [
        Some(&event.text),
        event.message_id.as_ref(),
        event.reply_to_message_id.as_ref(),
        Some(&source.chat_id),
        source.user_id.as_ref(),
        source.chat_name.as_ref(),
        source.user_name.as_ref(),
        source.thread_id.as_ref(),
        source.chat_topic.as_ref(),
    ];
    let text: usize = strings.iter().flatten().map(|s| s.len()).sum();
    let media: usize = event.media_urls.iter().map(String::len).sum();
    let metadata: usize = incoming
        .metadata
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(64, str::len) + 32)
        .sum();
    text + media + metadata + 256
}
