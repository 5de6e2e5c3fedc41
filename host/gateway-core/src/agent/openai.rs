//! The `openai:BASE_URL` backend: streaming chat completions.
//!
//! Each turn POSTs the session's recent history plus the new message to
//! `{BASE_URL}/chat/completions` with `stream: true` and concatenates the
//! `choices[0].delta.content` of every server-sent `data:` line until
//! `[DONE]`. Cancelling the turn drops the response, which closes the HTTP
//! connection, so the server stops generating.
//!
//! Everything the server sends is bounded: an error body is read up to
//! [`MAX_ERROR_READ`] bytes, one SSE line up to [`MAX_SSE_LINE`], a reply up
//! to [`MAX_REPLY_BYTES`] (the rest is not read). History is kept per session
//! key **and** scope (relay-contract §5.6: two tenants never share one), at
//! most `history_messages` messages and [`MAX_HISTORY_BYTES`] per history.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Agent, AgentError, ReplySink, TurnInput};
use crate::scope::ChatScope;

/// Settings of the `openai:` backend. `Debug` never prints the API key.
#[derive(Clone)]
pub struct OpenAiOptions {
    /// The API base, e.g. `https://api.openai.com/v1` (no trailing `/`).
    pub base_url: String,
    /// The `model` field of every request.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// Messages (user and assistant) kept per session.
    pub history_messages: usize,
    /// Sessions whose history is kept; the least recently used is forgotten.
    pub history_sessions: usize,
    /// Connect timeout of the HTTP client.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for OpenAiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiOptions")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("history_messages", &self.history_messages)
            .field("history_sessions", &self.history_sessions)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            model: "gpt-4o-mini".to_owned(),
            api_key: None,
            history_messages: 20,
            history_sessions: 1024,
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// One conversation's recent messages, oldest first.
type History = VecDeque<(&'static str, String)>;

/// Streams answers from an OpenAI-compatible server.
pub struct OpenAiAgent {
    options: OpenAiOptions,
    client: reqwest::Client,
    /// Per session key and scope; the least recently used is forgotten.
    histories: Mutex<lru::LruCache<String, History>>,
}

impl std::fmt::Debug for OpenAiAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the API key.
        f.debug_struct("OpenAiAgent")
            .field("base_url", &self.options.base_url)
            .field("model", &self.options.model)
            .field(
                "api_key",
                &self.options.api_key.as_ref().map(|_| "<hidden>"),
            )
            .finish_non_exhaustive()
    }
}

/// Longest error body quoted in an [`AgentError::Status`] (chars).
const MAX_ERROR_BODY: usize = 512;
/// Most bytes of an error response read (enough for [`MAX_ERROR_BODY`]
/// chars of any UTF-8); the rest is never read.
pub const MAX_ERROR_READ: usize = 4 * MAX_ERROR_BODY;
/// Longest SSE line accepted; a longer one fails the turn.
pub const MAX_SSE_LINE: usize = 1 << 20;
/// Most reply bytes kept; the stream is dropped once a reply reaches it.
pub const MAX_REPLY_BYTES: usize = 1 << 20;
/// Most bytes of messages one history keeps (oldest dropped first).
pub const MAX_HISTORY_BYTES: usize = 256 * 1024;

/// The history a turn reads and extends: its session key and its event's
/// own scope, so two tenants with equal session keys never share one.
fn history_key(turn: &TurnInput) -> String {
    let scope = ChatScope::of(&turn.event.source).scope_id;
    format!(
        "{}\u{1f}{}",
        turn.session_key.as_str(),
        scope.as_deref().unwrap_or("")
    )
}

/// The first [`MAX_ERROR_READ`] bytes of a response body, as text.
async fn bounded_text(response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_READ.saturating_sub(kept.len());
        kept.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if kept.len() >= MAX_ERROR_READ {
            break;
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

impl OpenAiAgent {
    /// A backend for `options`; fails only if the HTTP client cannot be built.
    pub fn new(options: OpenAiOptions) -> Result<Self, AgentError> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| AgentError::Http(e.to_string()))?;
        let sessions = NonZeroUsize::new(options.history_sessions).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            options,
            client,
            histories: Mutex::new(lru::LruCache::new(sessions)),
        })
    }

    fn history_of(&self, key: &str) -> Vec<(&'static str, String)> {
        let mut guard = self
            .histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .get(key)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remember(&self, key: &str, user: String, assistant: String) {
        let mut guard = self
            .histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let history = guard.get_or_insert_mut(key.to_owned(), History::new);
        history.push_back(("user", user));
        history.push_back(("assistant", assistant));
        let mut bytes: usize = history.iter().map(|(_, m)| m.len()).sum();
        while history.len() > self.options.history_messages
            || (bytes > MAX_HISTORY_BYTES && !history.is_empty())
        {
            if let Some((_, dropped)) = history.pop_front() {
                bytes -= dropped.len();
            }
        }
    }

    async fn complete(&self, turn: &TurnInput, sink: &ReplySink) -> Result<String, AgentError> {
        let key = history_key(turn);
        let mut messages: Vec<Value> = self
            .history_of(&key)
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        messages.push(json!({"role": "user", "content": turn.event.text}));
        let body = json!({"model": self.options.model, "stream": true, "messages": messages});

        let mut request = self
            .client
            .post(format!("{}/chat/completions", self.options.base_url))
            .json(&body);
        if let Some(key) = self
            .options
            .api_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
        {
            request = request.bearer_auth(key.trim());
        }
        let response = request
            .send()
            .await
            .map_err(|e| AgentError::Http(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = bounded_text(response).await;
            let body: String = text.chars().take(MAX_ERROR_BODY).collect();
            return Err(AgentError::Status {
                status: status.as_u16(),
                body,
            });
        }

        let mut reply = String::new();
        let mut sse = SseLines::default();
        let mut stream = response.bytes_stream();
        'read: while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| AgentError::Http(e.without_url().to_string()))?;
            sse.push(&chunk);
            while let Some(line) = sse.next_line() {
                match parse_data_line(&line)? {
                    Chunk::Done => break 'read,
                    Chunk::Content(piece) => {
                        let room = MAX_REPLY_BYTES - reply.len();
                        if piece.len() >= room {
                            // Cut at a char boundary; dropping the stream
                            // closes the connection.
                            let cut = piece.floor_char_boundary(room);
                            let kept = piece.get(..cut).unwrap_or_default();
                            reply.push_str(kept);
                            sink.push(kept);
                            break 'read;
                        }
                        reply.push_str(&piece);
                        sink.push(&piece);
                    }
                    Chunk::Nothing => {}
                }
            }
            if sse.pending() > MAX_SSE_LINE {
                return Err(AgentError::Stream(format!(
                    "an event-stream line exceeds {MAX_SSE_LINE} bytes"
                )));
            }
        }
        self.remember(&key, turn.event.text.clone(), reply.clone());
        Ok(reply)
    }
}

impl Agent for OpenAiAgent {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn streams(&self) -> bool {
        true
    }

    async fn respond(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
    ) -> Result<String, AgentError> {
        self.respond_streaming(turn, cancel, ReplySink::none())
            .await
    }

    async fn respond_streaming(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
        sink: ReplySink,
    ) -> Result<String, AgentError> {
        tokio::select! {
            // Dropping `complete` drops the response and its connection.
            () = cancel.cancelled() => Err(AgentError::Cancelled),
            result = self.complete(turn, &sink) => result,
        }
    }
}

/// Splits a byte stream into lines (LF or CRLF), whatever the chunking.
#[derive(Default)]
struct SseLines {
    buffer: Vec<u8>,
}

impl SseLines {
    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered without a line end yet.
    fn pending(&self) -> usize {
        self.buffer.len()
    }

    fn next_line(&mut self) -> Option<String> {
        let end = self.buffer.iter().position(|b| *b == b'\n')?;
        let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(String::from_utf8_lossy(&line).into_owned())
    }
}

enum Chunk {
    Content(String),
    Done,
    Nothing,
}

/// Interprets one SSE line: `data: {json}`, `data: [DONE]`, or anything else
/// (comments, `event:` lines, blank separators), which carries no content.
fn parse_data_line(line: &str) -> Result<Chunk, AgentError> {
    let Some(data) = line.strip_prefix("data:") else {
        return Ok(Chunk::Nothing);
    };
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Chunk::Done);
    }
    if data.is_empty() {
        return Ok(Chunk::Nothing);
    }
    let value: Value = serde_json::from_str(data).map_err(|e| AgentError::Stream(e.to_string()))?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(AgentError::Stream(message));
    }
    let content = value
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("delta"))
        .and_then(|d| d.get("content"))
        .and_then(Value::as_str);
    Ok(content.map_or(Chunk::Nothing, |c| Chunk::Content(c.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    use hermes_protocol::event::MessageEvent;
    use hermes_protocol::session::SessionKey;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// What the test server observed.
    #[derive(Debug)]
    enum Seen {
        Request { head: String, body: Value },
        FirstChunkSent,
        ClientGone,
    }

    /// A local chat-completions server speaking SSE over chunked HTTP/1.1.
    /// With `hang`, it sends the first delta and then waits for the client
    /// to go away instead of finishing.
    async fn sse_server(
        deltas: Vec<&'static str>,
        hang: bool,
    ) -> (String, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let deltas = deltas.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(socket);
                    let mut head = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let _ = tx.send(Seen::Request { head, body });
                    let mut socket = reader.into_inner();
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut events: Vec<String> = deltas
                        .iter()
                        .map(|d| {
                            format!(
                                "data: {}\n\n",
                                json!({"choices": [{"index": 0, "delta": {"content": d}}]})
                            )
                        })
                        .collect();
                    events.insert(0, ": keep-alive\n\n".to_owned());
                    events.push("data: [DONE]\n\n".to_owned());
                    for (i, event) in events.iter().enumerate() {
                        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                        if socket.write_all(chunk.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = socket.flush().await;
                        if hang && i == 1 {
                            let _ = tx.send(Seen::FirstChunkSent);
                            let mut sink = [0u8; 256];
                            // Returns 0 (or an error) once the client drops the connection.
                            while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                            let _ = tx.send(Seen::ClientGone);
                            return;
                        }
                    }
                    let _ = socket.write_all(b"0\r\n\r\n").await;
                });
            }
        });
        (format!("http://{addr}/v1"), rx)
    }

    fn turn(key: &str, text: &str) -> TurnInput {
        scoped_turn(key, None, text)
    }

    fn scoped_turn(key: &str, scope: Option<&str>, text: &str) -> TurnInput {
        let mut event = MessageEvent {
            text: text.to_owned(),
            ..MessageEvent::default()
        };
        event.source.scope_id = scope.map(str::to_owned);
        TurnInput {
            session_key: SessionKey::from_wire(key.to_owned()),
            event,
        }
    }

    fn agent(base_url: String, history_messages: usize) -> OpenAiAgent {
        OpenAiAgent::new(OpenAiOptions {
            base_url,
            model: "test-model".into(),
            api_key: Some("sk-test".into()),
            history_messages,
            ..OpenAiOptions::default()
        })
        .expect("client builds")
    }

    async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("server event in time")
            .expect("server alive")
    }

    #[tokio::test]
    async fn streams_deltas_and_keeps_bounded_history() {
        let (base, mut seen) = sse_server(vec!["Hel", "lo ", "wörld"], false).await;
        let agent = agent(base, 2);
        let reply = agent
            .respond(&turn("k1", "hi"), CancellationToken::new())
            .await
            .expect("stream completes");
        assert_eq!(reply, "Hello wörld");
        let Seen::Request { head, body } = next_seen(&mut seen).await else {
            panic!("expected the request")
        };
        assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer sk-test"),
            "{head}"
        );
        assert_eq!(body["stream"], true);
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));

        // Same session: the previous exchange is sent along (bounded to 2 messages).
        agent
            .respond(&turn("k1", "again"), CancellationToken::new())
            .await
            .expect("second turn");
        let Seen::Request { body, .. } = next_seen(&mut seen).await else {
            panic!("expected the request")
        };
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello wörld"},
                {"role": "user", "content": "again"},
            ])
        );
        agent
            .respond(&turn("k1", "third"), CancellationToken::new())
            .await
            .expect("third turn");
        let Seen::Request { body, .. } = next_seen(&mut seen).await else {
            panic!("expected the request")
        };
        let messages = body["messages"].as_array().map(Vec::len);
        assert_eq!(
            messages,
            Some(3),
            "history capped at 2 messages plus the new one: {body}"
        );
        assert_eq!(body["messages"][0]["content"], "again");

        // Another session starts fresh.
        agent
            .respond(&turn("k2", "new"), CancellationToken::new())
            .await
            .expect("other session");
        let Seen::Request { body, .. } = next_seen(&mut seen).await else {
            panic!("expected the request")
        };
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "new"}])
        );
    }

    #[tokio::test]
    async fn history_is_partitioned_by_scope_and_bounded_in_bytes() {
        let (base, mut seen) = sse_server(vec!["ok"], false).await;
        let agent = &agent(base, 20);
        let said = |t: &TurnInput| {
            let t = t.clone();
            async move { agent.respond(&t, CancellationToken::new()).await }
        };
        // Tenant A and tenant B behind one session key (one phone number).
        said(&scoped_turn("k", Some("tenant-a"), "a's secret"))
            .await
            .expect("a");
        let _ = next_seen(&mut seen).await;
        said(&scoped_turn("k", Some("tenant-b"), "b asks"))
            .await
            .expect("b");
        let Seen::Request { body, .. } = next_seen(&mut seen).await else {
            panic!("expected the request")
        };
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "b asks"}]),
            "tenant B never sees tenant A's history"
        );
        // Big messages: the history keeps at most MAX_HISTORY_BYTES.
        let big = "x".repeat(MAX_HISTORY_BYTES / 2);
        for _ in 0..4 {
            said(&scoped_turn("k", Some("tenant-c"), &big))
                .await
                .expect("c");
            let _ = next_seen(&mut seen).await;
        }
        said(&scoped_turn("k", Some("tenant-c"), "last"))
            .await
            .expect("c");
        let Seen::Request { body, .. } = next_seen(&mut seen).await else {
            panic!("expected the request")
        };
        let history_bytes: usize = body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["content"].as_str())
                    .map(str::len)
                    .sum()
            })
            .unwrap_or(0)
            - "last".len();
        assert!(history_bytes <= MAX_HISTORY_BYTES, "{history_bytes}");
        assert!(history_bytes > 0, "recent history is kept");
    }

    #[test]
    fn an_overlong_reply_is_cut_at_a_char_boundary_and_lines_are_bounded() {
        let mut s = SseLines::default();
        s.push(&vec![b'a'; MAX_SSE_LINE + 1]);
        assert!(s.next_line().is_none());
        assert!(s.pending() > MAX_SSE_LINE, "the caller sees the overflow");
    }

    #[tokio::test]
    async fn a_huge_error_body_is_not_read_in_full() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                // Endless body: stops only when the client goes away.
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "e".repeat(65536));
                let mut sent = 0usize;
                while socket.write_all(chunk.as_bytes()).await.is_ok() {
                    sent += 65536;
                    if sent > 256 << 20 {
                        break;
                    }
                }
                let _ = tx.send(sent);
            }
        });
        let agent = agent(format!("http://{addr}/v1"), 20);
        let result = agent
            .respond(&turn("k", "x"), CancellationToken::new())
            .await;
        assert!(
            matches!(&result, Err(AgentError::Status { status: 500, body }) if body.len() <= MAX_ERROR_BODY),
            "{result:?}"
        );
        let sent = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("server stopped")
            .expect("sent");
        assert!(
            sent < 256 << 20,
            "the client stopped reading; server sent {sent}"
        );
    }

    #[tokio::test]
    async fn cancel_mid_stream_drops_the_connection() {
        let (base, mut seen) = sse_server(vec!["partial", "never"], true).await;
        let agent = agent(base, 20);
        let cancel = CancellationToken::new();
        let input = turn("k1", "long story");
        let respond = agent.respond(&input, cancel.clone());
        let canceller = async {
            assert!(matches!(next_seen(&mut seen).await, Seen::Request { .. }));
            assert!(matches!(next_seen(&mut seen).await, Seen::FirstChunkSent));
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(respond, canceller);
        assert!(matches!(result, Err(AgentError::Cancelled)), "{result:?}");
        assert!(
            matches!(next_seen(&mut seen).await, Seen::ClientGone),
            "server saw the stream dropped"
        );
    }

    #[tokio::test]
    async fn error_status_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = r#"{"error":{"message":"bad key"}}"#;
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        let agent = agent(format!("http://{addr}/v1"), 20);
        let result = agent
            .respond(&turn("k", "x"), CancellationToken::new())
            .await;
        assert!(
            matches!(&result, Err(AgentError::Status { status: 401, body }) if body.contains("bad key")),
            "{result:?}"
        );
    }

    #[test]
    fn lines_reassemble_across_chunks() {
        let mut s = SseLines::default();
        s.push(b"data: {\"a\"");
        assert!(s.next_line().is_none(), "no newline yet");
        s.push(b":1}\r\n\ndata: [DONE]\n");
        assert_eq!(s.next_line().as_deref(), Some("data: {\"a\":1}"));
        assert_eq!(s.next_line().as_deref(), Some(""));
        assert_eq!(s.next_line().as_deref(), Some("data: [DONE]"));
        assert!(s.next_line().is_none());
    }

    #[test]
    fn data_lines_yield_delta_content_and_errors() {
        assert!(matches!(
            parse_data_line(r#"data: {"choices":[{"delta":{"content":"hé"}}]}"#),
            Ok(Chunk::Content(c)) if c == "hé"
        ));
        assert!(matches!(
            parse_data_line(r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#),
            Ok(Chunk::Nothing)
        ));
        assert!(matches!(
            parse_data_line(": keep-alive"),
            Ok(Chunk::Nothing)
        ));
        assert!(matches!(parse_data_line("data: [DONE]"), Ok(Chunk::Done)));
        assert!(
            matches!(parse_data_line(r#"data: {"error":{"message":"quota"}}"#), Err(AgentError::Stream(m)) if m == "quota")
        );
        assert!(matches!(
            parse_data_line("data: {nope"),
            Err(AgentError::Stream(_))
        ));
    }
}
