//! `dev`: the whole system on one machine, with no connector account.
//!
//! An embedded relay connector (the stub connector: real token auth, a real
//! descriptor) listens on `127.0.0.1:0` with a freshly generated gateway id
//! and secret; the gateway dials it through the normal path (the relay link
//! over a real WebSocket, the plugin host, the gateway loop); an HTTP
//! ingress takes raw platform webhooks on `--listen` and forwards them as
//! `passthrough_forward` frames. Every outbound action the gateway sends is
//! printed as it arrives and answered with success and a fake message id.
//!
//! The ingress verifies no platform signature, so it binds loopback only
//! unless `--allow-non-loopback` is given.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hermes_connector::EventCursor;
use hermes_connector::ingress::IngressConfig;
use hermes_gateway_core::ExitReason;
use hermes_gateway_core::agent::{AgentBackend, AgentSpec};
use hermes_protocol::action::Action;
use hermes_protocol::frame::GatewayFrame;

use crate::admin;
use crate::args::{DevArgs, LogFormat};
use crate::embedded::{
    DevSetup, LOG_FILTER, describe_action, describe_reload, describe_request, hook_paths,
    plugin_list,
};
use crate::record::RecordOptions;
use crate::serving;
use crate::settings::{AgentSettings, EnvLayers};

/// Runs `hermes-gateway dev` until SIGINT/SIGTERM, then drains and exits 0.
pub fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    // Checked before anything starts (the ingress checks again when it binds).
    if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
        bail!(
            "refusing to listen on {}: the dev ingress verifies no platform signature, so it listens on loopback only; pass --allow-non-loopback to listen elsewhere",
            args.listen
        );
    }
    let spec: AgentSpec = args.agent.parse().map_err(|e| anyhow!("--agent: {e}"))?;
    // The agent's key and `exec:` environment come from the process
    // environment over the env file, exactly as for `run`.
    let env = EnvLayers::load(None)?;
    let admin = match &args.admin {
        Some(addr) => Some(admin::AdminOptions::resolve(
            addr,
            false,
            None,
            env.get_nonblank(admin::TOKEN_ENV),
        )?),
        None => None,
    };
    crate::logging::init(LogFormat::Human, LOG_FILTER);
    let agent = serving::agent_backend(
        &AgentSettings::from_env(args.agent.clone(), None, &env)?,
        &spec,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(args, agent, admin));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn serve(
    args: DevArgs,
    agent: AgentBackend,
    admin: Option<admin::AdminOptions>,
) -> anyhow::Result<ExitCode> {
    let mut ingress = IngressConfig::new(args.listen);
    ingress.allow_non_loopback = args.allow_non_loopback;
    let record = RecordOptions::from_flags(&args.record, true)?;
    let setup = DevSetup::start(&args.plugins, args.policy.clone(), agent, ingress, record).await?;
    // Everything printed from here on is watched from before the banner: a
    // client may act on the banner's addresses at once, and what it causes
    // must not slip past printers that did not exist yet.
    let actions = setup.connector.cursor_at_end();
    let mut requests = setup.ingress.subscribe();
    let mut reloads = setup.plugins.subscribe_reloads();

    // The author's loop: a rebuilt `.wasm` or an edited policy is picked
    // up on its own (or on SIGHUP), as `run` does, and each reload printed.
    serving::drain_on_signals(setup.shutdown.clone(), Some(setup.plugins.clone()))?;
    let _watch = serving::watch_plugins(&setup.plugins);
    args.shadow.apply(&setup.plugins)?;
    let reload_printer = tokio::spawn(async move {
        loop {
            match reloads.recv().await {
                Ok(report) => {
                    for line in describe_reload(&report) {
                        println!("{line}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("… {n} reloads not shown")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    // The admin endpoints, as for `run`, over the embedded setup; they serve
    // through the drain and stop when this function returns.
    let admin = match admin {
        Some(options) => {
            let state = admin::AdminState {
                metrics: Arc::clone(&setup.metrics),
                plugins: setup.plugins.clone(),
                relay: Arc::clone(&setup.relay),
                draining: setup.shutdown.clone(),
            };
            Some(admin::start(options, state).await?)
        }
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|a| a.addr);

    let base = setup.ingress.url();
    println!("hermes-gateway dev");
    println!(
        "  connector  {}  (embedded; gateway {} authenticated with a fresh secret)",
        setup.dial_url, setup.gateway_id
    );
    println!("  plugins    {}", plugin_list(&setup.report));
    println!("  agent      {}", args.agent);
    println!("  ingress    {base}");
    if let Some(addr) = admin_addr {
        println!("  admin      http://{addr}  (/healthz /readyz /metrics /plugins, POST /reload)");
    }
    if !setup.ingress.addr().ip().is_loopback() {
        println!("  WARNING    listening beyond loopback: platform signatures are NOT verified");
    }
    println!("  hooks      POST {}", hook_paths(&setup.plugins).join(" "));
    println!("try:");
    println!(
        "  curl -sS -H 'content-type: application/json' --data-binary @docs/examples/discord-slash-command.json {base}/hooks/discord/interactions"
    );
    println!("Ctrl-C drains and exits.");

    let printer = tokio::spawn(print_actions(actions, args.show_typing));
    let request_printer = tokio::spawn(async move {
        loop {
            match requests.recv().await {
                Ok(event) => println!("{}", describe_request(&event)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("… {n} requests not shown")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let exit = setup.finish().await;
    printer.abort();
    request_printer.abort();
    reload_printer.abort();
    match exit? {
        ExitReason::Shutdown(_) => {
            println!("drained; bye");
            Ok(ExitCode::SUCCESS)
        }
        ExitReason::Revoked => Ok(ExitCode::from(crate::EXIT_REVOKED)),
        ExitReason::LinkClosed => bail!("the link to the embedded connector closed unexpectedly"),
    }
}

/// Prints every outbound action the connector records, as it arrives.
async fn print_actions(mut cursor: EventCursor, show_typing: bool) {
    let dim = std::io::stdout().is_terminal();
    loop {
        let (_, frame) = cursor
            .next_frame(|f| matches!(f, GatewayFrame::Outbound { .. }))
            .await;
        let GatewayFrame::Outbound { action, .. } = frame else {
            continue;
        };
        if matches!(action, Action::Typing { .. }) {
            if show_typing {
                let line = describe_action(&action);
                if dim {
                    println!("\x1b[2m{line}\x1b[0m")
                } else {
                    println!("{line}")
                }
            }
            continue;
        }
        println!("{}", describe_action(&action));
    }
}
