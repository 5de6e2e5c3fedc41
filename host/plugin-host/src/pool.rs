//! The bounded pool of worker threads that run the synchronous wasmtime
//! calls. A fixed set of std threads fed by a bounded queue: no thread spawn
//! per conversion, and a guest spinning until its deadline never occupies a
//! tokio worker.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use crate::HostError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Worker threads and the queue feeding them.
pub(crate) struct WorkerPool {
    tx: SyncSender<Job>,
}

impl WorkerPool {
    /// Start `workers` threads reading a queue of `capacity` jobs.
    pub(crate) fn new(workers: usize, capacity: usize) -> Result<Self, HostError> {
        let (tx, rx) = sync_channel::<Job>(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("hermes-plugin-{i}"))
                .spawn(move || worker(&rx))
                .map_err(|e| HostError::Workers(e.to_string()))?;
        }
        Ok(Self { tx })
    }

    /// Queue a job. The caller holds a semaphore permit sized to the queue,
    /// so the queue is never full; `Err` means the pool is gone.
    pub(crate) fn submit(&self, job: Job) -> Result<(), &'static str> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err("worker queue full"),
            Err(TrySendError::Disconnected(_)) => Err("worker pool stopped"),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only to take one job.
        let job = match rx.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return, // the pool was dropped
        };
        // A bug in host code must not shrink the pool: the job's oneshot is
        // dropped and its caller gets an `Unavailable` error.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("plugin worker job panicked");
        }
    }
}
