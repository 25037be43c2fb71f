//! The four AF_XDP rings as single-producer / single-consumer cursors.
//!
//! Each ring is shared with the kernel through `mmap`: a producer index, a consumer index,
//! a flags word and a power-of-two array of descriptors. The indices run freely over `u32`
//! and wrap; the slot of index `i` is `i & mask`. User space produces on the fill and tx
//! rings and consumes the rx and completion rings.
//!
//! The cursors cache the other side's index and re-read it (Acquire) only when the cache
//! says the ring is full or empty; they publish their own index (Release) in `commit` /
//! `release`, once per batch.

use std::num::Wrapping;
use std::sync::atomic::{AtomicU32, Ordering};

/// Raw view of one mapped ring. The pointers stay valid while the mapping (or, in tests,
/// the backing memory) lives; the owner guarantees that.
#[derive(Debug)]
pub(crate) struct RingMem<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    size: u32,
}

impl<T: Copy> RingMem<T> {
    /// A ring over raw memory.
    ///
    /// # Safety
    /// `producer`, `consumer` and `flags` must point to aligned `u32`s and `descs` to `size`
    /// slots of `T`, all valid for as long as the ring is used, and `size` must be a power
    /// of two. Only one producer cursor and one consumer cursor may use the memory.
    pub(crate) unsafe fn new(
        producer: *const AtomicU32,
        consumer: *const AtomicU32,
        flags: *const AtomicU32,
        descs: *mut T,
        size: u32,
    ) -> RingMem<T> {
        debug_assert!(size.is_power_of_two());
        RingMem {
            producer,
            consumer,
            flags,
            descs,
            size,
        }
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid and aligned for the ring's lifetime (contract of `new`).
        unsafe { &*self.producer }
    }

    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: valid and aligned for the ring's lifetime (contract of `new`).
        unsafe { &*self.consumer }
    }

    #[inline]
    fn needs_wakeup(&self) -> bool {
        // SAFETY: valid and aligned for the ring's lifetime (contract of `new`).
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    #[inline]
    fn slot(&self, index: Wrapping<u32>) -> *mut T {
        // SAFETY: `index & (size - 1)` is below `size`, inside the descriptor array.
        unsafe { self.descs.add((index.0 & (self.size - 1)) as usize) }
    }
}

/// The user-space producer side of a ring (fill, tx).
#[derive(Debug)]
pub(crate) struct Producer<T> {
    mem: RingMem<T>,
    /// Next index to write; published by `commit`.
    head: Wrapping<u32>,
    /// Last consumer index read from the kernel.
    cached_consumer: Wrapping<u32>,
}

impl<T: Copy> Producer<T> {
    /// A producer cursor starting at the ring's current indices.
    pub(crate) fn new(mem: RingMem<T>) -> Producer<T> {
        let head = Wrapping(mem.producer().load(Ordering::Relaxed));
        let cached_consumer = Wrapping(mem.consumer().load(Ordering::Acquire));
        Producer {
            mem,
            head,
            cached_consumer,
        }
    }

    /// Slots free for writing; re-reads the consumer index only when fewer than `want`
    /// look free.
    #[inline]
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let mut free = self.mem.size - (self.head - self.cached_consumer).0;
        if free < want {
            self.cached_consumer = Wrapping(self.mem.consumer().load(Ordering::Acquire));
            free = self.mem.size - (self.head - self.cached_consumer).0;
        }
        debug_assert!(free <= self.mem.size, "consumer ran past the producer");
        free
    }

    /// Writes one entry; false when the ring is full. Invisible to the kernel until
    /// `commit`.
    #[inline]
    pub(crate) fn push(&mut self, value: T) -> bool {
        if self.free(1) == 0 {
            return false;
        }
        // SAFETY: the slot lies between the consumer and the producer index + size, so the
        // kernel does not read it until we publish it.
        unsafe { self.mem.slot(self.head).write(value) };
        self.head += 1;
        true
    }

    /// Entries pushed but not yet consumed, re-reading the consumer index.
    #[inline]
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.cached_consumer = Wrapping(self.mem.consumer().load(Ordering::Acquire));
        self.in_flight()
    }

    /// Publishes every entry pushed so far.
    #[inline]
    pub(crate) fn commit(&mut self) {
        self.mem.producer().store(self.head.0, Ordering::Release);
    }

    /// Whether the kernel asks to be woken (`sendto`/`poll`) to look at this ring.
    #[inline]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.mem.needs_wakeup()
    }

    /// Entries pushed but not yet consumed by the other side, as last seen.
    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        (self.head - self.cached_consumer).0
    }
}

/// The user-space consumer side of a ring (rx, completion).
#[derive(Debug)]
pub(crate) struct Consumer<T> {
    mem: RingMem<T>,
    /// Next index to read; published by `release`.
    tail: Wrapping<u32>,
    /// Last producer index read from the kernel.
    cached_producer: Wrapping<u32>,
}

impl<T: Copy> Consumer<T> {
    /// A consumer cursor starting at the ring's current indices.
    pub(crate) fn new(mem: RingMem<T>) -> Consumer<T> {
        let tail = Wrapping(mem.consumer().load(Ordering::Relaxed));
        let cached_producer = Wrapping(mem.producer().load(Ordering::Acquire));
        Consumer {
            mem,
            tail,
            cached_producer,
        }
    }

    /// Entries ready to read; re-reads the producer index when the cache is empty.
    #[inline]
    pub(crate) fn available(&mut self) -> u32 {
        let mut n = (self.cached_producer - self.tail).0;
        if n == 0 {
            self.cached_producer = Wrapping(self.mem.producer().load(Ordering::Acquire));
            n = (self.cached_producer - self.tail).0;
        }
        debug_assert!(n <= self.mem.size, "producer ran past the consumer");
        n
    }

    /// Reads one entry, if any. The slot is handed back to the kernel by `release`.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.available() == 0 {
            return None;
        }
        // SAFETY: the slot lies between the consumer and the producer index, published by
        // the kernel (Acquire in `available`) and not reused until we release it.
        let v = unsafe { self.mem.slot(self.tail).read() };
        self.tail += 1;
        Some(v)
    }

    /// Hands every slot read so far back to the producer.
    #[inline]
    pub(crate) fn release(&mut self) {
        self.mem.consumer().store(self.tail.0, Ordering::Release);
    }

    /// Whether the kernel asks to be woken to refill this ring (meaningful on the fill
    /// ring's producer side; kept for symmetry in tests).
    #[cfg(test)]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.mem.needs_wakeup()
    }
}

/// Heap memory laid out like a mapped ring, for tests: one side plays the kernel.
#[cfg(test)]
pub(crate) mod mem {
    use super::*;

    /// Owns the indices, flags and descriptors of a test ring.
    pub(crate) struct TestRing<T> {
        producer: Box<AtomicU32>,
        consumer: Box<AtomicU32>,
        /// The flags word (set `XDP_RING_NEED_WAKEUP` to ask for a kick).
        pub(crate) flags: Box<AtomicU32>,
        descs: Box<[T]>,
    }

    impl<T: Copy + Default> TestRing<T> {
        /// A ring of `size` slots whose indices start at `start` (to exercise wrapping).
        pub(crate) fn new(size: u32, start: u32) -> TestRing<T> {
            TestRing {
                producer: Box::new(AtomicU32::new(start)),
                consumer: Box::new(AtomicU32::new(start)),
                flags: Box::new(AtomicU32::new(0)),
                descs: vec![T::default(); size as usize].into_boxed_slice(),
            }
        }

        /// A raw view; the test keeps `self` alive while it is used.
        pub(crate) fn mem(&mut self) -> RingMem<T> {
            // SAFETY: boxed fields do not move while `self` lives; the size is a power of
            // two as every test uses.
            unsafe {
                RingMem::new(
                    &*self.producer,
                    &*self.consumer,
                    &*self.flags,
                    self.descs.as_mut_ptr(),
                    self.descs.len() as u32,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mem::TestRing;
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u64),
        Commit,
        Pop,
        Release,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u64>().prop_map(Op::Push),
            Just(Op::Commit),
            Just(Op::Pop),
            Just(Op::Release),
        ]
    }

    proptest! {
        /// A producer and a consumer over the same memory behave as a bounded FIFO whose
        /// entries become visible at `commit` and whose slots come back at `release`.
        #[test]
        fn rings_match_a_bounded_fifo(
            ops in proptest::collection::vec(op(), 1..400),
            start in prop_oneof![Just(0u32), Just(u32::MAX - 3), any::<u32>()],
            size_log in 0u32..4,
        ) {
            let size = 1u32 << size_log;
            let mut ring = TestRing::<u64>::new(size, start);
            let mut p = Producer::new(ring.mem());
            let mut c = Consumer::new(ring.mem());
            // Oracle: pushed-but-uncommitted, committed-but-unread, read-but-unreleased.
            let mut pending: VecDeque<u64> = VecDeque::new();
            let mut visible: VecDeque<u64> = VecDeque::new();
            let mut unreleased = 0u32;
            for op in ops {
                let occupied = (pending.len() + visible.len()) as u32 + unreleased;
                match op {
                    Op::Push(v) => {
                        let ok = p.push(v);
                        prop_assert_eq!(ok, occupied < size);
                        if ok { pending.push_back(v); }
                    }
                    Op::Commit => {
                        p.commit();
                        visible.extend(pending.drain(..));
                    }
                    Op::Pop => {
                        let got = c.pop();
                        prop_assert_eq!(got, visible.pop_front());
                        if got.is_some() { unreleased += 1; }
                    }
                    Op::Release => {
                        c.release();
                        unreleased = 0;
                    }
                }
                prop_assert!(p.in_flight() <= size);
            }
        }
    }

    #[test]
    fn indices_wrap_past_u32_max() {
        let mut ring = TestRing::<u64>::new(4, u32::MAX - 1);
        let mut p = Producer::new(ring.mem());
        let mut c = Consumer::new(ring.mem());
        for round in 0..5u64 {
            for i in 0..4 {
                assert!(p.push(round * 10 + i));
            }
            assert!(!p.push(99), "a full ring refuses");
            p.commit();
            assert_eq!(c.available(), 4);
            for i in 0..4 {
                assert_eq!(c.pop(), Some(round * 10 + i));
            }
            assert_eq!(c.pop(), None);
            assert!(!p.push(99), "slots come back only at release");
            c.release();
        }
    }

    #[test]
    fn wakeup_flag_is_read_from_the_ring() {
        let mut ring = TestRing::<u64>::new(2, 0);
        let p = Producer::new(ring.mem());
        let c = Consumer::new(ring.mem());
        assert!(!p.needs_wakeup());
        ring.flags
            .store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(p.needs_wakeup() && c.needs_wakeup());
    }
}
