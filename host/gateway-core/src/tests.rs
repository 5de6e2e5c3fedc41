//! Session-layer and gateway-loop tests against in-memory fakes of the relay,
//! the converter and the agent. Every wait is on an observed event (with a
//! generous safety timeout so a bug fails the test instead of hanging it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermes_protocol::action::{Action, ActionResult, Metadata};
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::event::MessageEvent;
use hermes_protocol::forward::PassthroughForward;
use hermes_protocol::split::LenUnit;
use hermes_transport::InboundItem;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError, TurnInput};
use crate::egress::{Converted, Converter, Egress, Relay};
use crate::metrics::{ForwardDrop, Metrics};
use crate::session::{
    DrainOutcome, Incoming, MAX_UNCONFIRMED_REPLIES, ReplyRoute, STOP_REASON, SessionConfig,
    Sessions, Submitted,
};
use crate::{ExitReason, Gateway, GatewayConfig};

const SAFETY: Duration = Duration::from_secs(10);

/// What the fake relay saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Request(Action),
    Interrupt(String, Option<String>),
    Ack(String),
    GoingIdle,
    Closed,
}

struct FakeRelayInner {
    out: mpsc::UnboundedSender<Out>,
    descriptor: Mutex<Arc<Descriptor>>,
    /// Scripted results for requests, in order; `ok` when empty.
    results: Mutex<Vec<ActionResult>>,
    /// When set, `going_idle` waits for a permit (the connector is slow to ack).
    idle_gate: Mutex<Option<Arc<Semaphore>>>,
    /// Scheduler yields before an ack is recorded (a busy writer queue).
    slow_acks: std::sync::atomic::AtomicBool,
    /// When set, the results of replies to this chat are withheld: each
    /// waits for a permit (the connector's answers are slow to come back).
    held: Mutex<Option<(String, Arc<Semaphore>)>>,
}

#[derive(Clone)]
struct FakeRelay(Arc<FakeRelayInner>);

impl FakeRelay {
    fn new() -> (Self, mpsc::UnboundedReceiver<Out>) {
        let (out, rx) = mpsc::unbounded_channel();
        let inner = FakeRelayInner {
            out,
            descriptor: Mutex::new(Arc::new(Descriptor::placeholder("relay"))),
            results: Mutex::new(Vec::new()),
            idle_gate: Mutex::new(None),
            slow_acks: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(None),
        };
        (Self(Arc::new(inner)), rx)
    }

    fn set_descriptor(&self, d: Descriptor) {
        *self.0.descriptor.lock().expect("lock") = Arc::new(d);
    }

    fn script(&self, results: Vec<ActionResult>) {
        *self.0.results.lock().expect("lock") = results;
    }

    fn record(&self, o: Out) {
        let _ = self.0.out.send(o);
    }

    /// Withholds the results of replies to `chat` until permits are added to
    /// the returned semaphore (one per result).
    fn hold_results(&self, chat: &str) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.0.held.lock().expect("lock") = Some((chat.to_owned(), Arc::clone(&gate)));
        gate
    }
}

/// The chat a reply goes to (`send`), if any.
fn chat_of(action: &Action) -> Option<&str> {
    match action {
        Action::Send { chat_id, .. } => Some(chat_id),
        _ => None,
    }
}

impl Egress for FakeRelay {
    async fn request(&self, action: Action) -> ActionResult {
        let gate = {
            let held = self.0.held.lock().expect("lock");
            held.as_ref()
                .filter(|(chat, _)| chat_of(&action) == Some(chat.as_str()))
                .map(|(_, gate)| Arc::clone(gate))
        };
        self.record(Out::Request(action));
        if let Some(gate) = gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        let mut results = self.0.results.lock().expect("lock");
        if results.is_empty() {
            ActionResult::ok(Some("m1".into()))
        } else {
            results.remove(0)
        }
    }
    async fn interrupt(&self, session_key: &str, reason: Option<&str>) {
        self.record(Out::Interrupt(
            session_key.to_owned(),
            reason.map(str::to_owned),
        ));
    }
    async fn ack(&self, buffer_id: &str) {
        if self.0.slow_acks.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        }
        self.record(Out::Ack(buffer_id.to_owned()));
    }
    fn descriptor(&self, _platform: &str) -> Arc<Descriptor> {
        Arc::clone(&self.0.descriptor.lock().expect("lock"))
    }
}

impl Relay for FakeRelay {
    async fn going_idle(&self, _timeout: Duration) {
        self.record(Out::GoingIdle);
        let gate = self.0.idle_gate.lock().expect("lock").clone();
        if let Some(gate) = gate {
            let _ = gate.acquire().await;
        }
    }
    async fn close(&self) {
        self.record(Out::Closed);
    }
    fn is_revoked(&self) -> bool {
        false
    }
}

/// An agent whose turns block until the test releases them.
#[derive(Clone)]
struct GateAgent {
    started: mpsc::UnboundedSender<(String, String)>,
    cancelled: mpsc::UnboundedSender<String>,
    release: Arc<Semaphore>,
    running: Arc<Mutex<HashMap<String, usize>>>,
    max_per_session: Arc<Mutex<usize>>,
}

struct GateProbe {
    started: mpsc::UnboundedReceiver<(String, String)>,
    cancelled: mpsc::UnboundedReceiver<String>,
    release: Arc<Semaphore>,
    max_per_session: Arc<Mutex<usize>>,
}

fn gate_agent() -> (GateAgent, GateProbe) {
    let (s_tx, s_rx) = mpsc::unbounded_channel();
    let (c_tx, c_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let max = Arc::new(Mutex::new(0));
    let agent = GateAgent {
        started: s_tx,
        cancelled: c_tx,
        release: Arc::clone(&release),
        running: Arc::default(),
        max_per_session: Arc::clone(&max),
    };
    (
        agent,
        GateProbe {
            started: s_rx,
            cancelled: c_rx,
            release,
            max_per_session: max,
        },
    )
}

impl Agent for GateAgent {
    async fn respond(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
    ) -> Result<String, AgentError> {
        let key = turn.session_key.as_str().to_owned();
        {
            let mut running = self.running.lock().expect("lock");
            let n = running.entry(key.clone()).or_default();
            *n += 1;
            let mut max = self.max_per_session.lock().expect("lock");
            *max = (*max).max(*n);
        }
        let _ = self.started.send((key.clone(), turn.event.text.clone()));
        // Reports a turn that ends unfinished, whether by seeing the token or
        // by being dropped by the session layer (as a real backend's work is).
        let mut guard = Unfinished {
            text: Some(turn.event.text.clone()),
            cancelled: self.cancelled.clone(),
            running: Arc::clone(&self.running),
            key,
        };
        tokio::select! {
            () = cancel.cancelled() => Err(AgentError::Cancelled),
            permit = self.release.acquire() => {
                if let Ok(p) = permit { p.forget(); }
                guard.text = None;
                Ok(format!("re: {}", turn.event.text))
            }
        }
    }
}

struct Unfinished {
    text: Option<String>,
    cancelled: mpsc::UnboundedSender<String>,
    running: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(n) = self.running.lock().expect("lock").get_mut(&self.key) {
            *n -= 1;
        }
        if let Some(text) = self.text.take() {
            let _ = self.cancelled.send(text);
        }
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(SAFETY, rx.recv())
        .await
        .expect("timed out waiting")
        .expect("channel open")
}

/// The next observed request, skipping typing indicators.
async fn next_reply(rx: &mut mpsc::UnboundedReceiver<Out>) -> Action {
    loop {
        match next(rx).await {
            Out::Request(Action::Typing { .. }) => {}
            Out::Request(a) => return a,
            _ => {}
        }
    }
}

fn event(chat: &str, user: &str, text: &str) -> MessageEvent {
    let mut e = MessageEvent {
        text: text.to_owned(),
        ..MessageEvent::default()
    };
    e.source.platform = "discord".to_owned();
    e.source.chat_type = "dm".to_owned();
    e.source.chat_id = chat.to_owned();
    e.source.user_id = Some(user.to_owned());
    e.message_id = Some(format!("msg-{text}"));
    e
}

fn sessions_with(
    agent: GateAgent,
    config: SessionConfig,
) -> (
    Sessions<FakeRelay, GateAgent>,
    FakeRelay,
    mpsc::UnboundedReceiver<Out>,
) {
    let (relay, rx) = FakeRelay::new();
    let sessions = Sessions::new(relay.clone(), agent, config, Arc::new(Metrics::new()));
    (sessions, relay, rx)
}

fn no_typing(relay: &FakeRelay) {
    let mut d = Descriptor::placeholder("discord");
    d.supported_ops = vec!["send".into(), "follow_up".into()];
    relay.set_descriptor(d);
}

#[tokio::test]
async fn one_turn_per_session_in_fifo_order() {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    for text in ["a", "b", "c"] {
        assert_eq!(
            sessions
                .submit(vec![Incoming::inbound(event("c1", "u1", text))], None)
                .await,
            Submitted::Accepted
        );
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(next(&mut probe.started).await.1);
        probe.release.add_permits(1);
        let reply = next_reply(&mut out).await;
        assert!(matches!(reply, Action::Send { .. }), "{reply:?}");
    }
    assert_eq!(order, ["a", "b", "c"], "turns run in arrival order");
    assert_eq!(
        *probe.max_per_session.lock().expect("lock"),
        1,
        "never two turns of one session at once"
    );
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    assert_eq!(sessions.active_sessions(), 0, "idle sessions are forgotten");
}

/// The session gauges follow the queue: one session, one running turn and
/// two messages waiting; nothing once it is all answered. Each answered
/// message moves the turn and reply histograms once.
#[tokio::test]
async fn session_gauges_follow_the_queue() {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let gauges = |sessions: &Sessions<_, _>| {
        let snapshot = sessions.metrics().snapshot();
        (snapshot.sessions_active, snapshot.queued_messages)
    };
    for text in ["a", "b", "c"] {
        sessions
            .submit(vec![Incoming::inbound(event("c1", "u1", text))], None)
            .await;
    }
    next(&mut probe.started).await;
    assert_eq!(gauges(&sessions), (1, 2), "a running, b and c waiting");
    for _ in 0..3 {
        probe.release.add_permits(1);
        next_reply(&mut out).await;
    }
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    assert_eq!(gauges(&sessions), (0, 0));
    let latency = &sessions.metrics().latency;
    assert_eq!(
        latency.reply.count(&["discord"]),
        3,
        "each reply's wait is observed once, under its platform"
    );
    assert_eq!(
        latency.turn.count(&["custom", "completed"]),
        3,
        "turns are observed under the agent's kind"
    );
}

#[tokio::test]
async fn different_sessions_run_in_parallel() {
    let (agent, mut probe) = gate_agent();
    let (sessions, _relay, _out) = sessions_with(agent, SessionConfig::default());
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "x"))], None)
        .await;
    sessions
        .submit(vec![Incoming::inbound(event("c2", "u2", "y"))], None)
        .await;
    // Both start while nothing was released: they run at the same time.
    let mut started = [
        next(&mut probe.started).await.1,
        next(&mut probe.started).await.1,
    ];
    started.sort();
    assert_eq!(started, ["x", "y"]);
}

#[tokio::test]
async fn concurrent_turns_are_bounded_overall() {
    let (agent, mut probe) = gate_agent();
    let config = SessionConfig {
        max_concurrent_turns: 1,
        ..SessionConfig::default()
    };
    let (sessions, _relay, _out) = sessions_with(agent, config);
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "x"))], None)
        .await;
    sessions
        .submit(vec![Incoming::inbound(event("c2", "u2", "y"))], None)
        .await;
    let first = next(&mut probe.started).await.1;
    assert!(
        probe.started.try_recv().is_err(),
        "second session waits for a slot"
    );
    probe.release.add_permits(1);
    let second = next(&mut probe.started).await.1;
    assert_ne!(first, second);
}

#[tokio::test]
async fn ack_follows_queueing_and_replays_are_acked_not_rerun() {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    sessions
        .submit(
            vec![Incoming::inbound(event("c1", "u1", "first"))],
            Some("b0"),
        )
        .await;
    assert_eq!(next(&mut out).await, Out::Ack("b0".into()));
    next(&mut probe.started).await;
    // The session is busy: the next delivery is queued, and acked only then.
    let submitted = sessions
        .submit(
            vec![Incoming::inbound(event("c1", "u1", "second"))],
            Some("b1"),
        )
        .await;
    assert_eq!(submitted, Submitted::Accepted);
    assert_eq!(next(&mut out).await, Out::Ack("b1".into()));
    assert_eq!(
        sessions.queued(),
        1,
        "acked delivery is waiting in its session queue"
    );
    // A replay after a reconnect: acked again, not queued again.
    let replay = sessions
        .submit(
            vec![Incoming::inbound(event("c1", "u1", "second"))],
            Some("b1"),
        )
        .await;
    assert_eq!(replay, Submitted::Duplicate);
    assert_eq!(next(&mut out).await, Out::Ack("b1".into()));
    assert_eq!(sessions.queued(), 1);
    probe.release.add_permits(2);
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let m = sessions.metrics().snapshot();
    assert_eq!((m.turns_started, m.dropped_duplicate), (2, 1));
}

/// Waits (bounded) until `cond` holds; for states with no event to await.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let polled = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(SAFETY, polled)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn acks(out: &mut mpsc::UnboundedReceiver<Out>) -> Vec<String> {
    let mut acks = Vec::new();
    while let Ok(o) = out.try_recv() {
        if let Out::Ack(id) = o {
            acks.push(id);
        }
    }
    acks
}

/// A full queue holds the delivery back (and with it the link) instead of
/// dropping it: it is neither acked nor remembered until it is queued, then
/// it runs.
async fn full_queue_waits(config: SessionConfig, chats: [&str; 3]) {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, config);
    no_typing(&relay);
    sessions
        .submit(vec![Incoming::inbound(event(chats[0], "u1", "run"))], None)
        .await;
    next(&mut probe.started).await;
    sessions
        .submit(vec![Incoming::inbound(event(chats[1], "u1", "wait"))], None)
        .await;
    let waiting = {
        let sessions = sessions.clone();
        let chat = chats[2].to_owned();
        tokio::spawn(async move {
            sessions
                .submit(
                    vec![Incoming::inbound(event(&chat, "u1", "over"))],
                    Some("b9"),
                )
                .await
        })
    };
    until("the delivery to wait for room", || {
        sessions.metrics().snapshot().queue_full_waits == 1
    })
    .await;
    assert!(
        !waiting.is_finished(),
        "the delivery waits while the queue is full"
    );
    assert_eq!(
        acks(&mut out),
        Vec::<String>::new(),
        "nothing acked before it is queued"
    );
    assert!(
        !sessions.seen_recently("b9"),
        "not remembered before it is queued"
    );

    // The running turn ends, the queued one starts: room for the waiting one.
    probe.release.add_permits(1);
    let submitted = tokio::time::timeout(SAFETY, waiting)
        .await
        .expect("the delivery is taken once there is room")
        .expect("no panic");
    assert_eq!(submitted, Submitted::Accepted);
    assert!(sessions.seen_recently("b9"));
    probe.release.add_permits(2);
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let mut texts = vec!["run".to_owned()];
    while let Ok((_, t)) = probe.started.try_recv() {
        texts.push(t);
    }
    assert_eq!(texts, ["run", "wait", "over"], "nothing was dropped");
    assert_eq!(acks(&mut out), ["b9"]);
}

/// The byte budget holds a delivery back like a full queue: 300 bytes take
/// one small queued message but not a second.
#[tokio::test]
async fn a_full_byte_budget_holds_the_delivery_unacked_until_there_is_room() {
    full_queue_waits(
        SessionConfig {
            max_queued_bytes: 300,
            max_concurrent_turns: 1,
            ..SessionConfig::default()
        },
        ["cb1", "cb2", "cb3"],
    )
    .await;
}

#[tokio::test]
async fn a_full_session_queue_holds_the_delivery_unacked_until_there_is_room() {
    let config = SessionConfig {
        queue_per_session: 1,
        ..SessionConfig::default()
    };
    full_queue_waits(config, ["c1", "c1", "c1"]).await;
}

#[tokio::test]
async fn a_full_gateway_queue_holds_the_delivery_unacked_until_there_is_room() {
    let config = SessionConfig {
        max_queued_total: 1,
        max_concurrent_turns: 1,
        ..SessionConfig::default()
    };
    full_queue_waits(config, ["c1", "c2", "c3"]).await;
}

#[tokio::test]
async fn a_delivery_waiting_for_room_gives_up_unacked_when_accepting_stops() {
    let (agent, mut probe) = gate_agent();
    let config = SessionConfig {
        queue_per_session: 1,
        ..SessionConfig::default()
    };
    let (sessions, relay, mut out) = sessions_with(agent, config);
    no_typing(&relay);
    for text in ["run", "wait"] {
        sessions
            .submit(vec![Incoming::inbound(event("c1", "u1", text))], None)
            .await;
    }
    next(&mut probe.started).await;
    let waiting = {
        let sessions = sessions.clone();
        tokio::spawn(async move {
            sessions
                .submit(
                    vec![Incoming::inbound(event("c1", "u1", "over"))],
                    Some("b9"),
                )
                .await
        })
    };
    until("the delivery to wait for room", || {
        sessions.metrics().snapshot().queue_full_waits == 1
    })
    .await;
    sessions.stop_accepting();
    let submitted = tokio::time::timeout(SAFETY, waiting)
        .await
        .expect("stopping ends the wait")
        .expect("no panic");
    assert_eq!(submitted, Submitted::Draining);
    // The acked queued turn still runs during the drain.
    probe.release.add_permits(2);
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    assert_eq!(next(&mut probe.started).await.1, "wait");
    assert_eq!(acks(&mut out), Vec::<String>::new());
}

#[tokio::test]
async fn an_interrupt_flood_clears_typing_once() {
    let (agent, mut probe) = gate_agent();
    // The placeholder descriptor lists `typing`.
    let (sessions, _relay, mut out) = sessions_with(agent, SessionConfig::default());
    let first = Incoming::inbound(event("c1", "u1", "long"));
    let key = sessions.key_of(&first);
    sessions.submit(vec![first], None).await;
    next(&mut probe.started).await;
    for _ in 0..50 {
        sessions.interrupt(key.as_str(), "c1");
    }
    assert_eq!(next(&mut probe.cancelled).await, "long");
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let mut clears = 0;
    while let Ok(o) = out.try_recv() {
        if let Out::Request(Action::Typing {
            content: Some(c), ..
        }) = &o
        {
            assert!(c.is_empty(), "{o:?}");
            clears += 1;
        }
    }
    assert_eq!(clears, 1, "one typing clear for one cancelled turn");
    assert_eq!(sessions.metrics().snapshot().interrupts_in, 50);
}

/// An agent that always fails with an error carrying what a real one can:
/// a command's stderr with a key and a path.
struct FailingAgent;

const LEAKY_STDERR: &str = "OPENAI_API_KEY=sk-live-123 not accepted at /srv/tenant-b/agent.py";

impl Agent for FailingAgent {
    async fn respond(
        &self,
        _turn: &TurnInput,
        _cancel: CancellationToken,
    ) -> Result<String, AgentError> {
        Err(AgentError::Exit {
            status: "exit status: 3".into(),
            stderr: LEAKY_STDERR.into(),
        })
    }
}

#[tokio::test]
async fn an_agent_failure_tells_the_user_nothing_of_its_detail() {
    let (relay, mut out) = FakeRelay::new();
    no_typing(&relay);
    let sessions = Sessions::new(
        relay.clone(),
        FailingAgent,
        SessionConfig::default(),
        Arc::new(Metrics::new()),
    );
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "hi"))], None)
        .await;
    let Action::Send { content, .. } = next_reply(&mut out).await else {
        panic!("expected a send");
    };
    let expected = AgentError::Exit {
        status: String::new(),
        stderr: String::new(),
    }
    .user_message();
    assert_eq!(content, expected);
    for secret in ["sk-live-123", "/srv/tenant-b", "exit status"] {
        assert!(
            !content.contains(secret),
            "{secret} reached the user: {content}"
        );
    }
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    assert_eq!(sessions.metrics().snapshot().turns_failed, 1);
}

#[tokio::test]
async fn interrupt_cancels_only_its_session() {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let a = Incoming::inbound(event("ca", "u1", "a"));
    let key_a = sessions.key_of(&a);
    sessions.submit(vec![a], None).await;
    sessions
        .submit(vec![Incoming::inbound(event("cb", "u2", "b"))], None)
        .await;
    next(&mut probe.started).await;
    next(&mut probe.started).await;
    sessions.interrupt("agent:main:discord:dm:unknown", "unknown");
    assert!(
        probe.cancelled.try_recv().is_err(),
        "unknown key is a no-op"
    );
    sessions.interrupt(key_a.as_str(), "ca");
    assert_eq!(next(&mut probe.cancelled).await, "a");
    probe.release.add_permits(1);
    match next_reply(&mut out).await {
        Action::Send {
            chat_id, content, ..
        } => assert_eq!((chat_id.as_str(), content.as_str()), ("cb", "re: b")),
        other => panic!("expected b's reply, got {other:?}"),
    }
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let m = sessions.metrics().snapshot();
    assert_eq!(
        (m.turns_cancelled, m.turns_completed, m.replies_ok),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn user_stop_cancels_locally_and_egresses_interrupt() {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let first = Incoming::inbound(event("c1", "u1", "long job"));
    let key = sessions.key_of(&first);
    sessions.submit(vec![first], None).await;
    next(&mut probe.started).await;
    sessions
        .submit(
            vec![Incoming::inbound(event("c1", "u1", "/stop"))],
            Some("b1"),
        )
        .await;
    assert_eq!(next(&mut probe.cancelled).await, "long job");
    assert_eq!(
        next(&mut out).await,
        Out::Interrupt(key.into_string(), Some(STOP_REASON.into()))
    );
    assert_eq!(next(&mut out).await, Out::Ack("b1".into()));
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let m = sessions.metrics().snapshot();
    assert_eq!(
        (m.turns_started, m.stops_local, m.replies_ok),
        (1, 1, 0),
        "/stop is not a turn; no reply"
    );
}

fn metadata_of(action: &Action) -> Value {
    match action {
        Action::Send { metadata, .. }
        | Action::FollowUp { metadata, .. }
        | Action::Typing { metadata, .. } => Value::Object(metadata.clone()),
        other => panic!("no metadata on {other:?}"),
    }
}

#[tokio::test]
async fn scope_is_reattached_without_overwriting_or_inventing() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(10);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    // Seen with a scope: replies carry it under both keys, plus the author.
    let mut scoped = event("c1", "u1", "hi");
    scoped.source.scope_id = Some("g1".into());
    sessions.submit(vec![Incoming::inbound(scoped)], None).await;
    assert_eq!(
        metadata_of(&next_reply(&mut out).await),
        json!({"scope_id": "g1", "guild_id": "g1", "user_id": "u1"})
    );
    // The caller's own keys win.
    let mut mine = Incoming::inbound(event("c1", "u2", "again"));
    mine.metadata = Metadata::from_iter([("guild_id".to_owned(), json!("caller"))]);
    sessions.submit(vec![mine], None).await;
    assert_eq!(
        metadata_of(&next_reply(&mut out).await),
        json!({"guild_id": "caller", "user_id": "u2"})
    );
    // A chat never seen with a scope gets none invented.
    let mut bare = event("c2", "u3", "x");
    bare.source.user_id = None;
    sessions.submit(vec![Incoming::inbound(bare)], None).await;
    assert_eq!(metadata_of(&next_reply(&mut out).await), json!({}));
}

/// Relay-contract §5.6: one phone number texts tenant A's number, then
/// tenant B's. Both land in one chat id (and, for a DM, one session key);
/// the reply to A must go out under A's scope even though B's event was
/// accepted (and remembered for the chat) before A's reply was sent.
#[tokio::test]
async fn a_reply_carries_its_own_events_scope_not_the_chats_latest() {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let texted = |scope: &str, text: &str| {
        let mut e = event("+15550001", "+15550001", text);
        e.source.platform = "sms".into();
        e.source.scope_id = Some(scope.into());
        Incoming::inbound(e)
    };
    sessions
        .submit(vec![texted("tenant-a", "to a")], None)
        .await;
    next(&mut probe.started).await;
    // B's event is accepted while A's turn is still running.
    sessions
        .submit(vec![texted("tenant-b", "to b")], None)
        .await;
    probe.release.add_permits(2);
    let first = next_reply(&mut out).await;
    let second = next_reply(&mut out).await;
    assert_eq!(
        metadata_of(&first),
        json!({"scope_id": "tenant-a", "guild_id": "tenant-a", "user_id": "+15550001"}),
        "the reply to A carries A's scope"
    );
    assert_eq!(
        metadata_of(&second),
        json!({"scope_id": "tenant-b", "guild_id": "tenant-b", "user_id": "+15550001"})
    );
}

#[tokio::test]
async fn follow_up_has_exactly_the_contract_keys() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(1);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let mut e = event("chan", "u1", "/ask");
    e.source.scope_id = Some("g7".into());
    let incoming = Incoming {
        event: e,
        route: ReplyRoute::FollowUp {
            kind: "discord.interaction_token".into(),
        },
        metadata: Metadata::new(),
        profile: None,
        origin: None,
        received: std::time::Instant::now(),
    };
    let key = sessions.key_of(&incoming);
    sessions.submit(vec![incoming], None).await;
    let action = next_reply(&mut out).await;
    let wire = serde_json::to_value(&action).expect("serializes");
    assert_eq!(
        wire,
        json!({
            "op": "follow_up",
            "session_key": key.as_str(),
            "kind": "discord.interaction_token",
            "content": "re: /ask",
            "metadata": {"scope_id": "g7", "guild_id": "g7", "user_id": "u1"},
        })
    );
}

#[tokio::test]
async fn long_reply_is_split_in_utf16_units_with_reply_to() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(1);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    let mut d = Descriptor::placeholder("discord");
    d.max_message_length = 10;
    d.len_unit = LenUnit::Utf16;
    d.supported_ops = vec!["send".into()];
    relay.set_descriptor(d);
    // Astral characters count 2 in UTF-16 but 1 in chars.
    let text = "😀😀😀😀😀😀😀😀 tail";
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", text))], None)
        .await;
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let mut joined = String::new();
    let mut pieces = 0;
    while let Ok(o) = out.try_recv() {
        let Out::Request(Action::Send {
            content, reply_to, ..
        }) = o
        else {
            panic!("unexpected {o:?}")
        };
        assert!(
            content.encode_utf16().count() <= 10,
            "piece {content:?} over 10 UTF-16 units"
        );
        assert_eq!(reply_to.as_deref(), Some(format!("msg-{text}").as_str()));
        joined.push_str(&content);
        pieces += 1;
    }
    assert!(pieces >= 3, "split into several messages, got {pieces}");
    assert_eq!(joined, format!("re: {text}"));
}

#[tokio::test]
async fn typing_only_when_the_descriptor_lists_it() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(2);
    let config = SessionConfig {
        typing_delay: Duration::ZERO,
        ..SessionConfig::default()
    };
    let (sessions, relay, mut out) = sessions_with(agent, config);
    // The placeholder has the legacy op set, which includes typing.
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "one"))], None)
        .await;
    assert!(
        matches!(next(&mut out).await, Out::Request(Action::Typing { chat_id, .. }) if chat_id == "c1")
    );
    assert!(matches!(
        next(&mut out).await,
        Out::Request(Action::Send { .. })
    ));
    no_typing(&relay);
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "two"))], None)
        .await;
    assert!(
        matches!(next(&mut out).await, Out::Request(Action::Send { .. })),
        "no typing without the op"
    );
}

/// A reply that comes before `typing_delay` shows no typing indicator (it
/// would only flicker); an agent that takes longer gets one, and then its
/// reply.
#[tokio::test]
async fn typing_shows_only_for_an_agent_that_takes_a_while() {
    let (agent, probe) = gate_agent();
    let config = SessionConfig {
        typing_delay: Duration::from_millis(50),
        ..SessionConfig::default()
    };
    let (sessions, _relay, mut out) = sessions_with(agent, config);
    probe.release.add_permits(1);
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "quick"))], None)
        .await;
    assert!(
        matches!(next(&mut out).await, Out::Request(Action::Send { .. })),
        "a quick reply comes without a typing indicator"
    );
    // The agent is held: the indicator comes once the delay has passed,
    // then the reply once the agent answers.
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "slow"))], None)
        .await;
    assert!(
        matches!(next(&mut out).await, Out::Request(Action::Typing { chat_id, .. }) if chat_id == "c1")
    );
    probe.release.add_permits(1);
    assert!(matches!(
        next(&mut out).await,
        Out::Request(Action::Send { .. })
    ));
}

#[tokio::test]
async fn ambiguous_failure_is_counted_and_not_retried() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(1);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    let mut d = Descriptor::placeholder("discord");
    d.max_message_length = 4;
    d.supported_ops = vec!["send".into()];
    relay.set_descriptor(d);
    relay.script(vec![ActionResult::timed_out()]);
    sessions
        .submit(
            vec![Incoming::inbound(event("c1", "u1", "a long answer"))],
            None,
        )
        .await;
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let mut sends = 0;
    while let Ok(o) = out.try_recv() {
        sends += usize::from(matches!(o, Out::Request(Action::Send { .. })));
    }
    assert_eq!(sends, 1, "nothing sent after an ambiguous failure");
    let m = sessions.metrics().snapshot();
    assert_eq!(
        (m.replies_ambiguous, m.replies_failed, m.replies_ok),
        (1, 0, 0)
    );
}

/// The event was acked when queued, so a reply that finds the link down
/// must not be dropped: `not_connected` wrote nothing, so it is sent again
/// once the link is back. An ambiguous failure is never retried.
#[tokio::test]
async fn a_reply_that_found_no_connection_is_sent_again() {
    let (agent, probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    relay.script(vec![
        ActionResult::not_connected(),
        ActionResult::not_connected(),
        ActionResult::ok(Some("m9".into())),
        ActionResult::connection_lost(),
    ]);
    probe.release.add_permits(2);
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "hi"))], None)
        .await;
    for attempt in 0..3 {
        let Action::Send { content, .. } = next_reply(&mut out).await else {
            panic!("expected a send");
        };
        assert_eq!(content, "re: hi", "attempt {attempt}");
    }
    sessions
        .submit(vec![Incoming::inbound(event("c2", "u2", "lost"))], None)
        .await;
    let Action::Send { content, .. } = next_reply(&mut out).await else {
        panic!("expected a send");
    };
    assert_eq!(content, "re: lost");
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    assert!(
        out.try_recv().is_err(),
        "the ambiguous one is not sent again"
    );
    let m = sessions.metrics().snapshot();
    assert_eq!(
        (m.replies_ok, m.replies_failed, m.replies_ambiguous),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn failed_reply_is_counted() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(1);
    let (sessions, relay, _out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    relay.script(vec![ActionResult::failure("chat not found")]);
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "x"))], None)
        .await;
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    assert_eq!(sessions.metrics().snapshot().replies_failed, 1);
}

#[tokio::test]
async fn drain_cancels_turns_that_outlive_the_grace_and_refuses_new_ones() {
    let (agent, mut probe) = gate_agent();
    let (sessions, _relay, mut out) = sessions_with(agent, SessionConfig::default());
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "stuck"))], None)
        .await;
    next(&mut probe.started).await;
    assert_eq!(
        sessions.drain(Duration::from_millis(50)).await,
        DrainOutcome::Cancelled
    );
    assert_eq!(next(&mut probe.cancelled).await, "stuck");
    let late = sessions
        .submit(
            vec![Incoming::inbound(event("c1", "u1", "late"))],
            Some("b5"),
        )
        .await;
    assert_eq!(late, Submitted::Draining);
    while let Ok(o) = out.try_recv() {
        assert!(
            !matches!(o, Out::Ack(_)),
            "nothing is acked while draining: {o:?}"
        );
    }
}

/// A converter that answers from a script keyed by the forward's path.
struct FakeConverter;

impl Converter for FakeConverter {
    async fn convert(&self, forward: &PassthroughForward) -> Converted {
        match forward.path.as_str() {
            "/interaction" => {
                let mut e = event("chan", "u1", "slash");
                e.source.scope_id = Some("g1".into());
                Converted::Events(vec![Incoming {
                    event: e,
                    route: ReplyRoute::FollowUp {
                        kind: "discord.interaction_token".into(),
                    },
                    metadata: Metadata::new(),
                    profile: forward.profile.clone(),
                    origin: None,
                    received: std::time::Instant::now(),
                }])
            }
            "/ping" => Converted::Dropped {
                reason: ForwardDrop::Ignored,
                detail: "ping".into(),
            },
            "/busy" => Converted::Dropped {
                reason: ForwardDrop::Deferred,
                detail: "pool exhausted".into(),
            },
            _ => Converted::Dropped {
                reason: ForwardDrop::Rejected,
                detail: "bad".into(),
            },
        }
    }
}

fn forward(path: &str) -> PassthroughForward {
    let mut f =
        PassthroughForward::from_value(json!({"platform": "discord", "path": path, "bodyB64": ""}))
            .expect("valid forward");
    f.path = path.to_owned();
    f
}

#[tokio::test]
async fn gateway_routes_forwards_acks_drops_and_drains() {
    let (relay, mut out) = FakeRelay::new();
    no_typing(&relay);
    let (agent, probe) = gate_agent();
    probe.release.add_permits(10);
    let (tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::new(GatewayConfig::default(), Arc::clone(&metrics));
    let run = tokio::spawn(gateway.run(relay.clone(), rx, FakeConverter, agent, shutdown.clone()));

    tx.send(InboundItem::Forward {
        forward: forward("/ping"),
        buffer_id: Some("f0".into()),
    })
    .await
    .expect("send");
    assert_eq!(
        next(&mut out).await,
        Out::Ack("f0".into()),
        "an ignored forward is acked as a deliberate drop"
    );
    tx.send(InboundItem::Forward {
        forward: forward("/interaction"),
        buffer_id: Some("f1".into()),
    })
    .await
    .expect("send");
    assert_eq!(next(&mut out).await, Out::Ack("f1".into()));
    match next_reply(&mut out).await {
        Action::FollowUp {
            kind,
            content,
            session_key,
            ..
        } => {
            assert_eq!(
                (kind.as_str(), content.as_str()),
                ("discord.interaction_token", "re: slash")
            );
            assert!(
                session_key.starts_with("agent:main:discord:"),
                "{session_key}"
            );
        }
        other => panic!("expected a follow_up, got {other:?}"),
    }
    // Replay of f1: acked again, not converted or run again.
    tx.send(InboundItem::Forward {
        forward: forward("/interaction"),
        buffer_id: Some("f1".into()),
    })
    .await
    .expect("send");
    assert_eq!(next(&mut out).await, Out::Ack("f1".into()));

    shutdown.cancel();
    let exit = tokio::time::timeout(SAFETY, run)
        .await
        .expect("run ends")
        .expect("no panic");
    assert_eq!(exit, ExitReason::Shutdown(DrainOutcome::Finished));
    assert_eq!(next(&mut out).await, Out::GoingIdle);
    assert_eq!(next(&mut out).await, Out::Closed);
    let m = metrics.snapshot();
    assert_eq!(
        (
            m.forwards_in,
            m.forwards_converted,
            m.forwards_ignored,
            m.turns_started
        ),
        (3, 1, 1, 1)
    );
}

/// Answers `Deferred` (the host cannot convert now: quarantine, full line)
/// for the first `deferrals` calls, then converts like [`FakeConverter`].
struct FlakyConverter {
    deferrals: std::sync::atomic::AtomicUsize,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Converter for FlakyConverter {
    async fn convert(&self, forward: &PassthroughForward) -> Converted {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let left = self.deferrals.load(Ordering::SeqCst);
        if left > 0 {
            self.deferrals.store(left - 1, Ordering::SeqCst);
            return Converted::Dropped {
                reason: ForwardDrop::Deferred,
                detail: "quarantined".into(),
            };
        }
        FakeConverter.convert(forward).await
    }
}

/// A live forward has no `bufferId`, so nobody would redeliver it: while
/// the host cannot convert it now, the gateway retries (bounded) instead of
/// losing it. A buffered one is left unacked for the connector instead.
#[tokio::test]
async fn a_live_forward_is_retried_while_the_host_cannot_convert_it_now() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (relay, mut out) = FakeRelay::new();
    let (agent, mut probe) = gate_agent();
    probe.release.add_permits(1);
    let (tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let converter = FlakyConverter {
        deferrals: AtomicUsize::new(2),
        calls: Arc::clone(&calls),
    };
    let gateway = Gateway::new(GatewayConfig::default(), Arc::new(Metrics::new()));
    let run = tokio::spawn(gateway.run(relay, rx, converter, agent, shutdown.clone()));
    tx.send(InboundItem::Forward {
        forward: forward("/interaction"),
        buffer_id: None,
    })
    .await
    .expect("send");
    assert_eq!(
        next(&mut probe.started).await.1,
        "slash",
        "converted on the third try"
    );
    assert!(matches!(
        next_reply(&mut out).await,
        Action::FollowUp { .. }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // A buffered forward is tried once and left for redelivery.
    let calls_before = calls.load(Ordering::SeqCst);
    shutdown.cancel();
    tokio::time::timeout(SAFETY, run)
        .await
        .expect("run ends")
        .expect("no panic");
    let (relay, mut out) = FakeRelay::new();
    let (agent, _probe) = gate_agent();
    let (tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let buffered_calls = Arc::new(AtomicUsize::new(0));
    let converter = FlakyConverter {
        deferrals: AtomicUsize::new(1),
        calls: Arc::clone(&buffered_calls),
    };
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::new(GatewayConfig::default(), Arc::clone(&metrics));
    let run = tokio::spawn(gateway.run(relay, rx, converter, agent, shutdown.clone()));
    for (path, id) in [("/interaction", "b1"), ("/ping", "b2")] {
        tx.send(InboundItem::Forward {
            forward: forward(path),
            buffer_id: Some(id.into()),
        })
        .await
        .expect("send");
    }
    assert_eq!(
        next(&mut out).await,
        Out::Ack("b2".into()),
        "b1 is not acked"
    );
    assert_eq!(
        buffered_calls.load(Ordering::SeqCst),
        2,
        "b1 was tried once"
    );
    assert_eq!(metrics.snapshot().forwards_deferred, 1);
    shutdown.cancel();
    tokio::time::timeout(SAFETY, run)
        .await
        .expect("run ends")
        .expect("no panic");
    assert!(calls_before >= 3);
}

#[tokio::test]
async fn a_forward_the_host_cannot_convert_now_is_left_unacked() {
    let (relay, mut out) = FakeRelay::new();
    let (agent, _probe) = gate_agent();
    let (tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::new(GatewayConfig::default(), Arc::clone(&metrics));
    let run = tokio::spawn(gateway.run(relay, rx, FakeConverter, agent, shutdown.clone()));
    for (path, id) in [("/busy", "f2"), ("/ping", "f3")] {
        tx.send(InboundItem::Forward {
            forward: forward(path),
            buffer_id: Some(id.into()),
        })
        .await
        .expect("send");
    }
    // Conversions hand off in arrival order, so f2 was handled before f3.
    assert_eq!(
        next(&mut out).await,
        Out::Ack("f3".into()),
        "f2 is not acked"
    );
    // Not remembered either: a redelivery is converted again, not acked as a replay.
    for (path, id) in [("/busy", "f2"), ("/ping", "f4")] {
        tx.send(InboundItem::Forward {
            forward: forward(path),
            buffer_id: Some(id.into()),
        })
        .await
        .expect("send");
    }
    assert_eq!(
        next(&mut out).await,
        Out::Ack("f4".into()),
        "f2 is still not acked"
    );
    shutdown.cancel();
    tokio::time::timeout(SAFETY, run)
        .await
        .expect("run ends")
        .expect("no panic");
    assert_eq!(acks(&mut out), Vec::<String>::new());
    let m = metrics.snapshot();
    assert_eq!((m.forwards_deferred, m.forwards_ignored), (2, 2));
}

#[tokio::test]
async fn shutdown_stops_accepting_before_going_idle_and_runs_acked_queued_turns() {
    let (relay, mut out) = FakeRelay::new();
    no_typing(&relay);
    let idle_gate = Arc::new(Semaphore::new(0));
    *relay.0.idle_gate.lock().expect("lock") = Some(Arc::clone(&idle_gate));
    let (agent, mut probe) = gate_agent();
    let (tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::new(GatewayConfig::default(), Arc::clone(&metrics));
    let run = tokio::spawn(gateway.run(relay.clone(), rx, FakeConverter, agent, shutdown.clone()));
    let send_event = |text: &str, id: &str| InboundItem::Event {
        event: event("c1", "u1", text),
        buffer_id: Some(id.to_owned()),
    };

    tx.send(send_event("running", "b1")).await.expect("send");
    assert_eq!(next(&mut out).await, Out::Ack("b1".into()));
    next(&mut probe.started).await;
    tx.send(send_event("queued", "b2")).await.expect("send");
    assert_eq!(next(&mut out).await, Out::Ack("b2".into()));

    shutdown.cancel();
    assert_eq!(next(&mut out).await, Out::GoingIdle);
    // Races the flip: must not be queued or acked now that going_idle is out.
    tx.send(send_event("late", "b3")).await.expect("send");
    until("the late delivery to be refused", || {
        metrics.snapshot().dropped_draining == 1
    })
    .await;
    idle_gate.add_permits(1);
    // The acked turns (running and queued) still run within the grace.
    probe.release.add_permits(2);
    let exit = tokio::time::timeout(SAFETY, run)
        .await
        .expect("run ends")
        .expect("no panic");
    assert_eq!(exit, ExitReason::Shutdown(DrainOutcome::Finished));
    assert_eq!(next(&mut probe.started).await.1, "queued");
    assert!(
        probe.started.try_recv().is_err(),
        "the late delivery never ran"
    );
    assert_eq!(acks(&mut out), Vec::<String>::new(), "b3 is never acked");
}

#[tokio::test]
async fn the_ack_goes_out_before_any_reply_to_its_delivery() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(1);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    relay
        .0
        .slow_acks
        .store(true, std::sync::atomic::Ordering::Relaxed);
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "hi"))], Some("b1"))
        .await;
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    let first = next(&mut out).await;
    assert_eq!(
        first,
        Out::Ack("b1".into()),
        "not even typing before the ack"
    );
    assert!(matches!(next_reply(&mut out).await, Action::Send { .. }));
}

/// The replies of a session whose results are withheld do not hold up its
/// next turns, nor any other session (the link is never stalled on them).
#[tokio::test]
async fn withheld_reply_results_stall_neither_the_session_nor_others() {
    let (agent, mut probe) = gate_agent();
    probe.release.add_permits(100);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let results = relay.hold_results("ca");
    let texts: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
    for text in &texts {
        let submitted = sessions
            .submit(vec![Incoming::inbound(event("ca", "u1", text))], None)
            .await;
        assert_eq!(submitted, Submitted::Accepted);
    }
    let mut started = Vec::new();
    for _ in &texts {
        started.push(next(&mut probe.started).await.1);
    }
    assert_eq!(started, texts, "every turn of the session ran, in order");
    sessions
        .submit(vec![Incoming::inbound(event("cb", "u2", "b"))], None)
        .await;
    assert_eq!(next(&mut probe.started).await.1, "b");
    // A's first reply is on the wire, unconfirmed; B's reply still goes out.
    let mut a_replies = Vec::new();
    loop {
        let reply = next_reply(&mut out).await;
        match chat_of(&reply) {
            Some("cb") => break,
            _ => a_replies.push(reply),
        }
    }
    assert_eq!(
        a_replies.len(),
        1,
        "one request of A at a time: {a_replies:?}"
    );
    results.add_permits(texts.len());
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    while let Ok(Out::Request(reply)) = out.try_recv() {
        a_replies.push(reply);
    }
    let contents: Vec<String> = a_replies
        .iter()
        .map(|a| match a {
            Action::Send { content, .. } => content.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let expected: Vec<String> = texts.iter().map(|t| format!("re: {t}")).collect();
    assert_eq!(contents, expected, "A's replies in turn order");
    assert_eq!(sessions.metrics().snapshot().replies_ok, 6);
}

/// A descriptor that splits replies into pieces of at most four characters.
fn short_pieces(relay: &FakeRelay) {
    let mut d = Descriptor::placeholder("discord");
    d.max_message_length = 4;
    d.supported_ops = vec!["send".into()];
    relay.set_descriptor(d);
}

/// The `reply_to` and content of a `send`.
fn piece(action: &Action) -> (String, String) {
    match action {
        Action::Send {
            reply_to, content, ..
        } => (reply_to.clone().unwrap_or_default(), content.clone()),
        other => panic!("expected a send, got {other:?}"),
    }
}

/// Every recorded `send`, as (`reply_to`, content).
fn pieces(out: &mut mpsc::UnboundedReceiver<Out>) -> Vec<(String, String)> {
    let mut sends = Vec::new();
    while let Ok(o) = out.try_recv() {
        if let Out::Request(a @ Action::Send { .. }) = o {
            sends.push(piece(&a));
        }
    }
    sends
}

#[tokio::test]
async fn multi_chunk_replies_go_out_in_turn_order_one_request_at_a_time() {
    let (agent, mut probe) = gate_agent();
    probe.release.add_permits(2);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    short_pieces(&relay);
    let results = relay.hold_results("c1");
    for text in ["first one", "second one"] {
        sessions
            .submit(vec![Incoming::inbound(event("c1", "u1", text))], None)
            .await;
    }
    // Both turns ran although no result has come back yet.
    next(&mut probe.started).await;
    next(&mut probe.started).await;
    until("both turns to finish", || {
        sessions.metrics().snapshot().turns_completed == 2
    })
    .await;
    let mut sent = Vec::new();
    loop {
        sent.push(piece(&next_reply(&mut out).await));
        assert!(
            out.try_recv().is_err(),
            "the next piece waits for this one's result"
        );
        results.add_permits(1);
        if sent.iter().map(|(_, c)| c.as_str()).collect::<String>() == "re: first onere: second one"
        {
            break;
        }
    }
    let owners: Vec<&str> = sent.iter().map(|(to, _)| to.as_str()).collect();
    let first = owners.iter().filter(|to| **to == "msg-first one").count();
    assert!(first >= 3, "the first reply was split: {sent:?}");
    assert!(
        owners[..first].iter().all(|to| *to == "msg-first one"),
        "every piece of turn 1 before any of turn 2: {sent:?}"
    );
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
    assert_eq!(pieces(&mut out), Vec::new(), "nothing else was sent");
    assert_eq!(sessions.metrics().snapshot().replies_ok, sent.len() as u64);
}

#[tokio::test]
async fn a_failed_or_ambiguous_piece_ends_its_reply_but_not_the_next() {
    for (bad, counter) in [
        (ActionResult::failure("chat not found"), "failed"),
        (ActionResult::timed_out(), "ambiguous"),
    ] {
        let (agent, probe) = gate_agent();
        probe.release.add_permits(2);
        let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
        short_pieces(&relay);
        relay.script(vec![ActionResult::ok(Some("m1".into())), bad]);
        for text in ["first one", "second"] {
            sessions
                .submit(vec![Incoming::inbound(event("c1", "u1", text))], None)
                .await;
        }
        assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
        let sent = pieces(&mut out);
        let first: Vec<&str> = sent
            .iter()
            .filter(|(to, _)| to == "msg-first one")
            .map(|(_, c)| c.as_str())
            .collect();
        assert_eq!(first.len(), 2, "{counter}: stops after the bad piece");
        let second: String = sent
            .iter()
            .filter(|(to, _)| to == "msg-second")
            .map(|(_, c)| c.as_str())
            .collect();
        assert_eq!(second, "re: second", "{counter}: the next reply is whole");
        let m = sessions.metrics().snapshot();
        let bad_count = if counter == "failed" {
            m.replies_failed
        } else {
            m.replies_ambiguous
        };
        assert_eq!(bad_count, 1, "{counter}");
        assert_eq!(m.replies_ok, sent.len() as u64 - 1, "{counter}");
    }
}

#[tokio::test]
async fn drain_waits_for_replies_in_delivery() {
    let (agent, probe) = gate_agent();
    probe.release.add_permits(1);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let results = relay.hold_results("c1");
    sessions
        .submit(vec![Incoming::inbound(event("c1", "u1", "x"))], None)
        .await;
    next_reply(&mut out).await;
    until("the turn to finish", || {
        sessions.metrics().snapshot().turns_completed == 1
    })
    .await;
    let drain = {
        let sessions = sessions.clone();
        tokio::spawn(async move { sessions.drain(SAFETY).await })
    };
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!drain.is_finished(), "drain waits for the reply's result");
    assert_eq!(
        sessions.active_sessions(),
        1,
        "the session is still delivering"
    );
    results.add_permits(1);
    let outcome = tokio::time::timeout(SAFETY, drain)
        .await
        .expect("drain ends")
        .expect("no panic");
    assert_eq!(outcome, DrainOutcome::Finished);
    assert_eq!(sessions.metrics().snapshot().replies_ok, 1);
    assert_eq!(sessions.active_sessions(), 0);
}

#[tokio::test]
async fn drain_past_the_grace_sends_no_further_piece_of_a_reply() {
    let (agent, mut probe) = gate_agent();
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    short_pieces(&relay);
    let results = relay.hold_results("c1");
    sessions
        .submit(
            vec![Incoming::inbound(event("c1", "u1", "long reply"))],
            None,
        )
        .await;
    next(&mut probe.started).await;
    probe.release.add_permits(1);
    next_reply(&mut out).await;
    // A turn that never ends, to see when the grace runs out.
    sessions
        .submit(vec![Incoming::inbound(event("c2", "u2", "stuck"))], None)
        .await;
    next(&mut probe.started).await;
    let drain = {
        let sessions = sessions.clone();
        tokio::spawn(async move { sessions.drain(Duration::from_millis(50)).await })
    };
    assert_eq!(next(&mut probe.cancelled).await, "stuck");
    results.add_permits(1);
    let outcome = tokio::time::timeout(SAFETY, drain)
        .await
        .expect("drain ends")
        .expect("no panic");
    assert_eq!(outcome, DrainOutcome::Cancelled);
    assert_eq!(pieces(&mut out), Vec::new(), "no piece after the first");
    assert_eq!(sessions.metrics().snapshot().replies_ok, 1);
}

#[tokio::test]
async fn unconfirmed_replies_per_session_are_bounded() {
    let (agent, mut probe) = gate_agent();
    probe.release.add_permits(100);
    let (sessions, relay, mut out) = sessions_with(agent, SessionConfig::default());
    no_typing(&relay);
    let results = relay.hold_results("ca");
    for i in 0..=MAX_UNCONFIRMED_REPLIES {
        sessions
            .submit(
                vec![Incoming::inbound(event("ca", "u1", &format!("a{i}")))],
                None,
            )
            .await;
    }
    for i in 0..MAX_UNCONFIRMED_REPLIES {
        assert_eq!(next(&mut probe.started).await.1, format!("a{i}"));
    }
    // Another session still runs; A's next turn waits for a reply place.
    sessions
        .submit(vec![Incoming::inbound(event("cb", "u2", "b"))], None)
        .await;
    assert_eq!(next(&mut probe.started).await.1, "b");
    loop {
        if chat_of(&next_reply(&mut out).await) == Some("cb") {
            break;
        }
    }
    assert!(
        probe.started.try_recv().is_err(),
        "no turn past the bound while every reply is unconfirmed"
    );
    results.add_permits(1);
    assert_eq!(
        next(&mut probe.started).await.1,
        format!("a{MAX_UNCONFIRMED_REPLIES}"),
        "one result in, one more turn"
    );
    results.add_permits(MAX_UNCONFIRMED_REPLIES);
    assert_eq!(sessions.drain(SAFETY).await, DrainOutcome::Finished);
}
