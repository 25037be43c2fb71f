//! The expiry sweep, paced by the clock rather than by the packet rate.

use super::Pipeline;
use crate::time::Instant;

impl Pipeline {
    /// Expires connections at most once per millisecond of the clock, looking at
    /// `expire_per_ms` slots for each millisecond that passed (the whole range after a
    /// jump of a second or more), so the sweep's cost follows time, not the packet rate.
    ///
    /// Timers are in milliseconds and every timeout is at least a second, so a sweep at
    /// the first batch of a millisecond finds everything a sweep at each batch would: with
    /// a budget of the whole range (replay) expiry is exactly as prompt as before. Between
    /// sweeps, `lookup_live` expires an overdue entry at the packet that finds it.
    pub(super) fn sweep(&mut self, now: Instant) {
        let now_ms = now.as_micros() / 1000;
        let elapsed_ms = match self.swept_ms {
            Some(last) if last == now_ms && !self.reclaim_due => return,
            // A clock that went back (captures need not be in order) gets a full pass.
            Some(last) if last > now_ms => u64::MAX,
            Some(last) => (now_ms - last).max(1),
            None => 1,
        };
        let budget = usize::try_from(elapsed_ms)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.expire_per_ms);
        self.conns.expire(self.worker, now, budget);
        self.swept_ms = Some(now_ms);
        self.reclaim_due = false;
    }
}
