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

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerStats {
    /// Frames received.
    pub rx: Counter,
    /// Frames transmitted.
    pub tx: Counter,
    /// Frames passed to the kernel.
    pub passed: Counter,
    /// Batches processed.
    pub batches: Counter,
    /// Next hops found without a neighbour entry (the packet went to the kernel, or, for DR,
    /// was dropped as `no_neighbour`); the control thread has the kernel resolve them.
    pub unresolved: Counter,
    /// IP fragments forwarded (first and later ones; see `datapath::pipeline`'s `frag`).
    pub fragments: Counter,
    /// Datagrams whose fragment-table entry expired before all their fragments passed.
    pub fragment_timeouts: Counter,
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
            fragments: Counter::default(),
            fragment_timeouts: Counter::default(),
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
}
