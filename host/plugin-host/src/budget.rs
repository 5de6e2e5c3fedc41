//! What one call may consume: the CPU-time budget behind the epoch
//! deadline, and the store's memory/table/instance limiter.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

use crate::limits::Limits;

/// The guest's CPU budget for one call, measured in CPU time rather than
/// wall-clock time: on a busy machine a guest that is preempted is not
/// charged for the time it did not run, so a legitimate converter is never
/// timed out (and quarantined) because the machine is loaded.
///
/// Calls run as futures on the async runtime's threads, in slices: every
/// [`SLICE`] the epoch deadline fires, the callback charges the slice's CPU
/// time and, while budget is left, *yields* to the runtime before the guest
/// goes on. So a guest that spins until its deadline holds a runtime thread
/// for one slice at a time and the link's reader and writer keep running
/// between slices; once the budget is spent the guest is interrupted. A
/// resumed call may continue on another thread, so each slice's start is
/// recorded (thread and its CPU clock) when the yield completes, on the
/// thread that resumes the guest. A wall cap bounds a call that somehow
/// cannot get the CPU at all.
pub(crate) struct CpuBudget {
    budget: Duration,
    wall_cap: Duration,
    /// CPU charged for the slices that ended.
    used: Duration,
    slice: Arc<Mutex<SliceStart>>,
    wall_start: Instant,
}

/// How long a guest runs before it yields to the runtime.
pub(crate) const SLICE: Duration = crate::epoch::EPOCH_TICK;

/// Where the running slice began.
#[derive(Clone, Copy)]
struct SliceStart {
    thread: ThreadId,
    cpu: Duration,
}

impl SliceStart {
    fn now() -> Self {
        Self {
            thread: std::thread::current().id(),
            cpu: thread_cpu_time(),
        }
    }

    /// CPU time this thread spent since the slice began. A slice observed
    /// from another thread (a guest resumed elsewhere by a host call that
    /// waited) is charged as a whole slice: never less than it could have
    /// used.
    fn spent(self) -> Duration {
        if self.thread == std::thread::current().id() {
            thread_cpu_time().saturating_sub(self.cpu)
        } else {
            SLICE
        }
    }
}

/// This thread's CPU time.
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn lock(slice: &Mutex<SliceStart>) -> std::sync::MutexGuard<'_, SliceStart> {
    // A plain value behind the lock: a panic cannot leave it half-written.
    slice.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CpuBudget {
    pub(crate) fn new(budget: Duration) -> Self {
        Self {
            budget,
            // Generous: only a machine that gives the guest almost no CPU
            // for this long ends a call that has budget left.
            wall_cap: budget.saturating_mul(20),
            used: Duration::ZERO,
            slice: Arc::new(Mutex::new(SliceStart::now())),
            wall_start: Instant::now(),
        }
    }

    /// A new call starts now, with the whole budget.
    pub(crate) fn restart(&mut self) {
        self.used = Duration::ZERO;
        *lock(&self.slice) = SliceStart::now();
        self.wall_start = Instant::now();
    }

    /// Epoch ticks until the first deadline of a call.
    pub(crate) fn first_deadline(&self) -> u64 {
        crate::epoch::deadline_ticks(SLICE.min(self.budget))
    }

    /// What to do when the epoch deadline is reached: charge the slice, then
    /// interrupt the guest or yield and give it the next slice.
    pub(crate) fn on_deadline(&mut self) -> UpdateDeadline {
        let spent = lock(&self.slice).spent();
        self.used = self.used.saturating_add(spent);
        if self.used >= self.budget || self.wall_start.elapsed() >= self.wall_cap {
            return UpdateDeadline::Interrupt;
        }
        let next = crate::epoch::deadline_ticks(SLICE.min(self.budget - self.used));
        let slice = Arc::clone(&self.slice);
        UpdateDeadline::YieldCustom(
            next,
            Box::pin(async move {
                tokio::task::yield_now().await;
                // Runs on the thread that resumes the guest.
                *lock(&slice) = SliceStart::now();
            }),
        )
    }

    /// CPU charged so far in this call (tests).
    #[cfg(test)]
    pub(crate) fn used(&self) -> Duration {
        self.used
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
