//! What a [`StubConnector`](super::StubConnector) is configured with, and
//! its one error.

use hermes_protocol::descriptor::Descriptor;
use serde_json::Value;
use std::time::Duration;

/// How the stub authenticates upgrades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StubAuth {
    /// Verify the bearer token against this rotation list (like production).
    Tokens(Vec<String>),
    /// Accept every upgrade (a connector set up for unauthenticated local
    /// development).
    Open,
}

/// How the stub answers one `outbound` action.
///
/// Unlike the production connector, the default [`Answer::Success`] behaves
/// as if every capability were vaulted for every session and every tenant
/// matched: `follow_up` always succeeds. The real connector answers
/// `success: false` when no capability of that kind is vaulted for the
/// session or the tenant does not match; to test that path, give `follow_up`
/// a failure with [`StubConnector::set_answer_for`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `success: true`; `send`/`edit`/`follow_up` get a fresh `message_id`,
    /// `get_chat_info` gets `name` = the chat id and `type` = `dm`.
    Success,
    /// `success: false` with this error text.
    Failure(String),
    /// Exactly this result object.
    Result(Value),
    /// The inner answer, after a delay (later requests are answered first:
    /// out-of-order results).
    Delay(Duration, Box<Answer>),
    /// No answer at all.
    Never,
}

/// Whether the stub acknowledges `going_idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoingIdle {
    /// Answer with `going_idle_ack`.
    Ack,
    /// Stay silent.
    Ignore,
}

/// The stub's behaviour; every field can also be changed while it runs.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// Upgrade authentication.
    pub auth: StubAuth,
    /// Descriptor objects sent, in order, after the first `hello` of each
    /// connection. The first becomes the gateway's default. Raw JSON so a
    /// test can send a descriptor that breaks the rules; empty = never send
    /// one.
    pub descriptors: Vec<Value>,
    /// Answer for an `outbound` when no scripted answer is queued.
    pub default_answer: Answer,
    /// `going_idle` behaviour.
    pub going_idle: GoingIdle,
    /// Events the record keeps: `None` keeps all (tests read the whole
    /// record back); `dev` keeps the newest few thousand, so a long session
    /// holds neither every frame nor every bearer token it saw.
    pub record_limit: Option<usize>,
}

impl StubConfig {
    /// A connector that verifies tokens against `secrets` and describes
    /// itself as the placeholder `relay` platform.
    pub fn with_secrets<S: Into<String>>(secrets: impl IntoIterator<Item = S>) -> Self {
        Self {
            auth: StubAuth::Tokens(secrets.into_iter().map(Into::into).collect()),
            descriptors: vec![descriptor_value(&Descriptor::placeholder("relay"))],
            default_answer: Answer::Success,
            going_idle: GoingIdle::Ack,
            record_limit: None,
        }
    }
}

/// A descriptor as the JSON object a connector sends.
pub fn descriptor_value(descriptor: &Descriptor) -> Value {
    serde_json::to_value(descriptor).unwrap_or(Value::Null)
}

/// Why a push to the gateway could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StubError {
    /// No authenticated connection is open.
    #[error("no gateway is connected to the stub connector")]
    NoConnection,
}
