//! Fair scheduling of conversions: a per-plugin admission in front of the
//! shared worker pool (conversion.md §3.1, fairness).
//!
//! Every plugin (by name, across reloads) may run at most
//! [`Limits::per_plugin_workers`](crate::Limits::per_plugin_workers)
//! conversions at once — by default one fewer than the pool has workers —
//! so however slow one plugin is, and however many forwards are routed to
//! it, a worker stays free for everyone else. Forwards waiting for a busy
//! plugin wait in that plugin's own queue, never in front of other plugins'
//! forwards; when that queue holds
//! [`Limits::per_plugin_queue`](crate::Limits::per_plugin_queue) forwards,
//! further ones are refused at once with
//! [`PluginError::Overloaded`] (left unacked, so the connector redelivers a
//! buffered one): the plugin's own backlog is shed, the link is not stalled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::PluginError;

/// One plugin's share of the workers and its bounded waiting line.
#[derive(Debug)]
pub(crate) struct Admission {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Decrements the waiting count however the wait ends (done or cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// At most `concurrency` running and `max_waiting` waiting.
    pub(crate) fn new(concurrency: usize, max_waiting: usize) -> Self {
        Self {
            running: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A place to run one conversion of this plugin: at once when one is
    /// free, after the forwards already waiting for this plugin otherwise,
    /// or `Overloaded` when its line is full.
    pub(crate) async fn enter(&self) -> Result<OwnedSemaphorePermit, PluginError> {
        if let Ok(permit) = Arc::clone(&self.running).try_acquire_owned() {
            return Ok(permit);
        }
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _line = Waiting(&self.waiting);
        if waiting >= self.max_waiting {
            return Err(PluginError::Overloaded { waiting });
        }
        Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| PluginError::Unavailable("closed".to_owned()))
    }

    /// Forwards waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_line_is_refused_and_a_freed_place_admits_the_next() {
        let a = Arc::new(Admission::new(1, 2));
        let running = a.enter().await.expect("free at once");
        let first = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.enter().await.map(drop) }
        });
        let second = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.enter().await.map(drop) }
        });
        while a.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        let third = a.enter().await.expect_err("the line holds two");
        assert!(
            matches!(third, PluginError::Overloaded { waiting: 2 }),
            "{third:?}"
        );
        assert_eq!(
            a.waiting(),
            2,
            "a refused forward leaves the line as it was"
        );
        drop(running);
        first.await.expect("joins").expect("admitted");
        second.await.expect("joins").expect("admitted");
        assert_eq!(a.waiting(), 0);
    }
}
