//! Safe converter swaps: a candidate converter tried on a route's live
//! forwards before it serves them, then serving a share of them, with an
//! automatic way back.
//!
//! - **Shadow** (`shadow = "NAME"`, `shadow_sample = 0.0..1.0`): after the
//!   active plugin answered, a sampled forward is queued (bounded in items
//!   and bytes; full: dropped and counted) for a thread of its own, where the
//!   candidate converts the same request in a fresh sandbox with its own
//!   limits and its own fault counts (its faults never quarantine the active
//!   plugin). The two outcomes are compared field by field; the counts and
//!   the latest differences are in `/metrics` and `/plugins`, and each
//!   difference is a line in the optional JSONL log. The live forward never
//!   waits for any of it, and the comparisons take at most a tenth of a
//!   core.
//! - **Canary** (`canary = { plugin, percent }`): a stable share of the
//!   conversations — by a hash of the event's session key (default key
//!   settings), so one conversation never flips — gets the candidate's
//!   outcome for real. A candidate that faults is contained (the active
//!   plugin's outcome is served) and counted; when its fault rate over its
//!   last `window` conversions exceeds the active plugin's by more than
//!   `margin`, it is rolled back: out of the route until the next reload,
//!   logged, counted, and shown with the reason in `/plugins`.

mod canary;
mod shadow;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Value, json};

use crate::outcome::{Conversion, Outcome};
use crate::policy::{Canary, PlatformPolicy, RouteRule};
use crate::table::{LoadedPlugin, Resolved};
use crate::{PluginHost, bindings};
use shadow::{Job, Log};

/// A candidate on a route.
#[derive(Clone)]
pub(crate) struct Experiment {
    /// Which route: `platform discord` or `route discord tenant=…`.
    pub(crate) label: Arc<str>,
    pub(crate) candidate: Arc<LoadedPlugin>,
    pub(crate) kind: Kind,
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Shadow {
        sample: f64,
    },
    Canary {
        percent: u8,
        window: usize,
        margin: f64,
    },
}

impl Experiment {
    /// The experiment of the route that `rule` (or the platform's own
    /// policy) describes, if its candidate is loaded, converts `platform`
    /// and is not the active plugin itself.
    pub(crate) fn of(
        platform: &str,
        active: &Arc<LoadedPlugin>,
        rule: Option<&RouteRule>,
        pin: Option<&PlatformPolicy>,
        plugin: impl Fn(&str) -> Option<Arc<LoadedPlugin>>,
    ) -> Option<Self> {
        let (shadow, sample, canary, label) = match rule {
            Some(r) if r.shadow.is_some() || r.canary.is_some() => (
                r.shadow.as_deref(),
                r.shadow_sample,
                r.canary.as_ref(),
                route_label(r),
            ),
            _ => {
                let p = pin?;
                (
                    p.shadow.as_deref(),
                    p.shadow_sample,
                    p.canary.as_ref(),
                    format!("platform {platform}"),
                )
            }
        };
        let (name, kind) = match (canary, shadow) {
            (
                Some(Canary {
                    plugin,
                    percent,
                    window,
                    margin,
                }),
                _,
            ) => (
                plugin.as_str(),
                Kind::Canary {
                    percent: (*percent).min(100),
                    window: (*window).max(1),
                    margin: *margin,
                },
            ),
            (None, Some(name)) => (
                name,
                Kind::Shadow {
                    sample: sample.map_or(1.0, |s| s.0.clamp(0.0, 1.0)),
                },
            ),
            (None, None) => return None,
        };
        let candidate = plugin(name).filter(|c| c.converts(platform) && !Arc::ptr_eq(c, active))?;
        Some(Self {
            label: Arc::from(label),
            candidate,
            kind,
        })
    }
}

/// A line per shadow or canary candidate the policy names that is not
/// loaded (it is then ignored: the route serves as if it had none).
pub(crate) fn unknown_candidates(table: &crate::table::Table) -> Vec<String> {
    let p = &table.policy;
    let names = p
        .platform
        .iter()
        .map(|(platform, pin)| {
            (
                format!("[platform.{platform}]"),
                pin.shadow.as_ref(),
                pin.canary.as_ref(),
            )
        })
        .chain(
            p.route
                .iter()
                .map(|r| (route_label(r), r.shadow.as_ref(), r.canary.as_ref())),
        );
    let mut out = Vec::new();
    for (where_, shadow, canary) in names {
        for name in shadow.into_iter().chain(canary.map(|c| &c.plugin)) {
            if !table.by_name.contains_key(name) {
                out.push(format!(
                    "{where_}: candidate plugin `{name}` is not loaded; the route serves without it"
                ));
            }
        }
    }
    out
}

fn route_label(r: &RouteRule) -> String {
    let mut parts = vec!["route".to_owned()];
    parts.extend(r.platform.clone());
    parts.extend(r.tenant.as_ref().map(|t| format!("tenant={t}")));
    parts.extend(r.profile.as_ref().map(|p| format!("profile={p}")));
    parts.join(" ")
}

/// What an operator sees of one experiment.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ExperimentReport {
    /// The route.
    pub route: String,
    /// The candidate plugin.
    pub candidate: String,
    /// `shadow` or `canary`.
    pub kind: &'static str,
    /// Shadow: forwards both converted and compared.
    pub compared: u64,
    /// Shadow: … with the same outcome.
    pub agreed: u64,
    /// Shadow: … with a difference.
    pub differed: u64,
    /// Conversions the candidate failed (contained).
    pub candidate_faulted: u64,
    /// Shadow: sampled forwards dropped because the queue was full.
    pub dropped: u64,
    /// Canary: conversions the candidate served for real.
    pub served: u64,
    /// Canary: why it was taken out of the route, if it was.
    pub rolled_back: Option<String>,
    /// The latest differences (shadow), newest last.
    pub latest: VecDeque<Vec<String>>,
}

/// An experiment's state: its report and the canary's windows.
#[derive(Default)]
struct State {
    report: ExperimentReport,
    /// Last outcomes, `true` for a fault.
    candidate_window: VecDeque<bool>,
    active_window: VecDeque<bool>,
}

/// Every experiment of the host, keyed by route and candidate.
#[derive(Default)]
pub(crate) struct Experiments {
    states: Mutex<BTreeMap<(Arc<str>, String), State>>,
    shadow: Mutex<Option<SyncSender<Box<Job>>>>,
    queued_bytes: Arc<AtomicUsize>,
    log: Mutex<Option<Log>>,
}

impl Experiments {
    fn with<T>(&self, e: &Experiment, kind: &'static str, f: impl FnOnce(&mut State) -> T) -> T {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let state = states
            .entry((Arc::clone(&e.label), e.candidate.description.name.clone()))
            .or_default();
        if state.report.route.is_empty() {
            state.report.route = e.label.to_string();
            state.report.candidate = e.candidate.description.name.clone();
            state.report.kind = kind;
        }
        f(state)
    }

    /// Every experiment's report.
    pub(crate) fn reports(&self) -> Vec<ExperimentReport> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states.values().map(|s| s.report.clone()).collect()
    }

    /// A reload puts every rolled-back canary back.
    pub(crate) fn reset_rollbacks(&self) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        for s in states.values_mut() {
            s.report.rolled_back = None;
            s.candidate_window.clear();
            s.active_window.clear();
        }
    }

    fn rolled_back(&self, e: &Experiment) -> bool {
        self.with(e, "canary", |s| s.report.rolled_back.is_some())
    }
}
impl PluginHost {
    /// Every shadow and canary experiment: counts, latest differences, and
    /// why a canary was rolled back.
    pub fn experiments(&self) -> Vec<ExperimentReport> {
        self.inner.experiments.reports()
    }

    /// The live conversion of a route with an experiment: a shadow is
    /// queued (never waited for); a canary may serve the candidate's
    /// outcome instead.
    pub(crate) async fn with_experiment(
        &self,
        request: &Arc<bindings::Request>,
        conversion: Conversion,
    ) -> Conversion {
        let table = self.table();
        let Some(target) = table.resolve(
            request.platform(),
            request.profile(),
            conversion.tenant.as_deref(),
        ) else {
            return conversion;
        };
        let Some(experiment) = target.experiment.clone() else {
            return conversion;
        };
        if conversion.plugin.as_deref() != Some(&*target.plugin.name) {
            return conversion;
        }
        match experiment.kind {
            Kind::Shadow { sample } => {
                if sample > 0.0 && rand::random::<f64>() < sample {
                    self.queue_shadow(request, conversion.clone(), experiment, target);
                }
                conversion
            }
            Kind::Canary {
                percent,
                window,
                margin,
            } => {
                self.canary(
                    request,
                    conversion,
                    experiment,
                    target,
                    (percent, window, margin),
                )
                .await
            }
        }
    }
    /// The candidate's conversion of `request`, in a fresh sandbox on the
    /// route's configuration and grant (its own stats: its faults are its
    /// own).
    async fn convert_candidate(
        &self,
        request: &Arc<bindings::Request>,
        experiment: &Experiment,
        target: &Resolved,
        tenant: Option<String>,
    ) -> Conversion {
        let candidate = Resolved {
            plugin: Arc::clone(&experiment.candidate),
            config: Arc::clone(&target.config),
            grant: target.grant.clone(),
            isolation: crate::policy::Isolation::PerRequest,
            experiment: None,
        };
        let config = Arc::clone(&target.config);
        self.inner
            .convert_fresh(request, &candidate, config, tenant)
            .await
    }
}
impl PluginHost {
    /// Converts `forward` with the plugin named `name`, whatever the routing
    /// says (`plugins diff`), on the configuration `config` and the grant of
    /// the forward's route. A plugin that is not loaded, or does not list
    /// the platform, is a `no_route` failure.
    pub async fn convert_as(
        &self,
        name: &str,
        forward: &hermes_protocol::forward::PassthroughForward,
        config: BTreeMap<String, String>,
    ) -> Conversion {
        let table = self.table();
        let platform = forward.platform.as_str();
        let Some(plugin) = table
            .by_name
            .get(name)
            .filter(|p| p.converts(platform))
            .cloned()
        else {
            return Conversion::new(
                None,
                None,
                Outcome::Failed(crate::PluginError::NoRoute {
                    platform: platform.to_owned(),
                }),
            );
        };
        let grant = table
            .resolve(platform, forward.profile.as_deref(), None)
            .map(|r| r.grant)
            .unwrap_or_default();
        let config = Arc::new(config);
        let target = Resolved {
            plugin,
            config: Arc::clone(&config),
            grant,
            isolation: crate::policy::Isolation::PerRequest,
            experiment: None,
        };
        let request = Arc::new(bindings::Request::new(forward));
        self.inner
            .convert_fresh(&request, &target, config, None)
            .await
    }
}
/// An outcome as compared: its kind, error kind, and every event field.
pub fn comparable(c: &Conversion) -> Value {
    match &c.outcome {
        Outcome::Events(events) => json!({"outcome": "event", "events": events}),
        Outcome::Ignored(reason) => json!({"outcome": "ignored", "reason": reason}),
        Outcome::Rejected { kind, .. } => json!({"outcome": "error", "error_kind": kind.as_str()}),
        Outcome::Failed(e) => json!({"outcome": "failed", "failure_kind": e.kind().as_str()}),
    }
}

/// The fields where `a` and `b` differ, as `path: A → B` lines.
pub fn differences(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", a, b, &mut out);
    out
}

fn diff_into(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_into(
                    &sub,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_into(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} → {b}")),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field() {
        let a = json!({"outcome": "event", "events": [{"text": "a", "source": {"chat_id": "1"}}]});
        let b = json!({"outcome": "event", "events": [{"text": "b", "source": {"chat_id": "1"}}]});
        assert_eq!(differences(&a, &b), ["events[0].text: \"a\" → \"b\""]);
        assert!(differences(&a, &a).is_empty());
        let c = json!({"outcome": "ignored", "reason": "ping"});
        let d = differences(&a, &c);
        assert!(
            d.contains(&"outcome: \"event\" → \"ignored\"".to_owned()),
            "{d:?}"
        );
    }
}
