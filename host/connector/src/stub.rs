//! A relay connector on loopback that behaves like the production one.
//!
//! The controls a test drives are in `stub/controls.rs` (feature
//! `test-controls`), the record of what happened in `record.rs`, the webhook
//! ingress in `ingress.rs`, its configuration in `stub/config.rs`. This file
//! is the connector side of the whole contract — upgrade, auth, hello,
//! descriptor, routing and buffering — in the order of relay-contract.md.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hermes_protocol::action::{Action, ActionResult};
use hermes_protocol::auth::{AuthError, verify_token};
use hermes_protocol::decoder::FrameDecoder;
use hermes_protocol::frame::{ConnectorFrame, GatewayFrame};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    AUTHORIZATION, CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

mod config;
#[cfg(any(test, feature = "test-controls"))]
mod controls;

pub use config::{Answer, GoingIdle, StubAuth, StubConfig, StubError, descriptor_value};

use crate::record::{EventCursor, Record, StubEvent, TokenVerdict};

/// Close code for a missing, invalid, expired or revoked token.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// How long a closing connection waits for the peer's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

type Body = hermes_http::Body;
type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Something to do on the current connection.
#[derive(Debug)]
// Without `test-controls` only `Text` is sent (the shipped `dev` pushes
// frames); the other variants stay so the connection loop reads the same.
#[cfg_attr(not(any(test, feature = "test-controls")), allow(dead_code))]
enum Command {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
    Drop,
    Stall,
}

#[derive(Debug, Clone)]
struct ConnControl {
    conn: u64,
    commands: mpsc::Sender<Command>,
}

#[derive(Debug)]
struct Inner {
    config: Mutex<StubConfig>,
    script: Mutex<VecDeque<Answer>>,
    /// Answers by op (`send`, `follow_up`, …), between the script and the default.
    per_op: Mutex<HashMap<String, Answer>>,
    record: Arc<Record>,
    current: Mutex<Option<ConnControl>>,
    connections: AtomicU64,
    message_ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running stub connector on `127.0.0.1`. Dropping it stops accepting;
/// open connections end when the gateway side goes away or
/// [`drop_connection`](Self::drop_connection) is called.
#[derive(Debug)]
pub struct StubConnector {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for StubConnector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StubConnector {
    /// Bind `127.0.0.1:0` and start serving.
    pub async fn start(config: StubConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let record_limit = config.record_limit;
        let inner = Arc::new(Inner {
            config: Mutex::new(config),
            script: Mutex::new(VecDeque::new()),
            per_op: Mutex::new(HashMap::new()),
            record: Arc::new(Record::new(record_limit)),
            current: Mutex::new(None),
            connections: AtomicU64::new(0),
            message_ids: AtomicU64::new(0),
        });
        // The relay link is one long-lived upgraded connection (and the
        // reconnects a test provokes): no connection deadline, room for
        // many.
        let options = hermes_http::ServeOptions {
            max_connections: 1024,
            connection_timeout: None,
            upgrades: true,
            ..hermes_http::ServeOptions::new("stub connector")
        };
        let served = Arc::clone(&inner);
        let serving = hermes_http::serve(listener, options, Default::default(), move |req| {
            route(Arc::clone(&served), req)
        });
        let server = tokio::spawn(serving);
        Ok(Self {
            inner,
            addr,
            server,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a gateway is configured with (`ws://127.0.0.1:<port>`;
    /// the gateway appends `/relay`).
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Send a frame to the connected gateway.
    pub async fn push_frame(&self, frame: &ConnectorFrame) -> Result<(), StubError> {
        self.command(Command::Text(frame.encode())).await
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<StubEvent> {
        self.inner.record.snapshot()
    }

    /// A cursor at the start of the record.
    pub fn cursor(&self) -> EventCursor {
        EventCursor::new(Arc::clone(&self.inner.record), 0)
    }

    /// A cursor after everything recorded so far.
    pub fn cursor_at_end(&self) -> EventCursor {
        EventCursor::at_end(Arc::clone(&self.inner.record))
    }

    async fn command(&self, command: Command) -> Result<(), StubError> {
        let control = lock(&self.inner.current).clone();
        let control = control.ok_or(StubError::NoConnection)?;
        control
            .commands
            .send(command)
            .await
            .map_err(|_| StubError::NoConnection)
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

/// HTTP routing. Only `/relay` upgrades; everything else is 400, as the
/// production connector answers (relay-contract §7.1). A webhook ingress for
/// the `dev` command hooks in here later.
async fn route(inner: Arc<Inner>, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let reject = |inner: &Inner, path: String, text| {
        inner
            .record
            .push(StubEvent::HttpRejected { path, status: 400 });
        plain(StatusCode::BAD_REQUEST, text)
    };
    if path != "/relay" {
        return reject(&inner, path, "relay upgrades only on /relay\n");
    }
    let Some(accept) = websocket_accept(&req) else {
        return reject(&inner, path, "expected a WebSocket upgrade\n");
    };
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    tokio::spawn(async move {
        match hyper::upgrade::on(&mut req).await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                serve(inner, ws, token).await;
            }
            Err(e) => tracing::debug!(error = %e, "stub connector: upgrade failed"),
        }
    });
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// The `Sec-WebSocket-Accept` value when `req` is a valid upgrade request.
fn websocket_accept(req: &Request<Incoming>) -> Option<String> {
    let headers = req.headers();
    let has_token = |name, token: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
    };
    let ok = req.method() == Method::GET
        && has_token(CONNECTION, "upgrade")
        && has_token(UPGRADE, "websocket")
        && headers
            .get(SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let key = headers.get(SEC_WEBSOCKET_KEY)?;
    ok.then(|| derive_accept_key(key.as_bytes()))
}

fn verdict(auth: &StubAuth, token: Option<&str>) -> TokenVerdict {
    let StubAuth::Tokens(secrets) = auth else {
        return TokenVerdict::NotChecked;
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return TokenVerdict::Rejected {
            reason: "missing token".to_owned(),
        };
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match verify_token(token, secrets, now) {
        Ok(verified) => TokenVerdict::Accepted {
            gateway_id: verified.payload,
        },
        Err(AuthError::Expired { .. }) => TokenVerdict::Rejected {
            reason: "expired".to_owned(),
        },
        Err(_) => TokenVerdict::Rejected {
            reason: "invalid token".to_owned(),
        },
    }
}

/// One upgraded connection.
async fn serve(inner: Arc<Inner>, mut ws: Ws, token: Option<String>) {
    let conn = inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let auth = lock(&inner.config).auth.clone();
    let verdict = verdict(&auth, token.as_deref());
    let rejected = match &verdict {
        TokenVerdict::Rejected { reason } => Some(reason.clone()),
        _ => None,
    };
    inner.record.push(StubEvent::Upgraded {
        conn,
        token,
        verdict,
    });
    if let Some(reason) = rejected {
        // Like production: the upgrade completes, then 4401 with a reason.
        close_and_wait(&inner, conn, &mut ws, CLOSE_UNAUTHORIZED, reason).await;
        inner.record.push(StubEvent::Disconnected { conn });
        return;
    }

    let (commands, mut queue) = mpsc::channel(1024);
    *lock(&inner.current) = Some(ConnControl {
        conn,
        commands: commands.clone(),
    });
    let mut session = Session {
        inner: Arc::clone(&inner),
        conn,
        commands,
        said_descriptor: false,
    };
    let mut decoder = FrameDecoder::<GatewayFrame>::new();
    loop {
        tokio::select! {
            message = ws.next() => {
                let bytes = match message {
                    Some(Ok(Message::Text(text))) => Bytes::copy_from_slice(text.as_bytes()),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                            None => (None, String::new()),
                        };
                        inner.record.push(StubEvent::PeerClosed { conn, code, reason });
                        continue;
                    }
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queues the pong itself.
                        inner.record.push(StubEvent::Ping { conn });
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                if decoder.push(&bytes).is_err() {
                    break;
                }
                let mut replies = Vec::new();
                while let Some(decoded) = decoder.next_frame() {
                    match decoded {
                        Ok(frame) => session.on_frame(frame, &mut replies),
                        Err(e) => inner.record.push(StubEvent::Malformed { conn, error: e.to_string() }),
                    }
                }
                if send_all(&mut ws, replies).await.is_err() {
                    break;
                }
            }
            command = queue.recv() => match command {
                Some(Command::Text(text)) => {
                    if ws.send(Message::text(text)).await.is_err() { break; }
                }
                Some(Command::Binary(bytes)) => {
                    if ws.send(Message::binary(bytes)).await.is_err() { break; }
                }
                Some(Command::Close(code, reason)) => {
                    close_and_wait(&inner, conn, &mut ws, code, reason).await;
                    break;
                }
                Some(Command::Stall) => {
                    stalled(&mut queue).await;
                    break;
                }
                Some(Command::Drop) | None => break,
            },
        }
    }
    {
        let mut current = lock(&inner.current);
        if current.as_ref().is_some_and(|c| c.conn == conn) {
            *current = None;
        }
    }
    drop(ws);
    inner.record.push(StubEvent::Disconnected { conn });
}

/// A wedged connection: read nothing until told to end. The socket is
/// dropped afterwards either way (a wedged peer has no close handshake).
async fn stalled(queue: &mut mpsc::Receiver<Command>) {
    while let Some(command) = queue.recv().await {
        if matches!(command, Command::Close(..) | Command::Drop) {
            break;
        }
    }
}

async fn send_all(ws: &mut Ws, texts: Vec<String>) -> Result<(), ()> {
    if texts.is_empty() {
        return Ok(());
    }
    for text in texts {
        ws.feed(Message::text(text)).await.map_err(|_| ())?;
    }
    ws.flush().await.map_err(|_| ())
}

/// Send a close frame and wait (bounded) for the peer's reply, recording it.
async fn close_and_wait(inner: &Inner, conn: u64, ws: &mut Ws, code: u16, reason: String) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                let (code, reason) = match frame {
                    Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                    None => (None, String::new()),
                };
                inner
                    .record
                    .push(StubEvent::PeerClosed { conn, code, reason });
            }
        }
    })
    .await;
}

/// Per-connection protocol behaviour.
struct Session {
    inner: Arc<Inner>,
    conn: u64,
    commands: mpsc::Sender<Command>,
    said_descriptor: bool,
}

impl Session {
    /// Record a frame and queue the replies a connector gives to it.
    fn on_frame(&mut self, frame: GatewayFrame, replies: &mut Vec<String>) {
        match &frame {
            GatewayFrame::Hello { .. } if !self.said_descriptor => {
                self.said_descriptor = true;
                let descriptors = lock(&self.inner.config).descriptors.clone();
                for descriptor in descriptors {
                    let line = json!({ "type": "descriptor", "descriptor": descriptor });
                    replies.push(format!("{line}\n"));
                }
            }
            GatewayFrame::Outbound {
                request_id, action, ..
            } => {
                let scripted = lock(&self.inner.script).pop_front();
                let answer = scripted
                    .or_else(|| lock(&self.inner.per_op).get(action.op()).cloned())
                    .unwrap_or_else(|| lock(&self.inner.config).default_answer.clone());
                self.answer(request_id.as_str(), action, answer, replies);
            }
            GatewayFrame::GoingIdle if lock(&self.inner.config).going_idle == GoingIdle::Ack => {
                replies.push(ConnectorFrame::GoingIdleAck.encode());
            }
            _ => {}
        }
        self.inner.record.push(StubEvent::Frame {
            conn: self.conn,
            frame,
        });
    }

    fn answer(&self, request_id: &str, action: &Action, answer: Answer, replies: &mut Vec<String>) {
        let result = match answer {
            Answer::Never => return,
            Answer::Delay(delay, inner) => {
                let mut later = Vec::new();
                self.answer(request_id, action, *inner, &mut later);
                let commands = self.commands.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    for text in later {
                        let _ = commands.send(Command::Text(text)).await;
                    }
                });
                return;
            }
            Answer::Failure(error) => json!({ "success": false, "error": error }),
            Answer::Result(value) => value,
            Answer::Success => self.success(action),
        };
        let frame = ConnectorFrame::OutboundResult {
            request_id: hermes_protocol::action::RequestId::from_wire(request_id.to_owned()),
            result: ActionResult::from_value(result),
        };
        replies.push(frame.encode());
    }

    fn success(&self, action: &Action) -> Value {
        let id = || {
            format!(
                "m{}",
                self.inner.message_ids.fetch_add(1, Ordering::SeqCst) + 1
            )
        };
        match action {
            Action::Send { .. } | Action::FollowUp { .. } => {
                json!({ "success": true, "message_id": id() })
            }
            Action::Edit { message_id, .. } => json!({ "success": true, "message_id": message_id }),
            Action::Typing { .. } => json!({ "success": true }),
            Action::GetChatInfo { chat_id } => {
                json!({ "success": true, "name": chat_id, "type": "dm" })
            }
        }
    }
}
