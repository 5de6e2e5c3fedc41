//! `--record DIR`: live passthrough forwards written as a webhook corpus
//! (`manifest.json` version 2 and one body file per case), each with the
//! outcome its plugin gave as the case's expectation, so that
//! `plugins test PLUGINS --corpus DIR` replays real traffic against a new
//! plugin version before it reaches a tenant.
//!
//! What a recording may hold is the operator's decision, and bounded:
//!
//! - bodies are user data: only forwards of the tenants named with
//!   `--record-tenant` are recorded (`*` for every tenant; `dev` records
//!   everything by default, it is the developer's own traffic);
//! - header values that look like credentials (`authorization`, cookies,
//!   anything named like a token, secret, signature, password or key) and
//!   the headers named with `--record-redact-header` are replaced by
//!   `[redacted]`;
//! - at most `--record-max-cases` cases and `--record-max-bytes` bytes of
//!   bodies and entries, counted when a forward is offered, so the queue to
//!   the writer is bounded by the same figures; past them, nothing more is
//!   recorded (logged once);
//! - the directory is created `0700`, files `0600`.
//!
//! The hot path only builds the entry and hands it to a writer thread
//! (files are written off the async runtime); a conversion never waits for
//! the disk.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, bail};
use clap::Args;
use hermes_plugin_host::{Conversion, Outcome, PluginHost};
use hermes_protocol::forward::PassthroughForward;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tracing::{info, warn};

/// The recording flags of `run` and `dev`.
#[derive(Debug, Clone, Args)]
pub struct RecordFlags {
    /// Record each passthrough forward, with its conversion outcome, as a
    /// corpus case in DIR (created 0700; appended to if it holds one).
    /// `plugins test PLUGINS --corpus DIR` replays it.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Record only forwards of this tenant (repeatable; `*` for every
    /// tenant). `run` records nobody's bodies unless told; `dev` records
    /// everything by default.
    #[arg(long = "record-tenant", value_name = "TENANT")]
    pub record_tenants: Vec<String>,
    /// Replace this header's value by `[redacted]` in recorded cases
    /// (repeatable; credential-like headers always are).
    #[arg(long = "record-redact-header", value_name = "NAME")]
    pub record_redact: Vec<String>,
    /// Stop recording after this many cases.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub record_max_cases: usize,
    /// Stop recording after this many bytes of bodies and entries.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub record_max_bytes: u64,
}

/// The replacement of a redacted header value.
pub const REDACTED: &str = "[redacted]";

/// Header names always redacted, whole.
const ALWAYS_REDACTED: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Parts of a header name that mark it as a credential.
const CREDENTIAL_WORDS: [&str; 6] = ["token", "secret", "signature", "password", "auth", "key"];

/// Which tenants' forwards are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tenants {
    All,
    Named(BTreeSet<String>),
}

/// The settings of a recording, checked.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    dir: PathBuf,
    tenants: Tenants,
    redact: Vec<String>,
    max_cases: usize,
    max_bytes: u64,
}

impl RecordOptions {
    /// The options the flags give, or `None` without `--record`. `every_tenant_by_default`
    /// is `dev`'s default; `run` refuses to record without `--record-tenant`.
    pub fn from_flags(
        flags: &RecordFlags,
        every_tenant_by_default: bool,
    ) -> anyhow::Result<Option<Self>> {
        let Some(dir) = &flags.record else {
            if !flags.record_tenants.is_empty() || !flags.record_redact.is_empty() {
                bail!("--record-tenant and --record-redact-header need --record DIR");
            }
            return Ok(None);
        };
        let tenants = if flags.record_tenants.iter().any(|t| t == "*")
            || (flags.record_tenants.is_empty() && every_tenant_by_default)
        {
            Tenants::All
        } else if flags.record_tenants.is_empty() {
            bail!(
                "--record keeps request bodies, which are your users' messages: name the tenants whose forwards may be recorded with --record-tenant TENANT (or --record-tenant '*' for all)"
            );
        } else {
            Tenants::Named(flags.record_tenants.iter().cloned().collect())
        };
        Ok(Some(Self {
            dir: dir.clone(),
            tenants,
            redact: flags
                .record_redact
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            max_cases: flags.record_max_cases,
            max_bytes: flags.record_max_bytes,
        }))
    }

    /// Whether a header's value is replaced in recorded cases.
    fn redacts(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        ALWAYS_REDACTED.contains(&name.as_str())
            || CREDENTIAL_WORDS.iter().any(|w| name.contains(w))
            || self.redact.contains(&name)
    }
}

/// One case on its way to the writer.
struct Pending {
    entry: Value,
    platform: String,
    body: Vec<u8>,
    /// What it counts against [`QUEUE_BYTES`].
    size: u64,
}

/// A running recording. Cheap to clone; the writer thread ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Recorder {
    options: Arc<RecordOptions>,
    queue: SyncSender<Pending>,
    /// Cases and bytes taken so far (written, queued, or in the manifest
    /// the recording started from).
    cases: Arc<AtomicUsize>,
    bytes: Arc<AtomicU64>,
    full: Arc<AtomicBool>,
    /// Bytes of the cases queued for the writer, not yet written.
    queued: Arc<AtomicU64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.options.dir)
            .finish_non_exhaustive()
    }
}

/// Cases the writer may have queued at once (each also counted against
/// the byte budget when offered).
const QUEUE: usize = 256;
/// … and their bytes at most, whatever the recording's own budget.
const QUEUE_BYTES: u64 = 16 << 20;

impl Recorder {
    /// Opens (or creates) the corpus directory and starts the writer.
    pub fn start(options: RecordOptions) -> anyhow::Result<Self> {
        let dir = options.dir.clone();
        let dir = &dir;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the recording directory {}", dir.display()))?;
        let cases = read_manifest(dir)?;
        let bytes: u64 = cases
            .iter()
            .map(|c| c["body_bytes"].as_u64().unwrap_or(0) + c.to_string().len() as u64)
            .sum();
        info!(dir = %dir.display(), existing = cases.len(), "recording passthrough forwards");
        let (queue, pending) = sync_channel(QUEUE);
        let recorder = Self {
            cases: Arc::new(AtomicUsize::new(cases.len())),
            bytes: Arc::new(AtomicU64::new(bytes)),
            full: Arc::new(AtomicBool::new(false)),
            queued: Arc::new(AtomicU64::new(0)),
            options: Arc::new(options),
            queue,
        };
        let writer = Writer {
            dir: dir.clone(),
            cases: Mutex::new(cases),
            queued: Arc::clone(&recorder.queued),
        };
        std::thread::Builder::new()
            .name("hermes-record".to_owned())
            .spawn(move || writer.run(pending))
            .context("cannot start the recording thread")?;
        Ok(recorder)
    }

    /// Records `forward` with its `conversion` if the options allow it and
    /// the budget has room. Never blocks: the files are written by the
    /// writer thread.
    pub fn offer(&self, host: &PluginHost, forward: &PassthroughForward, conversion: &Conversion) {
        let tenant = conversion.tenant.as_deref();
        let allowed = match &self.options.tenants {
            Tenants::All => true,
            Tenants::Named(names) => tenant.is_some_and(|t| names.contains(t)),
        };
        // A failure of the host right now (overloaded, quarantined) says
        // nothing about the request: no expectation to keep.
        let transient = matches!(&conversion.outcome, Outcome::Failed(e)
            if hermes_gateway_core::adapters::is_transient(e, host.limits().outer_timeout));
        if !allowed || transient || self.full.load(Ordering::Relaxed) {
            return;
        }
        let entry = self.entry(host, forward, conversion);
        let size = forward.body.len() as u64 + entry.to_string().len() as u64;
        if !self.reserve(size) {
            return;
        }
        let behind = || warn!("recording: the writer is behind; a forward was not recorded");
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.release(size);
            return behind();
        }
        let pending = Pending {
            entry,
            platform: forward.platform.clone(),
            body: forward.body.clone(),
            size,
        };
        if let Err(e) = self.queue.try_send(pending) {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.release(size);
            if matches!(e, TrySendError::Full(_)) {
                behind();
            }
        }
    }

    /// Takes one case and `size` bytes of the budget, or says it is spent
    /// (logged once).
    fn reserve(&self, size: u64) -> bool {
        let o = &self.options;
        let cases = self.cases.fetch_add(1, Ordering::Relaxed);
        let bytes = self.bytes.fetch_add(size, Ordering::Relaxed);
        if cases < o.max_cases && bytes + size <= o.max_bytes {
            return true;
        }
        self.release(size);
        if !self.full.swap(true, Ordering::Relaxed) {
            warn!(
                max_cases = o.max_cases,
                max_bytes = o.max_bytes,
                "recording stopped: its case or byte limit is reached"
            );
        }
        false
    }

    fn release(&self, size: u64) {
        self.cases.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(size, Ordering::Relaxed);
    }

    /// The manifest entry (without `file`, which the writer assigns).
    fn entry(&self, host: &PluginHost, forward: &PassthroughForward, c: &Conversion) -> Value {
        let headers: Vec<[&str; 2]> = forward
            .headers
            .iter()
            .map(|(name, value)| {
                let value = if self.options.redacts(name) {
                    REDACTED
                } else {
                    value.as_str()
                };
                [name.as_str(), value]
            })
            .collect();
        let plugin = c.plugin.as_deref();
        let described = plugin.and_then(|name| host.plugins().into_iter().find(|p| p.name == name));
        let (line, _) = crate::convert::render(plugin, &c.outcome);
        let mut expect: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(fields) = expect.as_object_mut() {
            // Which plugin answered is not part of the expectation: a
            // renamed or replacing plugin may give the same outcome.
            fields.remove("plugin");
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "description": format!(
                "recorded from live traffic: plugin {} {}, tenant {}",
                plugin.unwrap_or("(none)"),
                described.as_ref().map_or("", |d| d.version.as_str()),
                c.tenant.as_deref().unwrap_or("(none)"),
            ),
            "forward": {
                "platform": forward.platform,
                "bot_id": forward.bot_id,
                "method": forward.method,
                "path": forward.path,
                "headers": headers,
                "profile": forward.profile,
            },
            "body_bytes": forward.body.len(),
            "body_sha256": hex::encode(Sha256::digest(&forward.body)),
            // Replayed once, as routed: the policy gives the tenant config.
            "config": {},
            "recorded": {
                "plugin": plugin,
                "version": described.as_ref().map(|d| d.version.clone()),
                "sha256": described.as_ref().map(|d| d.sha256.clone()),
                "tenant": c.tenant,
                "at": at,
            },
            "expect": expect,
        })
    }
}

/// The cases of an existing `manifest.json` in `dir` (none if absent).
fn read_manifest(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let path = dir.join("manifest.json");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let manifest: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if manifest["version"] != 2 {
        bail!(
            "{} is not a version 2 corpus manifest; record into another directory",
            path.display()
        );
    }
    Ok(manifest["cases"].as_array().cloned().unwrap_or_default())
}

/// The writer thread's state: the manifest's cases so far.
struct Writer {
    dir: PathBuf,
    cases: Mutex<Vec<Value>>,
    queued: Arc<AtomicU64>,
}

impl Writer {
    /// Writes cases as they come, the manifest once per batch, until every
    /// [`Recorder`] is dropped.
    fn run(self, pending: Receiver<Pending>) {
        while let Ok(first) = pending.recv() {
            let batch = std::iter::once(first).chain(pending.try_iter());
            for case in batch {
                self.queued.fetch_sub(case.size, Ordering::Relaxed);
                if let Err(e) = self.write_case(case) {
                    warn!(error = %format!("{e:#}"), "recording: a case was not written");
                }
            }
            if let Err(e) = self.write_manifest() {
                warn!(error = %format!("{e:#}"), "recording: the manifest was not written");
            }
        }
    }

    fn write_case(&self, mut case: Pending) -> anyhow::Result<()> {
        let mut cases = self.cases.lock().unwrap_or_else(PoisonError::into_inner);
        // The platform comes from the wire: only a plain name becomes a
        // directory.
        let plain = !case.platform.is_empty()
            && case.platform.len() <= 64
            && case
                .platform
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let sub = if plain {
            case.platform.as_str()
        } else {
            "other"
        };
        let file = format!("{sub}/recorded-{:06}.body", cases.len() + 1);
        let path = self.dir.join(&file);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        write_private(&path, &case.body)?;
        if let Some(fields) = case.entry.as_object_mut() {
            fields.insert("file".to_owned(), json!(file));
        }
        cases.push(case.entry);
        Ok(())
    }

    /// Replaces `manifest.json` whole (a reader never sees half of one).
    fn write_manifest(&self) -> anyhow::Result<()> {
        let cases = self.cases.lock().unwrap_or_else(PoisonError::into_inner);
        let manifest = json!({
            "version": 2,
            "note": "Recorded by hermes-gateway --record: each forward with the outcome its plugin gave. Replay with `hermes-gateway plugins test PLUGINS --corpus DIR`.",
            "cases": *cases,
        });
        let text = serde_json::to_string_pretty(&manifest)?;
        let tmp = self.dir.join(".manifest.json.tmp");
        write_private(&tmp, text.as_bytes())?;
        let path = self.dir.join("manifest.json");
        fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))
    }
}

/// Writes `bytes` to a new or truncated file only its owner may read.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(record: Option<&str>, tenants: &[&str]) -> RecordFlags {
        RecordFlags {
            record: record.map(PathBuf::from),
            record_tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            record_redact: vec!["X-Shop-Id".to_owned()],
            record_max_cases: 10,
            record_max_bytes: 1000,
        }
    }

    #[test]
    fn run_must_name_the_tenants_it_records() {
        let err = RecordOptions::from_flags(&flags(Some("d"), &[]), false).expect_err("refused");
        assert!(err.to_string().contains("--record-tenant"), "{err}");
        let all = RecordOptions::from_flags(&flags(Some("d"), &[]), true)
            .expect("dev records everything")
            .expect("on");
        assert_eq!(all.tenants, Tenants::All);
        let named = RecordOptions::from_flags(&flags(Some("d"), &["acme"]), false)
            .expect("named")
            .expect("on");
        assert_eq!(named.tenants, Tenants::Named(["acme".to_owned()].into()));
        let star = RecordOptions::from_flags(&flags(Some("d"), &["acme", "*"]), false)
            .expect("star")
            .expect("on");
        assert_eq!(star.tenants, Tenants::All);
        assert!(
            RecordOptions::from_flags(&flags(None, &["acme"]), false).is_err(),
            "a tenant without --record is a mistake"
        );
    }

    #[test]
    fn credential_like_and_listed_headers_are_redacted() {
        let o = RecordOptions::from_flags(&flags(Some("d"), &["*"]), false)
            .expect("ok")
            .expect("on");
        for secret in [
            "Authorization",
            "cookie",
            "X-Slack-Signature",
            "x-telegram-bot-api-secret-token",
            "X-Api-Key",
            "x-shop-id",
        ] {
            assert!(o.redacts(secret), "{secret}");
        }
        for plain in ["content-type", "user-agent", "x-chat-id"] {
            assert!(!o.redacts(plain), "{plain}");
        }
    }
}
