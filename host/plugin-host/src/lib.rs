//! # hermes-plugin-host: sandboxed converter plugins
//!
//! Webhook conversion runs in WebAssembly components that implement the
//! `converter-plugin` world of `wit/converter.wit` (package
//! `hermes:converter@0.1.0`). This crate loads them, routes each
//! [`PassthroughForward`] to one, and runs the conversion in a sandbox:
//!
//! ```no_run
//! # async fn demo(forward: hermes_protocol::forward::PassthroughForward) -> Result<(), Box<dyn std::error::Error>> {
//! use hermes_plugin_host::{PluginHost, PluginHostConfig, Outcome};
//!
//! let (host, report) = PluginHost::load(PluginHostConfig::new("plugins"))?;
//! for e in &report.errors {
//!     eprintln!("skipped: {e}");
//! }
//! let _watch = host.watch()?; // hot swap on file changes
//! let conversion = host.convert(&forward).await;
//! match conversion.outcome {
//!     Outcome::Events(events) => { /* hand to the session layer */ }
//!     Outcome::Ignored(reason) => { /* ping, status callback, ... */ }
//!     Outcome::Rejected { kind, message } => { /* typed bad input */ }
//!     Outcome::Failed(error) => { /* contained plugin failure */ }
//! }
//! # Ok(()) }
//! ```
//!
//! ## One engine, one linker, a store per call
//!
//! There is one [`wasmtime::Engine`] (component model, epoch interruption,
//! a bounded `max_wasm_stack`, the pooling allocator — or on-demand
//! allocation when the pool cannot reserve its address space) and one
//! `Linker`. Each plugin is compiled once (with an on-disk compiled-artifact
//! cache keyed by content hash and engine compatibility) and pre-instantiated
//! into a typed `ConverterPluginPre`. Every conversion gets a **fresh
//! `Store`** and instance, so nothing from one tenant's request is visible
//! while converting another's, with:
//!
//! - an epoch deadline ([`Limits::epoch_deadline`], 100 ms by default; a
//!   ticker thread advances the epoch every 2 ms) plus an outer timeout;
//! - a `ResourceLimiter` capping linear memory (32 MiB), table elements and
//!   instances;
//! - input caps (empty body, 1 MiB) checked before the guest runs; wasmtime's
//!   hostcall fuel bounding what lifting a result may copy out of the guest;
//!   then output caps (16 events, 64 KiB of text per event, 64 media urls and
//!   64 metadata pairs per event, 256 KiB in all) checked before anything is
//!   handed on (the SDK turns over-cap output into an `invalid_field`
//!   rejection first, so a valid but huge request is not a plugin fault);
//! - `log` routed into `tracing` (target `hermes_plugin`, fields `plugin` and
//!   `tenant`), capped per call in lines and bytes and per plugin over time
//!   (a token bucket, 100 lines/s with a burst of 200 by default); `config`
//!   answering from the tenant's policy map.
//!
//! The wasmtime calls are synchronous and run on a fixed pool of worker
//! threads fed by a bounded queue; a semaphore sized to the pool gives
//! backpressure (forwards wait, they are never dropped), and
//! [`PluginHost::convert`] awaits the result with an outer timeout.
//!
//! ## Why WASI is linked, and empty
//!
//! A Rust `std` guest built for `wasm32-wasip2` imports 13 `wasi:cli/*` and
//! `wasi:io/*` interfaces even if it never prints, and guests written in
//! other languages need WASI too. Instead of defining those imports as traps
//! (which turns a guest panic into an opaque "unknown import" error), the
//! host links `wasmtime-wasi` (p2, synchronous) with an **empty** context: no
//! preopened directories, no environment variables, no arguments, no network
//! (every socket address is refused and name lookup is off), frozen clocks
//! whose timers fire at once (so no guest can block a worker in `poll`),
//! an empty stdin. stdout and stderr go to a bounded in-memory buffer that is
//! attached to trap errors, so a guest's panic message reaches the log even
//! without the SDK's panic hook. A filesystem, env or socket probe inside a
//! guest simply fails.
//!
//! ## Failures are contained and counted
//!
//! Every failure is a typed [`PluginError`] for that one forward. Traps,
//! timeouts, memory-limit hits, bad output and panics are *faults*: after
//! [`QuarantinePolicy::after_faults`] consecutive faults a plugin is
//! quarantined (skipped, failing fast with [`PluginError::Quarantined`]) for
//! a backoff that doubles on each re-entry up to a cap. Typed rejections of
//! bad input are the plugin working correctly and never count. Per-plugin
//! counters are available from [`PluginHost::counters`].
//!
//! ## Routing and hot swap
//!
//! A forward goes to the plugin its platform resolves to — see [`policy`]
//! for the `policy.toml` format (platform pins, tenant and profile overrides,
//! config maps). [`PluginHost::reload`] (and the debounced watcher started by
//! [`PluginHost::watch`]) builds a new routing table in the background and
//! swaps it atomically; in-flight conversions finish on the version they
//! started with, and a file that fails to load never replaces a working
//! version of itself.

mod admission;
pub mod artifact_cache;
mod bindings;
mod engine;
mod error;
mod ownership;
pub mod policy;
mod pool;
mod sandbox;
mod stats;
mod table;
pub mod trust;
mod watch;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hermes_protocol::event::MessageEvent;
use hermes_protocol::forward::PassthroughForward;
use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use crate::artifact_cache::CacheOutcome;
pub use crate::engine::Allocator;
pub use crate::error::{FailureKind, HostError, LoadError, PluginError};
pub use crate::policy::Policy;
pub use crate::stats::{PluginCounters, QuarantinePolicy};
pub use crate::table::{LoadReport, PluginDescription, RoutingTable};
pub use crate::watch::WatchHandle;

use crate::artifact_cache::ArtifactCache;
use crate::pool::WorkerPool;
use crate::sandbox::{CallContext, ConfigMap, Session, StoreState};
use crate::stats::PluginStats;
use crate::table::{LoadedPlugin, Loader, Resolved, Table};

/// The version of `hermes:converter` this host implements.
pub const API_VERSION: &str = bindings::API_VERSION;

/// Sandbox and resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Guest CPU time per call (epoch deadline).
    pub epoch_deadline: Duration,
    /// The caller's total wait for a running conversion (queueing for a
    /// worker is not counted: that is backpressure).
    pub outer_timeout: Duration,
    /// Linear memory per conversion, bytes.
    pub max_memory_bytes: usize,
    /// Elements per table.
    pub max_table_elements: usize,
    /// Core instances, tables and memories per store.
    pub max_instances: usize,
    /// wasm stack per call, bytes.
    pub max_wasm_stack: usize,
    /// Largest body handed to a plugin; larger is `payload_too_large`.
    pub max_body_bytes: usize,
    /// Events per conversion.
    pub max_events: usize,
    /// Text bytes per event.
    pub max_event_text_bytes: usize,
    /// String bytes across all events of one conversion.
    pub max_output_bytes: usize,
    /// Captured guest stdout + stderr per conversion, bytes.
    pub max_guest_output_bytes: usize,
    /// Host-side WASI resources (streams, pollables) one conversion may
    /// hold at once. They live in host memory, outside the linear-memory
    /// limiter, so a guest that opens handles without closing them is
    /// stopped by this count instead (the call fails with a trap).
    pub max_host_resources: usize,
    /// `log` lines per call (the rest are counted and dropped).
    pub max_log_lines: u32,
    /// Bytes per `log` line (longer lines are truncated).
    pub max_log_line_bytes: usize,
    /// `log` lines per second per plugin, across all its calls (a token
    /// bucket; lines over it are counted in
    /// [`PluginCounters::log_lines_dropped`] and dropped).
    pub log_lines_per_second: u32,
    /// The bucket's size: lines a plugin may log at once after a quiet
    /// period.
    pub log_burst: u32,
    /// Worker threads running conversions.
    pub workers: usize,
    /// Conversions one plugin may run at once (default: one fewer than
    /// `workers`, at least one), so a slow plugin always leaves a worker
    /// to the others.
    pub per_plugin_workers: usize,
    /// Forwards that may wait for one busy plugin; more are refused with
    /// [`PluginError::Overloaded`] rather than held in front of other
    /// plugins' forwards.
    pub per_plugin_queue: usize,
    /// Quarantine after repeated faults.
    pub quarantine: QuarantinePolicy,
    /// Quiet period after a file change before the watcher reloads.
    pub reload_debounce: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            epoch_deadline: Duration::from_millis(100),
            outer_timeout: Duration::from_secs(2),
            max_memory_bytes: 32 << 20,
            max_table_elements: 20_000,
            max_instances: 32,
            max_wasm_stack: 512 << 10,
            max_body_bytes: 1 << 20,
            max_events: 16,
            max_event_text_bytes: 64 << 10,
            max_output_bytes: 256 << 10,
            max_guest_output_bytes: 16 << 10,
            max_host_resources: 256,
            max_log_lines: 32,
            max_log_line_bytes: 1024,
            log_lines_per_second: 100,
            log_burst: 200,
            workers,
            per_plugin_workers: workers.saturating_sub(1).max(1),
            per_plugin_queue: 256,
            quarantine: QuarantinePolicy::default(),
            reload_debounce: Duration::from_millis(200),
        }
    }
}

/// Where plugins come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginHostConfig {
    /// Every `*.wasm` in this directory is loaded.
    pub plugins_dir: PathBuf,
    /// The policy file; default `plugins_dir/policy.toml` (absent = empty).
    pub policy_file: Option<PathBuf>,
    /// Compiled-artifact cache directory; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Sandbox limits.
    pub limits: Limits,
}

impl PluginHostConfig {
    /// Defaults for a plugins directory.
    pub fn new(plugins_dir: impl Into<PathBuf>) -> Self {
        Self {
            plugins_dir: plugins_dir.into(),
            policy_file: None,
            cache_dir: None,
            limits: Limits::default(),
        }
    }

    fn policy_path(&self) -> PathBuf {
        self.policy_file
            .clone()
            .unwrap_or_else(|| self.plugins_dir.join("policy.toml"))
    }
}

/// How the host must answer an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ReplyRoute {
    /// `send` to the event's chat.
    Send,
    /// `follow_up` through a capability the connector vaulted, by kind
    /// (`discord.interaction_token`, `slack.response_url`).
    FollowUp {
        /// The capability kind.
        kind: String,
    },
}

/// One event a plugin produced. Serializes to the wire MessageEvent with
/// every optional key written, plus `is_bot`, `reply_route` and `metadata`
/// (the event form `hermes-gateway convert` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedEvent {
    /// The message for the session layer.
    pub event: MessageEvent,
    /// How replies to it must be sent.
    pub reply_route: ReplyRoute,
    /// Informational extras from the plugin.
    pub metadata: Vec<(String, String)>,
}

/// Why a request was rejected (conversion.md §5), in check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RejectKind {
    EmptyBody,
    PayloadTooLarge,
    UnsupportedContentType,
    InvalidEncoding,
    InvalidForm,
    InvalidJson,
    MissingField,
    InvalidField,
    UnsupportedType,
}

impl RejectKind {
    /// The wire spelling (`empty_body`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyBody => "empty_body",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedContentType => "unsupported_content_type",
            Self::InvalidEncoding => "invalid_encoding",
            Self::InvalidForm => "invalid_form",
            Self::InvalidJson => "invalid_json",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::UnsupportedType => "unsupported_type",
        }
    }
}

/// What came of one forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Zero or more events, in order.
    Events(Vec<ConvertedEvent>),
    /// A valid request without a user message, with the plugin's reason.
    Ignored(String),
    /// Typed bad input.
    Rejected {
        /// The kind.
        kind: RejectKind,
        /// A short explanation.
        message: String,
    },
    /// The plugin failed (contained).
    Failed(PluginError),
}

/// One conversion: which plugin handled it and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// The plugin that converted (or was chosen to convert) the forward.
    pub plugin: Option<String>,
    /// The tenant key the routing used, when the plugin gave one. It is
    /// only computed when a tenant route could use it: for a platform with
    /// no `[[route]]` naming a tenant, `tenant-of` is not called and this is
    /// `None`.
    pub tenant: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
}

impl Conversion {
    fn new(plugin: Option<&str>, tenant: Option<String>, outcome: Outcome) -> Self {
        Self {
            plugin: plugin.map(str::to_owned),
            tenant,
            outcome,
        }
    }
}

/// The plugin host. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins_dir", &self.inner.config.plugins_dir)
            .field("allocator", &self.inner.allocator)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: PluginHostConfig,
    policy_path: PathBuf,
    engine: Engine,
    allocator: Allocator,
    linker: Linker<StoreState>,
    cache: Option<ArtifactCache>,
    /// The current table. The lock is held only to clone or replace the
    /// `Arc`, never across a call into a guest or an await.
    table: RwLock<Arc<Table>>,
    stats: Mutex<BTreeMap<String, Arc<PluginStats>>>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// Routing tables built so far (the load at start is the first).
    tables_built: std::sync::atomic::AtomicU64,
    pool: WorkerPool,
    permits: Arc<tokio::sync::Semaphore>,
    _ticker: engine::Ticker,
}

impl PluginHost {
    /// Load every plugin of `config.plugins_dir` and the policy. Bad files
    /// are reported in the [`LoadReport`] and skipped; only an unreadable
    /// directory, a malformed policy or an engine failure is fatal.
    pub fn load(config: PluginHostConfig) -> Result<(Self, LoadReport), HostError> {
        ownership::check(&config.plugins_dir).map_err(|message| HostError::UntrustedDir {
            dir: config.plugins_dir.clone(),
            message,
        })?;
        let files = table::wasm_files(&config.plugins_dir).map_err(|e| HostError::PluginsDir {
            dir: config.plugins_dir.clone(),
            message: e.to_string(),
        })?;
        let policy_path = config.policy_path();
        let policy = Policy::load(&policy_path).map_err(|message| {
            HostError::Policy(LoadError::Policy {
                file: policy_path.clone(),
                message,
            })
        })?;
        let limits = &config.limits;
        let (engine, allocator) = engine::build(limits, files.len())?;
        let mut linker = engine::linker(&engine)?;
        sandbox::shadow_blocking_clocks(&mut linker)?;
        let cache = config
            .cache_dir
            .clone()
            .and_then(|dir| ArtifactCache::new(dir, &engine));
        let workers = limits.workers.max(1);
        let pool = WorkerPool::new(workers, workers)?;
        let ticker = engine::Ticker::start(engine.clone())?;
        let host = Self {
            inner: Arc::new(Inner {
                policy_path,
                engine,
                allocator,
                linker,
                cache,
                table: RwLock::new(Arc::new(Table::default())),
                stats: Mutex::new(BTreeMap::new()),
                reloading: Mutex::new(()),
                tables_built: std::sync::atomic::AtomicU64::new(0),
                pool,
                permits: Arc::new(tokio::sync::Semaphore::new(workers)),
                _ticker: ticker,
                config,
            }),
        };
        let report = host.rebuild(&files, policy, Vec::new());
        Ok((host, report))
    }

    /// Reload the directory and the policy now, off the async runtime, and
    /// swap the routing table atomically.
    pub async fn reload(&self) -> LoadReport {
        let host = self.clone();
        match tokio::task::spawn_blocking(move || host.reload_blocking()).await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "plugin reload task failed");
                LoadReport::default()
            }
        }
    }

    /// [`reload`](Self::reload) on the calling thread (compiles: slow).
    pub fn reload_blocking(&self) -> LoadReport {
        let _one_at_a_time = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut errors = Vec::new();
        if let Err(message) = ownership::check(&self.inner.config.plugins_dir) {
            // Made writable to others since the start: keep serving what is
            // loaded, load nothing new from it.
            let mut report = LoadReport::default();
            report.errors.push(LoadError::Untrusted {
                file: self.inner.config.plugins_dir.clone(),
                message,
            });
            report.loaded = self.plugins();
            return report;
        }
        let files = match table::wasm_files(&self.inner.config.plugins_dir) {
            Ok(files) => files,
            Err(e) => {
                // The directory vanished: keep serving what is loaded.
                let mut report = LoadReport::default();
                report.errors.push(LoadError::Io {
                    file: self.inner.config.plugins_dir.clone(),
                    message: e.to_string(),
                });
                report.loaded = self.plugins();
                return report;
            }
        };
        let policy = match Policy::load(&self.inner.policy_path) {
            Ok(p) => p,
            Err(message) => {
                errors.push(LoadError::Policy {
                    file: self.inner.policy_path.clone(),
                    message: format!("{message}; keeping the previous policy"),
                });
                self.table().policy.clone()
            }
        };
        self.rebuild(&files, policy, errors)
    }

    fn rebuild(&self, files: &[PathBuf], policy: Policy, errors: Vec<LoadError>) -> LoadReport {
        let inner = &*self.inner;
        let previous = self.table();
        let mut report = LoadReport {
            errors,
            ..LoadReport::default()
        };
        // `describe()` runs here, and WASI's synchronous bindings enter a
        // tokio runtime for every guest stdio call: on a thread that is
        // inside one already (a caller's `block_on`, an async test) that
        // panics. A scoped thread has no runtime context.
        let table = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let limits = &inner.config.limits;
                    let stats = |name: &str| -> Arc<PluginStats> {
                        let mut map = inner.stats.lock().unwrap_or_else(PoisonError::into_inner);
                        Arc::clone(map.entry(name.to_owned()).or_insert_with(|| {
                            let admission = admission::Admission::new(
                                limits.per_plugin_workers,
                                limits.per_plugin_queue,
                            );
                            Arc::new(PluginStats::new(admission))
                        }))
                    };
                    let loader = Loader {
                        engine: &inner.engine,
                        linker: &inner.linker,
                        cache: inner.cache.as_ref(),
                        limits: &inner.config.limits,
                        stats: &stats,
                        policy_file: &inner.policy_path,
                    };
                    loader.build(files, policy, &previous, &mut report)
                })
                .join()
        });
        let table = match table {
            Ok(t) => t,
            Err(_) => {
                tracing::error!("plugin loading panicked; keeping the previous table");
                return report;
            }
        };
        *inner.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        inner
            .tables_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        report
    }

    /// How many routing tables were built: 1 after the load at start, one
    /// more per reload (on demand or by the watcher).
    pub fn tables_built(&self) -> u64 {
        self.inner
            .tables_built
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn table(&self) -> Arc<Table> {
        Arc::clone(
            &self
                .inner
                .table
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Start the debounced watcher on the plugins directory and the policy
    /// file; changes trigger [`reload_blocking`](Self::reload_blocking) on
    /// the watcher's thread. Dropping the handle stops it.
    pub fn watch(&self) -> Result<WatchHandle, HostError> {
        watch::start(
            self,
            &self.inner.config.plugins_dir,
            &self.inner.policy_path,
            self.inner.config.limits.reload_debounce,
        )
    }

    /// What is loaded.
    pub fn plugins(&self) -> Vec<PluginDescription> {
        self.table()
            .by_name
            .values()
            .map(|p| p.description.clone())
            .collect()
    }

    /// What routes where.
    pub fn routing_table(&self) -> RoutingTable {
        self.table().describe()
    }

    /// Counters per plugin name (kept across reloads).
    pub fn counters(&self) -> BTreeMap<String, PluginCounters> {
        let now = Instant::now();
        let map = self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(k, s)| (k.clone(), s.snapshot(now)))
            .collect()
    }

    /// The instance allocator in use.
    pub fn allocator(&self) -> Allocator {
        self.inner.allocator
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// The lane `forward` is converted in, known before any guest runs: the
    /// plugin its platform (and profile) enters through — the one asked for
    /// the tenant key where tenant routes exist — or the platform when no
    /// plugin routes it. Forwards of one conversation always share a lane.
    pub fn lane_of(&self, forward: &PassthroughForward) -> Arc<str> {
        match self
            .table()
            .entry_plugin(&forward.platform, forward.profile.as_deref())
        {
            Some(entry) => Arc::clone(&entry.plugin.name),
            None => Arc::from(forward.platform.as_str()),
        }
    }

    /// Convert one forward. Waits for a free worker (backpressure), runs the
    /// conversion in a fresh sandbox, and never fails other than through
    /// [`Outcome::Failed`].
    pub async fn convert(&self, forward: &PassthroughForward) -> Conversion {
        self.convert_inner(forward, None).await
    }

    /// [`convert`](Self::convert) with this tenant configuration instead of
    /// the policy's (what `hermes-gateway convert --config key=value` does).
    pub async fn convert_with_config(
        &self,
        forward: &PassthroughForward,
        config: BTreeMap<String, String>,
    ) -> Conversion {
        self.convert_inner(forward, Some(Arc::new(config))).await
    }

    async fn convert_inner(
        &self,
        forward: &PassthroughForward,
        config_override: Option<ConfigMap>,
    ) -> Conversion {
        let limits = &self.inner.config.limits;
        let table = self.table();
        let platform = forward.platform.as_str();
        let profile = forward.profile.as_deref();
        let Some(entry) = table.entry_plugin(platform, profile) else {
            return no_route(platform, None);
        };
        // Input caps, before any guest runs.
        if let Some((kind, message)) = input_reject(forward, limits) {
            entry.plugin.stats.record_rejected();
            return Conversion::new(
                Some(&entry.plugin.name),
                None,
                Outcome::Rejected { kind, message },
            );
        }
        drop(entry);
        let request = Arc::new(bindings::request(forward));
        let (tenant, target) = if table.routes_by_tenant(platform) {
            let now = Instant::now();
            let usable = |p: &LoadedPlugin| p.stats.check(now).is_ok();
            let Some(asked) = table.tenant_plugin(platform, profile, usable) else {
                return no_route(platform, None);
            };
            if usable(&asked.plugin) {
                let (table, request, config_override) = (
                    Arc::clone(&table),
                    Arc::clone(&request),
                    config_override.clone(),
                );
                let plugin = Arc::clone(&asked.plugin);
                let step = self
                    .on_worker(&plugin, None, move |inner| {
                        inner.tenant_then_convert(&table, &request, asked, config_override)
                    })
                    .await;
                match step {
                    Step::Done(conversion) => return conversion,
                    Step::Routed { tenant, target } => (tenant, Some(target)),
                }
            } else {
                // Every converter of the platform sits out a quarantine: the
                // route by platform and profile alone is the best we know.
                (None, table.resolve(platform, profile, None))
            }
        } else {
            (None, table.resolve(platform, profile, None))
        };
        let Some(target) = target else {
            return no_route(platform, tenant);
        };
        let plugin = Arc::clone(&target.plugin);
        let probe_every = limits.quarantine.probe_every;
        if let Err(remaining) = plugin.stats.admit(Instant::now(), probe_every) {
            return self.inner.failed(
                &plugin.stats,
                &plugin.name,
                tenant,
                PluginError::Quarantined { remaining },
            );
        }
        let config = config_override.unwrap_or_else(|| Arc::clone(&target.config));
        let step = self
            .on_worker(&plugin, tenant.clone(), move |inner| {
                Step::Done(inner.convert_fresh(&request, &target, config, tenant))
            })
            .await;
        match step {
            Step::Done(conversion) => conversion,
            Step::Routed { tenant, .. } => no_route(platform, tenant),
        }
    }

    /// Runs `work` on a worker thread once `plugin` may run another
    /// conversion (its [`Admission`](admission::Admission): its own share
    /// of the workers and its own bounded line) and a worker is free, and
    /// waits for it with the outer timeout.
    async fn on_worker(
        &self,
        plugin: &Arc<LoadedPlugin>,
        tenant: Option<String>,
        work: impl FnOnce(&Inner) -> Step + Send + 'static,
    ) -> Step {
        let inner = &self.inner;
        let outer = inner.config.limits.outer_timeout;
        let place = match plugin.stats.admission.enter().await {
            Ok(place) => place,
            Err(e) => return Step::Done(inner.failed(&plugin.stats, &plugin.name, tenant, e)),
        };
        let Ok(worker) = Arc::clone(&inner.permits).acquire_owned().await else {
            let e = PluginError::Unavailable("closed".to_owned());
            return Step::Done(inner.failed(&plugin.stats, &plugin.name, tenant, e));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job_inner = Arc::clone(inner);
        let job = Box::new(move || {
            let _ = tx.send(work(&job_inner));
            // Both places are released only when the worker is free again,
            // even if the caller stopped waiting.
            drop((worker, place));
        });
        if let Err(e) = inner.pool.submit(job) {
            let e = PluginError::Unavailable(e.to_owned());
            return Step::Done(inner.failed(&plugin.stats, &plugin.name, tenant, e));
        }
        match tokio::time::timeout(outer, rx).await {
            Ok(Ok(step)) => step,
            Ok(Err(_)) => {
                let e = PluginError::Unavailable("the worker dropped the conversion".to_owned());
                Step::Done(inner.failed(&plugin.stats, &plugin.name, tenant, e))
            }
            // A guest cannot block a worker (no blocking WASI call is
            // linked, and its CPU budget stops wasm code), so this is a badly
            // overloaded machine: counted, never a fault (see `failed`).
            Err(_) => Step::Done(inner.failed(
                &plugin.stats,
                &plugin.name,
                tenant,
                PluginError::Timeout { after: outer },
            )),
        }
    }
}

/// What one job on a worker came to.
enum Step {
    /// The conversion is over.
    Done(Conversion),
    /// The tenant key is known and routes to another plugin (or another
    /// configuration), which converts in a job of its own.
    Routed {
        tenant: Option<String>,
        target: Resolved,
    },
}

fn no_route(platform: &str, tenant: Option<String>) -> Conversion {
    Conversion::new(
        None,
        tenant,
        Outcome::Failed(PluginError::NoRoute {
            platform: platform.to_owned(),
        }),
    )
}

/// The input caps checked before any guest runs.
fn input_reject(forward: &PassthroughForward, limits: &Limits) -> Option<(RejectKind, String)> {
    if forward.body.is_empty() {
        Some((RejectKind::EmptyBody, "the body is empty".to_owned()))
    } else if forward.body.len() > limits.max_body_bytes {
        Some((
            RejectKind::PayloadTooLarge,
            format!(
                "the body is {} bytes, at most {} allowed",
                forward.body.len(),
                limits.max_body_bytes
            ),
        ))
    } else {
        None
    }
}

impl Inner {
    /// On a worker: the tenant key from `asked`, the final route, and — when
    /// that is the same plugin with the same configuration — the conversion
    /// in the same instance (a guest may have cached what `config` answered
    /// during tenant-of, so another configuration gets a fresh instance).
    fn tenant_then_convert(
        &self,
        table: &Table,
        req: &bindings::Request,
        asked: Resolved,
        config_override: Option<ConfigMap>,
    ) -> Step {
        let limits = &self.config.limits;
        let plugin = &asked.plugin;
        let cx = CallContext {
            plugin: Arc::clone(&plugin.name),
            stats: Some(Arc::clone(&plugin.stats)),
            tenant: None,
            config: Arc::clone(&asked.config),
        };
        let mut session = match Session::new(&self.engine, &plugin.pre, limits, cx) {
            Ok(s) => s,
            Err(e) => return Step::Done(self.failed(&plugin.stats, &plugin.name, None, e)),
        };
        plugin.stats.record_tenant_of();
        let tenant = match session.tenant_of(req) {
            Ok(t) => t,
            Err(e) => return Step::Done(self.failed(&plugin.stats, &plugin.name, None, e)),
        };
        let Some(target) = table.resolve(&req.platform, req.profile.as_deref(), tenant.as_deref())
        else {
            return Step::Done(no_route(&req.platform, tenant));
        };
        let config = config_override.unwrap_or_else(|| Arc::clone(&target.config));
        if !Arc::ptr_eq(&target.plugin, plugin) || *config != *asked.config {
            return Step::Routed { tenant, target };
        }
        let probe_every = limits.quarantine.probe_every;
        if let Err(remaining) = target.plugin.stats.admit(Instant::now(), probe_every) {
            let e = PluginError::Quarantined { remaining };
            return Step::Done(self.failed(&plugin.stats, &plugin.name, tenant, e));
        }
        session.set_tenant(tenant.clone(), config);
        Step::Done(self.convert_in(session, req, &target, tenant))
    }

    /// On a worker: convert in a fresh instance of `target`.
    fn convert_fresh(
        &self,
        req: &bindings::Request,
        target: &Resolved,
        config: ConfigMap,
        tenant: Option<String>,
    ) -> Conversion {
        let plugin = &target.plugin;
        let cx = CallContext {
            plugin: Arc::clone(&plugin.name),
            stats: Some(Arc::clone(&plugin.stats)),
            tenant: tenant.clone(),
            config,
        };
        match Session::new(&self.engine, &plugin.pre, &self.config.limits, cx) {
            Ok(session) => self.convert_in(session, req, target, tenant),
            Err(e) => self.failed(&plugin.stats, &plugin.name, tenant, e),
        }
    }

    /// Convert in `session`, then check the output against the caps and the
    /// trust boundary ([`trust`]) before anything is handed on.
    fn convert_in(
        &self,
        mut session: Session,
        req: &bindings::Request,
        target: &Resolved,
        tenant: Option<String>,
    ) -> Conversion {
        let limits = &self.config.limits;
        let plugin = &target.plugin;
        let outcome = session.convert(req);
        drop(session);
        let fail = |e| self.failed(&plugin.stats, &plugin.name, tenant.clone(), e);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return fail(e),
        };
        let outcome = match outcome {
            bindings::Outcome::Events(events) => {
                let events = match bindings::events(events, limits) {
                    Ok(events) => events,
                    Err(why) => return fail(PluginError::BadOutput(why)),
                };
                let profile = req.profile.as_deref();
                if let Err(why) = trust::check(&req.platform, profile, &target.grant, &events) {
                    return fail(PluginError::Overreach(why));
                }
                plugin.stats.record_events(events.len());
                Outcome::Events(events)
            }
            bindings::Outcome::Ignored(reason) => {
                if reason.len() > 64 {
                    let why = "ignore reason longer than 64 bytes".to_owned();
                    return fail(PluginError::BadOutput(why));
                }
                plugin.stats.record_ignored();
                Outcome::Ignored(reason)
            }
            bindings::Outcome::Error(e) => {
                plugin.stats.record_rejected();
                let mut message = e.message;
                message.truncate(message.floor_char_boundary(1024));
                Outcome::Rejected {
                    kind: bindings::reject_kind(e.kind),
                    message,
                }
            }
        };
        Conversion::new(Some(&plugin.name), tenant, outcome)
    }

    /// Counts a failure (a fault may start a quarantine) and logs it, within
    /// the plugin's log rate: a failure quotes the guest (its panic message,
    /// its output), so it shares the bucket of the plugin's own lines.
    /// The outer timeout is the machine being overloaded, not the plugin
    /// misbehaving: counted, never a fault.
    fn failed(
        &self,
        stats: &PluginStats,
        plugin: &str,
        tenant: Option<String>,
        error: PluginError,
    ) -> Conversion {
        let limits = &self.config.limits;
        let outer =
            matches!(error, PluginError::Timeout { after } if after == limits.outer_timeout);
        let now = Instant::now();
        let q = stats.record_failure(
            error.kind(),
            error.is_fault() && !outer,
            &limits.quarantine,
            now,
        );
        if stats.allow_log_line(now, limits.log_lines_per_second, limits.log_burst) {
            tracing::warn!(plugin, tenant = tenant.as_deref().unwrap_or(""), kind = error.kind().as_str(), error = %error, "plugin conversion failed");
        }
        if let Some(backoff) = q {
            tracing::error!(plugin, ?backoff, "plugin quarantined after repeated faults");
        }
        Conversion::new(Some(plugin), tenant, Outcome::Failed(error))
    }
}

#[doc(hidden)]
pub mod bench_support {
    //! Hooks for `benches/`: not a stable API.
    pub use crate::bench_impl::*;
}

mod bench_impl;
