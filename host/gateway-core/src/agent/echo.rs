//! The `echo` backend, for testing and demos.

use tokio_util::sync::CancellationToken;

use super::{Agent, AgentError, TurnInput};

/// Replies to every event with exactly its text; an empty text gets `(empty)`
/// so the reply is never a blank message a platform would refuse.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoAgent;

impl Agent for EchoAgent {
    fn kind(&self) -> &'static str {
        "echo"
    }

    async fn respond(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
    ) -> Result<String, AgentError> {
        if cancel.is_cancelled() {
            return Err(AgentError::Cancelled);
        }
        if turn.event.text.is_empty() {
            Ok("(empty)".to_owned())
        } else {
            Ok(turn.event.text.clone())
        }
    }
}
