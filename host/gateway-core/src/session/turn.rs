//! One turn: the agent's answer to one event, split for its platform.

use super::stream::StreamEnd;
use super::*;
use crate::agent::ReplySink;

impl<E: Egress, A: Agent> Sessions<E, A> {
    /// Runs one turn up to its computed answer, split into chunks: the reply
    /// to hand to delivery (with its `place`), or `None` when there is none.
    pub(super) async fn run_turn(
        &self,
        key: &SessionKey,
        incoming: Incoming,
        cancel: CancellationToken,
        place: OwnedSemaphorePermit,
    ) -> Option<Reply> {
        let inner = &self.inner;
        inner.metrics.turn_started();
        let chat_id = incoming.event.source.chat_id.clone();
        // Every action of this turn carries the event's own scope and
        // author, whatever the chat's memory holds by then (§5.6).
        let scope = ChatScope::of(&incoming.event.source);
        let descriptor = inner.egress.descriptor(&incoming.event.source.platform);
        let platform = incoming.event.source.platform.clone();
        let turn = TurnInput {
            session_key: key.clone(),
            event: incoming.event,
        };

        // A streaming agent whose reply may be shown as it grows: the reply
        // joins the session's delivery chain now (after every earlier reply)
        // and is fed while the agent writes (`stream.rs`).
        let mut place = Some(place);
        let streamed = inner.agent.streams()
            && inner
                .config
                .streaming
                .applies(&descriptor, &incoming.route, &platform);
        let (sink, stream_end) = if streamed {
            let (sink, text) = ReplySink::channel();
            let (end_tx, end) = tokio::sync::watch::channel(None);
            let reply = Reply {
                chunks: Vec::new(),
                stream: Some(stream::StreamReply { text, end }),
                chat_id: chat_id.clone(),
                reply_to: turn.event.message_id.clone(),
                route: incoming.route.clone(),
                metadata: incoming.metadata.clone(),
                scope: scope.clone(),
                cancel: cancel.clone(),
                received: incoming.received,
                platform: platform.clone(),
                _place: place.take()?,
            };
            self.hand_off(key, reply);
            (sink, Some(end_tx))
        } else {
            (ReplySink::none(), None)
        };

        // Typing runs alongside the agent but never delays the reply: once the
        // agent answers, an unfinished typing request is simply dropped. It
        // is sent only once the agent has taken `typing_delay`.
        let typing = async {
            if descriptor.supports_op("typing") && !chat_id.is_empty() {
                let delay = inner.config.typing_delay;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let metadata = with_scope(&incoming.metadata, &scope);
                let result = inner
                    .request(Action::Typing {
                        chat_id: chat_id.clone(),
                        content: None,
                        metadata,
                    })
                    .await;
                if !result.success {
                    debug!(
                        error = result.error.as_deref().unwrap_or(""),
                        "typing indicator failed"
                    );
                }
            }
            std::future::pending::<()>().await;
        };
        let timeout = inner.config.turn_timeout;
        let answer = async {
            tokio::select! {
                biased;
                () = cancel.cancelled() => Err(AgentError::Cancelled),
                result = tokio::time::timeout(timeout, inner.agent.respond_streaming(&turn, cancel.clone(), sink)) => {
                    result.unwrap_or(Err(AgentError::TimedOut(timeout)))
                }
            }
        };
        // Biased so the typing request is issued before the agent first runs.
        let started = std::time::Instant::now();
        let answer = tokio::select! {
            biased;
            () = typing => Err(AgentError::Cancelled),
            answer = answer => answer,
        };

        let outcome = match &answer {
            _ if cancel.is_cancelled() => "cancelled",
            Err(AgentError::Cancelled) => "cancelled",
            Ok(_) => "completed",
            Err(_) => "failed",
        };
        inner
            .metrics
            .latency
            .turn
            .observe(&[inner.agent.kind(), outcome], started.elapsed());
        let end = match answer {
            _ if cancel.is_cancelled() => {
                inner.metrics.turn_cancelled();
                info!(session_key = key.as_str(), "turn cancelled");
                StreamEnd::Cancelled
            }
            Err(AgentError::Cancelled) => {
                inner.metrics.turn_cancelled();
                StreamEnd::Cancelled
            }
            Ok(text) => {
                inner.metrics.turn_completed();
                StreamEnd::Completed(text)
            }
            Err(error) => {
                inner.metrics.turn_failed();
                warn!(session_key = key.as_str(), %error, "agent failed; sending an error reply");
                StreamEnd::Failed(error.user_message().to_owned())
            }
        };
        if let Some(stream_end) = stream_end {
            // The streamed reply's delivery finishes it.
            let _ = stream_end.send(Some(end));
            return None;
        }
        let text = match end {
            StreamEnd::Cancelled => return None,
            StreamEnd::Completed(text) | StreamEnd::Failed(text) => text,
        };
        if text.is_empty() {
            debug!(
                session_key = key.as_str(),
                "agent answered nothing; no reply sent"
            );
            return None;
        }

        let chunks = split_message(
            &text,
            descriptor.max_message_length,
            descriptor.len_unit,
            descriptor.code_blocks(),
        );
        Some(Reply {
            chunks,
            stream: None,
            chat_id,
            reply_to: turn.event.message_id,
            route: incoming.route,
            metadata: incoming.metadata,
            scope,
            cancel,
            received: incoming.received,
            platform,
            _place: place.take()?,
        })
    }
}
