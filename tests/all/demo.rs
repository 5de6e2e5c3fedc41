//! `hermes-gateway demo` and `dev`, run for real: the binary with the
//! compiled first-party plugins, its embedded connector, the WebSocket link
//! and the HTTP ingress. Expected texts come from the native first-party
//! converters run on the same sample files (and, for `dev`, from the corpus
//! manifest), never from the binary's own output.
//!
//! The binary is located (built once if need be) by `support::binary`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use hermes_converter_sdk::{Converter, MessageEvent, Outcome, ReplyRoute, Request};
use hermes_plugin_discord::DiscordInteractions;
use hermes_plugin_slack::Slack;
use hermes_plugin_twilio::Twilio;
use serde_json::Value;

use crate::support::{LINE_TIMEOUT, gateway, http_get, http_post, plugins_dir, wait_line};

/// A plugins directory with the three compiled first-party converters.
fn first_party_plugins(parent: &Path) -> PathBuf {
    plugins_dir(
        parent,
        &[
            hermes_plugin_artifacts::DISCORD,
            hermes_plugin_artifacts::TWILIO,
            hermes_plugin_artifacts::SLACK,
        ],
    )
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

/// `(file, platform, hook path, content type)` of every sample payload.
const EXAMPLES: [(&str, &str, &str, &str); 8] = [
    (
        "discord-slash-command.json",
        "discord",
        "/hooks/discord/interactions",
        "application/json",
    ),
    (
        "discord-button.json",
        "discord",
        "/hooks/discord/interactions",
        "application/json",
    ),
    (
        "discord-modal-submit.json",
        "discord",
        "/hooks/discord/interactions",
        "application/json",
    ),
    (
        "twilio-sms.form",
        "twilio",
        "/hooks/twilio/messaging",
        "application/x-www-form-urlencoded",
    ),
    (
        "twilio-whatsapp-button.form",
        "twilio",
        "/hooks/twilio/messaging",
        "application/x-www-form-urlencoded",
    ),
    (
        "twilio-sms-story.form",
        "twilio",
        "/hooks/twilio/messaging",
        "application/x-www-form-urlencoded",
    ),
    (
        "twilio-sms-slow.form",
        "twilio",
        "/hooks/twilio/messaging",
        "application/x-www-form-urlencoded",
    ),
    (
        "slack-command.form",
        "slack",
        "/hooks/slack/commands",
        "application/x-www-form-urlencoded",
    ),
];

/// The one event the native first-party converter makes of a sample file.
fn native_event(file: &str) -> MessageEvent {
    let (_, platform, path, content_type) = EXAMPLES
        .iter()
        .find(|(f, ..)| *f == file)
        .unwrap_or_else(|| panic!("{file} is not a known example"));
    let request = Request {
        platform: (*platform).to_owned(),
        bot_id: String::new(),
        method: "POST".to_owned(),
        path: (*path).to_owned(),
        headers: vec![("content-type".to_owned(), (*content_type).to_owned())],
        body: std::fs::read(examples_dir().join(file)).expect("read example"),
        profile: None,
    };
    let outcome = match *platform {
        "discord" => DiscordInteractions::convert(&request, &()),
        "twilio" => Twilio::convert(&request, &()),
        _ => Slack::convert(&request, &()),
    };
    match outcome {
        Outcome::Events(mut events) if events.len() == 1 => events.remove(0),
        other => panic!("{file}: expected one event, got {other:?}"),
    }
}

#[test]
fn examples_convert_with_the_first_party_converters() {
    for (file, platform, ..) in EXAMPLES {
        let event = native_event(file);
        let expected_route = match platform {
            "discord" => ReplyRoute::FollowUp("discord.interaction_token".to_owned()),
            "slack" => ReplyRoute::FollowUp("slack.response_url".to_owned()),
            _ => ReplyRoute::Send,
        };
        assert_eq!(event.reply_route, expected_route, "{file}");
        assert!(!event.text.is_empty(), "{file}: empty text");
    }
    // Every file in docs/examples is one of the above and is in its README.
    let readme =
        std::fs::read_to_string(examples_dir().join("README.md")).expect("docs/examples/README.md");
    for entry in std::fs::read_dir(examples_dir()).expect("read docs/examples") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name == "README.md" {
            continue;
        }
        assert!(
            EXAMPLES.iter().any(|(f, ..)| *f == name),
            "{name} is not covered by this test"
        );
        assert!(
            readme.contains(&name),
            "{name} is not listed in docs/examples/README.md"
        );
    }
}

/// An action line of the live print: `→ op …`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Printed {
    FollowUp {
        kind: String,
        session_key: String,
        content: String,
    },
    Send {
        chat_id: String,
        content: String,
        reply_to: Option<String>,
    },
    Other(String),
}

/// The first JSON string of `s` and what follows it.
fn json_string(s: &str) -> (String, &str) {
    let mut stream = serde_json::Deserializer::from_str(s).into_iter::<String>();
    let value = stream
        .next()
        .unwrap_or_else(|| panic!("no JSON string in {s:?}"))
        .unwrap_or_else(|e| panic!("bad JSON string in {s:?}: {e}"));
    let rest = s.get(stream.byte_offset()..).unwrap_or("");
    (value, rest)
}

fn parse_action(line: &str) -> Option<Printed> {
    let rest = line.trim_start().strip_prefix("→ ")?;
    let (op, rest) = rest.split_once(' ')?;
    Some(match op {
        "follow_up" => {
            let (kind, rest) = rest.split_once(' ')?;
            let (session_key, rest) = rest.split_once(' ')?;
            let (content, _) = json_string(rest);
            Printed::FollowUp {
                kind: kind.to_owned(),
                session_key: session_key.to_owned(),
                content,
            }
        }
        "send" => {
            let (chat_id, rest) = rest.split_once(' ')?;
            let (content, tail) = json_string(rest);
            let reply_to = tail
                .trim()
                .strip_prefix("(reply_to ")
                .and_then(|t| t.strip_suffix(')'))
                .map(str::to_owned);
            Printed::Send {
                chat_id: chat_id.to_owned(),
                content,
                reply_to,
            }
        }
        _ => Printed::Other(line.to_owned()),
    })
}

/// The demo's output cut into steps: (header line, lines under it).
fn steps(stdout: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in stdout.lines() {
        let is_header =
            line.starts_with('[') && line.split_once(']').is_some_and(|(n, _)| n.contains('/'));
        if is_header {
            steps.push((line.to_owned(), Vec::new()));
        } else if line.starts_with("  ")
            && let Some((_, lines)) = steps.last_mut()
        {
            lines.push(line.to_owned());
        }
    }
    steps
}

fn discord_key(event: &MessageEvent) -> String {
    // relay-contract §5.3: group chat, per-user sessions by default.
    let user = event
        .source
        .user_id
        .as_deref()
        .expect("discord event has a user");
    format!("agent:main:discord:group:{}:{user}", event.source.chat_id)
}

#[test]
fn demo_plays_the_script_and_exits_zero() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = first_party_plugins(home.path());
    let output = gateway(home.path())
        .args(["demo", "--plugins"])
        .arg(&plugins)
        .output()
        .expect("spawn hermes-gateway demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let steps = steps(&stdout);
    let files: Vec<&str> = steps
        .iter()
        .map(|(header, _)| {
            let start = header
                .rfind("docs/examples/")
                .expect("step names its sample");
            header
                .get(start + "docs/examples/".len()..)
                .unwrap_or("")
                .trim_end_matches(')')
        })
        .collect();
    assert_eq!(
        files,
        [
            "discord-slash-command.json",
            "discord-button.json",
            "discord-modal-submit.json",
            "twilio-sms.form",
            "twilio-whatsapp-button.form",
            "twilio-sms-story.form",
            "twilio-sms-slow.form"
        ],
        "steps in order\n{stdout}"
    );

    let actions_of =
        |i: usize| -> Vec<Printed> { steps[i].1.iter().filter_map(|l| parse_action(l)).collect() };
    for (i, file) in files.iter().enumerate().take(3) {
        let event = native_event(file);
        assert_eq!(
            actions_of(i),
            [Printed::FollowUp {
                kind: "discord.interaction_token".to_owned(),
                session_key: discord_key(&event),
                content: event.text.clone(),
            }],
            "{file}\n{stdout}"
        );
    }
    for (i, file) in files.iter().enumerate().take(5).skip(3) {
        let event = native_event(file);
        assert_eq!(
            actions_of(i),
            [Printed::Send {
                chat_id: event.source.chat_id.clone(),
                content: event.text.clone(),
                reply_to: event.message_id.clone(),
            }],
            "{file}\n{stdout}"
        );
    }

    // The streamed reply: one send, then edits of that message, each showing
    // more of the reply than the one before (the demo itself waits for the
    // edit showing the agent's whole text, or fails).
    let streamed: Vec<&str> = steps[5]
        .1
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("→ "))
        .collect();
    assert!(
        streamed.len() >= 2,
        "a send and at least one edit\n{stdout}"
    );
    assert!(streamed[0].starts_with("→ send +15555550166 "), "{stdout}");
    let shown = |line: &str| -> String {
        let start = line.find('"').expect("quoted content");
        let end = line.rfind('"').expect("quoted content");
        line.get(start + 1..end).unwrap_or_default().to_owned()
    };
    let mut previous = shown(streamed[0]);
    for line in &streamed[1..] {
        assert!(line.starts_with("→ edit +15555550166 "), "{line}\n{stdout}");
        let now = shown(line);
        assert!(
            now.starts_with(&previous) && now.len() > previous.len(),
            "each edit shows more: {previous:?} then {now:?}"
        );
        previous = now;
    }

    // The slow turn: interrupted by the connector, and no reply to it at all.
    let slow = native_event("twilio-sms-slow.form");
    let slow_key = format!(
        "agent:main:{}:dm:{}",
        slow.source.platform, slow.source.chat_id
    );
    let slow_lines = &steps[6].1;
    assert_eq!(
        actions_of(6),
        [],
        "the interrupted turn printed an action\n{stdout}"
    );
    assert!(
        slow_lines
            .iter()
            .any(|l| l.trim() == format!("← interrupt_inbound {slow_key}")),
        "no interrupt for {slow_key}\n{stdout}"
    );
    assert!(
        slow_lines.iter().any(|l| l.contains("interrupted")),
        "{stdout}"
    );
    let slow_replies: Vec<Printed> = stdout
        .lines()
        .filter_map(parse_action)
        .filter(|p| match p {
            Printed::FollowUp { content, .. } | Printed::Send { content, .. } => {
                *content == slow.text
            }
            Printed::Other(_) => false,
        })
        .collect();
    assert_eq!(slow_replies, [], "{stdout}");
}

/// Kills the child (by its own pid) if a test ends before stopping it.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn dev_forwards_a_real_discord_body_and_prints_the_follow_up() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = first_party_plugins(home.path());
    let child = gateway(home.path())
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--plugins",
        ])
        .arg(&plugins)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn hermes-gateway dev");
    let mut guard = ChildGuard(Some(child));
    let stdout = guard
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();

    let banner = wait_line(&lines, &mut seen, |l| {
        l.trim_start().starts_with("ingress ")
    });
    let addr: SocketAddr = banner
        .split_whitespace()
        .find_map(|t| t.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ingress address in {banner:?}"));
    let admin_line = wait_line(&lines, &mut seen, |l| l.trim_start().starts_with("admin "));
    let admin: SocketAddr = admin_line
        .split_whitespace()
        .find_map(|t| t.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {admin_line:?}"));

    // The case as the corpus describes it: its body and its headers.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(corpus.join("manifest.json")).expect("manifest"),
    )
    .expect("JSON");
    let case = manifest["cases"]
        .as_array()
        .and_then(|cases| {
            cases
                .iter()
                .find(|c| c["file"] == "discord/guild_slash_simple.json")
        })
        .expect("guild_slash_simple in the manifest");
    let headers: Vec<(String, String)> = case["forward"]["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
        .filter(|(name, _)| name != "content-length")
        .collect();
    let body = std::fs::read(corpus.join("discord/guild_slash_simple.json")).expect("corpus body");
    let path = case["forward"]["path"].as_str().expect("path");

    let (status, answer) = http_post(addr, path, &headers, &body);
    assert_eq!(
        (status, answer.as_str()),
        (200, r#"{"type":5}"#),
        "the deferred ACK"
    );

    let expected = &case["expect"]["events"][0];
    let text = expected["text"].as_str().expect("expected text");
    let chat = expected["source"]["chat_id"].as_str().expect("chat id");
    let user = expected["source"]["user_id"].as_str().expect("user id");
    let line = wait_line(&lines, &mut seen, |l| l.starts_with("→ "));
    assert_eq!(
        parse_action(&line),
        Some(Printed::FollowUp {
            kind: "discord.interaction_token".to_owned(),
            session_key: format!("agent:main:discord:group:{chat}:{user}"),
            content: text.to_owned(),
        }),
        "{line}"
    );

    // `dev --admin`: the same endpoints as `run`; the conversion was timed.
    let (status, ready) = http_get(admin, "/readyz");
    let ready: Value = serde_json::from_str(&ready).expect("readyz JSON");
    assert_eq!(
        (status, ready),
        (
            200,
            serde_json::json!({"ready": true, "state": "connected"})
        )
    );
    let (_, metrics) = http_get(admin, "/metrics");
    let converted = crate::support::Metrics::parse(&metrics).histogram_count(
        "hermes_gateway_conversion_seconds",
        &[("outcome", "events")],
    );
    assert!(converted.is_some_and(|n| n >= 1.0), "{metrics}");

    // Ctrl-C: graceful drain, exit 0.
    let mut child = guard.0.take().expect("child");
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT failed");
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let Ok(exit) = done.recv_timeout(LINE_TIMEOUT) else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!(
            "dev did not exit within {LINE_TIMEOUT:?} of SIGINT; output:\n{}",
            seen.join("\n")
        );
    };
    let exit = exit.expect("wait for dev");
    assert_eq!(
        exit.code(),
        Some(0),
        "dev exit after SIGINT; output:\n{}",
        seen.join("\n")
    );
}
