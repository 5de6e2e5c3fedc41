//! The reconnect ladder (relay-contract §7.2): pure arithmetic, so it is
//! tested without sockets or clocks.

use std::time::Duration;

use crate::config::BackoffConfig;

/// Where the supervisor is on the ladder.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// The next delay and its 1-based attempt number; climbs the ladder.
    /// `unit` is a uniform sample in `[0, 1)` (injected so tests are exact).
    pub(crate) fn next_delay(&mut self, unit: f64) -> (u32, Duration) {
        self.attempt = self.attempt.saturating_add(1);
        (self.attempt, delay(&self.config, self.attempt, unit))
    }

    /// Back to the bottom rung after a connection proved stable.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    pub(crate) fn stable_after(&self) -> Duration {
        self.config.stable_after
    }
}

/// Delay before attempt `attempt` (1-based): `base · 2^(attempt-1)`, capped at
/// `max`, then shortened by up to `jitter` of itself.
pub(crate) fn delay(config: &BackoffConfig, attempt: u32, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(31);
    let ceiling = config
        .base
        .checked_mul(1u32 << exp)
        .unwrap_or(config.max)
        .min(config.max);
    let jitter = config.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
    ceiling.mul_f64(1.0 - jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> BackoffConfig {
        BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        }
    }

    #[test]
    fn doubles_from_one_second_and_caps_at_thirty() {
        let mut b = Backoff::new(ladder());
        let secs: Vec<u64> = (0..8).map(|_| b.next_delay(0.5).1.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn reset_returns_to_the_bottom_rung() {
        let mut b = Backoff::new(ladder());
        b.next_delay(0.0);
        b.next_delay(0.0);
        b.reset();
        assert_eq!(b.next_delay(0.0), (1, Duration::from_secs(1)));
    }

    #[test]
    fn jitter_only_shortens_and_never_exceeds_the_cap() {
        let config = BackoffConfig::default();
        for attempt in 1..40 {
            let ceiling = delay(&config, attempt, 0.0);
            let jittered = delay(&config, attempt, 0.999);
            assert!(jittered <= ceiling, "attempt {attempt}");
            assert!(ceiling <= config.max, "attempt {attempt}");
            assert!(jittered >= ceiling.mul_f64(0.8) - Duration::from_millis(1));
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let config = ladder();
        assert_eq!(delay(&config, u32::MAX, 0.0), config.max);
    }
}
