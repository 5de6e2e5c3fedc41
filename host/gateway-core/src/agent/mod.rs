//! Agent backends: what answers a turn.
//!
//! An agent gets the session key and the event of one turn plus a
//! [`CancellationToken`], and returns the reply text. Cancellation must really
//! stop the work: the `exec` backend kills the child's whole process group,
//! the `openai` backend drops the HTTP stream.
//!
//! Backends are chosen with a spec string (`cli.md`, `--agent`):
//!
//! | spec | backend |
//! | --- | --- |
//! | `echo` | [`EchoAgent`]: replies exactly the event text, `(empty)` for none |
//! | `exec:COMMAND` | [`ExecAgent`]: `sh -c COMMAND` per turn, JSON on stdin, stdout is the reply |
//! | `openai:BASE_URL` | [`OpenAiAgent`]: streaming chat completions with per-session history |

mod echo;
mod exec;
mod openai;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use hermes_protocol::event::MessageEvent;
use hermes_protocol::session::SessionKey;
use tokio_util::sync::CancellationToken;

pub use echo::EchoAgent;
pub use exec::{BASE_ENV, ExecAgent, NEVER_PASSED};
pub use openai::{OpenAiAgent, OpenAiOptions};

/// Everything an agent needs to answer one turn.
#[derive(Debug, Clone)]
pub struct TurnInput {
    /// The session the turn belongs to (relay-contract §5.3).
    pub session_key: SessionKey,
    /// The user's message.
    pub event: MessageEvent,
}

/// Why an agent produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The turn was cancelled (interrupt, `/stop`, drain). No reply is sent.
    #[error("turn cancelled")]
    Cancelled,
    /// The agent did not finish within the turn timeout.
    #[error("agent timed out after {0:?}")]
    TimedOut(Duration),
    /// The `exec` command could not be started or talked to.
    #[error("agent command failed to run: {0}")]
    Io(#[from] std::io::Error),
    /// The `exec` command exited unsuccessfully.
    #[error("agent command exited with {status}{}", stderr_suffix(.stderr))]
    Exit {
        /// The exit status as the OS reports it.
        status: String,
        /// The end of what the command wrote to stderr, if anything.
        stderr: String,
    },
    /// The chat-completions request failed before or during the response.
    #[error("chat completion request failed: {0}")]
    Http(String),
    /// The chat-completions server answered with an error status.
    #[error("chat completion server answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The stream carried something that is not a chat-completion chunk.
    #[error("chat completion stream malformed: {0}")]
    Stream(String),
}

impl AgentError {
    /// What the chat user is told when the agent produced no answer. It never
    /// carries the error's detail: an exit status, a command's stderr or a
    /// model server's error body can hold paths, keys or other tenants' data,
    /// and the operator has it in the log (`agent failed`).
    pub fn user_message(&self) -> &'static str {
        match self {
            AgentError::TimedOut(_) => "⚠️ The agent took too long to answer. Please try again.",
            _ => "⚠️ The agent could not answer right now. Please try again later.",
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Something that answers turns.
///
/// Implementations must return promptly once `cancel` fires, having stopped
/// every side effect of the turn.
pub trait Agent: Send + Sync + 'static {
    /// The kind of backend (`echo`, `exec`, `openai`, …): the `agent`
    /// label of the turn histogram, never a command or a URL.
    fn kind(&self) -> &'static str {
        "custom"
    }

    /// Whether [`respond_streaming`](Self::respond_streaming) writes the
    /// reply into its sink as it grows (then the session layer can show it
    /// growing, where the platform allows edits).
    fn streams(&self) -> bool {
        false
    }

    /// [`respond`](Self::respond), writing the reply into `sink` as it
    /// grows. The returned text is the whole reply, and what the sink holds
    /// at the end is a prefix of it (normally all of it). By default the
    /// reply is not streamed.
    fn respond_streaming(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
        sink: ReplySink,
    ) -> impl Future<Output = Result<String, AgentError>> + Send {
        let _ = sink;
        self.respond(turn, cancel)
    }

    /// Produces the reply text for `turn`.
    fn respond(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<String, AgentError>> + Send;
}

/// Where a streaming agent writes its reply as it grows: the text so far,
/// read by whoever shows it (the session layer's delivery). Bounded by what
/// the agent itself keeps of a reply. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ReplySink(Option<std::sync::Arc<tokio::sync::watch::Sender<String>>>);

impl ReplySink {
    /// A sink nobody reads.
    pub fn none() -> Self {
        Self(None)
    }

    /// A sink, and the receiver of the text it accumulates.
    pub fn channel() -> (Self, tokio::sync::watch::Receiver<String>) {
        let (tx, rx) = tokio::sync::watch::channel(String::new());
        (Self(Some(std::sync::Arc::new(tx))), rx)
    }

    /// Appends `piece` to the reply so far.
    pub fn push(&self, piece: &str) {
        if let Some(tx) = &self.0
            && !piece.is_empty()
        {
            tx.send_modify(|text| text.push_str(piece));
        }
    }
}

/// A parsed `--agent` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSpec {
    /// `echo`.
    Echo,
    /// `exec:COMMAND`; the command is run through `sh -c`.
    Exec(String),
    /// `openai:BASE_URL`; the base URL of an OpenAI-compatible API (e.g. `http://host/v1`).
    OpenAi(String),
}

/// Why an `--agent` spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentSpecError {
    /// The spec names no known backend.
    #[error("unknown agent `{0}`: expected `echo`, `exec:COMMAND` or `openai:BASE_URL`")]
    Unknown(String),
    /// `exec:` with nothing to run.
    #[error("`exec:` needs a command, e.g. `exec:./my-agent.sh`")]
    EmptyCommand,
    /// `openai:` with no http(s) base URL.
    #[error("`openai:` needs an http:// or https:// base URL, got `{0}`")]
    BadBaseUrl(String),
}

impl FromStr for AgentSpec {
    type Err = AgentSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        if spec == "echo" {
            return Ok(AgentSpec::Echo);
        }
        if let Some(command) = spec.strip_prefix("exec:") {
            if command.trim().is_empty() {
                return Err(AgentSpecError::EmptyCommand);
            }
            return Ok(AgentSpec::Exec(command.to_owned()));
        }
        if let Some(url) = spec.strip_prefix("openai:") {
            let url = url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.len() <= "https://".len()
            {
                return Err(AgentSpecError::BadBaseUrl(url.to_owned()));
            }
            return Ok(AgentSpec::OpenAi(url.trim_end_matches('/').to_owned()));
        }
        Err(AgentSpecError::Unknown(spec.to_owned()))
    }
}

/// The longest one turn may take, for the session layer and for the `exec:`
/// child alike (one number, one place).
pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(300);

/// Settings shared by the backends built from a spec. `Debug` never prints
/// the API key.
#[derive(Clone)]
pub struct AgentOptions {
    /// Upper bound on one `exec` turn; the child is killed after it.
    pub turn_timeout: Duration,
    /// Model name for `openai:` (`--model`).
    pub model: String,
    /// Bearer key for `openai:` (`OPENAI_API_KEY`); no header when absent.
    pub api_key: Option<String>,
    /// Messages of history kept per session for `openai:`.
    pub history_messages: usize,
    /// Variables an `exec:` child gets on top of [`exec::BASE_ENV`]
    /// (`HERMES_AGENT_ENV`); `Debug` prints the names only.
    pub exec_env: Vec<(String, String)>,
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("turn_timeout", &self.turn_timeout)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("history_messages", &self.history_messages)
            .field(
                "exec_env",
                &self.exec_env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            turn_timeout: DEFAULT_TURN_TIMEOUT,
            model: "gpt-4o-mini".to_owned(),
            api_key: None,
            history_messages: 20,
            exec_env: Vec::new(),
        }
    }
}

/// One of the built-in backends, chosen at start from a spec.
///
/// An enum rather than a trait object: the set is closed and the session
/// layer stays generic over [`Agent`] without boxing futures.
#[derive(Debug)]
pub enum AgentBackend {
    /// See [`EchoAgent`].
    Echo(EchoAgent),
    /// See [`ExecAgent`].
    Exec(ExecAgent),
    /// See [`OpenAiAgent`].
    OpenAi(OpenAiAgent),
}

impl AgentBackend {
    /// Builds the backend `spec` names.
    pub fn from_spec(spec: &AgentSpec, options: &AgentOptions) -> Result<Self, AgentError> {
        Ok(match spec {
            AgentSpec::Echo => AgentBackend::Echo(EchoAgent),
            AgentSpec::Exec(command) => AgentBackend::Exec(
                ExecAgent::new(command.clone(), options.turn_timeout)
                    .with_env(options.exec_env.clone()),
            ),
            AgentSpec::OpenAi(base_url) => AgentBackend::OpenAi(OpenAiAgent::new(OpenAiOptions {
                base_url: base_url.clone(),
                model: options.model.clone(),
                api_key: options.api_key.clone(),
                history_messages: options.history_messages,
                ..OpenAiOptions::default()
            })?),
        })
    }
}

impl Agent for AgentBackend {
    fn streams(&self) -> bool {
        match self {
            AgentBackend::Echo(a) => a.streams(),
            AgentBackend::Exec(a) => a.streams(),
            AgentBackend::OpenAi(a) => a.streams(),
        }
    }

    async fn respond_streaming(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
        sink: ReplySink,
    ) -> Result<String, AgentError> {
        match self {
            AgentBackend::Echo(a) => a.respond_streaming(turn, cancel, sink).await,
            AgentBackend::Exec(a) => a.respond_streaming(turn, cancel, sink).await,
            AgentBackend::OpenAi(a) => a.respond_streaming(turn, cancel, sink).await,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            AgentBackend::Echo(a) => a.kind(),
            AgentBackend::Exec(a) => a.kind(),
            AgentBackend::OpenAi(a) => a.kind(),
        }
    }

    async fn respond(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
    ) -> Result<String, AgentError> {
        match self {
            AgentBackend::Echo(a) => a.respond(turn, cancel).await,
            AgentBackend::Exec(a) => a.respond(turn, cancel).await,
            AgentBackend::OpenAi(a) => a.respond(turn, cancel).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_api_key() {
        let agent = AgentOptions {
            api_key: Some("sk-agent-secret".to_owned()),
            ..AgentOptions::default()
        };
        let openai = openai::OpenAiOptions {
            api_key: Some("sk-openai-secret".to_owned()),
            ..openai::OpenAiOptions::default()
        };
        for shown in [format!("{agent:?}"), format!("{openai:?}")] {
            assert!(!shown.contains("secret"), "{shown}");
            assert!(shown.contains("<hidden>"), "{shown}");
        }
    }

    #[test]
    fn spec_strings_parse_as_cli_md_says() {
        assert_eq!("echo".parse(), Ok(AgentSpec::Echo));
        assert_eq!("exec:cat -n".parse(), Ok(AgentSpec::Exec("cat -n".into())));
        assert_eq!(
            "openai:http://127.0.0.1:8080/v1/".parse(),
            Ok(AgentSpec::OpenAi("http://127.0.0.1:8080/v1".into()))
        );
        assert_eq!(
            "exec:  ".parse::<AgentSpec>(),
            Err(AgentSpecError::EmptyCommand)
        );
        assert!(matches!(
            "openai:ftp://x".parse::<AgentSpec>(),
            Err(AgentSpecError::BadBaseUrl(_))
        ));
        assert!(matches!(
            "gpt".parse::<AgentSpec>(),
            Err(AgentSpecError::Unknown(_))
        ));
    }
}
