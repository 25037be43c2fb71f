//! The connection table: a preallocated slab of entries, a lock-free hash index over it,
//! per-worker allocation and expiry. See `docs/conn-table.md` for the design.
//!
//! Every field of an entry is an atomic, so a racing read is never undefined behaviour; the
//! entry's control word packs its generation, state and expiry, and every change of state
//! (a packet, expiry, eviction, `expire_now`) is one compare-exchange on that word. The
//! winner of a compare-exchange alone adjusts the real server's counters, so they balance
//! exactly however workers race.
//!
//! One [`ConnTable`], one file per part; each file opens `impl ConnTable` for its step:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the table: construction, sizes, counters |
//! | `control.rs` | the control word (generation, state, expiry) and the millisecond clock |
//! | `meta.rs` | the meta word (ports, protocol, flags) |
//! | `key.rs` | addresses as words, the index key |
//! | `types.rs` | the public types: [`FlowKey`], [`ConnId`], [`Hit`], [`NewConn`], [`ConnEntry`] ... |
//! | `slot.rs` | internals: the entry, its consistent copy, per-worker state, eviction preference |
//! | `lookup.rs` | lookups and prefetch |
//! | `insert.rs` | creating entries: allocation, eviction, publishing, counters |
//! | `expire.rs` | packets, expiry, `expire_now`, the walk for `-L -c` |
//! | `dropentry.rs` | the `drop_entry` defence's walk (`ip_vs_random_dropentry`) |
//! | `template.rs` | persistence templates (used by `persist`) |
//! | `sync.rs` | what connection sync needs of the table |

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::defence::DefenceWord;
use super::index::{Index, CELLS};
use super::mem::{zeroed_slice, Pages, Zeroed};
use super::state::Timeouts;
use crate::service::DestRegistry;

mod control;
mod dropentry;
mod expire;
mod insert;
mod key;
mod lookup;
mod meta;
mod slot;
mod sync;
mod template;
#[cfg(test)]
mod tests;
mod types;

use control::{deadline, is_expired, ms, Ctl, DOOMED, EXP_MASK, GEN_MASK};
use insert::{input_table, Fields};
use key::{addr_words, fold_mul, words_addr, Key, K_TEMPLATE, K_V6};
use meta::{method_bits, Meta, F_DV6, F_SIDE, F_TEMPLATE, F_V6, METHOD_SHIFT};
use slot::{evict_class, is_v4_words, Raw, Side, Slot, SlotPool, EVICT_WINDOW, NO_SLOT};
pub use sync::{Described, Installed, SyncMark, SyncProbe, Synced};
pub(crate) use template::TemplateKey;
pub use types::{
    ConnEntry, ConnId, ConnInfo, Direction, FlowHash, FlowKey, Hit, NewConn, TableFull, TableStats,
};

/// The shared connection table. See the module and `docs/conn-table.md`.
pub struct ConnTable {
    slots: Zeroed<Slot>,
    /// The addresses of entries that keep them outside their slot (IPv6), split between
    /// the workers as the slots are.
    side: Zeroed<Side>,
    index: Index,
    pools: Box<[SlotPool]>,
    registry: Arc<DestRegistry>,
    timeouts: Timeouts,
    /// The defence strategies' level, set by the control thread ([`super::defence`]).
    defence: DefenceWord,
    /// Connections the `drop_entry` walk ended ([`ConnTable::drop_entries`]).
    dropped: AtomicU64,
    seed: [u64; 5],
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("capacity", &self.capacity())
            .field("workers", &self.pools.len())
            .field("len", &self.len())
            .field("index_buckets", &self.index.buckets())
            .finish()
    }
}

impl ConnTable {
    /// Default capacity (entries, connections and templates together).
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    /// A table of `capacity` entries shared by `workers` workers, updating the counters in
    /// `registry`, with room for the IPv6 addresses of [`ConnTable::default_v6_capacity`]
    /// of them. Allocates everything it will ever use: a 64-byte entry each, an index of
    /// 64-byte buckets sized for two keys per entry at most half full (4 x `capacity` / 7
    /// buckets, 36.6 bytes an entry), and 48 bytes for each IPv6 entry it may hold
    /// (resident only once used).
    ///
    /// The hash seed is random; use [`ConnTable::with_seed`] for a fixed one.
    ///
    /// # Panics
    /// If `workers` is 0, or `capacity` is below `workers` or not below 2^31.
    pub fn new(capacity: usize, workers: usize, registry: Arc<DestRegistry>) -> ConnTable {
        ConnTable::with_v6_capacity(
            capacity,
            ConnTable::default_v6_capacity(capacity),
            workers,
            registry,
        )
    }

    /// As [`ConnTable::new`], with room for the addresses of `v6_capacity` entries that
    /// have an IPv6 address (connections and templates; a NAT entry mixing families counts
    /// too). When a worker's share of those is in use, a new IPv6 entry is refused as
    /// when the table is full ([`TableFull`], counted in [`TableStats::insert_failures`]);
    /// IPv4 entries are not affected.
    ///
    /// # Panics
    /// As [`ConnTable::new`], and if `v6_capacity` is above `capacity`.
    pub fn with_v6_capacity(
        capacity: usize,
        v6_capacity: usize,
        workers: usize,
        registry: Arc<DestRegistry>,
    ) -> ConnTable {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(capacity);
        let buckets = ConnTable::index_buckets(capacity);
        ConnTable::with_index(
            capacity,
            v6_capacity,
            workers,
            registry,
            h.finish(),
            buckets,
        )
    }

    /// The IPv6 entries a table of `capacity` entries has room for by default: a quarter.
    pub fn default_v6_capacity(capacity: usize) -> usize {
        capacity.div_ceil(4)
    }

    /// The table the configuration asks for: `capacity` entries, `conn_v6_capacity` of them
    /// (at most `capacity`; by default a quarter) with room for IPv6 addresses.
    pub fn configured(
        capacity: usize,
        config: &crate::service::Config,
        workers: usize,
        registry: Arc<DestRegistry>,
    ) -> ConnTable {
        let v6 = config
            .conn_v6_capacity
            .unwrap_or_else(|| ConnTable::default_v6_capacity(capacity))
            .min(capacity);
        ConnTable::with_v6_capacity(capacity, v6, workers, registry)
    }

    /// As [`ConnTable::new`] with a fixed hash seed. The seed changes which index buckets
    /// keys land in and nothing else observable, except which inserts fail when a probe
    /// window is full (rare at the index's load).
    ///
    /// # Panics
    /// As [`ConnTable::new`].
    pub fn with_seed(
        capacity: usize,
        workers: usize,
        registry: Arc<DestRegistry>,
        seed: u64,
    ) -> ConnTable {
        let v6 = ConnTable::default_v6_capacity(capacity);
        let buckets = ConnTable::index_buckets(capacity);
        ConnTable::with_index(capacity, v6, workers, registry, seed, buckets)
    }

    /// Index buckets for `capacity` entries: room for two keys per entry (a NAT
    /// connection's two directions) with the buckets at most half full, exactly that many
    /// (the index does not round its count up).
    fn index_buckets(capacity: usize) -> usize {
        (capacity * 2 * 2).div_ceil(CELLS)
    }

    fn with_index(
        capacity: usize,
        v6_capacity: usize,
        workers: usize,
        registry: Arc<DestRegistry>,
        seed: u64,
        buckets: usize,
    ) -> ConnTable {
        assert!(workers > 0, "a connection table needs a worker");
        assert!(capacity >= workers, "fewer entries than workers");
        assert!(capacity < 1 << 31, "capacity too large");
        assert!(v6_capacity <= capacity, "more IPv6 entries than entries");
        let mut s = seed;
        let mut next = || {
            // splitmix64: spreads one seed into independent-looking words.
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) | 1
        };
        let seed = [next(), next(), next(), next(), next()];
        let table = ConnTable {
            // The entries are all written below (the free lists); the side entries only
            // as IPv6 entries are made.
            slots: zeroed_slice(capacity, Pages::Now),
            side: zeroed_slice(v6_capacity, Pages::OnFirstWrite),
            index: Index::new(buckets),
            pools: (0..workers).map(|_| SlotPool::default()).collect(),
            registry,
            timeouts: Timeouts::new(),
            defence: DefenceWord::default(),
            dropped: AtomicU64::new(0),
            seed,
        };
        for w in 0..workers {
            let (start, end) = table.range(w);
            let pool = &table.pools[w];
            pool.hand.store(start, Ordering::Relaxed);
            pool.side_free.store(NO_SLOT, Ordering::Relaxed);
            pool.side_next
                .store(table.side_range(w).0, Ordering::Relaxed);
            pool.free_head
                .store(if start < end { start } else { NO_SLOT }, Ordering::Relaxed);
            for i in start..end {
                let next = if i + 1 < end { i + 1 } else { NO_SLOT };
                table.slots[i as usize]
                    .next_free
                    .store(next, Ordering::Relaxed);
            }
        }
        table
    }

    /// Worker `w`'s slots: `[w * C / W, (w + 1) * C / W)`.
    #[inline]
    fn range(&self, w: usize) -> (u32, u32) {
        let c = self.slots.len();
        let n = self.pools.len();
        ((w * c / n) as u32, ((w + 1) * c / n) as u32)
    }

    /// Worker `w`'s side entries, split as its slots are.
    #[inline]
    fn side_range(&self, w: usize) -> (u32, u32) {
        let c = self.side.len();
        let n = self.pools.len();
        ((w * c / n) as u32, ((w + 1) * c / n) as u32)
    }

    #[inline]
    fn hash(&self, k: &Key) -> u64 {
        let s = &self.seed;
        let h = fold_mul(k.src[0] ^ s[0], k.src[1] ^ s[1]);
        let h = fold_mul(h ^ k.dst[0] ^ s[2], k.dst[1] ^ s[3]);
        fold_mul(h ^ k.meta, s[4])
    }

    /// Entries the table can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the table allocated: entries, index, per-worker state and the IPv6 side
    /// entries. The entries are written at construction; the index and the side entries
    /// become resident as they are used (a director that holds no IPv6 entry never touches
    /// the side entries).
    pub fn footprint(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
            + self.index.bytes()
            + std::mem::size_of_val(&*self.pools)
            + self.side_bytes()
    }

    /// Bytes of the IPv6 side entries (part of [`ConnTable::footprint`]).
    pub fn side_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.side)
    }

    /// IPv6 entries the table has room for.
    pub fn v6_capacity(&self) -> usize {
        self.side.len()
    }

    /// Live entries (connections and templates, including ones retired by
    /// [`ConnTable::expire_now`] whose slot is not yet reclaimed).
    pub fn len(&self) -> usize {
        self.pools
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots worker `worker` owns (what its expiry sweep covers).
    ///
    /// # Panics
    /// If `worker` is out of range.
    pub fn worker_slots(&self, worker: usize) -> usize {
        assert!(worker < self.pools.len(), "no worker {worker}");
        let (start, end) = self.range(worker);
        (end - start) as usize
    }

    /// The protocol timeouts (settable live).
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The defence strategies' level the workers apply ([`super::defence`]).
    pub fn defence(&self) -> &DefenceWord {
        &self.defence
    }

    /// The real server counters the table updates.
    pub fn registry(&self) -> &DestRegistry {
        &self.registry
    }

    /// Eviction and failure counters.
    pub fn stats(&self) -> TableStats {
        self.pools.iter().fold(
            TableStats {
                dropped_entries: self.dropped.load(Ordering::Relaxed),
                ..TableStats::default()
            },
            |s, w| TableStats {
                evictions: s.evictions + w.evictions.load(Ordering::Relaxed),
                insert_failures: s.insert_failures + w.insert_failures.load(Ordering::Relaxed),
                ..s
            },
        )
    }

    /// In debug builds, catches two threads using one worker's slots at once.
    #[inline]
    fn enter(&self, worker: usize) -> PoolGuard<'_> {
        let w = &self.pools[worker];
        #[cfg(debug_assertions)]
        assert!(
            !w.busy.swap(true, Ordering::Acquire),
            "worker {worker} used from two threads at once"
        );
        PoolGuard(w)
    }
}

struct PoolGuard<'a>(#[allow(dead_code)] &'a SlotPool);

impl Drop for PoolGuard<'_> {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        self.0.busy.store(false, Ordering::Release);
    }
}
