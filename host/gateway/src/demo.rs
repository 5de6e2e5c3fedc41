//! `demo`: the `dev` setup playing a script of sample webhooks over real
//! HTTP to its own ingress, printing each request and the action it caused.
//!
//! The samples are the files in `docs/examples/` (compiled in, so the binary
//! runs from anywhere). The agent is a small in-process one: it echoes,
//! except that a text starting with `/slow` waits until the turn is
//! cancelled — that makes the interrupt step deterministic — and one
//! starting with `/story` writes a short story a few words at a time, so
//! the reply is seen growing (a `send`, then `edit`s). Every wait is on an
//! event (the connector's record, the agent's signal), bounded by
//! `--timeout`; a missing reply exits 1 naming the step.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hermes_connector::ingress::IngressConfig;
use hermes_connector::{EventCursor, StubEvent};
use hermes_gateway_core::{Agent, AgentError, ExitReason, ReplySink, TurnInput};
use hermes_protocol::action::Action;
use hermes_protocol::frame::{ConnectorFrame, GatewayFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::args::{DemoArgs, LogFormat};
use crate::embedded::{self, DevSetup};

/// Texts starting with this make the demo agent wait until interrupted.
pub const SLOW_PREFIX: &str = "/slow";

/// Texts starting with this make the demo agent stream [`STORY`].
pub const STORY_PREFIX: &str = "/story";

/// What the demo agent streams, a few words at a time.
pub const STORY: &str = "A firing starts slow: the kiln climbs a hundred degrees an hour while the last water leaves the clay. Past six hundred the glaze begins to move, and by cone six it has melted into glass. Then the hardest part: waiting a full day for it to cool.";

/// The pause between two pieces of [`STORY`]: slow enough to see it grow.
const STORY_PACE: Duration = Duration::from_millis(150);

/// Echoes, except that a `/slow…` turn reports its session and then waits
/// for cancellation (and so never replies).
#[derive(Debug)]
pub struct DemoAgent {
    slow_started: mpsc::UnboundedSender<(String, String)>,
}

impl Agent for DemoAgent {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn streams(&self) -> bool {
        true
    }

    async fn respond_streaming(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
        sink: ReplySink,
    ) -> Result<String, AgentError> {
        if !turn.event.text.starts_with(STORY_PREFIX) {
            return self.respond(turn, cancel).await;
        }
        for piece in STORY.split_inclusive(' ').collect::<Vec<_>>().chunks(3) {
            tokio::select! {
                () = cancel.cancelled() => return Err(AgentError::Cancelled),
                () = tokio::time::sleep(STORY_PACE) => {}
            }
            sink.push(&piece.concat());
        }
        Ok(STORY.to_owned())
    }

    async fn respond(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
    ) -> Result<String, AgentError> {
        let text = &turn.event.text;
        if text.starts_with(SLOW_PREFIX) {
            let chat_id = turn.event.source.chat_id.clone();
            let _ = self
                .slow_started
                .send((turn.session_key.as_str().to_owned(), chat_id));
            cancel.cancelled().await;
            return Err(AgentError::Cancelled);
        }
        Ok(if text.is_empty() {
            "(empty)".to_owned()
        } else {
            text.clone()
        })
    }
}

/// What a step waits for after its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The agent's reply: the next outbound action that is not `typing`.
    Reply,
    /// A slow turn, interrupted by the connector (`interrupt_inbound`).
    Interrupt,
    /// A streamed reply: every action until one shows the whole [`STORY`].
    Stream,
}

/// One scripted webhook.
struct Step {
    title: &'static str,
    file: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    expect: Expect,
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

macro_rules! example {
    ($file:literal) => {
        (
            concat!("docs/examples/", $file),
            include_bytes!(concat!("../../../docs/examples/", $file)).as_slice(),
        )
    };
}

fn script() -> Vec<Step> {
    let step =
        |title, (file, body): (&'static str, &'static [u8]), path, content_type, expect| Step {
            title,
            file,
            path,
            content_type,
            body,
            expect,
        };
    vec![
        step(
            "Discord slash command with a sub-command",
            example!("discord-slash-command.json"),
            "/hooks/discord/interactions",
            JSON,
            Expect::Reply,
        ),
        step(
            "Discord button",
            example!("discord-button.json"),
            "/hooks/discord/interactions",
            JSON,
            Expect::Reply,
        ),
        step(
            "Discord modal submit",
            example!("discord-modal-submit.json"),
            "/hooks/discord/interactions",
            JSON,
            Expect::Reply,
        ),
        step(
            "Twilio SMS",
            example!("twilio-sms.form"),
            "/hooks/twilio/messaging",
            FORM,
            Expect::Reply,
        ),
        step(
            "WhatsApp button reply",
            example!("twilio-whatsapp-button.form"),
            "/hooks/twilio/messaging",
            FORM,
            Expect::Reply,
        ),
        step(
            "A streamed reply, growing as the agent writes",
            example!("twilio-sms-story.form"),
            "/hooks/twilio/messaging",
            FORM,
            Expect::Stream,
        ),
        step(
            "A slow turn, interrupted by the connector",
            example!("twilio-sms-slow.form"),
            "/hooks/twilio/messaging",
            FORM,
            Expect::Interrupt,
        ),
    ]
}

/// Runs `hermes-gateway demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(LogFormat::Human, embedded::LOG_FILTER);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(play(args));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn play(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (slow_started, mut slow_turns) = mpsc::unbounded_channel();
    let loopback = IngressConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let agent = DemoAgent { slow_started };
    let setup = DevSetup::start(&args.plugins, None, agent, loopback, None).await?;
    crate::serving::drain_on_signals(setup.shutdown.clone(), None)?;
    // Fail at once, not after a reply timeout, when a converter is missing.
    for platform in ["discord", "twilio"] {
        if !setup
            .report
            .loaded
            .iter()
            .any(|p| p.platforms.iter().any(|q| q == platform))
        {
            setup.shutdown.cancel();
            let _ = setup.finish().await;
            bail!(
                "no plugin in {} converts {platform}: the demo needs the first-party Discord and Twilio converters",
                args.plugins.display()
            );
        }
    }

    println!("hermes-gateway demo");
    println!(
        "  connector  {}  (embedded; gateway {} authenticated)",
        setup.dial_url, setup.gateway_id
    );
    println!("  plugins    {}", embedded::plugin_list(&setup.report));
    println!(
        "  agent      demo (echo; {STORY_PREFIX} streams a story; {SLOW_PREFIX} waits until interrupted)"
    );
    println!("  ingress    {}", setup.ingress.url());

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .context("cannot build the HTTP client")?;
    let mut cursor = setup.connector.cursor_at_end();
    let steps = script();
    let total = steps.len();
    let mut replies = 0;
    let mut interrupted = 0;
    let mut failure = None;
    for (n, step) in steps.iter().enumerate() {
        println!();
        println!("[{}/{total}] {}  ({})", n + 1, step.title, step.file);
        let outcome = async {
            post(&client, &setup.ingress.url(), step).await?;
            match step.expect {
                Expect::Reply => {
                    let action = tokio::time::timeout(timeout, next_reply(&mut cursor))
                        .await
                        .map_err(|_| anyhow!("no reply within {timeout:?}"))?;
                    println!("  {}", embedded::describe_action(&action));
                    replies += 1;
                }
                Expect::Stream => {
                    let streamed = async {
                        loop {
                            let action = next_reply(&mut cursor).await;
                            println!("  {}", embedded::describe_action(&action));
                            if let Action::Send { content, .. } | Action::Edit { content, .. } =
                                &action
                                && content == STORY
                            {
                                return;
                            }
                        }
                    };
                    tokio::time::timeout(timeout, streamed).await.map_err(|_| {
                        anyhow!("the streamed reply did not finish within {timeout:?}")
                    })?;
                    replies += 1;
                }
                Expect::Interrupt => {
                    let (session_key, chat_id) = tokio::time::timeout(timeout, slow_turns.recv())
                        .await
                        .map_err(|_| anyhow!("the slow turn did not start within {timeout:?}"))?
                        .ok_or_else(|| anyhow!("the demo agent is gone"))?;
                    println!("  … turn running for {session_key}");
                    println!("  ← interrupt_inbound {session_key}");
                    let frame = ConnectorFrame::InterruptInbound {
                        session_key,
                        chat_id: chat_id.clone(),
                    };
                    setup
                        .connector
                        .push_frame(&frame)
                        .await
                        .map_err(|e| anyhow!("{e}"))?;
                    // The gateway clears the typing indicator of exactly the
                    // turn it cancelled: the connector-visible proof.
                    tokio::time::timeout(timeout, typing_cleared(&mut cursor, &chat_id))
                        .await
                        .map_err(|_| {
                            anyhow!("the gateway did not cancel the turn within {timeout:?}")
                        })?;
                    println!("  ✗ turn interrupted: no reply");
                    interrupted += 1;
                }
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = outcome {
            failure = Some(anyhow!("step {}/{total} ({}): {e:#}", n + 1, step.title));
            break;
        }
    }

    println!();
    setup.shutdown.cancel();
    let connector = std::sync::Arc::clone(&setup.connector);
    let exit = setup.finish().await?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    // Drained: any reply the interrupted turn could still have sent is in
    // the record by now.
    if let Some(content) = slow_replies(&connector.events()) {
        bail!("the interrupted turn replied anyway: {content:?}");
    }
    match exit {
        ExitReason::Shutdown(_) => {
            println!(
                "demo done: {total} requests, {replies} replies, {interrupted} interrupted turn; drained"
            );
            Ok(ExitCode::SUCCESS)
        }
        ExitReason::Revoked | ExitReason::LinkClosed => {
            bail!("the link to the embedded connector ended unexpectedly ({exit:?})")
        }
    }
}

/// POSTs one step to the ingress and prints the exchange.
async fn post(client: &reqwest::Client, base: &str, step: &Step) -> anyhow::Result<()> {
    let response = client
        .post(format!("{base}{}", step.path))
        .header("content-type", step.content_type)
        .body(step.body)
        .send()
        .await
        .with_context(|| format!("POST {}", step.path))?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    let shown = if answer.is_empty() {
        "(empty)"
    } else {
        answer.as_str()
    };
    println!(
        "  POST {} ({} bytes) → {} {shown}",
        step.path,
        step.body.len(),
        status.as_u16()
    );
    if !status.is_success() {
        bail!("the ingress answered {status}: {answer}");
    }
    Ok(())
}

/// The next outbound action that is not `typing`.
async fn next_reply(cursor: &mut EventCursor) -> Action {
    loop {
        let (_, frame) = cursor
            .next_frame(|f| matches!(f, GatewayFrame::Outbound { action, .. } if !matches!(action, Action::Typing { .. })))
            .await;
        if let GatewayFrame::Outbound { action, .. } = frame {
            return action;
        }
    }
}

/// Waits for the `typing` action that clears `chat_id`'s indicator.
async fn typing_cleared(cursor: &mut EventCursor, chat_id: &str) {
    cursor
        .next_frame(|f| {
            matches!(f, GatewayFrame::Outbound { action: Action::Typing { chat_id: c, content: Some(s), .. }, .. }
                if c == chat_id && s.is_empty())
        })
        .await;
}

/// The content of any reply to a `/slow` turn in `events`.
fn slow_replies(events: &[StubEvent]) -> Option<String> {
    events
        .iter()
        .filter_map(StubEvent::frame)
        .find_map(|frame| match frame {
            GatewayFrame::Outbound {
                action: Action::Send { content, .. } | Action::FollowUp { content, .. },
                ..
            } if content.starts_with(SLOW_PREFIX) => Some(content.clone()),
            _ => None,
        })
}
