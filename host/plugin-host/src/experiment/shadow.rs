//! Shadow: a sampled forward converted again by the candidate on a thread
//! of its own, after the live one answered; compared, counted and logged.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, PoisonError, Weak};

use serde_json::json;

use super::{Experiment, comparable, differences};
use crate::outcome::{Conversion, Outcome};
use crate::table::{LoadedPlugin, Resolved};
use crate::{Inner, PluginHost, bindings};

/// Shadow jobs waiting at most, and the bytes of their requests.
const SHADOW_QUEUE: usize = 64;
const SHADOW_QUEUE_BYTES: usize = 16 << 20;
/// After each comparison the shadow thread rests this many times as long:
/// at most a tenth of a core goes to comparisons.
const SHADOW_REST: u32 = 9;
/// Latest differences kept per experiment, lines per difference.
const LATEST: usize = 16;
const LINES: usize = 8;
/// Bytes kept of each such line (an event text may be 64 KiB).
const LINE_BYTES: usize = 240;
/// The most a JSONL log grows; then it stops (said once).
const LOG_MAX_BYTES: u64 = 64 << 20;

pub(super) struct Log {
    file: std::fs::File,
    written: u64,
    bodies: bool,
    full: bool,
}

/// One shadow comparison to make.
pub(super) struct Job {
    request: Arc<bindings::Request>,
    active: Conversion,
    experiment: Experiment,
    target: Resolved,
    tenant: Option<String>,
    bytes: usize,
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

    pub(super) fn queue_shadow(
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
        let started = std::time::Instant::now();
        runtime.block_on(host.compare(*job));
        drop(host);
        // A bounded share of the CPU: rest SHADOW_REST times as long as the
        // comparison took. Meanwhile the queue fills, and a full queue drops
        // (counted), so a busy route is compared on a sample of its sample.
        std::thread::sleep(started.elapsed() * SHADOW_REST);
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
                    .push_back(differences.iter().take(LINES).map(|l| clip(l)).collect());
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

/// `line`, cut to [`LINE_BYTES`] (at a character boundary) with `…`.
fn clip(line: &str) -> String {
    if line.len() <= LINE_BYTES {
        return line.to_owned();
    }
    format!("{}…", &line[..line.floor_char_boundary(LINE_BYTES)])
}
