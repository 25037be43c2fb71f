//! The connection table: a preallocated slab of entries, a lock-free hash index over it,
//! per-worker allocation and expiry. See `docs/conn-table.md` for the design.
//!
//! Every field of an entry is an atomic, so a racing read is never undefined behaviour; the
//! entry's control word packs its generation, state and expiry, and every change of state
//! (a packet, expiry, eviction, `expire_now`) is one compare-exchange on that word. The
//! winner of a compare-exchange alone adjusts the real server's counters, so they balance
//! exactly however workers race.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::index::{Index, CELLS};
use super::state::{next_state, StateTable, TcpFlags, TcpState, Timeouts, TEMPLATE_RETRY_SECS};
use crate::service::{DestId, DestRegistry, ForwardMethod, Protocol};
use crate::time::Instant;

// ---- control word: gen (24) | state (4) | expiry in ms (36) -------------------------------

const EXP_BITS: u32 = 36;
const EXP_MASK: u64 = (1 << EXP_BITS) - 1;
const EXP_HALF: u64 = 1 << (EXP_BITS - 1);
const STATE_SHIFT: u32 = 36;
const GEN_SHIFT: u32 = 40;
const GEN_MASK: u32 = (1 << 24) - 1;
/// State nibble of an entry `expire_now` retired: logically gone, counters settled, waiting
/// for its owner to reclaim the slot.
const DOOMED: u8 = 15;

/// The control word. Odd generation = live entry; even = free (or being written).
#[derive(Copy, Clone, PartialEq, Eq)]
struct Ctl(u64);

impl Ctl {
    #[inline]
    fn new(gen: u32, state: u8, expiry_ms: u64) -> Ctl {
        Ctl(u64::from(gen & GEN_MASK) << GEN_SHIFT
            | u64::from(state & 0xf) << STATE_SHIFT
            | expiry_ms & EXP_MASK)
    }
    #[inline]
    fn gen(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32 & GEN_MASK
    }
    #[inline]
    fn live(self) -> bool {
        self.gen() & 1 == 1
    }
    #[inline]
    fn state(self) -> u8 {
        (self.0 >> STATE_SHIFT) as u8 & 0xf
    }
    #[inline]
    fn expiry(self) -> u64 {
        self.0 & EXP_MASK
    }
}

/// Milliseconds of `now`, modulo 2^36.
#[inline]
fn ms(now: Instant) -> u64 {
    (now.as_micros() / 1000) & EXP_MASK
}

/// `now >= expiry` on the wrapping 36-bit millisecond clock.
#[inline]
fn is_expired(expiry: u64, now_ms: u64) -> bool {
    now_ms.wrapping_sub(expiry) & EXP_MASK < EXP_HALF
}

#[inline]
fn deadline(now_ms: u64, secs: u32) -> u64 {
    (now_ms + u64::from(secs) * 1000) & EXP_MASK
}

// ---- meta word: cport | vport << 16 | dport << 32 | proto << 48 | flags << 56 -------------

const F_V6: u64 = 1;
const F_DV6: u64 = 2;
const F_TEMPLATE: u64 = 4;
const METHOD_SHIFT: u32 = 4;

#[derive(Copy, Clone)]
struct Meta(u64);

impl Meta {
    #[inline]
    fn cport(self) -> u16 {
        self.0 as u16
    }
    #[inline]
    fn vport(self) -> u16 {
        (self.0 >> 16) as u16
    }
    #[inline]
    fn dport(self) -> u16 {
        (self.0 >> 32) as u16
    }
    #[inline]
    fn proto(self) -> u8 {
        (self.0 >> 48) as u8
    }
    #[inline]
    fn flags(self) -> u64 {
        self.0 >> 56
    }
    #[inline]
    fn template(self) -> bool {
        self.flags() & F_TEMPLATE != 0
    }
    #[inline]
    fn method(self) -> ForwardMethod {
        match (self.flags() >> METHOD_SHIFT) & 3 {
            0 => ForwardMethod::Masquerade,
            1 => ForwardMethod::DirectRouting,
            _ => ForwardMethod::Tunnel,
        }
    }
    #[inline]
    fn is_tcp(self) -> bool {
        self.proto() == Protocol::Tcp.number()
    }
}

fn method_bits(m: ForwardMethod) -> u64 {
    match m {
        ForwardMethod::Masquerade => 0,
        ForwardMethod::DirectRouting => 1,
        ForwardMethod::Tunnel => 2,
    }
}

// ---- addresses and keys --------------------------------------------------------------------

/// An address as two words; IPv4 as IPv4-mapped IPv6 (the family is kept beside it).
#[inline]
fn addr_words(a: IpAddr) -> [u64; 2] {
    let v = match a {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    };
    [(v >> 64) as u64, v as u64]
}

#[inline]
fn words_addr(w: [u64; 2], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(u128::from(w[0]) << 64 | u128::from(w[1])))
    } else {
        IpAddr::V4(Ipv4Addr::from(w[1] as u32))
    }
}

const K_V6: u64 = 1;
const K_TEMPLATE: u64 = 2;

/// What the index hashes: source, destination, and ports/protocol/kind in one word.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Key {
    src: [u64; 2],
    dst: [u64; 2],
    meta: u64,
}

impl Key {
    #[inline]
    fn new(proto: u8, src: [u64; 2], sport: u16, dst: [u64; 2], dport: u16, kind: u64) -> Key {
        Key {
            src,
            dst,
            meta: u64::from(sport) << 48 | u64::from(dport) << 32 | u64::from(proto) << 8 | kind,
        }
    }
}

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ (r >> 64) as u64
}

// ---- public types --------------------------------------------------------------------------

/// A packet's 5-tuple as the table looks it up.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Source address.
    pub src: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
}

/// A flow's hash in the table's index, from [`ConnTable::prefetch_index`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FlowHash(u64);

/// A handle on one entry: its slot and the generation it had. Stale handles (the entry
/// expired and the slot was reused) are detected and ignored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    slot: u32,
    gen: u32,
}

impl ConnId {
    #[inline]
    fn pack(self) -> u64 {
        u64::from(self.gen) << 32 | u64::from(self.slot)
    }
    /// The handle as one word, never 0 (for queues).
    #[inline]
    pub fn to_bits(self) -> u64 {
        self.pack()
    }

    /// A handle from [`ConnId::to_bits`]; `None` for 0.
    #[inline]
    pub fn from_bits(v: u64) -> Option<ConnId> {
        ConnId::unpack(v)
    }

    /// A handle for tests that need one but never use it on a table.
    #[cfg(test)]
    pub(crate) fn dummy() -> ConnId {
        ConnId { slot: 0, gen: 1 }
    }

    #[inline]
    fn unpack(v: u64) -> Option<ConnId> {
        // A live generation is odd, so a packed live id is never 0.
        (v != 0).then_some(ConnId {
            slot: v as u32,
            gen: (v >> 32) as u32,
        })
    }
}

/// Which way a packet travels on its connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to virtual service (matched the `<caddr, cport, vaddr, vport>` key).
    Original,
    /// Real server to client (NAT only; matched `<daddr, dport, caddr, cport>`).
    Reply,
}

/// Everything the forwarding stage needs of a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Client address.
    pub client: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// How packets reach the real server.
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// TCP state (NONE for UDP) as of the lookup, before the current packet.
    pub state: TcpState,
}

impl ConnInfo {
    /// The state as `ipvsadm -L -c` names it (`UDP` for UDP connections).
    pub fn state_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Tcp => self.state.name(),
            Protocol::Udp => "UDP",
        }
    }
}

/// A connection found or created.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Handle for [`ConnTable::on_packet`] and [`ConnTable::expire_now`].
    pub id: ConnId,
    /// Which key the packet matched.
    pub dir: Direction,
    /// The connection.
    pub info: ConnInfo,
}

/// A connection to create, from the first packet of a flow and the scheduler's choice.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Client address (the packet's source).
    pub client: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (the packet's destination); same family as `client`.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method; NAT connections also get a reply key.
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// TCP flags of the first packet (sets the initial state); `None` for UDP.
    pub flags: Option<TcpFlags>,
    /// The persistence template that chose the real server, if any.
    pub template: Option<ConnId>,
}

/// The worker's part of the table is full and nothing in the eviction window could go.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection table full")
    }
}

impl std::error::Error for TableFull {}

/// Table counters, summed over workers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Inserts refused ([`TableFull`]).
    pub insert_failures: u64,
}

/// One live entry as `ipvsadm -L -c` lists it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// IP protocol number: 6, 17, or 0 for a firewall-mark template.
    pub protocol: u8,
    /// A persistence template rather than a connection.
    pub template: bool,
    /// Client address (masked, for a template).
    pub client: IpAddr,
    /// Client port (0 for a template).
    pub cport: u16,
    /// Virtual address (for a fwmark template, the mark as an address).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// State name: a TCP state, `UDP`, or `NONE` for TCP/fwmark templates.
    pub state: &'static str,
    /// Milliseconds until the entry expires (0 when already due).
    pub expires_in_ms: u64,
    /// Connections a template controls.
    pub controlled: u32,
}

impl ConnEntry {
    /// Protocol as ipvsadm prints it: `TCP`, `UDP`, `IP` (fwmark template).
    pub fn protocol_name(&self) -> &'static str {
        match Protocol::from_number(self.protocol) {
            Some(p) => p.ipvsadm_name(),
            None => "IP",
        }
    }
}

// ---- internals -----------------------------------------------------------------------------

/// One entry. The first cache line holds what a lookup compares; the second what it copies
/// out and what only the owner and templates use.
#[repr(C, align(64))]
#[derive(Default)]
struct Slot {
    ctl: AtomicU64,
    meta: AtomicU64,
    caddr: [AtomicU64; 2],
    vaddr: [AtomicU64; 2],
    daddr: [AtomicU64; 2],
    dest: AtomicU32,
    /// Next free slot of the owner's free list while free.
    next_free: AtomicU32,
    /// Templates: connections this template controls. Only ever changed by +1/-1 pairs, so
    /// never reset.
    n_control: AtomicU32,
    /// Templates: the timeout a use refreshes the timer with, seconds.
    timeout_s: AtomicU32,
    /// Connections: packed [`ConnId`] of the controlling template, 0 = none.
    template: AtomicU64,
    /// Connection-sync bookkeeping ([`SyncMark`], packed): written only while a sync
    /// master runs, read only by the sync code.
    sync: AtomicU64,
}

/// A consistent copy of an entry's immutable fields.
#[derive(Copy, Clone)]
struct Raw {
    meta: Meta,
    caddr: [u64; 2],
    vaddr: [u64; 2],
    daddr: [u64; 2],
    dest: u32,
}

impl Raw {
    #[inline]
    fn kind(&self) -> u64 {
        let mut k = 0;
        if self.meta.flags() & F_V6 != 0 {
            k |= K_V6;
        }
        if self.meta.template() {
            k |= K_TEMPLATE;
        }
        k
    }

    #[inline]
    fn original_key(&self) -> Key {
        let m = self.meta;
        Key::new(
            m.proto(),
            self.caddr,
            m.cport(),
            self.vaddr,
            m.vport(),
            self.kind(),
        )
    }

    /// The reply key, for NAT connections whose real server has the client's family.
    #[inline]
    fn reply_key(&self) -> Option<Key> {
        let m = self.meta;
        let same_family = (m.flags() & F_V6 != 0) == (m.flags() & F_DV6 != 0);
        (!m.template() && m.method() == ForwardMethod::Masquerade && same_family).then(|| {
            Key::new(
                m.proto(),
                self.daddr,
                m.dport(),
                self.caddr,
                m.cport(),
                self.kind(),
            )
        })
    }

    /// Whether the entry is stored under `k` in direction `reply`: the comparison
    /// `original_key() == k` / `reply_key() == Some(k)` make, without building the keys.
    #[inline]
    fn matches(&self, k: &Key, reply: bool) -> bool {
        let m = self.meta;
        if reply {
            let same_family = (m.flags() & F_V6 != 0) == (m.flags() & F_DV6 != 0);
            !m.template()
                && m.method() == ForwardMethod::Masquerade
                && same_family
                && self.daddr == k.src
                && self.caddr == k.dst
                && Key::new(m.proto(), k.src, m.dport(), k.dst, m.cport(), self.kind()).meta
                    == k.meta
        } else {
            self.caddr == k.src
                && self.vaddr == k.dst
                && Key::new(m.proto(), k.src, m.cport(), k.dst, m.vport(), self.kind()).meta
                    == k.meta
        }
    }

    fn client(&self) -> IpAddr {
        words_addr(self.caddr, self.meta.flags() & F_V6 != 0)
    }
    fn vaddr(&self) -> IpAddr {
        words_addr(self.vaddr, self.meta.flags() & F_V6 != 0)
    }
    fn daddr(&self) -> IpAddr {
        words_addr(self.daddr, self.meta.flags() & F_DV6 != 0)
    }

    #[inline]
    fn info(&self, state: u8) -> ConnInfo {
        let m = self.meta;
        ConnInfo {
            protocol: if m.is_tcp() {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            client: self.client(),
            cport: m.cport(),
            vaddr: self.vaddr(),
            vport: m.vport(),
            daddr: self.daddr(),
            dport: m.dport(),
            method: m.method(),
            dest: DestId(self.dest),
            state: TcpState::from_index(state).unwrap_or(TcpState::None),
        }
    }
}

/// Per-worker allocation state; only the owning worker writes it.
#[repr(C, align(64))]
#[derive(Default)]
struct Worker {
    free_head: AtomicU32,
    hand: AtomicU32,
    live: AtomicUsize,
    evictions: AtomicU64,
    insert_failures: AtomicU64,
    #[cfg(debug_assertions)]
    busy: std::sync::atomic::AtomicBool,
}

const NO_SLOT: u32 = u32::MAX;

/// Slots the eviction scan looks at from the clock hand.
pub const EVICT_WINDOW: usize = 64;

/// Eviction preference (lower goes first); `None` = never evicted.
fn evict_class(ctl: Ctl, meta: Meta, n_control: u32, now_ms: u64) -> Option<u8> {
    if meta.template() {
        return (n_control == 0).then_some(if is_expired(ctl.expiry(), now_ms) {
            0
        } else {
            4
        });
    }
    if ctl.state() == DOOMED || is_expired(ctl.expiry(), now_ms) {
        return Some(0);
    }
    if !meta.is_tcp() {
        return Some(3);
    }
    match TcpState::from_index(ctl.state())? {
        TcpState::Established => None,
        TcpState::None
        | TcpState::Close
        | TcpState::TimeWait
        | TcpState::CloseWait
        | TcpState::LastAck
        | TcpState::FinWait => Some(1),
        TcpState::SynRecv | TcpState::SynSent | TcpState::SynAck | TcpState::Listen => Some(2),
    }
}

/// The shared connection table. See the module and `docs/conn-table.md`.
pub struct ConnTable {
    slots: Box<[Slot]>,
    index: Index,
    workers: Box<[Worker]>,
    registry: Arc<DestRegistry>,
    timeouts: Timeouts,
    seed: [u64; 5],
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("capacity", &self.capacity())
            .field("workers", &self.workers.len())
            .field("len", &self.len())
            .field("index_buckets", &self.index.buckets())
            .finish()
    }
}

/// A persistence template's key (`ip_vs_sched_persist`): `<protocol, client & mask, vaddr,
/// vport>`; protocol 0 and the mark as `vaddr` for firewall-mark services.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TemplateKey {
    pub(crate) protocol: u8,
    pub(crate) client: IpAddr,
    pub(crate) vaddr: IpAddr,
    pub(crate) vport: u16,
}

impl TemplateKey {
    fn key(&self) -> Key {
        let kind = K_TEMPLATE | if self.client.is_ipv6() { K_V6 } else { 0 };
        Key::new(
            self.protocol,
            addr_words(self.client),
            0,
            addr_words(self.vaddr),
            self.vport,
            kind,
        )
    }
}

/// A template found by [`ConnTable::lookup_template`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateHit {
    pub(crate) id: ConnId,
    pub(crate) dest: DestId,
}

impl ConnTable {
    /// Default capacity (entries, connections and templates together).
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    /// A table of `capacity` entries shared by `workers` workers, updating the counters in
    /// `registry`. Allocates everything it will ever use: about 128 B per entry plus an
    /// index of 64-byte buckets sized for two keys per entry at most half full.
    ///
    /// The hash seed is random; use [`ConnTable::with_seed`] for a fixed one.
    ///
    /// # Panics
    /// If `workers` is 0, or `capacity` is below `workers` or not below 2^31.
    pub fn new(capacity: usize, workers: usize, registry: Arc<DestRegistry>) -> ConnTable {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(capacity);
        ConnTable::with_seed(capacity, workers, registry, h.finish())
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
        let buckets = (capacity * 2 * 2).div_ceil(CELLS);
        ConnTable::with_index(capacity, workers, registry, seed, buckets)
    }

    fn with_index(
        capacity: usize,
        workers: usize,
        registry: Arc<DestRegistry>,
        seed: u64,
        buckets: usize,
    ) -> ConnTable {
        assert!(workers > 0, "a connection table needs a worker");
        assert!(capacity >= workers, "fewer entries than workers");
        assert!(capacity < 1 << 31, "capacity too large");
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
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            index: Index::new(buckets),
            workers: (0..workers).map(|_| Worker::default()).collect(),
            registry,
            timeouts: Timeouts::new(),
            seed,
        };
        for w in 0..workers {
            let (start, end) = table.range(w);
            let worker = &table.workers[w];
            worker.hand.store(start, Ordering::Relaxed);
            worker
                .free_head
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
        let n = self.workers.len();
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

    /// Live entries (connections and templates, including ones retired by
    /// [`ConnTable::expire_now`] whose slot is not yet reclaimed).
    pub fn len(&self) -> usize {
        self.workers
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
        assert!(worker < self.workers.len(), "no worker {worker}");
        let (start, end) = self.range(worker);
        (end - start) as usize
    }

    /// The protocol timeouts (settable live).
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The real server counters the table updates.
    pub fn registry(&self) -> &DestRegistry {
        &self.registry
    }

    /// Eviction and failure counters.
    pub fn stats(&self) -> TableStats {
        self.workers
            .iter()
            .fold(TableStats::default(), |s, w| TableStats {
                evictions: s.evictions + w.evictions.load(Ordering::Relaxed),
                insert_failures: s.insert_failures + w.insert_failures.load(Ordering::Relaxed),
            })
    }

    /// Reads slot `i` as a seqlock reader: `None` if free or rewritten meanwhile.
    #[inline]
    fn read(&self, i: u32) -> Option<(Ctl, Raw)> {
        let s = self.slots.get(i as usize)?;
        let c1 = Ctl(s.ctl.load(Ordering::Acquire));
        if !c1.live() {
            return None;
        }
        let raw = Raw {
            meta: Meta(s.meta.load(Ordering::Relaxed)),
            caddr: [
                s.caddr[0].load(Ordering::Relaxed),
                s.caddr[1].load(Ordering::Relaxed),
            ],
            vaddr: [
                s.vaddr[0].load(Ordering::Relaxed),
                s.vaddr[1].load(Ordering::Relaxed),
            ],
            daddr: [
                s.daddr[0].load(Ordering::Relaxed),
                s.daddr[1].load(Ordering::Relaxed),
            ],
            dest: s.dest.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        let c2 = Ctl(s.ctl.load(Ordering::Relaxed));
        (c2.gen() == c1.gen()).then_some((c2, raw))
    }

    /// The connection a packet belongs to, in either direction.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Hit> {
        self.find(key).map(|(hit, _)| hit)
    }

    /// The connection a packet belongs to, unless its timer has already run out: an entry
    /// the owner's expiry sweep has not reached yet is expired here instead, so a timeout
    /// takes effect at the packet that finds it, exactly on time, whatever the sweep's pace.
    #[inline]
    pub fn lookup_live(&self, key: &FlowKey, now: Instant) -> Option<Hit> {
        let (hit, expiry) = self.find(key)?;
        if is_expired(expiry, ms(now)) {
            self.expire_now(hit.id);
            return None;
        }
        Some(hit)
    }

    /// Starts loading the index bucket `key` hashes to, for a lookup a little later (the
    /// pipeline does this for a whole batch before handling its first frame, so the
    /// batch's cache misses overlap). Returns what [`ConnTable::prefetch_entry`] needs.
    #[inline]
    pub fn prefetch_index(&self, key: &FlowKey) -> Option<FlowHash> {
        let hash = self.hash(&Self::key_of(key)?);
        self.index.prefetch(hash);
        Some(FlowHash(hash))
    }

    /// Starts loading the entries the (by now loaded) index bucket of `hash` points at.
    #[inline]
    pub fn prefetch_entry(&self, hash: FlowHash) {
        self.index.home_candidates(hash.0, |payload| {
            let slot = (payload as u32).wrapping_sub(1) as usize;
            if let Some(s) = self.slots.get(slot) {
                // Both cache lines of the entry: `read` takes `dest` from the second.
                super::index::prefetch(s);
                super::index::prefetch(&s.dest);
            }
        });
    }

    /// The index key of a packet's flow; `None` for mixed families (never in the table).
    #[inline]
    fn key_of(key: &FlowKey) -> Option<Key> {
        if key.src.is_ipv6() != key.dst.is_ipv6() {
            return None;
        }
        Some(Key::new(
            key.protocol.number(),
            addr_words(key.src),
            key.sport,
            addr_words(key.dst),
            key.dport,
            if key.src.is_ipv6() { K_V6 } else { 0 },
        ))
    }

    /// The entry matching `key` and its expiry (36-bit milliseconds).
    ///
    /// Candidates are compared word by word against the key as they are read; the
    /// connection's [`ConnInfo`] is built once, for the match, outside the index probe.
    #[inline]
    fn find(&self, key: &FlowKey) -> Option<(Hit, u64)> {
        let k = Self::key_of(key)?;
        let mut found = None;
        self.index.find(self.hash(&k), |payload| {
            let slot = (payload as u32).wrapping_sub(1);
            let reply = payload >> 32 != 0;
            match self.read(slot) {
                Some((ctl, raw)) if ctl.state() != DOOMED && raw.matches(&k, reply) => {
                    found = Some((slot, reply, ctl, raw));
                    true
                }
                _ => false,
            }
        })?;
        let (slot, reply, ctl, raw) = found?;
        let hit = Hit {
            id: ConnId {
                slot,
                gen: ctl.gen(),
            },
            dir: if reply {
                Direction::Reply
            } else {
                Direction::Original
            },
            info: raw.info(ctl.state()),
        };
        Some((hit, ctl.expiry()))
    }

    #[inline]
    fn timeout_secs(&self, meta: Meta, state: u8) -> u32 {
        if meta.is_tcp() {
            self.timeouts
                .tcp(TcpState::from_index(state).unwrap_or(TcpState::Close))
        } else {
            self.timeouts.udp()
        }
    }

    /// Creates a connection on `worker`'s slots. Its state is what the first packet's flags
    /// make of NONE (INPUT table for NAT, INPUT-ONLY for DR/TUN); it counts as active or
    /// inactive at its real server accordingly. The caller looks the flow up first: the
    /// table does not refuse a duplicate key.
    ///
    /// # Panics
    /// If `worker` is out of range.
    pub fn insert(&self, worker: usize, now: Instant, new: NewConn) -> Result<Hit, TableFull> {
        let _guard = self.enter(worker);
        let now_ms = ms(now);
        let state = match (new.protocol, new.flags) {
            (Protocol::Tcp, flags) => next_state(
                input_table(new.method),
                TcpState::None,
                flags.unwrap_or(TcpFlags::NONE),
            ) as u8,
            (Protocol::Udp, _) => 0,
        };
        let meta = Meta(
            u64::from(new.cport)
                | u64::from(new.vport) << 16
                | u64::from(new.dport) << 32
                | u64::from(new.protocol.number()) << 48
                | (if new.client.is_ipv6() { F_V6 } else { 0 }
                    | if new.daddr.is_ipv6() { F_DV6 } else { 0 }
                    | method_bits(new.method) << METHOD_SHIFT)
                    << 56,
        );
        let fields = Fields {
            meta,
            caddr: addr_words(new.client),
            vaddr: addr_words(new.vaddr),
            daddr: addr_words(new.daddr),
            dest: new.dest.0,
            template: new.template,
            timeout_s: 0,
            sync: SyncMark::fresh(now_ms),
        };
        let expiry = deadline(now_ms, self.timeout_secs(meta, state));
        let id = self.create(worker, now_ms, &fields, state, expiry)?;
        Ok(Hit {
            id,
            dir: Direction::Original,
            info: fields.raw().info(state),
        })
    }

    /// Allocates, fills, publishes and indexes an entry; settles counters on insert.
    fn create(
        &self,
        worker: usize,
        now_ms: u64,
        f: &Fields,
        state: u8,
        expiry: u64,
    ) -> Result<ConnId, TableFull> {
        let w = &self.workers[worker];
        let Some(slot) = self.alloc(worker, now_ms) else {
            w.insert_failures.store(
                w.insert_failures.load(Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            return Err(TableFull);
        };
        let s = &self.slots[slot as usize];
        let gen = Ctl(s.ctl.load(Ordering::Relaxed)).gen().wrapping_add(1) & GEN_MASK;
        debug_assert!(gen & 1 == 1);
        let template = f.template.filter(|t| self.attach(*t));
        // Seqlock writer: a reader that sees any field written below also sees the even
        // generation stored when the slot was freed (see `read`).
        fence(Ordering::Release);
        s.meta.store(f.meta.0, Ordering::Relaxed);
        for i in 0..2 {
            s.caddr[i].store(f.caddr[i], Ordering::Relaxed);
            s.vaddr[i].store(f.vaddr[i], Ordering::Relaxed);
            s.daddr[i].store(f.daddr[i], Ordering::Relaxed);
        }
        s.dest.store(f.dest, Ordering::Relaxed);
        s.template
            .store(template.map_or(0, ConnId::pack), Ordering::Relaxed);
        s.timeout_s.store(f.timeout_s, Ordering::Relaxed);
        s.sync.store(f.sync.pack(), Ordering::Relaxed);
        // Count before publishing, so whoever later wins the entry's control word takes
        // back a count that is already there.
        let counters = self.registry.get(DestId(f.dest));
        self.count(f.meta, state, counters, true);
        counters.update_overload();
        let ctl = Ctl::new(gen, state, expiry);
        s.ctl.store(ctl.0, Ordering::Release);
        w.live
            .store(w.live.load(Ordering::Relaxed) + 1, Ordering::Relaxed);

        let raw = f.raw();
        let original = self.hash(&raw.original_key());
        let payload = u64::from(slot) + 1;
        let mut ok = self.index.insert(original, payload);
        if ok {
            if let Some(rk) = raw.reply_key() {
                ok = self.index.insert(self.hash(&rk), 1 << 32 | payload);
                if !ok {
                    self.index.remove(original, payload);
                }
            }
        }
        if !ok {
            // The index has no room under these keys: undo as an expiry would.
            if self.kill(slot, ctl) {
                self.settle(slot, &raw, state);
            }
            self.push_free(worker, slot);
            w.insert_failures.store(
                w.insert_failures.load(Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            return Err(TableFull);
        }
        Ok(ConnId { slot, gen })
    }

    /// Adds or removes one count for an entry in `state`.
    #[inline]
    fn count(&self, meta: Meta, state: u8, c: &crate::service::DestCounters, add: bool) {
        let counter = if meta.template() {
            &c.persist_conns
        } else if meta.is_tcp() && TcpState::index_is_active(state) {
            &c.active_conns
        } else {
            &c.inactive_conns
        };
        if add {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes a free slot, or evicts one.
    fn alloc(&self, worker: usize, now_ms: u64) -> Option<u32> {
        let w = &self.workers[worker];
        let head = w.free_head.load(Ordering::Relaxed);
        if head != NO_SLOT {
            let next = self.slots[head as usize].next_free.load(Ordering::Relaxed);
            w.free_head.store(next, Ordering::Relaxed);
            return Some(head);
        }
        self.evict(worker, now_ms)
    }

    fn push_free(&self, worker: usize, slot: u32) {
        let w = &self.workers[worker];
        self.slots[slot as usize]
            .next_free
            .store(w.free_head.load(Ordering::Relaxed), Ordering::Relaxed);
        w.free_head.store(slot, Ordering::Relaxed);
        w.live
            .store(w.live.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    /// Owner-side copy of a slot's fields (the owner is their only writer).
    fn own_raw(&self, slot: u32) -> Raw {
        let s = &self.slots[slot as usize];
        Raw {
            meta: Meta(s.meta.load(Ordering::Relaxed)),
            caddr: [
                s.caddr[0].load(Ordering::Relaxed),
                s.caddr[1].load(Ordering::Relaxed),
            ],
            vaddr: [
                s.vaddr[0].load(Ordering::Relaxed),
                s.vaddr[1].load(Ordering::Relaxed),
            ],
            daddr: [
                s.daddr[0].load(Ordering::Relaxed),
                s.daddr[1].load(Ordering::Relaxed),
            ],
            dest: s.dest.load(Ordering::Relaxed),
        }
    }

    /// Owner only: turns live `expected` into free. True if this call did it.
    fn kill(&self, slot: u32, expected: Ctl) -> bool {
        let dead = Ctl::new(expected.gen().wrapping_add(1), 0, 0);
        self.slots[slot as usize]
            .ctl
            .compare_exchange(expected.0, dead.0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives back what a live entry in `state` holds: its count at the real server, its
    /// control count on a template.
    fn settle(&self, slot: u32, raw: &Raw, state: u8) {
        let counters = self.registry.get(DestId(raw.dest));
        self.count(raw.meta, state, counters, false);
        counters.update_overload();
        if !raw.meta.template() {
            let t = self.slots[slot as usize].template.load(Ordering::Relaxed);
            if let Some(t) = ConnId::unpack(t) {
                self.slots[t.slot as usize]
                    .n_control
                    .fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Removes a slot's keys from the index.
    fn unlink(&self, slot: u32, raw: &Raw) {
        let payload = u64::from(slot) + 1;
        self.index.remove(self.hash(&raw.original_key()), payload);
        if let Some(rk) = raw.reply_key() {
            self.index.remove(self.hash(&rk), 1 << 32 | payload);
        }
    }

    /// Owner only: ends the entry in `slot` if `ctl` is still its control word. On success
    /// the slot is out of the index with its counters settled, but not on the free list.
    fn reclaim(&self, slot: u32, ctl: Ctl, now_ms: u64) -> bool {
        let raw = self.own_raw(slot);
        if !self.kill(slot, ctl) {
            return false;
        }
        if ctl.state() != DOOMED {
            if raw.meta.template() && self.slots[slot as usize].n_control.load(Ordering::SeqCst) > 0
            {
                // A connection attached between our check and the kill: revive the
                // template as its timer would have been pushed back. Only the owner writes
                // a dead control word, so a plain store is enough.
                let back = Ctl::new(
                    ctl.gen(),
                    ctl.state(),
                    deadline(now_ms, TEMPLATE_RETRY_SECS),
                );
                self.slots[slot as usize]
                    .ctl
                    .store(back.0, Ordering::SeqCst);
                return false;
            }
            self.settle(slot, &raw, ctl.state());
        }
        self.unlink(slot, &raw);
        true
    }

    /// Looks at the eviction window from the clock hand for the entry that may best go.
    fn evict(&self, worker: usize, now_ms: u64) -> Option<u32> {
        let (start, end) = self.range(worker);
        let len = (end - start) as usize;
        let w = &self.workers[worker];
        for _attempt in 0..2 {
            let hand = w.hand.load(Ordering::Relaxed);
            let mut best: Option<(u8, u32, Ctl)> = None;
            let mut i = hand;
            for _ in 0..EVICT_WINDOW.min(len) {
                let s = &self.slots[i as usize];
                let ctl = Ctl(s.ctl.load(Ordering::Acquire));
                if ctl.live() {
                    let meta = Meta(s.meta.load(Ordering::Relaxed));
                    let n = s.n_control.load(Ordering::Relaxed);
                    if let Some(class) = evict_class(ctl, meta, n, now_ms) {
                        if best.is_none_or(|(b, _, _)| class < b) {
                            best = Some((class, i, ctl));
                            if class == 0 {
                                break;
                            }
                        }
                    }
                }
                i = if i + 1 == end { start } else { i + 1 };
            }
            let (_, slot, ctl) = best?;
            if self.reclaim(slot, ctl, now_ms) {
                w.hand.store(
                    if slot + 1 == end { start } else { slot + 1 },
                    Ordering::Relaxed,
                );
                w.evictions
                    .store(w.evictions.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                w.live
                    .store(w.live.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
                return Some(slot);
            }
        }
        None
    }

    /// Registers a connection with its template: +1 control count, then checks the template
    /// is still the one named. Pairs with the owner's kill-then-check in `reclaim`.
    fn attach(&self, t: ConnId) -> bool {
        let Some(s) = self.slots.get(t.slot as usize) else {
            return false;
        };
        s.n_control.fetch_add(1, Ordering::SeqCst);
        let c = Ctl(s.ctl.load(Ordering::SeqCst));
        if c.gen() == t.gen && c.state() != DOOMED {
            true
        } else {
            s.n_control.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    /// Advances a connection's state with one packet and restarts its timer with the new
    /// state's timeout, moving one count between active and inactive when the state enters
    /// or leaves the active states ([`TcpState::is_active`]). `flags` is `None` for UDP. A
    /// stale `id` is ignored.
    #[inline]
    pub fn on_packet(&self, id: ConnId, dir: Direction, flags: Option<TcpFlags>, now: Instant) {
        let Some(s) = self.slots.get(id.slot as usize) else {
            return;
        };
        let now_ms = ms(now);
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen || c.state() == DOOMED {
                return;
            }
            let meta = Meta(s.meta.load(Ordering::Relaxed));
            let dest = s.dest.load(Ordering::Relaxed);
            if meta.template() {
                return;
            }
            let state = if meta.is_tcp() {
                let table = match dir {
                    Direction::Reply => StateTable::Output,
                    Direction::Original => input_table(meta.method()),
                };
                let old = TcpState::from_index(c.state()).unwrap_or(TcpState::Close);
                next_state(table, old, flags.unwrap_or(TcpFlags::NONE)) as u8
            } else {
                c.state()
            };
            let n = Ctl::new(
                c.gen(),
                state,
                deadline(now_ms, self.timeout_secs(meta, state)),
            );
            if n == c {
                return;
            }
            // The generation in the word makes this fail if the slot was reused since the
            // loads above, so `meta` and `dest` belong to the entry we change.
            if s.ctl
                .compare_exchange(c.0, n.0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let was = meta.is_tcp() && TcpState::index_is_active(c.state());
                let is = meta.is_tcp() && TcpState::index_is_active(state);
                if was != is {
                    let counters = self.registry.get(DestId(dest));
                    let (inc, dec) = if is {
                        (&counters.active_conns, &counters.inactive_conns)
                    } else {
                        (&counters.inactive_conns, &counters.active_conns)
                    };
                    inc.fetch_add(1, Ordering::Relaxed);
                    dec.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }

    /// Ends a connection now, from any worker (`expire_nodest_conn` when its real server
    /// was removed): it stops matching lookups at once and its counters are given back;
    /// its owner reclaims the slot at its next [`ConnTable::expire`]. For a template, only
    /// unhashes it (it may still control connections). False if `id` was already gone.
    pub fn expire_now(&self, id: ConnId) -> bool {
        let Some(s) = self.slots.get(id.slot as usize) else {
            return false;
        };
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen || c.state() == DOOMED {
                return false;
            }
            let Some((c2, raw)) = self.read(id.slot) else {
                return false;
            };
            if c2.gen() != id.gen {
                return false;
            }
            if raw.meta.template() {
                self.unlink(id.slot, &raw);
                return true;
            }
            let template = s.template.load(Ordering::Relaxed);
            let doomed = Ctl::new(c.gen(), DOOMED, c.expiry());
            if s.ctl
                .compare_exchange(c.0, doomed.0, Ordering::SeqCst, Ordering::Acquire)
                .is_ok()
            {
                let counters = self.registry.get(DestId(raw.dest));
                self.count(raw.meta, c.state(), counters, false);
                counters.update_overload();
                if let Some(t) = ConnId::unpack(template) {
                    self.slots[t.slot as usize]
                        .n_control
                        .fetch_sub(1, Ordering::SeqCst);
                }
                return true;
            }
        }
    }

    /// Expires entries of `worker` whose timer ran out, looking at up to `budget` slots from
    /// its clock hand; returns how many it freed. Call between batches. A template that
    /// still controls connections is not freed: its timer is pushed back 60 s.
    ///
    /// # Panics
    /// If `worker` is out of range.
    pub fn expire(&self, worker: usize, now: Instant, budget: usize) -> usize {
        let _guard = self.enter(worker);
        let (start, end) = self.range(worker);
        if start == end {
            return 0;
        }
        let now_ms = ms(now);
        let w = &self.workers[worker];
        let first = w.hand.load(Ordering::Relaxed);
        let step = |h: u32| if h + 1 == end { start } else { h + 1 };
        let mut freed = 0;
        let mut hand = first;
        // Connections first, then templates: when the sweep comes late, a connection whose
        // timer ran out before its template's must release the template first, as the
        // kernel's timers would have, or the template would be pushed back 60 s.
        for templates in [false, true] {
            hand = first;
            for _ in 0..budget.min((end - start) as usize) {
                let slot = hand;
                hand = step(hand);
                if self.is_template_slot(slot) == templates && self.expire_slot(slot, now_ms) {
                    self.push_free(worker, slot);
                    freed += 1;
                }
            }
        }
        w.hand.store(hand, Ordering::Relaxed);
        freed
    }

    #[inline]
    fn is_template_slot(&self, slot: u32) -> bool {
        Meta(self.slots[slot as usize].meta.load(Ordering::Relaxed)).template()
    }

    fn expire_slot(&self, slot: u32, now_ms: u64) -> bool {
        let s = &self.slots[slot as usize];
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if !c.live() {
                return false;
            }
            if c.state() != DOOMED && !is_expired(c.expiry(), now_ms) {
                return false;
            }
            let meta = Meta(s.meta.load(Ordering::Relaxed));
            if c.state() != DOOMED && meta.template() && s.n_control.load(Ordering::SeqCst) > 0 {
                // expire_later: the kernel also makes 60 s the template's timeout from now on.
                let later = Ctl::new(c.gen(), c.state(), deadline(now_ms, TEMPLATE_RETRY_SECS));
                if s.ctl
                    .compare_exchange(c.0, later.0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    s.timeout_s.store(TEMPLATE_RETRY_SECS, Ordering::Relaxed);
                    return false;
                }
                continue;
            }
            if self.reclaim(slot, c, now_ms) {
                return true;
            }
            // Lost a race with a packet (state or timer changed) or revived a template:
            // look again.
            let again = Ctl(s.ctl.load(Ordering::Acquire));
            if again.live() && again.gen() == c.gen() && again != c {
                continue;
            }
            return false;
        }
    }

    /// Calls `f` with every live entry (connections and templates), for `ipvsadm -L -c`.
    /// Not a snapshot: entries changing meanwhile may be seen before or after the change.
    pub fn for_each(&self, now: Instant, mut f: impl FnMut(&ConnEntry)) {
        let now_ms = ms(now);
        for i in 0..self.slots.len() as u32 {
            let Some((ctl, raw)) = self.read(i) else {
                continue;
            };
            if ctl.state() == DOOMED {
                continue;
            }
            let m = raw.meta;
            let state = if m.is_tcp() || m.proto() == 0 {
                TcpState::from_index(ctl.state())
                    .unwrap_or(TcpState::None)
                    .name()
            } else {
                "UDP"
            };
            let expires_in_ms = if is_expired(ctl.expiry(), now_ms) {
                0
            } else {
                ctl.expiry().wrapping_sub(now_ms) & EXP_MASK
            };
            f(&ConnEntry {
                protocol: m.proto(),
                template: m.template(),
                client: raw.client(),
                cport: m.cport(),
                vaddr: raw.vaddr(),
                vport: m.vport(),
                daddr: raw.daddr(),
                dport: m.dport(),
                method: m.method(),
                dest: DestId(raw.dest),
                state,
                expires_in_ms,
                controlled: self.slots[i as usize].n_control.load(Ordering::Relaxed),
            });
        }
    }

    // ---- templates (used by `persist`) -----------------------------------------------------

    /// The template stored under `key`, if any.
    pub(crate) fn lookup_template(&self, key: &TemplateKey) -> Option<TemplateHit> {
        let k = key.key();
        let mut hit = None;
        self.index.find(self.hash(&k), |payload| {
            let slot = (payload as u32).wrapping_sub(1);
            let Some((ctl, raw)) = self.read(slot) else {
                return false;
            };
            let ok = payload >> 32 == 0 && raw.meta.template() && raw.original_key() == k;
            if ok {
                hit = Some(TemplateHit {
                    id: ConnId {
                        slot,
                        gen: ctl.gen(),
                    },
                    dest: DestId(raw.dest),
                });
            }
            ok
        });
        hit
    }

    /// Restarts a template's timer with its timeout, as each use does in the kernel
    /// (`ip_vs_conn_put`). False if the template is gone.
    pub(crate) fn touch_template(&self, id: ConnId, now: Instant) -> bool {
        let Some(s) = self.slots.get(id.slot as usize) else {
            return false;
        };
        let now_ms = ms(now);
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen {
                return false;
            }
            let n = Ctl::new(
                c.gen(),
                c.state(),
                deadline(now_ms, s.timeout_s.load(Ordering::Relaxed)),
            );
            if s.ctl
                .compare_exchange(c.0, n.0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Creates a template on `worker`'s slots, pointing at a real server, with timeout
    /// `timeout_s` seconds; it counts in the server's persistent connections.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_template(
        &self,
        worker: usize,
        now: Instant,
        key: &TemplateKey,
        daddr: IpAddr,
        dport: u16,
        method: ForwardMethod,
        dest: DestId,
        timeout_s: u32,
    ) -> Result<ConnId, TableFull> {
        let _guard = self.enter(worker);
        let now_ms = ms(now);
        let timeout_s = timeout_s.min(super::state::MAX_TIMEOUT_SECS);
        let meta = Meta(
            u64::from(key.vport) << 16
                | u64::from(dport) << 32
                | u64::from(key.protocol) << 48
                | (F_TEMPLATE
                    | if key.client.is_ipv6() { F_V6 } else { 0 }
                    | if daddr.is_ipv6() { F_DV6 } else { 0 }
                    | method_bits(method) << METHOD_SHIFT)
                    << 56,
        );
        let fields = Fields {
            meta,
            caddr: addr_words(key.client),
            vaddr: addr_words(key.vaddr),
            daddr: addr_words(daddr),
            dest: dest.0,
            template: None,
            timeout_s,
            sync: SyncMark::fresh(now_ms),
        };
        self.create(worker, now_ms, &fields, 0, deadline(now_ms, timeout_s))
    }

    /// In debug builds, catches two threads using one worker's slots at once.
    #[inline]
    fn enter(&self, worker: usize) -> WorkerGuard<'_> {
        let w = &self.workers[worker];
        #[cfg(debug_assertions)]
        assert!(
            !w.busy.swap(true, Ordering::Acquire),
            "worker {worker} used from two threads at once"
        );
        WorkerGuard(w)
    }
}

struct WorkerGuard<'a>(#[allow(dead_code)] &'a Worker);

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The fields of an entry being created.
struct Fields {
    meta: Meta,
    caddr: [u64; 2],
    vaddr: [u64; 2],
    daddr: [u64; 2],
    dest: u32,
    template: Option<ConnId>,
    timeout_s: u32,
    sync: SyncMark,
}

impl Fields {
    fn raw(&self) -> Raw {
        Raw {
            meta: self.meta,
            caddr: self.caddr,
            vaddr: self.vaddr,
            daddr: self.daddr,
            dest: self.dest,
        }
    }
}

/// The table client-to-server packets use: INPUT when the director sees replies (NAT),
/// INPUT-ONLY otherwise (`IP_VS_CONN_F_NOOUTPUT`).
#[inline]
fn input_table(method: ForwardMethod) -> StateTable {
    match method {
        ForwardMethod::Masquerade => StateTable::Input,
        ForwardMethod::DirectRouting | ForwardMethod::Tunnel => StateTable::InputOnly,
    }
}

mod sync;
#[cfg(test)]
mod tests;

pub use sync::{Described, Installed, SyncMark, SyncProbe, Synced};
