//! Delivery: a session's replies in order, each chunk through the relay.

use super::*;

impl<E: Egress, A: Agent> Sessions<E, A> {
    /// The delivery chain of one session: sends its replies one after
    /// another until none is left. A reply's chunks go out in order, each
    /// after the previous one's result, so the first chunk of a reply is
    /// written as soon as the previous reply is finished.
    pub(super) async fn deliver(self, key: SessionKey) {
        loop {
            let mut reply = {
                let mut state = lock(&self.inner.state);
                let Some(session) = state.sessions.get_mut(&key) else {
                    return;
                };
                let Some(reply) = session.replies.pop_front() else {
                    session.delivering = false;
                    retire_if_idle(&mut state, &key, &self.inner.metrics);
                    return;
                };
                reply
            };
            match reply.stream.take() {
                Some(stream) => self.stream_reply(&key, reply, stream).await,
                None => self.send_reply(&key, reply).await,
            }
        }
    }

    /// Sends one reply's chunks until one fails or the drain cancels it.
    pub(super) async fn send_reply(&self, key: &SessionKey, mut reply: Reply) {
        let mut first = true;
        for chunk in std::mem::take(&mut reply.chunks) {
            if self
                .send_chunk(key, &reply, chunk, &mut first)
                .await
                .is_none()
            {
                // Later pieces without the failed one would read as nonsense,
                // and an ambiguous failure may have been delivered: stop here.
                return;
            }
        }
    }

    /// Sends one piece of `reply` (a `send`, or a `follow_up` on its vaulted
    /// capability), counted and logged; the result when it succeeded. The
    /// first success of a reply (`first`) times what the user waited.
    pub(super) async fn send_chunk(
        &self,
        key: &SessionKey,
        reply: &Reply,
        content: String,
        first: &mut bool,
    ) -> Option<ActionResult> {
        let inner = &self.inner;
        if reply.cancel.is_cancelled() {
            inner.metrics.turn_cancelled();
            return None;
        }
        let metadata = with_scope(&reply.metadata, &reply.scope);
        let action = match &reply.route {
            ReplyRoute::Send => Action::Send {
                chat_id: reply.chat_id.clone(),
                content,
                reply_to: reply.reply_to.clone(),
                metadata,
            },
            ReplyRoute::FollowUp { kind } => Action::FollowUp {
                session_key: key.as_str().to_owned(),
                kind: kind.clone(),
                content,
                metadata,
            },
        };
        let op = action.op();
        let result = self.request_through_reconnects(action, &reply.cancel).await;
        if result.success && std::mem::take(first) {
            let waited = reply.received.elapsed();
            inner
                .metrics
                .latency
                .reply
                .observe(&[&reply.platform], waited);
        }
        self.record_reply(key, op, &result).then_some(result)
    }

    /// Sends `action`; when nothing was written for want of a connection,
    /// waits for the link (up to [`REPLY_RECONNECT_WAIT`], unless the turn is
    /// cancelled) and sends it again. Only `not_connected` is retried: it is
    /// unambiguous, so the retry cannot deliver the reply twice.
    pub(super) async fn request_through_reconnects(
        &self,
        action: Action,
        cancel: &CancellationToken,
    ) -> ActionResult {
        let egress = &self.inner.egress;
        let deadline = tokio::time::Instant::now() + REPLY_RECONNECT_WAIT;
        loop {
            let result = self.inner.request(action.clone()).await;
            if result != ActionResult::not_connected() {
                return result;
            }
            let reconnected = tokio::select! {
                () = cancel.cancelled() => false,
                () = tokio::time::sleep_until(deadline) => false,
                () = egress.until_connected() => true,
            };
            // A link that is closed or revoked answers `not_connected` at
            // once and for good: stop at the deadline rather than spin.
            if !reconnected || tokio::time::Instant::now() >= deadline {
                return result;
            }
            debug!(
                op = action.op(),
                "relay reconnected; sending the reply again"
            );
            // The state may read connected a moment before the new writer is
            // installed: pace the attempts instead of spinning.
            tokio::select! {
                () = cancel.cancelled() => return result,
                () = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }

    /// Counts and logs one reply result; true when it succeeded.
    pub(super) fn record_reply(&self, key: &SessionKey, op: &str, result: &ActionResult) -> bool {
        let metrics = &self.inner.metrics;
        let error = result.error.as_deref().unwrap_or("");
        if result.success {
            metrics.reply_ok();
            true
        } else if result.ambiguous {
            metrics.reply_ambiguous();
            warn!(
                session_key = key.as_str(),
                op, error, "reply outcome unknown; not retried (it may have been delivered)"
            );
            false
        } else {
            metrics.reply_failed();
            warn!(session_key = key.as_str(), op, error, "reply failed");
            false
        }
    }
}
