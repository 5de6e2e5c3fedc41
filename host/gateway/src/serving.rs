//! The pieces of the gateway's main path that `dev` and `demo` share with
//! `run`: load the plugins directory, dial the relay link and serve the
//! gateway loop over it, and turn SIGINT/SIGTERM into a graceful drain.
//!
//! `dev` and `demo` differ from `run` only in where the relay settings come
//! from (an embedded connector with a fresh id and secret) and, for `demo`,
//! which agent answers; the link, the converters and the gateway loop are
//! the same code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hermes_gateway_core::{Agent, ExitReason, Gateway, GatewayConfig, Metrics};
use hermes_plugin_host::{LoadReport, PluginHost, PluginHostConfig};
use hermes_transport::{LinkState, RelayConfig, RelayHandle, RelayLink};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Loads every plugin in `dir` as `run` does: compiled off the async
/// threads, through the user's artifact cache, with `policy` (default
/// `dir/policy.toml`). A bad file is in the report, not an error.
pub async fn load_plugins(
    dir: &Path,
    policy: Option<PathBuf>,
) -> anyhow::Result<(PluginHost, LoadReport)> {
    std::fs::read_dir(dir)
        .with_context(|| format!("cannot read plugins directory {}", dir.display()))?;
    let mut config = PluginHostConfig::new(dir);
    config.policy_file = policy;
    config.cache_dir = plugin_cache_dir();
    let loaded = tokio::task::spawn_blocking(move || PluginHost::load(config))
        .await
        .context("plugin loading panicked")??;
    Ok(loaded)
}

/// Dials the relay described by `relay` and serves the gateway loop over it
/// with `plugins` as the converter and `agent` answering turns, until
/// `shutdown` (then drains, relay-contract §7.3) or the link ends.
pub async fn serve_relay<A: Agent>(
    relay: RelayConfig,
    plugins: PluginHost,
    agent: A,
    config: GatewayConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> ExitReason {
    let (handle, inbound) = RelayLink::spawn(relay);
    stop_when_revoked(&handle, &shutdown);
    Gateway::new(config, metrics)
        .run(handle, inbound, plugins, agent, shutdown)
        .await
}

/// A revoked link latches and keeps its inbound channel open (it only fails
/// calls fast), so the gateway loop would serve nothing forever. With the
/// relay disabled the process has nothing else to do: start the drain, after
/// which [`Gateway::run`] reports `Revoked` (exit code 4, §6.2).
pub fn stop_when_revoked(handle: &RelayHandle, shutdown: &CancellationToken) {
    let mut state = handle.state();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let revoked = tokio::select! {
            () = shutdown.cancelled() => false,
            r = state.wait_for(|s| matches!(s, LinkState::Revoked)) => r.is_ok(),
        };
        if revoked {
            shutdown.cancel();
        }
    });
}

/// SIGTERM/SIGINT cancel `shutdown` (a graceful drain); a second one exits
/// at once with status 1. With `reload`, SIGHUP reloads its plugins and
/// policy (`run`); without, SIGHUP keeps its default action.
pub fn drain_on_signals(
    shutdown: CancellationToken,
    reload: Option<PluginHost>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = match reload {
        Some(host) => Some((
            host,
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
        )),
        None => None,
    };
    tokio::spawn(async move {
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some((host, hup)) => {
                        hup.recv().await;
                        Some(host.clone())
                    }
                    None => std::future::pending().await,
                }
            };
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                Some(host) = hangup => {
                    info!("SIGHUP: reloading plugins and policy");
                    let report = host.reload().await;
                    crate::admin::log_report(&report);
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                warn!("{name} again: exiting without finishing the drain");
                std::process::exit(i32::from(crate::EXIT_FAILURE));
            }
            info!("{name}: draining (send it again to exit at once)");
            shutdown.cancel();
        }
    });
    Ok(())
}

/// Where compiled plugin artifacts are cached: `~/.hermes/cache/plugins`
/// (owned by the user, since the host trusts what it deserializes there).
/// Shared by `run`, `plugins check` and `convert`.
pub fn plugin_cache_dir() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        std::path::PathBuf::from(home)
            .join(".hermes")
            .join("cache")
            .join("plugins"),
    )
}
