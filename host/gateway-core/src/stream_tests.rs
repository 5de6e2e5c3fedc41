//! Streamed replies, end to end through the session layer: a scripted
//! streaming agent, and a fake platform that numbers the messages it is
//! sent and applies edits, so every test can compare what the user ends up
//! seeing with what the agent wrote. The agent is driven step by step and
//! each step awaits the action it causes, so no test depends on timing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermes_protocol::action::{Action, ActionResult};
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::event::MessageEvent;
use hermes_protocol::split::{LenUnit, split_message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError, ReplySink, TurnInput};
use crate::egress::Egress;
use crate::metrics::Metrics;
use crate::session::{DrainOutcome, Incoming, SessionConfig, Sessions, StreamingConfig};

/// What the user sees: the messages in the order they were sent.
#[derive(Default)]
struct Platform {
    order: Vec<String>,
    text: HashMap<String, String>,
    fail_edits: bool,
}

#[derive(Clone)]
struct FakePlatform {
    inner: Arc<Mutex<Platform>>,
    ops: mpsc::UnboundedSender<Action>,
    descriptor: Arc<Descriptor>,
}

impl FakePlatform {
    fn view(&self) -> Vec<String> {
        let p = self.inner.lock().expect("lock");
        p.order.iter().map(|id| p.text[id].clone()).collect()
    }
}

impl Egress for FakePlatform {
    async fn request(&self, action: Action) -> ActionResult {
        let result = {
            let mut p = self.inner.lock().expect("lock");
            match &action {
                Action::Send { content, .. } => {
                    let id = format!("m{}", p.order.len() + 1);
                    p.order.push(id.clone());
                    p.text.insert(id.clone(), content.clone());
                    ActionResult::ok(Some(id))
                }
                Action::Edit {
                    message_id,
                    content,
                    ..
                } if !p.fail_edits && p.text.contains_key(message_id) => {
                    p.text.insert(message_id.clone(), content.clone());
                    ActionResult::ok(None)
                }
                Action::Edit { .. } => ActionResult::failure("Unknown Message"),
                _ => ActionResult::ok(None),
            }
        };
        let _ = self.ops.send(action);
        result
    }
    async fn interrupt(&self, _session_key: &str, _reason: Option<&str>) {}
    async fn ack(&self, _buffer_id: &str) {}
    fn descriptor(&self, _platform: &str) -> Arc<Descriptor> {
        Arc::clone(&self.descriptor)
    }
}

/// One step of the scripted agent.
enum Step {
    /// Write this text.
    Push(&'static str),
    /// Finish with everything written.
    Finish,
    /// Fail.
    Fail,
}

/// A streaming agent that writes what the test tells it to.
struct ScriptAgent {
    steps: tokio::sync::Mutex<mpsc::UnboundedReceiver<Step>>,
}

impl Agent for ScriptAgent {
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
        _turn: &TurnInput,
        cancel: CancellationToken,
        sink: ReplySink,
    ) -> Result<String, AgentError> {
        let mut steps = self.steps.lock().await;
        let mut reply = String::new();
        loop {
            let step = tokio::select! {
                () = cancel.cancelled() => return Err(AgentError::Cancelled),
                step = steps.recv() => step,
            };
            match step {
                Some(Step::Push(piece)) => {
                    reply.push_str(piece);
                    sink.push(piece);
                }
                Some(Step::Finish) | None => return Ok(reply),
                Some(Step::Fail) => return Err(AgentError::Stream("boom".to_owned())),
            }
        }
    }
}

struct Harness {
    sessions: Sessions<FakePlatform, ScriptAgent>,
    platform: FakePlatform,
    steps: mpsc::UnboundedSender<Step>,
    ops: mpsc::UnboundedReceiver<Action>,
}

/// A descriptor that allows `send` and `edit` (or not).
fn descriptor(max: usize, unit: LenUnit, edit: bool) -> Descriptor {
    let mut d = Descriptor::placeholder("discord");
    d.max_message_length = max;
    d.len_unit = unit;
    d.supports_edit = edit;
    d.supported_ops = vec!["send".into(), "edit".into()];
    d
}

fn harness(d: Descriptor, first_chunk_chars: usize) -> Harness {
    let (ops_tx, ops) = mpsc::unbounded_channel();
    let platform = FakePlatform {
        inner: Arc::default(),
        ops: ops_tx,
        descriptor: Arc::new(d),
    };
    let (steps, rx) = mpsc::unbounded_channel();
    let agent = ScriptAgent {
        steps: tokio::sync::Mutex::new(rx),
    };
    let config = SessionConfig {
        streaming: StreamingConfig {
            edit_interval: Duration::from_millis(10),
            first_chunk_chars,
            // Long: the first piece goes out by size in these tests.
            first_chunk_delay: Duration::from_secs(3600),
            ..StreamingConfig::default()
        },
        typing_delay: Duration::from_secs(3600),
        ..SessionConfig::default()
    };
    let sessions = Sessions::new(platform.clone(), agent, config, Arc::new(Metrics::new()));
    Harness {
        sessions,
        platform,
        steps,
        ops,
    }
}

impl Harness {
    async fn start(&self) -> String {
        let mut e = MessageEvent {
            text: "hi".to_owned(),
            ..MessageEvent::default()
        };
        e.source.platform = "discord".to_owned();
        e.source.chat_type = "dm".to_owned();
        e.source.chat_id = "c1".to_owned();
        e.source.user_id = Some("u1".to_owned());
        let incoming = Incoming::inbound(e);
        let key = self.sessions.key_of(&incoming);
        self.sessions.submit(vec![incoming], None).await;
        key.as_str().to_owned()
    }

    fn step(&self, step: Step) {
        self.steps.send(step).expect("agent alive");
    }

    /// The next action the platform got.
    async fn next(&mut self) -> Action {
        tokio::time::timeout(Duration::from_secs(10), self.ops.recv())
            .await
            .expect("an action within 10 s")
            .expect("platform alive")
    }

    /// Waits until the session layer is done, then what the platform got
    /// since the last `next`.
    async fn finish(&mut self) -> Vec<Action> {
        assert_eq!(
            self.sessions.drain(Duration::from_secs(10)).await,
            DrainOutcome::Finished
        );
        let mut rest = Vec::new();
        while let Ok(a) = self.ops.try_recv() {
            rest.push(a);
        }
        rest
    }
}

fn content(a: &Action) -> (&'static str, &str) {
    match a {
        Action::Send { content, .. } => ("send", content),
        Action::Edit { content, .. } => ("edit", content),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_reply_that_fits_is_sent_then_edited_to_its_exact_text() {
    let mut h = harness(descriptor(2000, LenUnit::Chars, true), 5);
    h.start().await;
    h.step(Step::Push("Hello"));
    assert_eq!(content(&h.next().await), ("send", "Hello"));
    h.step(Step::Push(", world"));
    assert_eq!(content(&h.next().await), ("edit", "Hello, world"));
    h.step(Step::Push("!"));
    h.step(Step::Finish);
    let rest = h.finish().await;
    let rest: Vec<_> = rest.iter().map(content).collect();
    assert_eq!(rest, [("edit", "Hello, world!")], "one last edit, exact");
    assert_eq!(h.platform.view(), ["Hello, world!"]);
}

#[tokio::test]
async fn a_reply_that_outgrows_the_limit_continues_in_new_messages_split_as_usual() {
    let mut h = harness(descriptor(12, LenUnit::Chars, true), 5);
    h.start().await;
    h.step(Step::Push("alpha beta "));
    assert_eq!(content(&h.next().await), ("send", "alpha beta "));
    h.step(Step::Push("gamma delta epsilon zeta"));
    h.step(Step::Finish);
    h.finish().await;
    let full = "alpha beta gamma delta epsilon zeta";
    let expected = split_message(full, 12, LenUnit::Chars, true);
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(h.platform.view(), expected);
}

#[tokio::test]
async fn utf16_limits_never_cut_an_emoji() {
    let mut h = harness(descriptor(5, LenUnit::Utf16, true), 2);
    h.start().await;
    h.step(Step::Push("ab😀"));
    assert_eq!(content(&h.next().await), ("send", "ab😀"));
    h.step(Step::Push("cd😀e😀f"));
    h.step(Step::Finish);
    h.finish().await;
    let full = "ab😀cd😀e😀f";
    let view = h.platform.view();
    assert_eq!(view, split_message(full, 5, LenUnit::Utf16, true));
    for message in &view {
        assert!(LenUnit::Utf16.measure(message) <= 5, "{message:?}");
    }
    assert_eq!(view.concat(), full, "nothing lost or doubled");
}

#[tokio::test]
async fn a_failed_edit_sends_the_rest_as_new_messages_once() {
    let mut h = harness(descriptor(2000, LenUnit::Chars, true), 5);
    h.start().await;
    h.step(Step::Push("first part"));
    assert_eq!(content(&h.next().await), ("send", "first part"));
    h.platform.inner.lock().expect("lock").fail_edits = true;
    h.step(Step::Push(" and the rest"));
    assert_eq!(
        content(&h.next().await),
        ("edit", "first part and the rest")
    );
    h.step(Step::Push(" of it"));
    h.step(Step::Finish);
    let rest = h.finish().await;
    let rest: Vec<_> = rest.iter().map(content).collect();
    assert_eq!(
        rest,
        [("send", " and the rest of it")],
        "no edit after the failure; the unseen text as a new message"
    );
    assert_eq!(h.platform.view(), ["first part", " and the rest of it"]);
}

#[tokio::test]
async fn an_interrupt_leaves_the_partial_message_with_a_marker_and_sends_nothing_more() {
    let mut h = harness(descriptor(2000, LenUnit::Chars, true), 5);
    let key = h.start().await;
    h.step(Step::Push("Once upon"));
    assert_eq!(content(&h.next().await), ("send", "Once upon"));
    h.sessions.interrupt(&key, "c1");
    // Written after the interrupt: never shown.
    let _ = h.steps.send(Step::Push(" a time"));
    let rest = h.finish().await;
    let rest: Vec<_> = rest.iter().map(content).collect();
    assert_eq!(rest, [("edit", "Once upon …")]);
    assert_eq!(h.platform.view(), ["Once upon …"]);
}

#[tokio::test]
async fn without_edits_the_whole_reply_is_sent_at_the_end() {
    let mut h = harness(descriptor(2000, LenUnit::Chars, false), 5);
    h.start().await;
    h.step(Step::Push("Hello there, "));
    h.step(Step::Push("how are you?"));
    h.step(Step::Finish);
    let rest = h.finish().await;
    let rest: Vec<_> = rest.iter().map(content).collect();
    assert_eq!(rest, [("send", "Hello there, how are you?")]);
}

#[tokio::test]
async fn an_agent_faster_than_the_first_piece_is_answered_once() {
    let mut h = harness(descriptor(2000, LenUnit::Chars, true), 1000);
    h.start().await;
    h.step(Step::Push("Short"));
    h.step(Step::Push(" answer."));
    h.step(Step::Finish);
    let rest = h.finish().await;
    let rest: Vec<_> = rest.iter().map(content).collect();
    assert_eq!(
        rest,
        [("send", "Short answer.")],
        "no edit for a reply never shown growing"
    );
}

#[tokio::test]
async fn a_failing_agent_keeps_what_was_shown_and_says_so() {
    let mut h = harness(descriptor(2000, LenUnit::Chars, true), 5);
    h.start().await;
    h.step(Step::Push("Working on"));
    assert_eq!(content(&h.next().await), ("send", "Working on"));
    h.step(Step::Push(" it"));
    h.step(Step::Fail);
    h.finish().await;
    let view = h.platform.view();
    assert_eq!(view.len(), 2, "{view:?}");
    assert_eq!(view[0], "Working on it");
    assert_eq!(
        view[1],
        AgentError::Stream(String::new()).user_message(),
        "the agent's failure, as a non-streamed turn says it"
    );
}
