//! The `/metrics` page in the Prometheus text format: the libraries expose
//! plain counters and snapshots, this module writes them out (the gateway
//! core renders its own counters and histograms).

use std::fmt::Write as _;

use hermes_gateway_core::Metrics;
use hermes_plugin_host::PluginHost;
use hermes_transport::{LinkState, RelayHandle};

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole `/metrics` page: the gateway core's counters and histograms,
/// the plugin host's, the link's.
pub fn render_metrics(
    metrics: &Metrics,
    plugins: &PluginHost,
    relay: Option<&RelayHandle>,
) -> String {
    let mut out = String::with_capacity(4096);
    metrics.render_prometheus(&mut out);
    render_plugin_metrics(plugins, &mut out);
    render_relay_metrics(relay, &mut out);
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
    let h = host.host_counters();
    let reloads = [
        ("clean", h.reloads_clean),
        ("errors", h.reloads_with_errors),
    ];
    let instances = [
        ("created", h.instances_created),
        ("reused", h.instances_reused),
        ("retired", h.instances_retired),
    ];
    let labelled = [
        (
            "hermes_plugin_reloads_total",
            "Reloads, by result.",
            "result",
            &reloads[..],
        ),
        (
            "hermes_plugin_instances_total",
            "Sandbox instances created, reused (warm per-tenant) and retired.",
            "event",
            &instances[..],
        ),
    ];
    for (name, help, label, samples) in labelled {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (value, n) in samples {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
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
    // The link's state as an enum gauge: exactly one state is 1.
    let current = state_label(state.as_ref());
    let _ = writeln!(
        out,
        "# HELP hermes_relay_state The link's state (1 for the current one)."
    );
    let _ = writeln!(out, "# TYPE hermes_relay_state gauge");
    for name in LINK_STATES {
        let v = u8::from(name == current);
        let _ = writeln!(out, "hermes_relay_state{{state=\"{name}\"}} {v}");
    }
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
        (
            "hermes_relay_bytes_in_total",
            "WebSocket payload bytes received.",
            c.bytes_in,
        ),
        (
            "hermes_relay_bytes_out_total",
            "WebSocket payload bytes sent.",
            c.bytes_out,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {v}");
    }
    let by_type = [
        (
            "hermes_relay_frames_in_total",
            "Frames received, by type.",
            &c.frames_in[..],
        ),
        (
            "hermes_relay_frames_out_total",
            "Frames sent, by type.",
            &c.frames_out[..],
        ),
    ];
    for (name, help, samples) in by_type {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (frame_type, v) in samples {
            let _ = writeln!(out, "{name}{{type=\"{frame_type}\"}} {v}");
        }
    }
    let name = "hermes_relay_disconnects_total";
    let _ = writeln!(
        out,
        "# HELP {name} Connections ended other than by shutdown, by reason."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (reason, v) in &c.disconnects {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {v}");
    }
}

/// The values of `hermes_relay_state`'s `state` label.
const LINK_STATES: [&str; 6] = [
    "provisioning",
    "connecting",
    "connected",
    "backing_off",
    "revoked",
    "closed",
];

fn state_label(state: Option<&LinkState>) -> &'static str {
    match state {
        None => "provisioning",
        Some(LinkState::Connecting) => "connecting",
        Some(LinkState::Connected { .. }) => "connected",
        Some(LinkState::BackingOff { .. }) => "backing_off",
        Some(LinkState::Revoked) => "revoked",
        Some(LinkState::Closed) => "closed",
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
