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
}

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
            turn_timeout: Duration::from_secs(300),
        }
    }
}

/// How the answer to an event goes back (a converter's reply route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyRoute {
    /// `send` to the event's chat with `reply_to` = the event's message id.
    Send,
    /// `follow_up` on a capability the connector vaulted for the session
    /// (e.g. `discord.interaction_token`); the gateway never sees the credential.
    FollowUp {
        /// The capability kind.
        kind: String,
    },
}

/// One event on its way into a session, with how to answer it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The user's message.
    pub event: MessageEvent,
    /// `send` to the chat or `follow_up` on a vaulted capability.
    pub route: ReplyRoute,
    /// Metadata every reply carries (scope is re-attached on top, §5.6).
    pub metadata: Metadata,
    /// The session namespace of a forward (its `profile`); `None` uses the
    /// source's own `profile`.
    pub profile: Option<String>,
}

impl Incoming {
    /// An event from an `inbound` frame: replies are `send`s, profile from its source.
    pub fn inbound(event: MessageEvent) -> Self {
        Self {
            event,
            route: ReplyRoute::Send,
            metadata: Metadata::new(),
            profile: None,
        }
    }
}

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
fn retire_if_idle(state: &mut State, key: &SessionKey) {
    if state
        .sessions
        .get(key)
        .is_some_and(|s| !s.worker && !s.delivering)
    {
        state.sessions.remove(key);
    }
}

struct State {
    accepting: bool,
    sessions: HashMap<SessionKey, Session>,
    queued_total: usize,
    /// Sum of [`Queued::bytes`] across all sessions.
    queued_bytes: usize,
    recent: RecentIds,
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

    /// Hands the events of one delivery to their sessions, then acks
    /// `buffer_id` (relay-contract §5.4) once every event is queued. A
    /// recently seen `buffer_id` is acked again without queueing anything.
    /// While draining nothing is queued and nothing is acked.
    ///
    /// When a queue the delivery needs is full (its session's, or the
    /// gateway-wide bound), this waits until the whole delivery fits: nothing
    /// is dropped and nothing is acked before it is queued. The wait ends
    /// with [`Submitted::Draining`] if the layer stops accepting meanwhile.
    /// Must be called from within a tokio runtime.
    pub async fn submit(&self, events: Vec<Incoming>, buffer_id: Option<&str>) -> Submitted {
        let inner = &self.inner;
        let keyed: Vec<(SessionKey, Incoming)> = events
            .into_iter()
            .map(|incoming| (self.key_of(&incoming), incoming))
            .collect();
        let need = room_needed(&keyed);
        let acked = buffer_id.map(|_| CancellationToken::new());
        let mut waited = false;
        let stops = loop {
            // Registered before looking, so room freed in between still wakes us.
            let room = inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // The lock is released at the end of this block, before any await.
            let step = {
                let mut state = lock(&inner.state);
                if buffer_id.is_some_and(|id| state.recent.contains(id)) {
                    Step::Duplicate
                } else if !state.accepting {
                    Step::Draining
                } else if self.fits(&state, &need) {
                    let mut stops = Vec::new();
                    for (key, incoming) in keyed {
                        self.capture_scope(&incoming.event);
                        if is_stop(&incoming) {
                            self.stop_locally(&state, &key);
                            stops.push(key);
                        } else {
                            self.enqueue(&mut state, key, incoming, acked.clone());
                        }
                    }
                    if let Some(id) = buffer_id {
                        state.recent.insert(id);
                    }
                    break stops;
                } else {
                    Step::Full
                }
            };
            match step {
                Step::Duplicate => {
                    inner.metrics.event_dropped(EventDrop::Duplicate);
                    debug!(buffer_id, "replayed delivery already handled; acking again");
                    if let Some(id) = buffer_id {
                        inner.egress.ack(id).await;
                    }
                    return Submitted::Duplicate;
                }
                Step::Draining => {
                    for _ in &keyed {
                        inner.metrics.event_dropped(EventDrop::Draining);
                    }
                    info!(
                        buffer_id,
                        "draining: delivery not taken and not acked; the connector redelivers it"
                    );
                    return Submitted::Draining;
                }
                Step::Full => {}
            }
            if !waited {
                waited = true;
                inner.metrics.queue_full_wait();
                info!(
                    buffer_id,
                    "queue full: holding the delivery (and the link) until there is room"
                );
            }
            room.await;
        };
        // Releases the queued turns however this function ends.
        let _release = acked.map(CancellationToken::drop_guard);
        for key in stops {
            inner
                .egress
                .interrupt(key.as_str(), Some(STOP_REASON))
                .await;
        }
        if let Some(id) = buffer_id {
            inner.egress.ack(id).await;
        }
        Submitted::Accepted
    }

    /// Whether every session in `need` (and the gateway-wide bound) has room
    /// for its share of a delivery. An empty queue always takes a delivery,
    /// so one larger than a bound cannot wait forever.
    fn fits(&self, state: &State, need: &[(SessionKey, usize, usize)]) -> bool {
        let config = &self.inner.config;
        let total: usize = need.iter().map(|(_, n, _)| n).sum();
        let bytes: usize = need.iter().map(|(_, _, b)| b).sum();
        let total_fits = state.queued_total == 0
            || state.queued_total.saturating_add(total) <= config.max_queued_total;
        let bytes_fit = state.queued_bytes == 0
            || state.queued_bytes.saturating_add(bytes) <= config.max_queued_bytes;
        total_fits
            && bytes_fit
            && need.iter().all(|(key, n, _)| {
                let waiting = state.sessions.get(key).map_or(0, |s| s.waiting.len());
                waiting == 0 || waiting.saturating_add(*n) <= config.queue_per_session
            })
    }

    fn capture_scope(&self, event: &MessageEvent) {
        let source = &event.source;
        lock(&self.inner.scopes).capture(
            &source.platform,
            &source.chat_id,
            source.scope_id.as_deref(),
            source.user_id.as_deref(),
        );
    }

    /// `/stop`: cancel the running turn here; the caller then egresses
    /// `interrupt` so the connector can stop the session wherever it runs.
    fn stop_locally(&self, state: &State, key: &SessionKey) {
        self.inner.metrics.stop_local();
        let running = state.sessions.get(key).and_then(|s| s.running.as_ref());
        if let Some(token) = running {
            token.cancel();
        }
        info!(
            session_key = key.as_str(),
            cancelled = running.is_some(),
            "user /stop"
        );
    }

    /// Queues `incoming`, spawning the session's worker if it has none. The
    /// caller checked the bounds with [`fits`](Self::fits).
    fn enqueue(
        &self,
        state: &mut State,
        key: SessionKey,
        incoming: Incoming,
        acked: Option<CancellationToken>,
    ) {
        let session = state
            .sessions
            .entry(key.clone())
            .or_insert_with(Session::new);
        let bytes = weight(&incoming);
        session.waiting.push_back(Queued {
            incoming,
            bytes,
            acked,
        });
        let spawn_worker = !session.worker;
        session.worker = true;
        state.queued_total += 1;
        state.queued_bytes += bytes;
        if spawn_worker {
            let this = self.clone();
            self.inner.tasks.spawn(async move { this.work(key).await });
        }
    }

    /// The worker of one session: runs its turns in order until the queue is
    /// empty, handing each answer to the session's delivery chain.
    async fn work(self, key: SessionKey) {
        let inner = &self.inner;
        loop {
            let Some(places) = lock(&inner.state)
                .sessions
                .get(&key)
                .map(|s| Arc::clone(&s.reply_places))
            else {
                return;
            };
            // A place for the reply first, then a turn slot: a session whose
            // replies are backed up waits without holding a slot others need.
            // This is the only wait on reply results (see the module docs).
            let permits = async {
                let place = places.acquire_owned().await;
                let slot = Arc::clone(&inner.turn_slots).acquire_owned().await;
                (place, slot)
            };
            let permits = tokio::select! {
                permits = permits => permits,
                () = inner.all_turns.cancelled() => {
                    self.abandon(&key);
                    return;
                }
            };
            // The semaphores are never closed, so this only guards against the impossible.
            let (Ok(place), Ok(_slot)) = permits else {
                self.abandon(&key);
                return;
            };
            let (queued, cancel) = {
                let mut state = lock(&inner.state);
                let Some(session) = state.sessions.get_mut(&key) else {
                    return;
                };
                let Some(queued) = session.waiting.pop_front() else {
                    // Empty: this worker ends. The session is forgotten once
                    // its replies are out too; a later event spawns a fresh worker.
                    session.worker = false;
                    retire_if_idle(&mut state, &key);
                    return;
                };
                let cancel = inner.all_turns.child_token();
                session.running = Some(cancel.clone());
                state.queued_total = state.queued_total.saturating_sub(1);
                state.queued_bytes = state.queued_bytes.saturating_sub(queued.bytes);
                (queued, cancel)
            };
            inner.room.notify_waiters();
            if let Some(acked) = &queued.acked {
                acked.cancelled().await;
            }
            let reply = self.run_turn(&key, queued.incoming, cancel, place).await;
            let mut state = lock(&inner.state);
            if let Some(session) = state.sessions.get_mut(&key) {
                session.running = None;
                if let Some(reply) = reply {
                    session.replies.push_back(reply);
                    if !session.delivering {
                        session.delivering = true;
                        let this = self.clone();
                        let key = key.clone();
                        inner.tasks.spawn(async move { this.deliver(key).await });
                    }
                }
            }
        }
    }

    /// The delivery chain of one session: sends its replies one after
    /// another until none is left. A reply's chunks go out in order, each
    /// after the previous one's result, so the first chunk of a reply is
    /// written as soon as the previous reply is finished.
    async fn deliver(self, key: SessionKey) {
        loop {
            let reply = {
                let mut state = lock(&self.inner.state);
                let Some(session) = state.sessions.get_mut(&key) else {
                    return;
                };
                let Some(reply) = session.replies.pop_front() else {
                    session.delivering = false;
                    retire_if_idle(&mut state, &key);
                    return;
                };
                reply
            };
            self.send_reply(&key, reply).await;
        }
    }

    /// Sends one reply's chunks until one fails or the drain cancels it.
    async fn send_reply(&self, key: &SessionKey, reply: Reply) {
        let inner = &self.inner;
        for chunk in reply.chunks {
            if reply.cancel.is_cancelled() {
                inner.metrics.turn_cancelled();
                return;
            }
            let metadata = with_scope(&reply.metadata, &reply.scope);
            let action = match &reply.route {
                ReplyRoute::Send => Action::Send {
                    chat_id: reply.chat_id.clone(),
                    content: chunk,
                    reply_to: reply.reply_to.clone(),
                    metadata,
                },
                ReplyRoute::FollowUp { kind } => Action::FollowUp {
                    session_key: key.as_str().to_owned(),
                    kind: kind.clone(),
                    content: chunk,
                    metadata,
                },
            };
            let op = action.op();
            let result = self.request_through_reconnects(action, &reply.cancel).await;
            if !self.record_reply(key, op, &result) {
                // Later pieces without the failed one would read as nonsense,
                // and an ambiguous failure may have been delivered: stop here.
                return;
            }
        }
    }

    /// Sends `action`; when nothing was written for want of a connection,
    /// waits for the link (up to [`REPLY_RECONNECT_WAIT`], unless the turn is
    /// cancelled) and sends it again. Only `not_connected` is retried: it is
    /// unambiguous, so the retry cannot deliver the reply twice.
    async fn request_through_reconnects(
        &self,
        action: Action,
        cancel: &CancellationToken,
    ) -> ActionResult {
        let egress = &self.inner.egress;
        let deadline = tokio::time::Instant::now() + REPLY_RECONNECT_WAIT;
        loop {
            let result = egress.request(action.clone()).await;
            if result != ActionResult::not_connected() {
                return result;
            }
            let reconnected = tokio::select! {
                () = cancel.cancelled() => false,
                () = tokio::time::sleep_until(deadline) => false,
                () = egress.until_connected() => true,
            };
            // A link that is closed or revoked answers `not_connected` at
            // once and for good: stop at the deadline rather than spin.
            if !reconnected || tokio::time::Instant::now() >= deadline {
                return result;
            }
            debug!(
                op = action.op(),
                "relay reconnected; sending the reply again"
            );
            // The state may read connected a moment before the new writer is
            // installed: pace the attempts instead of spinning.
            tokio::select! {
                () = cancel.cancelled() => return result,
                () = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }

    /// Drops whatever still waits in `key`'s queue and ends its worker: only
    /// when the drain's grace period ran out (the count is logged by
    /// [`drain`](Self::drain)). Its delivery chain, if any, winds down on its
    /// own (every reply's token is cancelled by then).
    fn abandon(&self, key: &SessionKey) {
        let mut state = lock(&self.inner.state);
        if let Some(session) = state.sessions.get_mut(key) {
            let waiting = std::mem::take(&mut session.waiting);
            let dropped = waiting.len();
            let bytes: usize = waiting.iter().map(|q| q.bytes).sum();
            session.worker = false;
            state.queued_total = state.queued_total.saturating_sub(dropped);
            state.queued_bytes = state.queued_bytes.saturating_sub(bytes);
            for _ in 0..dropped {
                self.inner.metrics.turn_cancelled();
            }
            retire_if_idle(&mut state, key);
        }
        drop(state);
        self.inner.room.notify_waiters();
    }

    /// Runs one turn up to its computed answer, split into chunks: the reply
    /// to hand to delivery (with its `place`), or `None` when there is none.
    async fn run_turn(
        &self,
        key: &SessionKey,
        incoming: Incoming,
        cancel: CancellationToken,
        place: OwnedSemaphorePermit,
    ) -> Option<Reply> {
        let inner = &self.inner;
        inner.metrics.turn_started();
        let chat_id = incoming.event.source.chat_id.clone();
        // Every action of this turn carries the event's own scope and
        // author, whatever the chat's memory holds by then (§5.6).
        let scope = ChatScope::of(&incoming.event.source);
        let descriptor = inner.egress.descriptor(&incoming.event.source.platform);
        let turn = TurnInput {
            session_key: key.clone(),
            event: incoming.event,
        };

        // Typing runs alongside the agent but never delays the reply: once the
        // agent answers, an unfinished typing request is simply dropped.
        let typing = async {
            if descriptor.supports_op("typing") && !chat_id.is_empty() {
                let metadata = with_scope(&incoming.metadata, &scope);
                let result = inner
                    .egress
                    .request(Action::Typing {
                        chat_id: chat_id.clone(),
                        content: None,
                        metadata,
                    })
                    .await;
                if !result.success {
                    debug!(
                        error = result.error.as_deref().unwrap_or(""),
                        "typing indicator failed"
                    );
                }
            }
            std::future::pending::<()>().await;
        };
        let timeout = inner.config.turn_timeout;
        let answer = async {
            tokio::select! {
                biased;
                () = cancel.cancelled() => Err(AgentError::Cancelled),
                result = tokio::time::timeout(timeout, inner.agent.respond(&turn, cancel.clone())) => {
                    result.unwrap_or(Err(AgentError::TimedOut(timeout)))
                }
            }
        };
        // Biased so the typing request is issued before the agent first runs.
        let answer = tokio::select! {
            biased;
            () = typing => Err(AgentError::Cancelled),
            answer = answer => answer,
        };

        let text = match answer {
            _ if cancel.is_cancelled() => {
                inner.metrics.turn_cancelled();
                info!(session_key = key.as_str(), "turn cancelled");
                return None;
            }
            Err(AgentError::Cancelled) => {
                inner.metrics.turn_cancelled();
                return None;
            }
            Ok(text) => {
                inner.metrics.turn_completed();
                text
            }
            Err(error) => {
                inner.metrics.turn_failed();
                warn!(session_key = key.as_str(), %error, "agent failed; sending an error reply");
                error.user_message().to_owned()
            }
        };
        if text.is_empty() {
            debug!(
                session_key = key.as_str(),
                "agent answered nothing; no reply sent"
            );
            return None;
        }

        let chunks = split_message(
            &text,
            descriptor.max_message_length,
            descriptor.len_unit,
            descriptor.code_blocks(),
        );
        Some(Reply {
            chunks,
            chat_id,
            reply_to: turn.event.message_id,
            route: incoming.route,
            metadata: incoming.metadata,
            scope,
            cancel,
            _place: place,
        })
    }

    /// Counts and logs one reply result; true when it succeeded.
    fn record_reply(&self, key: &SessionKey, op: &str, result: &ActionResult) -> bool {
        let metrics = &self.inner.metrics;
        let error = result.error.as_deref().unwrap_or("");
        if result.success {
            metrics.reply_ok();
            true
        } else if result.ambiguous {
            metrics.reply_ambiguous();
            warn!(
                session_key = key.as_str(),
                op, error, "reply outcome unknown; not retried (it may have been delivered)"
            );
            false
        } else {
            metrics.reply_failed();
            warn!(session_key = key.as_str(), op, error, "reply failed");
            false
        }
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
                        .egress
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

/// What [`Sessions::submit`] found when it looked at the state.
enum Step {
    Duplicate,
    Draining,
    Full,
}

/// Whether `incoming` is a user's `/stop` (handled at once, never queued).
fn is_stop(incoming: &Incoming) -> bool {
    incoming.event.text.trim() == STOP_COMMAND
}

/// How many queue places each session needs for a delivery (`/stop`s take
/// none).
/// Per session of a delivery: how many messages it queues there and their
/// [`weight`] in bytes.
fn room_needed(keyed: &[(SessionKey, Incoming)]) -> Vec<(SessionKey, usize, usize)> {
    let mut need: Vec<(SessionKey, usize, usize)> = Vec::new();
    for (key, incoming) in keyed {
        if is_stop(incoming) {
            continue;
        }
        let bytes = weight(incoming);
        match need.iter_mut().find(|(k, _, _)| k == key) {
            Some((_, n, b)) => {
                *n += 1;
                *b += bytes;
            }
            None => need.push((key.clone(), 1, bytes)),
        }
    }
    need
}

/// What a queued message holds in memory, estimated without serializing
/// it: its strings plus a fixed allowance for the rest of the struct and
/// each metadata entry.
fn weight(incoming: &Incoming) -> usize {
    let event = &incoming.event;
    let source = &event.source;
    let strings = [
        Some(&event.text),
        event.message_id.as_ref(),
        event.reply_to_message_id.as_ref(),
        Some(&source.chat_id),
        source.user_id.as_ref(),
        source.chat_name.as_ref(),
        source.user_name.as_ref(),
        source.thread_id.as_ref(),
        source.chat_topic.as_ref(),
    ];
    let text: usize = strings.iter().flatten().map(|s| s.len()).sum();
    let media: usize = event.media_urls.iter().map(String::len).sum();
    let metadata: usize = incoming
        .metadata
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(64, str::len) + 32)
        .sum();
    text + media + metadata + 256
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
