//! The control word: generation (24 bits) | state (4) | expiry in milliseconds (36), and
//! the 36-bit millisecond clock it counts on. Every change of an entry's state is one
//! compare-exchange on this word.

use crate::time::Instant;

pub(super) const EXP_BITS: u32 = 36;
pub(super) const EXP_MASK: u64 = (1 << EXP_BITS) - 1;
pub(super) const EXP_HALF: u64 = 1 << (EXP_BITS - 1);
pub(super) const STATE_SHIFT: u32 = 36;
pub(super) const GEN_SHIFT: u32 = 40;
pub(super) const GEN_MASK: u32 = (1 << 24) - 1;
/// State nibble of an entry `expire_now` retired: logically gone, counters settled, waiting
/// for its owner to reclaim the slot.
pub(super) const DOOMED: u8 = 15;

/// The control word. Odd generation = live entry; even = free (or being written).
#[derive(Copy, Clone, PartialEq, Eq)]
pub(super) struct Ctl(pub(super) u64);

impl Ctl {
    #[inline]
    pub(super) fn new(gen: u32, state: u8, expiry_ms: u64) -> Ctl {
        Ctl(u64::from(gen & GEN_MASK) << GEN_SHIFT
            | u64::from(state & 0xf) << STATE_SHIFT
            | expiry_ms & EXP_MASK)
    }
    #[inline]
    pub(super) fn gen(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32 & GEN_MASK
    }
    #[inline]
    pub(super) fn live(self) -> bool {
        self.gen() & 1 == 1
    }
    #[inline]
    pub(super) fn state(self) -> u8 {
        (self.0 >> STATE_SHIFT) as u8 & 0xf
    }
    #[inline]
    pub(super) fn expiry(self) -> u64 {
        self.0 & EXP_MASK
    }
}

/// Milliseconds of `now`, modulo 2^36.
#[inline]
pub(super) fn ms(now: Instant) -> u64 {
    (now.as_micros() / 1000) & EXP_MASK
}

/// `now >= expiry` on the wrapping 36-bit millisecond clock.
#[inline]
pub(super) fn is_expired(expiry: u64, now_ms: u64) -> bool {
    now_ms.wrapping_sub(expiry) & EXP_MASK < EXP_HALF
}

#[inline]
pub(super) fn deadline(now_ms: u64, secs: u32) -> u64 {
    (now_ms + u64::from(secs) * 1000) & EXP_MASK
}
