//! Sessions and turns.
//!
//! Every event is keyed by its session key (relay-contract §5.3). A session
//! runs at most one turn at a time; further messages wait in a bounded FIFO.
//! A session with work has exactly one worker task, which takes a slot from a
//! gateway-wide semaphore for each turn, drains the session's queue and exits
//! when it is empty; idle sessions cost nothing. Each running turn has its own
//! [`CancellationToken`], so an interrupt stops exactly that turn.
//!
//! Buffered deliveries are acked only after every event they carried is in a
//! queue, and a bounded memory of recent `bufferId`s keeps a replay after a
//! reconnect from running twice. A full queue never drops anything: the
//! delivery waits for room, which stops the gateway loop from reading the
//! link, which stops the link reading the socket (relay-contract §7.2
//! step 3: backpressure rather than drops).
//!
//! Replies are delivered off the turn path. A turn ends once its answer is
//! computed and handed to the session's delivery chain: one task per session
//! with replies outstanding, which sends them strictly one after another
//! (every chunk of turn N's reply before any of turn N+1's; after a failed or
//! ambiguous chunk the rest of that reply is not sent). So a session's next
//! turn — and the queue room it frees — never waits for a reply's result.
//! That matters because results arrive on the same link whose reader may be
//! held by the backpressure above: if a turn waited for its result, the
//! reader would wait for the turn and the turn for the reader, until the
//! request's outbound timeout, turn after turn, for every session.
//!
//! At most [`MAX_UNCONFIRMED_REPLIES`] replies of one session are handed off
//! and unfinished at a time; the worker takes a place before it starts a turn
//! (holding no turn slot while it waits). This is the one remaining wait on
//! results, and it is bounded: it happens only when that many replies of ONE
//! session are unconfirmed. Residual case, precisely: while it waits, that
//! session's queue does not drain; if the queue is also full, the link's
//! reader is holding a further event for that session, and the result the
//! chain waits for sits behind that event on the socket, then the link stalls
//! until that request's outbound timeout. The chain then moves on, a turn
//! starts, the held event is queued and the reader catches up on the results
//! behind it. This needs one session to run `queue_per_session` +
//! [`MAX_UNCONFIRMED_REPLIES`] messages ahead of its replies' results (a
//! flood to an agent faster than the link's round trip); a slow agent or an
//! ordinary burst never gets there.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hermes_protocol::action::{Action, ActionResult, Metadata};
use hermes_protocol::event::MessageEvent;
use hermes_protocol::session::{SessionKey, SessionKeySettings, session_key};
use hermes_protocol::split::split_message;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::agent::{Agent, AgentError, TurnInput};
use crate::egress::Egress;
use crate::metrics::{EventDrop, Metrics};
use crate::recent::RecentIds;
use crate::scope::{ChatScope, ScopeCache};

mod admission;
mod delivery;
mod stream;
mod turn;
mod worker;

/// The text that stops the session's running turn (and is egressed as `interrupt`).
pub const STOP_COMMAND: &str = "/stop";

/// The `reason` of the `interrupt` frame egressed for a user's `/stop`.
pub const STOP_REASON: &str = "user_stop";

/// Replies of one session that may be handed to delivery and not yet
/// finished (sent and answered, failed, or given up).
pub const MAX_UNCONFIRMED_REPLIES: usize = 8;

/// How long a reply that found no connection waits for the link to come
/// back before it is given up (counted as failed). The event was acked when
/// it was queued, so the connector will not redeliver it: giving up at once
/// would lose the answer to a reconnect of a few hundred milliseconds.
pub const REPLY_RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// Pause between two attempts of a reply that found no connection.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Limits and settings of the session layer.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The two session-key settings of relay-contract §5.3.
    pub session_keys: SessionKeySettings,
    /// Messages that may wait behind a session's running turn. When a
    /// session's queue is full the delivery waits for room, and so does the
    /// link's reader: every session shares that one ordered socket, so a full
    /// queue stalls all of them (the contract asks for backpressure, not
    /// drops). The default (256) absorbs a real burst to one session while
    /// keeping any single session to 1/16 of `max_queued_total`.
    pub queue_per_session: usize,
    /// Messages that may wait across all sessions.
    pub max_queued_total: usize,
    /// Bytes those messages may hold across all sessions (text, media URLs,
    /// ids and metadata, estimated). A count alone does not bound memory:
    /// 4096 messages of a 16 MiB line each would be 64 GiB. Past it a
    /// delivery waits for room like a full queue (backpressure, no drop).
    pub max_queued_bytes: usize,
    /// Turns that may run at the same time across all sessions.
    pub max_concurrent_turns: usize,
    /// How many recent `bufferId`s are remembered for de-duplication.
    pub recent_buffer_ids: usize,
    /// How many chats' scope and author are remembered (§5.6).
    pub scope_chats: usize,
    /// Upper bound on one agent call; the turn is cancelled after it.
    pub turn_timeout: Duration,
    /// How long an agent may take before the user is shown a typing
    /// indicator (where the descriptor lists `typing`). A reply that comes
    /// sooner sends none: an indicator that flickers for a few milliseconds
    /// tells the user nothing and costs a round trip per turn.
    pub typing_delay: Duration,
    /// Showing a streaming agent's reply as it grows.
    pub streaming: StreamingConfig,
}

/// How a streaming agent's reply is shown as it grows: where the platform's
/// descriptor allows edits (`supports_edit` and the `edit` op) and the reply
/// is a `send` (the contract has no edit for `follow_up`), the first piece
/// is sent once there is enough text, then that message is edited as the
/// text grows, at most once per `edit_interval` and never with two edits in
/// flight, and a last edit sets the exact text. Elsewhere, and for agents
/// that do not stream, the whole reply is sent at the end (typing meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingConfig {
    /// On where the descriptor allows (default true).
    pub enabled: bool,
    /// Platforms never streamed to, whatever their descriptor says.
    pub disabled_platforms: Vec<String>,
    /// The least time between two edits of a reply (default 1 s).
    pub edit_interval: Duration,
    /// The first piece goes out once the reply has this many characters…
    pub first_chunk_chars: usize,
    /// …or once the agent has been writing this long (default 700 ms).
    pub first_chunk_delay: Duration,
    /// Appended by a last edit to a reply cut short by an interrupt or
    /// `/stop` (empty: the partial message is left exactly as it is).
    pub interrupt_marker: String,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            disabled_platforms: Vec::new(),
            edit_interval: Duration::from_secs(1),
            first_chunk_chars: 40,
            first_chunk_delay: Duration::from_millis(700),
            interrupt_marker: " …".to_owned(),
        }
    }
}

impl StreamingConfig {
    /// Whether a reply on `route` to `platform`, described by `descriptor`,
    /// is streamed.
    pub fn applies(
        &self,
        descriptor: &hermes_protocol::descriptor::Descriptor,
        route: &ReplyRoute,
        platform: &str,
    ) -> bool {
        self.enabled
            && matches!(route, ReplyRoute::Send)
            && descriptor.supports_edit
            && descriptor.supports_op("edit")
            && !self.disabled_platforms.iter().any(|p| p == platform)
    }
}

/// The default [`SessionConfig::typing_delay`]: about the time after which
/// a person starts to wonder whether anything is happening.
pub const DEFAULT_TYPING_DELAY: Duration = Duration::from_millis(500);

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            session_keys: SessionKeySettings::default(),
            queue_per_session: 256,
            max_queued_total: 4096,
            max_queued_bytes: 64 << 20,
            max_concurrent_turns: 32,
            recent_buffer_ids: 4096,
            scope_chats: 10_000,
            turn_timeout: crate::agent::DEFAULT_TURN_TIMEOUT,
            typing_delay: DEFAULT_TYPING_DELAY,
            streaming: StreamingConfig::default(),
        }
    }
}

pub use hermes_protocol::event::ReplyRoute;

pub use crate::incoming::{Incoming, Origin};

/// What [`Sessions::submit`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Every event was queued or handled (a `/stop`); a `bufferId` was acked.
    Accepted,
    /// The `bufferId` was seen recently: acked again, nothing queued.
    Duplicate,
    /// The gateway is draining: nothing queued and nothing acked, so the
    /// connector redelivers to whoever runs the session next.
    Draining,
}

/// How [`Sessions::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every queued and running turn finished, and every reply handed to
    /// delivery got its results, within the grace period.
    Finished,
    /// The grace period ran out; the remaining turns (running and still
    /// queued) were cancelled, replies not yet fully sent send no further
    /// chunk, and how many of each is logged.
    Cancelled,
}

struct Queued {
    incoming: Incoming,
    /// [`weight`] of `incoming`, counted in [`State::queued_bytes`].
    bytes: usize,
    /// Cancelled once the delivery's `inbound_ack` is queued on the link: the
    /// turn waits for it, so the ack always goes out before any reply to the
    /// delivery (and a connection lost right after a reply cannot have lost
    /// the ack of the message it answered).
    acked: Option<CancellationToken>,
}

/// A computed answer on its way out, in the session's delivery chain.
struct Reply {
    chunks: Vec<String>,
    /// A streamed reply's text as it grows (then `chunks` is empty).
    stream: Option<stream::StreamReply>,
    chat_id: String,
    reply_to: Option<String>,
    route: ReplyRoute,
    metadata: Metadata,
    /// The originating event's own scope and author (relay-contract §5.6).
    scope: ChatScope,
    /// The turn's token. Only the drain cancels it once the reply is handed
    /// off: an interrupt targets the session's *running* turn, and a reply
    /// already handed to delivery is allowed to finish.
    cancel: CancellationToken,
    /// When the message's frame arrived, and its platform (the reply
    /// latency histogram's label).
    received: std::time::Instant,
    platform: String,
    /// The reply's place among [`MAX_UNCONFIRMED_REPLIES`]; freed when the
    /// reply is finished.
    _place: OwnedSemaphorePermit,
}

struct Session {
    waiting: VecDeque<Queued>,
    /// The running turn's token, if a turn is running.
    running: Option<CancellationToken>,
    /// Whether a worker task runs this session's turns.
    worker: bool,
    /// Replies handed off and not yet picked up by the delivery task.
    replies: VecDeque<Reply>,
    /// Whether a delivery task is sending this session's replies.
    delivering: bool,
    /// Places for unfinished replies ([`MAX_UNCONFIRMED_REPLIES`]).
    reply_places: Arc<Semaphore>,
}

impl Session {
    fn new() -> Self {
        Self {
            waiting: VecDeque::new(),
            running: None,
            worker: false,
            replies: VecDeque::new(),
            delivering: false,
            reply_places: Arc::new(Semaphore::new(MAX_UNCONFIRMED_REPLIES)),
        }
    }

    /// Replies handed off and not finished (waiting or being sent).
    fn unfinished_replies(&self) -> usize {
        self.replies.len() + usize::from(self.delivering)
    }
}

/// Forgets `key`'s session once it has neither a worker nor a delivery task
/// (a later event starts afresh). Keeping it while replies are delivered
/// keeps a new worker from starting a second, unordered delivery chain.
fn retire_if_idle(state: &mut State, key: &SessionKey, metrics: &Metrics) {
    if state
        .sessions
        .get(key)
        .is_some_and(|s| !s.worker && !s.delivering)
    {
        state.sessions.remove(key);
    }
    state.report(metrics);
}

struct State {
    accepting: bool,
    sessions: HashMap<SessionKey, Session>,
    queued_total: usize,
    /// Sum of [`Queued::bytes`] across all sessions.
    queued_bytes: usize,
    recent: RecentIds,
}

impl State {
    /// Writes the session gauges.
    fn report(&self, metrics: &Metrics) {
        metrics.set_sessions(self.sessions.len(), self.queued_total);
    }
}

struct Inner<E, A> {
    egress: E,
    agent: A,
    config: SessionConfig,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    scopes: Mutex<ScopeCache>,
    turn_slots: Arc<Semaphore>,
    /// Parent of every turn token: cancelling it stops everything (drain).
    all_turns: CancellationToken,
    tasks: TaskTracker,
    /// Woken whenever queue room frees up or accepting stops, for deliveries
    /// waiting in [`Sessions::submit`].
    room: Notify,
}

impl<E: Egress, A> Inner<E, A> {
    /// Sends `action` and times its round trip by op and result
    /// (`hermes_relay_outbound_seconds`).
    async fn request(&self, action: Action) -> ActionResult {
        let op = action.op();
        let started = std::time::Instant::now();
        let result = self.egress.request(action).await;
        let labels = [op, crate::metrics::outbound_result(&result)];
        self.metrics
            .latency
            .outbound
            .observe(&labels, started.elapsed());
        result
    }
}

/// A poisoned lock only means another task panicked mid-update; the data is
/// plain bookkeeping that stays usable, so keep serving rather than cascade.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The session layer. Cheap to clone; clones share everything.
pub struct Sessions<E, A> {
    inner: Arc<Inner<E, A>>,
}

impl<E, A> Clone for Sessions<E, A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E: Egress, A: Agent> Sessions<E, A> {
    /// A session layer replying through `egress` with answers from `agent`.
    pub fn new(egress: E, agent: A, config: SessionConfig, metrics: Arc<Metrics>) -> Self {
        let state = State {
            accepting: true,
            sessions: HashMap::new(),
            queued_total: 0,
            queued_bytes: 0,
            recent: RecentIds::new(config.recent_buffer_ids),
        };
        let inner = Inner {
            scopes: Mutex::new(ScopeCache::new(config.scope_chats)),
            turn_slots: Arc::new(Semaphore::new(config.max_concurrent_turns.max(1))),
            egress,
            agent,
            config,
            metrics,
            state: Mutex::new(state),
            all_turns: CancellationToken::new(),
            tasks: TaskTracker::new(),
            room: Notify::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The counters this layer updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The relay side this layer replies through.
    pub fn egress(&self) -> &E {
        &self.inner.egress
    }

    /// The session key of `incoming` under the configured settings.
    pub fn key_of(&self, incoming: &Incoming) -> SessionKey {
        session_key(
            &incoming.event.source,
            incoming.profile.as_deref(),
            &self.inner.config.session_keys,
        )
    }

    /// The caller's metadata with the chat's remembered scope and author
    /// re-attached (§5.6): only for actions with no originating event.
    fn metadata_for_chat(&self, platform: &str, chat_id: &str, base: &Metadata) -> Metadata {
        let mut metadata = base.clone();
        lock(&self.inner.scopes).reattach(platform, chat_id, &mut metadata);
        metadata
    }

    /// `interrupt_inbound`: cancels exactly the running turn of `session_key`
    /// (unknown key: no-op) and clears the chat's typing indicator, best effort.
    /// Replies of earlier turns, already handed to delivery, still go out.
    pub fn interrupt(&self, session_key: &str, chat_id: &str) {
        let inner = &self.inner;
        inner.metrics.interrupt_in();
        let key = SessionKey::from_wire(session_key.to_owned());
        // Only a turn not yet cancelled is cancelled (and its typing cleared):
        // a flood of interrupts for one session spawns one clearing task, not
        // one per frame.
        let cancelled = {
            let state = lock(&inner.state);
            match state.sessions.get(&key).and_then(|s| s.running.as_ref()) {
                Some(token) if !token.is_cancelled() => {
                    token.cancel();
                    true
                }
                _ => false,
            }
        };
        info!(session_key, cancelled, "interrupt from the relay");
        if cancelled && !chat_id.is_empty() {
            let platform = platform_of(session_key);
            if inner.egress.descriptor(platform).supports_op("typing") {
                let this = self.clone();
                let chat_id = chat_id.to_owned();
                let platform = platform.to_owned();
                // Clearing is a request/response; it must not hold up the inbound loop.
                inner.tasks.spawn(async move {
                    let metadata = this.metadata_for_chat(&platform, &chat_id, &Metadata::new());
                    let _ = this
                        .inner
                        .request(Action::Typing {
                            chat_id,
                            content: Some(String::new()),
                            metadata,
                        })
                        .await;
                });
            }
        }
    }

    /// Stops taking new turns: later deliveries are neither queued nor acked,
    /// and a delivery waiting for queue room gives up unacked. Turns already
    /// queued (and acked) still run.
    pub fn stop_accepting(&self) {
        lock(&self.inner.state).accepting = false;
        self.inner.room.notify_waiters();
    }

    /// Stops taking new turns, lets queued and running turns finish and
    /// handed-off replies get their results for up to `grace` (queued turns
    /// were acked, so they are run, not discarded), then cancels whatever is
    /// left (a reply's request already on the link still ends with its
    /// result or outbound timeout), logs how much that was, and waits for it
    /// to wind down.
    pub async fn drain(&self, grace: Duration) -> DrainOutcome {
        self.stop_accepting();
        let tasks = &self.inner.tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_ok() {
            return DrainOutcome::Finished;
        }
        let (running, queued, replies) = {
            let state = lock(&self.inner.state);
            let running = state
                .sessions
                .values()
                .filter(|s| s.running.is_some())
                .count();
            let replies: usize = state
                .sessions
                .values()
                .map(Session::unfinished_replies)
                .sum();
            (running, state.queued_total, replies)
        };
        warn!(
            ?grace,
            running,
            queued,
            replies,
            "drain grace period over; cancelling the remaining turns, including acked ones still queued"
        );
        self.inner.all_turns.cancel();
        tasks.wait().await;
        DrainOutcome::Cancelled
    }

    /// Whether `buffer_id` was handed off recently (a replay to ack, not to run).
    pub fn seen_recently(&self, buffer_id: &str) -> bool {
        lock(&self.inner.state).recent.contains(buffer_id)
    }

    /// Sessions that have a running turn or waiting messages.
    pub fn active_sessions(&self) -> usize {
        lock(&self.inner.state).sessions.len()
    }

    /// Messages waiting behind running turns, across all sessions.
    pub fn queued(&self) -> usize {
        lock(&self.inner.state).queued_total
    }
}

/// `base` with an event's own scope and author attached (§5.6).
fn with_scope(base: &Metadata, scope: &ChatScope) -> Metadata {
    let mut metadata = base.clone();
    scope.attach(&mut metadata);
    metadata
}

/// The platform part of a session key (`agent:<ns>:<platform>:…`), used to
/// pick the descriptor when only the key is known.
fn platform_of(session_key: &str) -> &str {
    session_key.split(':').nth(2).unwrap_or("")
}
