//! State shared by the handle, the supervisor and the connection tasks.
//!
//! Every lock here is a `std::sync::Mutex` held for a few map operations and
//! never across an `.await`, so contention is short and there is no async
//! lock to reason about.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hermes_protocol::action::{ActionResult, RequestId};
use hermes_protocol::descriptor::Descriptor;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::RelayConfig;
use crate::state::{Counters, LinkState};

/// One encoded frame for the writer. `request` names the outbound action it
/// carries, so a write failure resolves exactly that caller.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) text: String,
    pub(crate) request: Option<RequestId>,
}

/// The live connection, present only between handshake and teardown.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) writer: mpsc::Sender<Outgoing>,
    /// `bufferId`s acked on this connection (at most once each, §5.4). A new
    /// connection gets a new slot, so the set resets on reconnect.
    pub(crate) acked: HashSet<String>,
}

/// Descriptors of the current connection (§3.2): the first is the default;
/// later ones are kept per platform and never replace it.
#[derive(Debug, Default)]
pub(crate) struct Descriptors {
    pub(crate) default: Option<Arc<Descriptor>>,
    pub(crate) per_platform: HashMap<String, Arc<Descriptor>>,
}

/// Lock a mutex, recovering the data if a panicking thread poisoned it: the
/// maps stay structurally valid whatever happened mid-operation.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    /// Waiters of outbound actions keyed by `requestId`. Owned by the link:
    /// whoever removes an entry resolves it, so each caller gets exactly one
    /// result and no entry outlives its caller.
    pub(crate) pending: Mutex<HashMap<RequestId, oneshot::Sender<ActionResult>>>,
    pub(crate) slot: Mutex<Option<Slot>>,
    pub(crate) descriptors: Mutex<Descriptors>,
    pub(crate) state: watch::Sender<LinkState>,
    /// Bumped on every `going_idle_ack`.
    pub(crate) idle_acks: watch::Sender<u64>,
    pub(crate) counters: Counters,
    pub(crate) placeholder: Arc<Descriptor>,
}

impl Shared {
    pub(crate) fn new(config: RelayConfig) -> Self {
        let placeholder = Arc::new(Descriptor::placeholder(config.default_platform()));
        Self {
            config,
            pending: Mutex::new(HashMap::new()),
            slot: Mutex::new(None),
            descriptors: Mutex::new(Descriptors::default()),
            state: watch::Sender::new(LinkState::Connecting),
            idle_acks: watch::Sender::new(0),
            counters: Counters::default(),
            placeholder,
        }
    }

    pub(crate) fn set_state(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    /// Resolve one pending request; `false` when nobody waits for it (late
    /// or unknown id).
    pub(crate) fn resolve(&self, id: &RequestId, result: ActionResult) -> bool {
        let waiter = lock(&self.pending).remove(id);
        match waiter {
            // The caller may have just given up; either way the entry is gone.
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    /// Resolve every pending request at once with `result()`.
    pub(crate) fn settle_all(&self, result: fn() -> ActionResult) {
        let drained: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(result());
        }
    }

    /// The current connection's writer, if the handshake completed.
    pub(crate) fn writer(&self) -> Option<mpsc::Sender<Outgoing>> {
        lock(&self.slot).as_ref().map(|s| s.writer.clone())
    }

    pub(crate) fn install(&self, writer: mpsc::Sender<Outgoing>, descriptor: Arc<Descriptor>) {
        lock(&self.descriptors).default = Some(descriptor);
        *lock(&self.slot) = Some(Slot {
            writer,
            acked: HashSet::new(),
        });
    }

    pub(crate) fn clear_connection(&self) {
        *lock(&self.slot) = None;
        let mut d = lock(&self.descriptors);
        d.default = None;
        d.per_platform.clear();
    }

    pub(crate) fn add_platform_descriptor(&self, descriptor: Descriptor) {
        lock(&self.descriptors)
            .per_platform
            .insert(descriptor.platform.clone(), Arc::new(descriptor));
    }
}
