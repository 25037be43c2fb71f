//! The pipeline's clock.
//!
//! The core never reads a clock: every entry point takes `now` from its caller. The pcap
//! backend derives it from capture timestamps (so a replay is deterministic), the AF_XDP
//! backend from `CLOCK_MONOTONIC` once per batch.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time on the pipeline's clock, in microseconds since an arbitrary epoch.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The clock's epoch.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant(micros)
    }

    /// An instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Instant {
        Instant(secs * 1_000_000)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.as_micros() as u64))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d.as_micros() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_secs(5);
        assert_eq!((t + Duration::from_secs(2)).as_micros(), 7_000_000);
        assert_eq!(t - Duration::from_secs(9), Instant::ZERO);
        assert_eq!(Instant::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(t.saturating_since(Instant::ZERO), Duration::from_secs(5));
    }
}
