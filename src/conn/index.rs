//! The connection table's hash index: cache-line buckets of atomic cells, bounded linear
//! probing, no locks.
//!
//! ```text
//! bucket (64 B) = 7 cells + 1 overflow counter
//! cell (u64)    = tag (31 bits, high hash bits) | direction (1 bit) | slot + 1 (32 bits)
//!                 0 = empty
//! ```
//!
//! A key lives in its home bucket or, when that is full, in one of the next [`PROBE`] - 1
//! buckets (the last bucket's window wraps around to the first ones); the home bucket's
//! overflow counter says how many of its keys live elsewhere, so a lookup of a key whose
//! home never overflowed reads one cache line. Cells are claimed by compare-exchange from 0
//! and released by compare-exchange back to 0, so an index entry is never overwritten by
//! anyone but the one who placed it.
//!
//! The bucket count is exactly what the table asks for, not rounded up to a power of two:
//! the home bucket is the hash's low 32 bits scaled to the count (`(h32 * buckets) >> 32`,
//! multiply-shift range reduction: one multiply instead of a mask), so the index costs the
//! same bytes per entry at any capacity (a count rounded up to a power of two cost up to
//! twice as much). The low 32 bits, because the tag is the high 31: a home taken from the
//! high bits would give the keys that share a bucket nearly the same tags.

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
    buckets: crate::conn::mem::Zeroed<Bucket>,
}

impl Index {
    /// An index of `buckets` buckets (at least [`PROBE`]).
    ///
    /// # Panics
    /// If `buckets` is 2^32 or more.
    pub(super) fn new(buckets: usize) -> Index {
        let n = buckets.max(PROBE);
        assert!(n <= u32::MAX as usize, "index too large");
        Index {
            // Resident at once: the packet path never faults a page of it in.
            buckets: crate::conn::mem::zeroed_slice(n, crate::conn::mem::Pages::Now),
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

    /// `hash`'s home bucket: its low 32 bits scaled to the bucket count, below it since the
    /// count is below 2^32.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        home_of(hash, self.buckets.len())
    }

    /// Bucket `i` (below [`PROBE`]) of the probe window starting at bucket `home`, wrapping
    /// past the last bucket to the first: `home + i` is below twice the count, as the count
    /// is at least [`PROBE`], so one subtraction wraps it.
    #[inline]
    fn probe(&self, home: usize, i: usize) -> &Bucket {
        let j = home + i;
        let n = self.buckets.len();
        &self.buckets[if j >= n { j - n } else { j }]
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
            if Self::claim(self.probe(home, i), cell) {
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
            let bucket = self.probe(home, i);
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
            let bucket = self.probe(home, i);
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

/// The home bucket of `hash` among `n` (below 2^32): `floor(h32 * n / 2^32)`, in `0..n`.
#[inline(always)]
fn home_of(hash: u64, n: usize) -> usize {
    (((hash & 0xffff_ffff) * n as u64) >> 32) as usize
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

    /// A hash with tag `tag` (below 2^24) whose home is bucket `home` of `n`: the smallest
    /// low word that scales to `home`.
    fn at(tag: u64, home: u64, n: u64) -> u64 {
        tag << 40 | (home << 32).div_ceil(n)
    }

    /// splitmix64: well-spread test hashes.
    fn hashes(count: usize) -> Vec<u64> {
        let mut s = 1u64;
        (0..count)
            .map(|_| {
                s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            })
            .collect()
    }

    #[test]
    fn home_is_the_scaled_low_word_at_any_count() {
        for n in [8u64, 13, 878, 1001, 5_714_286, 1 << 20, u64::from(u32::MAX)] {
            for home in [0, 1, n / 2, n - 2, n - 1] {
                assert_eq!(home_of(at(1, home, n), n as usize) as u64, home, "{n}");
                // The last low word before the next bucket's first.
                if home > 0 {
                    assert_eq!(
                        home_of(at(1, home, n) - 1, n as usize) as u64,
                        home - 1,
                        "{n}"
                    );
                }
            }
            // The ends of the hash range land on the ends of the index; the tag (high
            // bits) does not move a key.
            assert_eq!(home_of(0, n as usize), 0);
            assert_eq!(home_of(0xffff_ffff, n as usize) as u64, n - 1);
            assert_eq!(home_of(u64::MAX, n as usize) as u64, n - 1);
            assert_eq!(home_of(0xffff_ffff_0000_0000, n as usize), 0);
        }
    }

    #[test]
    fn keys_spread_over_every_bucket_of_any_count() {
        // Homes of well-spread hashes cover every bucket of a count that is not a power
        // of two, both ends included, about evenly (50 a bucket on average).
        for n in [1001usize, 4679] {
            let mut per = vec![0u32; n];
            for h in hashes(50 * n) {
                per[home_of(h, n)] += 1;
            }
            let (min, max) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(*min >= 20 && *max <= 90, "{n} buckets: {min}..{max}");
            assert!(per[0] > 0 && per[n - 1] > 0);
        }
        // Through the index itself: 3 keys a bucket (43 % of the cells), every one found,
        // none lost, keys in the first and the last bucket.
        let n = 1001;
        let idx = Index::new(n);
        assert_eq!(idx.buckets(), n);
        let keys = hashes(3 * n);
        for (i, h) in keys.iter().enumerate() {
            assert!(idx.insert(*h, i as u64 + 1));
        }
        assert_eq!(idx.occupied(), keys.len());
        for (i, h) in keys.iter().enumerate() {
            assert_eq!(idx.find(*h, |p| p == i as u64 + 1), Some(i as u64 + 1));
        }
        let used = |b: &Bucket| b.cells.iter().any(|c| c.load(Ordering::Relaxed) != 0);
        assert!(used(&idx.buckets[0]) && used(&idx.buckets[n - 1]));
        for (i, h) in keys.iter().enumerate() {
            assert!(idx.remove(*h, i as u64 + 1));
        }
        assert_eq!(idx.occupied(), 0);
        assert!(idx
            .buckets
            .iter()
            .all(|b| b.overflow.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn probing_wraps_past_the_last_bucket() {
        let n = 13;
        let idx = Index::new(n);
        let h = |t| at(t, n as u64 - 1, n as u64);
        // Seven keys fill the last bucket; the next two wrap around to bucket 0.
        for t in 1..=CELLS as u64 + 2 {
            assert!(idx.insert(h(t), t));
        }
        assert_eq!(idx.buckets[n - 1].overflow.load(Ordering::Relaxed), 2);
        let in_bucket = |b: usize| {
            idx.buckets[b]
                .cells
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) != 0)
                .count()
        };
        assert_eq!(
            (in_bucket(n - 1), in_bucket(0), in_bucket(1)),
            (CELLS, 2, 0)
        );
        for t in 1..=CELLS as u64 + 2 {
            assert_eq!(idx.find(h(t), |p| p == t), Some(t));
        }
        // Removing a wrapped key finds it past the end and lowers the home's counter.
        assert!(idx.remove(h(CELLS as u64 + 2), CELLS as u64 + 2));
        assert_eq!(idx.buckets[n - 1].overflow.load(Ordering::Relaxed), 1);
        assert_eq!(idx.find(h(CELLS as u64 + 2), |_| true), None);
        assert_eq!(in_bucket(0), 1);

        // A full window from the last bucket: buckets 12, 0, 1, ..., 6, and not 7.
        let idx = Index::new(n);
        let all = (CELLS * PROBE) as u64;
        for t in 1..=all {
            assert!(idx.insert(h(t), t));
        }
        assert!(!idx.insert(h(all + 1), all + 1));
        assert_eq!(
            idx.buckets[n - 1].overflow.load(Ordering::Relaxed),
            all - CELLS as u64
        );
        assert_eq!(idx.occupied(), CELLS * PROBE);
        assert!(idx.buckets[PROBE - 1]
            .cells
            .iter()
            .all(|c| c.load(Ordering::Relaxed) == 0));
        for t in 1..=all {
            assert_eq!(idx.find(h(t), |p| p == t), Some(t));
        }
    }

    #[test]
    fn overflow_probes_and_cleans_up() {
        let idx = Index::new(8);
        // Ten keys with the same home bucket 3 and different tags.
        let hashes: Vec<u64> = (1..=10u64).map(|t| at(t, 3, 8)).collect();
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
        let h = at(0, 5, PROBE as u64);
        for i in 0..n as u64 {
            assert!(idx.insert(h, i + 1));
        }
        assert!(!idx.insert(h, 999));
        assert_eq!(
            idx.buckets[5].overflow.load(Ordering::Relaxed),
            (n - CELLS) as u64
        );
    }

    #[test]
    fn count_is_what_was_asked_for_at_least_a_window() {
        assert_eq!(Index::new(0).buckets(), PROBE);
        assert_eq!(Index::new(PROBE - 1).buckets(), PROBE);
        assert_eq!(Index::new(586).buckets(), 586);
        assert_eq!(Index::new(586).bytes(), 586 * 64);
    }
}
