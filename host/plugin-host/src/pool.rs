//! The bounded pool of worker threads that run the synchronous wasmtime
//! calls. A fixed set of std threads fed by a bounded queue: no thread spawn
//! per conversion, and a guest spinning until its deadline never occupies a
//! tokio worker.
//!
//! The queue is a `Mutex<VecDeque>` with a `Condvar` rather than a channel
//! whose receiver sits behind a mutex: with the latter an idle worker blocks
//! in `recv` *holding* the mutex, so every job woke two threads (the one
//! receiving, then the next waiter on the mutex). Here idle workers wait on
//! the condvar with the lock released and a submit wakes exactly one.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::HostError;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    capacity: usize,
    /// Set when the pool is dropped: workers finish what is queued and exit.
    closed: bool,
}

impl Queue {
    /// The lock only guards the queue's bookkeeping; a panic cannot leave it
    /// half-updated, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Worker threads and the queue feeding them.
pub(crate) struct WorkerPool {
    queue: Arc<Queue>,
}

impl WorkerPool {
    /// Start `workers` threads reading a queue of `capacity` jobs.
    pub(crate) fn new(workers: usize, capacity: usize) -> Result<Self, HostError> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                jobs: VecDeque::with_capacity(capacity.max(1)),
                capacity: capacity.max(1),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        // Constructed before the threads so that an early return (a thread
        // that cannot be spawned) closes the queue and the started ones exit.
        let pool = Self { queue };
        for i in 0..workers.max(1) {
            let queue = Arc::clone(&pool.queue);
            std::thread::Builder::new()
                .name(format!("hermes-plugin-{i}"))
                .spawn(move || worker(&queue))
                .map_err(|e| HostError::Workers(e.to_string()))?;
        }
        Ok(pool)
    }

    /// Queue a job. The caller holds a semaphore permit sized to the queue,
    /// so the queue is never full; `Err` means the pool is gone.
    pub(crate) fn submit(&self, job: Job) -> Result<(), &'static str> {
        {
            let mut state = self.queue.lock();
            if state.closed {
                return Err("worker pool stopped");
            }
            if state.jobs.len() >= state.capacity {
                return Err("worker queue full");
            }
            state.jobs.push_back(job);
        }
        self.queue.ready.notify_one();
        Ok(())
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

fn worker(queue: &Queue) {
    loop {
        let job = {
            let mut state = queue.lock();
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    break job;
                }
                if state.closed {
                    return;
                }
                state = queue
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        // A bug in host code must not shrink the pool: the job's oneshot is
        // dropped and its caller gets an `Unavailable` error.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("plugin worker job panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_job_runs_and_a_panicking_job_does_not_shrink_the_pool() {
        let pool = WorkerPool::new(2, 64).expect("pool starts");
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(|| panic!("host bug")))
            .expect("queued");
        for i in 0..32 {
            let tx = tx.clone();
            pool.submit(Box::new(move || {
                let _ = tx.send(i);
            }))
            .expect("queued");
        }
        let mut seen: Vec<i32> = (0..32)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("job ran"))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_queue_refuses_instead_of_blocking() {
        let pool = WorkerPool::new(1, 1).expect("pool starts");
        let (started_tx, started) = mpsc::channel();
        let (release, wait) = mpsc::channel::<()>();
        pool.submit(Box::new(move || {
            let _ = started_tx.send(());
            let _ = wait.recv();
        }))
        .expect("first job queued");
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the worker took the first job");
        pool.submit(Box::new(|| {}))
            .expect("one job fits the queue while the worker is busy");
        assert_eq!(
            pool.submit(Box::new(|| {})).err(),
            Some("worker queue full")
        );
        drop(release);
    }
}
