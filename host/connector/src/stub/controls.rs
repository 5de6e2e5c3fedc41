//! What a test drives on the stub (behind the `test-controls` feature, so
//! the `dev` connector in the shipped binary has none of it): scripted and
//! per-op answers, authentication and descriptors changed mid-run, raw
//! pushes, closes, drops and stalls, and the tokens seen.

use super::*;

impl StubConnector {
    /// Replace the token rotation list / auth mode for future upgrades.
    pub fn set_auth(&self, auth: StubAuth) {
        lock(&self.inner.config).auth = auth;
    }

    /// Replace the descriptors sent on future handshakes.
    pub fn set_descriptors(&self, descriptors: Vec<Value>) {
        lock(&self.inner.config).descriptors = descriptors;
    }

    /// Replace the default answer.
    pub fn set_default_answer(&self, answer: Answer) {
        lock(&self.inner.config).default_answer = answer;
    }

    /// Replace the `going_idle` behaviour.
    pub fn set_going_idle(&self, going_idle: GoingIdle) {
        lock(&self.inner.config).going_idle = going_idle;
    }

    /// Answer every `outbound` of `op` (`send`, `edit`, `typing`,
    /// `follow_up`, `get_chat_info`) with `answer` unless a scripted answer is
    /// queued; `None` goes back to the default answer. For example
    /// `set_answer_for("follow_up", Some(Answer::Failure("no capability
    /// vaulted".into())))` behaves like a connector holding no capability.
    pub fn set_answer_for(&self, op: &str, answer: Option<Answer>) {
        let mut per_op = lock(&self.inner.per_op);
        match answer {
            Some(answer) => per_op.insert(op.to_owned(), answer),
            None => per_op.remove(op),
        };
    }

    /// Queue answers for the next `outbound` actions, in arrival order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        lock(&self.inner.script).extend(answers);
    }

    /// Send raw text as one WebSocket text message.
    pub async fn push_text(&self, text: impl Into<String>) -> Result<(), StubError> {
        self.command(Command::Text(text.into())).await
    }

    /// Send raw bytes as one WebSocket binary message.
    pub async fn push_binary(&self, bytes: impl Into<Vec<u8>>) -> Result<(), StubError> {
        self.command(Command::Binary(bytes.into())).await
    }

    /// Close the current connection with `code` and `reason`.
    pub async fn close(&self, code: u16, reason: impl Into<String>) -> Result<(), StubError> {
        self.command(Command::Close(code, reason.into())).await
    }

    /// Drop the current connection's TCP socket without a close frame.
    pub async fn drop_connection(&self) -> Result<(), StubError> {
        self.command(Command::Drop).await
    }

    /// Stop reading the current connection (a wedged connector): pings go
    /// unanswered and frames pile up in the socket until the gateway gives
    /// up on it. `close`/`drop_connection` still work.
    pub async fn stall(&self) -> Result<(), StubError> {
        self.command(Command::Stall).await
    }

    /// WebSocket upgrades so far (accepted or rejected by token).
    pub fn connection_count(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// The number of the current authenticated connection.
    pub fn current_connection(&self) -> Option<u64> {
        lock(&self.inner.current).as_ref().map(|c| c.conn)
    }

    /// Every bearer token presented so far, in upgrade order.
    pub fn tokens_seen(&self) -> Vec<Option<String>> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                StubEvent::Upgraded { token, .. } => Some(token),
                _ => None,
            })
            .collect()
    }
}
