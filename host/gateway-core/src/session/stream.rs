//! A streamed reply: a streaming agent's text shown as it grows.
//!
//! The turn hands the reply to the session's delivery chain as soon as the
//! agent starts (so it still goes out after every earlier reply of the
//! session), and the agent writes into a [`ReplySink`](crate::agent::ReplySink)
//! that this side reads. Once there is enough text (or the agent has been
//! writing a while) the first piece is sent; from then on, at most once per
//! `edit_interval`, the messages are brought in line with the text so far:
//! the text is split exactly as a finished reply would be
//! ([`split_message_chunks`]), each message shows its chunk (an `edit` where
//! it changed, one at a time), and a chunk with no message yet is sent as a
//! new one — so a reply that outgrows `max_message_length` continues in a
//! second message, cut at the same boundaries, fences balanced. When the
//! agent finishes, a last round sets the exact split of its whole text.
//!
//! A failed `edit` (the message was deleted, say) stops the edits: what the
//! frozen messages do not show is sent as new messages at the end, so no
//! text is lost and nothing is retried in a loop. An interrupt or `/stop`
//! leaves the messages as they are, with the configured marker appended by
//! one last edit; nothing is sent after it. An agent that finishes before
//! the first piece was due is answered exactly as if it had not streamed.

use std::time::Instant;

use hermes_protocol::split::split_message_chunks;
use tokio::sync::watch;

use super::*;

/// How a streamed reply's agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// The whole reply.
    Completed(String),
    /// The agent failed; the text to tell the user.
    Failed(String),
    /// Interrupt, `/stop` or drain.
    Cancelled,
}

/// The reading side of a streamed reply.
pub(super) struct StreamReply {
    /// The text so far.
    pub(super) text: watch::Receiver<String>,
    /// Set once, when the agent is done.
    pub(super) end: watch::Receiver<Option<StreamEnd>>,
}

/// One message of the reply, as the platform shows it.
struct Shown {
    /// The connector's id of it, needed to edit it.
    id: Option<String>,
    /// The text it shows.
    text: String,
    /// Where, in the reply, the part of the text it shows ends (bytes).
    body_end: usize,
}

/// The messages of one streamed reply.
struct Messages {
    shown: Vec<Shown>,
    /// An edit failed: no more edits or sends until the end.
    frozen: bool,
    /// The message whose edit failed (what it shows stays as it was).
    frozen_at: Option<usize>,
    /// A send failed: the reply is over.
    failed: bool,
    /// Whether the next successful send is the reply's first.
    first: bool,
}

impl<E: Egress, A: Agent> Sessions<E, A> {
    /// Delivers a streamed reply (see the module docs).
    pub(super) async fn stream_reply(
        &self,
        key: &SessionKey,
        reply: Reply,
        mut stream: StreamReply,
    ) {
        let config = &self.inner.config.streaming;
        let mut m = Messages {
            shown: Vec::new(),
            frozen: false,
            frozen_at: None,
            failed: false,
            first: true,
        };
        let started = Instant::now();
        let mut last_round = started;
        loop {
            let end = stream.end.borrow_and_update().clone();
            if let Some(end) = end {
                return self.finish_stream(key, &reply, &mut m, &stream, end).await;
            }
            if reply.cancel.is_cancelled() {
                // Interrupted or drained; the agent's own end follows.
                return self
                    .finish_stream(key, &reply, &mut m, &stream, StreamEnd::Cancelled)
                    .await;
            }
            let now = Instant::now();
            let due = if m.shown.is_empty() {
                let text = stream.text.borrow();
                text.chars().count() >= config.first_chunk_chars
                    || (now >= started + config.first_chunk_delay && !text.trim().is_empty())
            } else {
                now >= last_round + config.edit_interval
            };
            if due && !m.frozen {
                let text = stream.text.borrow().clone();
                self.show(key, &reply, &mut m, &text).await;
                if m.failed {
                    return;
                }
                last_round = Instant::now();
            }
            // Before the first piece, every new token may make it due; after
            // it, only the clock does (a wake per token would be a wake and
            // a copy of the text per token for nothing).
            let waiting_for_first = m.shown.is_empty();
            let deadline = if waiting_for_first {
                started + config.first_chunk_delay
            } else {
                last_round + config.edit_interval
            };
            let deadline = tokio::time::Instant::from_std(deadline.max(Instant::now()));
            tokio::select! {
                biased;
                () = reply.cancel.cancelled() => {}
                changed = stream.end.changed() => {
                    if changed.is_err() {
                        // The turn is gone without saying how it ended.
                        return self
                            .finish_stream(key, &reply, &mut m, &stream, StreamEnd::Cancelled)
                            .await;
                    }
                }
                _ = stream.text.changed(), if waiting_for_first => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The last round, by how the agent ended.
    async fn finish_stream(
        &self,
        key: &SessionKey,
        reply: &Reply,
        m: &mut Messages,
        stream: &StreamReply,
        end: StreamEnd,
    ) {
        match end {
            StreamEnd::Completed(text) => self.settle(key, reply, m, &text).await,
            StreamEnd::Failed(message) => {
                if !m.shown.is_empty() {
                    let so_far = stream.text.borrow().clone();
                    self.settle(key, reply, m, &so_far).await;
                }
                if !m.failed {
                    self.send_split(key, reply, m, &message).await;
                }
            }
            StreamEnd::Cancelled => {
                let marker = &self.inner.config.streaming.interrupt_marker;
                if m.frozen || marker.is_empty() {
                    return;
                }
                let Some(last) = m.shown.last() else {
                    return;
                };
                if let Some(id) = last.id.clone() {
                    let content = format!("{}{marker}", last.text);
                    // Best effort, and after the interrupt nothing else.
                    let _ = self.edit_message(key, reply, id, content).await;
                }
            }
        }
    }

    /// The messages brought to the exact split of `text`, the agent's whole
    /// reply; after a failed edit, what the frozen messages do not show is
    /// sent as new messages.
    async fn settle(&self, key: &SessionKey, reply: &Reply, m: &mut Messages, text: &str) {
        if m.shown.is_empty() {
            // Never shown while it grew: exactly the non-streamed reply.
            return self.send_split(key, reply, m, text).await;
        }
        if !m.frozen {
            self.show(key, reply, m, text).await;
        }
        if m.frozen && !m.failed {
            // From where the frozen message stops showing the text: messages
            // after it may repeat some of it, but nothing is lost.
            let covered = m
                .frozen_at
                .and_then(|i| m.shown.get(i))
                .or(m.shown.last())
                .map_or(0, |s| s.body_end);
            let rest = text.get(covered..).unwrap_or_default();
            self.send_split(key, reply, m, rest).await;
        }
    }

    /// `text` split for the platform, each chunk sent as a new message.
    async fn send_split(&self, key: &SessionKey, reply: &Reply, m: &mut Messages, text: &str) {
        let d = self.inner.egress.descriptor(&reply.platform);
        for chunk in split_message(text, d.max_message_length, d.len_unit, d.code_blocks()) {
            if self
                .send_chunk(key, reply, chunk, &mut m.first)
                .await
                .is_none()
            {
                m.failed = true;
                return;
            }
        }
    }

    /// One round: every message shows its chunk of `text` (an edit where
    /// it changed), and chunks beyond the last message are sent.
    async fn show(&self, key: &SessionKey, reply: &Reply, m: &mut Messages, text: &str) {
        let d = self.inner.egress.descriptor(&reply.platform);
        let chunks = split_message_chunks(text, d.max_message_length, d.len_unit, d.code_blocks());
        let mut body_end = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            body_end += chunk.body.len();
            let rendered = chunk.render();
            match m.shown.get(i) {
                Some(shown) if shown.text == rendered => {}
                Some(shown) => {
                    let edited = match shown.id.clone() {
                        Some(id) => self.edit_message(key, reply, id, rendered.clone()).await,
                        // A message the connector gave no id cannot change.
                        None => false,
                    };
                    if !edited {
                        m.frozen = true;
                        m.frozen_at = Some(i);
                        return;
                    }
                    m.shown[i].text = rendered;
                    m.shown[i].body_end = body_end;
                }
                None => {
                    let Some(result) = self
                        .send_chunk(key, reply, rendered.clone(), &mut m.first)
                        .await
                    else {
                        m.failed = true;
                        return;
                    };
                    m.shown.push(Shown {
                        id: result.message_id,
                        text: rendered,
                        body_end,
                    });
                }
            }
        }
    }

    /// Edits a message of `reply`; whether it worked. A failure is logged
    /// (the caller stops editing), never retried.
    async fn edit_message(
        &self,
        key: &SessionKey,
        reply: &Reply,
        message_id: String,
        content: String,
    ) -> bool {
        let action = Action::Edit {
            chat_id: reply.chat_id.clone(),
            message_id,
            content,
            metadata: with_scope(&reply.metadata, &reply.scope),
        };
        let result = self.inner.request(action).await;
        if !result.success {
            warn!(
                session_key = key.as_str(),
                error = result.error.as_deref().unwrap_or(""),
                "edit of a streamed reply failed; the rest goes out as new messages"
            );
        }
        result.success
    }
}
