//! Warm instances for routes with `isolation = "per-tenant"`
//! (conversion.md §3; docs/plugin-authoring.md, "Isolation").
//!
//! By default every conversion gets a fresh store and instance. A route may
//! instead let an instance serve the next forward **of the same plugin
//! load, configuration, profile and tenant** — the guest then keeps what it
//! learned (its allocator's state, caches) across that tenant's requests,
//! and the first call's start-up work is paid once. An instance is never
//! shared by two tenants, and it is retired:
//! - on any failure of a call (trap, deadline, memory cap, output caps,
//!   trust boundary): only a call that ended cleanly returns it;
//! - after [`Limits::instance_reuses`](crate::Limits) calls;
//! - on every reload or policy change (the routing table is rebuilt and
//!   this cache emptied; keys also hold the plugin load itself, so an entry
//!   of an older load can never match);
//! - when the cache is full ([`Limits::max_idle_instances`](crate::Limits)
//!   instances, or [`Limits::max_idle_bytes`](crate::Limits) of linear
//!   memory held by them together): the instance is dropped instead of kept.
//!
//! Finding the tenant needs `tenant-of`. For a per-tenant route it runs on
//! a warm *router* instance of the plugin, which answers tenant keys only:
//! its output is never an event. It sees every tenant's requests, so a
//! converter that stashes data there can only leak it into a tenant key,
//! which decides which of the plugin's own instances converts next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::sandbox::{ConfigMap, Sandbox};
use crate::table::LoadedPlugin;

/// What an idle instance may serve next.
pub(crate) struct InstanceKey {
    /// The plugin load (kept alive by the key, so its address is unique).
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) config: ConfigMap,
    pub(crate) profile: Option<String>,
    pub(crate) role: Role,
}

/// Whose requests an instance converts.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Answers `tenant-of` for every tenant; never converts.
    Router,
    /// Converts the forwards of this tenant (`None`: the plugin named no
    /// tenant for them).
    Tenant(Option<String>),
}

impl InstanceKey {
    /// The map key: the plugin load and configuration by identity (the
    /// entry keeps both alive, so an address is never reused while it is
    /// a key), the profile and the role by value.
    fn slot(&self) -> Slot {
        Slot {
            plugin: Arc::as_ptr(&self.plugin) as usize,
            config: Arc::as_ptr(&self.config) as usize,
            profile: self.profile.clone(),
            role: self.role.clone(),
        }
    }
}

#[derive(PartialEq, Eq, Hash)]
struct Slot {
    plugin: usize,
    config: usize,
    profile: Option<String>,
    role: Role,
}

/// The idle instances of one key, and what keeps the key's identities alive.
struct Entry {
    _plugin: Arc<LoadedPlugin>,
    _config: ConfigMap,
    idle: Vec<Sandbox>,
}

/// Idle warm instances, at most `capacity` of them holding at most
/// `capacity_bytes` of linear memory together.
pub(crate) struct IdleInstances {
    inner: Mutex<Idle>,
}

struct Idle {
    by_key: HashMap<Slot, Entry>,
    count: usize,
    capacity: usize,
    /// Linear memory the idle instances hold, and its bound.
    bytes: usize,
    capacity_bytes: usize,
    /// Instances retired here: past their use limit, a full cache, a clear.
    retired: u64,
}

impl IdleInstances {
    pub(crate) fn new(capacity: usize, capacity_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Idle {
                by_key: HashMap::new(),
                count: 0,
                capacity,
                bytes: 0,
                capacity_bytes,
                retired: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // Only bookkeeping behind the lock (never held across a guest call
        // or an await): a panic cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle instance for `key`, taken out for exclusive use.
    pub(crate) fn take(&self, key: &InstanceKey) -> Option<Sandbox> {
        let mut idle = self.lock();
        let slot = key.slot();
        let entry = idle.by_key.get_mut(&slot)?;
        let sandbox = entry.idle.pop()?;
        if entry.idle.is_empty() {
            // No empty entries: the map holds only what is idle.
            idle.by_key.remove(&slot);
        }
        idle.count -= 1;
        idle.bytes = idle.bytes.saturating_sub(sandbox.memory_bytes());
        Some(sandbox)
    }

    /// Keep `sandbox` for `key` unless it has served `max_uses` calls or the
    /// cache is full (then it is dropped, outside the lock).
    pub(crate) fn put(&self, key: InstanceKey, sandbox: Sandbox, max_uses: u32) {
        let bytes = sandbox.memory_bytes();
        let mut idle = self.lock();
        let full =
            idle.count >= idle.capacity || idle.bytes.saturating_add(bytes) > idle.capacity_bytes;
        if sandbox.uses() >= max_uses || full {
            idle.retired += 1;
            drop(idle);
            drop(sandbox);
            return;
        }
        idle.count += 1;
        idle.bytes += bytes;
        let entry = idle.by_key.entry(key.slot()).or_insert_with(|| Entry {
            _plugin: key.plugin,
            _config: key.config,
            idle: Vec::new(),
        });
        entry.idle.push(sandbox);
    }

    /// Retire every idle instance (a reload or policy change).
    pub(crate) fn clear(&self) {
        let retired = {
            let mut idle = self.lock();
            idle.retired += idle.count as u64;
            idle.count = 0;
            idle.bytes = 0;
            std::mem::take(&mut idle.by_key)
        };
        drop(retired);
    }

    /// Instances retired by the cache so far.
    pub(crate) fn retired(&self) -> u64 {
        self.lock().retired
    }

    /// Idle instances now.
    pub(crate) fn len(&self) -> usize {
        self.lock().count
    }
}
