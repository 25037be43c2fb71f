//! A bounded single-producer, single-consumer queue of fixed-size records, allocated once:
//! how a worker hands connections to send to the sync thread, and how the sync thread hands
//! connections to install back to a worker, with no lock, allocation or system call.
//!
//! A record is `W` 64-bit words. Each slot is `W` atomics, so the queue needs no `unsafe`:
//! the producer writes a slot's words (relaxed) and publishes them with a release store of
//! its tail; the consumer reads them after an acquire load of that tail, and gives the slot
//! back with a release store of its head. Each side caches the other's index and reloads
//! it only when the queue looks full (or empty), so the common push or pop touches no line
//! the other side writes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps the producer's and the consumer's index on separate cache lines.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Padded(AtomicUsize);

#[derive(Debug)]
struct Shared<const W: usize> {
    slots: Box<[[AtomicU64; W]]>,
    mask: usize,
    head: Padded,
    tail: Padded,
}

/// The writing end.
#[derive(Debug)]
pub struct Producer<const W: usize> {
    ring: Arc<Shared<W>>,
    tail: usize,
    head_seen: usize,
}

/// The reading end.
#[derive(Debug)]
pub struct Consumer<const W: usize> {
    ring: Arc<Shared<W>>,
    head: usize,
    tail_seen: usize,
}

/// A queue of at least `capacity` records (rounded up to a power of two, at least 2).
pub fn ring<const W: usize>(capacity: usize) -> (Producer<W>, Consumer<W>) {
    let cap = capacity.max(2).next_power_of_two();
    let shared = Arc::new(Shared {
        slots: (0..cap)
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect(),
        mask: cap - 1,
        head: Padded::default(),
        tail: Padded::default(),
    });
    (
        Producer {
            ring: Arc::clone(&shared),
            tail: 0,
            head_seen: 0,
        },
        Consumer {
            ring: shared,
            head: 0,
            tail_seen: 0,
        },
    )
}

impl<const W: usize> Producer<W> {
    /// Records the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.mask + 1
    }

    /// Appends `record`; false (and nothing written) when the queue is full.
    #[inline]
    pub fn push(&mut self, record: &[u64; W]) -> bool {
        let cap = self.ring.mask + 1;
        if self.tail.wrapping_sub(self.head_seen) >= cap {
            self.head_seen = self.ring.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_seen) >= cap {
                return false;
            }
        }
        let slot = &self.ring.slots[self.tail & self.ring.mask];
        for (w, v) in slot.iter().zip(record) {
            w.store(*v, Ordering::Relaxed);
        }
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.0.store(self.tail, Ordering::Release);
        true
    }
}

impl<const W: usize> Consumer<W> {
    /// The oldest record, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<[u64; W]> {
        if self.head == self.tail_seen {
            self.tail_seen = self.ring.tail.0.load(Ordering::Acquire);
            if self.head == self.tail_seen {
                return None;
            }
        }
        let slot = &self.ring.slots[self.head & self.ring.mask];
        let record = std::array::from_fn(|i| slot[i].load(Ordering::Relaxed));
        self.head = self.head.wrapping_add(1);
        self.ring.head.0.store(self.head, Ordering::Release);
        Some(record)
    }

    /// Whether a record is waiting (one shared load).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head == self.ring.tail.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn full_and_empty() {
        let (mut p, mut c) = ring::<2>(3);
        assert_eq!(p.capacity(), 4);
        assert!(c.is_empty());
        for i in 0..4 {
            assert!(p.push(&[i, i + 100]));
        }
        assert!(!p.push(&[9, 9]), "full");
        assert_eq!(c.pop(), Some([0, 100]));
        assert!(p.push(&[4, 104]));
        let rest: Vec<_> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(rest, [[1, 101], [2, 102], [3, 103], [4, 104]]);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn two_threads_lose_and_reorder_nothing() {
        let (mut p, mut c) = ring::<3>(64);
        const N: u64 = 200_000;
        let writer = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.push(&[i, !i, i.wrapping_mul(7)]) {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut next = 0;
        while next < N {
            match c.pop() {
                Some(r) => {
                    assert_eq!(r, [next, !next, next.wrapping_mul(7)]);
                    next += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        writer.join().unwrap();
        assert!(c.pop().is_none());
    }

    proptest! {
        #[test]
        fn behaves_as_a_bounded_fifo(ops in proptest::collection::vec(any::<Option<u64>>(), 0..300)) {
            let (mut p, mut c) = ring::<1>(8);
            let mut oracle = VecDeque::new();
            for op in ops {
                match op {
                    Some(v) => {
                        let ok = p.push(&[v]);
                        prop_assert_eq!(ok, oracle.len() < 8);
                        if ok {
                            oracle.push_back(v);
                        }
                    }
                    None => prop_assert_eq!(c.pop().map(|r| r[0]), oracle.pop_front()),
                }
            }
        }
    }
}
