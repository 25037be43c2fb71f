//! Live connection counters of real servers, shared by every worker.
//!
//! Schedulers read them, the connection table updates them on state changes (never per
//! packet), and the control thread reads them for `-L`. They outlive configuration
//! snapshots: a real server keeps its [`DestId`] and its counters across reloads for as long
//! as it stays configured, and the control thread frees the id only once no connection
//! refers to it.
//!
//! **Sharded counts.** Every new connection, every expiry and every move between active and
//! inactive changes a count, from whichever worker handles it. With one shared counter per
//! server all workers would write the same few cache lines for every SYN, and the rate of new
//! connections of the whole director would be bounded by how fast those lines move between
//! cores. So each count is kept in shards: a thread adds and subtracts in its own shard only
//! (worker `w` in shard `w + 1`, set once when its thread starts with [`count_as_worker`];
//! every other thread, control and sync included, in shard 0), and a reader sums the shards.
//! A shard holds the counts of every server for one thread, four servers to a cache line, so
//! two threads never write the same line. A shard alone means nothing: a connection that
//! worker 1 created and worker 2 ended leaves +1 in one and -1 in the other (counts are kept
//! modulo 2^32 and summed the same way, so the sum is exact however they are spread).
//!
//! **What a reader sees.** Once writers are quiet, the sum is exact. While they write, a
//! reader adds shards one after the other and may see a change in one shard and not yet
//! another's: a count may be off by the changes made meanwhile (a move from inactive to
//! active may be seen twice or not at all, as it could before sharding between the reads of
//! the two counts), and a sum that would be negative reads 0. The schedulers' choices rest
//! on these sums as the kernel's rest on its counters that other CPUs change meanwhile.
//!
//! What the workers read for every new connection, OVERLOAD and the thresholds, lives in
//! [`DestCounters`] itself, a cache line per server that the counts do not share and that
//! only changes when OVERLOAD flips or the configuration does.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Index of a real server's counters in the [`DestRegistry`]. Stable across snapshots.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// Which of a real server's connection counts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnCount {
    /// TCP connections in SYN_SENT, SYN_RECV, ESTABLISHED or SYNACK.
    Active,
    /// Every other connection (other TCP states, all UDP).
    Inactive,
    /// Persistence templates that point at the server.
    Persistent,
}

thread_local! {
    /// The shard the calling thread writes: 0 unless [`count_as_worker`] set it.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// One more than the highest shard any thread was set to write: readers sum the shards
/// below it (the others hold zeros). Written once per worker thread, read by every sum: on
/// a cache line of its own, so that no often-written neighbour takes it from the readers.
static SHARDS_USED: ShardsUsed = ShardsUsed(AtomicUsize::new(1));

#[repr(align(64))]
struct ShardsUsed(AtomicUsize);

/// Makes the calling thread, worker `worker`'s, write the counts it changes to that worker's
/// shard (`worker + 1`). Every worker thread calls it once when it starts, before it handles
/// a packet; a thread that never calls it writes shard 0, the control and sync threads'.
/// Which shard a thread writes never changes a sum, only which cache lines it writes: two
/// threads writing one shard stay exact (each change is an atomic add), just slower.
pub fn count_as_worker(worker: usize) {
    let shard = worker + 1;
    SHARD.with(|s| s.set(shard));
    SHARDS_USED.0.fetch_max(shard + 1, Ordering::SeqCst);
}

/// Threads beyond this share shards (see [`DestRegistry::with_shards`]).
const MAX_SHARDS: usize = 65;

/// Servers whose counts share a cache line in one shard.
const PER_LINE: usize = 4;

/// One server's counts in one shard: each a count modulo 2^32, meaningful only summed.
#[derive(Default)]
struct Counts {
    active: AtomicI32,
    inactive: AtomicI32,
    persistent: AtomicI32,
    _pad: AtomicI32,
}

impl Counts {
    #[inline]
    fn get(&self, which: ConnCount) -> &AtomicI32 {
        match which {
            ConnCount::Active => &self.active,
            ConnCount::Inactive => &self.inactive,
            ConnCount::Persistent => &self.persistent,
        }
    }
}

/// A cache line of one shard: the counts of [`PER_LINE`] servers.
#[derive(Default)]
#[repr(align(64))]
struct Line([Counts; PER_LINE]);

/// A sum of shard values, as a count: what is negative only in passing reads 0.
#[inline]
fn count(sum: i32) -> u32 {
    sum.max(0) as u32
}

/// Connection counters of one real server, as the kernel's `struct ip_vs_dest` keeps them.
///
/// The connection counts (active, inactive, persistent) are sharded by thread (see the
/// module): [`DestCounters::add`], [`DestCounters::remove`] and [`DestCounters::shift`]
/// change the calling thread's shard, [`DestCounters::active`] and the other readers sum the
/// shards. OVERLOAD, the thresholds and `last_weight` are plain atomics here, on a cache
/// line of the server's own that the counts do not share.
///
/// As in the kernel, a new connection counts as inactive or active at its real server by
/// the state its first packet gives it, and a state change moves it between the two when
/// the state enters or leaves the active states (the kernel's `tcp_state_active`).
#[repr(align(64))]
pub struct DestCounters {
    /// Every server's counts, every shard (the registry's one store).
    lines: Arc<[Line]>,
    /// The line of this server's counts in shard 0; shard `s`'s is `per_shard * s` further.
    line: usize,
    /// This server's place in its line.
    lane: usize,
    /// Lines in each shard.
    per_shard: usize,
    /// Shards in the store.
    shards: usize,
    /// OVERLOAD flag, set and cleared from the thresholds (see [`DestCounters::update_overload`]).
    pub overloaded: AtomicBool,
    /// `-x` upper connection threshold, 0 = none; written by the control thread.
    pub upper_threshold: AtomicU32,
    /// `-y` lower connection threshold; written by the control thread.
    pub lower_threshold: AtomicU32,
    /// The weight the server was added with, then its latest non-zero weight (the kernel's
    /// `last_weight`); written by the control thread when it builds a snapshot.
    pub last_weight: AtomicI32,
}

impl fmt::Debug for DestCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestCounters")
            .field("active", &self.active())
            .field("inactive", &self.inactive())
            .field("persistent", &self.persistent())
            .field("overloaded", &self.is_overloaded())
            .field("upper_threshold", &self.upper_threshold)
            .field("lower_threshold", &self.lower_threshold)
            .field("last_weight", &self.last_weight)
            .finish()
    }
}

impl Default for DestCounters {
    /// The counters of a server alone in a store of its own.
    fn default() -> Self {
        DestRegistry::new(1)
            .slots
            .into_vec()
            .pop()
            .expect("one server")
    }
}

impl DestCounters {
    /// This server's counts in shard `shard` (below `self.shards`).
    #[inline]
    fn at(&self, shard: usize) -> &Counts {
        &self.lines[self.line + shard * self.per_shard].0[self.lane % PER_LINE]
    }

    /// This server's counts in the calling thread's shard.
    #[inline]
    fn mine(&self) -> &Counts {
        let s = SHARD.with(Cell::get);
        self.at(if s < self.shards { s } else { s % self.shards })
    }

    /// The shards that may hold something.
    #[inline]
    fn used(&self) -> usize {
        SHARDS_USED.0.load(Ordering::Relaxed).min(self.shards)
    }

    /// Folds this server's counts over every shard that may hold something, shard 0 first
    /// (the one walk every reader uses; a plain loop: `step_by`/`take` iterators cost wlc
    /// ~160 instructions a SYN more, callgrind).
    #[inline]
    fn fold_shards<T>(&self, init: T, mut f: impl FnMut(T, &Counts) -> T) -> T {
        let lane = self.lane % PER_LINE;
        let mut acc = init;
        let mut line = self.line;
        for _ in 0..self.used() {
            acc = f(acc, &self.lines[line].0[lane]);
            line += self.per_shard;
        }
        acc
    }

    /// The sum over the shards of one count, modulo 2^32.
    #[inline]
    fn sum(&self, which: ConnCount) -> i32 {
        self.fold_shards(0i32, |t, c| {
            t.wrapping_add(c.get(which).load(Ordering::Relaxed))
        })
    }

    /// One more connection of kind `which`, counted in the calling thread's shard.
    #[inline]
    pub fn add(&self, which: ConnCount) {
        self.mine().get(which).fetch_add(1, Ordering::Relaxed);
    }

    /// One connection of kind `which` less, counted in the calling thread's shard (which
    /// need not be the one that counted it in).
    #[inline]
    pub fn remove(&self, which: ConnCount) {
        self.mine().get(which).fetch_sub(1, Ordering::Relaxed);
    }

    /// Moves one connection from inactive to active (`to_active`) or back, in the calling
    /// thread's shard.
    #[inline]
    pub fn shift(&self, to_active: bool) {
        let c = self.mine();
        let (inc, dec) = if to_active {
            (&c.active, &c.inactive)
        } else {
            (&c.inactive, &c.active)
        };
        inc.fetch_add(1, Ordering::Relaxed);
        dec.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets a count to `n` outright: `n` in the calling thread's shard, 0 in the others.
    /// For tests and tools that stage a load; while workers count, a change they make
    /// meanwhile may be lost. A count is at most 2^31 - 1 (the kernel's are `atomic_t`; a
    /// connection table holds fewer entries): a larger `n` reads as 0.
    pub fn set(&self, which: ConnCount, n: u32) {
        for s in 0..self.shards {
            self.at(s).get(which).store(0, Ordering::Relaxed);
        }
        self.mine().get(which).store(n as i32, Ordering::Relaxed);
    }

    /// A count as its shards sum, negative if more were taken out than put in: never once
    /// writers are quiet, unless a change was counted twice or lost (for checks; the
    /// readers below read a negative sum as 0).
    pub fn net(&self, which: ConnCount) -> i32 {
        self.sum(which)
    }

    /// Active connections: TCP connections in SYN_SENT, SYN_RECV, ESTABLISHED or SYNACK.
    #[inline]
    pub fn active(&self) -> u32 {
        count(self.sum(ConnCount::Active))
    }

    /// Inactive connections: every other connection (other TCP states, all UDP).
    #[inline]
    pub fn inactive(&self) -> u32 {
        count(self.sum(ConnCount::Inactive))
    }

    /// Persistence templates that point at this server.
    #[inline]
    pub fn persistent(&self) -> u32 {
        count(self.sum(ConnCount::Persistent))
    }

    /// Active and inactive connections, summed in one pass over the shards.
    #[inline]
    pub fn conns(&self) -> (u32, u32) {
        let (a, i) = self.fold_shards((0i32, 0i32), |(a, i), c| {
            (
                a.wrapping_add(c.active.load(Ordering::Relaxed)),
                i.wrapping_add(c.inactive.load(Ordering::Relaxed)),
            )
        });
        (count(a), count(i))
    }

    /// The IPVS overhead figure used by lc/wlc: `(active << 8) + inactive`.
    #[inline]
    pub fn overhead(&self) -> u64 {
        let (active, inactive) = self.conns();
        (u64::from(active) << 8) + u64::from(inactive)
    }

    /// Whether OVERLOAD is set.
    #[inline]
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Re-evaluates OVERLOAD after the connection count changed, as `ip_vs_bind_dest` /
    /// `ip_vs_unbind_dest` do: set when `active + inactive >= upper`; cleared when the count
    /// falls below `lower`, or, with `lower` 0, when `count * 4 < upper * 3`. Stores the
    /// flag only when it changes: every new connection and every expiry calls this, and a
    /// store would take the line from every core reading it. Without an upper threshold
    /// it reads no count.
    pub fn update_overload(&self) {
        let upper = self.upper_threshold.load(Ordering::Relaxed);
        let set = if upper == 0 {
            false
        } else {
            let lower = self.lower_threshold.load(Ordering::Relaxed);
            let (active, inactive) = self.conns();
            let conns = u64::from(active) + u64::from(inactive);
            if conns >= u64::from(upper) {
                true
            } else if (lower != 0 && conns < u64::from(lower))
                || (lower == 0 && conns * 4 < u64::from(upper) * 3)
            {
                false
            } else {
                return;
            }
        };
        if self.overloaded.load(Ordering::Relaxed) != set {
            self.overloaded.store(set, Ordering::Relaxed);
        }
    }

    /// Zeroes every counter, every shard's counts included (used when an id is handed out
    /// again, once no connection refers to it).
    pub fn reset(&self) {
        for s in 0..self.shards {
            let c = self.at(s);
            c.active.store(0, Ordering::Relaxed);
            c.inactive.store(0, Ordering::Relaxed);
            c.persistent.store(0, Ordering::Relaxed);
        }
        self.overloaded.store(false, Ordering::Relaxed);
        self.upper_threshold.store(0, Ordering::Relaxed);
        self.lower_threshold.store(0, Ordering::Relaxed);
        self.last_weight.store(0, Ordering::Relaxed);
    }

    /// Sets the thresholds (from the real server's `-x`/`-y`) and re-evaluates OVERLOAD.
    pub fn set_thresholds(&self, upper: u32, lower: u32) {
        self.upper_threshold.store(upper, Ordering::Relaxed);
        self.lower_threshold.store(lower, Ordering::Relaxed);
        self.update_overload();
    }
}

/// A fixed-capacity array of [`DestCounters`], allocated once at start, with the shards of
/// their counts.
#[derive(Debug)]
pub struct DestRegistry {
    slots: Box<[DestCounters]>,
}

impl DestRegistry {
    /// Default capacity: real servers across all services.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A registry for up to `capacity` real servers, with a shard for each core of the
    /// machine (64 at most) and one for the control and sync threads.
    pub fn new(capacity: usize) -> DestRegistry {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        DestRegistry::with_shards(capacity, (cores + 1).min(MAX_SHARDS))
    }

    /// A registry for up to `capacity` real servers with `shards` shards of counts: shard 0
    /// for the threads that are not workers, one for each worker up to `shards - 1`;
    /// workers beyond share them (worker `w` writes shard `(w + 1) % shards`). Each shard
    /// takes 16 bytes per server.
    ///
    /// # Panics
    /// If `shards` is 0.
    pub fn with_shards(capacity: usize, shards: usize) -> DestRegistry {
        assert!(shards > 0, "a registry needs a shard");
        let per_shard = capacity.div_ceil(PER_LINE);
        let lines: Arc<[Line]> = (0..per_shard * shards).map(|_| Line::default()).collect();
        DestRegistry {
            slots: (0..capacity)
                .map(|i| DestCounters {
                    lines: Arc::clone(&lines),
                    line: i / PER_LINE,
                    lane: i % PER_LINE,
                    per_shard,
                    shards,
                    overloaded: AtomicBool::new(false),
                    upper_threshold: AtomicU32::new(0),
                    lower_threshold: AtomicU32::new(0),
                    last_weight: AtomicI32::new(0),
                })
                .collect(),
        }
    }

    /// How many ids exist.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The counters of `id`.
    ///
    /// # Panics
    /// If `id` is outside the registry (ids come only from the control thread's allocator).
    #[inline]
    pub fn get(&self, id: DestId) -> &DestCounters {
        &self.slots[id.0 as usize]
    }
}

impl Default for DestRegistry {
    fn default() -> Self {
        DestRegistry::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_hysteresis_without_lower_threshold() {
        let c = DestCounters::default();
        c.set(ConnCount::Active, 4);
        c.set_thresholds(4, 0);
        assert!(c.is_overloaded());
        c.set(ConnCount::Active, 3);
        c.update_overload(); // 3*4 = 12 is not < 4*3 = 12
        assert!(c.is_overloaded());
        c.set(ConnCount::Active, 2);
        c.update_overload();
        assert!(!c.is_overloaded());
    }

    #[test]
    fn overload_with_lower_threshold() {
        let c = DestCounters::default();
        c.set(ConnCount::Inactive, 10);
        c.set_thresholds(10, 5);
        assert!(c.is_overloaded());
        c.set(ConnCount::Inactive, 5);
        c.update_overload();
        assert!(c.is_overloaded());
        c.set(ConnCount::Inactive, 4);
        c.update_overload();
        assert!(!c.is_overloaded());
    }

    #[test]
    fn no_threshold_clears_overload() {
        let c = DestCounters::default();
        c.set(ConnCount::Active, 8);
        c.set_thresholds(4, 0);
        assert!(c.is_overloaded());
        c.set_thresholds(0, 0);
        assert!(!c.is_overloaded());
        c.update_overload();
        assert!(!c.is_overloaded());
    }

    #[test]
    fn the_overload_flag_has_a_line_of_its_own() {
        assert_eq!(std::mem::align_of::<DestCounters>(), 64);
        assert_eq!(std::mem::size_of::<DestCounters>(), 64);
        assert_eq!(std::mem::size_of::<Line>(), 64);
    }

    /// Workers that end connections other workers created leave their shards negative; the
    /// sums are exact once they are done.
    #[test]
    fn shards_sum_exactly_whoever_adds_and_removes() {
        // 3 shards for 6 threads: workers 1 and 4 share one, as do 0 and 3, 2 and 5.
        let servers = 6;
        let reg = Arc::new(DestRegistry::with_shards(servers, 3));
        let per = 20_000;
        let barrier = Arc::new(std::sync::Barrier::new(servers));
        let handles: Vec<_> = (0..servers)
            .map(|t| {
                let (reg, barrier) = (Arc::clone(&reg), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    count_as_worker(t);
                    barrier.wait();
                    // Thread t opens connections at server t; thread t - 1 ends them and
                    // moves some to active that thread t moves back.
                    let mine = reg.get(DestId(t as u32));
                    let next = reg.get(DestId(((t + 1) % servers) as u32));
                    for i in 0..per {
                        mine.add(ConnCount::Inactive);
                        mine.add(ConnCount::Persistent);
                        mine.add(ConnCount::Persistent);
                        next.shift(true);
                        next.remove(ConnCount::Inactive);
                        next.remove(ConnCount::Persistent);
                        mine.shift(false);
                        if i % 2 == 0 {
                            mine.add(ConnCount::Active);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for d in 0..servers {
            let c = reg.get(DestId(d as u32));
            assert_eq!(
                (c.active(), c.inactive(), c.persistent()),
                (per / 2, 0, per),
                "server {d}"
            );
            assert_eq!(c.overhead(), u64::from(per / 2) << 8);
        }
        // Worker 0 (shard 1) ended worker 1's (shard 2) connections at server 1.
        assert!(reg.get(DestId(1)).at(1).inactive.load(Ordering::Relaxed) < 0);
        // Taken back from this thread's shard, every count returns to zero.
        for d in 0..servers {
            let c = reg.get(DestId(d as u32));
            for _ in 0..per / 2 {
                c.remove(ConnCount::Active);
            }
            for _ in 0..per {
                c.remove(ConnCount::Persistent);
            }
            assert_eq!((c.active(), c.inactive(), c.persistent()), (0, 0, 0));
            assert_eq!(c.overhead(), 0);
            c.reset();
            for s in 0..3 {
                assert_eq!(c.at(s).inactive.load(Ordering::Relaxed), 0);
            }
        }
    }
}
