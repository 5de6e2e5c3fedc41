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
//!   waits for any of it.
//! - **Canary** (`canary = { plugin, percent }`): a stable share of the
//!   conversations — by a hash of the event's session key (default key
//!   settings), so one conversation never flips — gets the candidate's
//!   outcome for real. A candidate that faults is contained (the active
//!   plugin's outcome is served) and counted; when its fault rate over its
//!   last `window` conversions exceeds the active plugin's by more than
//!   `margin`, it is rolled back: out of the route until the next reload,
//!   logged, counted, and shown with the reason in `/plugins`.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::Serialize;
use serde_json::{Value, json};

use crate::outcome::{Conversion, Outcome};
use crate::policy::{Canary, PlatformPolicy, RouteRule};
use crate::table::{LoadedPlugin, Resolved};
use crate::{Inner, PluginHost, bindings};

/// Shadow jobs waiting at most, and the bytes of their requests.
const SHADOW_QUEUE: usize = 64;
const SHADOW_QUEUE_BYTES: usize = 16 << 20;
/// Latest differences kept per experiment, lines per difference.
const LATEST: usize = 16;
const LINES: usize = 8;
/// The most a JSONL log grows; then it stops (said once).
const LOG_MAX_BYTES: u64 = 64 << 20;

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

struct Log {
    file: std::fs::File,
    written: u64,
    bodies: bool,
    full: bool,
}

/// One shadow comparison to make.
struct Job {
    request: Arc<bindings::Request>,
    active: Conversion,
    experiment: Experiment,
    target: Resolved,
    tenant: Option<String>,
    bytes: usize,
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
    /// Writes each shadow difference as a JSON line to `path` (appended,
    /// created 0600; at most 64 MiB, then it stops). Request bodies are
    /// written only with `bodies`; header values never are.
    pub fn set_shadow_log(&self, path: PathBuf, bodies: bool) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let written = file.metadata().map_or(0, |m| m.len());
        *self
            .inner
            .experiments
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Log {
            file,
            written,
            bodies,
            full: false,
        });
        Ok(())
    }

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

    fn queue_shadow(
        &self,
        request: &Arc<bindings::Request>,
        active: Conversion,
        experiment: Experiment,
        target: Resolved,
    ) {
        let exps = &self.inner.experiments;
        let bytes = request.body_len() + 1024;
        let drop_it = |e: &Experiment| exps.with(e, "shadow", |s| s.report.dropped += 1);
        if exps.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > SHADOW_QUEUE_BYTES {
            exps.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return drop_it(&experiment);
        }
        let sender = {
            let mut shadow = exps.shadow.lock().unwrap_or_else(PoisonError::into_inner);
            if shadow.is_none() {
                *shadow = start_shadow_worker(Arc::downgrade(&self.inner));
            }
            shadow.clone()
        };
        let tenant = active.tenant.clone();
        let job = Box::new(Job {
            request: Arc::clone(request),
            active,
            experiment,
            target,
            tenant,
            bytes,
        });
        let refused = match sender.map(|s| s.try_send(job)) {
            Some(Ok(())) => None,
            Some(Err(TrySendError::Full(job) | TrySendError::Disconnected(job))) => Some(job),
            None => None,
        };
        if let Some(job) = refused {
            exps.queued_bytes.fetch_sub(job.bytes, Ordering::Relaxed);
            drop_it(&job.experiment);
        }
    }

    async fn canary(
        &self,
        request: &Arc<bindings::Request>,
        active: Conversion,
        experiment: Experiment,
        target: Resolved,
        (percent, window, margin): (u8, usize, f64),
    ) -> Conversion {
        let exps = &self.inner.experiments;
        let active_fault = matches!(&active.outcome, Outcome::Failed(e) if e.is_fault());
        exps.with(&experiment, "canary", |s| {
            push(&mut s.active_window, active_fault, window)
        });
        if exps.rolled_back(&experiment) {
            return active;
        }
        // Stickiness: the conversation's session key decides, so every
        // message of one conversation goes the same way.
        let Outcome::Events(events) = &active.outcome else {
            return active;
        };
        let Some(first) = events.first() else {
            return active;
        };
        let key = hermes_protocol::session::session_key(
            &first.event.source,
            request.profile(),
            &hermes_protocol::session::SessionKeySettings::default(),
        );
        if bucket(key.as_str()) >= u32::from(percent) {
            return active;
        }
        let candidate = self
            .convert_candidate(request, &experiment, &target, active.tenant.clone())
            .await;
        let fault = matches!(&candidate.outcome, Outcome::Failed(_));
        let rolled = exps.with(&experiment, "canary", |s| {
            push(&mut s.candidate_window, fault, window);
            if fault {
                s.report.candidate_faulted += 1;
            } else {
                s.report.served += 1;
            }
            let rate = |w: &VecDeque<bool>| {
                w.iter().filter(|f| **f).count() as f64 / w.len().max(1) as f64
            };
            let (theirs, ours) = (rate(&s.candidate_window), rate(&s.active_window));
            let judged = s.candidate_window.len() >= window.min(10);
            if judged && theirs - ours > margin && s.report.rolled_back.is_none() {
                let why = format!(
                    "fault rate {:.0}% over its last {} conversions, {:.0}% for the active plugin (margin {:.0}%)",
                    theirs * 100.0,
                    s.candidate_window.len(),
                    ours * 100.0,
                    margin * 100.0
                );
                s.report.rolled_back = Some(why.clone());
                Some(why)
            } else {
                None
            }
        });
        if let Some(why) = rolled {
            tracing::warn!(route = %experiment.label, candidate = %experiment.candidate.name, "canary rolled back: {why}");
            crate::HostCounts::bump(&self.inner.counts.canary_rollbacks);
        }
        if fault { active } else { candidate }
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

/// Keeps the last `window` outcomes.
fn push(w: &mut VecDeque<bool>, fault: bool, window: usize) {
    w.push_back(fault);
    while w.len() > window {
        w.pop_front();
    }
}

/// A stable 0..100 bucket of a session key (FNV-1a).
fn bucket(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % 100
}

/// The thread that makes the shadow comparisons, on a runtime of its own:
/// nothing of it runs on the live path's threads.
fn start_shadow_worker(inner: Weak<Inner>) -> Option<SyncSender<Box<Job>>> {
    let (tx, rx) = sync_channel(SHADOW_QUEUE);
    let started = std::thread::Builder::new()
        .name("hermes-shadow".to_owned())
        .spawn(move || shadow_worker(inner, rx));
    match started {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the shadow thread; shadow forwards are dropped");
            None
        }
    }
}

fn shadow_worker(inner: Weak<Inner>, jobs: Receiver<Box<Job>>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    while let Ok(job) = jobs.recv() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner
            .experiments
            .queued_bytes
            .fetch_sub(job.bytes, Ordering::Relaxed);
        let host = PluginHost { inner };
        runtime.block_on(host.compare(*job));
    }
}

impl PluginHost {
    /// One shadow comparison, counted, kept and logged.
    async fn compare(&self, job: Job) {
        let candidate = self
            .convert_candidate(
                &job.request,
                &job.experiment,
                &job.target,
                job.tenant.clone(),
            )
            .await;
        let differences = differences(&comparable(&job.active), &comparable(&candidate));
        let faulted = matches!(candidate.outcome, Outcome::Failed(_));
        let exps = &self.inner.experiments;
        exps.with(&job.experiment, "shadow", |s| {
            let r = &mut s.report;
            r.compared += 1;
            if faulted {
                r.candidate_faulted += 1;
            }
            if differences.is_empty() {
                r.agreed += 1;
            } else {
                r.differed += 1;
                r.latest
                    .push_back(differences.iter().take(LINES).cloned().collect());
                while r.latest.len() > LATEST {
                    r.latest.pop_front();
                }
            }
        });
        if !differences.is_empty() {
            self.log_difference(&job, &differences);
        }
    }

    fn log_difference(&self, job: &Job, differences: &[String]) {
        let mut log = self
            .inner
            .experiments
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(log) = log.as_mut() else {
            return;
        };
        if log.full {
            return;
        }
        let who = |p: &LoadedPlugin| json!({"plugin": p.description.name, "version": p.description.version, "sha256": p.description.sha256});
        let mut line = json!({
            "at": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "route": &*job.experiment.label,
            "platform": job.request.platform(),
            "tenant": job.tenant,
            "active": who(&job.target.plugin),
            "candidate": who(&job.experiment.candidate),
            "differences": differences,
        });
        if log.bodies {
            use base64::Engine as _;
            line["body_b64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(job.request.body()));
        }
        let mut text = line.to_string();
        text.push('\n');
        if log.written + text.len() as u64 > LOG_MAX_BYTES {
            log.full = true;
            tracing::warn!(
                "shadow log full ({LOG_MAX_BYTES} bytes); no more differences are written"
            );
            return;
        }
        if log.file.write_all(text.as_bytes()).is_ok() {
            log.written += text.len() as u64;
        }
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

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(
            bucket("agent:main:discord:dm:1"),
            bucket("agent:main:discord:dm:1")
        );
        let spread: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| bucket(&format!("agent:main:sms:dm:+1555{i}")) / 10)
            .collect();
        assert!(spread.len() >= 8, "{spread:?}");
    }
}
