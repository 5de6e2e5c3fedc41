//! The embedded setup `dev` and `demo` share: a relay connector on loopback
//! (the stub connector: real token auth, a real descriptor, a bounded
//! record) with a fresh gateway id and secret, the gateway dialled to it
//! through the normal path (relay link over a real WebSocket, the plugin
//! host, the gateway loop), and the webhook ingress; plus the one-line
//! renderings of what went over it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hermes_connector::ingress::{HOOK_PATHS, Ingress, IngressConfig, IngressEvent, PlatformClaims};
use hermes_connector::{
    EventCursor, StubConfig, StubConnector, StubEvent, TokenVerdict, descriptor_value,
};
use hermes_gateway_core::{Agent, ExitReason, GatewayConfig, Metrics};
use hermes_plugin_host::{LoadReport, PluginHost};
use hermes_protocol::action::Action;
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::frame::GatewayFrame;
use hermes_protocol::split::LenUnit;
use hermes_transport::{RelayConfig, RelayHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::record::{RecordOptions, Recorder};
use crate::serving;

/// Default log filter of `dev` and `demo`: the live print is the output;
/// logs (stderr) show only what went wrong unless `RUST_LOG` asks for more.
pub const LOG_FILTER: &str = "warn,hermes_plugin_host::table=error";

/// How long the gateway may take to dial and authenticate to the embedded
/// connector (plugins are already loaded by then).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Events the embedded connector remembers: `dev` reads them as they come,
/// so the newest few thousand are plenty, and an all-day session keeps
/// neither every frame nor every bearer token.
const DEV_RECORD_LIMIT: usize = 4096;

/// The running embedded setup shared by `dev` and `demo`.
pub struct DevSetup {
    /// The embedded connector; its record holds every frame the gateway sent.
    pub connector: Arc<StubConnector>,
    /// The webhook ingress.
    pub ingress: Ingress,
    /// Cancels the gateway (graceful drain).
    pub shutdown: CancellationToken,
    /// The generated gateway id the connector authenticated.
    pub gateway_id: String,
    /// The URL the gateway dialled.
    pub dial_url: String,
    /// What the plugin host loaded.
    pub report: LoadReport,
    /// The plugin host serving the conversions.
    pub plugins: PluginHost,
    /// The gateway's counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The relay link, once dialled.
    pub relay: Arc<OnceLock<RelayHandle>>,
    gateway: JoinHandle<ExitReason>,
}

impl DevSetup {
    /// Loads the plugins, starts the embedded connector with a fresh
    /// gateway id and secret, connects the gateway to it through the normal
    /// relay link, waits until the connector has verified the gateway's
    /// token and received its `hello`, then opens the ingress.
    pub async fn start<A: Agent>(
        plugins: &Path,
        policy: Option<PathBuf>,
        agent: A,
        ingress: IngressConfig,
        record: Option<RecordOptions>,
    ) -> anyhow::Result<Self> {
        let (host, report) = serving::load_plugins(plugins, policy).await?;
        serving::log_report(&report);
        if report.loaded.is_empty() {
            tracing::warn!(dir = %plugins.display(), "no plugins loaded: every webhook will be dropped");
        }

        let gateway_id = format!("dev-{}", random_hex(4));
        let secret = random_hex(32);
        let connector = Arc::new(
            StubConnector::start(StubConfig {
                descriptors: vec![descriptor_value(&dev_descriptor())],
                record_limit: Some(DEV_RECORD_LIMIT),
                ..StubConfig::with_secrets([secret.clone()])
            })
            .await
            .context("cannot start the embedded connector")?,
        );
        let mut handshake = connector.cursor();
        let relay = RelayConfig::new(&connector.url(), Some(&gateway_id), Some(&secret), false)
            .map_err(|e| anyhow!("embedded relay settings: {e}"))?;
        let dial_url = relay.dial_url().to_owned();
        let shutdown = CancellationToken::new();
        let config = GatewayConfig {
            going_idle_timeout: Duration::from_secs(2),
            drain_grace: Duration::from_secs(5),
            ..GatewayConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let relay_slot = Arc::new(OnceLock::new());
        let slot = Arc::clone(&relay_slot);
        let gateway = tokio::spawn(serving::serve_relay(
            relay,
            serving::PluginConverter {
                plugins: host.clone(),
                recorder: record.map(Recorder::start).transpose()?,
            },
            agent,
            config,
            Arc::clone(&metrics),
            shutdown.clone(),
            move |handle| {
                let _ = slot.set(handle.clone());
            },
        ));

        tokio::time::timeout(CONNECT_TIMEOUT, wait_for_hello(&mut handshake))
            .await
            .map_err(|_| anyhow!("the gateway did not connect to the embedded connector within {CONNECT_TIMEOUT:?}"))??;

        // Every platform a loaded plugin claims is served under
        // `/hooks/<platform>/…`, asked per request so a reload counts.
        let mut ingress = ingress;
        let claimer = host.clone();
        ingress.claims = Some(PlatformClaims::new(move |p| claimer.claims_platform(p)));
        let ingress = Ingress::start(ingress, Arc::clone(&connector)).await?;
        Ok(Self {
            connector,
            ingress,
            shutdown,
            gateway_id,
            dial_url,
            report,
            plugins: host,
            metrics,
            relay: relay_slot,
            gateway,
        })
    }

    /// Serves until [`DevSetup::shutdown`] fires (or the gateway stops on
    /// its own), then stops the ingress so nothing arrives mid-drain and
    /// waits for the gateway's drain.
    pub async fn finish(mut self) -> anyhow::Result<ExitReason> {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            exit = &mut self.gateway => return exit.context("the gateway task panicked"),
        }
        drop(self.ingress);
        self.gateway.await.context("the gateway task panicked")
    }
}

/// Waits until the connector accepted an upgrade and got a `hello` on it.
async fn wait_for_hello(cursor: &mut EventCursor) -> anyhow::Result<()> {
    loop {
        match cursor.next().await {
            StubEvent::Upgraded {
                verdict: TokenVerdict::Rejected { reason },
                ..
            } => {
                bail!("the embedded connector rejected the gateway's token: {reason}")
            }
            StubEvent::Frame {
                frame: GatewayFrame::Hello { .. },
                ..
            } => return Ok(()),
            _ => {}
        }
    }
}

/// What the embedded connector says it can do: a generic relay with the
/// common ops, Discord's message limit.
pub fn dev_descriptor() -> Descriptor {
    Descriptor {
        label: "Hermes dev connector".to_owned(),
        max_message_length: 2000,
        supports_threads: true,
        markdown_dialect: "markdown".to_owned(),
        len_unit: LenUnit::Chars,
        supported_ops: ["send", "edit", "typing", "follow_up", "get_chat_info"]
            .map(str::to_owned)
            .to_vec(),
        ..Descriptor::placeholder("relay")
    }
}

/// `n` random bytes (the OS-seeded thread RNG), as lowercase hex.
fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `name version [platforms], …` for the banner.
pub fn plugin_list(report: &LoadReport) -> String {
    if report.loaded.is_empty() {
        return "(none loaded)".to_owned();
    }
    report
        .loaded
        .iter()
        .map(|p| format!("{} {} [{}]", p.name, p.version, p.platforms.join(",")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line for an outbound action: `→ op target… "content"` with the
/// content as a JSON string (escapes keep it on one line).
pub fn describe_action(action: &Action) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    match action {
        Action::Send {
            chat_id,
            content,
            reply_to,
            ..
        } => {
            let reply = reply_to
                .as_ref()
                .map(|id| format!(" (reply_to {id})"))
                .unwrap_or_default();
            format!("→ send {chat_id} {}{reply}", quote(content))
        }
        Action::FollowUp {
            session_key,
            kind,
            content,
            ..
        } => {
            format!("→ follow_up {kind} {session_key} {}", quote(content))
        }
        Action::Edit {
            chat_id,
            message_id,
            content,
            ..
        } => {
            format!("→ edit {chat_id} {message_id} {}", quote(content))
        }
        Action::Typing {
            chat_id,
            content: None,
            ..
        } => format!("· typing {chat_id}"),
        Action::Typing {
            chat_id,
            content: Some(status),
            ..
        } if status.is_empty() => {
            format!("· typing {chat_id} cleared")
        }
        Action::Typing {
            chat_id,
            content: Some(status),
            ..
        } => format!("· typing {chat_id} {}", quote(status)),
        Action::GetChatInfo { chat_id } => format!("→ get_chat_info {chat_id}"),
    }
}

/// The hook paths the ingress serves now: its fixed ones, then
/// `/hooks/<platform>/…` for every platform a loaded plugin claims.
pub fn hook_paths(host: &PluginHost) -> Vec<String> {
    let mut platforms: Vec<String> = host
        .plugins()
        .into_iter()
        .flat_map(|p| p.platforms)
        .collect();
    platforms.sort();
    platforms.dedup();
    HOOK_PATHS
        .iter()
        .map(|p| (*p).to_owned())
        .chain(platforms.iter().map(|p| format!("/hooks/{p}/…")))
        .collect()
}

/// The lines `dev` prints for a reload: what changed, what was refused
/// and why.
pub fn describe_reload(report: &LoadReport) -> Vec<String> {
    let c = &report.changes;
    let mut changed = Vec::new();
    for (what, names) in [
        ("added", &c.added),
        ("replaced", &c.replaced),
        ("removed", &c.removed),
    ] {
        if !names.is_empty() {
            changed.push(format!("{what} {}", names.join(", ")));
        }
    }
    if c.policy_changed {
        changed.push("policy changed".to_owned());
    }
    let summary = if changed.is_empty() {
        "nothing changed".to_owned()
    } else {
        changed.join("; ")
    };
    let mut lines = vec![format!("⟳ plugins reloaded: {summary}")];
    lines.extend(report.errors.iter().map(|e| format!("  refused: {e}")));
    lines
}

/// One line for a webhook the ingress handled.
pub fn describe_request(event: &IngressEvent) -> String {
    match event {
        IngressEvent::Forwarded {
            platform,
            path,
            bytes,
            answer,
        } => {
            let answer = if answer.is_empty() { "(empty)" } else { answer };
            format!("← {platform} POST {path} ({bytes} bytes) answered 200 {answer}")
        }
        IngressEvent::Refused {
            method,
            path,
            status,
            reason,
        } => {
            format!("← {method} {path} refused {status}: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn actions_read_as_one_line_each() {
        let follow_up = Action::FollowUp {
            session_key: "agent:main:discord:group:2:3".into(),
            kind: "discord.interaction_token".into(),
            content: "two\nlines".into(),
            metadata: Map::new(),
        };
        assert_eq!(
            describe_action(&follow_up),
            r#"→ follow_up discord.interaction_token agent:main:discord:group:2:3 "two\nlines""#
        );
        let send = Action::Send {
            chat_id: "+15555550123".into(),
            content: "hi".into(),
            reply_to: Some("SM1".into()),
            metadata: Map::new(),
        };
        assert_eq!(
            describe_action(&send),
            r#"→ send +15555550123 "hi" (reply_to SM1)"#
        );
        let clear = Action::Typing {
            chat_id: "c".into(),
            content: Some(String::new()),
            metadata: Map::new(),
        };
        assert_eq!(describe_action(&clear), "· typing c cleared");
    }

    #[test]
    fn descriptor_is_valid_on_the_wire() {
        let wire = descriptor_value(&dev_descriptor());
        let parsed = Descriptor::from_value(wire).expect("the dev descriptor parses");
        assert_eq!(parsed, dev_descriptor());
        assert!(parsed.supports_op("typing") && parsed.supports_op("follow_up"));
    }

    #[test]
    fn random_ids_differ() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16));
    }
}
