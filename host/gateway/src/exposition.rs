//! The `/metrics` page: one `prometheus-client` registry with a collector
//! over each library's plain counters and snapshots (the gateway core's,
//! the plugin host's, the link's). The libraries know nothing of
//! Prometheus; this module names their numbers and writes them out in the
//! OpenMetrics text format.
//!
//! Collectors read on each scrape, so nothing is copied on the hot path:
//! the libraries count into relaxed atomics and this module reads them.

use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use hermes_gateway_core::Metrics;
use hermes_gateway_core::latency::Histograms;
use hermes_plugin_host::{ExperimentReport, PluginCounters, PluginHost};
use hermes_transport::{LinkState, RelayHandle};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry behind `/metrics`, built once per admin server.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// Collectors over the gateway core's metrics, the plugin host and the
    /// link (once it exists: provisioning may come first).
    pub fn new(
        metrics: Arc<Metrics>,
        plugins: PluginHost,
        relay: Arc<OnceLock<RelayHandle>>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Core(metrics)));
        registry.register_collector(Box::new(Plugins(plugins)));
        registry.register_collector(Box::new(Link(relay)));
        Self { registry }
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail, and every collector only
        // propagates the writer's errors.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A label value escaped as the text format requires (`\`, `"`, newline).
/// Some values come from the wire (a forward's platform), and the crate
/// writes label values as they are.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Labels of one series: `(name, value)` pairs.
type Labels<'a> = Vec<(&'static str, Escaped<'a>)>;

/// Writes one counter family (`name` without `_total`: the format adds it).
fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        } else {
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    Ok(())
}

/// Writes one unlabelled counter.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    counters(encoder, name, help, [(Vec::new(), value)])
}

/// The counts of every experiment of `kind`, labelled by route, candidate
/// and result.
fn by_experiment<'a>(
    experiments: &'a [ExperimentReport],
    kind: &'a str,
    results: impl Fn(&ExperimentReport) -> Vec<(&'static str, u64)> + 'a,
) -> impl Iterator<Item = (Labels<'a>, u64)> + 'a {
    experiments
        .iter()
        .filter(move |x| x.kind == kind)
        .flat_map(move |x| {
            results(x).into_iter().map(|(result, n)| {
                let labels = vec![
                    ("route", Escaped(&x.route)),
                    ("candidate", Escaped(&x.candidate)),
                    ("result", Escaped(result)),
                ];
                (labels, n)
            })
        })
}

/// Writes one gauge family.
fn gauges<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_gauge(&value)?;
        } else {
            family.encode_family(&labels)?.encode_gauge(&value)?;
        }
    }
    Ok(())
}

/// Writes one unlabelled gauge.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    gauges(encoder, name, help, [(Vec::new(), value)])
}

/// One label set per value of `label`.
fn by<'a>(
    label: &'static str,
    samples: impl IntoIterator<Item = &'a (&'a str, u64)>,
) -> impl Iterator<Item = (Labels<'a>, u64)> {
    samples
        .into_iter()
        .map(move |(value, n)| (vec![(label, Escaped(value))], *n))
}

/// Writes a histogram family from its snapshot.
fn histograms(encoder: &mut DescriptorEncoder, family: &Histograms) -> fmt::Result {
    let name = family
        .name()
        .strip_suffix("_seconds")
        .unwrap_or(family.name());
    // The unit is part of the name the crate writes: `<name>_seconds`.
    let unit = prometheus_client::registry::Unit::Seconds;
    let mut metric =
        encoder.encode_descriptor(name, family.help(), Some(&unit), MetricType::Histogram)?;
    for series in family.snapshot() {
        let labels: Labels = family
            .label_names()
            .iter()
            .copied()
            .zip(series.values.iter().map(|v| Escaped(v)))
            .collect();
        // The crate marks the `+Inf` bucket by `f64::MAX`.
        let buckets: Vec<(f64, u64)> = series
            .buckets
            .iter()
            .map(|&(le, n)| (if le.is_finite() { le } else { f64::MAX }, n))
            .collect();
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(series.sum_seconds, series.count, &buckets, None)?;
    }
    Ok(())
}

/// The gateway core: events, forwards, turns, replies, sessions, latency.
struct Core(Arc<Metrics>);

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Core")
    }
}

impl Collector for Core {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = self.0.snapshot();
        let e = &mut e;
        counter(
            e,
            "hermes_gateway_events_in",
            "Inbound events received.",
            s.events_in,
        )?;
        counter(
            e,
            "hermes_gateway_forwards_in",
            "Passthrough forwards received.",
            s.forwards_in,
        )?;
        counter(
            e,
            "hermes_gateway_forwards_converted",
            "Forwards converted into events.",
            s.forwards_converted,
        )?;
        counters(
            e,
            "hermes_gateway_forwards_dropped",
            "Forwards that produced no event, by reason.",
            by("reason", &s.forward_drops()),
        )?;
        counters(
            e,
            "hermes_gateway_events_dropped",
            "Events dropped before becoming a turn, by reason.",
            by("reason", &s.event_drops()),
        )?;
        counter(
            e,
            "hermes_gateway_queue_full_waits",
            "Deliveries that waited for room in a full queue (backpressure).",
            s.queue_full_waits,
        )?;
        counter(
            e,
            "hermes_gateway_interrupts_in",
            "Interrupts received from the relay.",
            s.interrupts_in,
        )?;
        counter(
            e,
            "hermes_gateway_stops_local",
            "User /stop messages handled locally.",
            s.stops_local,
        )?;
        let turns = [
            ("started", s.turns_started),
            ("completed", s.turns_completed),
            ("cancelled", s.turns_cancelled),
            ("failed", s.turns_failed),
        ];
        counters(
            e,
            "hermes_gateway_turns",
            "Agent turns by stage.",
            by("state", &turns),
        )?;
        let replies = [
            ("ok", s.replies_ok),
            ("failed", s.replies_failed),
            ("ambiguous", s.replies_ambiguous),
        ];
        counters(
            e,
            "hermes_gateway_replies",
            "Reply actions by outcome.",
            by("outcome", &replies),
        )?;
        gauge(
            e,
            "hermes_gateway_sessions_active",
            "Sessions with a queued, running or delivering turn.",
            s.sessions_active,
        )?;
        gauge(
            e,
            "hermes_gateway_queued_messages",
            "Messages queued behind running turns.",
            s.queued_messages,
        )?;
        let latency = &self.0.latency;
        for family in [
            &latency.conversion,
            &latency.outbound,
            &latency.turn,
            &latency.reply,
        ] {
            histograms(e, family)?;
        }
        Ok(())
    }
}

/// The plugin host: what is loaded, conversions and failures per plugin,
/// reloads, instances.
struct Plugins(PluginHost);

impl fmt::Debug for Plugins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plugins")
    }
}

impl Collector for Plugins {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let host = &self.0;
        let e = &mut e;
        gauge(
            e,
            "hermes_plugins_loaded",
            "Plugins currently loaded.",
            host.plugins().len() as u64,
        )?;
        let h = host.host_counters();
        let reloads = [
            ("clean", h.reloads_clean),
            ("errors", h.reloads_with_errors),
        ];
        counters(
            e,
            "hermes_plugin_reloads",
            "Reloads, by result.",
            by("result", &reloads),
        )?;
        let instances = [
            ("created", h.instances_created),
            ("reused", h.instances_reused),
            ("retired", h.instances_retired),
        ];
        let pulls = [
            ("pulled", h.pulls_pulled),
            ("cached", h.pulls_cached),
            ("failed", h.pulls_failed),
        ];
        counters(
            e,
            "hermes_plugin_pulls",
            "[[source]] components by result: pulled from the registry, served from the cache, failed or refused.",
            by("result", &pulls),
        )?;
        counters(
            e,
            "hermes_plugin_instances",
            "Sandbox instances created, reused (warm per-tenant) and retired.",
            by("event", &instances),
        )?;

        let experiments = host.experiments();
        let shadow = by_experiment(&experiments, "shadow", |x| {
            vec![
                ("compared", x.compared),
                ("agreed", x.agreed),
                ("differed", x.differed),
                ("candidate_faulted", x.candidate_faulted),
                ("dropped", x.dropped),
            ]
        });
        counters(
            e,
            "hermes_plugin_shadow",
            "Shadow comparisons per route and candidate, by result.",
            shadow,
        )?;
        let canary = by_experiment(&experiments, "canary", |x| {
            vec![
                ("served", x.served),
                ("candidate_faulted", x.candidate_faulted),
            ]
        });
        counters(
            e,
            "hermes_plugin_canary",
            "Canary conversions per route and candidate: served by the candidate, or contained after its fault.",
            canary,
        )?;
        counter(
            e,
            "hermes_plugin_canary_rollbacks",
            "Canary candidates taken out of their route for faulting more than the active plugin.",
            h.canary_rollbacks,
        )?;
        let per_plugin = host.counters();
        type Pick = fn(&PluginCounters) -> u64;
        let simple: [(&str, &str, Pick); 7] = [
            (
                "hermes_plugin_conversions",
                "Conversions attempted per plugin.",
                |c| c.conversions,
            ),
            ("hermes_plugin_events", "Events produced per plugin.", |c| {
                c.events
            }),
            (
                "hermes_plugin_ignored",
                "Conversions that ended ignored.",
                |c| c.ignored,
            ),
            (
                "hermes_plugin_rejected",
                "Typed rejections of bad input.",
                |c| c.rejected,
            ),
            (
                "hermes_plugin_quarantines",
                "Times a plugin entered quarantine.",
                |c| c.quarantines,
            ),
            (
                "hermes_plugin_tenant_of_calls",
                "tenant-of calls (made only when a tenant route could use the key).",
                |c| c.tenant_of_calls,
            ),
            (
                "hermes_plugin_log_lines_dropped",
                "Plugin log lines dropped by the per-call cap or the per-plugin rate.",
                |c| c.log_lines_dropped,
            ),
        ];
        fn plugin(name: &str) -> Labels<'_> {
            vec![("plugin", Escaped(name))]
        }
        for (name, help, pick) in simple {
            let samples = per_plugin.iter().map(|(p, c)| (plugin(p), pick(c)));
            counters(e, name, help, samples)?;
        }
        let failures = per_plugin.iter().flat_map(|(p, c)| {
            c.failures
                .iter()
                .map(move |(kind, n)| (vec![("plugin", Escaped(p)), ("kind", Escaped(kind))], *n))
        });
        counters(
            e,
            "hermes_plugin_failures",
            "Contained plugin failures by plugin and kind.",
            failures,
        )?;
        let quarantined = per_plugin
            .iter()
            .map(|(p, c)| (plugin(p), u64::from(c.quarantined_for.is_some())));
        gauges(
            e,
            "hermes_plugin_quarantined",
            "Whether a plugin is quarantined now.",
            quarantined,
        )
    }
}

/// The relay link: state, traffic, failures.
struct Link(Arc<OnceLock<RelayHandle>>);

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Link")
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

impl Collector for Link {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let relay = self.0.get();
        let state = relay.map(|h| h.state().borrow().clone());
        let e = &mut e;
        gauge(
            e,
            "hermes_relay_connected",
            "1 while connected with a descriptor.",
            u64::from(state.as_ref().is_some_and(LinkState::is_connected)),
        )?;
        gauge(
            e,
            "hermes_relay_revoked",
            "1 once the connector revoked this gateway.",
            u64::from(matches!(state, Some(LinkState::Revoked))),
        )?;
        // The link's state as an enum gauge: exactly one state is 1.
        let current = state_label(state.as_ref());
        let states = LINK_STATES.map(|name| (name, u64::from(name == current)));
        gauges(
            e,
            "hermes_relay_state",
            "The link's state (1 for the current one).",
            by("state", &states),
        )?;
        let Some(handle) = relay else {
            return Ok(());
        };
        gauge(
            e,
            "hermes_relay_pending_requests",
            "Outbound actions waiting for their result.",
            handle.pending_len() as u64,
        )?;
        let c = handle.counters();
        for (name, help, value) in [
            (
                "hermes_relay_malformed_frames",
                "Frames that failed to decode.",
                c.malformed_frames,
            ),
            (
                "hermes_relay_unknown_frames",
                "Frames of an unknown type.",
                c.unknown_types,
            ),
            (
                "hermes_relay_late_results",
                "Results with no waiting request.",
                c.late_results,
            ),
            (
                "hermes_relay_outbound_timeouts",
                "Outbound actions that timed out.",
                c.timeouts,
            ),
            ("hermes_relay_dials", "Dials attempted.", c.dials),
            (
                "hermes_relay_handshakes",
                "Handshakes completed.",
                c.handshakes,
            ),
            (
                "hermes_relay_bytes_in",
                "WebSocket payload bytes received.",
                c.bytes_in,
            ),
            (
                "hermes_relay_bytes_out",
                "WebSocket payload bytes sent.",
                c.bytes_out,
            ),
        ] {
            counter(e, name, help, value)?;
        }
        counters(
            e,
            "hermes_relay_frames_in",
            "Frames received, by type.",
            by("type", &c.frames_in),
        )?;
        counters(
            e,
            "hermes_relay_frames_out",
            "Frames sent, by type.",
            by("type", &c.frames_out),
        )?;
        counters(
            e,
            "hermes_relay_disconnects",
            "Connections ended other than by shutdown, by reason.",
            by("reason", &c.disconnects),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders one counter family with these label values.
    fn render_counter(values: &[&str]) -> String {
        #[derive(Debug)]
        struct One(Vec<String>);
        impl Collector for One {
            fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
                let samples = self.0.iter().map(|v| (vec![("v", Escaped(v))], 1));
                counters(&mut e, "t", "test", samples)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(values
            .iter()
            .map(|v| (*v).to_owned())
            .collect())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        out
    }

    #[test]
    fn label_values_are_escaped() {
        let out = render_counter(&["a\"b\\c\nd"]);
        assert!(out.contains("t_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"), "{out}");
    }

    #[test]
    fn every_family_renders_with_cumulative_buckets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = hermes_plugin_host::PluginHostConfig::new(dir.path());
        let (plugins, _) = PluginHost::load(config).expect("an empty directory loads");
        let metrics = Arc::new(Metrics::new());
        let waited = std::time::Duration::from_millis(3);
        metrics.latency.reply.observe(&["tele\"gram"], waited);
        let exposition = Exposition::new(metrics, plugins, Arc::new(OnceLock::new()));
        let out = exposition.render();
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert!(
            out.contains("# TYPE hermes_gateway_reply_seconds histogram\n"),
            "{out}"
        );
        // Cumulative buckets; the wire's label value escaped.
        let platform = r#"platform="tele\"gram""#;
        for (le, n) in [("0.0025", 0), ("0.005", 1), ("+Inf", 1)] {
            let line =
                format!("hermes_gateway_reply_seconds_bucket{{le=\"{le}\",{platform}}} {n}\n");
            assert!(out.contains(&line), "{line} in {out}");
        }
        assert!(
            out.contains("hermes_relay_state{state=\"provisioning\"} 1\n"),
            "{out}"
        );
    }
}
