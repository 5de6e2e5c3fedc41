//! `run`: settings → logging → plugins (+ watch) → admin → provisioning →
//! relay link → gateway loop, with signals: SIGTERM/SIGINT drain and exit 0,
//! SIGHUP reloads plugins and policy, a revoked link exits 4.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use hermes_gateway_core::agent::AgentSpec;
use hermes_gateway_core::{ExitReason, GatewayConfig, Metrics, SessionConfig};
use hermes_protocol::enroll::{IssuedCredentials, ProvisionRequest};
use hermes_protocol::session::SessionKeySettings;
use hermes_protocol::url::{Endpoint, http_endpoint};
use hermes_transport::{BackoffConfig, DevAllowances, Identity, RelayConfig, connector_api};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::args::RunArgs;
use crate::logging;
use crate::record::{RecordOptions, Recorder};
use crate::serving;
use crate::settings::{self, ConfigFile, EnvLayers, Overrides, RelayAuth, Secret, Settings};

/// Runs the gateway until a signal or revocation.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Err(e) = args.check_usage() {
        e.exit();
    }
    // Configuration problems are reported before logging starts, as one
    // `error:` line (main), never as a log record or a backtrace.
    let record = RecordOptions::from_flags(&args.record, false)?;
    let env = EnvLayers::load(args.env_file.as_deref())?;
    let config = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let overrides = Overrides {
        relay_url: args.relay_url.clone(),
        agent: args.agent.clone(),
        model: args.model.clone(),
        allow_unauthenticated: args.allow_unauthenticated,
        allow_plaintext: args.allow_plaintext,
    };
    let settings = Settings::resolve(&overrides, &env, &config, &settings::default_gateway_id())?;
    let spec: AgentSpec = settings
        .agent
        .spec
        .parse()
        .map_err(|e| anyhow!("--agent / HERMES_AGENT: {e}"))?;
    let plugins_dir = args.plugins.clone().context("--plugins DIR is required")?;

    let admin = match &args.admin {
        Some(addr) => Some(admin::AdminOptions::resolve(
            addr,
            args.admin_allow_remote,
            args.admin_token_file.as_deref(),
            env.get_nonblank(admin::TOKEN_ENV),
        )?),
        None => None,
    };

    // Bad plugin files are logged once, by `serving::log_report`.
    logging::init(args.log_format, "info,hermes_plugin_host::table=error");

    let runtime = serving::runtime(settings.runtime_threads)?;
    let result = runtime.block_on(serve(args, settings, spec, plugins_dir, admin, record));
    // Blocking tasks (a stuck agent child's I/O) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn serve(
    args: RunArgs,
    settings: Settings,
    spec: AgentSpec,
    plugins_dir: std::path::PathBuf,
    admin: Option<admin::AdminOptions>,
    record: Option<RecordOptions>,
) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();

    // Plugins: compile off the async threads; a bad file is a warning.
    let (host, report) = serving::load_plugins(&plugins_dir, args.policy.clone()).await?;
    serving::log_report(&report);
    if report.loaded.is_empty() {
        warn!(dir = %plugins_dir.display(), "no plugins loaded: passthrough forwards will be dropped");
    }
    // Dropping the handle would stop the watcher: keep it for the whole run.
    let _watch = serving::watch_plugins(&host);
    args.shadow.apply(&host)?;
    let recorder = record.map(Recorder::start).transpose()?;

    let metrics = Arc::new(Metrics::new());
    let relay_slot: Arc<OnceLock<hermes_transport::RelayHandle>> = Arc::new(OnceLock::new());
    // The endpoints outlive the start of the drain (`/readyz` reports it)
    // and stop when `serve` returns.
    let _admin = match admin {
        Some(options) => {
            let state = AdminState {
                metrics: Arc::clone(&metrics),
                plugins: host.clone(),
                relay: Arc::clone(&relay_slot),
                draining: shutdown.clone(),
            };
            Some(admin::start(options, state).await?)
        }
        None => None,
    };

    serving::drain_on_signals(shutdown.clone(), Some(host.clone()))?;

    // Shut down while provisioning: nothing was started, nothing to drain.
    let Some(relay_config) = relay_config(&settings.relay, &shutdown).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    let agent = serving::agent_backend(&settings.agent, &spec)?;
    let exit = serving::serve_relay(
        relay_config,
        serving::PluginConverter {
            plugins: host,
            recorder,
        },
        agent,
        gateway_config(&settings),
        metrics,
        shutdown.clone(),
        |handle| {
            let _ = relay_slot.set(handle.clone());
        },
    )
    .await;
    shutdown.cancel();
    match exit {
        ExitReason::Shutdown(outcome) => {
            info!(?outcome, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        ExitReason::Revoked => {
            error!(
                "relay access revoked: the connector rejected this gateway's credentials twice; re-enroll (hermes-gateway enroll) and restart"
            );
            Ok(ExitCode::from(crate::EXIT_REVOKED))
        }
        ExitReason::LinkClosed => Err(anyhow!("the relay link closed unexpectedly")),
    }
}

/// The link's configuration: pinned credentials, provisioned ones (retried
/// until they come; `None` when shutdown comes first) or none at all.
async fn relay_config(
    relay: &settings::RelaySettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<RelayConfig>> {
    if relay.delivery_key.is_some() {
        // Inbound rides the WebSocket; the key only matters to an HTTP ingress.
        info!("GATEWAY_RELAY_DELIVERY_KEY is set; not needed while inbound rides the relay link");
    }
    let (id, secret) = match &relay.auth {
        RelayAuth::Pinned { id, secret } => (Some(id.clone()), Some(secret.clone())),
        RelayAuth::Unauthenticated => {
            warn!(
                "dialling the relay WITHOUT credentials (explicitly allowed; local development only)"
            );
            (None, None)
        }
        RelayAuth::Provision {
            gateway_id,
            identity_token,
        } => match provision(relay, gateway_id, identity_token, shutdown).await {
            Some(creds) => (Some(creds.gateway_id), Some(Secret::new(creds.secret))),
            None => return Ok(None),
        },
    };
    let allow = DevAllowances {
        unauthenticated: matches!(relay.auth, RelayAuth::Unauthenticated),
        plaintext: relay.allow_plaintext,
    };
    let mut config = RelayConfig::with_allowances(
        &relay.url,
        id.as_deref(),
        secret.as_ref().map(Secret::expose),
        allow,
    )
    .map_err(|e| anyhow!("{e}"))?;
    config.identities = vec![Identity::new(relay.platform.clone(), relay.bot_id.clone())];
    info!(
        url = %config.dial_url(),
        gateway_id = config.gateway_id().unwrap_or("-"),
        platform = %relay.platform,
        "dialling the relay connector"
    );
    Ok(Some(config))
}

fn gateway_config(settings: &Settings) -> GatewayConfig {
    let sessions = &settings.sessions;
    GatewayConfig {
        sessions: SessionConfig {
            session_keys: SessionKeySettings {
                group_sessions_per_user: sessions.group_sessions_per_user,
                thread_sessions_per_user: sessions.thread_sessions_per_user,
            },
            streaming: settings.streaming.clone(),
            ..SessionConfig::default()
        },
        ..GatewayConfig::default()
    }
}

/// Provisioning at start (§7.4), retried on the link's reconnect ladder
/// until it works or shutdown is requested (`None`).
async fn provision(
    relay: &settings::RelaySettings,
    gateway_id: &str,
    identity: &Secret,
    shutdown: &CancellationToken,
) -> Option<IssuedCredentials> {
    let request = ProvisionRequest {
        gateway_id,
        platform: &relay.platform,
        bot_id: &relay.bot_id,
        gateway_endpoint: "",
        route_keys: &relay.route_keys,
        instance_id: relay.instance_id.as_deref(),
        wake_url: relay.wake_url.as_deref(),
    };
    let endpoint = http_endpoint(&relay.url, Endpoint::Provision);
    connector_api::provision(
        &endpoint,
        identity.expose(),
        &request,
        BackoffConfig::default(),
        shutdown,
    )
    .await
}
