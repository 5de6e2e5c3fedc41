//! The sandbox and resource limits, in one place (documented in
//! docs/plugin-authoring.md).

use std::time::Duration;

use hermes_converter_abi::caps;

use crate::stats::QuarantinePolicy;

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
    /// Conversions that run at once (conversion slots; each runs on the task
    /// that asked for it).
    pub workers: usize,
    /// Conversions one plugin may run at once (default: one fewer than
    /// `workers`, at least one), so a slow plugin always leaves a slot
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
    /// Calls a warm instance may serve under `isolation = "per-tenant"`
    /// before it is retired.
    pub instance_reuses: u32,
    /// Warm instances kept idle at most, across all plugins and tenants.
    pub max_idle_instances: usize,
    /// Linear memory those idle instances may hold together.
    pub max_idle_bytes: usize,
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
            max_body_bytes: hermes_converter_abi::MAX_BODY_BYTES,
            max_events: caps::MAX_EVENTS,
            max_event_text_bytes: caps::MAX_EVENT_TEXT_BYTES,
            max_output_bytes: caps::MAX_OUTPUT_BYTES,
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
            instance_reuses: 1000,
            max_idle_instances: 64,
            max_idle_bytes: 256 << 20,
        }
    }
}
