//! The admin HTTP endpoints of `run --admin ADDR` (HTTP/1, hyper):
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok`; 503 once the relay revoked this gateway |
//! | `GET /readyz` | 200 only while connected with a descriptor, else 503 |
//! | `GET /metrics` | Prometheus text: gateway, plugin and transport counters |
//! | `GET /plugins` | JSON: loaded plugins, routing table, per-plugin counters |
//! | `POST /reload` | reload plugins and policy; JSON load report (422 if any file failed) |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use hermes_gateway_core::Metrics;
use hermes_plugin_host::PluginHost;
use hermes_transport::{LinkState, RelayHandle};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Gateway counters.
    pub metrics: Arc<Metrics>,
    /// The plugin host.
    pub plugins: PluginHost,
    /// The relay link, once it exists (provisioning may come first).
    pub relay: Arc<OnceLock<RelayHandle>>,
}

/// Binds `addr` now (so a bad address fails the start) and serves until
/// `shutdown` fires.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let parsed: SocketAddr = addr.parse().map_err(|e| {
        anyhow::anyhow!("--admin {addr:?} is not an address like 127.0.0.1:9464: {e}")
    })?;
    TcpListener::bind(parsed)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --admin {parsed}: {e}"))
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin endpoints listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    text(status, body, "application/json")
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => {
            if link_state(state).is_some_and(|s| matches!(s, LinkState::Revoked)) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "relay access revoked\n",
                    "text/plain",
                )
            } else {
                text(StatusCode::OK, "ok\n", "text/plain")
            }
        }
        (&Method::GET, "/readyz") => match link_state(state) {
            Some(LinkState::Connected { .. }) => text(StatusCode::OK, "ready\n", "text/plain"),
            other => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", describe_state(other.as_ref())),
                "text/plain",
            ),
        },
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            render_metrics(state),
            "text/plain; version=0.0.4",
        ),
        (&Method::GET, "/plugins") => json(StatusCode::OK, &plugins_json(&state.plugins)),
        (&Method::POST, "/reload") => {
            let report = state.plugins.reload().await;
            log_report(&report);
            let status = if report.is_clean() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(status, &serde_json::to_value(&report).unwrap_or_default())
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/plugins" | "/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            "text/plain",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

fn link_state(state: &AdminState) -> Option<LinkState> {
    state.relay.get().map(|h| h.state().borrow().clone())
}

fn describe_state(state: Option<&LinkState>) -> String {
    match state {
        None => "relay not started (provisioning)".to_owned(),
        Some(LinkState::Connecting) => "connecting".to_owned(),
        Some(LinkState::Connected { .. }) => "connected".to_owned(),
        Some(LinkState::BackingOff { attempt, delay }) => {
            format!("backing off (attempt {attempt}, {} ms)", delay.as_millis())
        }
        Some(LinkState::Revoked) => "relay access revoked".to_owned(),
        Some(LinkState::Closed) => "closed".to_owned(),
    }
}

/// `GET /plugins` and `plugins check --json`-like output.
pub fn plugins_json(host: &PluginHost) -> serde_json::Value {
    serde_json::json!({
        "plugins": host.plugins(),
        "routing": host.routing_table(),
        "counters": host.counters(),
    })
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

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_metrics(state: &AdminState) -> String {
    let mut out = String::with_capacity(4096);
    state.metrics.render_prometheus(&mut out);
    render_plugin_metrics(&state.plugins, &mut out);
    render_relay_metrics(state.relay.get(), &mut out);
    out
}

fn render_plugin_metrics(host: &PluginHost, out: &mut String) {
    let counters = host.counters();
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP hermes_plugins_loaded Plugins currently loaded."
    );
    let _ = writeln!(out, "# TYPE hermes_plugins_loaded gauge");
    let _ = writeln!(out, "hermes_plugins_loaded {}", host.plugins().len());
    type Pick = fn(&hermes_plugin_host::PluginCounters) -> u64;
    let simple: [(&str, &str, Pick); 7] = [
        (
            "hermes_plugin_conversions_total",
            "Conversions attempted per plugin.",
            |c| c.conversions,
        ),
        (
            "hermes_plugin_events_total",
            "Events produced per plugin.",
            |c| c.events,
        ),
        (
            "hermes_plugin_ignored_total",
            "Conversions that ended ignored.",
            |c| c.ignored,
        ),
        (
            "hermes_plugin_rejected_total",
            "Typed rejections of bad input.",
            |c| c.rejected,
        ),
        (
            "hermes_plugin_quarantines_total",
            "Times a plugin entered quarantine.",
            |c| c.quarantines,
        ),
        (
            "hermes_plugin_tenant_of_calls_total",
            "tenant-of calls (made only when a tenant route could use the key).",
            |c| c.tenant_of_calls,
        ),
        (
            "hermes_plugin_log_lines_dropped_total",
            "Plugin log lines dropped by the per-call cap or the per-plugin rate.",
            |c| c.log_lines_dropped,
        ),
    ];
    for (name, help, pick) in simple {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (plugin, c) in &counters {
            let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {}", label(plugin), pick(c));
        }
    }
    let _ = writeln!(
        out,
        "# HELP hermes_plugin_failures_total Contained plugin failures by kind."
    );
    let _ = writeln!(out, "# TYPE hermes_plugin_failures_total counter");
    for (plugin, c) in &counters {
        for (kind, n) in &c.failures {
            let _ = writeln!(
                out,
                "hermes_plugin_failures_total{{plugin=\"{}\",kind=\"{}\"}} {n}",
                label(plugin),
                label(kind)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP hermes_plugin_quarantined Whether a plugin is quarantined now."
    );
    let _ = writeln!(out, "# TYPE hermes_plugin_quarantined gauge");
    for (plugin, c) in &counters {
        let _ = writeln!(
            out,
            "hermes_plugin_quarantined{{plugin=\"{}\"}} {}",
            label(plugin),
            u8::from(c.quarantined_for.is_some())
        );
    }
}

fn render_relay_metrics(relay: Option<&RelayHandle>, out: &mut String) {
    let state = relay.map(|h| h.state().borrow().clone());
    let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {v}");
    };
    gauge(
        out,
        "hermes_relay_connected",
        "1 while connected with a descriptor.",
        u64::from(state.as_ref().is_some_and(LinkState::is_connected)),
    );
    gauge(
        out,
        "hermes_relay_revoked",
        "1 once the connector revoked this gateway.",
        u64::from(matches!(state, Some(LinkState::Revoked))),
    );
    let Some(handle) = relay else {
        return;
    };
    gauge(
        out,
        "hermes_relay_pending_requests",
        "Outbound actions waiting for their result.",
        handle.pending_len() as u64,
    );
    let c = handle.counters();
    let counters = [
        (
            "hermes_relay_malformed_frames_total",
            "Frames that failed to decode.",
            c.malformed_frames,
        ),
        (
            "hermes_relay_unknown_frames_total",
            "Frames of an unknown type.",
            c.unknown_types,
        ),
        (
            "hermes_relay_late_results_total",
            "Results with no waiting request.",
            c.late_results,
        ),
        (
            "hermes_relay_outbound_timeouts_total",
            "Outbound actions that timed out.",
            c.timeouts,
        ),
        ("hermes_relay_dials_total", "Dials attempted.", c.dials),
        (
            "hermes_relay_handshakes_total",
            "Handshakes completed.",
            c.handshakes,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
