//! Per-plugin counters and the quarantine state machine.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::FailureKind;

/// Quarantine settings (part of [`Limits`](crate::Limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Consecutive faults (traps, timeouts, memory limit, bad output, panics)
    /// that put a plugin in quarantine.
    pub after_faults: u32,
    /// The first quarantine period; it doubles on every re-entry.
    pub backoff: Duration,
    /// The longest quarantine period.
    pub max_backoff: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        Self {
            after_faults: 5,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default)]
struct QuarantineState {
    consecutive_faults: u32,
    until: Option<Instant>,
    next_backoff: Option<Duration>,
}

/// Live counters of one plugin (by name; they survive reloads).
#[derive(Debug, Default)]
pub(crate) struct PluginStats {
    conversions: AtomicU64,
    events: AtomicU64,
    ignored: AtomicU64,
    rejected: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    quarantines: AtomicU64,
    quarantine: Mutex<QuarantineState>,
}

/// A snapshot of one plugin's counters, for metrics and `GET /plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginCounters {
    /// Conversions attempted (including rejected and failed ones).
    pub conversions: u64,
    /// Events produced.
    pub events: u64,
    /// Conversions that ended `ignored`.
    pub ignored: u64,
    /// Typed rejections.
    pub rejected: u64,
    /// Failures by kind (`trap`, `timeout`, …); kinds never seen are absent.
    pub failures: BTreeMap<&'static str, u64>,
    /// Times the plugin entered quarantine.
    pub quarantines: u64,
    /// Time left in the current quarantine, if any.
    pub quarantined_for: Option<Duration>,
}

impl PluginStats {
    fn quarantine(&self) -> std::sync::MutexGuard<'_, QuarantineState> {
        self.quarantine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(remaining)` while the plugin is quarantined.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.quarantine().until {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub(crate) fn record_events(&self, n: usize) {
        self.conversions.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(n as u64, Ordering::Relaxed);
        self.healthy();
    }

    pub(crate) fn record_ignored(&self) {
        self.conversions.fetch_add(1, Ordering::Relaxed);
        self.ignored.fetch_add(1, Ordering::Relaxed);
        self.healthy();
    }

    /// A typed rejection is the plugin working correctly, but it is also
    /// what a crafted request can always obtain: it is neutral, neither
    /// counting toward quarantine nor resetting a fault streak (otherwise
    /// interleaving bad requests would keep a faulting plugin in service).
    pub(crate) fn record_rejected(&self) {
        self.conversions.fetch_add(1, Ordering::Relaxed);
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a failure; faults may start a quarantine (returns its length).
    pub(crate) fn record_failure(
        &self,
        kind: FailureKind,
        fault: bool,
        policy: &QuarantinePolicy,
        now: Instant,
    ) -> Option<Duration> {
        self.conversions.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.failures.get(kind.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if !fault {
            return None;
        }
        let mut q = self.quarantine();
        q.consecutive_faults = q.consecutive_faults.saturating_add(1);
        if q.consecutive_faults < policy.after_faults.max(1) {
            return None;
        }
        // After a quarantine ends the streak is still at the threshold, so
        // the first fault of the probation re-enters with a doubled backoff.
        let backoff = q
            .next_backoff
            .unwrap_or(policy.backoff)
            .min(policy.max_backoff);
        q.until = Some(now + backoff);
        q.next_backoff = Some(backoff.saturating_mul(2).min(policy.max_backoff));
        self.quarantines.fetch_add(1, Ordering::Relaxed);
        Some(backoff)
    }

    fn healthy(&self) {
        let mut q = self.quarantine();
        q.consecutive_faults = 0;
        q.next_backoff = None;
    }

    /// Forget faults (a new version of the plugin was loaded).
    pub(crate) fn reset_quarantine(&self) {
        *self.quarantine() = QuarantineState::default();
    }

    pub(crate) fn snapshot(&self, now: Instant) -> PluginCounters {
        let failures = FailureKind::ALL
            .iter()
            .filter_map(|k| {
                let n = self.failures.get(k.index())?.load(Ordering::Relaxed);
                (n > 0).then_some((k.as_str(), n))
            })
            .collect();
        PluginCounters {
            conversions: self.conversions.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failures,
            quarantines: self.quarantines.load(Ordering::Relaxed),
            quarantined_for: self.check(now).err(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QuarantinePolicy {
        QuarantinePolicy {
            after_faults: 3,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(25),
        }
    }

    #[test]
    fn quarantine_after_consecutive_faults_with_doubling_capped_backoff() {
        let s = PluginStats::default();
        let p = policy();
        let t0 = Instant::now();
        assert_eq!(s.record_failure(FailureKind::Trap, true, &p, t0), None);
        assert_eq!(s.record_failure(FailureKind::Trap, true, &p, t0), None);
        assert_eq!(
            s.record_failure(FailureKind::Trap, true, &p, t0),
            Some(Duration::from_secs(10))
        );
        assert!(s.check(t0).is_err());
        let t1 = t0 + Duration::from_secs(11);
        assert!(s.check(t1).is_ok(), "quarantine ends after the backoff");
        assert_eq!(
            s.record_failure(FailureKind::Timeout, true, &p, t1),
            Some(Duration::from_secs(20))
        );
        let t2 = t1 + Duration::from_secs(21);
        assert_eq!(
            s.record_failure(FailureKind::Timeout, true, &p, t2),
            Some(Duration::from_secs(25)),
            "capped"
        );
        assert_eq!(s.snapshot(t2).quarantines, 3);
    }

    #[test]
    fn rejections_and_non_faults_never_quarantine() {
        let s = PluginStats::default();
        let p = policy();
        let t0 = Instant::now();
        for _ in 0..10 {
            s.record_rejected();
            assert_eq!(s.record_failure(FailureKind::NoRoute, false, &p, t0), None);
        }
        assert!(s.check(t0).is_ok());
        s.record_failure(FailureKind::Trap, true, &p, t0);
        s.record_failure(FailureKind::Trap, true, &p, t0);
        s.record_events(1);
        assert_eq!(
            s.record_failure(FailureKind::Trap, true, &p, t0),
            None,
            "success resets the streak"
        );
    }

    #[test]
    fn rejections_do_not_reset_a_fault_streak() {
        let s = PluginStats::default();
        let p = policy();
        let t0 = Instant::now();
        s.record_failure(FailureKind::Trap, true, &p, t0);
        s.record_rejected();
        s.record_failure(FailureKind::Trap, true, &p, t0);
        s.record_rejected();
        assert_eq!(
            s.record_failure(FailureKind::Trap, true, &p, t0),
            Some(Duration::from_secs(10)),
            "three faults with rejections between them still quarantine"
        );
    }
}
