//! The connection table's hash index: cache-line buckets of atomic cells, bounded linear
//! probing, no locks.
//!
//! ```text
//! bucket (64 B) = 7 cells + 1 overflow counter
//! cell (u64)    = tag (31 bits, high hash bits) | direction (1 bit) | slot + 1 (32 bits)
//!                 0 = empty
//! ```
//!
//! A key lives in its home bucket (`hash & mask`) or, when that is full, in one of the next
//! [`PROBE`] - 1 buckets; the home bucket's overflow counter says how many of its keys live
//! elsewhere, so a lookup of a key whose home never overflowed reads one cache line. Cells
//! are claimed by compare-exchange from 0 and released by compare-exchange back to 0, so an
//! index entry is never overwritten by anyone but the one who placed it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cells per bucket.
pub(super) const CELLS: usize = 7;
/// Buckets a key may live in: its home and the next `PROBE - 1`.
pub(super) const PROBE: usize = 8;

/// The payload of a cell: direction bit and slot, without the tag.
const PAYLOAD_MASK: u64 = (1 << 33) - 1;

#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    cells: [AtomicU64; CELLS],
    overflow: AtomicU64,
}

// SAFETY: only atomic integers; all-zero is the empty bucket.
unsafe impl crate::conn::mem::Zeroable for Bucket {}

/// The index: maps a 64-bit hash to payloads (`dir << 32 | slot + 1`) carrying the hash's
/// tag. It never reads the slots; the table verifies every candidate against the key.
pub(super) struct Index {
    buckets: Box<[Bucket]>,
    mask: usize,
}

impl Index {
    /// An index of `buckets` buckets (rounded up to a power of two, at least [`PROBE`]).
    pub(super) fn new(buckets: usize) -> Index {
        let n = buckets.max(PROBE).next_power_of_two();
        Index {
            buckets: crate::conn::mem::zeroed_slice(n),
            mask: n - 1,
        }
    }

    /// Number of buckets.
    pub(super) fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes the buckets occupy.
    pub(super) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    #[inline]
    fn cell(hash: u64, payload: u64) -> u64 {
        debug_assert!(payload != 0 && payload & !PAYLOAD_MASK == 0);
        (hash >> 33) << 33 | payload
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }

    /// Adds `payload` under `hash`. False when the home bucket and every probed bucket are
    /// full.
    pub(super) fn insert(&self, hash: u64, payload: u64) -> bool {
        let cell = Self::cell(hash, payload);
        let home = self.home(hash);
        if Self::claim(&self.buckets[home], cell) {
            return true;
        }
        // Announce the overflow before placing the cell, so a reader that can see the cell
        // can also see the counter.
        self.buckets[home].overflow.fetch_add(1, Ordering::AcqRel);
        for i in 1..PROBE {
            if Self::claim(&self.buckets[(home + i) & self.mask], cell) {
                return true;
            }
        }
        self.buckets[home].overflow.fetch_sub(1, Ordering::AcqRel);
        false
    }

    fn claim(bucket: &Bucket, cell: u64) -> bool {
        bucket.cells.iter().any(|c| {
            c.load(Ordering::Relaxed) == 0
                && c.compare_exchange(0, cell, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
        })
    }

    /// Removes `payload` from under `hash`. False if it was not there (someone else removed
    /// it first).
    pub(super) fn remove(&self, hash: u64, payload: u64) -> bool {
        let cell = Self::cell(hash, payload);
        let home = self.home(hash);
        for i in 0..PROBE {
            let bucket = &self.buckets[(home + i) & self.mask];
            for c in &bucket.cells {
                if c.load(Ordering::Relaxed) == cell
                    && c.compare_exchange(cell, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    if i != 0 {
                        self.buckets[home].overflow.fetch_sub(1, Ordering::AcqRel);
                    }
                    return true;
                }
            }
            if i == 0 && self.buckets[home].overflow.load(Ordering::Acquire) == 0 {
                return false;
            }
        }
        false
    }

    /// Calls `check` with every payload stored under `hash`'s tag, home bucket first, until
    /// it answers true; returns that payload.
    #[inline]
    pub(super) fn find(&self, hash: u64, mut check: impl FnMut(u64) -> bool) -> Option<u64> {
        let tag = (hash >> 33) << 33;
        let home = self.home(hash);
        for i in 0..PROBE {
            let bucket = &self.buckets[(home + i) & self.mask];
            for c in &bucket.cells {
                let v = c.load(Ordering::Acquire);
                if v != 0 && v & !PAYLOAD_MASK == tag && check(v & PAYLOAD_MASK) {
                    return Some(v & PAYLOAD_MASK);
                }
            }
            if i == 0 && bucket.overflow.load(Ordering::Acquire) == 0 {
                return None;
            }
        }
        None
    }

    /// Asks the CPU to start loading `hash`'s home bucket, ahead of a [`Index::find`].
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        prefetch(&self.buckets[self.home(hash)]);
    }

    /// Calls `f` with every payload in `hash`'s home bucket that carries its tag: the
    /// likely answers of [`Index::find`], for prefetching what they point at.
    #[inline]
    pub(super) fn home_candidates(&self, hash: u64, mut f: impl FnMut(u64)) {
        let tag = (hash >> 33) << 33;
        for c in &self.buckets[self.home(hash)].cells {
            let v = c.load(Ordering::Relaxed);
            if v != 0 && v & !PAYLOAD_MASK == tag {
                f(v & PAYLOAD_MASK);
            }
        }
    }

    /// Cells in use (not a consistent snapshot under writers).
    #[cfg(test)]
    pub(super) fn occupied(&self) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.cells.iter())
            .filter(|c| c.load(Ordering::Relaxed) != 0)
            .count()
    }
}

/// A hint to load the cache line holding `value`; nothing observable happens.
#[inline(always)]
pub(super) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults, writes nothing, and `value` is a
    // valid reference besides.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_probes_and_cleans_up() {
        let idx = Index::new(8);
        // Ten keys with the same home bucket 3 and different tags.
        let hashes: Vec<u64> = (1..=10u64).map(|t| t << 40 | 3).collect();
        for (i, h) in hashes.iter().enumerate() {
            assert!(idx.insert(*h, i as u64 + 1));
        }
        assert_eq!(idx.buckets[3].overflow.load(Ordering::Relaxed), 3);
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(idx.find(*h, |p| p == i as u64 + 1), Some(i as u64 + 1));
        }
        // Removing an overflowed key lowers the counter; a home key does not.
        assert!(idx.remove(hashes[9], 10));
        assert!(!idx.remove(hashes[9], 10));
        assert!(idx.remove(hashes[0], 1));
        assert_eq!(idx.buckets[3].overflow.load(Ordering::Relaxed), 2);
        assert_eq!(idx.find(hashes[9], |_| true), None);
        assert_eq!(idx.occupied(), 8);
    }

    #[test]
    fn full_probe_window_fails() {
        let idx = Index::new(PROBE);
        let n = CELLS * PROBE;
        for i in 0..n as u64 {
            assert!(idx.insert(5, i + 1));
        }
        assert!(!idx.insert(5, 999));
        assert_eq!(
            idx.buckets[5].overflow.load(Ordering::Relaxed),
            (n - CELLS) as u64
        );
    }
}
