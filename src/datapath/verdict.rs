//! What the backend does with a processed frame, and how it is counted.

use crate::stats::{DropReason, WorkerStats};

/// What the backend does with a processed frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out.
    Transmit,
    /// Not fastlb's: the kernel should have it (the XDP filter passes such frames; a
    /// backend that already holds one counts it).
    Pass,
    /// Drop it, counted under the reason.
    Drop(DropReason),
    /// The processor kept a copy to send later ([`super::PacketProcessor::emit`]); the
    /// backend frees the frame as for a drop. Counted by the processor where it keeps it.
    Held,
}

impl Verdict {
    /// Counts a frame received and handled with this verdict: `rx`, and `tx`, `passed` or
    /// the drop's reason. The one place a processor counts its frames.
    #[inline]
    pub fn count(self, stats: &WorkerStats) {
        stats.rx.add(1);
        match self {
            Verdict::Transmit => stats.tx.add(1),
            Verdict::Pass => stats.passed.add(1),
            Verdict::Drop(reason) => stats.count_drop(reason),
            Verdict::Held => {}
        }
    }

    /// Counts a frame the processor emitted on its own ([`super::PacketProcessor::emit`]):
    /// as [`Verdict::count`], but not as received.
    #[inline]
    pub fn count_emitted(self, stats: &WorkerStats) {
        match self {
            Verdict::Transmit => stats.tx.add(1),
            Verdict::Pass => stats.passed.add(1),
            Verdict::Drop(reason) => stats.count_drop(reason),
            Verdict::Held => {}
        }
    }
}
