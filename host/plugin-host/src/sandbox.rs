//! One conversion's sandbox: the store data, the limiter, the captured
//! stdout/stderr, the empty WASI context, and the calls into a fresh
//! instance with their errors classified.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, ConverterPlugin, ConverterPluginPre, Outcome, PluginInfo, Request};
use crate::{Limits, PluginError};

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
    log_lines: u32,
    log_dropped: u32,
    max_log_lines: u32,
    max_log_line_bytes: usize,
    panic_message: Option<String>,
    output: CappedPipe,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::hermes::converter::types::Host for StoreState {}

impl bindings::hermes::converter::host::Host for StoreState {
    fn log(&mut self, level: bindings::hermes::converter::types::Level, message: String) {
        use bindings::hermes::converter::types::Level;
        if level == Level::Error
            && let Some(panic) = message.strip_prefix(PANIC_LOG_PREFIX)
        {
            self.panic_message = Some(truncate(panic, self.max_log_line_bytes).to_owned());
        }
        if self.log_lines >= self.max_log_lines {
            self.log_dropped = self.log_dropped.saturating_add(1);
            return;
        }
        self.log_lines += 1;
        let message = truncate(&message, self.max_log_line_bytes);
        let plugin = &*self.plugin;
        let tenant = self.tenant.as_deref().unwrap_or("");
        match level {
            Level::Trace => tracing::trace!(target: "hermes_plugin", plugin, tenant, "{message}"),
            Level::Debug => tracing::debug!(target: "hermes_plugin", plugin, tenant, "{message}"),
            Level::Info => tracing::info!(target: "hermes_plugin", plugin, tenant, "{message}"),
            Level::Warn => tracing::warn!(target: "hermes_plugin", plugin, tenant, "{message}"),
            Level::Error => tracing::error!(target: "hermes_plugin", plugin, tenant, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

/// The longest prefix of `s` of at most `max` bytes, on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Caps what one store may allocate.
struct CallLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    memory_limit_hit: bool,
}

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            // Refuse the growth (memory.grow returns -1) and remember it, so
            // the abort that usually follows is reported as a memory limit.
            self.memory_limit_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn tables(&self) -> usize {
        self.max_instances
    }

    fn memories(&self) -> usize {
        self.max_instances
    }
}

/// A bounded in-memory stdout/stderr: keeps the first `capacity` bytes and
/// silently drops the rest. Unlike wasmtime-wasi's `MemoryOutputPipe` it never
/// reports the stream closed or traps when full, so a chatty guest is not
/// turned into a failing one.
#[derive(Clone)]
pub(crate) struct CappedPipe {
    inner: Arc<Mutex<CappedBuf>>,
}

struct CappedBuf {
    bytes: Vec<u8>,
    capacity: usize,
    dropped: usize,
}

impl CappedPipe {
    fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(CappedBuf {
                bytes: Vec::new(),
                capacity,
                dropped: 0,
            })),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let room = buf.capacity.saturating_sub(buf.bytes.len());
        let take = room.min(data.len());
        buf.bytes.extend_from_slice(&data[..take]);
        buf.dropped = buf.dropped.saturating_add(data.len() - take);
    }

    /// The captured text (lossy UTF-8), with a note when some was dropped.
    fn text(&self) -> String {
        let buf = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = String::from_utf8_lossy(&buf.bytes).into_owned();
        if buf.dropped > 0 {
            s.push_str(&format!("\n[{} more bytes dropped]", buf.dropped));
        }
        s
    }
}

/// The permit offered to the guest per write; the real cap is in `push`.
const PIPE_PERMIT: usize = 4096;

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(PIPE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
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

/// The WASI context every guest gets: nothing. No preopened directories, no
/// environment, no arguments, no network (every socket address refused, no
/// name lookup), frozen clocks, stdin empty, stdout and stderr captured.
fn empty_wasi(output: &CappedPipe) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stdout(output.clone())
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
    pub(crate) tenant: Option<String>,
    pub(crate) config: ConfigMap,
}

/// A fresh store and instance of one plugin.
pub(crate) struct Session {
    store: Store<StoreState>,
    instance: ConverterPlugin,
    deadline_ticks: u64,
    deadline: Duration,
    max_memory_bytes: usize,
}

impl Session {
    /// Create a store with its limits and instantiate the plugin in it.
    pub(crate) fn new(
        engine: &Engine,
        pre: &ConverterPluginPre<StoreState>,
        limits: &Limits,
        cx: CallContext,
    ) -> Result<Self, PluginError> {
        let output = CappedPipe::new(limits.max_guest_output_bytes);
        let state = StoreState {
            wasi: empty_wasi(&output),
            table: ResourceTable::new(),
            limiter: CallLimiter {
                max_memory_bytes: limits.max_memory_bytes,
                max_table_elements: limits.max_table_elements,
                max_instances: limits.max_instances,
                memory_limit_hit: false,
            },
            plugin: cx.plugin,
            tenant: cx.tenant,
            config: cx.config,
            log_lines: 0,
            log_dropped: 0,
            max_log_lines: limits.max_log_lines,
            max_log_line_bytes: limits.max_log_line_bytes,
            panic_message: None,
            output,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline_ticks = crate::engine::deadline_ticks(limits.epoch_deadline);
        // Instantiation runs guest start functions: it gets a deadline too.
        store.set_epoch_deadline(deadline_ticks);
        match pre.instantiate(&mut store) {
            Ok(instance) => Ok(Self {
                store,
                instance,
                deadline_ticks,
                deadline: limits.epoch_deadline,
                max_memory_bytes: limits.max_memory_bytes,
            }),
            Err(e) => Err(classify(&store, e, limits.epoch_deadline, limits.max_memory_bytes, true)),
        }
    }

    /// Set the tenant once known (for log fields) and the config for it.
    pub(crate) fn set_tenant(&mut self, tenant: Option<String>, config: ConfigMap) {
        let data = self.store.data_mut();
        data.tenant = tenant;
        data.config = config;
    }

    pub(crate) fn describe(&mut self) -> Result<PluginInfo, PluginError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let r = self.instance.hermes_converter_converter().call_describe(&mut self.store);
        self.finish(r)
    }

    pub(crate) fn tenant_of(&mut self, req: &Request) -> Result<Option<String>, PluginError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let r = self.instance.hermes_converter_converter().call_tenant_of(&mut self.store, req);
        self.finish(r)
    }

    pub(crate) fn convert(&mut self, req: &Request) -> Result<Outcome, PluginError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let r = self.instance.hermes_converter_converter().call_convert(&mut self.store, req);
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
            data.log_dropped = 0;
        }
        r.map_err(|e| classify(&self.store, e, self.deadline, self.max_memory_bytes, false))
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
        return PluginError::MemoryLimit { limit: max_memory_bytes };
    }
    if trap == Some(Trap::Interrupt) {
        return PluginError::Timeout { after: deadline };
    }
    if let Some(message) = &data.panic_message {
        return PluginError::Panic { message: message.clone() };
    }
    let guest_output = data.output.text();
    // A guest without the SDK hook: std's default hook wrote to stderr.
    if let Some(pos) = guest_output.find("panicked at ") {
        let message = guest_output[pos..].trim().to_owned();
        return PluginError::Panic { message };
    }
    if trap.is_none() && instantiating {
        return PluginError::Instantiate(format!("{e:#}"));
    }
    PluginError::Trap {
        message: format!("{e:?}"),
        guest_output,
    }
}
