//! What a worker does after a pass: go on, spin, or sleep in `poll`.
//!
//! Sleeping at the first empty pass costs a wakeup per packet at moderate rates: the
//! receive softirq on another CPU wakes the worker (an IPI, a VM exit under KVM), the
//! worker forwards one frame and sleeps again. Measured on veth at half load, that made
//! the forwarder CPU-bound on wakeups with one frame per pass and queues of milliseconds.
//! Spinning for a short window after the last frame keeps the worker awake between
//! closely spaced packets, and an idle worker still sleeps, so it burns no CPU.
//!
//! The sleep is short while frames wait on a tx ring: in copy mode the kernel takes tx
//! frames only in `sendto` or `poll` (which drives tx itself), and nothing wakes the worker
//! for them; otherwise the timeout only bounds how soon the stop flag is seen, because
//! `POLLIN` wakes the worker when frames arrive.

use std::time::Duration;

use crate::time::Instant;

/// `poll` timeout of an idle worker with empty tx rings (only bounds stop latency).
pub(crate) const IDLE_POLL_MS: i32 = 10;
/// `poll` timeout while frames wait on a tx ring (the `poll` call itself sends them).
pub(crate) const TX_PENDING_POLL_MS: i32 = 1;
const _: () = assert!(TX_PENDING_POLL_MS < IDLE_POLL_MS);

/// The next move of a worker loop.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Run another pass at once.
    Pass,
    /// Sleep in `poll` (rx readiness) for at most this many milliseconds.
    Sleep(i32),
}

/// Decides between spinning and sleeping from the passes' results.
#[derive(Debug)]
pub(crate) struct IdlePolicy {
    spin: Duration,
    busy_poll: bool,
    /// Start of the current run of empty passes.
    idle_since: Option<Instant>,
}

impl IdlePolicy {
    /// Spin for `spin` after the last received frame before sleeping; with `busy_poll`,
    /// never sleep.
    pub(crate) fn new(spin: Duration, busy_poll: bool) -> IdlePolicy {
        IdlePolicy {
            spin,
            busy_poll,
            idle_since: None,
        }
    }

    /// After a pass at `now` that received `received` frames, with frames left on a tx
    /// ring or not.
    pub(crate) fn after_pass(&mut self, now: Instant, received: usize, tx_pending: bool) -> Next {
        if received > 0 || self.busy_poll {
            self.idle_since = None;
            return Next::Pass;
        }
        let since = *self.idle_since.get_or_insert(now);
        if now.saturating_since(since) < self.spin {
            return Next::Pass;
        }
        // The window restarts after the sleep: a frame that woke the worker is likely
        // followed by more.
        self.idle_since = None;
        Next::Sleep(if tx_pending {
            TX_PENDING_POLL_MS
        } else {
            IDLE_POLL_MS
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(t: u64) -> Instant {
        Instant::from_micros(t)
    }

    #[test]
    fn spins_for_the_window_after_the_last_frame_then_sleeps() {
        let mut p = IdlePolicy::new(Duration::from_micros(50), false);
        assert_eq!(p.after_pass(us(1000), 3, false), Next::Pass);
        // The window opens at the first empty pass, not at the last busy one.
        assert_eq!(p.after_pass(us(1010), 0, false), Next::Pass);
        assert_eq!(p.after_pass(us(1059), 0, false), Next::Pass);
        assert_eq!(p.after_pass(us(1060), 0, false), Next::Sleep(IDLE_POLL_MS));
        // Woken up: a fresh window.
        assert_eq!(p.after_pass(us(5000), 0, false), Next::Pass);
        assert_eq!(p.after_pass(us(5049), 0, false), Next::Pass);
        assert_eq!(p.after_pass(us(5050), 0, false), Next::Sleep(IDLE_POLL_MS));
    }

    #[test]
    fn a_frame_inside_the_window_restarts_it() {
        let mut p = IdlePolicy::new(Duration::from_micros(50), false);
        assert_eq!(p.after_pass(us(0), 0, false), Next::Pass);
        assert_eq!(p.after_pass(us(40), 1, false), Next::Pass);
        assert_eq!(p.after_pass(us(45), 0, false), Next::Pass);
        assert_eq!(p.after_pass(us(94), 0, false), Next::Pass);
        assert_eq!(p.after_pass(us(95), 0, false), Next::Sleep(IDLE_POLL_MS));
    }

    #[test]
    fn frames_waiting_on_tx_shorten_the_sleep() {
        let mut p = IdlePolicy::new(Duration::ZERO, false);
        assert_eq!(
            p.after_pass(us(0), 0, true),
            Next::Sleep(TX_PENDING_POLL_MS)
        );
        assert_eq!(p.after_pass(us(1), 0, false), Next::Sleep(IDLE_POLL_MS));
    }

    #[test]
    fn busy_poll_never_sleeps() {
        let mut p = IdlePolicy::new(Duration::ZERO, true);
        for t in 0..1000 {
            assert_eq!(p.after_pass(us(t * 1000), 0, t % 2 == 0), Next::Pass);
        }
    }
}
