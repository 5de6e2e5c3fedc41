//! One conversion's sandbox: the store data, the limiter, the captured
//! stdout/stderr, the empty WASI context, and the calls into a fresh
//! instance with their errors classified.
//!
//! What a call may consume is in `budget.rs`, the captured pipes in
//! `pipe.rs`, the engine and linker in `engine.rs`, the deadline clock in
//! `epoch.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store, StoreContextMut, Trap};
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use crate::bindings::{self, Info, Plugin, PluginPre, RawOutcome, Request, v0_1, v0_2};
use crate::budget::{CallLimiter, CpuBudget};
use crate::error::{HostError, PluginError};
use crate::limits::Limits;
use crate::pipe::CappedPipe;
use crate::stats::PluginStats;

/// The prefix the SDK's panic hook writes through `log` before the guest
/// traps (see `hermes_converter_sdk::guest::PANIC_LOG_PREFIX`).
const PANIC_LOG_PREFIX: &str = "guest panicked: ";

/// Configuration a plugin reads through `config(key)`.
pub(crate) type ConfigMap = Arc<BTreeMap<String, String>>;

/// Everything a store owns for one conversion.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    plugin: Arc<str>,
    pub(crate) tenant: Option<String>,
    pub(crate) config: ConfigMap,
    /// The plugin's counters and log-rate bucket (`None` while loading,
    /// before the plugin has a name).
    stats: Option<Arc<PluginStats>>,
    log_lines: u32,
    log_dropped: u32,
    max_log_lines: u32,
    max_log_line_bytes: usize,
    log_lines_per_second: u32,
    log_burst: u32,
    panic_message: Option<String>,
    output: CappedPipe,
    budget: CpuBudget,
    /// What a 0.2 plugin's `host.limits` answers.
    output_limits: v0_2::OutputLimits,
}

/// A log line's level, whatever the plugin's ABI version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// `s` as one log line: control characters (newlines, carriage returns,
/// escape sequences, …) escaped, so a plugin cannot forge log records or
/// drive a terminal, and at most `max` bytes of the original text.
pub(crate) fn escape_line(s: &str, max: usize) -> String {
    let cut = s.len() > max;
    let s = truncate(s, max);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push_str("…[truncated]");
    }
    out
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl v0_1::hermes::converter::types::Host for StoreState {}
impl v0_2::hermes::converter::types::Host for StoreState {}

impl v0_1::hermes::converter::host::Host for StoreState {
    fn log(&mut self, level: v0_1::hermes::converter::types::Level, message: String) {
        use v0_1::hermes::converter::types::Level;
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.log_line(level, message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl v0_2::hermes::converter::host::Host for StoreState {
    fn log(&mut self, level: v0_2::hermes::converter::types::Level, message: String) {
        use v0_2::hermes::converter::types::Level;
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.log_line(level, message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn limits(&mut self) -> v0_2::OutputLimits {
        self.output_limits
    }
}

impl StoreState {
    /// A plugin's `log` call, whatever its version: capped per call and
    /// over time, escaped, tagged with plugin and tenant.
    fn log_line(&mut self, level: LogLevel, message: String) {
        if level == LogLevel::Error
            && let Some(panic) = message.strip_prefix(PANIC_LOG_PREFIX)
        {
            // Logged once, with the failure it causes; not as a line too.
            self.panic_message = Some(escape_line(panic, self.max_log_line_bytes));
            return;
        }
        if self.log_lines >= self.max_log_lines {
            self.log_dropped = self.log_dropped.saturating_add(1);
            return;
        }
        // Over time too: the per-call cap alone lets a plugin log that many
        // lines on every request. Rate drops are only counted, since a warning
        // per call would be the flood again.
        if let Some(stats) = &self.stats
            && !stats.allow_log_line(Instant::now(), self.log_lines_per_second, self.log_burst)
        {
            return;
        }
        self.log_lines += 1;
        let message = escape_line(&message, self.max_log_line_bytes);
        let plugin = &*self.plugin;
        let tenant = self.tenant.as_deref().unwrap_or("");
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "hermes_plugin", plugin, tenant, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "hermes_plugin", plugin, tenant, "{message}")
            }
            LogLevel::Info => tracing::info!(target: "hermes_plugin", plugin, tenant, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "hermes_plugin", plugin, tenant, "{message}"),
            LogLevel::Error => {
                tracing::error!(target: "hermes_plugin", plugin, tenant, "{message}")
            }
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes, on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    s.get(..s.floor_char_boundary(max)).unwrap_or(s)
}

/// A wall clock frozen at the Unix epoch and a monotonic clock that never
/// moves: WASI init may read clocks, converters have no business timing
/// anything.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A pollable that is always ready: what a guest's timers are.
struct ReadyNow;

#[wasmtime_wasi::async_trait]
impl Pollable for ReadyNow {
    async fn ready(&mut self) {}
}

/// The WASI version whose `monotonic-clock` `add_to_linker_async` defines
/// (guests importing an older 0.2.x resolve to it by semver).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

fn ready_pollable(
    mut store: StoreContextMut<'_, StoreState>,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let table = &mut store.data_mut().table;
    let ready = table.push(ReadyNow)?;
    Ok((wasmtime_wasi::p2::subscribe(table, ready)?,))
}

/// Replace the timers of `wasi:clocks/monotonic-clock` with pollables that
/// are ready at once. wasmtime-wasi's own create real timers, and
/// `wasi:io/poll.poll` (which `std::thread::sleep` ends in) then waits
/// inside a host call, where epoch interruption cannot stop it and no CPU
/// is charged: a guest sleeping for an hour would hold its conversion slot
/// for an hour. With
/// frozen clocks a sleep has no meaning anyway; now it returns immediately,
/// and a guest that sleeps in a loop spins into its epoch deadline.
pub(crate) fn shadow_blocking_clocks(linker: &mut Linker<StoreState>) -> Result<(), HostError> {
    let err = |e: wasmtime::Error| HostError::Linker(format!("{MONOTONIC_CLOCK}: {e:#}"));
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK).map_err(err)?;
    clock
        .func_wrap(
            "subscribe-duration",
            |store: StoreContextMut<'_, StoreState>, (_,): (u64,)| ready_pollable(store),
        )
        .map_err(err)?;
    clock
        .func_wrap(
            "subscribe-instant",
            |store: StoreContextMut<'_, StoreState>, (_,): (u64,)| ready_pollable(store),
        )
        .map_err(err)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Random bytes a guest may ask for in one call (the default allows a guest
/// to make the host allocate up to 64 MiB per call).
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// The WASI context every guest gets: nothing. No preopened directories, no
/// environment, no arguments, no network (every socket address refused, no
/// name lookup), frozen clocks whose timers fire at once, stdin empty,
/// stdout and stderr captured, random reads capped.
fn empty_wasi(output: &CappedPipe) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stdout(output.clone())
        .max_random_size(MAX_RANDOM_BYTES)
        .stderr(output.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock);
    b.build()
}

/// Identity of the call, for logs and config.
pub(crate) struct CallContext {
    pub(crate) plugin: Arc<str>,
    /// The plugin's counters (`None` for `describe()` while loading).
    pub(crate) stats: Option<Arc<PluginStats>>,
    pub(crate) tenant: Option<String>,
    pub(crate) config: ConfigMap,
}

/// A fresh store and instance of one plugin. Every call is async: it runs
/// on the calling task's thread in CPU slices, yielding to the runtime
/// between them (see [`CpuBudget`]).
pub(crate) struct Sandbox {
    store: Store<StoreState>,
    instance: Plugin,
    deadline: Duration,
    limits: Limits,
    /// Calls made (a warm instance is retired after a number of them).
    uses: u32,
}

/// The store's WASI resource table, capped at
/// [`Limits::max_host_resources`] entries: its entries are host memory the
/// linear-memory limiter does not see.
fn resource_table(limits: &Limits) -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_host_resources.max(1));
    table
}

impl Sandbox {
    /// Create a store with its limits and instantiate the plugin in it.
    pub(crate) async fn new(
        engine: &Engine,
        pre: &PluginPre,
        limits: &Limits,
        cx: CallContext,
    ) -> Result<Self, PluginError> {
        let output = CappedPipe::new(limits.max_guest_output_bytes);
        let state = StoreState {
            wasi: empty_wasi(&output),
            table: resource_table(limits),
            limiter: CallLimiter::new(limits),
            plugin: cx.plugin,
            tenant: cx.tenant,
            config: cx.config,
            stats: cx.stats,
            log_lines: 0,
            log_dropped: 0,
            max_log_lines: limits.max_log_lines,
            max_log_line_bytes: limits.max_log_line_bytes,
            log_lines_per_second: limits.log_lines_per_second,
            log_burst: limits.log_burst,
            panic_message: None,
            output,
            budget: CpuBudget::new(limits.epoch_deadline),
            output_limits: v0_2::output_limits(limits),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut store| Ok(store.data_mut().budget.on_deadline()));
        // Instantiation runs guest start functions: it gets a budget too.
        let first = store.data().budget.first_deadline();
        store.set_epoch_deadline(first);
        // Caps what wasmtime copies out of the guest per call (results and
        // import arguments) *while* lifting, before the output caps can be
        // checked: without it, a list of many elements aliasing one large
        // string in guest memory would make the host allocate gigabytes.
        store.set_hostcall_fuel(bindings::hostcall_fuel(limits));
        match pre.instantiate_async(&mut store).await {
            Ok(instance) => Ok(Self {
                store,
                instance,
                deadline: limits.epoch_deadline,
                limits: limits.clone(),
                uses: 0,
            }),
            Err(e) => Err(classify(
                &store,
                e,
                limits.epoch_deadline,
                limits.max_memory_bytes,
                true,
            )),
        }
    }

    /// Set the tenant once known (for log fields) and the config for it.
    pub(crate) fn set_tenant(&mut self, tenant: Option<String>, config: ConfigMap) {
        let data = self.store.data_mut();
        data.tenant = tenant;
        data.config = config;
    }

    /// Ready for a call: the whole budget, the first slice's deadline, and
    /// the per-call log and output state of a fresh call.
    fn start_call(&mut self) {
        self.uses = self.uses.saturating_add(1);
        let data = self.store.data_mut();
        data.log_lines = 0;
        data.panic_message = None;
        data.output.clear();
        data.budget.restart();
        let first = data.budget.first_deadline();
        self.store.set_epoch_deadline(first);
    }

    /// Calls made in this instance.
    pub(crate) fn uses(&self) -> u32 {
        self.uses
    }

    /// Linear memory the instance holds (what keeping it idle costs).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.store.data().limiter.memory_bytes
    }

    pub(crate) async fn describe(&mut self) -> Result<Info, PluginError> {
        self.start_call();
        let r = self.instance.describe(&mut self.store).await;
        self.finish(r)
    }

    /// The plugin's tenant key for `req`, checked like any other output: a
    /// key decides routing, keys warm instances and is written into logs,
    /// so it must be short and printable.
    pub(crate) async fn tenant_of(&mut self, req: &Request) -> Result<Option<String>, PluginError> {
        self.start_call();
        let r = self.instance.tenant_of(&mut self.store, req).await;
        let tenant = self.finish(r)?;
        if let Some(key) = &tenant {
            check_tenant_key(key)?;
        }
        Ok(tenant)
    }

    pub(crate) async fn convert(&mut self, req: &Request) -> Result<RawOutcome, PluginError> {
        self.start_call();
        let r = self.instance.convert(&mut self.store, req).await;
        self.finish(r)
    }

    fn finish<T>(&mut self, r: wasmtime::Result<T>) -> Result<T, PluginError> {
        let data = self.store.data_mut();
        if data.log_dropped > 0 {
            tracing::warn!(
                target: "hermes_plugin",
                plugin = &*data.plugin,
                tenant = data.tenant.as_deref().unwrap_or(""),
                dropped = data.log_dropped,
                "plugin log lines dropped (more than {} in one call)",
                data.max_log_lines
            );
            if let Some(stats) = &data.stats {
                stats.record_log_dropped(u64::from(data.log_dropped));
            }
            data.log_dropped = 0;
        }
        r.map_err(|e| {
            classify(
                &self.store,
                e,
                self.deadline,
                self.limits.max_memory_bytes,
                false,
            )
        })
    }
}

/// The longest tenant key a plugin may answer.
pub(crate) const MAX_TENANT_KEY_BYTES: usize = 256;

/// A tenant key is 1–256 bytes without control characters.
fn check_tenant_key(key: &str) -> Result<(), PluginError> {
    if key.is_empty() || key.len() > MAX_TENANT_KEY_BYTES {
        return Err(PluginError::BadOutput(format!(
            "tenant key of {} bytes (1 to {MAX_TENANT_KEY_BYTES} allowed)",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(PluginError::BadOutput(
            "tenant key with a control character".to_owned(),
        ));
    }
    Ok(())
}

/// Drives a guest call to completion on this thread, outside any async
/// runtime (loading, `describe`). A call is only ever pending while it
/// yields between CPU slices (no linked host call waits on I/O), so it is
/// polled again at once.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// Turn a wasmtime error into the typed [`PluginError`]. After any error the
/// instance is poisoned, so callers drop the session.
fn classify(
    store: &Store<StoreState>,
    e: wasmtime::Error,
    deadline: Duration,
    max_memory_bytes: usize,
    instantiating: bool,
) -> PluginError {
    let data = store.data();
    let trap = e.downcast_ref::<Trap>().copied();
    if data.limiter.memory_limit_hit {
        return PluginError::MemoryLimit {
            limit: max_memory_bytes,
        };
    }
    // wasmtime's error when a result (or an import's arguments) would copy
    // more than the store's hostcall fuel; its type is private.
    if trap.is_none()
        && format!("{e:#}").contains("fuel allocated for hostcalls has been exhausted")
    {
        return PluginError::BadOutput(format!(
            "the guest returned more than the host copies ({} bytes of strings and list elements)",
            store.hostcall_fuel()
        ));
    }
    if trap == Some(Trap::Interrupt) {
        return PluginError::Timeout { after: deadline };
    }
    if let Some(message) = &data.panic_message {
        return PluginError::Panic {
            message: message.clone(),
        };
    }
    // Everything below may quote the guest (its output, its function
    // names in a backtrace): one escaped, capped line each.
    let max = data.max_log_line_bytes;
    let guest_output = data.output.text();
    // A guest without the SDK hook: std's default hook wrote to stderr.
    if let Some(pos) = guest_output.find("panicked at ") {
        let message = escape_line(guest_output[pos..].trim(), max);
        return PluginError::Panic { message };
    }
    if trap.is_none() && instantiating {
        return PluginError::Instantiate(escape_line(&format!("{e:#}"), max));
    }
    PluginError::Trap {
        message: escape_line(&format!("{e:?}"), max.saturating_mul(4)),
        guest_output: escape_line(&guest_output, max),
    }
}

#[cfg(test)]
mod tests {
    use crate::budget::thread_cpu_time;
    use wasmtime::ResourceLimiter;
    use wasmtime::UpdateDeadline;

    use super::*;

    #[test]
    fn the_wasi_resource_table_is_capped() {
        let limits = Limits {
            max_host_resources: 3,
            ..Limits::default()
        };
        let mut table = resource_table(&limits);
        for i in 0..3 {
            assert!(table.push(i).is_ok(), "entry {i} fits");
        }
        assert!(table.push(3).is_err(), "the fourth entry is refused");
        assert!(resource_table(&Limits::default()).max_capacity() <= 256);
    }

    #[test]
    fn log_lines_are_one_escaped_capped_line() {
        let forged = "ok\nERROR forged record\r\u{1b}[31mred\u{2028}x";
        let line = escape_line(forged, 1024);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert_eq!(line, "ok\\nERROR forged record\\r\\u{1b}[31mred\\u{2028}x");
        let long = "é".repeat(100);
        let capped = escape_line(&long, 11);
        assert_eq!(capped, format!("{}…[truncated]", "é".repeat(5)));
        assert_eq!(escape_line("short", 5), "short");
    }

    #[test]
    fn the_cpu_budget_yields_until_the_cpu_is_used() {
        let mut b = CpuBudget::new(Duration::from_millis(50));
        // Wall time passes while the thread uses no CPU: the guest yields
        // and goes on; it is not interrupted.
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(b.on_deadline(), UpdateDeadline::YieldCustom(..)));
        assert!(b.used() < Duration::from_millis(10), "{:?}", b.used());
        // Spending the budget in CPU time ends the call.
        b.restart();
        let start = thread_cpu_time();
        while thread_cpu_time().saturating_sub(start) < Duration::from_millis(55) {
            std::hint::black_box(0u64);
        }
        assert!(matches!(b.on_deadline(), UpdateDeadline::Interrupt));
    }

    #[test]
    fn the_memory_cap_is_for_all_memories_of_a_store_together() {
        let limits = Limits {
            max_memory_bytes: 32 << 20,
            ..Limits::default()
        };
        let mut l = CallLimiter::new(&limits);
        // First memory: created with 1 MiB, grown to 20 MiB.
        assert!(l.memory_growing(0, 1 << 20, None).expect("ok"));
        assert!(l.memory_growing(1 << 20, 20 << 20, None).expect("ok"));
        // A second memory may take only what is left.
        assert!(
            l.memory_growing(0, 12 << 20, None).expect("ok"),
            "exactly the remaining 12 MiB"
        );
        assert!(
            !l.memory_growing(12 << 20, (12 << 20) + 65536, None)
                .expect("ok"),
            "one page over the total"
        );
        assert!(l.memory_limit_hit);
        assert_eq!(l.memory_bytes, 32 << 20, "a refused growth is not counted");
    }
}
