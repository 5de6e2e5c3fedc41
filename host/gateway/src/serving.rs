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
use anyhow::anyhow;
use hermes_gateway_core::adapters::converted_from;
use hermes_gateway_core::agent::{AgentBackend, AgentOptions, AgentSpec};
use hermes_gateway_core::{
    Agent, Converted, Converter, ExitReason, Gateway, GatewayConfig, Metrics,
};
use hermes_plugin_host::{LoadReport, PluginHost, PluginHostConfig};
use hermes_protocol::forward::PassthroughForward;
use hermes_transport::{LinkState, RelayConfig, RelayHandle, RelayLink};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::record::Recorder;
use crate::settings::AgentSettings;

/// The runtime `run` serves on. With one thread (the default) the whole
/// hot path — the link's reader and writer, the conversions (which run
/// inline and yield between CPU slices), the sessions and the agents' I/O
/// — shares one thread: a forward crosses no thread boundary, so it costs
/// no futex wake-ups or context switches, which is most of what a
/// multi-threaded runtime spent per forward on a small machine (see
/// docs/performance.md). More threads (`HERMES_RUNTIME_THREADS`) let
/// conversions and turns spread over cores, at that price per forward.
pub fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Loads every plugin in `dir` with `policy` (default `dir/policy.toml`),
/// through the user's artifact cache: the one loading path of `run`, `dev`,
/// `demo`, `plugins check` and `convert`. A bad plugin file is in the
/// report, not an error; an unreadable directory or an explicit policy file
/// that does not exist is (silently using an empty policy would answer a
/// different question than the one asked).
///
/// Loading compiles and runs each guest's `describe()`, whose stdio goes
/// through WASI's synchronous bindings: call it outside any async runtime,
/// or through [`load_plugins`] inside one.
pub fn load_plugins_blocking(
    dir: &Path,
    policy: Option<&Path>,
) -> anyhow::Result<(PluginHost, LoadReport)> {
    if let Some(p) = policy
        && !p.is_file()
    {
        anyhow::bail!("policy file {} does not exist", p.display());
    }
    let mut config = PluginHostConfig::new(dir);
    config.policy_file = policy.map(Path::to_path_buf);
    config.cache_dir = plugin_cache_dir();
    Ok(PluginHost::load(config)?)
}

/// Watches the plugins directory and the policy and reloads on a change
/// (`run` and `dev` alike). `None`, with a warning, when the platform cannot
/// watch: reloads then come only from `SIGHUP` (and `POST /reload`). Keep
/// the handle: dropping it stops the watch.
pub fn watch_plugins(host: &PluginHost) -> Option<hermes_plugin_host::WatchHandle> {
    match host.watch() {
        Ok(w) => Some(w),
        Err(e) => {
            warn!("plugin hot reload disabled: {e}");
            None
        }
    }
}

/// Logs a load report: each loaded plugin at info, each bad file as a warning.
pub fn log_report(report: &hermes_plugin_host::LoadReport) {
    for p in &report.loaded {
        info!(
            plugin = %p.name,
            version = %p.version,
            api = %p.api_version,
            platforms = %p.platforms.join(","),
            file = %p.file.display(),
            "plugin loaded"
        );
    }
    for e in &report.errors {
        warn!("plugin file skipped: {e}");
    }
}

/// [`load_plugins_blocking`] off the async threads.
pub async fn load_plugins(
    dir: &Path,
    policy: Option<PathBuf>,
) -> anyhow::Result<(PluginHost, LoadReport)> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || load_plugins_blocking(&dir, policy.as_deref()))
        .await
        .context("plugin loading panicked")?
}

/// Dials the relay described by `relay` and serves the gateway loop over it
/// with `converter` converting forwards and `agent` answering turns, until
/// `shutdown` (then drains, relay-contract §7.3) or the link ends.
/// `on_link` sees the link's handle before the first frame (the admin
/// endpoints read its state).
pub async fn serve_relay<A: Agent>(
    relay: RelayConfig,
    converter: PluginConverter,
    agent: A,
    config: GatewayConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    on_link: impl FnOnce(&RelayHandle),
) -> ExitReason {
    let (handle, inbound) = RelayLink::spawn(relay);
    on_link(&handle);
    stop_when_revoked(&handle, &shutdown);
    Gateway::new(config, metrics)
        .run(handle, inbound, converter, agent, shutdown)
        .await
}

/// The gateway's converter: the plugin host, and the recording when
/// `--record` asks for one.
pub struct PluginConverter {
    /// Routes and converts.
    pub plugins: PluginHost,
    /// Keeps each forward and its outcome as a corpus case.
    pub recorder: Option<Recorder>,
}

impl Converter for PluginConverter {
    async fn convert(&self, forward: &PassthroughForward) -> Converted {
        let conversion = self.plugins.convert(forward).await;
        if let Some(recorder) = &self.recorder {
            recorder.offer(&self.plugins, forward, &conversion);
        }
        let outer_timeout = self.plugins.limits().outer_timeout;
        converted_from(conversion, forward.profile.as_deref(), outer_timeout)
    }

    fn lane(&self, forward: &PassthroughForward) -> Arc<str> {
        self.plugins.lane_of(forward)
    }
}

/// The agent the settings name, with its model, key and environment.
pub fn agent_backend(agent: &AgentSettings, spec: &AgentSpec) -> anyhow::Result<AgentBackend> {
    let defaults = AgentOptions::default();
    let options = AgentOptions {
        model: agent.model.clone().unwrap_or(defaults.model.clone()),
        api_key: agent.openai_api_key.as_ref().map(|k| k.expose().to_owned()),
        exec_env: agent
            .exec_env
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect(),
        ..defaults
    };
    let backend = AgentBackend::from_spec(spec, &options).map_err(|e| anyhow!("agent: {e}"))?;
    info!(agent = %agent.spec, "agent ready");
    Ok(backend)
}

/// A revoked link latches and keeps its inbound channel open (it only fails
/// calls fast), so the gateway loop would serve nothing forever. With the
/// relay disabled the process has nothing else to do: start the drain, after
/// which [`Gateway::run`] reports `Revoked` (exit code 4, §6.2).
fn stop_when_revoked(handle: &RelayHandle, shutdown: &CancellationToken) {
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
/// policy (`run`, `dev`); without, SIGHUP keeps its default action.
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
                    log_report(&report);
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
fn plugin_cache_dir() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        std::path::PathBuf::from(home)
            .join(".hermes")
            .join("cache")
            .join("plugins"),
    )
}
