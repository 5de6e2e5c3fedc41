//! What one call may consume: the CPU-time budget behind the epoch
//! deadline, and the store's memory/table/instance limiter.

use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

use crate::limits::Limits;

/// The guest's CPU budget for one call, measured in CPU time of the worker
/// thread rather than wall-clock time: on a busy machine a guest that is
/// preempted is not charged for the time it did not run, so a legitimate
/// converter is never timed out (and quarantined) because the machine is
/// loaded. The epoch deadline fires at the wall-clock deadline as before;
/// its callback then looks at the thread's CPU clock and either extends the
/// deadline by what is left of the budget or interrupts the guest. A guest
/// that spins uses its budget in CPU time and is stopped as before. A wall
/// cap bounds a call that somehow cannot get the CPU at all.
pub(crate) struct CpuBudget {
    budget: Duration,
    wall_cap: Duration,
    cpu_start: Duration,
    wall_start: Instant,
}

/// This thread's CPU time.
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl CpuBudget {
    pub(crate) fn new(budget: Duration) -> Self {
        Self {
            budget,
            // Generous: only a machine that gives the worker almost no CPU
            // for this long ends a call that has budget left.
            wall_cap: budget.saturating_mul(20),
            cpu_start: thread_cpu_time(),
            wall_start: Instant::now(),
        }
    }

    /// A new call starts now, with the whole budget.
    pub(crate) fn restart(&mut self) {
        self.cpu_start = thread_cpu_time();
        self.wall_start = Instant::now();
    }

    /// What to do when the epoch deadline is reached.
    pub(crate) fn on_deadline(&self) -> UpdateDeadline {
        let used = thread_cpu_time().saturating_sub(self.cpu_start);
        if used >= self.budget || self.wall_start.elapsed() >= self.wall_cap {
            return UpdateDeadline::Interrupt;
        }
        UpdateDeadline::Continue(crate::epoch::deadline_ticks(self.budget - used))
    }
}

/// Caps what one store may allocate.
pub(crate) struct CallLimiter {
    /// The cap on the sum of all linear memories of the store (a component
    /// may define several memories; a per-memory cap would multiply).
    max_memory_bytes: usize,
    /// Bytes of linear memory granted so far, across every memory.
    pub(crate) memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    pub(crate) memory_limit_hit: bool,
}

impl CallLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            max_memory_bytes: limits.max_memory_bytes,
            memory_bytes: 0,
            max_table_elements: limits.max_table_elements,
            max_instances: limits.max_instances,
            memory_limit_hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A memory's creation is reported as growth from 0, so the running
        // total covers every memory of the store.
        let growth = desired.saturating_sub(current);
        let total = self.memory_bytes.saturating_add(growth);
        if total > self.max_memory_bytes {
            // Refuse the growth (memory.grow returns -1) and remember it, so
            // the abort that usually follows is reported as a memory limit.
            self.memory_limit_hit = true;
            return Ok(false);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
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
