//! Counters: per worker, written by one thread, summed by readers.
//!
//! A worker bumps its counters with a relaxed load and store (no read-modify-write, so no
//! locked instruction on the per-packet path); readers (the control thread, the replay
//! report) sum every worker's view. Per-service figures are the sums over the service's real
//! servers.

mod drops;
pub mod rate;

pub use drops::DropReason;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::service::DestId;

/// A counter written by exactly one thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the counter to zero (`ipvsadm -Z`). Racy by design: a concurrent `add` may be
    /// lost, as the kernel's zeroing may lose one too.
    pub fn zero(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// Traffic counters of one real server, as `ipvsadm --stats` shows them.
#[derive(Debug, Default)]
pub struct DestStats {
    /// Connections scheduled to it.
    pub conns: Counter,
    /// Packets from clients.
    pub in_pkts: Counter,
    /// Packets to clients (NAT replies; zero for DR and TUN, as in IPVS).
    pub out_pkts: Counter,
    /// Bytes from clients (IP length).
    pub in_bytes: Counter,
    /// Bytes to clients.
    pub out_bytes: Counter,
}

/// A snapshot of [`DestStats`] summed over workers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrafficTotals {
    /// Connections.
    pub conns: u64,
    /// Packets in.
    pub in_pkts: u64,
    /// Packets out.
    pub out_pkts: u64,
    /// Bytes in.
    pub in_bytes: u64,
    /// Bytes out.
    pub out_bytes: u64,
}

impl std::ops::AddAssign for TrafficTotals {
    fn add_assign(&mut self, o: TrafficTotals) {
        self.conns += o.conns;
        self.in_pkts += o.in_pkts;
        self.out_pkts += o.out_pkts;
        self.in_bytes += o.in_bytes;
        self.out_bytes += o.out_bytes;
    }
}

/// Everything one worker counts, the one set of worker counters every reader sums (ctl,
/// metrics, `top`, replay reports).
///
/// Two writers share it, both on the worker's thread: the packet processor (the pipeline)
/// counts each frame by its verdict (`rx`, and `tx`, `passed` or a drop) and the real
/// servers' traffic; the AF_XDP worker around it adds what only the I/O layer sees
/// (`batches`, `kicks`, `to_kernel`, `tx_ring_full`, and the drops it makes itself: a
/// descriptor outside its frame as `malformed`, a frame for an interface with no socket on
/// its queue as `no_route`). Replay has no I/O layer: those stay zero there.
#[derive(Debug)]
pub struct WorkerStats {
    /// Frames received (handed to the processor).
    pub rx: Counter,
    /// Frames the processor sent out (`Verdict::Transmit`); those the tx ring had no room
    /// for are counted again under `tx_ring_full`.
    pub tx: Counter,
    /// Frames passed to the kernel.
    pub passed: Counter,
    /// Batches processed: receive passes that got at least one frame.
    pub batches: Counter,
    /// Next hops found without a neighbour entry (the packet went to the kernel, or, for DR,
    /// was dropped as `no_neighbour`); the control thread has the kernel resolve them.
    pub unresolved: Counter,
    /// Wakeup syscalls the AF_XDP worker made (tx `sendto`, rx `recvfrom`).
    pub kicks: Counter,
    /// Of the frames passed, IP packets the kernel took through its IP output (a raw
    /// socket); the rest (not IP, or refused) are dropped.
    pub to_kernel: Counter,
    /// Frames to transmit dropped because the egress tx ring was full.
    pub tx_ring_full: Counter,
    /// Frames passed that were not handed to the kernel: the worker's budget for that
    /// path (a syscall each) was spent (`datapath::xdp`'s `PassBudget`).
    pub to_kernel_limited: Counter,
    /// IP fragments forwarded (first and later ones; see `datapath::pipeline`'s `frag`).
    pub fragments: Counter,
    /// Datagrams whose fragment-table entry expired before all their fragments passed.
    pub fragment_timeouts: Counter,
    /// Later fragments that came before their first one, kept in the hold pool.
    pub fragments_held: Counter,
    /// Held fragments sent on when their first fragment came (also counted in `fragments`).
    pub fragments_released: Counter,
    /// Held fragments whose first fragment did not come in time (also dropped as
    /// `fragment_no_first`).
    pub fragment_hold_expired: Counter,
    /// Later fragments not held: the hold pool was full, or the frame too long for it (also
    /// dropped as `fragment_no_first`).
    pub fragment_hold_full: Counter,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [Counter; DropReason::COUNT],
    /// Per real server, indexed by [`DestId`].
    pub dests: Box<[DestStats]>,
}

impl WorkerStats {
    /// Counters for a registry of `dest_capacity` real servers.
    pub fn new(dest_capacity: usize) -> WorkerStats {
        WorkerStats {
            rx: Counter::default(),
            tx: Counter::default(),
            passed: Counter::default(),
            batches: Counter::default(),
            unresolved: Counter::default(),
            kicks: Counter::default(),
            to_kernel: Counter::default(),
            tx_ring_full: Counter::default(),
            to_kernel_limited: Counter::default(),
            fragments: Counter::default(),
            fragment_timeouts: Counter::default(),
            fragments_held: Counter::default(),
            fragments_released: Counter::default(),
            fragment_hold_expired: Counter::default(),
            fragment_hold_full: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
            dests: (0..dest_capacity).map(|_| DestStats::default()).collect(),
        }
    }

    /// Counts a drop.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
    }

    /// The counters of real server `id`.
    #[inline]
    pub fn dest(&self, id: DestId) -> &DestStats {
        &self.dests[id.0 as usize]
    }

    /// A plain copy of the per-worker counters (not the real servers').
    pub fn counters(&self) -> WorkerCounters {
        WorkerCounters {
            rx: self.rx.get(),
            tx: self.tx.get(),
            passed: self.passed.get(),
            batches: self.batches.get(),
            unresolved: self.unresolved.get(),
            kicks: self.kicks.get(),
            to_kernel: self.to_kernel.get(),
            tx_ring_full: self.tx_ring_full.get(),
            to_kernel_limited: self.to_kernel_limited.get(),
            fragments: self.fragments.get(),
            fragment_timeouts: self.fragment_timeouts.get(),
            fragments_held: self.fragments_held.get(),
            fragments_released: self.fragments_released.get(),
            fragment_hold_expired: self.fragment_hold_expired.get(),
            fragment_hold_full: self.fragment_hold_full.get(),
            drops: std::array::from_fn(|i| self.drops[i].get()),
        }
    }
}

/// A snapshot of [`WorkerStats`] without the real servers' counters, one worker's or a sum
/// over workers; the fields mean what they mean there.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames sent out.
    pub tx: u64,
    /// Frames passed to the kernel.
    pub passed: u64,
    /// Batches processed.
    pub batches: u64,
    /// Next hops found without a neighbour entry.
    pub unresolved: u64,
    /// Wakeup syscalls.
    pub kicks: u64,
    /// Passed frames the kernel took.
    pub to_kernel: u64,
    /// Frames dropped on a full tx ring.
    pub tx_ring_full: u64,
    /// Passed frames not handed over: the kernel path's budget was spent.
    pub to_kernel_limited: u64,
    /// IP fragments forwarded.
    pub fragments: u64,
    /// Fragment-table entries expired before their datagram was whole.
    pub fragment_timeouts: u64,
    /// Later fragments held for their first one.
    pub fragments_held: u64,
    /// Held fragments sent on after their first one.
    pub fragments_released: u64,
    /// Held fragments whose first one did not come in time.
    pub fragment_hold_expired: u64,
    /// Later fragments the hold pool had no room for.
    pub fragment_hold_full: u64,
    /// Drops by reason (index = `DropReason as usize`).
    pub drops: [u64; DropReason::COUNT],
}

impl WorkerCounters {
    /// Drops under `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

impl std::ops::AddAssign for WorkerCounters {
    fn add_assign(&mut self, o: WorkerCounters) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.passed += o.passed;
        self.batches += o.batches;
        self.unresolved += o.unresolved;
        self.kicks += o.kicks;
        self.to_kernel += o.to_kernel;
        self.tx_ring_full += o.tx_ring_full;
        self.to_kernel_limited += o.to_kernel_limited;
        self.fragments += o.fragments;
        self.fragment_timeouts += o.fragment_timeouts;
        self.fragments_held += o.fragments_held;
        self.fragments_released += o.fragments_released;
        self.fragment_hold_expired += o.fragment_hold_expired;
        self.fragment_hold_full += o.fragment_hold_full;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
    }
}

/// Sums one real server's counters over `workers`.
pub fn dest_totals<'a>(
    workers: impl IntoIterator<Item = &'a WorkerStats>,
    id: DestId,
) -> TrafficTotals {
    let mut t = TrafficTotals::default();
    for w in workers {
        let d = w.dest(id);
        t += TrafficTotals {
            conns: d.conns.get(),
            in_pkts: d.in_pkts.get(),
            out_pkts: d.out_pkts.get(),
            in_bytes: d.in_bytes.get(),
            out_bytes: d.out_bytes.get(),
        };
    }
    t
}

/// Sums drops by reason over `workers`, as (name, count) pairs in reason order.
pub fn drop_totals<'a>(
    workers: impl IntoIterator<Item = &'a WorkerStats> + Clone,
) -> Vec<(&'static str, u64)> {
    DropReason::ALL
        .iter()
        .map(|r| {
            (
                r.name(),
                workers
                    .clone()
                    .into_iter()
                    .map(|w| w.drops[*r as usize].get())
                    .sum(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_workers() {
        let a = WorkerStats::new(4);
        let b = WorkerStats::new(4);
        a.dest(DestId(2)).in_pkts.add(3);
        b.dest(DestId(2)).in_pkts.add(4);
        b.dest(DestId(2)).conns.add(1);
        a.count_drop(DropReason::Malformed);
        let t = dest_totals([&a, &b], DestId(2));
        assert_eq!((t.in_pkts, t.conns, t.out_pkts), (7, 1, 0));
        let d = drop_totals([&a, &b]);
        assert_eq!(d[0], ("malformed", 1));
        assert!(d[1..].iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn counters_copy_and_sum_every_worker_counter() {
        let a = WorkerStats::new(0);
        let b = WorkerStats::new(0);
        for (i, w) in [&a, &b].into_iter().enumerate() {
            let n = i as u64 + 1;
            for (k, c) in [
                &w.rx,
                &w.tx,
                &w.passed,
                &w.batches,
                &w.unresolved,
                &w.kicks,
                &w.to_kernel,
                &w.tx_ring_full,
                &w.to_kernel_limited,
                &w.fragments,
                &w.fragment_timeouts,
                &w.fragments_held,
                &w.fragments_released,
                &w.fragment_hold_expired,
                &w.fragment_hold_full,
            ]
            .into_iter()
            .enumerate()
            {
                c.add(n * (k as u64 + 1));
            }
            w.count_drop(DropReason::NoRoute);
        }
        let mut sum = a.counters();
        sum += b.counters();
        let want = |k: u64| 3 * k;
        assert_eq!(
            [
                sum.rx,
                sum.tx,
                sum.passed,
                sum.batches,
                sum.unresolved,
                sum.kicks,
                sum.to_kernel,
                sum.tx_ring_full,
                sum.to_kernel_limited,
                sum.fragments,
                sum.fragment_timeouts,
                sum.fragments_held,
                sum.fragments_released,
                sum.fragment_hold_expired,
                sum.fragment_hold_full
            ],
            std::array::from_fn(|k| want(k as u64 + 1))
        );
        assert_eq!(sum.dropped(DropReason::NoRoute), 2);
        assert_eq!(sum.drops.iter().sum::<u64>(), 2);
    }
}
