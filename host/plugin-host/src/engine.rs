//! The one [`Engine`]: configuration, the pooling allocator with its
//! on-demand fallback, the epoch ticker, and the one [`Linker`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::epoch::EPOCH_TICK;
use crate::error::HostError;
use crate::limits::Limits;
use crate::sandbox::StoreState;

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// wasmtime's pooling allocator: slots reserved up front, instantiation
    /// in microseconds.
    Pooling,
    /// Allocation per instance (`mmap` per memory); used when the pool's
    /// address-space reservation is refused (e.g. under `ulimit -v`).
    OnDemand,
}

impl Allocator {
    /// `pooling` or `on-demand`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pooling => "pooling",
            Self::OnDemand => "on-demand",
        }
    }
}

fn base_config(limits: &Limits) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(limits.max_wasm_stack)
        .parallel_compilation(true);
    config
}

/// Size the pool. A conversion holds one component instance; at most
/// `workers` conversions run at once, up to `max_idle_instances` warm ones
/// wait for their tenant's next forward, plus loads/reloads describing
/// plugins on another thread. A std Rust component has a handful of core instances
/// (its module plus the canonical-ABI shims), one or two memories and a few
/// tables, so the totals are multiples of the component-instance count with
/// generous slack: an exhausted pool is an instantiation error, while unused
/// slots cost only address space.
fn pooling(limits: &Limits, plugin_count: usize) -> PoolingAllocationConfig {
    let concurrent =
        limits.workers.max(1) * 2 + plugin_count.max(1) + limits.max_idle_instances + 16;
    let components = u32::try_from(concurrent).unwrap_or(u32::MAX / 32);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(components)
        .total_core_instances(components.saturating_mul(16))
        .total_memories(components.saturating_mul(4))
        .total_tables(components.saturating_mul(8))
        // One fiber stack per call in flight (calls are async).
        .total_stacks(components)
        .max_memory_size(limits.max_memory_bytes);
    // Resetting a slot for the next conversion: by default wasmtime
    // `madvise`s a freed linear memory away, which costs a TLB-shootdown IPI
    // to every core and a page fault per page the next guest touches (a
    // quarter of the gateway's CPU at saturation). With the `PAGEMAP_SCAN`
    // ioctl (Linux 6.7+) wasmtime instead finds the pages the guest dirtied
    // and copies the original image bytes (or zeros) back over them, up to
    // the keep-resident bound; the rest is still decommitted. Every
    // conversion still starts from pristine memory in a fresh store. Without
    // the ioctl, keep-resident would `memset` the whole bound on every
    // reset, which is slower than `madvise`, so it is only set with it.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }
    pool
}

/// Dirty linear-memory bytes per slot reset by copying rather than
/// decommitting (a converter dirties a few hundred KiB: stack, heap, data).
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;

/// The same bound for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Build the engine: pooling first, on-demand when the pool cannot reserve
/// its address space. Constructing the engine is the probe (that is when the
/// pool reserves its memory).
pub(crate) fn build(
    limits: &Limits,
    plugin_count: usize,
) -> Result<(Engine, Allocator), HostError> {
    let mut config = base_config(limits);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(
        limits,
        plugin_count,
    )));
    match Engine::new(&config) {
        Ok(engine) => Ok((engine, Allocator::Pooling)),
        Err(e) => {
            tracing::warn!(error = %e, "pooling allocator unavailable; falling back to on-demand allocation");
            let config = base_config(limits);
            Engine::new(&config)
                .map(|engine| (engine, Allocator::OnDemand))
                .map_err(|e| HostError::Engine(format!("{e:#}")))
        }
    }
}

/// The linker every plugin is instantiated through: the empty WASI p2
/// interfaces plus the `host` imports of every implemented ABI version.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<StoreState>, HostError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| HostError::Linker(format!("{e:#}")))?;
    crate::bindings::add_to_linker(&mut linker).map_err(|e| HostError::Linker(format!("{e:#}")))?;
    Ok(linker)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    pub(crate) fn start(engine: Engine) -> Result<Self, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("hermes-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| HostError::Workers(e.to_string()))?;
        Ok(Self { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
