//! One connection's life: dial with a fresh token, send the hellos, wait for
//! the first descriptor, then exactly one reader task and one writer task
//! until something ends it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hermes_protocol::action::ActionResult;
use hermes_protocol::decoder::{DecodeError, DecodeLimits, FrameDecoder};
use hermes_protocol::descriptor::{Descriptor, DescriptorError};
use hermes_protocol::frame::{ConnectorFrame, GatewayFrame};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use crate::inbound::{InboundQueue, TryPush};
use crate::shared::{OutboundQueue, Outgoing, Shared};
use crate::state::{Counters, InboundItem, LinkState};

mod reader;
mod writer;

use reader::{Reader, ReaderEnd, read_loop};
use writer::{WriterEnd, write_loop};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsSink = SplitSink<Ws, Message>;
type WsStream = SplitStream<Ws>;

/// Lifetime of the upgrade token (relay-contract §6.1).
const TOKEN_TTL_SECS: u64 = 300;
/// How long teardown waits for the writer to put a close frame on the wire.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Writes are flushed at least every this many queued frames.
const WRITE_BATCH: usize = 64;

/// Close code for "message too big", sent when the partial line overflows.
const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a protocol violation (bad first descriptor, no descriptor).
const CLOSE_PROTOCOL: u16 = 1002;

/// Why a connection ended, as the supervisor needs to know it.
#[derive(Debug)]
pub(crate) enum Ended {
    /// No WebSocket was established.
    DialFailed(String),
    /// The upgrade succeeded and the connection later ended.
    Closed {
        /// Whether a first descriptor arrived.
        handshaken: bool,
        /// Time from upgrade to end.
        lived: Duration,
        /// The peer's close frame, when it sent one.
        peer_close: Option<(u16, String)>,
        /// Human-readable cause, for the log.
        detail: String,
    },
    /// `close()` was called, or every handle was dropped.
    Shutdown(Option<oneshot::Sender<()>>),
    /// The inbound receiver was dropped: nobody above us any more.
    ConsumerGone,
}

/// Commands from handles to the supervisor.
#[derive(Debug)]
pub(crate) enum Control {
    Close { done: oneshot::Sender<()> },
}

/// What the writer knows about the peer being alive, kept by the reader.
///
/// Any message read from the peer (a pong, a frame, a ping) proves it is
/// alive. The reader cannot hear anything while it waits for room in the
/// inbound channel — that pause is our own backpressure, and a connector may
/// in turn stop reading us while we do not read it — so the clocks the
/// writer judges by only run while the reader is listening: a pause never
/// makes a healthy link look dead, and when the reader resumes both clocks
/// start afresh.
#[derive(Debug)]
struct Liveness {
    opened: Instant,
    /// Milliseconds from `opened` to the last message read.
    last_heard: AtomicU64,
    /// Milliseconds from `opened` to the end of the last pause.
    resumed: AtomicU64,
    /// The reader is waiting for room in the inbound channel.
    paused: AtomicBool,
}

impl Liveness {
    fn new(opened: Instant) -> Self {
        Self {
            opened,
            last_heard: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            paused: AtomicBool::new(false),
        }
    }

    fn heard(&self) {
        self.last_heard
            .store(millis_since(self.opened), Ordering::Relaxed);
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    fn resume(&self) {
        let now = millis_since(self.opened);
        self.last_heard.store(now, Ordering::Relaxed);
        self.resumed.store(now, Ordering::Relaxed);
        self.paused.store(false, Ordering::Relaxed);
    }

    fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    fn at(&self, millis: &AtomicU64) -> Instant {
        self.opened + Duration::from_millis(millis.load(Ordering::Relaxed))
    }

    /// Time since the peer was last heard, counted only while listening;
    /// zero during a pause.
    fn silence(&self) -> Duration {
        if self.is_paused() {
            return Duration::ZERO;
        }
        self.at(&self.last_heard).elapsed()
    }

    /// When a write that started at `started` began counting as stalled:
    /// the later of its start and the end of the last pause.
    fn stall_clock(&self, started: Instant) -> Instant {
        started.max(self.at(&self.resumed))
    }
}

/// Dial, handshake and serve one connection. Returns when it ends; on return
/// the slot is cleared and every pending request has been settled.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    inbound: &Arc<InboundQueue>,
    control: &mut mpsc::Receiver<Control>,
) -> Ended {
    Counters::bump(&shared.counters.dials);
    let ws = tokio::select! {
        biased;
        ctl = control.recv() => return shutdown(ctl),
        ws = dial(shared, tls) => match ws {
            Ok(ws) => ws,
            Err(detail) => return Ended::DialFailed(detail),
        },
    };
    let opened = Instant::now();
    let mut tasks = Tasks::start(ws, shared, inbound, opened);
    tasks.send_hellos(shared).await;
    let (stop_reason, handshaken) = tasks.watch(shared, control).await;
    tasks.teardown(shared, &stop_reason).await;
    match stop_reason {
        Stop::Shutdown(ended) => ended,
        Stop::Ended {
            peer_close, detail, ..
        } => Ended::Closed {
            handshaken,
            lived: opened.elapsed(),
            peer_close,
            detail,
        },
    }
}

/// One connection's reader and writer tasks and the ends of their channels.
struct Tasks {
    reader: JoinHandle<ReaderEnd>,
    writer: JoinHandle<WriterEnd>,
    /// A JoinHandle must not be polled again once it has yielded its output.
    reader_done: bool,
    writer_done: bool,
    /// Kept alive until teardown so the writer's queue cannot close under
    /// it: the writer ends only by the close signal, an error or abort.
    out_tx: OutboundQueue,
    close_tx: Option<oneshot::Sender<CloseFrame>>,
    /// Fires when the reader has read the first descriptor.
    handshake: oneshot::Receiver<()>,
}

/// How the serve loop stopped.
enum Stop {
    Shutdown(Ended),
    Ended {
        peer_close: Option<(u16, String)>,
        detail: String,
        our_close: Option<(u16, &'static str)>,
    },
}

impl Tasks {
    fn start(ws: Ws, shared: &Arc<Shared>, inbound: &Arc<InboundQueue>, opened: Instant) -> Self {
        let (sink, stream) = ws.split();
        let (out_tx, out_rx) = OutboundQueue::new(
            shared.config.outbound_queue,
            shared.config.outbound_byte_budget,
        );
        let (close_tx, close_rx) = oneshot::channel();
        let (hs_tx, handshake) = oneshot::channel();
        let liveness = Arc::new(Liveness::new(opened));
        let writer = tokio::spawn(write_loop(
            sink,
            out_rx,
            close_rx,
            Arc::clone(shared),
            Arc::clone(&liveness),
        ));
        let reader = tokio::spawn(read_loop(
            stream,
            Reader {
                shared: Arc::clone(shared),
                inbound: Arc::clone(inbound),
                writer: out_tx.clone(),
                handshake: Some(hs_tx),
                liveness,
            },
        ));
        Self {
            reader,
            writer,
            reader_done: false,
            writer_done: false,
            out_tx,
            close_tx: Some(close_tx),
            handshake,
        }
    }

    /// Hellos first, in configured order (§3.1); the writer is already
    /// running, so this only waits if the queue is tiny.
    async fn send_hellos(&self, shared: &Shared) {
        for identity in &shared.config.identities {
            let hello = GatewayFrame::Hello {
                platform: identity.platform.clone(),
                bot_id: identity.bot_id.clone(),
                command_manifest: None,
            };
            if self.out_tx.send(hello.encode(), None).await.is_err() {
                break;
            }
        }
    }

    /// Until a task ends, a close is asked for, or the first descriptor is
    /// late. Returns why, and whether the handshake completed.
    async fn watch(
        &mut self,
        shared: &Shared,
        control: &mut mpsc::Receiver<Control>,
    ) -> (Stop, bool) {
        let handshake_deadline = tokio::time::sleep(shared.config.handshake_timeout);
        tokio::pin!(handshake_deadline);
        let mut handshaken = false;
        let mut waiting_handshake = true;
        let stop = loop {
            tokio::select! {
                biased;
                ctl = control.recv() => break Stop::Shutdown(shutdown(ctl)),
                end = &mut self.reader => {
                    self.reader_done = true;
                    break reader_stop(end);
                }
                end = &mut self.writer => {
                    self.writer_done = true;
                    break writer_stop(end);
                }
                hs = &mut self.handshake, if waiting_handshake => {
                    waiting_handshake = false;
                    // An Err means the reader ended first; the next turn sees why.
                    handshaken = hs.is_ok();
                }
                () = &mut handshake_deadline, if waiting_handshake => {
                    warn!(timeout = ?shared.config.handshake_timeout, "relay handshake timed out: no descriptor");
                    break Stop::Ended {
                        peer_close: None,
                        detail: "no descriptor before the handshake timeout".to_owned(),
                        our_close: Some((CLOSE_PROTOCOL, "no descriptor")),
                    };
                }
            }
        };
        // The biased select may have seen the reader end in the same poll in
        // which the first descriptor arrived: a 4401 right after the
        // descriptor is still a post-handshake 4401 (§6.2).
        if waiting_handshake && self.handshake.try_recv().is_ok() {
            handshaken = true;
        }
        (stop, handshaken)
    }

    /// No new requests, a polite close if we owe one, both tasks gone, then
    /// every waiter settled at once.
    async fn teardown(mut self, shared: &Shared, stop_reason: &Stop) {
        shared.clear_connection();
        let our_close = match stop_reason {
            Stop::Shutdown(_) => Some((1000, "gateway closing")),
            Stop::Ended { our_close, .. } => *our_close,
        };
        if let (Some((code, reason)), Some(close_tx)) = (our_close, self.close_tx.take()) {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            if !self.writer_done && close_tx.send(frame).is_ok() {
                match tokio::time::timeout(CLOSE_GRACE, &mut self.writer).await {
                    Ok(_) => self.writer_done = true,
                    Err(_) => debug!("relay writer did not finish the close in time"),
                }
            }
        }
        if !self.reader_done {
            stop(self.reader).await;
        }
        if !self.writer_done {
            stop(self.writer).await;
        }
        // A first descriptor read while the reader was still running above
        // may have re-installed this dying connection; clear it again now
        // that the reader is gone, so no stale slot or descriptor outlives it.
        shared.clear_connection();
        self.out_tx.close();
        drop(self.out_tx);
        shared.settle_all(ActionResult::connection_lost);
    }
}

fn reader_stop(end: Result<ReaderEnd, tokio::task::JoinError>) -> Stop {
    let ended = |detail: String, our_close| Stop::Ended {
        peer_close: None,
        detail,
        our_close,
    };
    match end {
        Ok(ReaderEnd::PeerClosed(close)) => {
            let detail = match &close {
                Some((code, reason)) => format!("connector closed with {code} {reason:?}"),
                None => "connector closed without a code".to_owned(),
            };
            Stop::Ended {
                peer_close: close,
                detail,
                our_close: None,
            }
        }
        Ok(ReaderEnd::Eof) => ended("connection ended without a close frame".to_owned(), None),
        Ok(ReaderEnd::Error(e)) => ended(format!("read failed: {e}"), None),
        Ok(ReaderEnd::Overflow(limit)) => ended(
            format!("partial line exceeded {limit} bytes"),
            Some((CLOSE_TOO_BIG, "partial line too long")),
        ),
        Ok(ReaderEnd::BadFirstDescriptor(e)) => ended(
            format!("handshake failed: {e}"),
            Some((CLOSE_PROTOCOL, "bad descriptor")),
        ),
        Ok(ReaderEnd::ConsumerGone) => Stop::Shutdown(Ended::ConsumerGone),
        Err(e) => ended(format!("reader task failed: {e}"), None),
    }
}

fn writer_stop(end: Result<WriterEnd, tokio::task::JoinError>) -> Stop {
    let (detail, our_close) = match end {
        Ok(WriterEnd::Closed) => ("writer closed".to_owned(), None),
        Ok(WriterEnd::Dead(silence)) => (
            format!("nothing heard for {silence:?}: connection dead"),
            None,
        ),
        Ok(WriterEnd::Stalled(stalled)) => (
            format!("a write made no progress for {stalled:?}: connection dead"),
            None,
        ),
        Ok(WriterEnd::Error(e)) => (format!("write failed: {e}"), None),
        Err(e) => (format!("writer task failed: {e}"), None),
    };
    Stop::Ended {
        peer_close: None,
        detail,
        our_close,
    }
}

/// Abort a task (if still running) and wait until it is gone, so its channel
/// ends are dropped before pending requests are settled.
async fn stop<T>(task: JoinHandle<T>) {
    task.abort();
    let _ = task.await;
}

fn shutdown(ctl: Option<Control>) -> Ended {
    match ctl {
        Some(Control::Close { done }) => Ended::Shutdown(Some(done)),
        None => Ended::Shutdown(None),
    }
}
/// TCP connect + TLS + WebSocket upgrade with a freshly minted token, bounded
/// by the dial timeout. Errors are rendered without the token.
async fn dial(shared: &Shared, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Ws, String> {
    let config = &shared.config;
    let mut request = config
        .dial_url()
        .into_client_request()
        .map_err(|e| format!("bad dial url: {e}"))?;
    if let Some(credentials) = config.credentials() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = hermes_protocol::auth::make_token(
            &credentials.gateway_id,
            &credentials.secret,
            TOKEN_TTL_SECS,
            now,
        )
        .map_err(|e| format!("cannot mint upgrade token: {e}"))?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "upgrade token is not a valid header value".to_owned())?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let ws_config = WebSocketConfig::default()
        // Not tungstenite's 64 MiB default: a single message may carry a
        // whole partial line plus some slack for the lines before it (16 MiB
        // + 64 KiB by default); the decoder enforces the line bound itself.
        .max_message_size(Some(config.max_partial_line.saturating_add(64 * 1024)))
        .max_frame_size(Some(config.max_partial_line.saturating_add(64 * 1024)));
    let connector = match (config.dial_url().starts_with("wss://"), tls) {
        (true, Some(tls)) => Connector::Rustls(Arc::clone(tls)),
        (true, None) => return Err("TLS is unavailable for a wss:// url".to_owned()),
        (false, _) => Connector::Plain,
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(config.dial_timeout, connect).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(format!("dial failed: {e}")),
        Err(_) => Err(format!("dial timed out after {:?}", config.dial_timeout)),
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
