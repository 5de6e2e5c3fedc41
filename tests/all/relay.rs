//! The relay link over real loopback WebSockets against the stub connector
//! (relay-contract §2, §4, §6, §7).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hermes_connector::{
    Answer, GoingIdle, StubAuth, StubConfig, StubConnector, StubEvent, TokenVerdict,
    descriptor_value,
};
use hermes_protocol::action::{ActionResult, RequestId};
use hermes_protocol::auth::verify_token;
use hermes_protocol::decoder::DecodeError;
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::frame::{ConnectorFrame, GatewayFrame};
use hermes_transport::{
    AckOutcome, BackoffConfig, ConfigError, DrainReport, Identity, InboundItem, LinkState,
    RelayConfig, RelayHandle, RelayLink,
};
use serde_json::json;
use tokio::sync::mpsc;

const GATEWAY_ID: &str = "gw-test";
const SECRET: &str = "relay-test-secret";
/// Upper bound for anything a test awaits: a failure, never a hang.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn stub() -> StubConnector {
    StubConnector::start(StubConfig::with_secrets([SECRET]))
        .await
        .expect("stub connector binds 127.0.0.1:0")
}

/// A config for `stub` with a fast ladder, so reconnect tests run in
/// milliseconds (configuration, not sleeping).
fn config(stub: &StubConnector) -> RelayConfig {
    let mut config = RelayConfig::new(&stub.url(), Some(GATEWAY_ID), Some(SECRET), false)
        .expect("valid relay config");
    config.backoff = BackoffConfig {
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        jitter: 0.0,
        stable_after: Duration::from_secs(10),
    };
    config.dial_timeout = Duration::from_secs(5);
    config.handshake_timeout = Duration::from_secs(5);
    config
}

/// A ladder so slow that reaching `Connected` again within [`PATIENCE`]
/// proves the re-dial did not back off.
fn slow_ladder(config: &mut RelayConfig) {
    config.backoff.base = Duration::from_secs(60);
    config.backoff.max = Duration::from_secs(60);
}

async fn until_state(
    relay: &RelayHandle,
    what: &str,
    predicate: impl FnMut(&LinkState) -> bool,
) -> LinkState {
    let mut state = relay.state();
    within(what, async move {
        state
            .wait_for(predicate)
            .await
            .map(|s| s.clone())
            .expect("link state sender lives")
    })
    .await
}

async fn connected(relay: &RelayHandle) -> Arc<Descriptor> {
    match until_state(relay, "Connected", LinkState::is_connected).await {
        LinkState::Connected { descriptor } => descriptor,
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn spawn_connected(config: RelayConfig) -> (RelayHandle, mpsc::Receiver<InboundItem>) {
    let (relay, inbound) = RelayLink::spawn(config);
    connected(&relay).await;
    (relay, inbound)
}

async fn next_item(inbound: &mut mpsc::Receiver<InboundItem>) -> InboundItem {
    within("an inbound item", inbound.recv())
        .await
        .expect("inbound channel open")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn interrupt_line(session_key: &str) -> String {
    ConnectorFrame::InterruptInbound {
        session_key: session_key.to_owned(),
        chat_id: "c".to_owned(),
    }
    .encode()
}

async fn expect_interrupt(inbound: &mut mpsc::Receiver<InboundItem>, expected: &str) {
    match next_item(inbound).await {
        InboundItem::Interrupt { session_key, .. } => {
            assert_eq!(
                session_key, expected,
                "the next good frame after a bad one is processed"
            )
        }
        other => panic!("expected interrupt {expected}, got {other:?}"),
    }
}

fn is_outbound(frame: &GatewayFrame) -> bool {
    matches!(frame, GatewayFrame::Outbound { .. })
}

fn request_id(frame: &GatewayFrame) -> RequestId {
    match frame {
        GatewayFrame::Outbound { request_id, .. } => request_id.clone(),
        other => panic!("expected outbound, got {other:?}"),
    }
}

#[test]
fn config_refuses_a_blank_secret_unless_unauthenticated_is_allowed() {
    let url = "https://relay.example";
    assert_eq!(
        RelayConfig::new(url, Some("gw"), Some("  "), false).err(),
        Some(ConfigError::BlankSecret {
            gateway_id: "gw".to_owned()
        })
    );
    assert_eq!(
        RelayConfig::new(url, None, Some("s"), false).err(),
        Some(ConfigError::BlankGatewayId)
    );
    assert_eq!(
        RelayConfig::new(url, None, None, false).err(),
        Some(ConfigError::MissingCredentials)
    );
    let dev = RelayConfig::new(url, Some("gw"), Some(""), true).expect("allowed for development");
    assert_eq!(dev.dial_url(), "wss://relay.example/relay");
    assert!(matches!(
        RelayConfig::new("ftp://x", Some("gw"), Some("s"), false),
        Err(ConfigError::InvalidUrl { .. })
    ));
    let debug = format!(
        "{:?}",
        RelayConfig::new(url, Some("gw"), Some("hunter2"), false)
    );
    assert!(
        !debug.contains("hunter2"),
        "Debug must not print the secret: {debug}"
    );
}

#[tokio::test]
async fn handshake_sends_hellos_and_a_token_that_verifies() {
    let stub = stub().await;
    let first = Descriptor {
        label: "Discord".to_owned(),
        ..Descriptor::placeholder("discord")
    };
    let second = Descriptor {
        label: "Telegram".to_owned(),
        ..Descriptor::placeholder("telegram")
    };
    stub.set_descriptors(vec![descriptor_value(&first), descriptor_value(&second)]);
    let mut config = config(&stub);
    config.identities = vec![Identity::default(), Identity::new("discord", "bot-1")];
    let (relay, _inbound) = RelayLink::spawn(config);
    assert_eq!(
        relay.descriptor().platform,
        "relay",
        "placeholder before the handshake"
    );

    let descriptor = connected(&relay).await;
    assert_eq!(
        *descriptor, first,
        "the first descriptor is the connection's default"
    );

    let mut events = stub.cursor();
    let token = match events
        .next_matching(|e| matches!(e, StubEvent::Upgraded { .. }))
        .await
    {
        StubEvent::Upgraded { token, verdict, .. } => {
            assert_eq!(
                verdict,
                TokenVerdict::Accepted {
                    gateway_id: GATEWAY_ID.to_owned()
                }
            );
            token.expect("a bearer token on the upgrade")
        }
        other => panic!("unexpected {other:?}"),
    };
    let verified = verify_token(&token, &[SECRET], now()).expect("token verifies with the secret");
    assert_eq!(verified.payload, GATEWAY_ID);
    assert!(verify_token(&token, &["another-secret"], now()).is_err());

    let (_, hello1) = events.next_frame(|_| true).await;
    let (_, hello2) = events.next_frame(|_| true).await;
    let hello = |platform: &str, bot_id: &str| GatewayFrame::Hello {
        platform: platform.to_owned(),
        bot_id: bot_id.to_owned(),
        command_manifest: None,
    };
    assert_eq!(
        [hello1, hello2],
        [hello("relay", ""), hello("discord", "bot-1")]
    );

    // A round trip orders us after the second descriptor on the reader.
    assert!(relay.typing("c1", None, Default::default()).await.success);
    assert_eq!(relay.descriptor_for("telegram").as_deref(), Some(&second));
    assert_eq!(
        *relay.descriptor(),
        first,
        "later descriptors never replace the default"
    );
    relay.close().await;
}

#[tokio::test]
async fn results_are_correlated_by_request_id_even_out_of_order() {
    let stub = stub().await;
    stub.set_default_answer(Answer::Never);
    let (relay, _inbound) = spawn_connected(config(&stub)).await;
    let mut events = stub.cursor();

    let calls: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|chat| {
            let relay = relay.clone();
            tokio::spawn(async move { relay.send(chat, "hi", None, Default::default()).await })
        })
        .collect();
    let mut outbound = Vec::new();
    for _ in 0..3 {
        let (_, frame) = within("outbound", events.next_frame(is_outbound)).await;
        outbound.push(frame);
    }
    assert_eq!(relay.pending_len(), 3);
    // Answer in reverse arrival order, each with a message id naming its chat.
    for frame in outbound.iter().rev() {
        let GatewayFrame::Outbound {
            request_id, action, ..
        } = frame
        else {
            unreachable!()
        };
        assert!(
            request_id.is_well_formed(),
            "requestId is 32 lowercase hex: {request_id}"
        );
        let chat = match action {
            hermes_protocol::action::Action::Send {
                chat_id, reply_to, ..
            } => {
                assert_eq!(*reply_to, None);
                chat_id.clone()
            }
            other => panic!("expected send, got {other:?}"),
        };
        let result = ActionResult::ok(Some(format!("msg-{chat}")));
        let frame = ConnectorFrame::OutboundResult {
            request_id: request_id.clone(),
            result,
        };
        stub.push_frame(&frame).await.expect("connected");
    }
    for (call, chat) in calls.into_iter().zip(["a", "b", "c"]) {
        let result = within("send result", call).await.expect("task");
        assert_eq!(
            result.message_id.as_deref(),
            Some(format!("msg-{chat}").as_str())
        );
    }
    assert_eq!(relay.pending_len(), 0);
    relay.close().await;
}

#[tokio::test]
async fn timeout_is_ambiguous_leaves_no_pending_entry_and_late_results_are_counted() {
    let stub = stub().await;
    stub.script([Answer::Never]);
    let mut config = config(&stub);
    config.outbound_timeout = Duration::from_millis(200);
    let (relay, _inbound) = spawn_connected(config).await;
    let mut events = stub.cursor();

    let result = relay.send("c1", "hi", None, Default::default()).await;
    assert_eq!(result, ActionResult::timed_out());
    assert!(result.ambiguous);
    assert_eq!(relay.pending_len(), 0, "a timed-out entry is removed");
    assert_eq!(relay.counters().timeouts, 1);

    // The result arrives late: ignored and counted, nothing breaks.
    let (_, frame) = events.next_frame(is_outbound).await;
    let late = ConnectorFrame::OutboundResult {
        request_id: request_id(&frame),
        result: ActionResult::ok(None),
    };
    stub.push_frame(&late).await.expect("connected");
    // The next round trip is read after the late result.
    assert!(
        relay
            .send("c1", "again", None, Default::default())
            .await
            .success
    );
    assert_eq!(relay.counters().late_results, 1);
    assert_eq!(relay.pending_len(), 0);
    relay.close().await;
}

#[tokio::test]
async fn connection_loss_resolves_every_pending_call_at_once() {
    let stub = stub().await;
    stub.set_default_answer(Answer::Never);
    let (relay, _inbound) = spawn_connected(config(&stub)).await; // outbound timeout: 30 s
    let mut events = stub.cursor();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let relay = relay.clone();
            tokio::spawn(async move {
                relay
                    .send(format!("c{i}"), "hi", None, Default::default())
                    .await
            })
        })
        .collect();
    for _ in 0..5 {
        within("outbound", events.next_frame(is_outbound)).await;
    }
    stub.drop_connection().await.expect("connected");
    for call in calls {
        let result = within("connection-lost result", call).await.expect("task");
        assert_eq!(result, ActionResult::connection_lost());
        assert!(result.ambiguous);
    }
    assert_eq!(relay.pending_len(), 0);
    relay.close().await;
}

#[tokio::test]
async fn not_connected_fails_fast_without_writing() {
    let stub = stub().await;
    stub.set_descriptors(Vec::new()); // the handshake never completes
    let (relay, _inbound) = RelayLink::spawn(config(&stub));
    let mut events = stub.cursor();
    within(
        "hello",
        events.next_frame(|f| matches!(f, GatewayFrame::Hello { .. })),
    )
    .await;
    assert_eq!(
        relay.send("c", "x", None, Default::default()).await,
        ActionResult::not_connected()
    );
    assert_eq!(relay.ack("b").await, AckOutcome::NotConnected);
    assert_eq!(relay.pending_len(), 0);
    relay.close().await;
    assert!(
        !stub
            .events()
            .iter()
            .any(|e| e.frame().is_some_and(is_outbound))
    );
}

#[tokio::test]
async fn reconnects_with_a_fresh_token_and_resends_hellos() {
    let stub = stub().await;
    let (relay, _inbound) = spawn_connected(config(&stub)).await;
    let mut events = stub.cursor_at_end();
    stub.close(1011, "connector restarting")
        .await
        .expect("connected");
    let redial_time = now();
    let (conn, token) = match within(
        "second upgrade",
        events.next_matching(|e| matches!(e, StubEvent::Upgraded { .. })),
    )
    .await
    {
        StubEvent::Upgraded {
            conn,
            token,
            verdict,
        } => {
            assert!(matches!(verdict, TokenVerdict::Accepted { .. }));
            (conn, token.expect("token on the re-dial"))
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(conn, 2);
    let verified = verify_token(&token, &[SECRET], now()).expect("fresh token verifies");
    assert!(
        verified.exp >= redial_time + 299,
        "minted at re-dial time with a 300 s ttl"
    );
    let (hello_conn, _) = within(
        "hello again",
        events.next_frame(|f| matches!(f, GatewayFrame::Hello { .. })),
    )
    .await;
    assert_eq!(hello_conn, 2, "hellos are re-sent on the new connection");
    connected(&relay).await;
    assert!(
        relay
            .send("c", "back", None, Default::default())
            .await
            .success
    );
    relay.close().await;
}

#[tokio::test]
async fn cold_start_4401_retries_with_backoff_until_provisioned() {
    let stub = stub().await;
    stub.set_auth(StubAuth::Tokens(vec!["not-yet-provisioned".to_owned()]));
    let (relay, _inbound) = RelayLink::spawn(config(&stub));
    let mut events = stub.cursor();
    for _ in 0..2 {
        match within(
            "rejected upgrade",
            events.next_matching(|e| matches!(e, StubEvent::Upgraded { .. })),
        )
        .await
        {
            StubEvent::Upgraded {
                verdict: TokenVerdict::Rejected { reason },
                ..
            } => assert_eq!(reason, "invalid token"),
            other => panic!("expected a rejected upgrade, got {other:?}"),
        }
    }
    until_state(&relay, "backing off", |s| {
        matches!(s, LinkState::BackingOff { .. })
    })
    .await;
    stub.set_auth(StubAuth::Tokens(vec![SECRET.to_owned()]));
    connected(&relay).await;
    relay.close().await;
}

#[tokio::test]
async fn expired_4401_redials_at_once() {
    let stub = stub().await;
    let mut config = config(&stub);
    slow_ladder(&mut config);
    let (relay, _inbound) = spawn_connected(config).await;
    stub.close(4401, "expired").await.expect("connected");
    until_state(&relay, "re-dial", |s| !s.is_connected()).await;
    connected(&relay).await;
    assert_eq!(stub.connection_count(), 2);
    relay.close().await;
}

#[tokio::test]
async fn a_second_4401_after_the_handshake_latches_revoked() {
    let stub = stub().await;
    stub.set_default_answer(Answer::Never);
    let mut config = config(&stub);
    slow_ladder(&mut config);
    let (relay, _inbound) = spawn_connected(config).await;
    let mut events = stub.cursor();

    let in_flight = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.send("c", "x", None, Default::default()).await })
    };
    within("outbound", events.next_frame(is_outbound)).await;
    stub.set_auth(StubAuth::Tokens(vec!["rotated-away".to_owned()]));
    stub.close(4401, "revoked").await.expect("connected");

    assert_eq!(
        until_state(&relay, "Revoked", LinkState::is_final).await,
        LinkState::Revoked
    );
    assert_eq!(
        within("in-flight", in_flight).await.expect("task"),
        ActionResult::connection_lost()
    );
    assert_eq!(
        relay.send("c", "y", None, Default::default()).await,
        ActionResult::not_connected()
    );
    assert_eq!(
        relay.counters().dials,
        2,
        "one immediate re-dial, then no more"
    );
    match stub
        .events()
        .iter()
        .rev()
        .find(|e| matches!(e, StubEvent::Upgraded { .. }))
    {
        Some(StubEvent::Upgraded {
            conn: 2,
            verdict: TokenVerdict::Rejected { .. },
            ..
        }) => {}
        other => panic!("the re-dial should have been rejected: {other:?}"),
    }
    relay.close().await;
    assert_eq!(*relay.state().borrow(), LinkState::Revoked);
}

#[tokio::test]
async fn every_malformed_frame_kind_is_skipped_and_the_reader_survives() {
    let stub = stub().await;
    let (relay, mut inbound) = spawn_connected(config(&stub)).await;

    let bad: &[&str] = &[
        "{not json\n",
        "[1,2,3]\n",
        "\"just a string\"\n",
        "{\"no\":\"type\"}\n",
        "{\"type\":\"interrupt_inbound\"}\n",
        "{\"type\":\"interrupt_inbound\",\"session_key\":7,\"chat_id\":\"c\"}\n",
        "{\"type\":\"outbound_result\",\"requestId\":5,\"result\":{}}\n",
        "{\"type\":\"inbound\",\"event\":\"not an object\"}\n",
        "{\"type\":\"descriptor\",\"descriptor\":{\"platform\":\"x\"}}\n",
    ];
    for (i, line) in bad.iter().enumerate() {
        stub.push_text(*line).await.expect("connected");
        let key = format!("after-bad-{i}");
        stub.push_text(interrupt_line(&key))
            .await
            .expect("connected");
        expect_interrupt(&mut inbound, &key).await;
    }
    stub.push_text("{\"type\":\"from_the_future\",\"x\":1}\n")
        .await
        .expect("connected");
    stub.push_text(interrupt_line("after-unknown"))
        .await
        .expect("connected");
    expect_interrupt(&mut inbound, "after-unknown").await;

    // Binary messages are UTF-8 text; invalid UTF-8 is one more bad frame.
    stub.push_binary(interrupt_line("binary").into_bytes())
        .await
        .expect("connected");
    expect_interrupt(&mut inbound, "binary").await;
    stub.push_binary(b"\xff\xfe{\n".to_vec())
        .await
        .expect("connected");
    // Several frames in one message, one frame split across messages.
    let two = format!(
        "{}{}",
        interrupt_line("one-of-two"),
        interrupt_line("two-of-two")
    );
    stub.push_text(two).await.expect("connected");
    let split = interrupt_line("split");
    let (head, tail) = split.split_at(10);
    stub.push_text(head).await.expect("connected");
    stub.push_text(tail).await.expect("connected");
    expect_interrupt(&mut inbound, "one-of-two").await;
    expect_interrupt(&mut inbound, "two-of-two").await;
    expect_interrupt(&mut inbound, "split").await;

    let counters = relay.counters();
    assert_eq!(counters.malformed_frames, bad.len() as u64 + 1);
    assert_eq!(counters.unknown_types, 1);
    assert!(
        relay.state().borrow().is_connected(),
        "the connection stays up"
    );
    assert_eq!(stub.connection_count(), 1);
    relay.close().await;
}

#[tokio::test]
async fn bad_buffered_deliveries_are_surfaced_for_a_deliberate_ack() {
    let stub = stub().await;
    let (relay, mut inbound) = spawn_connected(config(&stub)).await;
    let bad_forward = json!({"type": "passthrough_forward", "bufferId": "buf-1",
        "forward": {"platform": "discord", "bodyB64": "***not base64***"}});
    stub.push_text(format!("{bad_forward}\n"))
        .await
        .expect("connected");
    match next_item(&mut inbound).await {
        InboundItem::Dropped { buffer_id, error } => {
            assert_eq!(buffer_id, "buf-1");
            assert!(
                matches!(error, DecodeError::InvalidBodyEncoding { .. }),
                "{error:?}"
            );
        }
        other => panic!("expected a dropped delivery, got {other:?}"),
    }
    let bad_event =
        json!({"type": "inbound", "bufferId": "buf-2", "event": ["not", "an", "object"]});
    stub.push_text(format!("{bad_event}\n"))
        .await
        .expect("connected");
    assert!(
        matches!(next_item(&mut inbound).await, InboundItem::Dropped { buffer_id, .. } if buffer_id == "buf-2")
    );

    let good = json!({"type": "inbound", "bufferId": "buf-3", "event": {"text": "hi", "source": {"chat_id": "c9"}}});
    stub.push_text(format!("{good}\n"))
        .await
        .expect("connected");
    match next_item(&mut inbound).await {
        InboundItem::Event { event, buffer_id } => {
            assert_eq!(
                (event.text.as_str(), event.source.chat_id.as_str()),
                ("hi", "c9")
            );
            assert_eq!(buffer_id.as_deref(), Some("buf-3"));
        }
        other => panic!("expected an event, got {other:?}"),
    }
    assert_eq!(relay.counters().malformed_frames, 2);
    relay.close().await;
}

#[tokio::test]
async fn an_invalid_first_descriptor_fails_the_handshake_and_redials() {
    let stub = stub().await;
    stub.set_descriptors(vec![json!({"contract_version": 1, "platform": "discord"})]);
    let (relay, _inbound) = RelayLink::spawn(config(&stub));
    let mut events = stub.cursor();
    match within(
        "our close",
        events.next_matching(|e| matches!(e, StubEvent::PeerClosed { .. })),
    )
    .await
    {
        StubEvent::PeerClosed { conn: 1, code, .. } => assert_eq!(code, Some(1002)),
        other => panic!("expected the gateway to close connection 1, got {other:?}"),
    }
    stub.set_descriptors(vec![descriptor_value(&Descriptor::placeholder("discord"))]);
    assert_eq!(connected(&relay).await.platform, "discord");
    assert!(stub.connection_count() >= 2);
    assert_eq!(
        relay.counters().malformed_frames,
        0,
        "a bad first descriptor is a handshake failure"
    );
    relay.close().await;
}

#[tokio::test]
async fn an_overlong_partial_line_closes_and_redials() {
    let stub = stub().await;
    let mut config = config(&stub);
    config.max_partial_line = 1024;
    let (relay, _inbound) = spawn_connected(config).await;
    let mut events = stub.cursor_at_end();
    stub.push_text("x".repeat(600)).await.expect("connected");
    stub.push_text("y".repeat(600)).await.expect("connected");
    match within(
        "our close",
        events.next_matching(|e| matches!(e, StubEvent::PeerClosed { .. })),
    )
    .await
    {
        StubEvent::PeerClosed { conn: 1, code, .. } => assert_eq!(code, Some(1009)),
        other => panic!("expected close of connection 1, got {other:?}"),
    }
    within(
        "re-dial",
        events.next_matching(|e| matches!(e, StubEvent::Upgraded { conn: 2, .. })),
    )
    .await;
    connected(&relay).await;
    relay.close().await;
}

#[tokio::test]
async fn inbound_ack_is_sent_once_per_buffer_id_per_connection() {
    let stub = stub().await;
    let (relay, _inbound) = spawn_connected(config(&stub)).await;
    let mut events = stub.cursor();
    assert_eq!(relay.ack("buf-1").await, AckOutcome::Sent);
    assert_eq!(relay.ack("buf-1").await, AckOutcome::Duplicate);
    assert_eq!(relay.ack("buf-2").await, AckOutcome::Sent);
    relay.interrupt("marker", None).await;
    // Frames leave in order, so everything acked is recorded before the marker.
    within(
        "marker",
        events.next_frame(|f| matches!(f, GatewayFrame::Interrupt { .. })),
    )
    .await;
    let acks: Vec<_> = stub
        .events()
        .iter()
        .filter_map(|e| match e.frame() {
            Some(GatewayFrame::InboundAck { buffer_id }) => Some(buffer_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(acks, ["buf-1", "buf-2"]);

    // A new connection gets a fresh dedup set (the connector redelivers).
    stub.close(1012, "restart").await.expect("connected");
    until_state(&relay, "re-dial", |s| !s.is_connected()).await;
    connected(&relay).await;
    assert_eq!(relay.ack("buf-1").await, AckOutcome::Sent);
    let (conn, _) = within(
        "ack on conn 2",
        events.next_frame(|f| matches!(f, GatewayFrame::InboundAck { .. })),
    )
    .await;
    assert_eq!(conn, 2);
    relay.close().await;
}

#[tokio::test]
async fn interrupt_egress_carries_reason_or_null() {
    let stub = stub().await;
    let (relay, _inbound) = spawn_connected(config(&stub)).await;
    let mut events = stub.cursor();
    relay
        .interrupt("agent:main:discord:dm:1", Some("user /stop".to_owned()))
        .await;
    relay.interrupt("agent:main:discord:dm:2", None).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (_, f) = within(
            "interrupt",
            events.next_frame(|f| matches!(f, GatewayFrame::Interrupt { .. })),
        )
        .await;
        seen.push(f);
    }
    assert_eq!(
        seen,
        [
            GatewayFrame::Interrupt {
                session_key: "agent:main:discord:dm:1".into(),
                reason: Some("user /stop".into())
            },
            GatewayFrame::Interrupt {
                session_key: "agent:main:discord:dm:2".into(),
                reason: None
            },
        ]
    );
    relay.close().await;
}

#[tokio::test]
async fn drain_with_an_ack_then_close_normally() {
    let stub = stub().await;
    let (relay, _inbound) = spawn_connected(config(&stub)).await;
    let mut events = stub.cursor();
    assert!(matches!(
        relay.drain(Duration::from_secs(5)).await,
        DrainReport::Acknowledged { .. }
    ));
    within(
        "going_idle",
        events.next_frame(|f| *f == GatewayFrame::GoingIdle),
    )
    .await;
    relay.close().await;
    match within(
        "close frame",
        events.next_matching(|e| matches!(e, StubEvent::PeerClosed { .. })),
    )
    .await
    {
        StubEvent::PeerClosed { code, .. } => assert_eq!(code, Some(1000), "a normal close code"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(*relay.state().borrow(), LinkState::Closed);
    assert_eq!(
        relay.send("c", "late", None, Default::default()).await,
        ActionResult::not_connected()
    );
}

#[tokio::test]
async fn drain_without_an_ack_times_out_while_inbound_still_flows() {
    let stub = stub().await;
    stub.set_going_idle(GoingIdle::Ignore);
    stub.set_default_answer(Answer::Never);
    let (relay, mut inbound) = spawn_connected(config(&stub)).await;
    let mut events = stub.cursor();
    let pending = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.send("c", "x", None, Default::default()).await })
    };
    within("outbound", events.next_frame(is_outbound)).await;
    let drain = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.drain(Duration::from_millis(300)).await })
    };
    within(
        "going_idle",
        events.next_frame(|f| *f == GatewayFrame::GoingIdle),
    )
    .await;
    stub.push_text(interrupt_line("raced-the-flip"))
        .await
        .expect("connected");
    expect_interrupt(&mut inbound, "raced-the-flip").await;
    assert_eq!(
        within("drain", drain).await.expect("task"),
        DrainReport::TimedOut
    );
    relay.close().await;
    assert_eq!(
        within("pending", pending).await.expect("task"),
        ActionResult::connection_lost(),
        "close settles pending"
    );
    assert_eq!(relay.pending_len(), 0);
}

#[tokio::test]
async fn the_stub_answers_http_400_off_the_relay_path() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stub = stub().await;
    let mut tcp = tokio::net::TcpStream::connect(stub.addr())
        .await
        .expect("connect");
    let upgrade = "GET /elsewhere HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    tcp.write_all(upgrade.as_bytes())
        .await
        .expect("write request");
    let mut head = [0u8; 12];
    within("response", tcp.read_exact(&mut head))
        .await
        .expect("read status line");
    assert_eq!(&head, b"HTTP/1.1 400");
    assert!(
        matches!(stub.events().as_slice(), [StubEvent::HttpRejected { status: 400, path }] if path == "/elsewhere")
    );
}

#[tokio::test]
async fn a_dial_without_a_token_is_closed_with_4401_missing_token() {
    let stub = stub().await;
    let config = RelayConfig::new(&stub.url(), None, None, true).expect("allowed for development");
    let mut config_fast = config;
    config_fast.backoff = BackoffConfig {
        base: Duration::from_millis(10),
        max: Duration::from_millis(20),
        jitter: 0.0,
        stable_after: Duration::from_secs(10),
    };
    let (relay, _inbound) = RelayLink::spawn(config_fast);
    let mut events = stub.cursor();
    match within(
        "upgrade",
        events.next_matching(|e| matches!(e, StubEvent::Upgraded { .. })),
    )
    .await
    {
        StubEvent::Upgraded { token, verdict, .. } => {
            assert_eq!(token, None);
            assert_eq!(
                verdict,
                TokenVerdict::Rejected {
                    reason: "missing token".to_owned()
                }
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    until_state(&relay, "backing off", |s| {
        matches!(s, LinkState::BackingOff { .. })
    })
    .await;
    relay.close().await;
}

#[tokio::test]
async fn keepalive_pings_and_a_silent_peer_is_declared_dead() {
    let stub = stub().await;
    let mut config = config(&stub);
    config.keepalive.ping_interval = Duration::from_millis(20);
    config.keepalive.dead_after = Duration::from_millis(100);
    let (relay, _inbound) = spawn_connected(config).await;
    let mut events = stub.cursor();
    // Pongs keep it alive well past `dead_after`: many pings on connection 1.
    for _ in 0..10 {
        let ping = within(
            "ping",
            events.next_matching(|e| matches!(e, StubEvent::Ping { .. })),
        )
        .await;
        assert_eq!(
            ping.conn(),
            Some(1),
            "the connection survives while pongs come back"
        );
    }
    // A wedged connector answers nothing: the link gives up and re-dials.
    stub.stall().await.expect("connected");
    within(
        "re-dial",
        events.next_matching(|e| matches!(e, StubEvent::Upgraded { conn: 2, .. })),
    )
    .await;
    connected(&relay).await;
    relay.close().await;
}

#[tokio::test]
async fn a_connector_that_stops_reading_while_we_write_is_declared_dead() {
    let stub = stub().await;
    stub.set_default_answer(Answer::Never);
    let mut config = config(&stub);
    config.keepalive.ping_interval = Duration::from_millis(50);
    config.keepalive.dead_after = Duration::from_millis(300);
    let (relay, _inbound) = spawn_connected(config).await; // outbound timeout: 30 s
    let mut events = stub.cursor();
    stub.stall().await.expect("connected");
    // Far more than the loopback socket buffers hold: the writer blocks in a
    // write, where only the write bound can notice the connector is wedged.
    let chunk = "x".repeat(512 * 1024);
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let relay = relay.clone();
            let chunk = chunk.clone();
            tokio::spawn(async move {
                relay
                    .send(format!("c{i}"), chunk, None, Default::default())
                    .await
            })
        })
        .collect();
    // Frames already queued for the writer may have been written: their
    // callers get the ambiguous `connection_lost`. Frames still waiting for
    // room in the writer's byte budget were never sent: `not_connected`.
    let mut lost = 0;
    for call in calls {
        let result = within("connection-lost result", call).await.expect("task");
        if result == ActionResult::connection_lost() {
            lost += 1;
        } else {
            assert_eq!(result, ActionResult::not_connected());
        }
    }
    assert!(
        lost > 0,
        "the frames in the writer's queue were lost with it"
    );
    within(
        "re-dial",
        events.next_matching(|e| matches!(e, StubEvent::Upgraded { conn: 2, .. })),
    )
    .await;
    connected(&relay).await;
    assert_eq!(relay.pending_len(), 0);
    relay.close().await;
}

#[tokio::test]
async fn a_reader_paused_by_backpressure_does_not_make_the_link_look_dead() {
    let stub = stub().await;
    let mut config = config(&stub);
    config.inbound_capacity = 1;
    config.keepalive.ping_interval = Duration::from_millis(20);
    config.keepalive.dead_after = Duration::from_millis(100);
    let (relay, mut inbound) = spawn_connected(config).await;
    let mut events = stub.cursor_at_end();
    // Nobody reads `inbound`: the first item fills it, the second pauses the
    // reader, and the pongs to our pings pile up unread behind it.
    for i in 0..3 {
        stub.push_text(interrupt_line(&format!("s{i}")))
            .await
            .expect("connected");
    }
    // Well past `dead_after` of pings while the reader is paused.
    for _ in 0..15 {
        let ping = within(
            "ping",
            events.next_matching(|e| matches!(e, StubEvent::Ping { .. })),
        )
        .await;
        assert_eq!(ping.conn(), Some(1), "the paused link is not re-dialled");
    }
    assert!(relay.state().borrow().is_connected());
    for i in 0..3 {
        expect_interrupt(&mut inbound, &format!("s{i}")).await;
    }
    assert_eq!(relay.counters().dials, 1);
    relay.close().await;
}

#[tokio::test]
async fn a_later_descriptor_for_the_default_platform_never_replaces_it() {
    let stub = stub().await;
    let mut first = Descriptor::placeholder("relay");
    first.max_message_length = 1000;
    let mut later = Descriptor::placeholder("relay");
    later.max_message_length = 5;
    let mut other = Descriptor::placeholder("slack");
    other.max_message_length = 40_000;
    stub.set_descriptors(vec![
        descriptor_value(&first),
        descriptor_value(&later),
        descriptor_value(&other),
    ]);
    let (relay, _inbound) = spawn_connected(config(&stub)).await;
    // The slack descriptor is the last one sent: once it is in, so is `later`.
    let slack = within("slack descriptor", async {
        loop {
            if let Some(d) = relay.descriptor_for("slack") {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert_eq!(slack.max_message_length, 40_000);
    let relay_platform = relay
        .descriptor_for("relay")
        .expect("the default's platform");
    assert_eq!(relay_platform.max_message_length, 1000, "the default wins");
    assert_eq!(relay.descriptor().max_message_length, 1000);
    relay.close().await;
}

#[tokio::test]
async fn a_4401_right_after_the_descriptor_counts_as_after_the_handshake() {
    let stub = stub().await;
    stub.set_descriptors(Vec::new());
    let mut config = config(&stub);
    slow_ladder(&mut config);
    let (relay, _inbound) = RelayLink::spawn(config);
    let mut events = stub.cursor();
    let descriptor = format!(
        "{}\n",
        json!({"type": "descriptor", "descriptor": descriptor_value(&Descriptor::placeholder("relay"))})
    );
    for conn in 1..=2 {
        within(
            "hello",
            events.next_frame(|f| matches!(f, GatewayFrame::Hello { .. })),
        )
        .await;
        assert_eq!(stub.current_connection(), Some(conn));
        // Back to back, so both may be read in one poll of the reader.
        stub.push_text(descriptor.clone()).await.expect("connected");
        stub.close(4401, "revoked").await.expect("connected");
    }
    // Two post-handshake 4401s in a row: revoked, not a cold-start retry
    // (which would wait out the 60 s ladder and time this test out).
    assert_eq!(
        until_state(&relay, "Revoked", LinkState::is_final).await,
        LinkState::Revoked
    );
    relay.close().await;
}

#[tokio::test]
async fn the_stub_can_answer_follow_up_like_a_connector_without_a_capability() {
    let stub = stub().await;
    stub.set_answer_for(
        "follow_up",
        Some(Answer::Failure("no capability vaulted".to_owned())),
    );
    let (relay, _inbound) = spawn_connected(config(&stub)).await;
    let result = relay
        .follow_up(
            "agent:main:relay:dm:c",
            "discord.interaction_token",
            "hi",
            Default::default(),
        )
        .await;
    assert!(!result.success, "{result:?}");
    assert_eq!(result.error.as_deref(), Some("no capability vaulted"));
    assert!(
        relay
            .send("c", "hi", None, Default::default())
            .await
            .success,
        "other ops keep the default answer"
    );
    stub.set_answer_for("follow_up", None);
    assert!(
        relay
            .follow_up(
                "agent:main:relay:dm:c",
                "discord.interaction_token",
                "hi",
                Default::default()
            )
            .await
            .success
    );
    relay.close().await;
}
