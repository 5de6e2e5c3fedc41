//! `hermes-gateway run` end to end (issue 6, item 5): the real binary, the
//! stub connector over loopback WebSockets and the real compiled plugins.
//!
//! Every test starts the binary against its own [`StubConnector`] and awaits
//! what the stub records (frames, upgrades, closes) or what the process does
//! (its exit code, the processes its `exec` agent starts). Nothing sleeps for
//! a fixed time: each wait is bounded by [`PATIENCE`] and fails with the
//! gateway's log when it runs out.

use std::collections::BTreeSet;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hermes_connector::{
    EventCursor, GoingIdle, StubAuth, StubConfig, StubConnector, StubEvent, TokenVerdict,
    descriptor_value,
};
use hermes_protocol::action::Action;
use hermes_protocol::auth::verify_token;
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::event::SessionSource;
use hermes_protocol::frame::{ConnectorFrame, GatewayFrame};
use hermes_protocol::session::{SessionKeySettings, session_key};
use hermes_protocol::split::LenUnit;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

use crate::support::{corpus_case, corpus_forward, gateway, plugins_dir};

const GATEWAY_ID: &str = "gw-e2e";
const SECRET: &str = "e2e-gateway-secret";
/// Upper bound for anything a test awaits: a failure, never a hang. Generous
/// because the binary may compile plugins on a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// Exit code of `run` when the connector revoked access (cli.md).
const EXIT_REVOKED: i32 = 4;

// ---------------------------------------------------------------------------
// Harness

/// One `hermes-gateway run` process dialling its own stub connector.
pub(crate) struct Running {
    pub(crate) stub: StubConnector,
    pub(crate) child: tokio::process::Child,
    /// The private HOME (plugins dir, log); removed on drop.
    _home: TempDir,
    log: PathBuf,
}

/// What to start the binary with.
pub(crate) struct Launch<'a> {
    pub(crate) stub: StubConfig,
    pub(crate) agent: String,
    pub(crate) plugins: &'a [&'a str],
    pub(crate) env: Vec<(&'a str, String)>,
    /// Extra arguments after `run` (e.g. `--admin ADDR`).
    pub(crate) args: Vec<String>,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Self {
            stub: StubConfig::with_secrets([SECRET]),
            agent: "echo".to_owned(),
            plugins: &[],
            env: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl Running {
    pub(crate) async fn start(launch: Launch<'_>) -> Self {
        let stub = StubConnector::start(launch.stub)
            .await
            .expect("stub connector binds 127.0.0.1:0");
        let home = tempfile::tempdir().expect("tempdir");
        let plugins = plugins_dir(home.path(), launch.plugins);
        let log = home.path().join("gateway.log");
        let mut cmd = gateway(home.path());
        cmd.arg("run")
            .arg("--plugins")
            .arg(&plugins)
            .args(["--agent", &launch.agent])
            .args(&launch.args)
            .env("GATEWAY_RELAY_URL", stub.url())
            .env("GATEWAY_RELAY_ID", GATEWAY_ID)
            .env("GATEWAY_RELAY_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn hermes-gateway run");
        Self {
            stub,
            child,
            _home: home,
            log,
        }
    }

    /// What the gateway logged so far (for failure messages).
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Awaits `future`, failing with the gateway's log after [`PATIENCE`].
    pub(crate) async fn within<T>(&self, what: &str, future: impl Future<Output = T>) -> T {
        match tokio::time::timeout(PATIENCE, future).await {
            Ok(value) => value,
            Err(_) => panic!(
                "timed out waiting for {what}\n--- gateway log ---\n{}",
                self.logs()
            ),
        }
    }

    /// The next frame after `cursor` matching `predicate`.
    async fn frame(
        &self,
        cursor: &mut EventCursor,
        what: &str,
        predicate: impl FnMut(&GatewayFrame) -> bool,
    ) -> (u64, GatewayFrame) {
        self.within(what, cursor.next_frame(predicate)).await
    }

    /// The next `hello` after `cursor`: the connection number. The stub
    /// sends its descriptors before anything a test pushes afterwards.
    pub(crate) async fn hello(&self, cursor: &mut EventCursor) -> u64 {
        self.frame(cursor, "hello", |f| matches!(f, GatewayFrame::Hello { .. }))
            .await
            .0
    }

    pub(crate) async fn push(&self, line: String) {
        self.stub
            .push_text(line)
            .await
            .expect("a gateway is connected to the stub");
    }

    /// The next `send` to `chat_id` after `cursor`: `(conn, content, reply_to, metadata)`.
    async fn send_to(
        &self,
        cursor: &mut EventCursor,
        chat: &str,
    ) -> (u64, String, Option<String>, Value) {
        let (conn, frame) = self
            .frame(
                cursor,
                &format!("a send to {chat}"),
                |f| matches!(action(f), Some(Action::Send { chat_id, .. }) if chat_id == chat),
            )
            .await;
        match action(&frame) {
            Some(Action::Send {
                content,
                reply_to,
                metadata,
                ..
            }) => (
                conn,
                content.clone(),
                reply_to.clone(),
                Value::Object(metadata.clone()),
            ),
            _ => unreachable!("the predicate matched a send"),
        }
    }

    /// The process's exit code, awaited.
    async fn exit_code(&mut self) -> Option<i32> {
        let log = self.log.clone();
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.expect("wait for hermes-gateway").code(),
            Err(_) => panic!(
                "hermes-gateway did not exit\n--- gateway log ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the gateway is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Every frame the stub received so far.
    pub(crate) fn frames(&self) -> Vec<(u64, GatewayFrame)> {
        self.stub
            .events()
            .into_iter()
            .filter_map(|e| match e {
                StubEvent::Frame { conn, frame } => Some((conn, frame)),
                _ => None,
            })
            .collect()
    }

    /// `(conn, bufferId)` of every `inbound_ack` so far.
    pub(crate) fn acks(&self) -> Vec<(u64, String)> {
        self.frames()
            .into_iter()
            .filter_map(|(conn, f)| match f {
                GatewayFrame::InboundAck { buffer_id } => Some((conn, buffer_id)),
                _ => None,
            })
            .collect()
    }

    /// `(chat_id, content)` of every `send` so far.
    pub(crate) fn sends(&self) -> Vec<(String, String)> {
        self.frames()
            .iter()
            .filter_map(|(_, f)| match action(f) {
                Some(Action::Send {
                    chat_id, content, ..
                }) => Some((chat_id.clone(), content.clone())),
                _ => None,
            })
            .collect()
    }

    /// The next accepted upgrade after `cursor`: `(conn, token)`.
    async fn accepted_upgrade(&self, cursor: &mut EventCursor) -> (u64, String) {
        let event = self
            .within(
                "an accepted upgrade",
                cursor.next_matching(|e| {
                    matches!(
                        e,
                        StubEvent::Upgraded {
                            verdict: TokenVerdict::Accepted { .. },
                            ..
                        }
                    )
                }),
            )
            .await;
        match event {
            StubEvent::Upgraded {
                conn,
                token: Some(token),
                ..
            } => (conn, token),
            other => panic!("accepted upgrade without a token: {other:?}"),
        }
    }

    /// The next accepted upgrade and its `hello`: `(conn, token)`. Only
    /// after the hello may a test push (the stub sends its descriptors
    /// first, as a connector does).
    async fn connected(&self, cursor: &mut EventCursor) -> (u64, String) {
        let (conn, token) = self.accepted_upgrade(cursor).await;
        let hello = self.hello(cursor).await;
        assert_eq!(hello, conn, "hello on the accepted connection");
        (conn, token)
    }

    /// Awaits the `inbound_ack` of `buffer_id` (searching from the start of
    /// the record: an ack may precede or follow the reply): its connection.
    async fn ack_of(&self, buffer_id: &str) -> u64 {
        let mut cursor = self.stub.cursor();
        let what = format!("the ack of {buffer_id}");
        self.frame(
            &mut cursor,
            &what,
            |f| matches!(f, GatewayFrame::InboundAck { buffer_id: b } if b == buffer_id),
        )
        .await
        .0
    }

    /// One inbound message on `chat` and its echo: proves the link serves.
    async fn round_trip(&self, cursor: &mut EventCursor, chat: &str, text: &str) -> u64 {
        self.push(inbound(text, &format!("m-{chat}"), dm(chat), None))
            .await;
        let (conn, content, _, _) = self.send_to(cursor, chat).await;
        assert_eq!(content, text, "echo of {chat}");
        conn
    }
}

pub(crate) fn action(frame: &GatewayFrame) -> Option<&Action> {
    match frame {
        GatewayFrame::Outbound { action, .. } => Some(action),
        _ => None,
    }
}

/// A DM source on the default `relay` platform.
pub(crate) fn dm(chat: &str) -> Value {
    json!({"platform": "relay", "chat_id": chat, "chat_type": "dm", "user_id": format!("u-{chat}")})
}

/// An `inbound` frame line in wire form.
pub(crate) fn inbound(
    text: &str,
    message_id: &str,
    source: Value,
    buffer_id: Option<&str>,
) -> String {
    let mut frame = json!({
        "type": "inbound",
        "event": {"text": text, "message_id": message_id, "source": source},
    });
    if let Some(id) = buffer_id {
        frame["bufferId"] = json!(id);
    }
    format!("{frame}\n")
}

/// The key the connector expects for `source` (default settings, no profile).
fn key_of(source: &Value) -> String {
    let source: SessionSource =
        serde_json::from_value(source.clone()).expect("a valid SessionSource");
    session_key(&source, None, &SessionKeySettings::default()).into_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The upgrade token verifies with the configured secret and names this
/// gateway, and does not verify with any other secret.
fn assert_token_is_ours(token: &str) {
    let verified = verify_token(token, &[SECRET], now()).expect("token verifies with the secret");
    assert_eq!(
        verified.payload, GATEWAY_ID,
        "token payload is the gateway id"
    );
    assert!(
        verify_token(token, &["some-other-secret"], now()).is_err(),
        "a token must not verify with another secret"
    );
}

/// A `passthrough_forward` line for a corpus case, body base64-encoded.
fn forward_line(case: &Value, buffer_id: &str) -> (String, Vec<u8>) {
    let forward = corpus_forward(case);
    let body = forward.body.clone();
    let frame = ConnectorFrame::PassthroughForward {
        forward,
        buffer_id: Some(buffer_id.to_owned()),
    };
    let line = frame.encode();
    // The wire carries the body as standard padded base64 (relay-contract §5.2).
    let wire: Value = serde_json::from_str(&line).expect("frame JSON");
    assert_eq!(
        wire["forward"]["bodyB64"],
        base64::engine::general_purpose::STANDARD.encode(&body)
    );
    (line, body)
}

/// A FIFO at `path` (an awaitable rendezvous with a shell script).
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The first line written to the FIFO at `path`, awaited without blocking a
/// thread (opened read-write so there is no EOF before the writer comes).
async fn fifo_line(path: &Path) -> String {
    let rx = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .expect("open FIFO");
    let mut line = String::new();
    BufReader::new(rx)
        .read_line(&mut line)
        .await
        .expect("read FIFO");
    line.trim().to_owned()
}

/// Whether process `pid` still runs (absent or a zombie = gone).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S …`: the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Waits until `pid` is gone (there is no event for a non-child's death).
async fn gone(pid: u32) {
    while alive(pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An `exec:` agent for sessions that must take a while:
/// - text containing `MARK-SLOW`: `sleep 600` in the background, its pid
///   written to `slow.fifo`, then wait for it and answer `slow-finished`;
/// - text containing `MARK-HOLD`: the shell's pid written to `hold.fifo`,
///   then block until a line arrives on `release.fifo`, answer `held-released`;
/// - anything else: answer `quick` at once.
fn hold_agent(dir: &Path) -> String {
    for fifo in ["slow.fifo", "hold.fifo", "release.fifo"] {
        mkfifo(&dir.join(fifo));
    }
    let d = dir.display();
    let script = format!(
        r#"line=$(cat)
case "$line" in
  *MARK-SLOW*) sleep 600 & echo $! > '{d}/slow.fifo'; wait; echo slow-finished ;;
  *MARK-HOLD*) echo $$ > '{d}/hold.fifo'; read -r _ < '{d}/release.fifo'; echo held-released ;;
  *) echo quick ;;
esac
"#
    );
    let path = dir.join("agent.sh");
    std::fs::write(&path, script).expect("write agent script");
    format!("exec:sh {}", path.display())
}

/// A writer that releases the `MARK-HOLD` turn. Opened read-write so the
/// line stays buffered in the FIFO until the script reads it; keep it alive
/// until the held reply has arrived.
async fn release(dir: &Path) -> pipe::Sender {
    let mut tx = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(dir.join("release.fifo"))
        .expect("open release FIFO");
    tx.write_all(b"go\n").await.expect("write release FIFO");
    tx
}

// ---------------------------------------------------------------------------
// Handshake

#[tokio::test]
async fn dials_with_a_verifiable_token_and_says_hello_as_configured() {
    let gw = Running::start(Launch {
        env: vec![
            ("GATEWAY_RELAY_PLATFORM", "telegram".to_owned()),
            ("GATEWAY_RELAY_BOT_ID", "bot-4242".to_owned()),
        ],
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    let (conn, token) = gw.accepted_upgrade(&mut cursor).await;
    assert_token_is_ours(&token);

    let (hello_conn, hello) = gw
        .frame(&mut cursor, "hello", |f| {
            matches!(f, GatewayFrame::Hello { .. })
        })
        .await;
    assert_eq!(hello_conn, conn);
    match hello {
        GatewayFrame::Hello {
            platform, bot_id, ..
        } => assert_eq!(
            (platform.as_str(), bot_id.as_str()),
            ("telegram", "bot-4242"),
            "hello identity from GATEWAY_RELAY_PLATFORM / GATEWAY_RELAY_BOT_ID"
        ),
        other => unreachable!("{other:?}"),
    }
    // The link is up: a message round-trips, and hello was said once.
    gw.round_trip(&mut cursor, "c-hello", "are you there?")
        .await;
    let hellos = gw
        .frames()
        .into_iter()
        .filter(|(_, f)| matches!(f, GatewayFrame::Hello { .. }))
        .count();
    assert_eq!(hellos, 1, "one identity, one hello");
    assert_eq!(gw.stub.tokens_seen().len(), 1, "one dial");
}

// ---------------------------------------------------------------------------
// Secrets never reach the agent's child or the user

/// The review's reproduction: `exec:env` answered an SMS with the relay
/// secret, the API key and the identity token. The child now gets a cleared
/// environment plus what `HERMES_AGENT_ENV` names, and never the gateway's
/// own credentials.
#[tokio::test]
async fn an_exec_agent_never_sees_the_gateways_secrets() {
    let gw = Running::start(Launch {
        agent: "exec:env".to_owned(),
        env: vec![
            ("OPENAI_API_KEY", "sk-should-not-pass".to_owned()),
            (
                "HERMES_IDENTITY_TOKEN",
                "identity-should-not-pass".to_owned(),
            ),
            ("AGENT_DB_URL", "postgres://agent-db".to_owned()),
            ("HERMES_AGENT_ENV", "AGENT_DB_URL".to_owned()),
        ],
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    gw.push(inbound("env please", "m-env", dm("c-env"), None))
        .await;
    let (_, content, _, _) = gw.send_to(&mut cursor, "c-env").await;
    assert!(
        content.contains("AGENT_DB_URL=postgres://agent-db"),
        "{content}"
    );
    for secret in [SECRET, "sk-should-not-pass", "identity-should-not-pass"] {
        assert!(
            !content.contains(secret),
            "{secret} reached the agent: {content}"
        );
    }
    for name in [
        "GATEWAY_RELAY_SECRET",
        "GATEWAY_RELAY_ID",
        "OPENAI_API_KEY",
        "RUST_LOG",
    ] {
        assert!(
            !content.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{name} reached the agent: {content}"
        );
    }
}

// ---------------------------------------------------------------------------
// Inbound → reply

#[tokio::test]
async fn inbound_is_echoed_with_reply_to_and_the_scope_reattached() {
    let gw = Running::start(Launch::default()).await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;

    let source = json!({"platform": "relay", "chat_id": "c-group", "chat_type": "group",
        "user_id": "u-7", "user_name": "Ann", "scope_id": "tenant-9"});
    gw.push(inbound("hello there", "m-1", source, None)).await;
    let (_, content, reply_to, metadata) = gw.send_to(&mut cursor, "c-group").await;
    assert_eq!(content, "hello there");
    assert_eq!(
        reply_to.as_deref(),
        Some("m-1"),
        "reply_to = the message id"
    );
    assert_eq!(
        metadata,
        json!({"scope_id": "tenant-9", "guild_id": "tenant-9", "user_id": "u-7"}),
        "scope under both keys and the author are re-attached"
    );

    // The echo agent answered at once: no typing indicator flickered
    // before the reply (the placeholder descriptor lists `typing`).
    assert!(
        !gw.frames()
            .iter()
            .any(|(_, f)| matches!(action(f), Some(Action::Typing { .. }))),
        "a reply that comes at once sends no typing indicator"
    );

    // A legacy connector sends only `guild_id`: it is the scope too.
    let legacy = json!({"platform": "relay", "chat_id": "c-legacy", "chat_type": "group",
        "user_id": "u-8", "guild_id": "guild-3"});
    gw.push(inbound("old style", "m-2", legacy, None)).await;
    let (_, _, reply_to, metadata) = gw.send_to(&mut cursor, "c-legacy").await;
    assert_eq!(reply_to.as_deref(), Some("m-2"));
    assert_eq!(
        metadata,
        json!({"scope_id": "guild-3", "guild_id": "guild-3", "user_id": "u-8"})
    );
}

#[tokio::test]
async fn buffered_delivery_is_acked_once_per_connection_and_never_run_twice() {
    let gw = Running::start(Launch::default()).await;
    let mut cursor = gw.stub.cursor();
    let first = gw.hello(&mut cursor).await;
    let chat = "c-buffered";

    gw.push(inbound("only once", "m-b1", dm(chat), Some("buf-1")))
        .await;
    let (conn, content, _, _) = gw.send_to(&mut cursor, chat).await;
    assert_eq!((conn, content.as_str()), (first, "only once"));
    // The same delivery again on the same connection, then a sentinel in the
    // same session: its reply comes after any turn the replay could have
    // queued (one FIFO per session), so nothing else can still be coming.
    gw.push(inbound("only once", "m-b1", dm(chat), Some("buf-1")))
        .await;
    gw.push(inbound("sentinel 1", "m-s1", dm(chat), Some("buf-2")))
        .await;
    let (_, content, _, _) = gw.send_to(&mut cursor, chat).await;
    assert_eq!(content, "sentinel 1", "the replay was not answered again");

    // Across a reconnect: the connector replays it once more.
    gw.stub.drop_connection().await.expect("connected");
    let second = gw.hello(&mut cursor).await;
    assert_ne!(second, first, "a new connection");
    gw.push(inbound("only once", "m-b1", dm(chat), Some("buf-1")))
        .await;
    gw.push(inbound("sentinel 2", "m-s2", dm(chat), Some("buf-3")))
        .await;
    let (conn, content, _, _) = gw.send_to(&mut cursor, chat).await;
    assert_eq!((conn, content.as_str()), (second, "sentinel 2"));

    assert_eq!(gw.ack_of("buf-2").await, first);
    assert_eq!(gw.ack_of("buf-3").await, second);
    let replies: Vec<String> = gw
        .sends()
        .into_iter()
        .filter(|(c, _)| c == chat)
        .map(|(_, text)| text)
        .collect();
    assert_eq!(replies, ["only once", "sentinel 1", "sentinel 2"]);
    let acks = gw.acks();
    let count = |conn: u64, id: &str| acks.iter().filter(|(c, b)| *c == conn && b == id).count();
    assert_eq!(
        count(first, "buf-1"),
        1,
        "acked once on the first connection: {acks:?}"
    );
    assert_eq!(
        count(second, "buf-1"),
        1,
        "the replay is acked again after a reconnect: {acks:?}"
    );
    assert_eq!(
        (count(first, "buf-2"), count(second, "buf-3")),
        (1, 1),
        "{acks:?}"
    );
}

// ---------------------------------------------------------------------------
// Passthrough forwards through the real plugins

/// One forward can be followed through the JSON logs: a line logged inside
/// a turn carries the turn's span (session key, platform, plugin).
#[tokio::test]
async fn json_logs_carry_the_turn_span_of_a_converted_forward() {
    let case = corpus_case("discord/guild_slash_simple.json");
    let gw = Running::start(Launch {
        plugins: &[hermes_plugin_artifacts::DISCORD],
        // An agent that fails: the gateway logs a warning inside the turn.
        agent: "exec:exit 3".to_owned(),
        args: vec!["--log-format".to_owned(), "json".to_owned()],
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    let (line, _) = forward_line(&case, "fwd-span-1");
    gw.push(line).await;
    // The error reply comes after the warning was written.
    let (_, frame) = gw
        .frame(&mut cursor, "the error reply", |f| {
            matches!(action(f), Some(Action::FollowUp { .. }))
        })
        .await;
    let Some(Action::FollowUp { session_key, .. }) = action(&frame) else {
        unreachable!("matched a follow_up");
    };
    let logs = gw.logs();
    let failed: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("agent failed"))
        })
        .collect();
    assert_eq!(failed.len(), 1, "{logs}");
    let span = &failed[0]["span"];
    assert_eq!(span["name"], "turn", "{span}");
    assert_eq!(span["session_key"], session_key.as_str());
    assert_eq!(span["platform"], "discord");
    assert_eq!(span["plugin"], "discord-interactions");
}

#[tokio::test]
async fn discord_slash_command_is_answered_with_a_follow_up_on_its_session() {
    let case = corpus_case("discord/guild_slash_simple.json");
    let gw = Running::start(Launch {
        plugins: &[hermes_plugin_artifacts::DISCORD],
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;

    let (line, body) = forward_line(&case, "fwd-discord-1");
    gw.push(line).await;
    let (_, frame) = gw
        .frame(&mut cursor, "a follow_up", |f| {
            matches!(action(f), Some(Action::FollowUp { .. }))
        })
        .await;
    let action = action(&frame).expect("an outbound action");

    let expected = &case["expect"]["events"][0];
    let source = &expected["source"];
    let wire = serde_json::to_value(action).expect("action JSON");
    let keys: BTreeSet<&str> = wire
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["op", "session_key", "kind", "content", "metadata"]),
        "follow_up has exactly these keys: {wire}"
    );
    assert_eq!(wire["op"], "follow_up");
    assert_eq!(wire["kind"], expected["reply_route"]["kind"]);
    assert_eq!(wire["kind"], "discord.interaction_token");
    assert_eq!(
        wire["session_key"],
        key_of(source),
        "session key of the source"
    );
    assert_eq!(wire["content"], expected["text"], "the echo of the command");
    assert_eq!(
        wire["metadata"],
        json!({"scope_id": source["scope_id"], "guild_id": source["scope_id"],
               "user_id": source["user_id"]}),
        "only the re-attached scope and author"
    );

    // The corpus body still carries the interaction token (a real connector
    // strips it first): even so, it never leaves the gateway in any frame.
    let token = serde_json::from_slice::<Value>(&body).expect("body JSON")["token"]
        .as_str()
        .expect("the corpus body carries a token")
        .to_owned();
    for (_, f) in gw.frames() {
        assert!(!f.encode().contains(&token), "token leaked in {f:?}");
    }
    gw.ack_of("fwd-discord-1").await;
    assert_eq!(gw.acks().len(), 1, "one ack: {:?}", gw.acks());
}

/// Field `name` of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> String {
    let text = std::str::from_utf8(body).expect("form is UTF-8");
    let raw = text
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in the form"));
    // Enough decoding for a phone number: `+` is space, `%2B` is `+`.
    raw.replace('+', " ")
        .replace("%2B", "+")
        .replace("%2b", "+")
}

#[tokio::test]
async fn twilio_sms_is_answered_with_a_send_to_the_sender() {
    let case = corpus_case("twilio/sms.form");
    let gw = Running::start(Launch {
        plugins: &[hermes_plugin_artifacts::TWILIO],
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;

    let (line, body) = forward_line(&case, "fwd-sms-1");
    gw.push(line).await;
    let sender = form_field(&body, "From");
    assert!(sender.starts_with('+'), "sender number {sender}");
    let (_, content, reply_to, metadata) = gw.send_to(&mut cursor, &sender).await;
    let expected = &case["expect"]["events"][0];
    assert_eq!(content, expected["text"].as_str().expect("text"));
    assert_eq!(reply_to.as_deref(), expected["message_id"].as_str());
    let source = &expected["source"];
    assert_eq!(
        metadata,
        json!({"scope_id": source["scope_id"], "guild_id": source["scope_id"],
               "user_id": source["user_id"]})
    );
    gw.ack_of("fwd-sms-1").await;
}

/// An agent that takes longer than the typing delay gets a typing
/// indicator, carrying the event's scope and author like its reply.
#[tokio::test]
async fn a_turn_that_takes_a_while_shows_typing_with_its_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Running::start(Launch {
        agent: hold_agent(dir.path()),
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    let source = json!({"platform": "relay", "chat_id": "c-typing", "chat_type": "group",
        "user_id": "u-5", "scope_id": "tenant-5"});
    gw.push(inbound("MARK-HOLD please", "m-typing", source, None))
        .await;
    let (_, frame) = gw
        .frame(
            &mut cursor,
            "a typing indicator",
            |f| matches!(action(f), Some(Action::Typing { chat_id, .. }) if chat_id == "c-typing"),
        )
        .await;
    let Some(Action::Typing { metadata, .. }) = action(&frame) else {
        unreachable!("matched a typing action");
    };
    let expected = json!({"scope_id": "tenant-5", "guild_id": "tenant-5", "user_id": "u-5"});
    assert_eq!(Value::Object(metadata.clone()), expected);
    // The held agent says it is waiting (its pid), then waits for release.
    gw.within("the held turn", fifo_line(&dir.path().join("hold.fifo")))
        .await;
    let _release = release(dir.path()).await;
    let (_, content, _, reply_metadata) = gw.send_to(&mut cursor, "c-typing").await;
    assert_eq!(content, "held-released");
    assert_eq!(reply_metadata, expected);
}

// ---------------------------------------------------------------------------
// Interrupts

#[tokio::test]
async fn interrupt_inbound_stops_only_its_session_and_kills_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Running::start(Launch {
        agent: hold_agent(dir.path()),
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;

    // Two sessions with a turn each that would run for a long time.
    let slow = dm("c-slow");
    gw.push(inbound("MARK-SLOW please", "m-slow", slow.clone(), None))
        .await;
    let sleep_pid: u32 = gw
        .within(
            "the slow turn's sleep",
            fifo_line(&dir.path().join("slow.fifo")),
        )
        .await
        .parse()
        .expect("a pid");
    gw.push(inbound("MARK-HOLD please", "m-hold", dm("c-hold"), None))
        .await;
    let hold_pid: u32 = gw
        .within("the held turn", fifo_line(&dir.path().join("hold.fifo")))
        .await
        .parse()
        .expect("a pid");
    assert!(alive(sleep_pid) && alive(hold_pid));

    let frame = ConnectorFrame::InterruptInbound {
        session_key: key_of(&slow),
        chat_id: "c-slow".to_owned(),
    };
    gw.push(frame.encode()).await;
    gw.within("the slow agent to be killed", gone(sleep_pid))
        .await;
    assert!(alive(hold_pid), "the other session's agent keeps running");

    // The other session still answers; the interrupted one takes new
    // messages at once (its queue is not stuck behind the killed turn).
    let _release = release(dir.path()).await;
    let (_, content, _, _) = gw.send_to(&mut cursor, "c-hold").await;
    assert_eq!(content, "held-released");
    gw.push(inbound("next", "m-next", slow, None)).await;
    let (_, content, _, _) = gw.send_to(&mut cursor, "c-slow").await;
    assert_eq!(content, "quick");
    let slow_replies: Vec<_> = gw
        .sends()
        .into_iter()
        .filter(|(c, _)| c == "c-slow")
        .collect();
    assert_eq!(
        slow_replies.len(),
        1,
        "no reply for the interrupted turn: {slow_replies:?}"
    );
}

#[tokio::test]
async fn user_stop_cancels_the_running_turn_and_egresses_interrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Running::start(Launch {
        agent: hold_agent(dir.path()),
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    let source = dm("c-stop");
    gw.push(inbound("MARK-HOLD", "m-h", source.clone(), None))
        .await;
    let hold_pid: u32 = gw
        .within("the held turn", fifo_line(&dir.path().join("hold.fifo")))
        .await
        .parse()
        .expect("a pid");

    gw.push(inbound("/stop", "m-stop", source.clone(), None))
        .await;
    let (_, frame) = gw
        .frame(&mut cursor, "an interrupt", |f| {
            matches!(f, GatewayFrame::Interrupt { .. })
        })
        .await;
    assert_eq!(
        frame,
        GatewayFrame::Interrupt {
            session_key: key_of(&source),
            reason: Some("user_stop".to_owned()),
        }
    );
    gw.within("the held agent to be killed", gone(hold_pid))
        .await;
    // The session answers again, and only that: no reply for the stopped
    // turn and none for `/stop` itself.
    gw.push(inbound("after", "m-after", source, None)).await;
    let (_, content, _, _) = gw.send_to(&mut cursor, "c-stop").await;
    assert_eq!(content, "quick");
    let replies = gw
        .sends()
        .into_iter()
        .filter(|(c, _)| c == "c-stop")
        .count();
    assert_eq!(replies, 1, "{:?}", gw.sends());
}

// ---------------------------------------------------------------------------
// Fairness between sessions

/// Messages one session floods the gateway with: far more than a short
/// burst (with a per-session queue of 16 the other session waited ~23 s
/// behind them), within the default queue of 256.
const FLOOD: usize = 40;
/// How long each flooded turn takes in the agent.
const FLOOD_TURN: Duration = Duration::from_secs(1);
/// The bound on the other session's reply: far below the flooded backlog
/// (`FLOOD` × `FLOOD_TURN`), and below what the backlog beyond the queue
/// alone would take.
const OTHER_SESSION_BOUND: Duration = Duration::from_secs(10);
/// Replies of the flooded session awaited one by one (a few seconds).
const FLOOD_AWAITED: usize = 3;

/// An `exec:` agent that answers `FLOOD-<n>` for a text holding `FLOOD-<n>`
/// after [`FLOOD_TURN`], and anything else with `quick` at once.
fn flood_agent(dir: &Path) -> String {
    let script = format!(
        r#"line=$(cat)
case "$line" in
  *FLOOD-*) sleep {}; printf '%s\n' "$line" | grep -o 'FLOOD-[0-9]*' ;;
  *) echo quick ;;
esac
"#,
        FLOOD_TURN.as_secs()
    );
    let path = dir.join("agent.sh");
    std::fs::write(&path, script).expect("write agent script");
    format!("exec:sh {}", path.display())
}

#[tokio::test]
async fn a_session_flooding_a_slow_agent_does_not_stall_other_sessions() {
    // Every session shares the link's one ordered socket, and a full queue
    // holds its reader (backpressure, relay-contract §7.2). A burst to one
    // session must therefore fit its queue, or everyone behind it waits: this
    // flood (40 messages to an agent taking 1 s each) has to be absorbed
    // while another session is answered at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Running::start(Launch {
        agent: flood_agent(dir.path()),
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;

    // One chat and user: one session key for the whole flood.
    let flooded = "c-flood";
    for n in 0..FLOOD {
        let id = format!("buf-flood-{n:02}");
        gw.push(inbound(
            &format!("please FLOOD-{n:02}"),
            &format!("m-{n:02}"),
            dm(flooded),
            Some(&id),
        ))
        .await;
    }
    let other = "c-other";
    assert_ne!(key_of(&dm(other)), key_of(&dm(flooded)), "two sessions");
    gw.push(inbound("me too", "m-other", dm(other), Some("buf-other")))
        .await;
    let pushed = tokio::time::Instant::now();

    // The reply to that very message (not merely a send to its chat).
    let answers_other = |f: &GatewayFrame| {
        matches!(action(f), Some(Action::Send { chat_id, reply_to, .. })
            if chat_id == other && reply_to.as_deref() == Some("m-other"))
    };
    let reply = tokio::time::timeout(OTHER_SESSION_BOUND, cursor.next_frame(answers_other)).await;
    let Ok((_, frame)) = reply else {
        panic!(
            "no reply to the other session within {OTHER_SESSION_BOUND:?} of its message \
             (the flooded backlog needs {:?}); replies so far: {:?}\n--- gateway log ---\n{}",
            FLOOD_TURN * u32::try_from(FLOOD).expect("small"),
            gw.sends(),
            gw.logs()
        );
    };
    assert!(
        matches!(action(&frame), Some(Action::Send { content, .. }) if content == "quick"),
        "{frame:?}"
    );
    gw.ack_of("buf-other").await;
    let waited = pushed.elapsed();

    // The flooded session answers in order, each message once: the first
    // few awaited one by one, then everything it answered so far. It is
    // still working, so the other reply did not wait for its backlog.
    let mut flood_cursor = gw.stub.cursor();
    for n in 0..FLOOD_AWAITED {
        let (_, content, reply_to, _) = gw.send_to(&mut flood_cursor, flooded).await;
        assert_eq!(
            (content, reply_to),
            (format!("FLOOD-{n:02}"), Some(format!("m-{n:02}"))),
            "reply {n} of the flooded session"
        );
    }
    let flooded_replies: Vec<String> = gw
        .sends()
        .into_iter()
        .filter(|(c, _)| c == flooded)
        .map(|(_, text)| text)
        .collect();
    let expected: Vec<String> = (0..flooded_replies.len())
        .map(|n| format!("FLOOD-{n:02}"))
        .collect();
    assert_eq!(
        flooded_replies, expected,
        "the flooded session answers in order, each once"
    );
    assert!(
        flooded_replies.len() < FLOOD,
        "the other session was answered after {waited:?}, with the flood done: {flooded_replies:?}"
    );

    // Every delivery is acked at most once (the connection never changed).
    let acks = gw.acks();
    let ids: BTreeSet<&str> = acks.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(ids.len(), acks.len(), "an ack repeated: {acks:?}");
    let known: BTreeSet<String> = (0..FLOOD)
        .map(|n| format!("buf-flood-{n:02}"))
        .chain(["buf-other".to_owned()])
        .collect();
    assert!(
        ids.iter().all(|id| known.contains(*id)),
        "an ack for a delivery never sent: {acks:?}"
    );
}

// ---------------------------------------------------------------------------
// Robustness of the link

#[tokio::test]
async fn malformed_frames_are_skipped_and_bad_deliveries_acked() {
    let gw = Running::start(Launch::default()).await;
    let mut cursor = gw.stub.cursor();
    let conn = gw.hello(&mut cursor).await;

    let bad = [
        "{not json\n",
        "[1,2,3]\n",
        "\"just a string\"\n",
        "{\"no\":\"type\"}\n",
        "{\"type\":\"interrupt_inbound\"}\n",
        "{\"type\":\"interrupt_inbound\",\"session_key\":7,\"chat_id\":\"c\"}\n",
        "{\"type\":\"outbound_result\",\"requestId\":5,\"result\":{}}\n",
        "{\"type\":\"outbound_result\",\"requestId\":\"nobody-asked\",\"result\":{\"success\":true}}\n",
        "{\"type\":\"inbound\",\"event\":\"not an object\"}\n",
        "{\"type\":\"inbound\",\"bufferId\":\"bad-inbound\",\"event\":{\"text\":5}}\n",
        "{\"type\":\"passthrough_forward\",\"bufferId\":\"bad-forward\",\"forward\":{\"platform\":\"discord\",\"bodyB64\":\"***\"}}\n",
        "{\"type\":\"passthrough_forward\",\"bufferId\":\"no-route\",\"forward\":{\"platform\":\"nobody-converts-this\",\"bodyB64\":\"\"}}\n",
        "{\"type\":\"descriptor\",\"descriptor\":{\"platform\":\"x\"}}\n",
        "{\"type\":\"from_the_future\",\"x\":1}\n",
        "\n\n",
    ];
    for line in bad {
        gw.push(line.to_owned()).await;
    }
    gw.stub
        .push_binary(b"\xff\xfe{\n".to_vec())
        .await
        .expect("connected");
    // A good frame split across two messages, after all of that.
    let good = inbound("still here", "m-good", dm("c-good"), None);
    let (head, tail) = good.split_at(12);
    gw.push(head.to_owned()).await;
    gw.push(tail.to_owned()).await;
    let (reply_conn, content, _, _) = gw.send_to(&mut cursor, "c-good").await;
    assert_eq!((reply_conn, content.as_str()), (conn, "still here"));
    assert_eq!(gw.stub.connection_count(), 1, "the connection stayed up");

    // Undecodable or unconvertible buffered deliveries are deliberate
    // drops: acked, so the connector does not redeliver them forever
    // (relay-contract §5.4).
    for id in ["bad-forward", "bad-inbound", "no-route"] {
        gw.ack_of(id).await;
    }
    assert_eq!(gw.acks().len(), 3, "{:?}", gw.acks());
}

#[tokio::test]
async fn a_dropped_connection_is_redialled_with_a_fresh_token() {
    let gw = Running::start(Launch::default()).await;
    let mut cursor = gw.stub.cursor();
    let (first, token1) = gw.connected(&mut cursor).await;
    gw.round_trip(&mut cursor, "c-before", "before the drop")
        .await;

    gw.stub.drop_connection().await.expect("connected");
    let (second, token2) = gw.connected(&mut cursor).await;
    assert!(second > first);
    assert_token_is_ours(&token1);
    assert_token_is_ours(&token2);
    let conn = gw
        .round_trip(&mut cursor, "c-after", "after the drop")
        .await;
    assert_eq!(conn, second, "served on the new connection");
}

// ---------------------------------------------------------------------------
// 4401 (relay-contract §6.2)

#[tokio::test]
async fn cold_start_4401_is_retried_until_the_secret_is_known() {
    // The connector does not know this gateway's secret yet.
    let mut gw = Running::start(Launch {
        stub: StubConfig::with_secrets(["not-provisioned-yet"]),
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    let rejected = |e: &StubEvent| {
        matches!(
            e,
            StubEvent::Upgraded {
                verdict: TokenVerdict::Rejected { .. },
                ..
            }
        )
    };
    // Two 4401s before any descriptor: a second one is no revocation.
    gw.within("a rejected dial", cursor.next_matching(rejected))
        .await;
    gw.within("a second rejected dial", cursor.next_matching(rejected))
        .await;
    gw.stub.set_auth(StubAuth::Tokens(vec![SECRET.to_owned()]));
    gw.connected(&mut cursor).await;
    gw.round_trip(&mut cursor, "c-cold", "provisioned now")
        .await;
    assert!(gw.still_running());
}

#[tokio::test]
async fn expired_4401_redials_and_is_never_a_revocation() {
    let mut gw = Running::start(Launch::default()).await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    for round in 0..3 {
        gw.round_trip(&mut cursor, &format!("c-exp-{round}"), "tick")
            .await;
        gw.stub.close(4401, "expired").await.expect("connected");
        gw.connected(&mut cursor).await;
    }
    gw.round_trip(&mut cursor, "c-exp-last", "still serving")
        .await;
    assert!(gw.still_running(), "expired tokens never revoke");
}

#[tokio::test]
async fn one_4401_after_the_handshake_gets_one_fresh_try_that_may_succeed() {
    let mut gw = Running::start(Launch::default()).await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    gw.round_trip(&mut cursor, "c-p1", "before").await;
    gw.stub.close(4401, "revoked").await.expect("connected");
    let (conn, token) = gw.connected(&mut cursor).await;
    assert_token_is_ours(&token);
    assert_eq!(gw.round_trip(&mut cursor, "c-p2", "after").await, conn);
    assert!(gw.still_running());
}

#[tokio::test]
async fn a_second_4401_on_the_fresh_connection_exits_with_code_4() {
    let mut gw = Running::start(Launch::default()).await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    gw.round_trip(&mut cursor, "c-r", "before").await;

    // The connector forgets this gateway: the fresh try is refused too.
    gw.stub
        .set_auth(StubAuth::Tokens(vec!["rotated-away".to_owned()]));
    gw.stub.close(4401, "revoked").await.expect("connected");
    let code = gw.exit_code().await;
    let logs = gw.logs();
    assert_eq!(code, Some(EXIT_REVOKED), "exit code; log:\n{logs}");
    assert!(logs.contains("revoked"), "the log says why:\n{logs}");
    assert!(!logs.contains(SECRET), "secret in the log");
    assert_eq!(
        gw.stub.connection_count(),
        2,
        "one fresh try, then no more dials"
    );
}

// ---------------------------------------------------------------------------
// Drain

#[tokio::test]
async fn sigterm_says_going_idle_finishes_the_running_turn_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Running::start(Launch {
        agent: hold_agent(dir.path()),
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    gw.push(inbound("MARK-HOLD", "m-h", dm("c-running"), None))
        .await;
    gw.within("the running turn", fifo_line(&dir.path().join("hold.fifo")))
        .await;

    gw.signal("TERM");
    gw.frame(&mut cursor, "going_idle", |f| {
        matches!(f, GatewayFrame::GoingIdle)
    })
    .await;
    // Acknowledged (the stub answers going_idle_ack before this push): the
    // gateway takes no new turns now, so it must neither run nor ack this.
    gw.push(inbound(
        "too late",
        "m-late",
        dm("c-late"),
        Some("buf-late"),
    ))
    .await;

    let _release = release(dir.path()).await;
    let (_, content, _, _) = gw.send_to(&mut cursor, "c-running").await;
    assert_eq!(content, "held-released", "the running turn finishes");
    let code = gw.exit_code().await;
    assert_eq!(code, Some(0), "log:\n{}", gw.logs());

    assert!(
        gw.sends().iter().all(|(c, _)| c != "c-late"),
        "no turn after going_idle_ack"
    );
    assert!(
        gw.acks().iter().all(|(_, b)| b != "buf-late"),
        "a delivery not taken is not acked (the connector redelivers it)"
    );
    let closes: Vec<Option<u16>> = gw
        .stub
        .events()
        .into_iter()
        .filter_map(|e| match e {
            StubEvent::PeerClosed { code, .. } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(closes, [Some(1000)], "a normal close at the end");
}

#[tokio::test]
async fn sigterm_without_going_idle_ack_still_exits_0() {
    let mut stub = StubConfig::with_secrets([SECRET]);
    stub.going_idle = GoingIdle::Ignore;
    let mut gw = Running::start(Launch {
        stub,
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    gw.round_trip(&mut cursor, "c-idle", "hi").await;
    gw.signal("TERM");
    gw.frame(&mut cursor, "going_idle", |f| {
        matches!(f, GatewayFrame::GoingIdle)
    })
    .await;
    assert_eq!(gw.exit_code().await, Some(0), "log:\n{}", gw.logs());
}

// ---------------------------------------------------------------------------
// Splitting

#[tokio::test]
async fn a_long_reply_is_split_in_utf16_units_under_the_descriptor_limit() {
    const LIMIT: usize = 16;
    let mut descriptor = Descriptor::placeholder("relay");
    descriptor.max_message_length = LIMIT;
    descriptor.len_unit = LenUnit::Utf16;
    // No `typing` listed: the gateway must not send one.
    descriptor.supported_ops = vec!["send".to_owned()];
    let mut stub = StubConfig::with_secrets([SECRET]);
    stub.descriptors = vec![descriptor_value(&descriptor)];
    let gw = Running::start(Launch {
        stub,
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;

    // Emoji are two UTF-16 units each: counted in chars, 16-char pieces of
    // this text would be far over the limit.
    let text = "Grüße 😀😀😀 from the 🎉🎉 party — see 👋🏽 you soon! 🚀🚀🚀🚀 The end, really. 🙂";
    assert!(
        text.chars().count() > LIMIT * 3,
        "long enough for several pieces"
    );
    gw.push(inbound(text, "m-long", dm("c-long"), None)).await;

    let mut pieces = Vec::new();
    let mut joined = String::new();
    while joined.len() < text.len() {
        let (_, content, reply_to, _) = gw.send_to(&mut cursor, "c-long").await;
        assert_eq!(
            reply_to.as_deref(),
            Some("m-long"),
            "every piece replies to the message"
        );
        let units = content.encode_utf16().count();
        assert!(
            (1..=LIMIT).contains(&units),
            "piece {content:?} is {units} UTF-16 units (limit {LIMIT})"
        );
        joined.push_str(&content);
        pieces.push(content);
    }
    assert_eq!(joined, text, "the pieces re-join to the reply: {pieces:?}");
    assert!(
        gw.frames()
            .iter()
            .all(|(_, f)| !matches!(action(f), Some(Action::Typing { .. }))),
        "typing is not among the descriptor's ops"
    );
    assert!(
        pieces
            .iter()
            .any(|p| p.chars().count() < p.encode_utf16().count()),
        "some piece holds an emoji"
    );
}

// ---------------------------------------------------------------------------
// Streamed replies

/// An OpenAI-compatible server on loopback that streams, as server-sent
/// events, exactly the pieces the test sends it, then `[DONE]` when the
/// sender is dropped.
async fn streaming_openai(
    mut pieces: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = socket.into_split();
        let mut read = BufReader::new(read);
        // The request: its head, then as many body bytes as it declares.
        let mut length = 0;
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        let _ = tokio::io::AsyncReadExt::read_exact(&mut read, &mut body).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let _ = write.write_all(head.as_bytes()).await;
        let chunk = |event: String| format!("{:x}\r\n{event}\r\n", event.len());
        while let Some(piece) = pieces.recv().await {
            let event = json!({"choices": [{"delta": {"content": piece}}]});
            let _ = write
                .write_all(chunk(format!("data: {event}\n\n")).as_bytes())
                .await;
        }
        let _ = write
            .write_all(chunk("data: [DONE]\n\n".to_owned()).as_bytes())
            .await;
        let _ = write.write_all(b"0\r\n\r\n").await;
    });
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_reply_grows_in_one_message_and_ends_exact() {
    let (pieces, stream) = tokio::sync::mpsc::unbounded_channel();
    let base = streaming_openai(stream).await;
    // The placeholder descriptor supports edits (and lists no ops: the
    // legacy set, `edit` included).
    let gw = Running::start(Launch {
        agent: format!("openai:{base}"),
        ..Launch::default()
    })
    .await;
    let mut cursor = gw.stub.cursor();
    gw.hello(&mut cursor).await;
    gw.push(inbound("tell me", "m-s", dm("c-s"), None)).await;

    // Past the first-piece threshold (40 characters): one send.
    let first = "Streaming replies arrive piece by piece, ";
    pieces.send(first).expect("server alive");
    let (_, content, reply_to, _) = gw.send_to(&mut cursor, "c-s").await;
    assert_eq!(
        (content.as_str(), reply_to.as_deref()),
        (first, Some("m-s"))
    );

    // More text: the same message is edited, never a second send.
    pieces.send("and the message grows ").expect("server alive");
    pieces.send("as they come.").expect("server alive");
    drop(pieces);
    let full = "Streaming replies arrive piece by piece, and the message grows as they come.";
    let (_, last) = gw
        .frame(
            &mut cursor,
            "the last edit",
            |f| matches!(action(f), Some(Action::Edit { content, .. }) if content == full),
        )
        .await;
    let Some(Action::Edit { chat_id, .. }) = action(&last) else {
        unreachable!()
    };
    assert_eq!(chat_id, "c-s");
    let sends = gw
        .frames()
        .iter()
        .filter(|(_, f)| matches!(action(f), Some(Action::Send { .. })))
        .count();
    assert_eq!(sends, 1, "one message, edited; no second send");
}
