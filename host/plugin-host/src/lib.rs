//! # hermes-plugin-host: sandboxed converter plugins
//!
//! Webhook conversion runs in WebAssembly components that implement the
//! `converter-plugin` world of `hermes:converter`, any released version of
//! it (`wit/0.1.0`, `wit/0.2.0`; see `bindings/`). This crate loads them,
//! routes each
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
//!   then output caps (16 events, 64 KiB of text per event, 64 media items
//!   (and, from a 0.1 plugin, 64 metadata pairs) per event, 256 KiB in all)
//!   checked before anything is handed on (the SDK, which reads the active
//!   caps through `host.limits` from WIT 0.2 on, turns over-cap output into
//!   an `invalid_field` rejection first, so a valid but huge request is not
//!   a plugin fault);
//! - `log` routed into `tracing` (target `hermes_plugin`, fields `plugin` and
//!   `tenant`), capped per call in lines and bytes and per plugin over time
//!   (a token bucket, 100 lines/s with a burst of 200 by default); `config`
//!   answering from the tenant's policy map.
//!
//! The wasmtime calls are async and run inline, on the task that awaits
//! [`PluginHost::convert`]: no hand-off to another thread and back. A guest
//! runs in CPU slices and yields to the runtime between them, so one that
//! spins until its deadline never starves the link's reader and writer. A
//! semaphore of `workers` conversion slots gives backpressure (forwards
//! wait, they are never dropped), and each call has an outer timeout.
//!
//! ## Why WASI is linked, and empty
//!
//! A Rust `std` guest built for `wasm32-wasip2` imports 13 `wasi:cli/*` and
//! `wasi:io/*` interfaces even if it never prints, and guests written in
//! other languages need WASI too. Instead of defining those imports as traps
//! (which turns a guest panic into an opaque "unknown import" error), the
//! host links `wasmtime-wasi` (p2, async) with an **empty** context: no
//! preopened directories, no environment variables, no arguments, no network
//! (every socket address is refused and name lookup is off), frozen clocks
//! whose timers fire at once (so no guest can wait in `poll`),
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
mod budget;
mod convert;
mod engine;
mod epoch;
mod error;
mod experiment;
mod limits;
mod loader;
mod outcome;
mod ownership;
mod pipe;
pub mod policy;
mod reuse;
mod sandbox;
mod sources;
mod stats;
mod table;
pub mod trust;
mod watch;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use hermes_protocol::forward::PassthroughForward;
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use crate::artifact_cache::CacheOutcome;
pub use crate::engine::Allocator;
pub use crate::error::{FailureKind, HostError, LoadError, PluginError};
pub use crate::experiment::{ExperimentReport, comparable, differences};
pub use crate::limits::Limits;
pub use crate::outcome::{Conversion, ConvertedEvent, Outcome, RejectKind, ReplyRoute};
pub use crate::policy::{Isolation, Policy};
pub use crate::stats::{PluginCounters, QuarantinePolicy};
pub use crate::table::{Changes, LoadReport, PluginDescription, RoutingTable};

pub use crate::watch::WatchHandle;

use crate::artifact_cache::ArtifactCache;
use crate::loader::Loader;
use crate::sandbox::{CallContext, ConfigMap, Sandbox, StoreState};
use crate::stats::PluginStats;
use crate::table::{LoadedPlugin, Resolved, Table};

/// The newest version of `hermes:converter` this host implements (it
/// implements every one in `hermes_converter_abi::VERSIONS`).
pub const API_VERSION: &str = hermes_converter_abi::CURRENT_VERSION;

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
    /// Conversion slots: how many conversions run at once.
    permits: tokio::sync::Semaphore,
    /// Warm instances of `isolation = "per-tenant"` routes.
    idle: reuse::IdleInstances,
    /// Host-wide counters ([`HostCounters`]).
    counts: HostCounts,
    /// Every reload's report, for whoever listens (`dev` prints them).
    reloads: tokio::sync::broadcast::Sender<Arc<LoadReport>>,
    /// Shadow and canary candidates' state (`experiment.rs`).
    experiments: experiment::Experiments,
    _ticker: engine::Ticker,
}

/// Reload reports a [`PluginHost::subscribe_reloads`] channel keeps for a
/// receiver that has not read them yet.
pub const RELOAD_REPORTS_KEPT: usize = 16;

/// Host-wide counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// Reloads that loaded every file and the policy.
    pub reloads_clean: u64,
    /// Reloads that refused a file or a policy entry (the rest still swapped in).
    pub reloads_with_errors: u64,
    /// Stores and instances created for conversions.
    pub instances_created: u64,
    /// Conversions (or `tenant-of` calls) served by a warm instance.
    pub instances_reused: u64,
    /// Warm instances retired after use (a failure, the use limit, a full
    /// cache, a reload).
    pub instances_retired: u64,
    /// `[[source]]` components pulled from their registry.
    pub pulls_pulled: u64,
    /// `[[source]]` components served from the cache (a pinned digest
    /// already there: the registry is not asked).
    pub pulls_cached: u64,
    /// `[[source]]` pulls that failed or were refused.
    pub pulls_failed: u64,
    /// Canary candidates taken out of their route for faulting too often.
    pub canary_rollbacks: u64,
}

#[derive(Default)]
pub(crate) struct HostCounts {
    reloads_clean: std::sync::atomic::AtomicU64,
    reloads_with_errors: std::sync::atomic::AtomicU64,
    pub(crate) instances_created: std::sync::atomic::AtomicU64,
    pub(crate) instances_reused: std::sync::atomic::AtomicU64,
    pub(crate) instances_retired: std::sync::atomic::AtomicU64,
    pub(crate) pulls_pulled: std::sync::atomic::AtomicU64,
    pub(crate) pulls_cached: std::sync::atomic::AtomicU64,
    pub(crate) pulls_failed: std::sync::atomic::AtomicU64,
    pub(crate) canary_rollbacks: std::sync::atomic::AtomicU64,
}

impl HostCounts {
    pub(crate) fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One line per reload, whatever triggered it (file watch, `SIGHUP`,
/// `POST /reload`): what changed, and how many files were refused.
fn log_reload(report: &LoadReport) {
    let c = &report.changes;
    tracing::info!(
        added = %c.added.join(","),
        removed = %c.removed.join(","),
        replaced = %c.replaced.join(","),
        policy_changed = c.policy_changed,
        unchanged = report.unchanged,
        refused = report.errors.len(),
        "plugins reloaded{}",
        if c.is_empty() { " (nothing changed)" } else { "" }
    );
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
        let files = loader::wasm_files(&config.plugins_dir).map_err(|e| HostError::PluginsDir {
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
                permits: tokio::sync::Semaphore::new(workers),
                idle: reuse::IdleInstances::new(limits.max_idle_instances, limits.max_idle_bytes),
                counts: HostCounts::default(),
                reloads: tokio::sync::broadcast::channel(RELOAD_REPORTS_KEPT).0,
                experiments: experiment::Experiments::default(),
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
    /// Its report also goes to every [`subscribe_reloads`](Self::subscribe_reloads)
    /// receiver.
    pub fn reload_blocking(&self) -> LoadReport {
        let report = self.reload_now();
        // No receiver is fine; a slow one loses the oldest reports.
        let _ = self.inner.reloads.send(Arc::new(report.clone()));
        report
    }

    /// The report of every reload from now on, whatever triggered it (the
    /// file watch, `SIGHUP`, `POST /reload`). The channel keeps the last
    /// [`RELOAD_REPORTS_KEPT`]; a receiver that falls further behind is
    /// told how many it missed.
    pub fn subscribe_reloads(&self) -> tokio::sync::broadcast::Receiver<Arc<LoadReport>> {
        self.inner.reloads.subscribe()
    }

    /// Whether a loaded plugin lists `platform` in its `describe()`.
    pub fn claims_platform(&self, platform: &str) -> bool {
        self.table().by_name.values().any(|p| p.converts(platform))
    }

    fn reload_now(&self) -> LoadReport {
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
        let files = match loader::wasm_files(&self.inner.config.plugins_dir) {
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

    fn rebuild(&self, files: &[PathBuf], policy: Policy, mut errors: Vec<LoadError>) -> LoadReport {
        let inner = &*self.inner;
        let previous = self.table();
        // The policy's `[[source]]` components join the directory's files.
        let cache_dir = inner.config.cache_dir.as_deref();
        let pulled = sources::pull(&policy, cache_dir, &previous, &mut errors, &inner.counts);
        let files: Vec<PathBuf> = files.iter().cloned().chain(pulled.files).collect();
        let files = &files;
        let mut report = LoadReport {
            errors,
            ..LoadReport::default()
        };
        // `describe()` runs here, driven to completion on this thread
        // (`sandbox::block_on`): a scoped thread, so a caller's runtime
        // thread (an async test, a `block_on`) is never held by it.
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
                        origin: &pulled.origin,
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
        let first = inner
            .tables_built
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0;
        if !first {
            report.changes = table::Changes::between(&previous, &table);
            log_reload(&report);
            let result = if report.is_clean() {
                &inner.counts.reloads_clean
            } else {
                &inner.counts.reloads_with_errors
            };
            HostCounts::bump(result);
        }
        *inner.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        // A reload or policy change retires every warm instance, and puts
        // every rolled-back canary back.
        inner.idle.clear();
        inner.experiments.reset_rollbacks();
        inner
            .tables_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        report
    }

    /// The host-wide counters.
    pub fn host_counters(&self) -> HostCounters {
        let c = &self.inner.counts;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        HostCounters {
            reloads_clean: get(&c.reloads_clean),
            reloads_with_errors: get(&c.reloads_with_errors),
            instances_created: get(&c.instances_created),
            instances_reused: get(&c.instances_reused),
            instances_retired: get(&c.instances_retired) + self.inner.idle.retired(),
            pulls_pulled: get(&c.pulls_pulled),
            pulls_cached: get(&c.pulls_cached),
            pulls_failed: get(&c.pulls_failed),
            canary_rollbacks: get(&c.canary_rollbacks),
        }
    }

    /// Warm instances waiting for their tenant's next forward
    /// (`isolation = "per-tenant"`).
    pub fn idle_instances(&self) -> usize {
        self.inner.idle.len()
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
}

#[doc(hidden)]
pub mod bench_support {
    //! Hooks for `benches/`: not a stable API.
    pub use crate::bench_impl::*;
}

mod bench_impl;
