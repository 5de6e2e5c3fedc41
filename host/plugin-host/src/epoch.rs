//! Epoch interruption's clock: the tick the engine's ticker advances and the
//! deadline a call gets in ticks. Shared by the engine (which ticks) and the
//! sandbox (which sets deadlines), so neither depends on the other for it.

use std::time::Duration;

/// How often the ticker advances the epoch. Deadlines are rounded up to whole
/// ticks, so a guest is stopped between `deadline` and `deadline + 2 ticks`.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Epoch ticks for a deadline: rounded up, plus one because the next tick may
/// land immediately after the deadline is set.
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks)
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}
