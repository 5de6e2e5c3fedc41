//! Per-plugin counters and the quarantine state machine.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admission::Admission;
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
    /// While quarantined, one forward per this interval still goes to the
    /// plugin as a probe; a probe that converts ends the quarantine. So a
    /// flood of poison inputs cannot keep a working converter out of
    /// service for the tenants sending it good ones.
    pub probe_every: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        Self {
            after_faults: 5,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            probe_every: Duration::from_secs(1),
        }
    }
}

/// The per-plugin budget of `log` lines over time: a token bucket refilled
/// at `per_second` up to `burst`. The per-call cap bounds one conversion; this
/// bounds a plugin that logs its full per-call allowance on every one of
/// thousands of requests a second.
#[derive(Debug)]
struct LogBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl LogBucket {
    /// Take one token at `now`; false when the bucket is empty.
    fn take(&mut self, now: Instant, per_second: u32, burst: u32) -> bool {
        let burst = f64::from(burst);
        let refill = self.last.map_or(burst, |last| {
            // A clock that went backwards (`Instant`s from different
            // threads are not ordered) refills nothing.
            now.saturating_duration_since(last).as_secs_f64() * f64::from(per_second)
        });
        self.tokens = (self.tokens + refill).min(burst);
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct QuarantineState {
    consecutive_faults: u32,
    until: Option<Instant>,
    next_backoff: Option<Duration>,
    next_probe: Option<Instant>,
}

/// Live counters of one plugin (by name; they survive reloads).
#[derive(Debug)]
pub(crate) struct PluginStats {
    conversions: AtomicU64,
    events: AtomicU64,
    ignored: AtomicU64,
    rejected: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    quarantines: AtomicU64,
    quarantine: Mutex<QuarantineState>,
    tenant_of_calls: AtomicU64,
    log_lines_dropped: AtomicU64,
    log_bucket: Mutex<LogBucket>,
    /// The plugin's share of the workers and its waiting line.
    pub(crate) admission: Admission,
}

impl Default for PluginStats {
    fn default() -> Self {
        Self::new(Admission::new(1, 256))
    }
}

impl PluginStats {
    /// Fresh counters with this admission.
    pub(crate) fn new(admission: Admission) -> Self {
        Self {
            admission,
            conversions: AtomicU64::default(),
            events: AtomicU64::default(),
            ignored: AtomicU64::default(),
            rejected: AtomicU64::default(),
            failures: Default::default(),
            quarantines: AtomicU64::default(),
            quarantine: Mutex::default(),
            tenant_of_calls: AtomicU64::default(),
            log_lines_dropped: AtomicU64::default(),
            // Starts full (`last` unset): a fresh plugin may use its burst.
            log_bucket: Mutex::new(LogBucket {
                tokens: 0.0,
                last: None,
            }),
        }
    }
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
    /// `tenant-of` calls made. The host asks for the tenant key only when a
    /// `[[route]]` with a `tenant` exists for the forward's platform.
    pub tenant_of_calls: u64,
    /// `log` lines dropped, over the per-call cap
    /// ([`Limits::max_log_lines`](crate::Limits::max_log_lines)) or the
    /// per-plugin rate ([`Limits::log_lines_per_second`](crate::Limits::log_lines_per_second)).
    pub log_lines_dropped: u64,
    /// Forwards waiting for this plugin right now (its own line; see
    /// [`Limits::per_plugin_queue`](crate::Limits::per_plugin_queue)).
    pub waiting: u64,
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

    /// Whether a forward may go to the plugin at `now`: yes unless it is
    /// quarantined, and then only as the one probe per `probe_every`.
    pub(crate) fn admit(&self, now: Instant, probe_every: Duration) -> Result<(), Duration> {
        let mut q = self.quarantine();
        match q.until {
            Some(until) if until > now => {
                if q.next_probe.is_none_or(|p| p <= now) {
                    q.next_probe = Some(now + probe_every);
                    return Ok(());
                }
                Err(until - now)
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn record_tenant_of(&self) {
        self.tenant_of_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether one more `log` line fits the plugin's rate at `now`; a line
    /// that does not is counted as dropped.
    pub(crate) fn allow_log_line(&self, now: Instant, per_second: u32, burst: u32) -> bool {
        let allowed = self
            .log_bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(now, per_second, burst);
        if !allowed {
            self.record_log_dropped(1);
        }
        allowed
    }

    /// Count `log` lines dropped for any reason.
    pub(crate) fn record_log_dropped(&self, n: u64) {
        self.log_lines_dropped.fetch_add(n, Ordering::Relaxed);
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
        // Faults of conversions that were already running when the
        // quarantine began say nothing new: they neither extend it nor
        // double the next backoff.
        if q.until.is_some_and(|until| until > now) {
            return None;
        }
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
        q.next_probe = Some(now + policy.probe_every);
        q.next_backoff = Some(backoff.saturating_mul(2).min(policy.max_backoff));
        self.quarantines.fetch_add(1, Ordering::Relaxed);
        Some(backoff)
    }

    /// A conversion worked: the streak, the backoff and any quarantine end
    /// (a probe that converts lifts the quarantine).
    fn healthy(&self) {
        let mut q = self.quarantine();
        if q.until.is_some() || q.consecutive_faults > 0 {
            *q = QuarantineState::default();
        }
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
            tenant_of_calls: self.tenant_of_calls.load(Ordering::Relaxed),
            log_lines_dropped: self.log_lines_dropped.load(Ordering::Relaxed),
            waiting: self.admission.waiting() as u64,
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
            probe_every: Duration::from_secs(1),
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
    fn faults_of_jobs_in_flight_do_not_re_escalate_an_active_quarantine() {
        let s = PluginStats::default();
        let p = policy();
        let t0 = Instant::now();
        for _ in 0..3 {
            s.record_failure(FailureKind::Trap, true, &p, t0);
        }
        assert_eq!(s.check(t0), Err(Duration::from_secs(10)));
        // Conversions that were running when it began fault too.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(s.record_failure(FailureKind::Trap, true, &p, t1), None);
        }
        assert_eq!(s.check(t1), Err(Duration::from_secs(9)), "not extended");
        assert_eq!(s.snapshot(t1).quarantines, 1);
        // After it, the first fault re-enters with the doubled backoff only.
        let t2 = t0 + Duration::from_secs(11);
        assert_eq!(
            s.record_failure(FailureKind::Trap, true, &p, t2),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn a_quarantine_lets_one_probe_through_per_interval_and_a_good_probe_ends_it() {
        let s = PluginStats::default();
        let p = policy();
        let every = Duration::from_secs(1);
        let t0 = Instant::now();
        for _ in 0..3 {
            s.record_failure(FailureKind::Timeout, true, &p, t0);
        }
        assert!(s.admit(t0, every).is_err(), "no probe right away");
        let t1 = t0 + Duration::from_millis(1500);
        assert!(s.admit(t1, every).is_ok(), "one probe after the interval");
        assert!(s.admit(t1, every).is_err(), "and only one");
        // The probe was a poison input too: still quarantined, same length.
        assert_eq!(s.record_failure(FailureKind::Timeout, true, &p, t1), None);
        let t2 = t1 + every;
        assert!(s.admit(t2, every).is_ok(), "the next probe");
        s.record_events(1);
        assert!(s.check(t2).is_ok(), "a probe that converts ends it");
        assert_eq!(s.snapshot(t2).quarantined_for, None);
        assert_eq!(
            s.record_failure(FailureKind::Trap, true, &p, t2),
            None,
            "and the streak starts over"
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

    #[test]
    fn log_lines_are_rate_limited_per_plugin_over_time() {
        let s = PluginStats::default();
        let (rate, burst) = (100, 200);
        let t0 = Instant::now();
        let allowed =
            |at: Instant, n: u32| (0..n).filter(|_| s.allow_log_line(at, rate, burst)).count();
        assert_eq!(allowed(t0, 250), 200, "a fresh plugin gets its burst");
        assert_eq!(s.snapshot(t0).log_lines_dropped, 50);
        // Half a second refills half the rate, not more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(allowed(t1, 100), 50);
        // A long quiet period refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(allowed(t2, 300), 200);
        // An earlier instant (another thread's clock read) refills nothing.
        assert_eq!(allowed(t1, 10), 0);
        assert_eq!(s.snapshot(t2).log_lines_dropped, 50 + 50 + 100 + 10);
    }
}
